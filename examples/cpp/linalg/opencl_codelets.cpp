// The OpenCL implementations: the kernels of opencl_kernels.cpp on the worker's device, built
// and cached by the hetflow OpenCL driver.
#include <hetflow/opencl.hpp>
#include <string>

#include "internal.hpp"
#include "opencl_kernels.hpp"

namespace linalg::detail {
namespace {

opencl::Target target_of(const hetflow::TaskContext& context) {
  const hetflow::opencl::Device& device = hetflow::opencl::device(context);
  return opencl::Target{
      .device = device.device,
      .context = device.context,
      .queue = device.queue,
      .kernel =
          [&context](std::string_view name, std::string_view options) {
            return hetflow::opencl::kernel(context, opencl::source(), name, options);
          },
  };
}

opencl::Matrix cl_matrix(const hetflow::TaskContext& context, std::size_t index, const Matrix& m) {
  return opencl::Matrix{hetflow::opencl::buffer(context, index), m.rows, m.cols, m.ld, 0};
}

void opencl_gemm(hetflow::TaskContext& context) {
  const auto& args = context.arg<GemmArgs>();
  const GemmShape s = gemm_shape(context, args);
  opencl::gemm(target_of(context), args.transa, args.transb, s.m, s.n, s.k, args.alpha, cl_matrix(context, 0, s.a),
               cl_matrix(context, 1, s.b), args.beta, cl_matrix(context, 2, s.c), false);
}

void opencl_syrk(hetflow::TaskContext& context) {
  const auto& args = context.arg<SyrkArgs>();
  const SyrkShape s = syrk_shape(context);
  const opencl::Matrix a = cl_matrix(context, 0, s.a);
  opencl::gemm(target_of(context), Transpose::no, Transpose::yes, s.n, s.n, s.k, args.alpha, a, a, args.beta,
               cl_matrix(context, 1, s.c), true);
}

void opencl_trsm(hetflow::TaskContext& context) {
  const TrsmShape s = trsm_shape(context);
  opencl::trsm_right_lower_transposed(target_of(context), s.m, s.n, cl_matrix(context, 0, s.l),
                                      cl_matrix(context, 1, s.b));
}

void opencl_potrf(hetflow::TaskContext& context) {
  const auto& args = context.arg<PotrfArgs>();
  const Matrix a = potrf_shape(context);
  const int info = opencl::potrf_lower(target_of(context), a.rows, cl_matrix(context, 0, a));
  if (info != 0) throw_not_positive_definite(args, info, "opencl");
}

}  // namespace

hetflow::Codelet::Implementation opencl_implementation(Kernel kernel) {
  switch (kernel) {
    case Kernel::gemm: return opencl_gemm;
    case Kernel::syrk: return opencl_syrk;
    case Kernel::trsm: return opencl_trsm;
    case Kernel::potrf: return opencl_potrf;
  }
  return {};
}

void prepare_opencl(hetflow::Runtime& runtime) {
  hetflow::opencl::prepare_program(runtime, opencl::source());
  hetflow::opencl::prepare_program(runtime, opencl::source(), opencl::preferred_gemm_options());
}

}  // namespace linalg::detail
