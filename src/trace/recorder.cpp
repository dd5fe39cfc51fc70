// placeholder until written: records nothing (replaced by the trace writer)
#include "trace/recorder.hpp"

namespace hetflow::detail {
struct Recorder::State {};
Recorder::Recorder(std::string, bool, std::vector<ext::WorkerInfo>, std::vector<std::string>) {}
Recorder::~Recorder() = default;
void Recorder::task(unsigned, std::string_view, std::size_t, double, double) {}
void Recorder::transfer(unsigned, unsigned, std::size_t, double, double) {}
void Recorder::finish(double) noexcept {}
}  // namespace hetflow::detail
