// Torch-free description of one winograd_conv call (hrnet_fast/ops/winograd_conv_op.py), the work the
// CPU kernel does:
//
//   out = act(conv2d(x, weight, stride=1, padding=1) + bias + residual)      (3x3 weight)
//
// computed as Winograd F(2x2, 3x3): per 2x2 output tile, with d the 4x4 input patch under it,
//   out_tile = A^T [ sum_ci U[ci] (.) (B^T d[ci] B) ] A,    U = G weight G^T (4x4 per (co, ci)).
// x (n, h, w, cin), residual and out (n, h, w, cout) are dense channels-last in the storage type; the
// transformed weights U are a panel per element xi = 4 * row + column of the 4x4 tile, [16][cin][ldb]
// in the accumulation type (fp32; fp64 for float64), the output channels padded to ldb (a multiple
// of 32) with zeros.
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
  int64_t ldb;
  const void* bias;      // (cout,), the storage type
  const void* residual;  // nullptr: none
  void* out;
};

}  // namespace hrnet_fast
