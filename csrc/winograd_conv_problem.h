// Torch-free description of one winograd_conv call (hrnet_fast/ops/winograd_conv_op.py), the work the
// CPU kernel does:
//
//   out = act(conv2d(x, weight, stride=1, padding=1) + bias + residual)      (3x3 weight)
//
// computed as Winograd F(2x2, 3x3): per 2x2 output tile, with d the 4x4 input patch under it,
//   out_tile = A^T [ sum_ci U[ci] (.) (B^T d[ci] B) ] A,    U = G weight G^T (4x4 per (co, ci)).
// x (n, h, w, cin), residual and out (n, h, w, cout) are dense channels-last in the storage type; the
// transformed weights U (the accumulation type: fp32; fp64 for float64) have the output channels
// padded to cout_pad (a multiple of 32) with zeros and cut into blocks of B = 64 bytes (16 fp32, 8
// fp64 channels), block after block: [cout_pad / B][16][cin][B], element xi = 4 * row + column of
// the 4x4 tile (winograd_panel). A register tile's weights for one xi are then contiguous rows of
// one cache line (or two blocks of them), which the CPU streams (AVX2, 128 channels: 0.82-0.92x the
// time of rows of cout_pad).
#pragma once

#include <cstdint>

#include "scalar_types.h"

namespace hrnet_fast {

struct WinogradProblem {
  DType dtype;
  int32_t n, h, w, cin, cout;
  bool relu;
  const void* x;
  const void* panel;
  int64_t cout_pad;
  const void* bias;      // (cout,), the storage type
  const void* residual;  // nullptr: none
  void* out;
};

}  // namespace hrnet_fast
