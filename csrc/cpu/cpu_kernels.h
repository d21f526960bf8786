// The CPU kernels of both ops (defined in upsample_sum_kernel.cpp; upsample_concat reuses them).
#pragma once

#include "../op_frontend.h"

namespace hrnet_fast::cpu {

const Kernels& kernels();

}  // namespace hrnet_fast::cpu
