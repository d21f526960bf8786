// Register-tiled GEMM micro-kernels of the CPU kernels, and the weight panels they read:
//
//   c[p][j] (kTileP pixels x kTileC channels, fp32 or fp64) += sum over segments s, k < s.k of
//                                                               s.rows[p][k] * panel_s[k][j]
//
// A segment is one tap of one path: its rows are kTileP pointers to the input channels of a pixel
// (in the map itself or staged), its panel the weights of that tap: rows of ldb values, or column
// blocks of kPanelBlock channels (one 64-byte line per row) stored one after another (winograd_conv's
// panel), which a tile streams contiguously instead of one line per ldb. The operands have the storage
// type where a micro-kernel multiplies it directly (fp32, fp64, and bf16 on CPUs with AVX512-BF16,
// whose dot products take pairs of bf16 along k), else fp32 (fp16, or bf16 without AVX512-BF16,
// widened as they are staged). fp32/fp64 tiles use GCC/Clang vector extensions as wide as the target's
// registers (the build passes -march=native): kTileP x kTileV accumulators that fit its register
// file beside kTileV panel vectors and one broadcast. A vector wider than the target's is split into
// pieces that no longer fit and spill on every multiply (about 50x slower on AVX2).
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

#if defined(HRNET_FAST_VECTOR_BYTES)  // tests: the tiles of another target, on this one
constexpr int kVectorBytes = HRNET_FAST_VECTOR_BYTES;
constexpr int kTileP = kVectorBytes == 64 ? 12 : 6;
#elif defined(__AVX512F__)
constexpr int kVectorBytes = 64;  // 32 zmm registers: 12 x 2 accumulators
constexpr int kTileP = 12;        // pixels per register tile
#elif defined(__AVX__)
constexpr int kVectorBytes = 32;  // 16 ymm registers: 6 x 2 accumulators
constexpr int kTileP = 6;
#else
constexpr int kVectorBytes = 16;  // 16 xmm registers (x86-64 baseline): 6 x 2 accumulators
constexpr int kTileP = 6;
#endif
constexpr int kTileV = 2;  // vectors of output channels per register tile

// Vectors of the accumulation type, the target's width (an alias template would drop the attribute).
template <typename A>
struct Vector;
template <>
struct Vector<float> {
  typedef float type __attribute__((vector_size(kVectorBytes)));
};
template <>
struct Vector<double> {
  typedef double type __attribute__((vector_size(kVectorBytes)));
};
template <typename A>
using Vec = typename Vector<A>::type;
template <typename A>
constexpr int kLanes = static_cast<int>(kVectorBytes / sizeof(A));

// One vector at any element-aligned address, one instruction each way: through a typedef whose
// alignment is the element's (a typedef may lower it), which may alias the storage. (memcpy into
// arrays of vectors compiled, in loops, into 16-byte copies through the stack.)
template <typename A>
struct UnalignedVector;
template <>
struct UnalignedVector<float> {
  typedef float type __attribute__((vector_size(kVectorBytes), aligned(alignof(float)), may_alias));
};
template <>
struct UnalignedVector<double> {
  typedef double type __attribute__((vector_size(kVectorBytes), aligned(alignof(double)), may_alias));
};

template <typename A>
Vec<A> load_vec(const A* src) {
  return *reinterpret_cast<const typename UnalignedVector<A>::type*>(src);
}

template <typename A>
void store_vec(A* dst, Vec<A> v) {
  *reinterpret_cast<typename UnalignedVector<A>::type*>(dst) = v;
}

// `buffer` grown to hold at least n values from a cache-line boundary, and that boundary: a
// std::vector's data is only 16-byte aligned, so every other 32-byte vector in it straddles two cache
// lines, which splits its loads and stores (Winograd on AVX2: 0.72-0.90x the speed of aligned buffers).
template <typename A>
A* cache_aligned(std::vector<A>& buffer, int64_t n) {
  constexpr int64_t kLine = 64, kSlack = kLine / static_cast<int64_t>(sizeof(A));
  if (static_cast<int64_t>(buffer.size()) < n + kSlack) buffer.resize(n + kSlack);
  const auto address = reinterpret_cast<uintptr_t>(buffer.data());
  return reinterpret_cast<A*>((address + kLine - 1) & ~static_cast<uintptr_t>(kLine - 1));
}

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

// Channels per column block of a blocked panel: one 64-byte cache line of operands per row.
template <typename R>
constexpr int kPanelBlock = static_cast<int>(64 / sizeof(R));

template <typename R>
struct Segment {
  int64_t k;
  const R* const* rows;  // kTileP of them
  const R* b;            // the panel, at the tile's first channel (a multiple of kTileC)
  int64_t ldb;           // from one panel row to the next (values)
  // From one column block of kPanelBlock channels to the next (values): kPanelBlock for rows of ldb
  // values side by side; k * ldb and more for a panel stored block after block.
  int64_t block_stride = kPanelBlock<R>;
};

// fp32 / fp64 operands. kAccumulate false: c = the sum (c is not read).
template <bool kAccumulate = true, typename A>
void tile_gemm(const Segment<A>* segments, int count, A* c, int64_t ldc) {
  using V = Vec<A>;
  constexpr int L = kLanes<A>;
  static_assert(sizeof(V) == L * sizeof(A));
  V acc[kTileP][kTileV] = {};
  for (int p = 0; p < kTileP && kAccumulate; ++p) {
    for (int j = 0; j < kTileV; ++j) acc[p][j] = load_vec(c + p * ldc + j * L);
  }
  constexpr int B = kPanelBlock<A>;
  static_assert(L <= B && B % L == 0);  // a vector lies in one block
  for (int s = 0; s < count; ++s) {
    const A* rows[kTileP];
    for (int p = 0; p < kTileP; ++p) rows[p] = segments[s].rows[p];
    const A* b = segments[s].b;
    int64_t offsets[kTileV];  // of the tile's vectors from its first channel in a panel row
    for (int j = 0; j < kTileV; ++j) offsets[j] = j * L / B * segments[s].block_stride + j * L % B;
    for (int64_t k = 0; k < segments[s].k; ++k, b += segments[s].ldb) {
      V bv[kTileV];
      for (int j = 0; j < kTileV; ++j) bv[j] = load_vec(b + offsets[j]);
      for (int p = 0; p < kTileP; ++p) {
        const A x = rows[p][k];
        for (int j = 0; j < kTileV; ++j) acc[p][j] += x * bv[j];
      }
    }
  }
  for (int p = 0; p < kTileP; ++p) {
    for (int j = 0; j < kTileV; ++j) store_vec(c + p * ldc + j * L, acc[p][j]);
  }
}

#if defined(__AVX512BF16__)
// bf16 operands, fp32 accumulators: b is [k][ldb] as for fp32 (a tile's 32 channels are one panel
// block, so block_stride is not read). vdpbf16ps adds the products of a pair of a row's values with a
// pair of panel values along k, so each step interleaves panel rows k and k + 1 (unpacklo/hi_epi16,
// within 128-bit lanes): acc[p][0] then holds channels 0-3, 8-11, 16-19, 24-27 of the tile and
// acc[p][1] channels 4-7, 12-15, 20-23, 28-31, reordered once per tile on load and store. An odd k
// pairs its last row with 0. kAccumulate false: c = the sum (c is not read).
template <bool kAccumulate = true>
void tile_gemm(const Segment<BFloat16>* segments, int count, float* c, int64_t ldc) {
  static_assert(kLanes<float> == 16 && kTileV == 2);
  const __m512i to_interleaved[2] = {_mm512_setr_epi32(0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27),
                                     _mm512_setr_epi32(4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31)};
  const __m512i to_natural[2] = {_mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23),
                                 _mm512_setr_epi32(8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31)};
  __m512 acc[kTileP][kTileV];
  for (int p = 0; p < kTileP; ++p) {
    if (!kAccumulate) {
      for (int j = 0; j < kTileV; ++j) acc[p][j] = _mm512_setzero_ps();
      continue;
    }
    const __m512 lo = _mm512_loadu_ps(c + p * ldc), hi = _mm512_loadu_ps(c + p * ldc + 16);
    for (int j = 0; j < kTileV; ++j) acc[p][j] = _mm512_permutex2var_ps(lo, to_interleaved[j], hi);
  }
  for (int s = 0; s < count; ++s) {
    const uint16_t* rows[kTileP];
    for (int p = 0; p < kTileP; ++p) rows[p] = reinterpret_cast<const uint16_t*>(segments[s].rows[p]);
    const uint16_t* b = reinterpret_cast<const uint16_t*>(segments[s].b);
    const int64_t k = segments[s].k, ldb = segments[s].ldb;
    for (int64_t i = 0; i < k; i += 2, b += 2 * ldb) {
      const bool whole = i + 1 < k;  // else the last value pairs with 0
      const __m512i even = _mm512_loadu_si512(b);
      const __m512i odd = whole ? _mm512_loadu_si512(b + ldb) : _mm512_setzero_si512();
      const __m512bh bv[kTileV] = {(__m512bh)_mm512_unpacklo_epi16(even, odd),
                                   (__m512bh)_mm512_unpackhi_epi16(even, odd)};
      for (int p = 0; p < kTileP; ++p) {
        uint32_t pair = rows[p][i];
        if (whole) std::memcpy(&pair, rows[p] + i, sizeof pair);
        const __m512bh x = (__m512bh)_mm512_set1_epi32(static_cast<int>(pair));
        for (int j = 0; j < kTileV; ++j) acc[p][j] = _mm512_dpbf16_ps(acc[p][j], x, bv[j]);
      }
    }
  }
  for (int p = 0; p < kTileP; ++p) {
    for (int j = 0; j < kTileV; ++j) {
      _mm512_storeu_ps(c + p * ldc + j * 16, _mm512_permutex2var_ps(acc[p][0], to_natural[j], acc[p][1]));
    }
  }
}
#endif

// A path's weights ((k, k, cin, C) memory, storage type T) as the panels of its segments, one per tap:
// [cin][ldb] of operand_t<T>, ldb = C rounded up to kTileC with zero columns. The weights themselves
// when they already are so, else a copy.
template <typename T>
class WeightPanel {
 public:
  using R = operand_t<T>;

  WeightPanel(const void* weight, int taps, int32_t cin, int32_t c) : rows_(cin), ldb_(round_up(c, kTileC<acc_t<T>>)) {
    const T* w = static_cast<const T*>(weight);
    if (std::is_same_v<T, R> && ldb_ == c) {
      data_ = reinterpret_cast<const R*>(w);
      return;
    }
    copy_.assign(int64_t{taps} * rows_ * ldb_, to_operand<R>(T{}));
    for (int64_t row = 0; row < int64_t{taps} * cin; ++row) {
      for (int32_t j = 0; j < c; ++j) copy_[row * ldb_ + j] = to_operand<R>(w[row * c + j]);
    }
    data_ = copy_.data();
  }

  const R* segment(int tap) const { return data_ + int64_t{tap} * rows_ * ldb_; }
  // The panel of `segment` at channel j.
  static const R* at_channel(const R* segment, int64_t j) { return segment + j; }
  int64_t ldb() const { return ldb_; }

 private:
  int64_t rows_, ldb_;
  const R* data_ = nullptr;
  std::vector<R> copy_;
};

}  // namespace hrnet_fast::cpu
