// CPU kernels: OpenMP (at::parallel_for) over output rows, a fp32 (fp64 for double) accumulator per
// row, inner loops over contiguous memory: the channels of a pixel (channels_last) or the pixels of a
// row (NCHW). A "row" is one output row of one sample (channels_last: w pixels x C values) or of one
// (sample, channel) plane (NCHW: w pixels x 1 value).
//
// Forward, per output row y: acc = base + sum(same); per low map, its source rows of y interpolated
// along x (each computed once and kept while the next output rows need it), blended with the weights
// of y: the order of PyTorch's own bilinear kernel, h0 * (w0 * x00 + w1 * x01) + h1 * (...).
// Adjoint, per input row s: first sum the gradient rows whose taps reach s (with their weights),
// then gather, for each input pixel, the columns that reach it.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "../resample_index.h"
#include "cpu_kernels.h"

namespace hrnet_fast::cpu {
namespace {

constexpr int64_t kRowGrain = 1 << 14;  // elements per parallel task, at least

// Taps of every position of an axis, as separate arrays so the inner loops vectorize.
template <typename S>
struct AxisTable {
  bool bilinear;
  std::vector<int32_t> i0, i1;
  std::vector<S> w0, w1;

  explicit AxisTable(const Axis<S>& a) : bilinear(a.bilinear), i0(a.out), i1(a.out), w0(a.out), w1(a.out) {
    for (int32_t d = 0; d < a.out; ++d) {
      const Taps<S> t = taps(a, d);
      i0[d] = t.i0;
      i1[d] = t.i1;
      w0[d] = t.w0;
      w1[d] = t.w1;
    }
  }
};

// Rows of a map as the kernels walk them: planes x h rows of w pixels with values() values each, the
// pixels stride() apart (NCHW: planes = N * C, 1 value, stride 1; channels_last: planes = N, C values).
template <typename T, bool kChannelsLast>
struct Rows {
  T* data;
  int64_t sample_stride, channel_stride, pixel_stride;
  int32_t h, w, c;

  Rows(const MapRef& m, int32_t channels)
      : data(static_cast<T*>(const_cast<void*>(m.data))),
        sample_stride(m.sample_stride),
        channel_stride(m.channel_stride),
        pixel_stride(m.pixel_stride),
        h(m.h),
        w(m.w),
        c(channels) {}

  int64_t values() const { return kChannelsLast ? c : 1; }
  int64_t stride() const { return kChannelsLast ? pixel_stride : 1; }
  int64_t planes(int32_t n) const { return kChannelsLast ? n : int64_t{n} * c; }
  T* plane_data(int64_t plane) const {
    if (kChannelsLast) return data + plane * sample_stride;
    return data + (plane / c) * sample_stride + (plane % c) * channel_stride;
  }
  T* row(T* plane_start, int64_t y) const { return plane_start + y * w * stride(); }
  T* row(int64_t plane, int64_t y) const { return row(plane_data(plane), y); }
};

// f(acc[x * v + k], src[x * stride + k]) over a row of w pixels with v values each; one flat loop when
// the row is contiguous (always but for slices of a concatenated tensor).
template <typename A, typename T, typename F>
void for_row(A* acc, T* src, int64_t w, int64_t v, int64_t stride, F f) {
  if (stride == v) {
    for (int64_t i = 0; i < w * v; ++i) f(acc[i], src[i]);
    return;
  }
  for (int64_t x = 0; x < w; ++x) {
    for (int64_t k = 0; k < v; ++k) f(acc[x * v + k], src[x * stride + k]);
  }
}

template <typename T, typename A>
void store_row(T* dst, const A* acc, int64_t w, int64_t v, int64_t stride, bool relu) {
  if (relu) {  // a < 0 ? 0 : a keeps NaN, as torch.relu does
    for_row(acc, dst, w, v, stride, [](const A& a, T& d) { d = from_acc<T>(a < A(0) ? A(0) : a); });
  } else {
    for_row(acc, dst, w, v, stride, [](const A& a, T& d) { d = from_acc<T>(a); });
  }
}

// The rows of one low map interpolated to the output width, computed once per source row and kept
// while consecutive output rows need them (2 slots: the two source rows of a bilinear output row).
template <typename T, bool kChannelsLast>
class WideRows {
 public:
  using A = acc_t<T>;

  WideRows(const Rows<T, kChannelsLast>& src, const AxisTable<A>& x, int64_t w)
      : src_(src), x_(x), w_(w), slots_{std::vector<A>(w * src.values()), std::vector<A>(w * src.values())} {}

  // Row y of plane `plane`, interpolated along x; `keep` (a row returned before) stays valid.
  const A* get(int64_t plane, int64_t y, const A* keep = nullptr) {
    const int64_t key = plane * src_.h + y;
    for (int i = 0; i < 2; ++i) {
      if (keys_[i] == key) return slots_[i].data();
    }
    int i = keys_[0] <= keys_[1] ? 0 : 1;  // rows advance: replace the older one
    if (slots_[i].data() == keep) i = 1 - i;
    keys_[i] = key;
    A* dst = slots_[i].data();
    const T* row = src_.row(plane, y);
    const int64_t stride = src_.stride(), v = src_.values();  // NCHW: both 1 at compile time
    const int32_t* i0 = x_.i0.data();
    if (!x_.bilinear) {
      for (int64_t x = 0; x < w_; ++x) {
        for (int64_t c = 0; c < v; ++c) dst[x * v + c] = to_acc(row[i0[x] * stride + c]);
      }
      return dst;
    }
    const int32_t* i1 = x_.i1.data();
    const A *w0 = x_.w0.data(), *w1 = x_.w1.data();
    for (int64_t x = 0; x < w_; ++x) {
      for (int64_t c = 0; c < v; ++c) {
        dst[x * v + c] = w0[x] * to_acc(row[i0[x] * stride + c]) + w1[x] * to_acc(row[i1[x] * stride + c]);
      }
    }
    return dst;
  }

 private:
  const Rows<T, kChannelsLast>& src_;
  const AxisTable<A>& x_;
  int64_t w_;
  std::vector<A> slots_[2];
  int64_t keys_[2] = {-1, -1};
};

template <typename T, bool kChannelsLast>
void sum_forward(const SumProblem& p) {
  using A = acc_t<T>;
  using R = Rows<T, kChannelsLast>;
  const R out(p.out, p.c), base(p.base, p.c);
  const int64_t w = p.w, v = out.values(), n = w * v;
  std::vector<R> same, low;
  std::vector<AxisTable<A>> low_y, low_x;
  for (int k = 0; k < p.num_same; ++k) same.emplace_back(p.same[k], p.c);
  for (int k = 0; k < p.num_low; ++k) {
    const R& r = low.emplace_back(p.low[k], p.c);
    low_y.emplace_back(make_axis<A>(r.h, p.h, p.bilinear, p.align_corners));
    low_x.emplace_back(make_axis<A>(r.w, p.w, p.bilinear, p.align_corners));
  }
  const int64_t rows = out.planes(p.n) * p.h;
  at::parallel_for(0, rows, std::max<int64_t>(1, kRowGrain / n), [&](int64_t begin, int64_t end) {
    std::vector<A> acc(n);
    std::vector<WideRows<T, kChannelsLast>> wide;
    for (size_t k = 0; k < low.size(); ++k) wide.emplace_back(low[k], low_x[k], w);
    // Row pointers of the current plane: out, base, same[0], same[1], ...
    std::vector<T*> planes(2 + same.size());
    int64_t plane = -1, y = 0;
    for (int64_t r = begin; r < end; ++r, ++y) {
      if (plane < 0 || y == p.h) {
        plane = r / p.h;
        y = r % p.h;
        planes[0] = out.plane_data(plane);
        planes[1] = p.has_base ? base.plane_data(plane) : nullptr;
        for (size_t k = 0; k < same.size(); ++k) planes[2 + k] = same[k].plane_data(plane);
      }
      if (p.has_base) {
        for_row(acc.data(), base.row(planes[1], y), w, v, base.stride(),
                [](A& a, const T& b) { a = to_acc(b); });
      } else {
        std::fill(acc.begin(), acc.end(), A(0));
      }
      for (size_t k = 0; k < same.size(); ++k) {
        for_row(acc.data(), same[k].row(planes[2 + k], y), w, v, same[k].stride(),
                [](A& a, const T& b) { a += to_acc(b); });
      }
      for (size_t k = 0; k < low.size(); ++k) {
        const AxisTable<A>& ty = low_y[k];
        const A* top = wide[k].get(plane, ty.i0[y]);
        if (!p.bilinear) {
          for (int64_t i = 0; i < n; ++i) acc[i] += top[i];
          continue;
        }
        const A* bottom = wide[k].get(plane, ty.i1[y], top);
        const A wt = ty.w0[y], wb = ty.w1[y];
        for (int64_t i = 0; i < n; ++i) acc[i] += wt * top[i] + wb * bottom[i];
      }
      store_row(out.row(planes[0], y), acc.data(), w, v, out.stride(), p.relu);
    }
  });
}

template <typename T>
void mask(const MaskProblem& p) {
  using A = acc_t<T>;
  T* g = static_cast<T*>(p.g);
  const T* grad = static_cast<const T*>(p.grad);
  const T* out = static_cast<const T*>(p.out);
  at::parallel_for(0, p.numel, kRowGrain, [&](int64_t begin, int64_t end) {
    if (out == nullptr) {
      std::copy(grad + begin, grad + end, g + begin);
      return;
    }
    for (int64_t i = begin; i < end; ++i) {
      g[i] = from_acc<T>(to_acc(grad[i]) * A(to_acc(out[i]) > A(0)));
    }
  });
}

template <typename T, bool kChannelsLast>
void adjoint(const AdjointProblem& p) {
  using A = acc_t<T>;
  using R = Rows<T, kChannelsLast>;
  const R grad(p.grad, p.c), out(p.out, p.c);
  const int64_t v = out.values(), w = grad.w;
  const Axis<A> ay = make_axis<A>(out.h, grad.h, p.bilinear, p.align_corners);
  const Axis<A> ax = make_axis<A>(out.w, grad.w, p.bilinear, p.align_corners);
  const AxisTable<A> tx(ax);
  std::vector<Range> range_x(out.w);
  for (int32_t s = 0; s < out.w; ++s) range_x[s] = adjoint_range(ax, s);
  const int64_t rows = out.planes(p.n) * out.h;
  at::parallel_for(0, rows, std::max<int64_t>(1, kRowGrain / (w * v)), [&](int64_t begin, int64_t end) {
    std::vector<A> column_sum(w * v), pixel(v);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t plane = r / out.h, s = r % out.h;
      const Range ry = adjoint_range(ay, static_cast<int32_t>(s));
      std::fill(column_sum.begin(), column_sum.end(), A(0));
      for (int32_t d = ry.begin; d < ry.end; ++d) {
        const A weight = adjoint_weight(taps(ay, d), static_cast<int32_t>(s));
        for_row(column_sum.data(), grad.row(plane, d), w, v, grad.stride(),
                [&](A& a, const T& g) { a += weight * to_acc(g); });
      }
      T* dst = out.row(plane, s);
      for (int32_t sx = 0; sx < out.w; ++sx) {
        std::fill(pixel.begin(), pixel.end(), A(0));
        for (int32_t d = range_x[sx].begin; d < range_x[sx].end; ++d) {
          const A weight = (tx.i0[d] == sx ? tx.w0[d] : A(0)) + (tx.i1[d] == sx ? tx.w1[d] : A(0));
          for (int64_t c = 0; c < v; ++c) pixel[c] += weight * column_sum[d * v + c];
        }
        for (int64_t c = 0; c < v; ++c) dst[sx * out.stride() + c] = from_acc<T>(pixel[c]);
      }
    }
  });
}

// Calls f(T{}, std::bool_constant<channels_last>{}) for the problem's storage type and layout.
template <typename Problem, typename F>
void dispatch(const Problem& p, F&& f) {
  dispatch_dtype(p.dtype, [&](auto tag) {
    if (p.layout == Layout::kChannelsLast) {
      f(tag, std::true_type{});
    } else {
      f(tag, std::false_type{});
    }
  });
}

void run_sum(const SumProblem& p) {
  dispatch(p, [&](auto tag, auto cl) { sum_forward<decltype(tag), decltype(cl)::value>(p); });
}
void run_adjoint(const AdjointProblem& p) {
  dispatch(p, [&](auto tag, auto cl) { adjoint<decltype(tag), decltype(cl)::value>(p); });
}
void run_mask(const MaskProblem& p) {
  dispatch_dtype(p.dtype, [&](auto tag) { mask<decltype(tag)>(p); });
}

}  // namespace

const Kernels& kernels() {
  static const Kernels k{"cpu", /*supports_float64=*/true, run_sum, run_mask, run_adjoint};
  return k;
}

}  // namespace hrnet_fast::cpu

namespace {

at::Tensor upsample_sum_cpu(const at::Tensor& base, at::TensorList same, at::TensorList low,
                            std::string_view mode, bool align_corners, bool relu) {
  return hrnet_fast::upsample_sum(hrnet_fast::cpu::kernels(), base, same, low, mode, align_corners, relu);
}

std::tuple<at::Tensor, std::vector<at::Tensor>> upsample_sum_backward_cpu(
    const at::Tensor& grad, const at::Tensor& out, at::IntArrayRef low_hw, std::string_view mode,
    bool align_corners, bool relu) {
  return hrnet_fast::upsample_sum_backward(hrnet_fast::cpu::kernels(), grad, out, low_hw, mode, align_corners,
                                           relu);
}

}  // namespace

TORCH_LIBRARY_IMPL(hrnet_fast, CPU, m) {
  m.impl("upsample_sum_cpp", &upsample_sum_cpu);
  m.impl("upsample_sum_backward_cpp", &upsample_sum_backward_cpu);
}
