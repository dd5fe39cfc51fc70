// hetflow-bench: hetflow's benchmarks, one subcommand per workload family.
//
//     hetflow-bench overhead --tasks 100000 --repeat 3
//
// Every subcommand prints `<system> <metric> <value>` lines on stdout, the form the competitor
// programs beside each workload print too, so that a script can put them side by side.
#include <charconv>
#include <cstdio>
#include <exception>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "bench.hpp"
#include "hetflow/version.hpp"

namespace {

constexpr std::string_view kProgram = "hetflow-bench";

// Names and help texts are string literals, so their data() is NUL-terminated for printf.

/// A `--name N` flag of a subcommand: a whole number of at least `min`.
struct Flag {
  std::string_view name;
  std::string_view help;
  std::size_t* value;
  std::size_t min = 1;
};

struct Subcommand {
  std::string_view name;
  std::string_view summary;
  std::vector<Flag> flags;
  std::function<int()> run;
};

/// Thrown for command lines that cannot be run; main prints it with a pointer to --help.
struct UsageError {
  std::string message;
};

void print_subcommand_help(const Subcommand& command, std::FILE* out) {
  std::fprintf(out, "usage: %s %s", kProgram.data(), command.name.data());
  for (const Flag& flag : command.flags) std::fprintf(out, " [%s N]", flag.name.data());
  std::fprintf(out, "\n\n%s\n\nflags:\n", command.summary.data());
  for (const Flag& flag : command.flags) {
    std::fprintf(out, "  %-16s %s (default %zu)\n", flag.name.data(), flag.help.data(), *flag.value);
  }
  std::fprintf(out, "  %-16s %s\n", "--help", "show this help");
}

void print_help(std::span<const Subcommand> commands, std::FILE* out) {
  std::fprintf(out, "usage: %s <subcommand> [flags]\n       %s <subcommand> --help\n\n", kProgram.data(),
               kProgram.data());
  std::fprintf(out, "hetflow %s benchmarks. Each prints '<system> <metric> <value>' lines.\n\nsubcommands:\n",
               HETFLOW_VERSION_STRING);
  for (const Subcommand& command : commands) {
    std::fprintf(out, "  %-10s %s\n", command.name.data(), command.summary.data());
  }
}

std::string known_names(std::span<const Subcommand> commands) {
  std::string text;
  for (const Subcommand& command : commands) text += (text.empty() ? "" : ", ") + std::string(command.name);
  return text;
}

std::string known_flags(const Subcommand& command) {
  std::string text;
  for (const Flag& flag : command.flags) text += std::string(flag.name) + ", ";
  return text + "--help";
}

std::size_t parse_count(const Flag& flag, std::string_view text) {
  std::size_t value = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (ec != std::errc{} || ptr != end || text.empty()) {
    throw UsageError{std::string(flag.name) + " expects a whole number, got '" + std::string(text) + "'"};
  }
  if (value < flag.min) {
    throw UsageError{std::string(flag.name) + " must be at least " + std::to_string(flag.min) + ", got " +
                     std::string(text)};
  }
  return value;
}

/// Parses `--name N` and `--name=N`; returns false if --help was asked for.
bool parse_flags(const Subcommand& command, std::span<const std::string_view> args) {
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string_view arg = args[i];
    if (arg == "--help" || arg == "-h") return false;
    std::string_view name = arg;
    std::string_view value;
    bool inline_value = false;
    if (auto equals = arg.find('='); arg.starts_with("--") && equals != std::string_view::npos) {
      name = arg.substr(0, equals);
      value = arg.substr(equals + 1);
      inline_value = true;
    }
    const Flag* flag = nullptr;
    for (const Flag& candidate : command.flags) {
      if (candidate.name == name) flag = &candidate;
    }
    if (flag == nullptr) {
      const char* what = arg.starts_with("-") ? "unknown flag" : "unexpected argument";
      throw UsageError{std::string(what) + " '" + std::string(arg) + "' (flags: " + known_flags(command) + ")"};
    }
    if (!inline_value) {
      if (i + 1 == args.size()) throw UsageError{std::string(name) + " needs a value"};
      value = args[++i];
    }
    *flag->value = parse_count(*flag, value);
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  hetflow::bench::OverheadOptions overhead;
  hetflow::bench::SchedSimOptions sched_sim;
  const std::vector<Subcommand> commands{
      {"overhead",
       "per-task overhead of the default scheduler: independent, chain and fanout ns per task, and bytes per "
       "pending task",
       {{"--tasks", "tasks per timed workload", &overhead.tasks},
        {"--repeat", "timed runs per workload; the median is printed", &overhead.repeat},
        {"--pending", "tasks held pending behind a blocked one for the memory measurement", &overhead.pending}},
       [&overhead] { return hetflow::bench::run_overhead(overhead); }},
      {"sched-sim",
       "makespan of every scheduler on a tiled Cholesky simulated on 8 CPU cores + 2 GPUs, and a lower bound",
       {{"--tiles", "tiles per side of the matrix", &sched_sim.tiles, 2},
        {"--bandwidth-gbs", "GB/s of the link between the host and each GPU", &sched_sim.bandwidth_gbs}},
       [&sched_sim] { return hetflow::bench::run_sched_sim(sched_sim); }},
  };

  const std::vector<std::string_view> args(argv + 1, argv + argc);
  if (args.empty()) {
    print_help(commands, stderr);
    return 2;
  }
  if (args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    print_help(commands, stdout);
    return 0;
  }
  if (args[0] == "--version") {
    std::printf("%s %s\n", kProgram.data(), HETFLOW_VERSION_STRING);
    return 0;
  }

  const Subcommand* command = nullptr;
  for (const Subcommand& candidate : commands) {
    if (candidate.name == args[0]) command = &candidate;
  }
  if (command == nullptr) {
    const char* what = args[0].starts_with("-") ? "unknown flag" : "unknown subcommand";
    std::fprintf(stderr, "%s: %s '%.*s' (subcommands: %s)\nrun '%s --help' for usage\n", kProgram.data(), what,
                 static_cast<int>(args[0].size()), args[0].data(), known_names(commands).c_str(), kProgram.data());
    return 2;
  }

  try {
    if (!parse_flags(*command, std::span(args).subspan(1))) {
      print_subcommand_help(*command, stdout);
      return 0;
    }
  } catch (const UsageError& error) {
    std::fprintf(stderr, "%s %s: %s\nrun '%s %s --help' for usage\n", kProgram.data(), command->name.data(),
                 error.message.c_str(), kProgram.data(), command->name.data());
    return 2;
  }

  try {
    return command->run();
  } catch (const std::exception& error) {
    std::fprintf(stderr, "%s %s: error: %s\n", kProgram.data(), command->name.data(), error.what());
    return 1;
  }
}
