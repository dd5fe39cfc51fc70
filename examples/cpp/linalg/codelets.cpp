// The codelets, their CPU implementations (OpenBLAS and LAPACKE), and what the architectures
// share: shapes, errors, counting.
#include <cblas.h>
#include <lapacke.h>
#include <sched.h>

#include <climits>
#include <string>
#include <utility>

#include "internal.hpp"
#include "linalg.hpp"

namespace linalg {

std::string_view kernel_name(Kernel kernel) noexcept {
  switch (kernel) {
    case Kernel::gemm: return "gemm";
    case Kernel::syrk: return "syrk";
    case Kernel::trsm: return "trsm";
    case Kernel::potrf: return "potrf";
  }
  return "?";
}

void TaskCounter::reset(unsigned workers) {
  workers_ = workers;
  counts_ = std::make_unique<std::atomic<std::uint64_t>[]>(std::size_t{workers} * kKernelCount);
  for (std::size_t i = 0; i < std::size_t{workers} * kKernelCount; ++i) counts_[i].store(0, std::memory_order_relaxed);
}

void TaskCounter::count(unsigned worker, Kernel kernel) noexcept {
  if (worker < workers_)
    counts_[worker * kKernelCount + static_cast<std::size_t>(kernel)].fetch_add(1, std::memory_order_relaxed);
}

std::uint64_t TaskCounter::get(unsigned worker, Kernel kernel) const noexcept {
  if (worker >= workers_) return 0;
  return counts_[worker * kKernelCount + static_cast<std::size_t>(kernel)].load(std::memory_order_relaxed);
}

void TaskCounter::print(const hetflow::Runtime& runtime, std::FILE* out) const {
  std::uint64_t total_by_kernel[kKernelCount] = {};
  for (const hetflow::ext::WorkerInfo& worker : runtime.workers()) {
    std::uint64_t total = 0;
    for (Kernel kernel : kKernels) total += get(worker.id, kernel);
    if (total == 0) continue;
    std::fprintf(out, "  worker %2u %-7s", worker.id, std::string(hetflow::arch_name(worker.arch)).c_str());
    for (Kernel kernel : kKernels) {
      const std::uint64_t n = get(worker.id, kernel);
      total_by_kernel[static_cast<std::size_t>(kernel)] += n;
      std::fprintf(out, "  %s %6llu", std::string(kernel_name(kernel)).c_str(), static_cast<unsigned long long>(n));
    }
    std::fprintf(out, "\n");
  }
  std::fprintf(out, "  all workers      ");
  for (Kernel kernel : kKernels) {
    std::fprintf(out, "  %s %6llu", std::string(kernel_name(kernel)).c_str(),
                 static_cast<unsigned long long>(total_by_kernel[static_cast<std::size_t>(kernel)]));
  }
  std::fprintf(out, "\n");
}

void prepare_devices([[maybe_unused]] hetflow::Runtime& runtime) {
#ifdef HETFLOW_EXAMPLE_WITH_OPENCL
  detail::prepare_opencl(runtime);
#endif
}

bool built_with_opencl() noexcept {
#ifdef HETFLOW_EXAMPLE_WITH_OPENCL
  return true;
#else
  return false;
#endif
}

bool built_with_cuda() noexcept {
#ifdef HETFLOW_EXAMPLE_WITH_CUDA
  return true;
#else
  return false;
#endif
}

void set_host_blas_threads([[maybe_unused]] int threads) noexcept {
#ifdef HETFLOW_LINALG_HAVE_OPENBLAS
  openblas_set_num_threads(threads);
#endif
}

int host_cpu_count() noexcept {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0) return 1;
  return CPU_COUNT(&set) > 0 ? CPU_COUNT(&set) : 1;
}

namespace detail {

int blas_int(std::size_t value, const char* what) {
  if (value > static_cast<std::size_t>(INT_MAX)) {
    throw hetflow::InvalidArgument(std::string("linalg: ") + what + " (" + std::to_string(value) +
                                   ") is too large for BLAS");
  }
  return static_cast<int>(value);
}

Matrix matrix_of(const hetflow::DataView& view, const char* what) {
  if (view.layout.kind != hetflow::DataLayout::Kind::matrix || view.layout.elem_size != sizeof(double)) {
    throw hetflow::InvalidArgument(std::string("linalg: ") + what + " must be a registered matrix of doubles");
  }
  return Matrix{blas_int(view.nx(), what), blas_int(view.ny(), what), blas_int(view.ld(), what)};
}

namespace {

void require(bool condition, const char* kernel, const char* message) {
  if (!condition) throw hetflow::InvalidArgument(std::string("linalg ") + kernel + ": " + message);
}

void require_buffers(const hetflow::TaskContext& context, std::size_t count, const char* kernel) {
  if (context.buffer_count() != count) {
    throw hetflow::InvalidArgument(std::string("linalg ") + kernel + ": expects " + std::to_string(count) +
                                   " buffers, got " + std::to_string(context.buffer_count()));
  }
}

}  // namespace

GemmShape gemm_shape(const hetflow::TaskContext& context, const GemmArgs& args) {
  require_buffers(context, 3, "gemm");
  GemmShape s;
  s.a = matrix_of(context.buffer(0), "gemm A");
  s.b = matrix_of(context.buffer(1), "gemm B");
  s.c = matrix_of(context.buffer(2), "gemm C");
  s.m = s.c.rows;
  s.n = s.c.cols;
  s.k = args.transa == Transpose::no ? s.a.cols : s.a.rows;
  const int a_rows = args.transa == Transpose::no ? s.a.rows : s.a.cols;
  const int b_rows = args.transb == Transpose::no ? s.b.rows : s.b.cols;
  const int b_cols = args.transb == Transpose::no ? s.b.cols : s.b.rows;
  require(a_rows == s.m && b_cols == s.n && b_rows == s.k, "gemm", "op(A), op(B) and C do not conform");
  return s;
}

SyrkShape syrk_shape(const hetflow::TaskContext& context) {
  require_buffers(context, 2, "syrk");
  SyrkShape s;
  s.a = matrix_of(context.buffer(0), "syrk A");
  s.c = matrix_of(context.buffer(1), "syrk C");
  s.n = s.c.rows;
  s.k = s.a.cols;
  require(s.c.cols == s.n && s.a.rows == s.n, "syrk", "C must be square with as many rows as A");
  return s;
}

TrsmShape trsm_shape(const hetflow::TaskContext& context) {
  require_buffers(context, 2, "trsm");
  TrsmShape s;
  s.l = matrix_of(context.buffer(0), "trsm L");
  s.b = matrix_of(context.buffer(1), "trsm B");
  s.m = s.b.rows;
  s.n = s.b.cols;
  require(s.l.rows == s.n && s.l.cols == s.n, "trsm", "L must be square with as many rows as B has columns");
  return s;
}

Matrix potrf_shape(const hetflow::TaskContext& context) {
  require_buffers(context, 1, "potrf");
  const Matrix a = matrix_of(context.buffer(0), "potrf A");
  require(a.rows == a.cols, "potrf", "the tile must be square");
  return a;
}

void throw_not_positive_definite(const PotrfArgs& args, long info, std::string_view implementation) {
  if (info < 0) {
    throw hetflow::Error("potrf (" + std::string(implementation) + "): argument " + std::to_string(-info) +
                         " was illegal on diagonal tile " + std::to_string(args.tile));
  }
  throw hetflow::Error("potrf (" + std::string(implementation) + "): diagonal tile " + std::to_string(args.tile) +
                       " (" + std::to_string(args.tile) + "," + std::to_string(args.tile) +
                       ") is not positive definite: LAPACK info " + std::to_string(info) +
                       ", the leading minor of order " + std::to_string(args.offset + static_cast<std::size_t>(info)) +
                       " of the matrix");
}

}  // namespace detail

namespace {

CBLAS_TRANSPOSE cblas_transpose(Transpose t) noexcept { return t == Transpose::no ? CblasNoTrans : CblasTrans; }

void cpu_gemm(hetflow::TaskContext& context) {
  const auto& args = context.arg<GemmArgs>();
  const detail::GemmShape s = detail::gemm_shape(context, args);
  cblas_dgemm(CblasColMajor, cblas_transpose(args.transa), cblas_transpose(args.transb), s.m, s.n, s.k, args.alpha,
              context.buffer(0).as<const double>(), s.a.ld, context.buffer(1).as<const double>(), s.b.ld, args.beta,
              context.buffer(2).as<double>(), s.c.ld);
}

void cpu_syrk(hetflow::TaskContext& context) {
  const auto& args = context.arg<SyrkArgs>();
  const detail::SyrkShape s = detail::syrk_shape(context);
  cblas_dsyrk(CblasColMajor, CblasLower, CblasNoTrans, s.n, s.k, args.alpha, context.buffer(0).as<const double>(),
              s.a.ld, args.beta, context.buffer(1).as<double>(), s.c.ld);
}

void cpu_trsm(hetflow::TaskContext& context) {
  const detail::TrsmShape s = detail::trsm_shape(context);
  cblas_dtrsm(CblasColMajor, CblasRight, CblasLower, CblasTrans, CblasNonUnit, s.m, s.n, 1.0,
              context.buffer(0).as<const double>(), s.l.ld, context.buffer(1).as<double>(), s.b.ld);
}

void cpu_potrf(hetflow::TaskContext& context) {
  const auto& args = context.arg<PotrfArgs>();
  const detail::Matrix a = detail::potrf_shape(context);
  // The _work variant: with column-major data it calls LAPACK directly, without the NaN scan and
  // the copy the high-level LAPACKE_dpotrf may make.
  const lapack_int info = LAPACKE_dpotrf_work(LAPACK_COL_MAJOR, 'L', a.rows, context.buffer(0).as<double>(), a.ld);
  if (info != 0) detail::throw_not_positive_definite(args, info, "cpu");
}

hetflow::Codelet::Implementation cpu_implementation(Kernel kernel) {
  switch (kernel) {
    case Kernel::gemm: return cpu_gemm;
    case Kernel::syrk: return cpu_syrk;
    case Kernel::trsm: return cpu_trsm;
    case Kernel::potrf: return cpu_potrf;
  }
  return {};
}

hetflow::Codelet::Implementation counted(hetflow::Codelet::Implementation implementation, Kernel kernel,
                                         TaskCounter* counter) {
  if (!implementation || counter == nullptr) return implementation;
  return [implementation = std::move(implementation), kernel, counter](hetflow::TaskContext& context) {
    implementation(context);
    counter->count(context.worker_id(), kernel);
  };
}

hetflow::Codelet make_codelet(Kernel kernel, TaskCounter* counter) {
  hetflow::Codelet codelet;
  codelet.name = std::string(kernel_name(kernel));
  codelet.cpu = counted(cpu_implementation(kernel), kernel, counter);
#ifdef HETFLOW_EXAMPLE_WITH_OPENCL
  codelet.opencl = counted(detail::opencl_implementation(kernel), kernel, counter);
#endif
#ifdef HETFLOW_EXAMPLE_WITH_CUDA
  codelet.cuda = counted(detail::cuda_implementation(kernel), kernel, counter);
#endif
  codelet.model = hetflow::PerfModelRegistry::instance().get("linalg." + codelet.name);
  return codelet;
}

}  // namespace

Codelets::Codelets(TaskCounter* counter)
    : gemm(make_codelet(Kernel::gemm, counter)),
      syrk(make_codelet(Kernel::syrk, counter)),
      trsm(make_codelet(Kernel::trsm, counter)),
      potrf(make_codelet(Kernel::potrf, counter)) {}

}  // namespace linalg
