// See op_frontend.h. Layout rules, shared with the ops' fake implementations in Python:
// upsample_sum's output and its backward's first output are empty_like(base / grad); every other
// output takes channels_last when its reference input (xs[0] / grad) is channels_last and not also
// plain contiguous, else the contiguous format.
#include "op_frontend.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/Exception.h>

#include <limits>
#include <string>

namespace hrnet_fast {
namespace {

constexpr int64_t kMaxDim = std::numeric_limits<int32_t>::max();

struct Options {
  bool bilinear, align_corners;
};

Options parse_mode(const char* op, std::string_view mode, bool align_corners) {
  TORCH_CHECK(mode == "nearest" || mode == "bilinear", op,
              ": upsampling mode must be 'nearest' or 'bilinear', got '", std::string(mode), "'");
  TORCH_CHECK(mode == "bilinear" || !align_corners, op,
              ": align_corners=True only applies to mode='bilinear'");
  return Options{mode == "bilinear", align_corners};
}

DType dtype_of(const Kernels& kernels, const char* op, const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat:
      return DType::kFloat32;
    case at::kHalf:
      return DType::kFloat16;
    case at::kBFloat16:
      return DType::kBFloat16;
    default:
      TORCH_CHECK(t.scalar_type() == at::kDouble && kernels.supports_float64, op, ": the ", kernels.backend,
                  " backend takes float32, float16, bfloat16", kernels.supports_float64 ? " or float64" : "",
                  " tensors, got ", t.scalar_type());
      return DType::kFloat64;
  }
}

// t is a 4-D (N, C, H, W) map with the first input's dtype, device and batch, and sizes the kernels
// can index.
void check_map(const char* op, const std::string& name, const at::Tensor& t, const at::Tensor& first) {
  TORCH_CHECK(t.dim() == 4, op, ": ", name, " must be 4-D (N, C, H, W), got shape ", t.sizes());
  TORCH_CHECK(t.scalar_type() == first.scalar_type(), op, ": ", name, " is ", t.scalar_type(),
              " but the first input is ", first.scalar_type());
  TORCH_CHECK(t.device() == first.device(), op, ": ", name, " is on ", t.device(),
              " but the first input is on ", first.device());
  TORCH_CHECK(t.size(0) == first.size(0), op, ": ", name, " has batch ", t.size(0),
              " but the first input has batch ", first.size(0));
  for (int64_t d = 0; d < 4; ++d) {
    TORCH_CHECK(t.size(d) <= kMaxDim, op, ": ", name, " has size ", t.sizes(), "; each size must be < 2^31");
  }
}

void check_source_size(const char* op, const std::string& name, int64_t h, int64_t w) {
  TORCH_CHECK(h >= 1 && w >= 1 && h <= kMaxDim && w <= kMaxDim, op, ": ", name,
              " must have a spatial size of at least 1x1 (and below 2^31), got ", h, "x", w);
}

at::MemoryFormat format_of(Layout layout) {
  return layout == Layout::kChannelsLast ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

Layout layout_of(const at::Tensor& t) {
  return t.is_contiguous(at::MemoryFormat::ChannelsLast) && !t.is_contiguous() ? Layout::kChannelsLast
                                                                                : Layout::kNCHW;
}

// The strides of t as the kernels address it in `layout`, sizes of 1 taking the canonical stride;
// false when t cannot be addressed so (see resample_problem.h).
bool describe(const at::Tensor& t, Layout layout, MapRef& m) {
  const int64_t n = t.size(0), c = t.size(1), h = t.size(2), w = t.size(3);
  m = MapRef{t.const_data_ptr(), 0, 0, 0, static_cast<int32_t>(h), static_cast<int32_t>(w)};
  if (layout == Layout::kNCHW) {
    m.channel_stride = h * w;
    m.pixel_stride = 1;
    const bool dense_planes = (w == 1 || t.stride(3) == 1) && (h == 1 || t.stride(2) == w);
    if (!dense_planes || (c > 1 && t.stride(1) != h * w)) return false;
    m.sample_stride = n > 1 ? t.stride(0) : c * h * w;
    return true;
  }
  m.channel_stride = 1;
  m.pixel_stride = w > 1 ? t.stride(3) : (h > 1 ? t.stride(2) : c);
  const bool dense_pixels = (c == 1 || t.stride(1) == 1) && m.pixel_stride >= c;
  if (!dense_pixels || (h > 1 && t.stride(2) != w * m.pixel_stride)) return false;
  m.sample_stride = n > 1 ? t.stride(0) : h * w * m.pixel_stride;
  return true;
}

MapRef map_ref(const at::Tensor& t, Layout layout) {
  MapRef m;
  TORCH_INTERNAL_ASSERT(describe(t, layout, m), "hrnet_fast: cannot address a tensor of shape ", t.sizes(),
                        " and strides ", t.strides());
  return m;
}

// Where to compute an output the caller allocated: itself when the kernels can address it, else a
// contiguous temporary to copy back (an input with an exotic dense stride order).
struct Writable {
  Layout layout;
  at::Tensor tensor;
};

Writable writable(const at::Tensor& out) {
  const Layout layout = layout_of(out);
  MapRef unused;
  if (describe(out, layout, unused)) return {layout, out};
  return {Layout::kNCHW, at::empty(out.sizes(), out.options())};
}

SumProblem sum_problem(DType dtype, Layout layout, const at::Tensor& out, Options options, bool relu) {
  SumProblem p{};
  p.dtype = dtype;
  p.layout = layout;
  p.n = static_cast<int32_t>(out.size(0));
  p.c = static_cast<int32_t>(out.size(1));
  p.h = static_cast<int32_t>(out.size(2));
  p.w = static_cast<int32_t>(out.size(3));
  p.bilinear = options.bilinear;
  p.align_corners = options.align_corners;
  p.relu = relu;
  p.out = map_ref(out, layout);
  p.out.data = out.data_ptr();
  return p;
}

AdjointProblem adjoint_problem(DType dtype, Layout layout, const at::Tensor& grad, const at::Tensor& out,
                               Options options) {
  AdjointProblem p{};
  p.dtype = dtype;
  p.layout = layout;
  p.n = static_cast<int32_t>(out.size(0));
  p.c = static_cast<int32_t>(out.size(1));
  p.bilinear = options.bilinear;
  p.align_corners = options.align_corners;
  p.grad = map_ref(grad, layout);
  p.out = map_ref(out, layout);
  p.out.data = out.data_ptr();
  return p;
}

std::string indexed(const char* name, size_t k) { return std::string(name) + "[" + std::to_string(k) + "]"; }

}  // namespace

at::Tensor upsample_sum(const Kernels& kernels, const at::Tensor& base, at::TensorList same,
                        at::TensorList low, std::string_view mode, bool align_corners, bool relu) {
  const char* op = "hrnet_fast::upsample_sum_cpp";
  const Options options = parse_mode(op, mode, align_corners);
  check_map(op, "base", base, base);
  const DType dtype = dtype_of(kernels, op, base);
  TORCH_CHECK(same.size() <= kMaxAddends && low.size() <= kMaxAddends, op, ": the ", kernels.backend,
              " kernels take at most ", kMaxAddends, " same and ", kMaxAddends, " low inputs, got ",
              same.size(), " and ", low.size(), "; use backend='reference'");
  for (size_t k = 0; k < same.size(); ++k) {
    check_map(op, indexed("same", k), same[k], base);
    TORCH_CHECK(same[k].sizes() == base.sizes(), op, ": same[", k, "] has shape ", same[k].sizes(),
                ", base has ", base.sizes());
  }
  for (size_t k = 0; k < low.size(); ++k) {
    check_map(op, indexed("low", k), low[k], base);
    TORCH_CHECK(low[k].size(1) == base.size(1), op, ": low[", k, "] has ", low[k].size(1),
                " channels, base has ", base.size(1));
    check_source_size(op, indexed("low", k), low[k].size(2), low[k].size(3));
  }
  at::Tensor out = at::empty_like(base);
  if (out.numel() == 0) return out;
  const Writable written = writable(out);
  const Layout layout = written.layout;
  const at::Tensor& target = written.tensor;
  const at::MemoryFormat format = format_of(layout);
  std::vector<at::Tensor> inputs;  // keeps re-laid-out inputs alive while the kernels run
  auto ref = [&](const at::Tensor& t) { return map_ref(inputs.emplace_back(t.contiguous(format)), layout); };
  SumProblem p = sum_problem(dtype, layout, target, options, relu);
  p.has_base = true;
  p.base = ref(base);
  p.num_same = static_cast<int32_t>(same.size());
  p.num_low = static_cast<int32_t>(low.size());
  for (size_t k = 0; k < same.size(); ++k) p.same[k] = ref(same[k]);
  for (size_t k = 0; k < low.size(); ++k) p.low[k] = ref(low[k]);
  kernels.sum(p);
  if (!target.is_same(out)) out.copy_(target);
  return out;
}

std::tuple<at::Tensor, std::vector<at::Tensor>> upsample_sum_backward(
    const Kernels& kernels, const at::Tensor& grad, const at::Tensor& out, at::IntArrayRef low_hw,
    std::string_view mode, bool align_corners, bool relu) {
  const char* op = "hrnet_fast::upsample_sum_backward_cpp";
  const Options options = parse_mode(op, mode, align_corners);
  check_map(op, "grad", grad, grad);
  check_map(op, "out", out, grad);
  const DType dtype = dtype_of(kernels, op, grad);
  TORCH_CHECK(out.sizes() == grad.sizes(), op, ": out has shape ", out.sizes(), ", grad has ", grad.sizes());
  TORCH_CHECK(low_hw.size() % 2 == 0, op, ": low_hw must hold (h, w) pairs, got ", low_hw.size(), " values");
  const Layout low_layout = layout_of(grad);
  std::vector<at::Tensor> grad_low;
  for (size_t k = 0; k < low_hw.size(); k += 2) {
    check_source_size(op, indexed("low_hw", k / 2), low_hw[k], low_hw[k + 1]);
    grad_low.push_back(at::empty({grad.size(0), grad.size(1), low_hw[k], low_hw[k + 1]},
                                 grad.options().memory_format(format_of(low_layout))));
  }
  at::Tensor g = at::empty_like(grad);
  if (grad.numel() == 0) {
    for (auto& t : grad_low) t.zero_();
    return {g, grad_low};
  }
  const Writable written = writable(g);
  const Layout layout = written.layout;
  const at::Tensor& target = written.tensor;
  const at::Tensor grad_dense = grad.contiguous(format_of(layout));
  const at::Tensor out_dense = relu ? out.contiguous(format_of(layout)) : at::Tensor();
  kernels.mask(MaskProblem{dtype, grad.numel(), target.data_ptr(), grad_dense.const_data_ptr(),
                           relu ? out_dense.const_data_ptr() : nullptr});
  const at::Tensor g_low_layout = layout == low_layout ? target : target.contiguous(format_of(low_layout));
  for (auto& t : grad_low) {
    if (t.numel() > 0) kernels.adjoint(adjoint_problem(dtype, low_layout, g_low_layout, t, options));
  }
  if (!target.is_same(g)) g.copy_(target);
  return {g, grad_low};
}

at::Tensor upsample_concat(const Kernels& kernels, at::TensorList xs, std::string_view mode,
                           bool align_corners) {
  const char* op = "hrnet_fast::upsample_concat_cpp";
  const Options options = parse_mode(op, mode, align_corners);
  TORCH_CHECK(!xs.empty(), op, ": needs at least one tensor");
  int64_t channels = 0;
  for (size_t k = 0; k < xs.size(); ++k) {
    check_map(op, indexed("xs", k), xs[k], xs[0]);
    check_source_size(op, indexed("xs", k), xs[k].size(2), xs[k].size(3));
    channels += xs[k].size(1);
  }
  const DType dtype = dtype_of(kernels, op, xs[0]);
  TORCH_CHECK(channels <= kMaxDim, op, ": the output would have ", channels, " channels; at most 2^31 - 1");
  const Layout layout = layout_of(xs[0]);
  const at::MemoryFormat format = format_of(layout);
  at::Tensor out = at::empty({xs[0].size(0), channels, xs[0].size(2), xs[0].size(3)},
                             xs[0].options().memory_format(format));
  int64_t offset = 0;
  for (size_t k = 0; k < xs.size(); ++k) {
    const at::Tensor slice = out.narrow(1, offset, xs[k].size(1));
    offset += xs[k].size(1);
    if (slice.numel() == 0) continue;
    const at::Tensor x = xs[k].contiguous(format);
    SumProblem p = sum_problem(dtype, layout, slice, options, /*relu=*/false);
    p.has_base = k == 0;  // the first map is copied; the others are interpolated to its size
    (k == 0 ? p.base : p.low[0]) = map_ref(x, layout);
    p.num_low = k == 0 ? 0 : 1;
    kernels.sum(p);
  }
  return out;
}

std::vector<at::Tensor> upsample_concat_backward(const Kernels& kernels, const at::Tensor& grad,
                                                 at::IntArrayRef channels, at::IntArrayRef hw,
                                                 std::string_view mode, bool align_corners) {
  const char* op = "hrnet_fast::upsample_concat_backward_cpp";
  const Options options = parse_mode(op, mode, align_corners);
  check_map(op, "grad", grad, grad);
  const DType dtype = dtype_of(kernels, op, grad);
  TORCH_CHECK(!channels.empty() && hw.size() == 2 * channels.size(), op,
              ": needs one (h, w) pair per entry of channels, got ", channels.size(), " channels and ",
              hw.size(), " sizes");
  int64_t total = 0;
  for (const int64_t c : channels) total += c;
  TORCH_CHECK(total == grad.size(1) && hw[0] == grad.size(2) && hw[1] == grad.size(3), op,
              ": grad has shape ", grad.sizes(), " but channels sum to ", total, " and the first size is ",
              hw[0], "x", hw[1]);
  const Layout layout = layout_of(grad);
  const at::MemoryFormat format = format_of(layout);
  const at::Tensor g = grad.contiguous(format);
  std::vector<at::Tensor> grads;
  int64_t offset = 0;
  for (size_t k = 0; k < channels.size(); ++k) {
    check_source_size(op, indexed("hw", k), hw[2 * k], hw[2 * k + 1]);
    at::Tensor t = at::empty({grad.size(0), channels[k], hw[2 * k], hw[2 * k + 1]},
                             grad.options().memory_format(format));
    const at::Tensor slice = g.narrow(1, offset, channels[k]);
    offset += channels[k];
    grads.push_back(t);
    if (t.numel() == 0) continue;
    if (k == 0) {
      SumProblem p = sum_problem(dtype, layout, t, options, /*relu=*/false);
      p.has_base = true;
      p.base = map_ref(slice, layout);
      kernels.sum(p);
    } else {
      kernels.adjoint(adjoint_problem(dtype, layout, slice, t, options));
    }
  }
  return grads;
}

}  // namespace hrnet_fast
