// Storage types of the kernels and their exact conversions to and from fp32. Torch-free, so the same
// code compiles in the CPU kernels, in CUDA device code and in the host emulation of the CUDA kernels.
//
// Half and BFloat16 are 16-bit IEEE binary16 / bfloat16 bit patterns (the layouts of at::Half and
// at::BFloat16). Loads widen exactly to fp32; stores round to nearest even, once.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#include <cuda_fp16.h>
#define HRNET_HD __host__ __device__ __forceinline__
#else
#define HRNET_HD inline
#endif

namespace hrnet_fast {

struct Half {
  uint16_t bits;
};
struct BFloat16 {
  uint16_t bits;
};

enum class DType : int8_t { kFloat32, kFloat64, kFloat16, kBFloat16 };

HRNET_HD float float_from_bits(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

HRNET_HD uint32_t bits_from_float(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}

// Accumulation type: fp32 for every storage type but fp64.
template <typename T>
struct Acc {
  using type = float;
};
template <>
struct Acc<double> {
  using type = double;
};
template <typename T>
using acc_t = typename Acc<T>::type;

HRNET_HD float to_acc(float v) { return v; }
HRNET_HD double to_acc(double v) { return v; }
HRNET_HD float to_acc(BFloat16 v) { return float_from_bits(static_cast<uint32_t>(v.bits) << 16); }

HRNET_HD float to_acc(Half v) {
#if defined(__CUDA_ARCH__)
  return __half2float(__ushort_as_half(v.bits));
#else
  const uint32_t sign = static_cast<uint32_t>(v.bits & 0x8000u) << 16;
  const uint32_t exponent = (v.bits >> 10) & 0x1fu;
  const uint32_t mantissa = v.bits & 0x3ffu;
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24, exact in fp32
    return float_from_bits(sign | bits_from_float(static_cast<float>(mantissa) * 5.9604644775390625e-8f));
  }
  if (exponent == 31) return float_from_bits(sign | 0x7f800000u | (mantissa << 13));  // inf, nan
  return float_from_bits(sign | ((exponent + 112u) << 23) | (mantissa << 13));
#endif
}

template <typename T>
HRNET_HD T from_acc(acc_t<T> v);

template <>
HRNET_HD float from_acc<float>(float v) {
  return v;
}
template <>
HRNET_HD double from_acc<double>(double v) {
  return v;
}

template <>
HRNET_HD BFloat16 from_acc<BFloat16>(float v) {
  const uint32_t u = bits_from_float(v);
  if ((u & 0x7fffffffu) > 0x7f800000u) return BFloat16{static_cast<uint16_t>((u >> 16) | 0x40u)};  // nan
  return BFloat16{static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16)};
}

template <>
HRNET_HD Half from_acc<Half>(float v) {
#if defined(__CUDA_ARCH__)
  return Half{__half_as_ushort(__float2half_rn(v))};
#else
  uint32_t u = bits_from_float(v);
  const uint32_t sign = u & 0x80000000u;
  u ^= sign;
  uint32_t h;
  if (u >= 0x47800000u) {  // |v| >= 65536: inf (or nan)
    h = u > 0x7f800000u ? 0x7e00u : 0x7c00u;
  } else if (u < 0x38800000u) {  // |v| < 2^-14: subnormal; the fp32 add rounds to nearest even
    h = bits_from_float(float_from_bits(u) + 0.5f) - 0x3f000000u;
  } else {  // normal: rebias the exponent, round the 13 dropped bits to nearest even
    h = (u + 0xc8000fffu + ((u >> 13) & 1u)) >> 13;
  }
  return Half{static_cast<uint16_t>(h | (sign >> 16))};
#endif
}

// Calls f(T{}) with T the storage type of dtype (host code).
template <typename F>
void dispatch_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kFloat32:
      return f(float{});
    case DType::kFloat64:
      return f(double{});
    case DType::kFloat16:
      return f(Half{});
    case DType::kBFloat16:
      return f(BFloat16{});
  }
}

}  // namespace hrnet_fast
