#include "python_errors.hpp"

namespace hetflow::python {

PyObject* fetch_exception() {
  PyObject* type = nullptr;
  PyObject* value = nullptr;
  PyObject* traceback = nullptr;
  PyErr_Fetch(&type, &value, &traceback);
  PyErr_NormalizeException(&type, &value, &traceback);
  if (traceback != nullptr && value != nullptr) PyException_SetTraceback(value, traceback);
  Py_XDECREF(type);
  Py_XDECREF(traceback);
  return value;
}

std::string describe_python_exception(PyObject* exception) {
  std::string text = Py_TYPE(exception)->tp_name;
  if (PyObject* message = PyObject_Str(exception)) {
    const char* utf8 = PyUnicode_AsUTF8(message);
    if (utf8 != nullptr && *utf8 != '\0') text += std::string(": ") + utf8;
    Py_DECREF(message);
  }
  PyErr_Clear();
  return text;
}

}  // namespace hetflow::python
