// 8 x 8 block transposes for the CPU kernels' layout changes between NCHW planes (pixels contiguous
// per channel) and channels-last pixel rows (channels contiguous per pixel):
//
//   dst[c * ldd + r] = src[r * lds + c]   for r, c < kTransposeBlock
//
// fp32 with AVX: eight row loads, three rounds of in-register shuffles, eight row stores (instead of
// 64 scalar loads and stores, one cache line apart on one side). Other types: the plain loop.
#pragma once

#include <cstdint>

#if defined(__AVX__)
#include <immintrin.h>
#endif

namespace hrnet_fast::cpu {

constexpr int kTransposeBlock = 8;

template <typename A>
inline void transpose_block(const A* src, int64_t lds, A* dst, int64_t ldd) {
  for (int r = 0; r < kTransposeBlock; ++r) {
    for (int c = 0; c < kTransposeBlock; ++c) dst[c * ldd + r] = src[r * lds + c];
  }
}

#if defined(__AVX__)
template <>
inline void transpose_block<float>(const float* src, int64_t lds, float* dst, int64_t ldd) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * lds);
  for (int i = 0; i < 8; i += 2) {  // rows a, b -> a0 b0 a1 b1 | a4 b4 a5 b5 and a2 b2 a3 b3 | a6 b6 a7 b7
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {  // rows a-d -> r[i + k] = column k | column k + 4 of those rows
    r[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int k = 0; k < 4; ++k) {  // rows a-d from r[k], rows e-h from r[k + 4]
    _mm256_storeu_ps(dst + k * ldd, _mm256_permute2f128_ps(r[k], r[k + 4], 0x20));
    _mm256_storeu_ps(dst + (k + 4) * ldd, _mm256_permute2f128_ps(r[k], r[k + 4], 0x31));
  }
}
#endif

}  // namespace hrnet_fast::cpu
