// The perfmodel_* functions of _hetflow: thin wrappers over hetflow::PerfModelRegistry. The
// Python layer (python/hetflow/perfmodel.py) builds the table, the plot and the CLI on them.
#include "perfmodel_bindings.hpp"

#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "finalizing.hpp"
#include "hetflow/perfmodel.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace hetflow::python {
namespace {

Arch parse_arch(const std::string& name) {
  if (auto arch = arch_from_name(name)) return *arch;
  throw nb::value_error(("unknown architecture '" + name + "': use cpu, cuda, opencl or process").c_str());
}

// Finding a model may read its file: done without the GIL.
std::shared_ptr<PerfModel> model_of(const std::string& symbol) {
  GilReleased release;
  return PerfModelRegistry::instance().get(symbol);
}

}  // namespace

void bind_perfmodel(nb::module_& m) {
  m.def(
      "perfmodel_record",
      [](const std::string& symbol, const std::string& arch, std::size_t size, double seconds) {
        model_of(symbol)->record(parse_arch(arch), size, seconds);
      },
      "symbol"_a, "arch"_a, "size"_a, "seconds"_a,
      "Records one measured run of `symbol` on `arch` for data of `size`, in seconds.");

  m.def(
      "perfmodel_entries",
      [](const std::string& symbol) {
        auto model = model_of(symbol);
        nb::list out;
        for (const PerfEntry& e : model->entries()) {
          nb::dict entry;
          entry["arch"] = std::string(arch_name(e.arch));
          entry["size"] = e.size;
          entry["count"] = e.count;
          entry["mean"] = e.mean;
          entry["stddev"] = e.stddev;
          entry["min"] = e.min;
          entry["max"] = e.max;
          entry["robust"] = e.robust;
          entry["calibrated"] = model->calibrated(e.arch, e.size);
          out.append(entry);
        }
        return out;
      },
      "symbol"_a,
      "The measurements of `symbol`: one dict per (arch, size) with count, mean, stddev, min, max, "
      "robust (the estimate used for predictions, seconds) and calibrated.");

  m.def(
      "perfmodel_fit",
      [](const std::string& symbol, const std::string& arch) {
        const PerfFit fit = model_of(symbol)->fit(parse_arch(arch));
        return std::make_tuple(fit.a, fit.b, fit.c, fit.valid);
      },
      "symbol"_a, "arch"_a, "(a, b, c, valid) of the regression t = a * size**b + c over the calibrated sizes.");

  m.def(
      "fit_power_law",
      [](const std::vector<double>& sizes, const std::vector<double>& seconds) {
        if (sizes.size() != seconds.size()) throw nb::value_error("fit_power_law: sizes and seconds differ in length");
        const PerfFit fit = hetflow::fit_power_law(sizes, seconds);
        return std::make_tuple(fit.a, fit.b, fit.c, fit.valid);
      },
      "sizes"_a, "seconds"_a, "(a, b, c, valid) of the least-squares fit t = a * size**b + c to the points.");

  m.def(
      "perfmodel_expected",
      [](const std::string& symbol, const std::string& arch, std::size_t size) -> std::optional<double> {
        return model_of(symbol)->expected(parse_arch(arch), size);
      },
      "symbol"_a, "arch"_a, "size"_a, "The predicted seconds, or None when the model cannot tell yet.");

  m.def(
      "perfmodel_calibration_samples",
      [](const std::string& symbol) { return model_of(symbol)->calibration_samples(); }, "symbol"_a,
      "How many measurements make a size calibrated (HETFLOW_CALIBRATE, default 10).");

  m.def(
      "perfmodel_list",
      [] {
        GilReleased release;
        return PerfModelRegistry::instance().list();
      },
      "The symbols with a model on disk or in memory, sorted.");

  m.def(
      "perfmodel_save_all",
      [] {
        GilReleased release;
        PerfModelRegistry::instance().save_all();
      },
      "Saves every model with unsaved measurements (failures are reported on stderr).");

  m.def(
      "perfmodel_directory", [] { return PerfModelRegistry::instance().directory().string(); },
      "Where models are stored: $HETFLOW_HOME/perfmodels (default ~/.hetflow/perfmodels).");

  m.def(
      "perfmodel_reset", [] { PerfModelRegistry::instance().reset(); },
      "Forgets the models held in memory, unsaved measurements included (for tests).");
}

}  // namespace hetflow::python
