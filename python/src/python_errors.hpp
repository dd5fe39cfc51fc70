#pragma once
// Python exceptions, seen from C++: taken off the error indicator and described in one line.
#include <Python.h>

#include <string>

namespace hetflow::python {

/// The exception being raised (a new reference, its traceback attached), taken off the error
/// indicator.
PyObject* fetch_exception();

/// "TypeName: message" (or just the type's name when the message is empty); never raises.
std::string describe_python_exception(PyObject* exception);

}  // namespace hetflow::python
