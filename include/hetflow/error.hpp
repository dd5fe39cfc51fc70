#pragma once
#include <exception>
#include <stdexcept>
#include <string>

#include "hetflow/export.hpp"

namespace hetflow {

/// Base of the errors hetflow itself raises.
class HETFLOW_API Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A call got an argument it cannot accept (unknown scheduler, unregistered handle, bad access mode...).
class HETFLOW_API InvalidArgument : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

/// Work was submitted to a runtime that has been shut down.
class HETFLOW_API ShutdownError : public Error {
 public:
  using Error::Error;
};

/// The task was cancelled before it started.
class HETFLOW_API CancelledError : public Error {
 public:
  using Error::Error;
};

/// The task did not run because a task whose output it needs (one that was to write data it
/// reads, or one named in TaskOptions::after) failed or was cancelled.
/// `root_cause()` is the original failure; `root_task()` names the task that raised it.
class HETFLOW_API DependencyError : public Error {
 public:
  DependencyError(std::string root_task, std::exception_ptr root_cause);
  [[nodiscard]] const std::string& root_task() const noexcept { return root_task_; }
  [[nodiscard]] std::exception_ptr root_cause() const noexcept { return root_cause_; }

 private:
  std::string root_task_;
  std::exception_ptr root_cause_;
};

/// The text of an exception_ptr's exception, for messages.
HETFLOW_API std::string describe(const std::exception_ptr& error);

}  // namespace hetflow
