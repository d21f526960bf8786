// Entry point of the CUDA fusion_branch kernel (fusion_branch_kernel.cu): runs one problem on
// `stream` and returns 0, a cudaError_t of a failed launch, or a launcher error; error_message()
// (upsample_sum_launch.h) says which.
#pragma once

#include <cuda_runtime_api.h>

#include "../fusion_branch_problem.h"

namespace hrnet_fast::cuda {

int launch_fusion_branch(const FusionBranchProblem& problem, cudaStream_t stream);

}  // namespace hrnet_fast::cuda
