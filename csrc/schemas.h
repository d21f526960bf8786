// The schemas of the hrnet_fast ops, identical to FORWARD_SCHEMA / BACKWARD_SCHEMA of
// hrnet_fast/ops/upsample_sum.py and upsample_concat.py (a test checks).
#pragma once

#include <torch/library.h>

namespace hrnet_fast {

inline void define_ops(torch::Library& m) {
  m.def("upsample_sum(Tensor base, Tensor[] same, Tensor[] low, str mode, bool align_corners, bool relu)"
        " -> Tensor");
  m.def("upsample_sum_backward(Tensor grad, Tensor out, SymInt[] low_hw, str mode, bool align_corners,"
        " bool relu) -> (Tensor, Tensor[])");
  m.def("upsample_concat(Tensor[] xs, str mode, bool align_corners) -> Tensor");
  m.def("upsample_concat_backward(Tensor grad, SymInt[] channels, SymInt[] hw, str mode, bool align_corners)"
        " -> Tensor[]");
}

}  // namespace hrnet_fast
