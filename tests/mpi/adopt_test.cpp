// A program that initialised MPI itself keeps it: hetflow adopts it and never finalises it.
//
//   adopt_test multiple   MPI_Init_thread(MULTIPLE); messages through world() while the program
//                         makes MPI calls of its own; MPI still initialised after hetflow's
//                         clean-up at exit, finalised then by the program.
//   adopt_test finalize   the usual MPI program: MPI_Finalize at the end of main, the transport
//                         still alive; its clean-up at exit then leaves MPI alone.
//   adopt_test funneled   MPI_Init_thread(FUNNELED): world() refuses with hetflow::Error.
//
// Each rank exits 0 only if every check passed.
#include <mpi.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "hetflow/error.hpp"
#include "hetflow/mpi.hpp"

namespace {

int failures = 0;
int rank_of_this_process = -1;

void expect(bool condition, const std::string& what) {
  if (condition) return;
  ++failures;
  std::fprintf(stderr, "rank %d: FAILED: %s\n", rank_of_this_process, what.c_str());
  std::fflush(stderr);
}

// Registered before world(), so it runs after hetflow's clean-up at exit.
void finalise_after_hetflow() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  expect(finalized == 0, "hetflow finalised MPI that the program had initialised");
  if (finalized == 0) MPI_Finalize();
  if (failures != 0) std::_Exit(1);
}

void check_finalised_by_program() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  expect(finalized != 0, "MPI is not finalised at exit although the program finalised it");
  if (failures != 0) std::_Exit(1);
}

// Waits for `expected` callbacks; aborts rather than hangs.
class Counter {
 public:
  std::function<void()> callback() {
    return [this] {
      std::lock_guard guard(mutex_);
      ++count_;
      changed_.notify_all();
    };
  }
  void wait(int expected) {
    std::unique_lock lock(mutex_);
    if (!changed_.wait_for(lock, std::chrono::seconds(60), [&] { return count_ >= expected; })) {
      std::fprintf(stderr, "rank %d: stuck waiting for messages\n", rank_of_this_process);
      std::abort();
    }
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  int count_ = 0;
};

// A ring exchange through the transport while the program itself runs MPI_Allreduce.
void exchange(hetflow::mpi::Transport& transport, bool program_calls_mpi) {
  const int rank = transport.rank();
  const int size = transport.size();
  std::vector<std::int64_t> outgoing(1000);
  std::vector<std::int64_t> incoming(1000, -1);
  for (std::size_t i = 0; i < outgoing.size(); ++i) outgoing[i] = rank * 100'000 + static_cast<std::int64_t>(i);
  Counter done;
  transport.receive((rank + size - 1) % size, 1, incoming.data(), incoming.size() * sizeof(std::int64_t),
                    done.callback());
  transport.send((rank + 1) % size, 1, outgoing.data(), outgoing.size() * sizeof(std::int64_t), done.callback());
  if (program_calls_mpi) {
    int one = 1;
    int sum = 0;
    MPI_Allreduce(&one, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    expect(sum == size, "MPI_Allreduce of the program gave " + std::to_string(sum));
  }
  done.wait(2);
  const int previous = (rank + size - 1) % size;
  bool intact = true;
  for (std::size_t i = 0; i < incoming.size(); ++i) {
    intact = intact && incoming[i] == previous * 100'000 + static_cast<std::int64_t>(i);
  }
  expect(intact, "the ring's message arrived damaged");
  Counter barrier;
  transport.barrier(barrier.callback());
  barrier.wait(1);
}

}  // namespace

int main(int argc, char** argv) {
  const std::string_view mode = argc > 1 ? argv[1] : "";
  if (mode != "multiple" && mode != "finalize" && mode != "funneled") {
    std::fprintf(stderr, "usage: %s multiple|finalize|funneled\n", argv[0]);
    return 2;
  }
  const int asked = mode == "funneled" ? MPI_THREAD_FUNNELED : MPI_THREAD_MULTIPLE;
  int provided = MPI_THREAD_SINGLE;
  if (MPI_Init_thread(&argc, &argv, asked, &provided) != MPI_SUCCESS) return 3;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_of_this_process);

  if (mode == "funneled") {
    std::atexit(finalise_after_hetflow);
    if (provided > MPI_THREAD_FUNNELED) {
      std::fprintf(stderr, "rank %d: MPI gave more than FUNNELED; nothing to check\n", rank_of_this_process);
      return 0;
    }
    try {
      auto transport = hetflow::mpi::world();
      expect(false, "world() accepted MPI_THREAD_FUNNELED");
    } catch (const hetflow::Error& error) {
      const std::string message = error.what();
      expect(message.find("MPI_THREAD_FUNNELED") != std::string::npos, "unclear refusal: " + message);
      if (rank_of_this_process == 0) std::printf("world() refused, as it should: %s\n", message.c_str());
    }
    return failures == 0 ? 0 : 1;
  }

  expect(provided == MPI_THREAD_MULTIPLE, "MPI did not give MPI_THREAD_MULTIPLE");
  std::atexit(mode == "multiple" ? finalise_after_hetflow : check_finalised_by_program);
  auto transport = hetflow::mpi::world();
  expect(transport->rank() == rank_of_this_process, "world()'s rank differs from MPI_COMM_WORLD's");
  exchange(*transport, /*program_calls_mpi=*/true);
  if (mode == "finalize") {
    // Every rank is done with hetflow's messages once the exchange's barrier has completed.
    MPI_Finalize();
  }
  if (rank_of_this_process == 0) std::printf("%s: %s\n", std::string(mode).c_str(), failures == 0 ? "ok" : "FAILED");
  return failures == 0 ? 0 : 1;
}
