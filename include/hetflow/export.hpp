#pragma once
// The libraries (libhetflow, libhetflow_opencl, libhetflow_cuda) are built with hidden
// visibility: only what carries HETFLOW_API is part of their ABI. That is the public API, the
// extension points of ext/ and the few engine entry points of detail/ that the public templates
// call. Everything else stays inside the library, free to change between releases.
//
// A class marked HETFLOW_API exports its out-of-line members and its type information, so that
// exceptions and extension interfaces keep one identity across shared libraries (catch clauses,
// dynamic_cast).
#if defined(__GNUC__) || defined(__clang__)
#define HETFLOW_API __attribute__((visibility("default")))
#else
#define HETFLOW_API
#endif
