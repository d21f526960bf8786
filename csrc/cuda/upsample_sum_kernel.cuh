// CUDA kernels of both ops, torch-free: `nvcc -arch=sm_90 -c` compiles them without torch headers,
// and a plain C++ compiler compiles them for the host, where tests run every "thread" of a launch
// in a loop (an emulation that checks the indexing, the vectorization choices and the tails).
//
// Three kernels, each a Body called once per (block, thread):
//   SumBody      out = act(base + sum(same) + sum(interp(low)))       one output vector per step
//   MaskBody     g = out > 0 ? grad : 0                               elementwise
//   AdjointBody  out = interp_adjoint(grad)                           one input-pixel vector per step
// A thread handles kUnroll vectors kBlock apart (coalesced across the block, kUnroll independent
// loads in flight). Vectors are 16 bytes (V = 16 / sizeof(T) values, fp32 accumulation) along the
// channels of a pixel (channels_last) or along a sample's contiguous elements (NCHW, where the low
// maps are gathered value by value); V = 1 when sizes, strides or pointers do not allow 16 bytes.
// Flat indices are 32-bit (divided by multiply-shift); a launch covers at most 2^31 - 1 elements,
// so the launchers split large batches into several launches.
#pragma once

#include <cstdint>
#include <cstring>

#include "../resample_index.h"
#include "../resample_problem.h"
#include "../scalar_types.h"
#include "launch_common.cuh"

namespace hrnet_fast::cuda {

constexpr uint32_t kBlock = 256;  // threads per block
constexpr uint32_t kUnroll = 4;   // vectors per thread

// n / d and n % d for a fixed divisor, n < 2^31, by multiply-high and shift.
struct FastDivmod {
  uint32_t divisor, multiplier, shift;

  static FastDivmod make(uint32_t d) {
    uint32_t s = 0;
    while (s < 32 && (uint32_t{1} << s) < d) ++s;
    const uint64_t m = ((uint64_t{1} << 32) * ((uint64_t{1} << s) - d)) / d + 1;
    return FastDivmod{d, static_cast<uint32_t>(m), s};
  }

  HRNET_HD uint32_t div(uint32_t n) const {
#if defined(__CUDA_ARCH__)
    const uint32_t t = __umulhi(n, multiplier);
#else
    const uint32_t t = static_cast<uint32_t>((uint64_t{n} * multiplier) >> 32);
#endif
    return (t + n) >> shift;
  }
  HRNET_HD uint32_t mod(uint32_t n, uint32_t quotient) const { return n - quotient * divisor; }
};

template <typename T>
HRNET_HD const T* at(const MapRef& m, int64_t offset) {
  return static_cast<const T*>(m.data) + offset;
}

template <typename T>
HRNET_HD T* written_at(const MapRef& m, int64_t offset) {  // an output map
  return static_cast<T*>(const_cast<void*>(m.data)) + offset;
}

// The gradient through the ReLU: grad where its output was positive, else 0 (as grad * (out > 0)).
HRNET_HD float through_relu(float grad, float out) { return grad * (out > 0.f ? 1.f : 0.f); }

// Offset of element (n, c, y, x) of map m in `layout`.
template <bool kChannelsLast>
HRNET_HD int64_t offset(const MapRef& m, uint32_t n, uint32_t c, int32_t y, int32_t x) {
  const int64_t pixel = int64_t{y} * m.w + x;
  if (kChannelsLast) return n * m.sample_stride + pixel * m.pixel_stride + c;
  return n * m.sample_stride + c * m.channel_stride + pixel;
}

// Position of the first value of output vector `t` (V values of one sample).
struct Position {
  uint32_t n, c;
  int32_t y, x;
};

struct Decomposer {
  FastDivmod values_per_sample, plane, width, channels;  // C*H*W, H*W, W, C

  static Decomposer make(uint32_t c, uint32_t h, uint32_t w) {
    return Decomposer{FastDivmod::make(c * h * w), FastDivmod::make(h * w), FastDivmod::make(w),
                      FastDivmod::make(c)};
  }

  // channels_last: element e = ((n * H + y) * W + x) * C + c;  NCHW: e = ((n * C + c) * H + y) * W + x
  template <bool kChannelsLast>
  HRNET_HD Position at(uint32_t e) const {
    Position p;
    p.n = values_per_sample.div(e);
    uint32_t rest = values_per_sample.mod(e, p.n);
    if (kChannelsLast) {
      const uint32_t pixel = channels.div(rest);
      p.c = channels.mod(rest, pixel);
      rest = pixel;
    } else {
      p.c = plane.div(rest);
      rest = plane.mod(rest, p.c);
    }
    const uint32_t y = width.div(rest);
    p.y = static_cast<int32_t>(y);
    p.x = static_cast<int32_t>(width.mod(rest, y));
    return p;
  }
};

template <typename T, bool kChannelsLast, bool kBilinear, int V>
struct SumBody {
  SumProblem p;
  Axis<float> ay[kMaxAddends], ax[kMaxAddends];
  Decomposer index;
  uint32_t vectors;

  HRNET_HD void operator()(uint32_t block, uint32_t thread) const {
    float acc[kUnroll][V];
    Position pos[kUnroll];
#pragma unroll
    for (uint32_t u = 0; u < kUnroll; ++u) {
      const uint32_t t = (block * kUnroll + u) * kBlock + thread;
      pos[u] = index.at<kChannelsLast>(t < vectors ? t * V : 0);
#pragma unroll
      for (int j = 0; j < V; ++j) acc[u][j] = 0.f;
      if (t < vectors && p.has_base) add_dense(acc[u], p.base, pos[u]);
    }
    for (int k = 0; k < p.num_same; ++k) {
#pragma unroll
      for (uint32_t u = 0; u < kUnroll; ++u) {
        if ((block * kUnroll + u) * kBlock + thread < vectors) add_dense(acc[u], p.same[k], pos[u]);
      }
    }
    for (int k = 0; k < p.num_low; ++k) {
#pragma unroll
      for (uint32_t u = 0; u < kUnroll; ++u) {
        if ((block * kUnroll + u) * kBlock + thread < vectors) add_low(acc[u], k, pos[u]);
      }
    }
#pragma unroll
    for (uint32_t u = 0; u < kUnroll; ++u) {
      if ((block * kUnroll + u) * kBlock + thread >= vectors) continue;
      Pack<T, V> out;
#pragma unroll
      for (int j = 0; j < V; ++j) {
        const float a = acc[u][j];
        out.v[j] = from_acc<T>(p.relu && a < 0.f ? 0.f : a);
      }
      store<T, V>(written_at<T>(p.out, vector_offset(p.out, pos[u])), out);
    }
  }

  // The V values of a vector are contiguous in every map read densely (out, base, same).
  HRNET_HD int64_t vector_offset(const MapRef& m, const Position& q) const {
    return offset<kChannelsLast>(m, q.n, q.c, q.y, q.x);
  }

  HRNET_HD void add_dense(float* acc, const MapRef& m, const Position& q) const {
    const Pack<T, V> v = load<T, V>(at<T>(m, vector_offset(m, q)));
#pragma unroll
    for (int j = 0; j < V; ++j) acc[j] += to_acc(v.v[j]);
  }

  HRNET_HD void add_low(float* acc, int k, const Position& q) const {
    const MapRef& m = p.low[k];
    if (kChannelsLast) {  // one pixel: V channels, loaded as vectors from the 1 or 4 source pixels
      const Taps<float> ty = taps(ay[k], q.y), tx = taps(ax[k], q.x);
      const Pack<T, V> a = load<T, V>(at<T>(m, offset<true>(m, q.n, q.c, ty.i0, tx.i0)));
      if (!kBilinear) {
#pragma unroll
        for (int j = 0; j < V; ++j) acc[j] += to_acc(a.v[j]);
        return;
      }
      const Pack<T, V> b = load<T, V>(at<T>(m, offset<true>(m, q.n, q.c, ty.i0, tx.i1)));
      const Pack<T, V> c = load<T, V>(at<T>(m, offset<true>(m, q.n, q.c, ty.i1, tx.i0)));
      const Pack<T, V> d = load<T, V>(at<T>(m, offset<true>(m, q.n, q.c, ty.i1, tx.i1)));
#pragma unroll
      for (int j = 0; j < V; ++j) {
        acc[j] += ty.w0 * (tx.w0 * to_acc(a.v[j]) + tx.w1 * to_acc(b.v[j])) +
                  ty.w1 * (tx.w0 * to_acc(c.v[j]) + tx.w1 * to_acc(d.v[j]));
      }
      return;
    }
    // NCHW: V consecutive elements of one sample, possibly across rows and channels; the source rows
    // change only where the elements do.
    uint32_t c = q.c;
    int32_t y = q.y, x = q.x;
    Taps<float> ty;
    const T *top, *bottom;
    auto source_rows = [&]() {
      ty = taps(ay[k], y);
      const T* plane = at<T>(m, q.n * m.sample_stride + c * m.channel_stride);
      top = plane + int64_t{ty.i0} * m.w;
      bottom = plane + int64_t{ty.i1} * m.w;
    };
    source_rows();
#pragma unroll
    for (int j = 0; j < V; ++j, ++x) {
      if (x == p.w) {
        x = 0;
        if (++y == p.h) {
          y = 0;
          ++c;
        }
        source_rows();
      }
      const Taps<float> tx = taps(ax[k], x);
      if (!kBilinear) {
        acc[j] += to_acc(top[tx.i0]);
      } else {
        acc[j] += ty.w0 * (tx.w0 * to_acc(top[tx.i0]) + tx.w1 * to_acc(top[tx.i1])) +
                  ty.w1 * (tx.w0 * to_acc(bottom[tx.i0]) + tx.w1 * to_acc(bottom[tx.i1]));
      }
    }
  }
};

template <typename T, int V>
struct MaskBody {
  T* g;
  const T* grad;
  const T* out;  // nullptr: copy
  uint32_t numel;

  HRNET_HD void operator()(uint32_t block, uint32_t thread) const {
#pragma unroll
    for (uint32_t u = 0; u < kUnroll; ++u) {
      const uint32_t first = ((block * kUnroll + u) * kBlock + thread) * V;
      if (first >= numel) continue;
      if (first + V <= numel) {
        const Pack<T, V> gv = load<T, V>(grad + first);
        if (out == nullptr) {
          store<T, V>(g + first, gv);
          continue;
        }
        const Pack<T, V> ov = load<T, V>(out + first);
        Pack<T, V> r;
#pragma unroll
        for (int j = 0; j < V; ++j) r.v[j] = from_acc<T>(through_relu(to_acc(gv.v[j]), to_acc(ov.v[j])));
        store<T, V>(g + first, r);
        continue;
      }
      for (uint32_t i = first; i < numel; ++i) {  // the tail
        g[i] = out == nullptr ? grad[i] : from_acc<T>(through_relu(to_acc(grad[i]), to_acc(out[i])));
      }
    }
  }
};

template <typename T, bool kChannelsLast, int V>
struct AdjointBody {
  AdjointProblem p;
  Axis<float> ay, ax;
  Decomposer index;  // over the written map (N, C, h, w)
  uint32_t vectors;

  HRNET_HD void operator()(uint32_t block, uint32_t thread) const {
#pragma unroll
    for (uint32_t u = 0; u < kUnroll; ++u) {
      const uint32_t t = (block * kUnroll + u) * kBlock + thread;
      if (t >= vectors) continue;
      const Position q = index.at<kChannelsLast>(t * V);
      float acc[V];
      if (kChannelsLast) {
        gather_pixel(acc, q);
      } else {
        gather_values(acc, q);
      }
      Pack<T, V> r;
#pragma unroll
      for (int j = 0; j < V; ++j) r.v[j] = from_acc<T>(acc[j]);
      store<T, V>(written_at<T>(p.out, offset<kChannelsLast>(p.out, q.n, q.c, q.y, q.x)), r);
    }
  }

  // channels_last: V channels of input pixel (q.y, q.x), as vectors from each output pixel it feeds.
  HRNET_HD void gather_pixel(float* acc, const Position& q) const {
#pragma unroll
    for (int j = 0; j < V; ++j) acc[j] = 0.f;
    const Range ry = adjoint_range(ay, q.y), rx = adjoint_range(ax, q.x);
#pragma unroll 1
    for (int32_t dy = ry.begin; dy < ry.end; ++dy) {
      const float wy = adjoint_weight(taps(ay, dy), q.y);
#pragma unroll 1
      for (int32_t dx = rx.begin; dx < rx.end; ++dx) {
        const float weight = wy * adjoint_weight(taps(ax, dx), q.x);
        const Pack<T, V> g = load<T, V>(at<T>(p.grad, offset<true>(p.grad, q.n, q.c, dy, dx)));
#pragma unroll
        for (int j = 0; j < V; ++j) acc[j] += weight * to_acc(g.v[j]);
      }
    }
  }

  // NCHW: V consecutive input values of one sample, each gathered on its own.
  HRNET_HD void gather_values(float* acc, const Position& q) const {
    uint32_t c = q.c;
    int32_t y = q.y, x = q.x;
#pragma unroll
    for (int j = 0; j < V; ++j) {
      if (x == p.out.w) {
        x = 0;
        if (++y == p.out.h) {
          y = 0;
          ++c;
        }
      }
      acc[j] = 0.f;
      const Range ry = adjoint_range(ay, y), rx = adjoint_range(ax, x);
      const T* plane = at<T>(p.grad, q.n * p.grad.sample_stride + c * p.grad.channel_stride);
      for (int32_t dy = ry.begin; dy < ry.end; ++dy) {
        const float wy = adjoint_weight(taps(ay, dy), y);
        for (int32_t dx = rx.begin; dx < rx.end; ++dx) {
          acc[j] += wy * adjoint_weight(taps(ax, dx), x) * to_acc(plane[int64_t{dy} * p.grad.w + dx]);
        }
      }
      ++x;
    }
  }
};

// ---- launchers: split into launches of < 2^31 elements, choose V, run each launch on `exec` ----

// Map m can be read or written as v-value vectors along the layout's vector axis.
inline bool vectorizable(const MapRef& m, bool channels_last, int v) {
  if (!aligned16(m.data) || m.sample_stride % v != 0) return false;
  return !channels_last || m.pixel_stride % v == 0;
}

inline uint32_t blocks_for(uint32_t vectors) {
  return static_cast<uint32_t>((int64_t{vectors} + kBlock * kUnroll - 1) / (kBlock * kUnroll));
}

template <typename T, bool kChannelsLast, bool kBilinear, int V, class Exec>
int launch_sum(const SumProblem& problem, Exec& exec) {
  const int64_t per_sample = int64_t{problem.c} * problem.h * problem.w;
  if (per_sample > kMaxLaunchElements) return kSampleTooLarge;
  if (per_sample == 0 || problem.n == 0) return 0;
  SumBody<T, kChannelsLast, kBilinear, V> body{};
  for (int k = 0; k < problem.num_low; ++k) {
    body.ay[k] = make_axis<float>(problem.low[k].h, problem.h, problem.bilinear, problem.align_corners);
    body.ax[k] = make_axis<float>(problem.low[k].w, problem.w, problem.bilinear, problem.align_corners);
  }
  body.index = Decomposer::make(problem.c, problem.h, problem.w);
  return for_each_chunk(problem.n, per_sample, [&](int64_t n0, int32_t count) {
    body.p = problem;
    body.p.n = count;
    body.p.out = advance(problem.out, n0, sizeof(T));
    body.p.base = problem.has_base ? advance(problem.base, n0, sizeof(T)) : problem.base;
    for (int k = 0; k < problem.num_same; ++k) body.p.same[k] = advance(problem.same[k], n0, sizeof(T));
    for (int k = 0; k < problem.num_low; ++k) body.p.low[k] = advance(problem.low[k], n0, sizeof(T));
    body.vectors = static_cast<uint32_t>(count * per_sample / V);
    return exec.launch(blocks_for(body.vectors), body);
  });
}

template <typename T>
bool sum_vectorizable(const SumProblem& p) {
  constexpr int v = kVector<T>;
  const bool cl = p.layout == Layout::kChannelsLast;
  if ((cl ? p.c : int64_t{p.c} * p.h * p.w) % v != 0) return false;
  bool ok = vectorizable(p.out, cl, v) && (!p.has_base || vectorizable(p.base, cl, v));
  for (int k = 0; k < p.num_same; ++k) ok = ok && vectorizable(p.same[k], cl, v);
  for (int k = 0; k < p.num_low && cl; ++k) ok = ok && vectorizable(p.low[k], cl, v);
  return ok;
}

template <typename T, bool kChannelsLast, bool kBilinear, class Exec>
int launch_sum_vectorized_or_not(const SumProblem& p, bool vectorized, Exec& exec) {
  if (vectorized) return launch_sum<T, kChannelsLast, kBilinear, kVector<T>>(p, exec);
  return launch_sum<T, kChannelsLast, kBilinear, 1>(p, exec);
}

template <typename T, class Exec>
int run_sum_typed(const SumProblem& p, Exec& exec) {
  const bool vec = sum_vectorizable<T>(p);
  if (p.layout == Layout::kChannelsLast) {
    if (p.bilinear) return launch_sum_vectorized_or_not<T, true, true>(p, vec, exec);
    return launch_sum_vectorized_or_not<T, true, false>(p, vec, exec);
  }
  if (p.bilinear) return launch_sum_vectorized_or_not<T, false, true>(p, vec, exec);
  return launch_sum_vectorized_or_not<T, false, false>(p, vec, exec);
}

template <typename T, int V, class Exec>
int launch_mask(const MaskProblem& p, Exec& exec) {
  const int64_t chunk = kMaxLaunchElements / V * V;
  for (int64_t first = 0; first < p.numel; first += chunk) {
    MaskBody<T, V> body{static_cast<T*>(p.g) + first, static_cast<const T*>(p.grad) + first,
                        p.out == nullptr ? nullptr : static_cast<const T*>(p.out) + first,
                        static_cast<uint32_t>(p.numel - first < chunk ? p.numel - first : chunk)};
    const int err = exec.launch(blocks_for((body.numel + V - 1) / V), body);
    if (err != 0) return err;
  }
  return 0;
}

template <typename T, class Exec>
int run_mask_typed(const MaskProblem& p, Exec& exec) {
  const bool vec = aligned16(p.g) && aligned16(p.grad) && (p.out == nullptr || aligned16(p.out));
  return vec ? launch_mask<T, kVector<T>>(p, exec) : launch_mask<T, 1>(p, exec);
}

template <typename T, bool kChannelsLast, int V, class Exec>
int launch_adjoint(const AdjointProblem& problem, Exec& exec) {
  const int64_t per_sample = int64_t{problem.c} * problem.out.h * problem.out.w;
  if (per_sample > kMaxLaunchElements) return kSampleTooLarge;
  if (per_sample == 0 || problem.n == 0) return 0;
  AdjointBody<T, kChannelsLast, V> body{};
  body.ay = make_axis<float>(problem.out.h, problem.grad.h, problem.bilinear, problem.align_corners);
  body.ax = make_axis<float>(problem.out.w, problem.grad.w, problem.bilinear, problem.align_corners);
  body.index = Decomposer::make(problem.c, problem.out.h, problem.out.w);
  return for_each_chunk(problem.n, per_sample, [&](int64_t n0, int32_t count) {
    body.p = problem;
    body.p.n = count;
    body.p.grad = advance(problem.grad, n0, sizeof(T));
    body.p.out = advance(problem.out, n0, sizeof(T));
    body.vectors = static_cast<uint32_t>(count * per_sample / V);
    return exec.launch(blocks_for(body.vectors), body);
  });
}

template <typename T, class Exec>
int run_adjoint_typed(const AdjointProblem& p, Exec& exec) {
  constexpr int v = kVector<T>;
  const bool cl = p.layout == Layout::kChannelsLast;
  const bool vec = (cl ? p.c : int64_t{p.c} * p.out.h * p.out.w) % v == 0 &&
                   vectorizable(p.out, cl, v) && (!cl || vectorizable(p.grad, cl, v));
  if (cl) return vec ? launch_adjoint<T, true, v>(p, exec) : launch_adjoint<T, true, 1>(p, exec);
  return vec ? launch_adjoint<T, false, v>(p, exec) : launch_adjoint<T, false, 1>(p, exec);
}

// Entry points over the storage type (fp32, fp16, bf16; fp64 is not built for the GPU).
template <class Exec>
int run_sum(const SumProblem& p, Exec& exec) {
  return dispatch_gpu_dtype(p.dtype, [&](auto tag) { return run_sum_typed<decltype(tag)>(p, exec); });
}
template <class Exec>
int run_mask(const MaskProblem& p, Exec& exec) {
  return dispatch_gpu_dtype(p.dtype, [&](auto tag) { return run_mask_typed<decltype(tag)>(p, exec); });
}
template <class Exec>
int run_adjoint(const AdjointProblem& p, Exec& exec) {
  return dispatch_gpu_dtype(p.dtype, [&](auto tag) { return run_adjoint_typed<decltype(tag)>(p, exec); });
}

}  // namespace hrnet_fast::cuda
