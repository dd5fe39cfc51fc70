#pragma once
// Type-erased task bodies: a callable (and later its result) living in a task's storage.
#include <algorithm>
#include <functional>
#include <new>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <utility>

#include "hetflow/codelet.hpp"
#include "hetflow/detail/task_api.hpp"
#include "hetflow/error.hpp"
#include "hetflow/export.hpp"

namespace hetflow::detail {

/// A callable may take the TaskContext as its first argument (to reach its buffers or its
/// worker); its result type, either way.
template <class F, class... Args>
inline constexpr bool takes_context_v = std::is_invocable_v<F&, TaskContext&, Args&...>;

template <class F, class... Args>
struct CallResult {
  using type = std::invoke_result_t<F&, Args&...>;
};
template <class F, class... Args>
requires takes_context_v<F, Args...>
struct CallResult<F, Args...> {
  using type = std::invoke_result_t<F&, TaskContext&, Args&...>;
};

template <class F>
inline constexpr bool is_std_function_v = false;
template <class R, class... Args>
inline constexpr bool is_std_function_v<std::function<R(Args...)>> = true;

/// Throws InvalidArgument for a callable that holds nothing to call (a null function or member
/// pointer, an empty std::function): refused at submission rather than crashing a worker.
template <class F>
void refuse_empty_callable(const F& fn, const char* caller) {
  bool empty = false;
  if constexpr (std::is_pointer_v<F> || std::is_member_pointer_v<F>) {
    empty = fn == nullptr;
  } else if constexpr (is_std_function_v<F>) {
    empty = !fn;
  }
  if (empty) {
    throw InvalidArgument(std::string(caller) +
                          ": the function is empty (a null pointer, or a std::function holding nothing): there is "
                          "nothing to run");
  }
}

/// A callable stored with its arguments: what Runtime::submit keeps in a task.
template <class F, class... Args>
struct Bound {
  F fn;
  std::tuple<Args...> args;

  decltype(auto) operator()(TaskContext& context) {
    return std::apply(
        [&](Args&... values) -> decltype(auto) {
          if constexpr (takes_context_v<F, Args...>) {
            return std::invoke(fn, context, values...);
          } else {
            (void)context;
            return std::invoke(fn, values...);
          }
        },
        args);
  }
};

/// The body of Runtime::submit: a callable taking the TaskContext, stored with its arguments.
template <class F, class R>
struct CallableBody {
  static void run(void* storage, TaskContext& context) {
    F* fn = std::launder(static_cast<F*>(storage));
    struct Destroy {
      F* fn;
      bool done = false;
      void now() {
        fn->~F();
        done = true;
      }
      ~Destroy() {
        if (!done) fn->~F();
      }
    } destroy{fn};
    if constexpr (std::is_void_v<R>) {
      std::invoke(*fn, context);
    } else {
      R result = std::invoke(*fn, context);
      destroy.now();
      ::new (storage) R(std::move(result));
    }
  }
  static void destroy_body(void* storage) noexcept { std::launder(static_cast<F*>(storage))->~F(); }
  static void destroy_result(void* storage) noexcept {
    if constexpr (!std::is_void_v<R>) std::launder(static_cast<R*>(storage))->~R();
  }
  static constexpr BodyOps ops{&run, &destroy_body, std::is_void_v<R> ? nullptr : &destroy_result, nullptr};
  using Slot = std::conditional_t<std::is_void_v<R>, F, R>;  // what the storage holds at the end
  static constexpr std::size_t size = std::max(sizeof(F), sizeof(Slot));
  static constexpr std::size_t align = std::max(alignof(F), alignof(Slot));
};

/// Body of a codelet task: the codelet's implementation for the worker's arch, with an argument.
HETFLOW_API void run_codelet(TaskContext& context);

template <class A>
struct CodeletBody {
  static void run(void* storage, TaskContext& context) {
    struct Destroy {
      void* storage;
      ~Destroy() { std::launder(static_cast<A*>(storage))->~A(); }
    } destroy{storage};
    run_codelet(context);
  }
  static void destroy_body(void* storage) noexcept { std::launder(static_cast<A*>(storage))->~A(); }
  static constexpr BodyOps ops{&run, &destroy_body, nullptr, &typeid(A)};
};

inline constexpr BodyOps kCodeletWithoutArg{[](void*, TaskContext& context) { run_codelet(context); },
                                            [](void*) noexcept {}, nullptr, nullptr};

}  // namespace hetflow::detail
