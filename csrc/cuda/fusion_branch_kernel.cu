// The CUDA executor of the kernel in fusion_branch_kernel.cuh: one CTA per tile, launched on the
// caller's stream, each launch checked. Torch-free: `nvcc -arch=sm_90 -c` compiles this file alone.
#include "fusion_branch_kernel.cuh"
#include "fusion_branch_launch.h"

namespace hrnet_fast::cuda {
namespace {

// __grid_constant__: the body (the problem, about 1.5 KB) stays in the constant bank.
template <class Body>
__global__ void __launch_bounds__(branch::kThreads) run_cta(const __grid_constant__ Body body) {
  __shared__ alignas(16) unsigned char smem[Body::kSmemBytes];
  DeviceCta<typename Body::State> cta{smem, threadIdx.x, blockIdx.x, blockIdx.y};
  body(cta);
}

struct CtaStreamExecutor {
  cudaStream_t stream;

  template <class Body>
  int launch(uint32_t grid_x, uint32_t grid_y, const Body& body) {
    if (grid_x == 0 || grid_y == 0) return 0;
    run_cta<Body><<<dim3(grid_x, grid_y), branch::kThreads, 0, stream>>>(body);
    return static_cast<int>(cudaGetLastError());
  }
};

}  // namespace

int launch_fusion_branch(const FusionBranchProblem& problem, cudaStream_t stream) {
  CtaStreamExecutor exec{stream};
  return branch::run_fusion_branch(problem, exec);
}

}  // namespace hrnet_fast::cuda
