// What a model file holds when all its sizes would not fit in what a load accepts (white-box:
// src/perfmodel/storage.hpp, with a small limit in place of kMaxReadBytes).
#include <gtest/gtest.h>

#include <cstddef>
#include <string>

#include "perfmodel/storage.hpp"

namespace {

using hetflow::Arch;
using hetflow::detail::format_model_within_limit;
using hetflow::detail::ModelContents;
using hetflow::detail::parse_model_text;
using hetflow::detail::ReadResult;

// A model learned over many sizes wrote a file larger than a load accepts: the next load called
// it damaged, and everything in it was lost. The sizes with the fewest runs are left out instead.
TEST(ModelStorage, AFileThatWouldBeTooLongLeavesOutTheLeastRunSizes) {
  ModelContents contents;
  for (std::size_t size = 0; size < 2000; ++size) {
    const std::size_t runs = size % 10 == 0 ? 5 : 1;  // every tenth size was run more often
    for (std::size_t run = 0; run < runs; ++run) contents[{Arch::cpu, size}].add(0.001 * static_cast<double>(run + 1));
  }
  const std::size_t whole = hetflow::detail::format_model("many", contents).size();
  const std::size_t limit = whole / 5;
  std::size_t dropped = 0;
  const std::string text = format_model_within_limit("many", contents, dropped, limit);
  EXPECT_LE(text.size(), limit);
  EXPECT_GT(dropped, 0u);
  EXPECT_EQ(contents.size(), 2000u - dropped);
  const ReadResult read = parse_model_text(text, "many");
  ASSERT_EQ(read.status, ReadResult::Status::loaded) << read.reason;
  EXPECT_EQ(read.contents.size(), contents.size());
  for (std::size_t size = 0; size < 2000; size += 10) {
    EXPECT_TRUE(read.contents.contains({Arch::cpu, size})) << "size " << size << ", run 5 times, was left out";
  }
}

TEST(ModelStorage, AFileWithinTheLimitKeepsEverySize) {
  ModelContents contents;
  for (std::size_t size = 0; size < 50; ++size) contents[{Arch::cpu, size}].add(0.5);
  std::size_t dropped = 1;
  const std::string text = format_model_within_limit("few", contents, dropped);
  EXPECT_EQ(dropped, 0u);
  EXPECT_EQ(text, hetflow::detail::format_model("few", contents));
}

}  // namespace
