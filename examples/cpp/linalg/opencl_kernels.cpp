#include "opencl_kernels.hpp"

#include <algorithm>
#include <array>
#include <cstddef>
#include <map>
#include <mutex>
#include <set>
#include <utility>

namespace linalg::opencl {
namespace {

// Column-major throughout: element (r, c) of a matrix with leading dimension ld is at c * ld + r.
// Offsets are computed in size_t: a tile of a large matrix (ld = n) reaches past 2^31 elements.
constexpr std::string_view kSource = R"CLC(
#pragma OPENCL EXTENSION cl_khr_fp64 : enable

#define AT(p, r, c, ld) (p)[(size_t)(c) * (size_t)(ld) + (size_t)(r)]

/* Work-group of RTS x RTS work-items computing a BLK x BLK block of C, each work-item WPT x WPT
   elements strided by RTS (so neighbouring work-items touch neighbouring rows: coalesced
   global writes, conflict-free local reads). The K dimension goes in slices of TK, staged in
   local memory by all work-items together. */
#ifndef RTS
#define RTS 16
#endif
#ifndef WPT
#define WPT 4
#endif
#define BLK (RTS * WPT)
#define TK 16

__kernel void linalg_gemm(const int m, const int n, const int k, const int transa, const int transb,
                          const double alpha, __global const double* A, const ulong offa, const int lda,
                          __global const double* B, const ulong offb, const int ldb, const double beta,
                          __global double* C, const ulong offc, const int ldc, const int lower_only) {
  A += offa;
  B += offb;
  C += offc;
  /* +1 breaks the stride that would put a transposed load's column in one bank. */
  __local double As[TK][BLK + 1];
  __local double Bs[TK][BLK + 1];
  const int lx = get_local_id(0);
  const int ly = get_local_id(1);
  const int t = ly * RTS + lx;
  const int row0 = get_group_id(0) * BLK;
  const int col0 = get_group_id(1) * BLK;

  double acc[WPT][WPT];
  for (int i = 0; i < WPT; ++i)
    for (int j = 0; j < WPT; ++j) acc[i][j] = 0.0;

  for (int k0 = 0; k0 < k; k0 += TK) {
    /* Stage op(A)[row0.., k0..] and op(B)[k0.., col0..]; consecutive work-items read
       consecutive addresses of the stored (not the transposed) matrix. Outside: zeros. */
    for (int e = t; e < BLK * TK; e += RTS * RTS) {
      int r, p;
      if (transa) { p = e % TK; r = e / TK; } else { r = e % BLK; p = e / BLK; }
      int gr = row0 + r, gp = k0 + p;
      double v = 0.0;
      if (gr < m && gp < k) v = transa ? AT(A, gp, gr, lda) : AT(A, gr, gp, lda);
      As[p][r] = v;

      int c;
      if (transb) { c = e % BLK; p = e / BLK; } else { p = e % TK; c = e / TK; }
      int gc = col0 + c;
      gp = k0 + p;
      v = 0.0;
      if (gc < n && gp < k) v = transb ? AT(B, gc, gp, ldb) : AT(B, gp, gc, ldb);
      Bs[p][c] = v;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int p = 0; p < TK; ++p) {
      double a[WPT], b[WPT];
      for (int i = 0; i < WPT; ++i) a[i] = As[p][lx + i * RTS];
      for (int j = 0; j < WPT; ++j) b[j] = Bs[p][ly + j * RTS];
      for (int i = 0; i < WPT; ++i)
        for (int j = 0; j < WPT; ++j) acc[i][j] = fma(a[i], b[j], acc[i][j]);
    }
    barrier(CLK_LOCAL_MEM_FENCE);
  }

  for (int j = 0; j < WPT; ++j) {
    const int c = col0 + ly + j * RTS;
    for (int i = 0; i < WPT; ++i) {
      const int r = row0 + lx + i * RTS;
      if (r < m && c < n && (!lower_only || r >= c)) {
        /* beta == 0 must not read C: it may hold garbage (NaN) when the task only writes it. */
        const double v = alpha * acc[i][j];
        AT(C, r, c, ldc) = beta == 0.0 ? v : fma(beta, AT(C, r, c, ldc), v);
      }
    }
  }
}

/* B (m x n) = B * L^-T, L lower triangular (n x n): row r of X solves L x^T = b^T by forward
   substitution. One work-item per row; the rows are independent, and neighbouring work-items
   read neighbouring rows while all read the same element of L. The host gives it panels of a
   few columns and leaves the rest of the work to linalg_gemm. */
__kernel void linalg_trsm_rlt(const int m, const int n, __global const double* L, const ulong offl, const int ldl,
                              __global double* B, const ulong offb, const int ldb) {
  const int r = get_global_id(0);
  if (r >= m) return;
  L += offl;
  B += offb;
  for (int j = 0; j < n; ++j) {
    double s = AT(B, r, j, ldb);
    for (int p = 0; p < j; ++p) s -= AT(B, r, p, ldb) * AT(L, j, p, ldl);
    AT(B, r, j, ldb) = s / AT(L, j, j, ldl);
  }
}

/* Unblocked left-looking Cholesky of an n x n block (lower) by one work-group. Column j: each
   work-item updates some rows i >= j with the dot product of rows i and j over the finished
   columns, then the pivot is checked and the column scaled. On a pivot that is not positive,
   *info becomes base + j + 1 (LAPACK's convention, counted from the start of the tile) unless an
   earlier block already failed. */
__kernel void linalg_potrf_lower(const int n, __global double* A, const ulong offa, const int lda,
                                 __global int* info, const int base) {
  const int lid = get_local_id(0);
  const int nt = get_local_size(0);
  A += offa;
  for (int j = 0; j < n; ++j) {
    for (int i = j + lid; i < n; i += nt) {
      double s = AT(A, i, j, lda);
      for (int p = 0; p < j; ++p) s -= AT(A, i, p, lda) * AT(A, j, p, lda);
      AT(A, i, j, lda) = s;
    }
    barrier(CLK_GLOBAL_MEM_FENCE);
    const double d = AT(A, j, j, lda);
    /* Every work-item sees the same pivot, so they all leave together. */
    if (!(d > 0.0)) {
      /* Set only if still 0. (A plain read-test-write here was miscompiled by PoCL 3.1: the
         store never happened.) */
      if (lid == 0) (void)atomic_cmpxchg(info, 0, base + j + 1);
      return;
    }
    const double root = sqrt(d);
    barrier(CLK_GLOBAL_MEM_FENCE); /* all have read the pivot before it is overwritten */
    for (int i = j + lid; i < n; i += nt) AT(A, i, j, lda) = i == j ? root : AT(A, i, j, lda) / root;
    barrier(CLK_GLOBAL_MEM_FENCE);
  }
}
)CLC";

void check(cl_int status, const char* what) {
  if (status != CL_SUCCESS)
    throw hetflow::Error(std::string("linalg OpenCL: ") + what + " failed: " + status_text(status));
}

template <class T>
void set_arg(cl_kernel kernel, cl_uint index, const T& value) {
  check(clSetKernelArg(kernel, index, sizeof(T), &value), "clSetKernelArg");
}

template <class... Args>
void set_args(cl_kernel kernel, const Args&... args) {
  cl_uint index = 0;
  (set_arg(kernel, index++, args), ...);
}

std::size_t kernel_work_group_size(cl_kernel kernel, cl_device_id device) {
  std::size_t size = 0;
  check(clGetKernelWorkGroupInfo(kernel, device, CL_KERNEL_WORK_GROUP_SIZE, sizeof size, &size, nullptr),
        "clGetKernelWorkGroupInfo");
  return size;
}

std::size_t round_up(std::size_t value, std::size_t step) { return (value + step - 1) / step * step; }

// Shapes of the gemm kernel, from the fastest on a GPU down to what any device can run; the
// first one whose work-group the device accepts for the built kernel is used.
struct GemmVariant {
  int threads;  // RTS
  int work;     // WPT
};
constexpr std::array kGemmVariants{GemmVariant{16, 4}, GemmVariant{8, 4}, GemmVariant{4, 4}, GemmVariant{1, 4}};

std::string gemm_options(const GemmVariant& v) {
  return "-DRTS=" + std::to_string(v.threads) + " -DWPT=" + std::to_string(v.work);
}

struct GemmChoice {
  cl_kernel kernel;
  GemmVariant variant;
};

GemmChoice gemm_kernel(const Target& target) {
  static std::mutex mutex;
  static std::map<cl_device_id, std::size_t> chosen;  // device -> index in kGemmVariants
  std::size_t first = 0;
  {
    std::lock_guard guard(mutex);
    if (auto it = chosen.find(target.device); it != chosen.end()) first = it->second;
  }
  for (std::size_t i = first; i < kGemmVariants.size(); ++i) {
    const GemmVariant& v = kGemmVariants[i];
    cl_kernel kernel = target.kernel("linalg_gemm", gemm_options(v));
    if (kernel_work_group_size(kernel, target.device) >= static_cast<std::size_t>(v.threads * v.threads)) {
      std::lock_guard guard(mutex);
      chosen[target.device] = i;
      return {kernel, v};
    }
  }
  throw hetflow::Error("linalg OpenCL: the device accepts no work-group size for the gemm kernel");
}

class Buffer {
 public:
  Buffer(cl_context context, cl_mem_flags flags, std::size_t bytes, void* host) {
    cl_int status = CL_SUCCESS;
    mem_ = clCreateBuffer(context, flags, bytes, host, &status);
    check(status, "clCreateBuffer");
  }
  ~Buffer() { clReleaseMemObject(mem_); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  [[nodiscard]] cl_mem get() const noexcept { return mem_; }

 private:
  cl_mem mem_ = nullptr;
};

}  // namespace

std::string preferred_gemm_options() { return gemm_options(kGemmVariants.front()); }

std::string_view source() noexcept { return kSource; }

std::string status_text(cl_int status) {
  static constexpr std::array<std::pair<cl_int, const char*>, 12> kNames{{
      {CL_SUCCESS, "CL_SUCCESS"},
      {CL_OUT_OF_RESOURCES, "CL_OUT_OF_RESOURCES"},
      {CL_OUT_OF_HOST_MEMORY, "CL_OUT_OF_HOST_MEMORY"},
      {CL_MEM_OBJECT_ALLOCATION_FAILURE, "CL_MEM_OBJECT_ALLOCATION_FAILURE"},
      {CL_BUILD_PROGRAM_FAILURE, "CL_BUILD_PROGRAM_FAILURE"},
      {CL_INVALID_VALUE, "CL_INVALID_VALUE"},
      {CL_INVALID_MEM_OBJECT, "CL_INVALID_MEM_OBJECT"},
      {CL_INVALID_KERNEL_ARGS, "CL_INVALID_KERNEL_ARGS"},
      {CL_INVALID_WORK_GROUP_SIZE, "CL_INVALID_WORK_GROUP_SIZE"},
      {CL_INVALID_WORK_ITEM_SIZE, "CL_INVALID_WORK_ITEM_SIZE"},
      {CL_INVALID_GLOBAL_WORK_SIZE, "CL_INVALID_GLOBAL_WORK_SIZE"},
      {CL_INVALID_COMMAND_QUEUE, "CL_INVALID_COMMAND_QUEUE"},
  }};
  for (const auto& [code, name] : kNames) {
    if (code == status) return std::string(name) + " (" + std::to_string(status) + ")";
  }
  return "OpenCL status " + std::to_string(status);
}

void require_double(cl_device_id device) {
  static std::mutex mutex;
  static std::set<cl_device_id> checked;
  {
    std::lock_guard guard(mutex);
    if (checked.contains(device)) return;
  }
  cl_device_fp_config config = 0;
  check(clGetDeviceInfo(device, CL_DEVICE_DOUBLE_FP_CONFIG, sizeof config, &config, nullptr), "clGetDeviceInfo");
  if (config == 0) throw hetflow::Error("linalg OpenCL: the device has no double precision (cl_khr_fp64)");
  std::lock_guard guard(mutex);
  checked.insert(device);
}

void gemm(const Target& target, Transpose transa, Transpose transb, int m, int n, int k, double alpha, const Matrix& a,
          const Matrix& b, double beta, const Matrix& c, bool lower_only) {
  if (m == 0 || n == 0) return;
  require_double(target.device);
  const GemmChoice choice = gemm_kernel(target);
  const int ta = transa == Transpose::yes ? 1 : 0;
  const int tb = transb == Transpose::yes ? 1 : 0;
  const int lower = lower_only ? 1 : 0;
  set_args(choice.kernel, m, n, k, ta, tb, alpha, a.mem, a.offset, a.ld, b.mem, b.offset, b.ld, beta, c.mem, c.offset,
           c.ld, lower);
  const auto threads = static_cast<std::size_t>(choice.variant.threads);
  const auto block = threads * static_cast<std::size_t>(choice.variant.work);
  const std::array<std::size_t, 2> local{threads, threads};
  const std::array<std::size_t, 2> global{round_up(static_cast<std::size_t>(m), block) / block * threads,
                                          round_up(static_cast<std::size_t>(n), block) / block * threads};
  check(
      clEnqueueNDRangeKernel(target.queue, choice.kernel, 2, nullptr, global.data(), local.data(), 0, nullptr, nullptr),
      "clEnqueueNDRangeKernel(linalg_gemm)");
}

namespace {

// The triangular solve of a panel of at most kPanel columns: one work-item per row of B.
void trsm_panel(const Target& target, int m, int n, const Matrix& l, const Matrix& b) {
  cl_kernel kernel = target.kernel("linalg_trsm_rlt", {});
  set_args(kernel, m, n, l.mem, l.offset, l.ld, b.mem, b.offset, b.ld);
  const std::size_t local = std::min<std::size_t>(64, kernel_work_group_size(kernel, target.device));
  const std::size_t global = round_up(static_cast<std::size_t>(m), local);
  check(clEnqueueNDRangeKernel(target.queue, kernel, 1, nullptr, &global, &local, 0, nullptr, nullptr),
        "clEnqueueNDRangeKernel(linalg_trsm_rlt)");
}

}  // namespace

// Blocked by columns: X L^T = B with X = [X1 X2], L = [L11 0; L21 L22] gives X1 = B1 L11^-T
// (a narrow panel, solved row by row), then X2 L22^T = B2 - X1 L21^T (the bulk of the work,
// in the gemm kernel), and so on with L22.
void trsm_right_lower_transposed(const Target& target, int m, int n, const Matrix& l, const Matrix& b) {
  if (m == 0 || n == 0) return;
  require_double(target.device);
  for (int j = 0; j < n; j += kPanel) {
    const int width = std::min(kPanel, n - j);
    const Matrix b1 = b.block(0, j);
    trsm_panel(target, m, width, l.block(j, j), b1);
    if (j + width < n) {
      gemm(target, Transpose::no, Transpose::yes, m, n - j - width, width, -1.0, b1, l.block(j + width, j), 1.0,
           b.block(0, j + width), false);
    }
  }
}

// Blocked right-looking: factor the diagonal block (one work-group), solve the panel below it,
// update the trailing lower triangle with the gemm kernel, and go on with it.
int potrf_lower(const Target& target, int n, const Matrix& a) {
  if (n == 0) return 0;
  require_double(target.device);
  cl_kernel kernel = target.kernel("linalg_potrf_lower", {});
  int info = 0;
  Buffer info_buffer(target.context, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, sizeof info, &info);
  const cl_mem info_mem = info_buffer.get();
  // One work-group per diagonal block: its barriers are what order the columns.
  const std::size_t size = std::min<std::size_t>(kPanel, kernel_work_group_size(kernel, target.device));
  for (int j = 0; j < n; j += kPanel) {
    const int width = std::min(kPanel, n - j);
    const Matrix a11 = a.block(j, j);
    set_args(kernel, width, a11.mem, a11.offset, a11.ld, info_mem, j);
    check(clEnqueueNDRangeKernel(target.queue, kernel, 1, nullptr, &size, &size, 0, nullptr, nullptr),
          "clEnqueueNDRangeKernel(linalg_potrf_lower)");
    const int rest = n - j - width;
    if (rest > 0) {
      const Matrix a21 = a.block(j + width, j);
      trsm_panel(target, rest, width, a11, a21);
      gemm(target, Transpose::no, Transpose::yes, rest, rest, width, -1.0, a21, a21, 1.0, a.block(j + width, j + width),
           true);
    }
  }
  // After a failed block the later ones compute garbage; info keeps the first failure.
  check(clEnqueueReadBuffer(target.queue, info_mem, CL_TRUE, 0, sizeof info, &info, 0, nullptr, nullptr),
        "clEnqueueReadBuffer(info)");
  return info;
}

}  // namespace linalg::opencl
