// The files the runtime reads and writes on its own (models under $HETFLOW_HOME, traces): reads
// take only regular files of bounded size and never block; writes replace only a regular file
// (or create one), atomically, and leave anything else at the path alone.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "hetflow/hetflow.hpp"
#include "hetflow/perfmodel.hpp"
#include "util/atomic_file.hpp"

namespace {

namespace fs = std::filesystem;
using hetflow::detail::AtomicFile;
using hetflow::detail::FileRead;
using hetflow::detail::read_regular_file;
using hetflow::detail::write_file_atomically;

class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "hetflow-files-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  [[nodiscard]] fs::path operator/(const std::string& name) const { return path_ / name; }
  [[nodiscard]] const fs::path& path() const { return path_; }
  // The names in the directory, so that a test sees no temporary file was left behind.
  [[nodiscard]] std::size_t entries() const {
    std::size_t n = 0;
    for ([[maybe_unused]] const auto& entry : fs::directory_iterator(path_)) ++n;
    return n;
  }

 private:
  fs::path path_;
};

std::string contents(const fs::path& file) {
  std::ifstream in(file);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

void make_fifo(const fs::path& path) { ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0) << path; }

// --- reading ---------------------------------------------------------------------------------

TEST(FileSafety, ReadTakesARegularFileAndFollowsLinksToOne) {
  TempDir dir;
  std::ofstream(dir / "a.txt") << "hello";
  fs::create_symlink(dir / "a.txt", dir / "link.txt");
  for (const char* name : {"a.txt", "link.txt"}) {
    const FileRead read = read_regular_file(dir / name);
    EXPECT_EQ(read.status, FileRead::Status::loaded) << name << ": " << read.reason;
    EXPECT_EQ(read.text, "hello") << name;
  }
  EXPECT_EQ(read_regular_file(dir / "absent").status, FileRead::Status::missing);
}

TEST(FileSafety, ReadRefusesAFifoWithoutBlocking) {
  TempDir dir;
  make_fifo(dir / "fifo");
  const FileRead read = read_regular_file(dir / "fifo");  // would block for ever on a plain open
  EXPECT_EQ(read.status, FileRead::Status::refused);
  EXPECT_NE(read.reason.find("a FIFO"), std::string::npos) << read.reason;
}

TEST(FileSafety, ReadRefusesALinkToACharacterDevice) {
  TempDir dir;
  fs::create_symlink("/dev/zero", dir / "zero");
  const FileRead read = read_regular_file(dir / "zero");  // would read for ever
  EXPECT_EQ(read.status, FileRead::Status::refused);
  EXPECT_NE(read.reason.find("a character device"), std::string::npos) << read.reason;
}

TEST(FileSafety, ReadRefusesFilesLargerThanTheLimit) {
  TempDir dir;
  std::ofstream(dir / "small") << "0123456789abcdef";
  EXPECT_EQ(read_regular_file(dir / "small", 16).status, FileRead::Status::loaded);
  const FileRead read = read_regular_file(dir / "small", 15);
  EXPECT_EQ(read.status, FileRead::Status::refused);
  EXPECT_NE(read.reason.find("16 bytes"), std::string::npos) << read.reason;
  // Past the default limit (sparse: no disk used).
  { std::ofstream create(dir / "huge"); }
  fs::resize_file(dir / "huge", hetflow::detail::kMaxReadBytes + 1);
  EXPECT_EQ(read_regular_file(dir / "huge").status, FileRead::Status::refused);
}

// A model file that is a FIFO or a link to /dev/zero is skipped with a warning, not a hang.
TEST(FileSafety, ModelFileThatIsNotRegularIsSkippedWithAWarning) {
  TempDir dir;
  make_fifo(dir / "fifo.model");
  fs::create_symlink("/dev/zero", dir / "zero.model");
  for (const auto& [name, kind] : {std::pair{"fifo", "a FIFO"}, std::pair{"zero", "a character device"}}) {
    const fs::path file = dir / (std::string(name) + ".model");
    hetflow::PerfModel model(name, file);
    testing::internal::CaptureStderr();
    EXPECT_FALSE(model.load());
    const std::string warning = testing::internal::GetCapturedStderr();
    EXPECT_NE(warning.find("hetflow: warning: "), std::string::npos) << warning;
    EXPECT_NE(warning.find(file.string()), std::string::npos) << warning;
    EXPECT_NE(warning.find(kind), std::string::npos) << warning;
    EXPECT_EQ(warning.find('\n'), warning.size() - 1) << "one line: " << warning;
    EXPECT_TRUE(model.entries().empty());
  }
}

// --- writing ---------------------------------------------------------------------------------

TEST(FileSafety, WriteCreatesOrReplacesARegularFile) {
  TempDir dir;
  write_file_atomically(dir / "new.txt", "one");
  EXPECT_EQ(contents(dir / "new.txt"), "one");
  write_file_atomically(dir / "new.txt", "two");
  EXPECT_EQ(contents(dir / "new.txt"), "two");
  EXPECT_EQ(dir.entries(), 1u);
}

TEST(FileSafety, WriteLeavesAnythingButARegularFileAlone) {
  TempDir dir;
  std::ofstream(dir / "victim.txt") << "keep";
  fs::create_symlink(dir / "victim.txt", dir / "link.txt");
  make_fifo(dir / "fifo");
  fs::create_directory(dir / "directory");
  const std::size_t before = dir.entries();
  for (const auto& [name, kind] :
       {std::pair{"link.txt", "a symbolic link"}, std::pair{"fifo", "a FIFO"}, std::pair{"directory", "a directory"}}) {
    const fs::path target = dir / name;
    try {
      write_file_atomically(target, "new");
      ADD_FAILURE() << "replaced " << name;
    } catch (const hetflow::Error& e) {
      const std::string text = e.what();
      EXPECT_NE(text.find(target.string()), std::string::npos) << text;
      EXPECT_NE(text.find(kind), std::string::npos) << text;
    }
  }
  EXPECT_TRUE(fs::is_symlink(dir / "link.txt"));
  EXPECT_EQ(contents(dir / "victim.txt"), "keep");  // not followed
  EXPECT_TRUE(fs::is_fifo(dir / "fifo"));
  EXPECT_TRUE(fs::is_directory(dir / "directory"));
  EXPECT_EQ(dir.entries(), before);  // no temporary file left
}

// What appears at the path while the file is being written is not replaced either.
TEST(FileSafety, WriteChecksThePathAgainBeforeReplacing) {
  TempDir dir;
  std::ofstream(dir / "victim.txt") << "keep";
  AtomicFile file(dir / "target");
  file.write("new");
  fs::create_symlink(dir / "victim.txt", dir / "target");
  EXPECT_THROW(file.commit(), hetflow::Error);
  EXPECT_TRUE(fs::is_symlink(dir / "target"));
  EXPECT_EQ(contents(dir / "victim.txt"), "keep");
}

// HETFLOW_TRACE naming a symbolic link: the trace is not written through it, the link stays,
// and shutdown reports why.
TEST(FileSafety, TraceIsNotWrittenThroughASymbolicLink) {
  TempDir dir;
  std::ofstream(dir / "victim.txt") << "keep";
  const fs::path trace = dir / "trace.json";
  fs::create_symlink(dir / "victim.txt", trace);
  testing::internal::CaptureStderr();
  {
    hetflow::Runtime rt(hetflow::Config{.ncpus = 1, .trace_path = trace.string()});
    rt.submit([] { return 1; }).get();
  }
  const std::string error = testing::internal::GetCapturedStderr();
  EXPECT_NE(error.find("cannot write the trace"), std::string::npos) << error;
  EXPECT_NE(error.find("a symbolic link"), std::string::npos) << error;
  EXPECT_TRUE(fs::is_symlink(trace));
  EXPECT_EQ(contents(dir / "victim.txt"), "keep");
  EXPECT_EQ(dir.entries(), 2u);
}

TEST(FileSafety, TraceIsNotWrittenIntoAFifoButReplacesARegularFile) {
  TempDir dir;
  const fs::path fifo = dir / "fifo.json";
  make_fifo(fifo);
  testing::internal::CaptureStderr();
  {
    hetflow::Runtime rt(hetflow::Config{.ncpus = 1, .trace_path = fifo.string()});
    rt.submit([] { return 1; }).get();
  }
  const std::string error = testing::internal::GetCapturedStderr();
  EXPECT_NE(error.find("a FIFO"), std::string::npos) << error;
  EXPECT_TRUE(fs::is_fifo(fifo));

  const fs::path regular = dir / "trace.json";
  std::ofstream(regular) << "old";
  {
    hetflow::Runtime rt(hetflow::Config{.ncpus = 1, .trace_path = regular.string()});
    rt.submit([] { return 1; }).get();
  }
  EXPECT_EQ(contents(regular).rfind("{", 0), 0u) << contents(regular);
  EXPECT_EQ(dir.entries(), 2u);
}

}  // namespace
