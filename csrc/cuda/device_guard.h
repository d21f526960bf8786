// The device of an op's first input made current for the op's launches, by every CUDA binding.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAGuard.h>

#include <optional>

namespace hrnet_fast::cuda {

// No guard when `first` is not on a GPU (another input is, so the op reached its CUDA kernel): the op's
// own checks then name the input on the other device, instead of a guard failing on a CPU device.
inline c10::cuda::OptionalCUDAGuard device_guard(const at::Tensor& first) {
  return c10::cuda::OptionalCUDAGuard(first.is_cuda() ? std::optional<c10::Device>(first.device()) : std::nullopt);
}

}  // namespace hrnet_fast::cuda
