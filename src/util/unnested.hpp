#pragma once
#include <cstddef>
#include <type_traits>
#include <vector>

namespace hetflow::detail {

/// The order in which the outermost call runs the calls that came in while it ran.
enum class UnnestedOrder : unsigned char {
  fifo,  ///< in the order they came: the first to come runs first
  lifo,  ///< the last to come runs first
};

/// Turns calls nested in one another on a thread into a loop run by the outermost one: a step
/// that, in turn, leads to the next (which leads to the next...) would otherwise take one stack
/// frame per link, and a long chain overflows the stack. Meant as a `thread_local`, one per use;
/// it holds nothing but a pointer, so it needs no dynamic initialisation.
///
/// `run(item, step)` outside any other run on this thread calls `step(item)`, then, in `Order`,
/// `step` on each item that calls of `run` made meanwhile (from inside the steps) have listed,
/// until none is left. Inside a run, it lists `item` for the outermost and returns; where there is
/// no memory left to list it, it calls `step(item)` there, one call deeper.
///
/// Exceptions: the first step (the outermost call's own item) may throw, and the exception leaves
/// `run` (the items listed by then are dropped: a step that throws must do so before it leads to
/// others); a later step, being run for a call that has returned, must not throw (noexcept: the
/// process ends). A step called one call deeper, with no memory left, throws to its own caller.
template <typename T, UnnestedOrder Order>
class Unnested {
 public:
  constexpr Unnested() noexcept = default;
  Unnested(const Unnested&) = delete;
  Unnested& operator=(const Unnested&) = delete;

  template <typename Step>
  void run(std::type_identity_t<T> item, Step&& step) {
    if (later_ != nullptr) {
      try {
        later_->push_back(item);
        return;
      } catch (...) {  // no memory left to list it: run here, one call deeper
      }
      step(item);
      return;
    }
    std::vector<T> later;
    struct Outermost {
      std::vector<T>*& list;
      ~Outermost() { list = nullptr; }
    } outermost{later_};
    later_ = &later;
    step(item);
    const auto step_later = [&step](T next) noexcept { step(next); };
    if constexpr (Order == UnnestedOrder::fifo) {
      for (std::size_t next = 0; next < later.size(); ++next) step_later(later[next]);
    } else {
      while (!later.empty()) {
        T next = later.back();
        later.pop_back();
        step_later(next);
      }
    }
  }

 private:
  std::vector<T>* later_ = nullptr;  // the outermost call's list, while there is one
};

}  // namespace hetflow::detail
