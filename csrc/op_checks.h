// Input checks and memory layouts shared by the op frontends (op_frontend.cpp, fusion_branch_op.cpp):
// one-line errors on bad input, and how the torch-free kernels address a tensor (resample_problem.h).
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <limits>
#include <string>
#include <string_view>

#include "resample_problem.h"

namespace hrnet_fast {

constexpr int64_t kMaxDim = std::numeric_limits<int32_t>::max();

struct Options {
  bool bilinear, align_corners;
};

inline Options parse_mode(const char* op, std::string_view mode, bool align_corners) {
  TORCH_CHECK(mode == "nearest" || mode == "bilinear", op,
              ": upsampling mode must be 'nearest' or 'bilinear', got '", std::string(mode), "'");
  TORCH_CHECK(mode == "bilinear" || !align_corners, op,
              ": align_corners=True only applies to mode='bilinear'");
  return Options{mode == "bilinear", align_corners};
}

// The kernels' storage type of t; float64 only where the backend's kernels take it.
inline DType dtype_of(const char* backend, bool supports_float64, const char* op, const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat:
      return DType::kFloat32;
    case at::kHalf:
      return DType::kFloat16;
    case at::kBFloat16:
      return DType::kBFloat16;
    default:
      TORCH_CHECK(t.scalar_type() == at::kDouble && supports_float64, op, ": the ", backend,
                  " backend takes float32, float16, bfloat16", supports_float64 ? " or float64" : "",
                  " tensors, got ", t.scalar_type());
      return DType::kFloat64;
  }
}

// t is a 4-D (N, C, H, W) map with the first input's dtype, device and batch, and sizes the kernels
// can index.
inline void check_map(const char* op, const std::string& name, const at::Tensor& t, const at::Tensor& first) {
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

inline void check_source_size(const char* op, const std::string& name, int64_t h, int64_t w) {
  TORCH_CHECK(h >= 1 && w >= 1 && h <= kMaxDim && w <= kMaxDim, op, ": ", name,
              " must have a spatial size of at least 1x1 (and below 2^31), got ", h, "x", w);
}

inline std::string indexed(const char* name, size_t k) { return std::string(name) + "[" + std::to_string(k) + "]"; }

inline at::MemoryFormat format_of(Layout layout) {
  return layout == Layout::kChannelsLast ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

inline Layout layout_of(const at::Tensor& t) {
  return t.is_contiguous(at::MemoryFormat::ChannelsLast) && !t.is_contiguous() ? Layout::kChannelsLast
                                                                                : Layout::kNCHW;
}

// The strides of t as the kernels address it in `layout`, sizes of 1 taking the canonical stride;
// false when t cannot be addressed so (see resample_problem.h).
inline bool describe(const at::Tensor& t, Layout layout, MapRef& m) {
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

inline MapRef map_ref(const at::Tensor& t, Layout layout) {
  MapRef m;
  TORCH_INTERNAL_ASSERT(describe(t, layout, m), "hrnet_fast: cannot address a tensor of shape ", t.sizes(),
                        " and strides ", t.strides());
  return m;
}

// A problem (SumProblem, FusionBranchProblem) for writing `out` in `layout`: the fields they share.
template <typename Problem>
Problem output_problem(DType dtype, Layout layout, const at::Tensor& out, Options options, bool relu) {
  Problem p{};
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

// Where to compute an output the caller allocated: itself when the kernels can address it, else a
// contiguous temporary to copy back (an input with an exotic dense stride order).
struct Writable {
  Layout layout;
  at::Tensor tensor;
};

inline Writable writable(const at::Tensor& out) {
  const Layout layout = layout_of(out);
  MapRef unused;
  if (describe(out, layout, unused)) return {layout, out};
  return {Layout::kNCHW, at::empty(out.sizes(), out.options())};
}

}  // namespace hrnet_fast
