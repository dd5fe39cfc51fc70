// hetflow-bench: hetflow's benchmarks, one subcommand per workload family.
//
//     hetflow-bench overhead --tasks 100000 --repeat 3
//     hetflow-bench sched-sim --machine bench/sched_sim/k40.json --precision single --tiles 16
//
// Every subcommand prints `<system> <metric> <value>` lines on stdout, the form the competitor
// programs beside each workload print too, so that a script can put them side by side. A
// command line that cannot be run exits with 2, naming what is wrong; --help exits with 0.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <functional>
#include <limits>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "bench.hpp"
#include "hetflow/version.hpp"

namespace {

constexpr std::string_view kProgram = "hetflow-bench";
constexpr int kUsageError = 2;

/// A whole number of at least `min`; CLI11 checks the text before converting it.
/// A whole number from `min` to `max` (`why_max` says why there is a largest).
CLI::Validator at_least(std::size_t min, std::size_t max = std::numeric_limits<std::size_t>::max(),
                        const char* why_max = "") {
  return CLI::Validator(
      [min, max, why_max](std::string& text) -> std::string {
        std::size_t value = 0;
        const char* end = text.data() + text.size();
        auto [ptr, ec] = std::from_chars(text.data(), end, value);
        if (text.empty() || ptr != end || ec == std::errc::invalid_argument) {
          return "expects a whole number, got '" + text + "'";
        }
        if (ec == std::errc::result_out_of_range) return "'" + text + "' is too large";
        if (value < min) return "must be at least " + std::to_string(min) + ", got " + text;
        if (value > max) return "must be at most " + std::to_string(max) + why_max + ", got " + text;
        return {};
      },
      "", "");
}

/// A finite number for which `accepted` holds (`requirement` says what it must be).
CLI::Validator finite_number(bool (*accepted)(double), std::string requirement) {
  return CLI::Validator(
      [accepted, requirement = std::move(requirement)](std::string& text) -> std::string {
        double value = 0;
        const char* end = text.data() + text.size();
        auto [ptr, ec] = std::from_chars(text.data(), end, value);
        if (text.empty() || ptr != end || ec != std::errc{}) return "expects a number, got '" + text + "'";
        if (!accepted(value) || !std::isfinite(value)) return "must be " + requirement + ", got " + text;
        return {};
      },
      "", "");
}

/// Gb/s or GB/s of a link: from 1 kB/s to 1 EB/s, as the simulator's machine files.
CLI::Validator link_rate() {
  return finite_number([](double value) { return value >= 1e-6 && value <= 1e9; }, "from 1e-06 to 1e+09");
}

/// Microseconds of a message's latency, at most a second.
CLI::Validator latency_us() {
  return finite_number([](double value) { return value >= 0 && value <= 1e6; }, "from 0 to 1e+06");
}

/// What CLI11 left over on `command`'s line, the first unknown flag first, with the flags it knows.
std::string unexpected(const CLI::App& command) {
  const std::vector<std::string> left = command.remaining();
  if (left.empty()) return "unexpected arguments";
  const auto flag = std::find_if(left.begin(), left.end(), [](const std::string& arg) { return arg.starts_with("-"); });
  std::string known;
  for (const CLI::Option* option : command.get_options()) known += (known.empty() ? "" : ", ") + option->get_name();
  return flag != left.end() ? "unknown flag '" + *flag + "' (flags: " + known + ")"
                            : "unexpected argument '" + left.front() + "'";
}

struct Subcommand {
  CLI::App* app;
  std::function<int()> run;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("hetflow " HETFLOW_VERSION_STRING " benchmarks. Each prints '<system> <metric> <value>' lines.",
               std::string(kProgram));
  app.set_version_flag("--version", std::string(kProgram) + " " + HETFLOW_VERSION_STRING);
  app.require_subcommand(1);
  app.option_defaults()->always_capture_default();

  hetflow::bench::OverheadOptions overhead;
  CLI::App* overhead_app = app.add_subcommand(
      "overhead",
      "per-task overhead of the default scheduler: independent, chain and fanout ns per task, and bytes per "
      "pending task");
  overhead_app->add_option("--tasks", overhead.tasks, "tasks per timed workload")->check(at_least(1))->type_name("N");
  overhead_app->add_option("--repeat", overhead.repeat, "timed runs per workload; the median is printed")
      ->check(at_least(1))
      ->type_name("N");
  overhead_app
      ->add_option("--pending", overhead.pending, "tasks held pending behind a blocked one for the memory measurement")
      ->check(at_least(1))
      ->type_name("N");

  hetflow::bench::SchedSimOptions sched_sim;
  CLI::App* sched_sim_app = app.add_subcommand(
      "sched-sim",
      "makespan of every scheduler on a tiled Cholesky simulated on a machine described by a file (default: 8 CPU "
      "cores + 2 GPUs), with lower bounds and an offline plan");
  sched_sim_app->add_option("--tiles", sched_sim.tiles, "tiles per side of the matrix, 2 to 128")
      ->check(at_least(2, 128, " (the Cholesky of N tiles has about N^3/6 tasks, each simulated)"))
      ->type_name("N");
  sched_sim_app
      ->add_option("--machine", sched_sim.machine,
                   "machine description to simulate (bench/sched_sim/*.json; default: the built-in legacy.json)")
      ->check(CLI::ExistingFile.description(""))
      ->type_name("FILE");
  sched_sim_app
      ->add_option("--precision", sched_sim.precision,
                   "the tiles' elements, which sizes the copies: single for k40.json, whose costs were measured "
                   "on floats")
      ->check(CLI::IsMember({"double", "single"}).description(""))
      ->type_name("double|single");
  sched_sim_app
      ->add_option("--bandwidth-gbs", sched_sim.bandwidth_gbs,
                   "GB/s of the link between the host and each GPU, instead of the machine's")
      ->check(link_rate())
      ->type_name("B");
  CLI::Option* nodes_option =
      sched_sim_app
          ->add_option("--nodes", sched_sim.nodes,
                       "simulate the distributed Cholesky (examples/cpp/mpi_cholesky.cpp) on N copies of the machine "
                       "joined by a network")
          ->check(at_least(1, 4096, " (the simulator takes at most 4096 workers, each node's network card included)"))
          ->type_name("N");
  sched_sim_app
      ->add_option("--network-gbps", sched_sim.network_gbps,
                   "with --nodes: Gb/s of each node's network link (the default: InfiniBand EDR's)")
      ->check(link_rate())
      ->needs(nodes_option)
      ->type_name("B");
  sched_sim_app
      ->add_option("--network-latency-us", sched_sim.network_latency_us,
                   "with --nodes: microseconds a message takes besides its bytes' time")
      ->check(latency_us())
      ->needs(nodes_option)
      ->type_name("US");

  const std::vector<Subcommand> commands{
      {overhead_app, [&overhead] { return hetflow::bench::run_overhead(overhead); }},
      {sched_sim_app, [&sched_sim] { return hetflow::bench::run_sched_sim(sched_sim); }},
  };

  if (argc == 1) {
    std::fputs(app.help().c_str(), stderr);
    return kUsageError;
  }
  const std::string_view first = argv[1];
  if (first == "help") {
    std::fputs(app.help().c_str(), stdout);
    return 0;
  }
  const bool known_first = first == "-h" || first == "--help" || first == "--version" ||
                           std::any_of(commands.begin(), commands.end(),
                                       [first](const Subcommand& command) { return command.app->get_name() == first; });
  if (!known_first) {
    std::string names;
    for (const Subcommand& command : commands) names += (names.empty() ? "" : ", ") + command.app->get_name();
    std::fprintf(stderr, "%s: unknown %s '%s' (subcommands: %s)\nrun '%s --help' for usage\n", kProgram.data(),
                 first.starts_with("-") ? "flag" : "subcommand", argv[1], names.c_str(), kProgram.data());
    return kUsageError;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    if (error.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) {
      return app.exit(error);  // --help, --version
    }
    std::string where(kProgram);
    std::string message = error.what();
    for (const Subcommand& command : commands) {
      if (!command.app->parsed()) continue;
      where += " " + command.app->get_name();
      if (dynamic_cast<const CLI::ExtrasError*>(&error) != nullptr) message = unexpected(*command.app);
    }
    std::fprintf(stderr, "%s: %s\nrun '%s --help' for usage\n", where.c_str(), message.c_str(), where.c_str());
    return kUsageError;
  }

  for (const Subcommand& command : commands) {
    if (!command.app->parsed()) continue;
    int status = 1;
    try {
      status = command.run();
    } catch (const std::exception& error) {
      std::fprintf(stderr, "%s %s: error: %s\n", kProgram.data(), command.app->get_name().c_str(), error.what());
      return 1;
    }
    // Results that did not reach their file (a full disk, a closed pipe) are no results.
    if (std::fflush(stdout) != 0 || std::ferror(stdout) != 0) {
      std::fprintf(stderr, "%s %s: error: the results could not be written: %s\n", kProgram.data(),
                   command.app->get_name().c_str(), std::strerror(errno));
      return 1;
    }
    return status;
  }
  return kUsageError;  // require_subcommand(1) leaves no other way here
}
