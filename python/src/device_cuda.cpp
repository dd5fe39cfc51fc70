// hetflow._hetflow_cuda: the CUDA driver for Python runtimes, imported only when a runtime asks
// for GPUs. A task on a GPU is described to Python as (device, stream, buffers): the GPU's
// number, the worker's cudaStream_t and the device address and size of each buffer.
#include <nanobind/nanobind.h>

#include "device_module.hpp"
#include "hetflow/cuda.hpp"

namespace nb = nanobind;

namespace {

PyObject* describe_cuda_task(const hetflow::TaskContext& context) {
  try {
    PyObject* buffers = hetflow::python::buffer_tuple(context);
    if (buffers == nullptr) return nullptr;
    const auto stream = reinterpret_cast<std::uintptr_t>(hetflow::cuda::stream(context));
    return Py_BuildValue("(iKN)", hetflow::cuda::device(context), static_cast<unsigned long long>(stream), buffers);
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
    return nullptr;
  }
}

void note_setup(const hetflow::TaskContext& context, double seconds) {
  hetflow::cuda::add_setup_seconds(context, seconds);
}

}  // namespace

NB_MODULE(_hetflow_cuda, m) {
  m.doc() = "The CUDA driver for hetflow's Python runtimes; see hetflow.init(cuda=...).";
  m.def("device_count", [] { return hetflow::cuda::device_count(); });
  m.def("driver", [](unsigned max_devices) {
    return nb::steal(hetflow::python::driver_capsule(hetflow::cuda::make_driver({.max_devices = max_devices})));
  });
  m.def("describer", [] { return nb::steal(hetflow::python::describe_capsule(&describe_cuda_task)); });
  m.def("setup_note", [] { return nb::steal(hetflow::python::note_setup_capsule(&note_setup)); });
}
