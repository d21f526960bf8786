// Torch-free descriptions of the work the CPU and CUDA kernels do. Both ops reduce to three problems:
//
//   SumProblem      out = act(base + sum_k same[k] + sum_k interp(low[k], size=(h, w)))   (forward;
//                   upsample_concat writes each slice of its output as one SumProblem)
//   MaskProblem     g = out > 0 ? grad : 0   (or g = grad without ReLU), elementwise
//   AdjointProblem  out = interp_adjoint(grad, size=(out.h, out.w)): each input pixel of the
//                   interpolation collects the weighted output gradients that it produced
//
// Maps are (N, C, h, w) with element (n, c, y, x) at
//   data[n * sample_stride + c * channel_stride + (y * w + x) * pixel_stride],
// where channels-last maps have channel_stride 1 and NCHW maps have pixel_stride 1 (a slice of a
// channel-concatenated tensor differs from a whole tensor only in its strides).
#pragma once

#include <cstdint>

#include "scalar_types.h"

namespace hrnet_fast {

// How many `same` and `low` addends one SumProblem takes (HRNet needs at most 3 of each).
constexpr int kMaxAddends = 16;

enum class Layout : int8_t { kNCHW, kChannelsLast };

struct MapRef {
  const void* data;
  int64_t sample_stride, channel_stride, pixel_stride;
  int32_t h, w;
};

struct SumProblem {
  DType dtype;
  Layout layout;
  int32_t n, c, h, w;  // the output size
  bool bilinear, align_corners, relu;
  MapRef out;  // written (data is really mutable)
  bool has_base;
  MapRef base;
  int32_t num_same, num_low;
  MapRef same[kMaxAddends];
  MapRef low[kMaxAddends];
};

struct MaskProblem {
  DType dtype;
  int64_t numel;
  void* g;
  const void* grad;
  const void* out;  // nullptr: no ReLU, g = grad
};

struct AdjointProblem {
  DType dtype;
  Layout layout;
  int32_t n, c;
  bool bilinear, align_corners;
  MapRef grad;  // (N, C, H, W): the gradient at the interpolation's output
  MapRef out;   // (N, C, h, w): written, the gradient at its input
};

}  // namespace hrnet_fast
