// The four ops of the hrnet_fast library, written once for every device: they check their inputs,
// choose the memory layout, allocate the outputs and describe the work as torch-free problems
// (resample_problem.h) for one device's Kernels to compute.
#pragma once

#include <ATen/core/Tensor.h>

#include <string_view>
#include <tuple>
#include <vector>

#include "resample_problem.h"

namespace hrnet_fast {

// One device's kernels. They trust the problem they get: the op bodies below validate it.
struct Kernels {
  const char* backend;  // "cpu" or "cuda", for messages
  bool supports_float64;
  void (*sum)(const SumProblem&);
  void (*mask)(const MaskProblem&);
  void (*adjoint)(const AdjointProblem&);
};

at::Tensor upsample_sum(const Kernels& kernels, const at::Tensor& base, at::TensorList same,
                        at::TensorList low, std::string_view mode, bool align_corners, bool relu);

std::tuple<at::Tensor, std::vector<at::Tensor>> upsample_sum_backward(
    const Kernels& kernels, const at::Tensor& grad, const at::Tensor& out, at::IntArrayRef low_hw,
    std::string_view mode, bool align_corners, bool relu);

at::Tensor upsample_concat(const Kernels& kernels, at::TensorList xs, std::string_view mode,
                           bool align_corners);

std::vector<at::Tensor> upsample_concat_backward(const Kernels& kernels, const at::Tensor& grad,
                                                 at::IntArrayRef channels, at::IntArrayRef hw,
                                                 std::string_view mode, bool align_corners);

}  // namespace hrnet_fast
