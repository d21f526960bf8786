// Index math of F.interpolate(size=...) along one axis, exactly as PyTorch's CPU kernels compute it
// (scales and weights in fp32, or fp64 for float64 maps; floor; clamps), and the ranges its adjoint
// gathers over. Torch-free; host and device.
// Forward: output position d of an axis of size `out` reads input positions i0(d) <= i1(d) < in with
// weights w0(d) + w1(d) = 1 (nearest: i0 = i1, w0 = 1, w1 = 0).
// Adjoint: input position s collects, from every d with i0(d) <= s <= i1(d), the weight
//   (i0(d) == s ? w0(d) : 0) + (i1(d) == s ? w1(d) : 0).
// i0 and i1 are nondecreasing in d, so those d form one range [begin, end), found by binary search.
#pragma once

#include <cmath>
#include <cstdint>

#include "scalar_types.h"

namespace hrnet_fast {

// S is the type PyTorch computes source positions and weights in: float, or double for float64 maps.
template <typename S>
struct Axis {
  int32_t in, out;
  S scale;  // PyTorch's source-index scale for this axis, mode and align_corners
  bool bilinear, align_corners;
};

template <typename S>
HRNET_HD Axis<S> make_axis(int32_t in, int32_t out, bool bilinear, bool align_corners) {
  S scale;
  if (!bilinear) {  // nearest computes in float for every dtype
    scale = static_cast<float>(in) / static_cast<float>(out);
  } else if (align_corners) {
    scale = out > 1 ? static_cast<S>(in - 1) / static_cast<S>(out - 1) : S(0);
  } else {
    scale = static_cast<S>(in) / static_cast<S>(out);
  }
  return Axis<S>{in, out, scale, bilinear, align_corners};
}

template <typename S>
struct Taps {
  int32_t i0, i1;
  S w0, w1;
};

HRNET_HD int32_t min_i32(int32_t a, int32_t b) { return a < b ? a : b; }

// nearest: src = min(floor(d * scale), in - 1), in float
template <typename S>
HRNET_HD int32_t nearest_source(const Axis<S>& a, int32_t d) {
  const float scale = static_cast<float>(a.scale);
  return min_i32(static_cast<int32_t>(floorf(static_cast<float>(d) * scale)), a.in - 1);
}

template <typename S>
HRNET_HD Taps<S> taps(const Axis<S>& a, int32_t d) {
  if (!a.bilinear) {
    const int32_t i = nearest_source(a, d);
    return Taps<S>{i, i, S(1), S(0)};
  }
  if (a.in == a.out) return Taps<S>{d, d, S(1), S(0)};
  S src = a.align_corners ? a.scale * static_cast<S>(d) : a.scale * (static_cast<S>(d) + S(0.5)) - S(0.5);
  src = src < S(0) ? S(0) : src;
  const int32_t i0 = min_i32(static_cast<int32_t>(floor(src)), a.in - 1);
  S w1 = src - static_cast<S>(i0);
  w1 = w1 < S(0) ? S(0) : (w1 > S(1) ? S(1) : w1);
  return Taps<S>{i0, i0 < a.in - 1 ? i0 + 1 : i0, S(1) - w1, w1};
}

// Weight with which output position d (taps t) contributes to input position s.
template <typename S>
HRNET_HD S adjoint_weight(const Taps<S>& t, int32_t s) {
  return (t.i0 == s ? t.w0 : S(0)) + (t.i1 == s ? t.w1 : S(0));
}

// First d in [0, out) with (use_i1 ? i1(d) : i0(d)) >= s, or out if there is none.
template <typename S>
HRNET_HD int32_t first_output_at_or_after(const Axis<S>& a, int32_t s, bool use_i1) {
  int32_t lo = 0, hi = a.out;
  while (lo < hi) {
    const int32_t mid = lo + (hi - lo) / 2;
    const Taps<S> t = taps(a, mid);
    if ((use_i1 ? t.i1 : t.i0) >= s) {
      hi = mid;
    } else {
      lo = mid + 1;
    }
  }
  return lo;
}

struct Range {
  int32_t begin, end;
};

// The output positions whose taps touch input position s (empty when the axis skips s).
template <typename S>
HRNET_HD Range adjoint_range(const Axis<S>& a, int32_t s) {
  return Range{first_output_at_or_after(a, s, true), first_output_at_or_after(a, s + 1, false)};
}

}  // namespace hrnet_fast
