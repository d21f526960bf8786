// The torch side of the CUDA kernels: each problem runs on the current stream of the current device
// (the ops set it to their tensors' device), and any launch error becomes a Python exception.
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "cuda_kernels.h"
#include "device_guard.h"
#include "upsample_sum_launch.h"

namespace hrnet_fast::cuda {
namespace {

void check(int code) { TORCH_CHECK(code == 0, "hrnet_fast (cuda backend): ", error_message(code)); }

void sum(const SumProblem& p) { check(launch_sum(p, c10::cuda::getCurrentCUDAStream())); }
void mask(const MaskProblem& p) { check(launch_mask(p, c10::cuda::getCurrentCUDAStream())); }
void adjoint(const AdjointProblem& p) { check(launch_adjoint(p, c10::cuda::getCurrentCUDAStream())); }

at::Tensor upsample_sum_cuda(const at::Tensor& base, at::TensorList same, at::TensorList low,
                             std::string_view mode, bool align_corners, bool relu) {
  const auto guard = device_guard(base);
  return upsample_sum(kernels(), base, same, low, mode, align_corners, relu);
}

std::tuple<at::Tensor, std::vector<at::Tensor>> upsample_sum_backward_cuda(
    const at::Tensor& grad, const at::Tensor& out, at::IntArrayRef low_hw, std::string_view mode,
    bool align_corners, bool relu) {
  const auto guard = device_guard(grad);
  return upsample_sum_backward(kernels(), grad, out, low_hw, mode, align_corners, relu);
}

}  // namespace

const Kernels& kernels() {
  static const Kernels k{"cuda", /*supports_float64=*/false, sum, mask, adjoint};
  return k;
}

}  // namespace hrnet_fast::cuda

TORCH_LIBRARY_IMPL(hrnet_fast, CUDA, m) {
  m.impl("upsample_sum_cpp", &hrnet_fast::cuda::upsample_sum_cuda);
  m.impl("upsample_sum_backward_cpp", &hrnet_fast::cuda::upsample_sum_backward_cuda);
}
