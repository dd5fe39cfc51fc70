// The OpenCL tile kernels of examples/cpp/linalg against OpenBLAS and LAPACKE, on a plain OpenCL
// device (no hetflow driver involved): every transpose, sizes that are not multiples of the
// kernels' blocks, leading dimensions larger than the rows, beta = 0 over garbage, the lower
// triangle only, and a tile that is not positive definite. Exit status 0 when all agree, 77
// (skipped) when there is no OpenCL device with double precision.
#include "opencl_kernels.hpp"

#include <cblas.h>
#include <lapacke.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace {

using linalg::Transpose;
namespace lcl = linalg::opencl;

void check(cl_int status, const char* what) {
  if (status != CL_SUCCESS) throw std::runtime_error(std::string(what) + ": " + lcl::status_text(status));
}

// One device and everything built for it, released in reverse order.
class Device {
 public:
  Device() {
    cl_uint platforms = 0;
    if (clGetPlatformIDs(0, nullptr, &platforms) != CL_SUCCESS || platforms == 0) return;
    std::vector<cl_platform_id> ids(platforms);
    check(clGetPlatformIDs(platforms, ids.data(), nullptr), "clGetPlatformIDs");
    for (cl_platform_id platform : ids) {
      cl_uint count = 0;
      if (clGetDeviceIDs(platform, CL_DEVICE_TYPE_ALL, 0, nullptr, &count) != CL_SUCCESS) continue;
      std::vector<cl_device_id> devices(count);
      check(clGetDeviceIDs(platform, CL_DEVICE_TYPE_ALL, count, devices.data(), nullptr), "clGetDeviceIDs");
      for (cl_device_id device : devices) {
        cl_device_fp_config fp64 = 0;
        clGetDeviceInfo(device, CL_DEVICE_DOUBLE_FP_CONFIG, sizeof fp64, &fp64, nullptr);
        if (fp64 != 0) {
          device_ = device;
          break;
        }
      }
      if (device_ != nullptr) break;
    }
    if (device_ == nullptr) return;
    cl_int status = CL_SUCCESS;
    context_ = clCreateContext(nullptr, 1, &device_, nullptr, nullptr, &status);
    check(status, "clCreateContext");
    queue_ = clCreateCommandQueue(context_, device_, 0, &status);
    check(status, "clCreateCommandQueue");
  }
  ~Device() {
    for (auto& [key, kernel] : kernels_) clReleaseKernel(kernel);
    for (auto& [options, program] : programs_) clReleaseProgram(program);
    if (queue_ != nullptr) clReleaseCommandQueue(queue_);
    if (context_ != nullptr) clReleaseContext(context_);
  }
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;

  [[nodiscard]] bool found() const noexcept { return device_ != nullptr; }
  [[nodiscard]] std::string name() const {
    char buffer[256] = {};
    clGetDeviceInfo(device_, CL_DEVICE_NAME, sizeof buffer - 1, buffer, nullptr);
    return buffer;
  }
  [[nodiscard]] cl_context context() const noexcept { return context_; }
  [[nodiscard]] cl_command_queue queue() const noexcept { return queue_; }

  lcl::Target target() {
    return lcl::Target{.device = device_,
                       .context = context_,
                       .queue = queue_,
                       .kernel = [this](std::string_view name, std::string_view options) {
                         return kernel(std::string(name), std::string(options));
                       }};
  }

 private:
  cl_kernel kernel(const std::string& name, const std::string& options) {
    const auto key = std::make_pair(name, options);
    if (auto it = kernels_.find(key); it != kernels_.end()) return it->second;
    cl_program& program = programs_[options];
    if (program == nullptr) {
      const std::string_view source = lcl::source();
      const char* text = source.data();
      const std::size_t length = source.size();
      cl_int status = CL_SUCCESS;
      program = clCreateProgramWithSource(context_, 1, &text, &length, &status);
      check(status, "clCreateProgramWithSource");
      if (clBuildProgram(program, 1, &device_, options.c_str(), nullptr, nullptr) != CL_SUCCESS) {
        std::size_t size = 0;
        clGetProgramBuildInfo(program, device_, CL_PROGRAM_BUILD_LOG, 0, nullptr, &size);
        std::string log(size, '\0');
        clGetProgramBuildInfo(program, device_, CL_PROGRAM_BUILD_LOG, size, log.data(), nullptr);
        throw std::runtime_error("build failed:\n" + log);
      }
    }
    cl_int status = CL_SUCCESS;
    cl_kernel made = clCreateKernel(program, name.c_str(), &status);
    check(status, "clCreateKernel");
    kernels_[key] = made;
    return made;
  }

  cl_device_id device_ = nullptr;
  cl_context context_ = nullptr;
  cl_command_queue queue_ = nullptr;
  std::map<std::string, cl_program> programs_;
  std::map<std::pair<std::string, std::string>, cl_kernel> kernels_;
};

// A host matrix with a padded leading dimension and its copy in a device buffer.
struct Matrix {
  int rows;
  int cols;
  int ld;
  std::vector<double> host;
  cl_mem mem = nullptr;

  Matrix(Device& device, int r, int c, int pad, unsigned seed, double fill = 0.0)
      : rows(r), cols(c), ld(r + pad), host(static_cast<std::size_t>(ld) * static_cast<std::size_t>(c), fill) {
    unsigned state = seed;
    for (int j = 0; j < cols; ++j) {
      for (int i = 0; i < rows; ++i) {
        state = state * 1664525u + 1013904223u;
        at(i, j) = static_cast<double>(state >> 8) / static_cast<double>(1u << 24) * 2.0 - 1.0;
      }
    }
    cl_int status = CL_SUCCESS;
    mem = clCreateBuffer(device.context(), CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, host.size() * sizeof(double),
                         host.data(), &status);
    check(status, "clCreateBuffer");
  }
  ~Matrix() { clReleaseMemObject(mem); }
  Matrix(const Matrix&) = delete;
  Matrix& operator=(const Matrix&) = delete;

  double& at(int i, int j) {
    return host[static_cast<std::size_t>(j) * static_cast<std::size_t>(ld) + static_cast<std::size_t>(i)];
  }
  void upload(Device& device) {
    check(clEnqueueWriteBuffer(device.queue(), mem, CL_TRUE, 0, host.size() * sizeof(double), host.data(), 0, nullptr,
                               nullptr),
          "clEnqueueWriteBuffer");
  }
  [[nodiscard]] std::vector<double> download(Device& device) const {
    std::vector<double> out(host.size());
    check(clEnqueueReadBuffer(device.queue(), mem, CL_TRUE, 0, out.size() * sizeof(double), out.data(), 0, nullptr,
                              nullptr),
          "clEnqueueReadBuffer");
    return out;
  }
  [[nodiscard]] lcl::Matrix view() const { return {mem, rows, cols, ld, 0}; }
};

// The largest difference between the device result and the host reference over the whole
// buffer, padding included (the kernels must leave it alone).
double difference(const std::vector<double>& device, const std::vector<double>& reference) {
  double worst = 0;
  for (std::size_t i = 0; i < device.size(); ++i) {
    const double d = std::isnan(device[i]) != std::isnan(reference[i]) ? std::numeric_limits<double>::infinity()
                     : std::isnan(device[i])                           ? 0.0
                                                                       : std::abs(device[i] - reference[i]);
    worst = std::max(worst, d);
  }
  return worst;
}

int failures = 0;

void report(const std::string& what, double error, double tolerance) {
  const bool ok = error <= tolerance;
  std::printf("%-60s %.2e %s\n", what.c_str(), error, ok ? "ok" : "FAILED");
  if (!ok) ++failures;
}

void test_gemm(Device& device, Transpose ta, Transpose tb, int m, int n, int k, double beta, bool lower_only) {
  const bool na = ta == Transpose::no, nb = tb == Transpose::no;
  Matrix a(device, na ? m : k, na ? k : m, 3, 1);
  Matrix b(device, nb ? k : n, nb ? n : k, 5, 2);
  // beta = 0: C starts as NaN, which must not leak into the result.
  Matrix c(device, m, n, 2, 3, beta == 0.0 ? std::nan("") : 0.0);
  if (beta == 0.0) {
    for (double& v : c.host) v = std::nan("");
    c.upload(device);
  }
  const double alpha = -1.5;
  lcl::gemm(device.target(), ta, tb, m, n, k, alpha, a.view(), b.view(), beta, c.view(), lower_only);
  std::vector<double> reference = c.host;
  if (lower_only) {
    // syrk-like: the reference computes the full product, then keeps the upper triangle as it was.
    std::vector<double> full = c.host;
    cblas_dgemm(CblasColMajor, na ? CblasNoTrans : CblasTrans, nb ? CblasNoTrans : CblasTrans, m, n, k, alpha,
                a.host.data(), a.ld, b.host.data(), b.ld, beta, full.data(), c.ld);
    for (int j = 0; j < n; ++j) {
      for (int i = j; i < m; ++i)
        reference[static_cast<std::size_t>(j * c.ld + i)] = full[static_cast<std::size_t>(j * c.ld + i)];
    }
  } else {
    cblas_dgemm(CblasColMajor, na ? CblasNoTrans : CblasTrans, nb ? CblasNoTrans : CblasTrans, m, n, k, alpha,
                a.host.data(), a.ld, b.host.data(), b.ld, beta, reference.data(), c.ld);
  }
  const std::string what = std::string("gemm ") + (na ? "N" : "T") + (nb ? "N" : "T") + " m=" + std::to_string(m) +
                           " n=" + std::to_string(n) + " k=" + std::to_string(k) + " beta=" + std::to_string(beta) +
                           (lower_only ? " lower" : "");
  report(what, difference(c.download(device), reference), 1e-13 * k);
}

void test_trsm(Device& device, int m, int n) {
  Matrix l(device, n, n, 4, 7);
  for (int i = 0; i < n; ++i) l.at(i, i) = 2.0 + i % 3;  // well away from singular
  l.upload(device);
  Matrix b(device, m, n, 1, 8);
  lcl::trsm_right_lower_transposed(device.target(), m, n, l.view(), b.view());
  std::vector<double> reference = b.host;
  cblas_dtrsm(CblasColMajor, CblasRight, CblasLower, CblasTrans, CblasNonUnit, m, n, 1.0, l.host.data(), l.ld,
              reference.data(), b.ld);
  report("trsm m=" + std::to_string(m) + " n=" + std::to_string(n), difference(b.download(device), reference), 1e-12);
}

void test_potrf(Device& device, int n, bool definite) {
  Matrix a(device, n, n, 3, 9);
  for (int j = 0; j < n; ++j) {
    for (int i = 0; i < j; ++i) a.at(i, j) = a.at(j, i);
    a.at(j, j) += n;
  }
  if (!definite) a.at(n / 2, n / 2) = -1.0;
  a.upload(device);
  const int info = lcl::potrf_lower(device.target(), n, a.view());
  std::vector<double> reference = a.host;
  const lapack_int expected = LAPACKE_dpotrf_work(LAPACK_COL_MAJOR, 'L', n, reference.data(), a.ld);
  const std::string what = "potrf n=" + std::to_string(n) + (definite ? "" : " (not positive definite)");
  if (info != expected) {
    std::printf("%-60s info %d, LAPACK says %d FAILED\n", what.c_str(), info, static_cast<int>(expected));
    ++failures;
    return;
  }
  if (!definite) {
    std::printf("%-60s info %d ok\n", what.c_str(), info);
    return;
  }
  // Only the lower triangle is the result; the upper one must be left as it was.
  std::vector<double> result = a.download(device);
  report(what, difference(result, reference), 1e-13 * n);
}

}  // namespace

int main() {
  try {
    Device device;
    if (!device.found()) {
      std::printf("no OpenCL device with double precision: skipped\n");
      return 77;
    }
    std::printf("device: %s\n", device.name().c_str());
    for (Transpose ta : {Transpose::no, Transpose::yes}) {
      for (Transpose tb : {Transpose::no, Transpose::yes}) {
        test_gemm(device, ta, tb, 70, 45, 33, 1.0, false);
        test_gemm(device, ta, tb, 64, 64, 64, 0.0, false);
        test_gemm(device, ta, tb, 130, 1, 17, 0.5, false);
      }
    }
    test_gemm(device, Transpose::no, Transpose::yes, 77, 77, 40, 1.0, true);
    test_gemm(device, Transpose::no, Transpose::no, 1, 1, 1, 0.0, false);
    test_trsm(device, 70, 45);
    test_trsm(device, 1, 1);
    test_trsm(device, 200, 64);
    test_trsm(device, 150, 200);  // several panels
    test_potrf(device, 1, true);
    test_potrf(device, 77, true);
    test_potrf(device, 300, true);
    test_potrf(device, 77, false);
    test_potrf(device, 200, false);  // fails in the second block; the third must not overwrite info
  } catch (const std::exception& error) {
    std::printf("error: %s\n", error.what());
    return 1;
  }
  std::printf("%s\n", failures == 0 ? "all OpenCL kernels agree with BLAS/LAPACK" : "some kernels FAILED");
  return failures == 0 ? 0 : 1;
}
