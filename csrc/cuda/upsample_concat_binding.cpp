// upsample_concat on CUDA: each slice of the output is an upsample_sum problem (see
// upsample_sum_binding.cpp and op_frontend.cpp).
#include <torch/library.h>

#include "cuda_kernels.h"
#include "device_guard.h"

namespace hrnet_fast::cuda {
namespace {

at::Tensor upsample_concat_cuda(at::TensorList xs, std::string_view mode, bool align_corners) {
  TORCH_CHECK(!xs.empty(), "hrnet_fast::upsample_concat_cpp: needs at least one tensor");
  const auto guard = device_guard(xs[0]);
  return upsample_concat(kernels(), xs, mode, align_corners);
}

std::vector<at::Tensor> upsample_concat_backward_cuda(const at::Tensor& grad, at::IntArrayRef channels,
                                                      at::IntArrayRef hw, std::string_view mode,
                                                      bool align_corners) {
  const auto guard = device_guard(grad);
  return upsample_concat_backward(kernels(), grad, channels, hw, mode, align_corners);
}

}  // namespace
}  // namespace hrnet_fast::cuda

TORCH_LIBRARY_IMPL(hrnet_fast, CUDA, m) {
  m.impl("upsample_concat_cpp", &hrnet_fast::cuda::upsample_concat_cuda);
  m.impl("upsample_concat_backward_cpp", &hrnet_fast::cuda::upsample_concat_backward_cuda);
}
