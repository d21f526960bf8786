// The CUDA kernels of both ops on the current stream (upsample_sum_binding.cpp; upsample_concat
// reuses them).
#pragma once

#include "../op_frontend.h"

namespace hrnet_fast::cuda {

const Kernels& kernels();

}  // namespace hrnet_fast::cuda
