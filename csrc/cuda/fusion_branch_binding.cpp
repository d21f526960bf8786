// The torch side of the CUDA fusion_branch kernel: runs on the current stream of the tensors' device,
// and any launch error becomes a Python exception.
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../fusion_branch_op.h"
#include "device_guard.h"
#include "fusion_branch_launch.h"
#include "upsample_sum_launch.h"

namespace hrnet_fast::cuda {
namespace {

void run(const FusionBranchProblem& p) {
  const int code = launch_fusion_branch(p, c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(code == 0, "hrnet_fast::fusion_branch (cpp backend, CUDA): ", error_message(code));
}

at::Tensor fusion_branch_cuda(const at::Tensor& base, at::TensorList down, at::TensorList down_weight,
                              at::TensorList low, at::TensorList low_weight, const at::Tensor& bias,
                              std::string_view mode, bool align_corners, bool relu) {
  static const BranchKernel kernel{"cpp (CUDA)", /*supports_float64=*/false, /*any_input_layout=*/false, run};
  const auto guard = device_guard(base);
  return fusion_branch(kernel, base, down, down_weight, low, low_weight, bias, mode, align_corners, relu);
}

}  // namespace
}  // namespace hrnet_fast::cuda

TORCH_LIBRARY_IMPL(hrnet_fast, CUDA, m) { m.impl("fusion_branch_cpp", &hrnet_fast::cuda::fusion_branch_cuda); }
