#pragma once
// The kinds of the messages between the host and a Python worker process. The worker side
// (python/hetflow/_protocol.py) runs without this extension, so it holds the same table;
// `_hetflow.message_kinds()` exports this one and the protocol tests check that they agree.
#include <array>
#include <cstdint>
#include <string_view>

#include "hetflow/process.hpp"

namespace hetflow::python::message {

// Host -> worker.
inline constexpr std::uint32_t kRun = 1;
inline constexpr std::uint32_t kShutdown = 2;
// Worker -> host: replies to a RUN, and READY once at start.
inline constexpr std::uint32_t kResult = 1;
inline constexpr std::uint32_t kError = 2;
inline constexpr std::uint32_t kReady = kProcessReady;
// An offload kernel's requests to its host while it runs, and the host's answers to them.
inline constexpr std::uint32_t kSend = 4;
inline constexpr std::uint32_t kReceive = 5;
inline constexpr std::uint32_t kValue = 6;
inline constexpr std::uint32_t kFailed = 7;
inline constexpr std::uint32_t kBarrier = 8;
// A polled receive or barrier that would wait (a barrier's generation in its part).
inline constexpr std::uint32_t kNotYet = 9;

// The process driver tells replies from requests by kind.
static_assert(kResult < kProcessFirstRequest && kError < kProcessFirstRequest && kReady < kProcessFirstRequest);
static_assert(kSend >= kProcessFirstRequest && kReceive >= kProcessFirstRequest && kBarrier >= kProcessFirstRequest);

struct Kind {
  std::string_view name;
  std::uint32_t value;
};

/// Every kind, by the name python/hetflow/_protocol.py gives it.
inline constexpr std::array kKinds{
    Kind{"RUN", kRun},       Kind{"SHUTDOWN", kShutdown}, Kind{"RESULT", kResult},   Kind{"ERROR", kError},
    Kind{"READY", kReady},   Kind{"SEND", kSend},         Kind{"RECEIVE", kReceive}, Kind{"VALUE", kValue},
    Kind{"FAILED", kFailed}, Kind{"BARRIER", kBarrier},   Kind{"NOT_YET", kNotYet},
};

}  // namespace hetflow::python::message
