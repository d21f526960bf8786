// Torch-free description of one fusion_branch call (hrnet_fast/ops/fusion_branch_op.py), the work the
// CPU and CUDA kernels do:
//
//   out = act( base + bias
//            + sum_k conv3x3_stride2_pad1(down[k].x, down[k].weight)
//            + sum_k interp(conv1x1(low[k].x, low[k].weight), size=(h, w), mode, align_corners) )
//
// Maps are addressed as in resample_problem.h: out and base in the problem's layout, down and low maps
// in it too unless the kernel reads both layouts (BranchKernel::any_input_layout: each map in its own,
// channel_stride 1 for channels_last). The output has base's size (n, c, h, w). Weights are dense
// with (k, k, cin, C) memory: element (tap, ci, co) of a path's weight is weight[(tap * cin + ci) * C
// + co], tap = ty * 3 + tx for the 3x3 convs and 0 for the 1x1 projections. A down map
// (n, cin, hd, wd) has ceil(hd / 2) = h and ceil(wd / 2) = w; a low map may have any size.
#pragma once

#include <cstdint>

#include "resample_problem.h"
#include "scalar_types.h"

namespace hrnet_fast {

// How many paths of each kind one problem takes (HRNet needs at most 3 of each).
constexpr int kMaxPaths = 8;

struct ConvPath {
  MapRef x;            // the path's input map
  const void* weight;  // (k, k, cin, C) memory, the problem's dtype
  int32_t cin;
};

struct FusionBranchProblem {
  DType dtype;
  Layout layout;
  int32_t n, c, h, w;
  bool bilinear, align_corners, relu;
  MapRef out;        // written (data is really mutable)
  MapRef base;       // (n, c, h, w)
  const void* bias;  // (c,), the problem's dtype
  int32_t num_down, num_low;
  ConvPath down[kMaxPaths];  // stride-2 3x3 convs, padding 1
  ConvPath low[kMaxPaths];   // 1x1 projections, then interpolation to (h, w)
};

}  // namespace hrnet_fast
