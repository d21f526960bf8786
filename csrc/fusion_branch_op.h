// The fusion_branch op, written once for every device: checks its inputs, lays them out for the
// kernels (maps dense in base's layout, or each down and low map in its own where the kernel reads
// both layouts; weights with (k, k, C_in, C_out) memory), allocates the output (empty_like(base))
// and describes the work as a torch-free FusionBranchProblem for one device's kernel to compute.
#pragma once

#include <ATen/core/Tensor.h>

#include <string_view>

#include "fusion_branch_problem.h"

namespace hrnet_fast {

// One device's fusion_branch kernel. It trusts the problem it gets: fusion_branch() validates it.
struct BranchKernel {
  const char* backend;  // for messages
  bool supports_float64;
  bool any_input_layout;  // down and low maps read as they are, NCHW or channels_last, not in base's
  void (*run)(const FusionBranchProblem&);
};

at::Tensor fusion_branch(const BranchKernel& kernel, const at::Tensor& base, at::TensorList down,
                         at::TensorList down_weight, at::TensorList low, at::TensorList low_weight,
                         const at::Tensor& bias, std::string_view mode, bool align_corners, bool relu);

}  // namespace hrnet_fast
