// Entry points of the CUDA kernels (upsample_sum_kernel.cu): each runs one problem on `stream` and
// returns 0, a cudaError_t of a failed launch, or a launcher error; error_message() says which.
#pragma once

#include <cuda_runtime_api.h>

#include "../resample_problem.h"

namespace hrnet_fast::cuda {

int launch_sum(const SumProblem& problem, cudaStream_t stream);
int launch_mask(const MaskProblem& problem, cudaStream_t stream);
int launch_adjoint(const AdjointProblem& problem, cudaStream_t stream);
const char* error_message(int code);

}  // namespace hrnet_fast::cuda
