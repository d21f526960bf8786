// Test-only library: the CUDA kernels of csrc/cuda/upsample_sum_kernel.cuh and
// csrc/cuda/fusion_branch_kernel.cuh compiled for the host and run thread by thread (every block,
// every thread of each launch, in a loop; the tiled fusion_branch kernel phase by phase through the
// host CTA of csrc/cuda/cta.cuh, which emulates ldmatrix and mma.sync), behind the same op frontends
// as the real backends, as the CPU kernels of the ops hrnet_fast_emulated_cuda::<op>_cpp (defined
// from Python with the registry's schemas, like the cpp backend's). The tests run it like the real
// backends, so the CUDA indexing, fragment layouts, masks and tails are checked on machines without a
// GPU. A launch here takes at most 4096 elements (fusion_branch: pixels), so tests with a few samples
// of a few thousand run the batch split of large tensors; and fusion_branch picks its larger CTA tiles
// from 2 CTAs on (264 on a GPU), so problems of a few hundred pixels run every tile.
#define HRNET_FAST_MAX_LAUNCH_ELEMENTS 4096
#define HRNET_FAST_TARGET_CTAS 2

#include <torch/library.h>

#include <cstring>
#include <vector>

#include "cuda/fusion_branch_kernel.cuh"
#include "cuda/upsample_sum_kernel.cuh"
#include "fusion_branch_op.h"
#include "op_frontend.h"

namespace {

using namespace hrnet_fast;

struct HostExecutor {
  template <class Body>
  int launch(uint32_t blocks, const Body& body) {
    for (uint32_t block = 0; block < blocks; ++block) {
      for (uint32_t thread = 0; thread < cuda::kBlock; ++thread) body(block, thread);
    }
    return 0;
  }
};

void check(int code) {
  const char* message = cuda::launcher_error_message(code);
  TORCH_CHECK(code == 0, "hrnet_fast (emulated cuda): ", message != nullptr ? message : "executor error");
}

void sum(const SumProblem& p) {
  HostExecutor exec;
  check(cuda::run_sum(p, exec));
}
void mask(const MaskProblem& p) {
  HostExecutor exec;
  check(cuda::run_mask(p, exec));
}
void adjoint(const AdjointProblem& p) {
  HostExecutor exec;
  check(cuda::run_adjoint(p, exec));
}

const Kernels kEmulated{"emulated cuda", /*supports_float64=*/false, sum, mask, adjoint};

// Runs each CTA of a launch on the host; shared memory and registers start as 0xff bytes (NaN in
// every float format) so that reading what the kernel did not write shows.
struct HostCtaExecutor {
  template <class Body>
  int launch(uint32_t grid_x, uint32_t grid_y, const Body& body) {
    using State = typename Body::State;
    cuda::HostCta<State, cuda::branch::kThreads, Body::kSmemBytes> cta;
    for (uint32_t by = 0; by < grid_y; ++by) {
      for (uint32_t bx = 0; bx < grid_x; ++bx) {
        cta.start(bx, by);
        std::memset(cta.smem(), 0xff, Body::kSmemBytes);
        cta.threads([](uint32_t, State& st) { std::memset(static_cast<void*>(&st), 0xff, sizeof st); });
        body(cta);
      }
    }
    return 0;
  }
};

void branch(const FusionBranchProblem& p) {
  HostCtaExecutor exec;
  check(cuda::branch::run_fusion_branch(p, exec));
}

const BranchKernel kEmulatedBranch{"emulated cuda", /*supports_float64=*/false, /*any_input_layout=*/false, branch};

at::Tensor fusion_branch_emulated(const at::Tensor& base, at::TensorList down, at::TensorList down_weight,
                                  at::TensorList low, at::TensorList low_weight, const at::Tensor& bias,
                                  std::string_view mode, bool align_corners, bool relu) {
  return fusion_branch(kEmulatedBranch, base, down, down_weight, low, low_weight, bias, mode, align_corners,
                       relu);
}

at::Tensor upsample_sum_emulated(const at::Tensor& base, at::TensorList same, at::TensorList low,
                                 std::string_view mode, bool align_corners, bool relu) {
  return upsample_sum(kEmulated, base, same, low, mode, align_corners, relu);
}

std::tuple<at::Tensor, std::vector<at::Tensor>> upsample_sum_backward_emulated(
    const at::Tensor& grad, const at::Tensor& out, at::IntArrayRef low_hw, std::string_view mode,
    bool align_corners, bool relu) {
  return upsample_sum_backward(kEmulated, grad, out, low_hw, mode, align_corners, relu);
}

at::Tensor upsample_concat_emulated(at::TensorList xs, std::string_view mode, bool align_corners) {
  return upsample_concat(kEmulated, xs, mode, align_corners);
}

std::vector<at::Tensor> upsample_concat_backward_emulated(const at::Tensor& grad, at::IntArrayRef channels,
                                                          at::IntArrayRef hw, std::string_view mode,
                                                          bool align_corners) {
  return upsample_concat_backward(kEmulated, grad, channels, hw, mode, align_corners);
}

// The CTA tile (pixels, channels) that fusion_branch picks for a problem of `pixels` x `channels`
// outputs: the tests show that their problems run every tile.
std::vector<int64_t> fusion_branch_cta_tile(int64_t pixels, int64_t channels) {
  const cuda::branch::Tiles tiles = cuda::branch::choose_tiles(pixels, static_cast<int32_t>(channels));
  return {tiles.bm, tiles.bn};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(hrnet_fast_emulated_cuda, m) {
  m.def("fusion_branch_cta_tile(int pixels, int channels) -> int[]", &fusion_branch_cta_tile);
}

TORCH_LIBRARY_IMPL(hrnet_fast_emulated_cuda, CPU, m) {
  m.impl("upsample_sum_cpp", &upsample_sum_emulated);
  m.impl("upsample_sum_backward_cpp", &upsample_sum_backward_emulated);
  m.impl("upsample_concat_cpp", &upsample_concat_emulated);
  m.impl("upsample_concat_backward_cpp", &upsample_concat_backward_emulated);
  m.impl("fusion_branch_cpp", &fusion_branch_emulated);
}
