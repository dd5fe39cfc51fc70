#pragma once
// The engine's answers to a scheduler's questions (ext::SchedulerContext): the clock, the
// performance models of codelets, and where data is.
#include "hetflow/ext/scheduler.hpp"

namespace hetflow::detail {

class Engine;

class EngineSchedulerContext final : public ext::SchedulerContext {
 public:
  explicit EngineSchedulerContext(Engine& runtime) noexcept : runtime_(runtime) {}
  [[nodiscard]] double now() const noexcept override;
  [[nodiscard]] bool has_model(const ext::SchedTask& task) const override;
  [[nodiscard]] std::optional<double> expected_duration(const ext::SchedTask& task, Arch arch) const override;
  [[nodiscard]] double expected_transfer(const ext::SchedTask& task, unsigned node) const override;
  void prefetch(const ext::SchedTask& task, unsigned node) override;
  void wake(Arch arch) override;
  [[nodiscard]] bool can_hold(const ext::SchedTask& task, unsigned node) const override;

 private:
  Engine& runtime_;
};

}  // namespace hetflow::detail
