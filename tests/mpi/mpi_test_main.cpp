// main() of the GoogleTest suites run under mpirun: every rank runs every test. Rank 0 prints
// GoogleTest's report; the other ranks print only their failures, each marked with the rank. A
// rank exits non-zero when one of its tests failed, which makes mpirun fail.
//
// hetflow initialises MPI here (world() before any MPI call), so it must also finalise it: a
// handler registered before world(), and so run after hetflow's clean-up at exit, checks that.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "hetflow/mpi.hpp"

namespace {

int rank_of_this_process = -1;

// Names the test itself: GoogleTest holds its lock while it reports a result, so the listener
// cannot ask it for the current test then.
class RankFailurePrinter : public testing::EmptyTestEventListener {
 public:
  void OnTestStart(const testing::TestInfo& test) override {
    test_ = std::string(test.test_suite_name()) + "." + test.name();
  }
  void OnTestPartResult(const testing::TestPartResult& result) override {
    if (!result.failed()) return;
    std::fprintf(stderr, "rank %d: FAILED %s at %s:%d\n%s\n", rank_of_this_process, test_.c_str(),
                 result.file_name() != nullptr ? result.file_name() : "?", result.line_number(), result.message());
    std::fflush(stderr);
  }

 private:
  std::string test_ = "(outside a test)";
};

void check_finalised_by_hetflow() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized == 0) {
    std::fprintf(stderr, "rank %d: hetflow initialised MPI but did not finalise it at exit\n", rank_of_this_process);
    std::fflush(stderr);
    std::_Exit(1);
  }
}

}  // namespace

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized != 0) {
    std::fprintf(stderr, "MPI was initialised before main()\n");
    return 1;
  }
  std::atexit(check_finalised_by_hetflow);
  rank_of_this_process = hetflow::mpi::world()->rank();

  if (rank_of_this_process != 0) {
    testing::TestEventListeners& listeners = testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new RankFailurePrinter);
  }
  const int result = RUN_ALL_TESTS();
  // Rank 0's report covers its own tests only: it also says which ranks failed.
  int failed = testing::UnitTest::GetInstance()->failed_test_count();
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  std::vector<int> failed_by_rank(static_cast<std::size_t>(size), 0);
  MPI_Gather(&failed, 1, MPI_INT, failed_by_rank.data(), 1, MPI_INT, 0, MPI_COMM_WORLD);
  if (rank_of_this_process == 0) {
    std::string failing;
    for (int rank = 0; rank < size; ++rank) {
      const int count = failed_by_rank[static_cast<std::size_t>(rank)];
      if (count > 0) failing += " " + std::to_string(rank) + " (" + std::to_string(count) + " tests)";
    }
    std::printf("%s\n", failing.empty() ? ("every rank of " + std::to_string(size) + " passed").c_str()
                                        : ("FAILED on ranks" + failing).c_str());
  }
  return result;
}
