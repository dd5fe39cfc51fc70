// hetflow._hetflow_opencl: the OpenCL driver for Python runtimes, imported only when a runtime
// asks for OpenCL devices. A task on a device is described to Python as (context, queue, device,
// buffers): the cl_context, the worker's in-order cl_command_queue, the cl_device_id, and the
// cl_mem and size of each buffer, as integers (pyopencl's from_int_ptr takes them).
#include <nanobind/nanobind.h>

#include "device_module.hpp"
#include "hetflow/opencl.hpp"

namespace nb = nanobind;

namespace {

unsigned long long as_integer(const void* handle) {
  return static_cast<unsigned long long>(reinterpret_cast<std::uintptr_t>(handle));
}

PyObject* describe_opencl_task(const hetflow::TaskContext& context) {
  try {
    const hetflow::opencl::Device& device = hetflow::opencl::device(context);
    PyObject* buffers = hetflow::python::buffer_tuple(context);
    if (buffers == nullptr) return nullptr;
    return Py_BuildValue("(KKKN)", as_integer(device.context), as_integer(device.queue), as_integer(device.device),
                         buffers);
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
    return nullptr;
  }
}

void note_setup(const hetflow::TaskContext& context, double seconds) {
  hetflow::opencl::add_setup_seconds(context, seconds);
}

}  // namespace

NB_MODULE(_hetflow_opencl, m) {
  m.doc() = "The OpenCL driver for hetflow's Python runtimes; see hetflow.init(opencl=...).";
  m.def("driver", [](unsigned max_devices, bool all_types) {
    hetflow::opencl::DriverOptions options;
    options.max_devices = max_devices;
    if (all_types) {
      options.device_types = CL_DEVICE_TYPE_ALL;
      options.device_types_set = true;
    }
    return nb::steal(hetflow::python::driver_capsule(hetflow::opencl::make_driver(options)));
  });
  m.def("describer", [] { return nb::steal(hetflow::python::describe_capsule(&describe_opencl_task)); });
  m.def("setup_note", [] { return nb::steal(hetflow::python::note_setup_capsule(&note_setup)); });
}
