// See fusion_branch_op.h. The output is empty_like(base), as the op's fake implementation says.
#include "fusion_branch_op.h"

#include <ATen/ops/empty_like.h>
#include <c10/util/Exception.h>

#include <vector>

#include "op_checks.h"

namespace hrnet_fast {
namespace {

constexpr const char* kOp = "hrnet_fast::fusion_branch_cpp";

void check_param(const std::string& name, const at::Tensor& t, at::IntArrayRef shape, const at::Tensor& base) {
  TORCH_CHECK(t.sizes() == shape, kOp, ": ", name, " must have shape ", shape, ", got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == base.scalar_type() && t.device() == base.device(), kOp, ": ", name, " is ",
              t.scalar_type(), " on ", t.device(), ", base is ", base.scalar_type(), " on ", base.device());
}

void check_inputs(const at::Tensor& base, at::TensorList down, at::TensorList down_weight, at::TensorList low,
                  at::TensorList low_weight, const at::Tensor& bias) {
  check_map(kOp, "base", base, base);
  TORCH_CHECK(down.size() == down_weight.size() && low.size() == low_weight.size(), kOp, ": ", down.size(),
              " down maps with ", down_weight.size(), " weights, ", low.size(), " low maps with ",
              low_weight.size(), " weights");
  TORCH_CHECK(down.size() <= kMaxPaths && low.size() <= kMaxPaths, kOp, ": the kernels take at most ",
              kMaxPaths, " down and ", kMaxPaths, " low maps, got ", down.size(), " and ", low.size(),
              "; use backend='reference'");
  const int64_t c = base.size(1), h = base.size(2), w = base.size(3);
  check_param("bias", bias, {c}, base);
  for (size_t k = 0; k < down.size(); ++k) {
    check_map(kOp, indexed("down", k), down[k], base);
    TORCH_CHECK((down[k].size(2) + 1) / 2 == h && (down[k].size(3) + 1) / 2 == w, kOp, ": down[", k, "] is ",
                down[k].size(2), "x", down[k].size(3), "; a stride-2 conv of it is not base's ", h, "x", w);
    check_param(indexed("down_weight", k), down_weight[k], {c, down[k].size(1), 3, 3}, base);
  }
  for (size_t k = 0; k < low.size(); ++k) {
    check_map(kOp, indexed("low", k), low[k], base);
    check_source_size(kOp, indexed("low", k), low[k].size(2), low[k].size(3));
    check_param(indexed("low_weight", k), low_weight[k], {c, low[k].size(1), 1, 1}, base);
  }
}

}  // namespace

at::Tensor fusion_branch(const BranchKernel& kernel, const at::Tensor& base, at::TensorList down,
                         at::TensorList down_weight, at::TensorList low, at::TensorList low_weight,
                         const at::Tensor& bias, std::string_view mode, bool align_corners, bool relu) {
  const Options options = parse_mode(kOp, mode, align_corners);
  check_inputs(base, down, down_weight, low, low_weight, bias);
  const DType dtype = dtype_of(kernel.backend, kernel.supports_float64, kOp, base);
  at::Tensor out = at::empty_like(base);
  if (out.numel() == 0) return out;
  const Writable written = writable(out);
  const Layout layout = written.layout;
  const at::Tensor& target = written.tensor;
  const at::MemoryFormat format = format_of(layout);
  std::vector<at::Tensor> inputs;  // keeps re-laid-out inputs alive while the kernel runs
  auto map = [&](const at::Tensor& t) { return map_ref(inputs.emplace_back(t.contiguous(format)), layout); };
  auto input_map = [&](const at::Tensor& t) {  // a down or low map: as it is where the kernel can read it
    MapRef m;
    return kernel.any_input_layout && describe(t, layout_of(t), m) ? m : map(t);
  };
  auto packed = [&](const at::Tensor& weight) {  // (k, k, C_in, C_out) memory; a view when already so
    return inputs.emplace_back(weight.permute({2, 3, 1, 0}).contiguous()).const_data_ptr();
  };
  FusionBranchProblem p = output_problem<FusionBranchProblem>(dtype, layout, target, options, relu);
  p.base = map(base);
  p.bias = inputs.emplace_back(bias.contiguous()).const_data_ptr();
  p.num_down = static_cast<int32_t>(down.size());
  p.num_low = static_cast<int32_t>(low.size());
  for (size_t k = 0; k < down.size(); ++k) {
    p.down[k] = ConvPath{input_map(down[k]), packed(down_weight[k]), static_cast<int32_t>(down[k].size(1))};
  }
  for (size_t k = 0; k < low.size(); ++k) {
    p.low[k] = ConvPath{input_map(low[k]), packed(low_weight[k]), static_cast<int32_t>(low[k].size(1))};
  }
  kernel.run(p);
  if (!target.is_same(out)) out.copy_(target);
  return out;
}

}  // namespace hrnet_fast
