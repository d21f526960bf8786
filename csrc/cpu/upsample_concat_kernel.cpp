// upsample_concat on the CPU: each slice of the output is an upsample_sum problem (the first a copy,
// the others one interpolated map), so the op runs the kernels of upsample_sum_kernel.cpp.
#include <torch/library.h>

#include "cpu_kernels.h"

namespace {

at::Tensor upsample_concat_cpu(at::TensorList xs, std::string_view mode, bool align_corners) {
  return hrnet_fast::upsample_concat(hrnet_fast::cpu::kernels(), xs, mode, align_corners);
}

std::vector<at::Tensor> upsample_concat_backward_cpu(const at::Tensor& grad, at::IntArrayRef channels,
                                                     at::IntArrayRef hw, std::string_view mode,
                                                     bool align_corners) {
  return hrnet_fast::upsample_concat_backward(hrnet_fast::cpu::kernels(), grad, channels, hw, mode,
                                              align_corners);
}

}  // namespace

TORCH_LIBRARY_IMPL(hrnet_fast, CPU, m) {
  m.impl("upsample_concat_cpp", &upsample_concat_cpu);
  m.impl("upsample_concat_backward_cpp", &upsample_concat_backward_cpu);
}
