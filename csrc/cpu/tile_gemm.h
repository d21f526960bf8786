// Register-tiled GEMM micro-kernels of the CPU kernels, and the weight panels they read:
//
//   c[p][j] (kTileP pixels x kTileC channels, fp32 or fp64) += sum over segments s, k < s.k of
//                                                               s.rows[p][k] * panel_s[k][j]
//
// A segment is one tap of one path: its rows are kTileP pointers to the input channels of a pixel
// (in the map itself or staged), its panel the weights of that tap. The operands have the storage
// type where a micro-kernel multiplies it directly (fp32, fp64, and bf16 on CPUs with AVX512-BF16,
// whose dot products take pairs of bf16 along k), else fp32 (fp16, or bf16 without AVX512-BF16,
// widened as they are staged). fp32/fp64 tiles use GCC/Clang vector extensions (AVX-512 with
// -march=native, narrower vectors otherwise): kTileP x kTileV 64-byte accumulators in registers.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "../scalar_types.h"

#if defined(__AVX512BF16__)
#include <immintrin.h>
#endif

namespace hrnet_fast::cpu {

// 64-byte vectors of the accumulation type (an alias template would drop the attribute).
template <typename A>
struct Vector;
template <>
struct Vector<float> {
  typedef float type __attribute__((vector_size(64)));
};
template <>
struct Vector<double> {
  typedef double type __attribute__((vector_size(64)));
};
template <typename A>
using Vec = typename Vector<A>::type;
template <typename A>
constexpr int kLanes = static_cast<int>(64 / sizeof(A));

constexpr int kTileP = 12;  // pixels per register tile
constexpr int kTileV = 2;   // vectors of output channels per register tile
template <typename A>
constexpr int kTileC = kTileV * kLanes<A>;  // output channels per register tile

inline int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// The operand type of storage type T (see the top of this file).
template <typename T>
struct Operand {
  using type = acc_t<T>;
};
#if defined(__AVX512BF16__)
template <>
struct Operand<BFloat16> {
  using type = BFloat16;
};
#endif
template <typename T>
using operand_t = typename Operand<T>::type;

template <typename R, typename T>
R to_operand(T v) {
  if constexpr (std::is_same_v<R, T>) {
    return v;
  } else {
    return static_cast<R>(to_acc(v));
  }
}

template <typename R>
struct Segment {
  int64_t k;
  const R* const* rows;  // kTileP of them
  const R* b;            // the panel, at the tile's first channel
  int64_t ldb;           // panel row length (channels)
};

// fp32 / fp64 operands: b is [k][ldb]. kAccumulate false: c = the sum (c is not read).
template <bool kAccumulate = true, typename A>
void tile_gemm(const Segment<A>* segments, int count, A* c, int64_t ldc) {
  using V = Vec<A>;
  constexpr int L = kLanes<A>;
  static_assert(sizeof(V) == L * sizeof(A));
  V acc[kTileP][kTileV] = {};
  for (int p = 0; p < kTileP && kAccumulate; ++p) {
    for (int j = 0; j < kTileV; ++j) std::memcpy(&acc[p][j], c + p * ldc + j * L, sizeof(V));
  }
  for (int s = 0; s < count; ++s) {
    const A* rows[kTileP];
    for (int p = 0; p < kTileP; ++p) rows[p] = segments[s].rows[p];
    const A* b = segments[s].b;
    for (int64_t k = 0; k < segments[s].k; ++k, b += segments[s].ldb) {
      V bv[kTileV];
      for (int j = 0; j < kTileV; ++j) std::memcpy(&bv[j], b + j * L, sizeof(V));
      for (int p = 0; p < kTileP; ++p) {
        const A x = rows[p][k];
        for (int j = 0; j < kTileV; ++j) acc[p][j] += x * bv[j];
      }
    }
  }
  for (int p = 0; p < kTileP; ++p) {
    for (int j = 0; j < kTileV; ++j) std::memcpy(c + p * ldc + j * L, &acc[p][j], sizeof(V));
  }
}

#if defined(__AVX512BF16__)
// bf16 operands, fp32 accumulators: b is [k / 2][ldb][2] (pairs along k, the last one padded with 0);
// each vdpbf16ps adds the products of a pair of a row's values with a pair of panel rows.
inline void tile_gemm(const Segment<BFloat16>* segments, int count, float* c, int64_t ldc) {
  static_assert(kLanes<float> == 16);
  __m512 acc[kTileP][kTileV];
  for (int p = 0; p < kTileP; ++p) {
    for (int j = 0; j < kTileV; ++j) acc[p][j] = _mm512_loadu_ps(c + p * ldc + j * 16);
  }
  for (int s = 0; s < count; ++s) {
    const uint16_t* rows[kTileP];
    for (int p = 0; p < kTileP; ++p) rows[p] = reinterpret_cast<const uint16_t*>(segments[s].rows[p]);
    const uint16_t* b = reinterpret_cast<const uint16_t*>(segments[s].b);
    const int64_t k = segments[s].k, ldb = segments[s].ldb;
    for (int64_t i = 0; i < k; i += 2, b += 2 * ldb) {
      __m512bh bv[kTileV];
      for (int j = 0; j < kTileV; ++j) bv[j] = (__m512bh)_mm512_loadu_si512(b + 32 * j);
      const bool whole = i + 1 < k;  // else the last value pairs with 0
      for (int p = 0; p < kTileP; ++p) {
        uint32_t pair = rows[p][i];
        if (whole) std::memcpy(&pair, rows[p] + i, sizeof pair);
        const __m512bh x = (__m512bh)_mm512_set1_epi32(static_cast<int>(pair));
        for (int j = 0; j < kTileV; ++j) acc[p][j] = _mm512_dpbf16_ps(acc[p][j], x, bv[j]);
      }
    }
  }
  for (int p = 0; p < kTileP; ++p) {
    for (int j = 0; j < kTileV; ++j) _mm512_storeu_ps(c + p * ldc + j * 16, acc[p][j]);
  }
}
#endif

// A path's weights ((k, k, cin, C) memory, storage type T) as the panels of its segments, one per tap:
// [cin][ldb] of operand_t<T> (bf16 operands: [cin / 2][ldb][2] pairs), ldb = C rounded up to kTileC
// with zero columns. The weights themselves when they already are so, else a copy.
template <typename T>
class WeightPanel {
 public:
  using R = operand_t<T>;
  static constexpr bool kPairs = std::is_same_v<R, BFloat16>;

  WeightPanel(const void* weight, int taps, int32_t cin, int32_t c)
      : rows_(kPairs ? (cin + 1) / 2 * 2 : cin), ldb_(round_up(c, kTileC<acc_t<T>>)) {
    const T* w = static_cast<const T*>(weight);
    if (!kPairs && std::is_same_v<T, R> && ldb_ == c) {
      data_ = reinterpret_cast<const R*>(w);
      return;
    }
    copy_.assign(int64_t{taps} * rows_ * ldb_, to_operand<R>(T{}));
    for (int t = 0; t < taps; ++t) {
      const T* tap = w + int64_t{t} * cin * c;
      R* dst = copy_.data() + int64_t{t} * rows_ * ldb_;
      if constexpr (kPairs) {  // rows ci and ci + 1 interleaved: one 32-bit pair per channel
        for (int32_t ci = 0; ci < cin; ci += 2, dst += 2 * ldb_) {
          const T* even = tap + int64_t{ci} * c;
          const T* odd = ci + 1 < cin ? even + c : nullptr;  // an odd cin pairs its last row with 0
          for (int32_t j = 0; j < c; ++j) {
            const uint32_t pair = even[j].bits | (odd ? static_cast<uint32_t>(odd[j].bits) << 16 : 0u);
            std::memcpy(dst + 2 * j, &pair, sizeof pair);
          }
        }
      } else {
        for (int32_t ci = 0; ci < cin; ++ci) {
          const T* src = tap + int64_t{ci} * c;
          for (int32_t j = 0; j < c; ++j) dst[ci * ldb_ + j] = to_operand<R>(src[j]);
        }
      }
    }
    data_ = copy_.data();
  }

  const R* segment(int tap) const { return data_ + int64_t{tap} * rows_ * ldb_; }
  // The panel of `segment` at channel j.
  static const R* at_channel(const R* segment, int64_t j) { return segment + (kPairs ? 2 * j : j); }
  int64_t ldb() const { return ldb_; }

 private:
  int64_t rows_, ldb_;
  const R* data_ = nullptr;
  std::vector<R> copy_;
};

}  // namespace hrnet_fast::cpu
