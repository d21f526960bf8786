// The CUDA executor of the kernels in upsample_sum_kernel.cuh: one launch per body on the caller's
// stream, each launch checked. Torch-free: `nvcc -arch=sm_90 -c` compiles this file alone.
#include "upsample_sum_kernel.cuh"
#include "upsample_sum_launch.h"

namespace hrnet_fast::cuda {
namespace {

// __grid_constant__: the body (the problem, up to ~2 KB) stays in the constant bank, never copied per thread.
template <class Body>
__global__ void __launch_bounds__(kBlock) run_body(const __grid_constant__ Body body) {
  body(blockIdx.x, threadIdx.x);
}

struct StreamExecutor {
  cudaStream_t stream;

  template <class Body>
  int launch(uint32_t blocks, const Body& body) {
    if (blocks == 0) return 0;
    run_body<Body><<<blocks, kBlock, 0, stream>>>(body);
    return static_cast<int>(cudaGetLastError());
  }
};

}  // namespace

int launch_sum(const SumProblem& problem, cudaStream_t stream) {
  StreamExecutor exec{stream};
  return run_sum(problem, exec);
}

int launch_mask(const MaskProblem& problem, cudaStream_t stream) {
  StreamExecutor exec{stream};
  return run_mask(problem, exec);
}

int launch_adjoint(const AdjointProblem& problem, cudaStream_t stream) {
  StreamExecutor exec{stream};
  return run_adjoint(problem, exec);
}

const char* error_message(int code) {
  const char* message = launcher_error_message(code);
  return message != nullptr ? message : cudaGetErrorString(static_cast<cudaError_t>(code));
}

}  // namespace hrnet_fast::cuda
