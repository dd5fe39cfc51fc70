#pragma once
// Performance models from Python: the perfmodel_* functions of the _hetflow extension.
#include <nanobind/nanobind.h>

namespace hetflow::python {

/// Adds perfmodel_record, perfmodel_entries, perfmodel_fit, perfmodel_expected, perfmodel_list,
/// perfmodel_save_all, perfmodel_directory and perfmodel_reset to `m`.
void bind_perfmodel(nanobind::module_& m);

}  // namespace hetflow::python
