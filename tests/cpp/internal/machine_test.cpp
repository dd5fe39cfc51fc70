// Machine descriptions for simulation: the documented example reads as documented, defaults
// apply, costs evaluate, and every kind of mistake is an InvalidArgument naming the file and key.
#include "sim/machine.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "hetflow/error.hpp"

namespace {

using hetflow::Arch;
using hetflow::InvalidArgument;
using hetflow::detail::MachineSpec;

// The message of the InvalidArgument that parsing `json` throws ("" if it parses).
std::string parse_error(const std::string& json) {
  try {
    (void)MachineSpec::parse(json, "machine.json");
  } catch (const InvalidArgument& error) {
    return error.what();
  }
  return "";
}

class TempDir {
 public:
  TempDir() {
    path_ = std::filesystem::temp_directory_path() / ("hetflow-machine-" + std::to_string(::getpid()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  [[nodiscard]] const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// The example of docs/simulation.md, comments included.
constexpr const char* kDocumentedExample = R"({
  "cpus": 8,                    // virtual CPU workers (required, >= 0)
  "gpus": 2,                    // virtual CUDA workers, each with its own memory node (default 0)
  "gpu_memory": "16G",          // bytes per GPU node
  "link": {"bandwidth_gbs": 12.0, "latency_us": 10.0},
  "codelets": {
    "gemm":  {"cpu": 0.010, "cuda": 0.001},
    "potrf": {"cpu": {"a": 1e-9, "b": 1.5, "c": 1e-5}}
  },
  "models": "costs"
})";

TEST(Machine, ReadsTheDocumentedExample) {
  const MachineSpec spec = MachineSpec::parse(kDocumentedExample, "machine.json");
  EXPECT_EQ(spec.cpus, 8u);
  EXPECT_EQ(spec.gpus, 2u);
  EXPECT_EQ(spec.gpu_memory, std::size_t{16} << 30);
  EXPECT_DOUBLE_EQ(spec.link.bandwidth_bytes_per_s, 12e9);
  EXPECT_DOUBLE_EQ(spec.link.latency_s, 10e-6);
  EXPECT_FALSE(spec.use_stored_links);
  EXPECT_FALSE(spec.use_stored_models);
  ASSERT_EQ(spec.costs.size(), 2u);

  EXPECT_DOUBLE_EQ(spec.cost("gemm", Arch::cpu, 123).value(), 0.010);
  EXPECT_DOUBLE_EQ(spec.cost("gemm", Arch::cuda, 1 << 20).value(), 0.001);
  // a * n^b + c with n = 10^6 bytes: 1e-9 * 1e9 + 1e-5.
  EXPECT_NEAR(spec.cost("potrf", Arch::cpu, 1'000'000).value(), 1.0 + 1e-5, 1e-12);
  EXPECT_FALSE(spec.cost("potrf", Arch::cuda, 100).has_value());
  EXPECT_FALSE(spec.cost("trsm", Arch::cpu, 100).has_value());
}

TEST(Machine, DefaultsForWhatIsLeftOut) {
  const MachineSpec spec = MachineSpec::parse(R"({"cpus": 3})", "m.json");
  EXPECT_EQ(spec.cpus, 3u);
  EXPECT_EQ(spec.gpus, 0u);
  EXPECT_EQ(spec.gpu_memory, 0u);  // unlimited
  EXPECT_EQ(spec.opencl, 0u);
  EXPECT_EQ(spec.opencl_memory, 0u);
  EXPECT_TRUE(spec.opencl_copy_engine);
  EXPECT_DOUBLE_EQ(spec.link.bandwidth_bytes_per_s, 12e9);
  EXPECT_DOUBLE_EQ(spec.link.latency_s, 10e-6);
  EXPECT_FALSE(spec.use_stored_links);
  EXPECT_TRUE(spec.costs.empty());
  EXPECT_FALSE(spec.use_stored_models);
  EXPECT_TRUE(spec.name.empty());  // the report names the file
  EXPECT_EQ(MachineSpec::parse(R"({"name": "a node", "cpus": 3})", "m.json").name, "a node");

  const MachineSpec partial_link = MachineSpec::parse(R"({"cpus": 0, "gpus": 1, "link": {"latency_us": 0}})", "m");
  EXPECT_DOUBLE_EQ(partial_link.link.bandwidth_bytes_per_s, 12e9);
  EXPECT_DOUBLE_EQ(partial_link.link.latency_s, 0.0);
}

TEST(Machine, StoredModelsAndCostForms) {
  const MachineSpec spec = MachineSpec::parse(R"({"cpus": 1, "models": "stored",
      "codelets": {"scale": {"cpu": {"a": 2e-9, "b": 1}}, "const": {"cuda": {"c": 0.5}}, "idle": {}}})",
                                              "m.json");
  EXPECT_TRUE(spec.use_stored_models);
  EXPECT_NEAR(spec.cost("scale", Arch::cpu, 1000).value(), 2e-6, 1e-15);  // c defaults to 0
  EXPECT_DOUBLE_EQ(spec.cost("const", Arch::cuda, 1 << 30).value(), 0.5);
  EXPECT_FALSE(spec.cost("idle", Arch::cpu, 1).has_value());
  EXPECT_EQ(MachineSpec::parse(R"({"cpus": 1, "models": "costs"})", "m").use_stored_models, false);
}

TEST(Machine, CostFormula) {
  const MachineSpec::Cost constant{.a = 0, .b = 0, .c = 0.25};
  EXPECT_DOUBLE_EQ(constant(0), 0.25);
  EXPECT_DOUBLE_EQ(constant(std::size_t{1} << 40), 0.25);
  const MachineSpec::Cost square{.a = 1e-6, .b = 2, .c = 1};
  EXPECT_DOUBLE_EQ(square(1000), 2.0);
  EXPECT_DOUBLE_EQ(square(0), 1.0);
  const MachineSpec::Cost zero_power{.a = 3, .b = 0, .c = 1};
  EXPECT_DOUBLE_EQ(zero_power(12345), 4.0);  // n^0 = 1
}

TEST(Machine, GpuMemorySizes) {
  auto memory = [](const std::string& value) {
    return MachineSpec::parse(R"({"cpus": 1, "gpus": 1, "gpu_memory": )" + value + "}", "m").gpu_memory;
  };
  EXPECT_EQ(memory("1048576"), 1048576u);
  EXPECT_EQ(memory("\"4096\""), 4096u);
  EXPECT_EQ(memory("\"64K\""), 64u << 10);
  EXPECT_EQ(memory("\"512M\""), 512u << 20);
  EXPECT_EQ(memory("\"3GiB\""), std::size_t{3} << 30);
  EXPECT_NE(
      parse_error(R"({"cpus": 1, "gpu_memory": "16Q"})").find("machine.json: gpu_memory: '16Q' has an unknown suffix"),
      std::string::npos);
  EXPECT_NE(parse_error(R"({"cpus": 1, "gpu_memory": "G"})").find("gpu_memory: 'G' is not a size in bytes"),
            std::string::npos);
  EXPECT_NE(parse_error(R"({"cpus": 1, "gpu_memory": "99999999999999999999G"})").find("is too large"),
            std::string::npos);
  EXPECT_NE(parse_error(R"({"cpus": 1, "gpu_memory": "0"})").find("leave gpu_memory out"), std::string::npos);
  EXPECT_NE(parse_error(R"({"cpus": 1, "gpu_memory": 1.5})").find("gpu_memory: expected a whole number of bytes"),
            std::string::npos);
  EXPECT_NE(parse_error(R"({"cpus": 1, "gpu_memory": -4})").find("gpu_memory:"), std::string::npos);
  EXPECT_NE(parse_error(R"({"cpus": 1, "gpu_memory": true})").find("gpu_memory: expected a size in bytes"),
            std::string::npos);
}

TEST(Machine, ErrorsNameTheFileAndTheKeyPath) {
  EXPECT_EQ(parse_error(R"({"cpus": 1, "codelets": {"gemm": {"gpu": 1}}})"),
            "machine.json: codelets.gemm.gpu: unknown architecture 'gpu' (use cpu, cuda or opencl)");
  EXPECT_EQ(
      parse_error(R"({"cpus": 1, "codelets": {"gemm": {"process": 1}}})"),
      "machine.json: codelets.gemm.process: architecture 'process' cannot be simulated (use cpu, cuda or opencl)");
  EXPECT_EQ(parse_error(R"({"cpus": 1, "gpu": 2})"),
            "machine.json: gpu: unknown key (known keys here: name, cpus, gpus, gpu_memory, opencl, opencl_memory, "
            "opencl_copy_engine, link, codelets, models)");
  EXPECT_EQ(parse_error(R"({"cpus": 1, "name": 3})"),
            "machine.json: name: expected a string that names the machine, got a number");
  EXPECT_EQ(parse_error(R"({"cpus": 1, "name": ""})"),
            "machine.json: name: expected a string that names the machine, got an empty one");
  EXPECT_EQ(parse_error(R"({"cpus": 1, "link": {"bandwidth": 3}})"),
            "machine.json: link.bandwidth: unknown key (known keys here: bandwidth_gbs, latency_us)");
  EXPECT_EQ(parse_error(R"({"cpus": 1, "codelets": {"potrf": {"cpu": {"a": 1, "d": 2}}}})"),
            "machine.json: codelets.potrf.cpu.d: unknown key (known keys here: a, b, c)");
  EXPECT_EQ(parse_error(R"({"gpus": 1})"),
            "machine.json: cpus: missing: the number of virtual CPU workers is required");
  EXPECT_EQ(parse_error(R"({"cpus": "8"})"), "machine.json: cpus: expected a number, got a string");
  EXPECT_EQ(parse_error(R"({"cpus": -1})"), "machine.json: cpus: expected a whole number from 0 to 4096, not -1");
  EXPECT_EQ(parse_error(R"({"cpus": 2.5})"), "machine.json: cpus: expected a whole number from 0 to 4096, not 2.5");
  EXPECT_EQ(parse_error(R"({"cpus": 0})"),
            "machine.json: cpus: the machine has no workers (cpus, gpus and opencl are all 0)");
  EXPECT_EQ(parse_error(R"({"cpus": 1, "gpus": 5000})"),
            "machine.json: gpus: expected a whole number from 0 to 4096, not 5000");
  EXPECT_EQ(parse_error(R"({"cpus": 1, "link": {"bandwidth_gbs": 0}})"),
            "machine.json: link.bandwidth_gbs: must be from 1e-06 to 1e+09, not 0");
  EXPECT_EQ(parse_error(R"({"cpus": 1, "link": {"bandwidth_gbs": 1e-300}})"),
            "machine.json: link.bandwidth_gbs: must be from 1e-06 to 1e+09, not 1e-300");
  EXPECT_EQ(parse_error(R"({"cpus": 1, "link": {"latency_us": -2}})"),
            "machine.json: link.latency_us: must be from 0 to 1e+06, not -2");
  EXPECT_EQ(parse_error(R"({"cpus": 1, "link": {"latency_us": 1e7}})"),
            "machine.json: link.latency_us: must be from 0 to 1e+06, not 1e+07");
  EXPECT_EQ(parse_error(R"({"cpus": 1, "link": 5})"),
            "machine.json: link: expected \"stored\" or {\"bandwidth_gbs\": ..., \"latency_us\": ...}, got a number");
  EXPECT_EQ(parse_error(R"({"cpus": 1, "codelets": {"gemm": {"cpu": -0.5}}})"),
            "machine.json: codelets.gemm.cpu: must be from 0 to 1e+09, not -0.5");
  EXPECT_EQ(parse_error(R"({"cpus": 1, "codelets": {"gemm": {"cpu": {"b": -1}}}})"),
            "machine.json: codelets.gemm.cpu.b: must be from 0 to 4, not -1");
  EXPECT_EQ(parse_error(R"({"cpus": 1, "codelets": {"gemm": {"cpu": "fast"}}})"),
            "machine.json: codelets.gemm.cpu: expected seconds (a number) or {\"a\": ..., \"b\": ..., \"c\": ...} "
            "for a * n^b + c, got a string");
  EXPECT_EQ(parse_error(R"({"cpus": 1, "codelets": {"gemm": 0.1}})"),
            "machine.json: codelets.gemm: expected an object, got a number");
  EXPECT_EQ(parse_error(R"({"cpus": 1, "codelets": []})"), "machine.json: codelets: expected an object, got an array");
  EXPECT_EQ(parse_error(R"({"cpus": 1, "models": "measured"})"),
            "machine.json: models: expected \"costs\" or \"stored\", got 'measured'");
  EXPECT_EQ(parse_error(R"({"cpus": 1, "models": true})"),
            "machine.json: models: expected \"costs\" or \"stored\", got a boolean");
  EXPECT_EQ(parse_error("[1]"), "machine.json: a machine description is a JSON object, not an array");
}

TEST(Machine, OpenclDevices) {
  const MachineSpec spec = MachineSpec::parse(R"({"cpus": 1, "gpus": 2, "opencl": 2, "opencl_memory": "1G",
      "opencl_copy_engine": false, "codelets": {"gemm": {"opencl": 0.02, "cpu": 0.001}}})",
                                              "m.json");
  EXPECT_EQ(spec.opencl, 2u);
  EXPECT_EQ(spec.opencl_memory, std::size_t{1} << 30);
  EXPECT_FALSE(spec.opencl_copy_engine);
  EXPECT_DOUBLE_EQ(spec.cost("gemm", Arch::opencl, 100).value(), 0.02);
  // The GPUs' nodes come first, then the OpenCL devices', named as their drivers name them.
  EXPECT_EQ(spec.device_node_names(), (std::vector<std::string>{"cuda0", "cuda1", "opencl0", "opencl1"}));
  EXPECT_EQ(MachineSpec::parse(R"({"cpus": 0, "opencl": 1})", "m").opencl, 1u);  // OpenCL workers alone

  EXPECT_EQ(parse_error(R"({"cpus": 1, "opencl": 1.5})"),
            "machine.json: opencl: expected a whole number from 0 to 4096, not 1.5");
  EXPECT_EQ(parse_error(R"({"cpus": 1, "opencl": -1})"),
            "machine.json: opencl: expected a whole number from 0 to 4096, not -1");
  EXPECT_EQ(parse_error(R"({"cpus": 4000, "opencl": 97})"),
            "machine.json: cpus: the machine has 4097 workers in all (cpus + gpus + opencl), more than 4096");
  EXPECT_EQ(parse_error(R"({"cpus": 1, "opencl_copy_engine": "no"})"),
            "machine.json: opencl_copy_engine: expected true or false, got a string");
  EXPECT_EQ(parse_error(R"({"cpus": 1, "opencl_memory": "0"})"),
            "machine.json: opencl_memory: '0' must be more than 0 (leave opencl_memory out for unlimited memory) (a "
            "whole number with an optional K, M or G suffix, e.g. \"16G\")");
}

TEST(Machine, LinkBothWaysOrStored) {
  const TempDir home;
  const MachineSpec given = MachineSpec::parse(R"({"cpus": 1, "opencl": 1, "link": {"bandwidth_gbs": 2}})", "m");
  const MachineSpec::DeviceLinks both = given.device_links("opencl0", home.path(), "m");
  EXPECT_DOUBLE_EQ(both.to_device.bandwidth_bytes_per_s, 2e9);
  EXPECT_DOUBLE_EQ(both.to_host.bandwidth_bytes_per_s, 2e9);
  EXPECT_DOUBLE_EQ(both.to_host.latency_s, 10e-6);
  EXPECT_NEAR(both.to_device.seconds(2000), 10e-6 + 1e-6, 1e-15);

  const MachineSpec stored = MachineSpec::parse(R"({"cpus": 1, "opencl": 1, "link": "stored"})", "machine.json");
  EXPECT_TRUE(stored.use_stored_links);
  const auto file = home.path() / "bus" / "opencl0.txt";
  try {
    (void)stored.device_links("opencl0", home.path(), "machine.json");
    FAIL() << "a missing bus model gave a link";
  } catch (const InvalidArgument& error) {
    EXPECT_EQ(std::string(error.what()),
              "machine.json: link: \"stored\" takes the link of memory node 'opencl0' from its stored bus model '" +
                  file.string() +
                  "', which does not exist (a run of the program on the real device, with the same HETFLOW_HOME, "
                  "measures it)");
  }

  std::filesystem::create_directories(file.parent_path());
  std::ofstream(file) << "hetflow-bus 1\nnode opencl0\nhost_to_node 3e10 1.5e-05\nnode_to_host 2e10 2.5e-05\n";
  const MachineSpec::DeviceLinks measured = stored.device_links("opencl0", home.path(), "machine.json");
  EXPECT_DOUBLE_EQ(measured.to_device.bandwidth_bytes_per_s, 3e10);
  EXPECT_DOUBLE_EQ(measured.to_device.latency_s, 1.5e-5);
  EXPECT_DOUBLE_EQ(measured.to_host.bandwidth_bytes_per_s, 2e10);
  EXPECT_DOUBLE_EQ(measured.to_host.latency_s, 2.5e-5);

  std::ofstream(file) << "hetflow-bus 1\nnode opencl0\nhost_to_node 3e10 1.5e-05\n";
  try {
    (void)stored.device_links("opencl0", home.path(), "machine.json");
    FAIL() << "a damaged bus model gave a link";
  } catch (const InvalidArgument& error) {
    EXPECT_NE(std::string(error.what()).find("'" + file.string() + "', which is damaged: no 'node_to_host' line"),
              std::string::npos)
        << error.what();
  }

  // Finite, but the transfer times made from them overflowed: a makespan of NaN.
  for (const char* extreme : {"host_to_node 5e-324 0", "host_to_node 1e9 1.7e308"}) {
    std::ofstream(file) << "hetflow-bus 1\nnode opencl0\n" << extreme << "\nnode_to_host 2e10 2.5e-05\n";
    try {
      (void)stored.device_links("opencl0", home.path(), "machine.json");
      FAIL() << "a bus model with " << extreme << " gave a link";
    } catch (const InvalidArgument& error) {
      EXPECT_NE(std::string(error.what())
                    .find("'" + file.string() +
                          "', which is damaged: line 3: bad bandwidth or latency (bytes per second from 1000 to "
                          "1e+18, seconds from 0 to 1)"),
                std::string::npos)
          << error.what();
    }
  }
  std::ofstream(file) << "hetflow-bus 1\nnode opencl0\nhost_to_node 1e3 1\nnode_to_host 1e18 0\n";  // the bounds
  EXPECT_DOUBLE_EQ(stored.device_links("opencl0", home.path(), "machine.json").to_host.bandwidth_bytes_per_s, 1e18);

  EXPECT_EQ(parse_error(R"({"cpus": 1, "link": "measured"})"),
            "machine.json: link: expected \"stored\" or {\"bandwidth_gbs\": ..., \"latency_us\": ...}, got "
            "'measured'");
}

TEST(Machine, SyntaxErrorsGiveLineAndColumn) {
  EXPECT_EQ(parse_error("{\n  \"cpus\": 4,\n}"), "machine.json:3:1: expected a key in quotes, found '}'");
}

TEST(Machine, LoadsAFileAndNamesItInErrors) {
  const TempDir dir;
  const auto good = dir.path() / "machine.json";
  std::ofstream(good) << kDocumentedExample;
  const MachineSpec spec = MachineSpec::load(good);
  EXPECT_EQ(spec.cpus, 8u);
  EXPECT_EQ(spec.gpus, 2u);

  const auto bad = dir.path() / "bad.json";
  std::ofstream(bad) << R"({"cpus": 1, "codelets": {"gemm": {"gpu": 1}}})";
  try {
    (void)MachineSpec::load(bad);
    FAIL() << "a bad description loaded";
  } catch (const InvalidArgument& error) {
    EXPECT_EQ(std::string(error.what()),
              bad.string() + ": codelets.gemm.gpu: unknown architecture 'gpu' (use cpu, cuda or opencl)");
  }

  const auto missing = dir.path() / "missing.json";
  try {
    (void)MachineSpec::load(missing);
    FAIL() << "a missing file loaded";
  } catch (const InvalidArgument& error) {
    EXPECT_EQ(std::string(error.what()),
              "machine description '" + missing.string() + "' cannot be read: No such file or directory");
  }
  try {
    (void)MachineSpec::load(dir.path());
    FAIL() << "a directory loaded";
  } catch (const InvalidArgument& error) {
    EXPECT_NE(std::string(error.what()).find("is a directory"), std::string::npos);
  }
  // Neither blocks nor reads for ever: a FIFO no one writes, a device without end.
  const auto fifo = dir.path() / "fifo.json";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  for (const std::filesystem::path& endless : {fifo, std::filesystem::path("/dev/zero")}) {
    try {
      (void)MachineSpec::load(endless);
      FAIL() << endless << " loaded";
    } catch (const InvalidArgument& error) {
      EXPECT_NE(std::string(error.what()).find("not a regular file"), std::string::npos) << error.what();
    }
  }
}

}  // namespace
