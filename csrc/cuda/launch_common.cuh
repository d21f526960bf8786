// Pieces shared by the CUDA kernels' launchers and bodies: launch limits and error codes, 16-byte
// vector loads and stores, batch splitting, dtype dispatch. Torch-free (host and device).
#pragma once

#include <cstdint>
#include <cstring>

#include "../resample_problem.h"
#include "../scalar_types.h"

namespace hrnet_fast::cuda {

// Elements per launch, at most; the emulation tests lower it to exercise the batch split.
#ifndef HRNET_FAST_MAX_LAUNCH_ELEMENTS
#define HRNET_FAST_MAX_LAUNCH_ELEMENTS ((int64_t{1} << 31) - 1)
#endif
constexpr int64_t kMaxLaunchElements = HRNET_FAST_MAX_LAUNCH_ELEMENTS;

// Launcher results besides the executor's own error codes (cudaError_t values are >= 0).
constexpr int kSampleTooLarge = -1;    // one sample has more elements than a launch takes
constexpr int kUnsupportedDType = -2;  // float64: not built for the GPU
constexpr int kTooManyChannels = -3;   // more channel tiles than a grid's y dimension takes
constexpr int64_t kMaxGridY = 65535;

// What a launcher error code means; nullptr for the executor's codes.
inline const char* launcher_error_message(int code) {
  switch (code) {
    case kSampleTooLarge:
      return "one sample has 2^31 elements or more; the CUDA kernels index a sample with 32 bits";
    case kUnsupportedDType:
      return "float64 is not built for the GPU";
    case kTooManyChannels:
      return "too many channels for one launch of the CUDA kernel (65535 channel tiles)";
    default:
      return nullptr;
  }
}

template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

template <typename T, int V>
HRNET_HD Pack<T, V> load(const T* p) {
#if defined(__CUDA_ARCH__)
  if constexpr (sizeof(Pack<T, V>) == 16) {
    const uint4 raw = *reinterpret_cast<const uint4*>(p);
    Pack<T, V> r;
    memcpy(&r, &raw, 16);
    return r;
  }
#endif
  return *reinterpret_cast<const Pack<T, V>*>(p);
}

template <typename T, int V>
HRNET_HD void store(T* p, const Pack<T, V>& value) {
#if defined(__CUDA_ARCH__)
  if constexpr (sizeof(Pack<T, V>) == 16) {
    uint4 raw;
    memcpy(&raw, &value, 16);
    *reinterpret_cast<uint4*>(p) = raw;
    return;
  }
#endif
  *reinterpret_cast<Pack<T, V>*>(p) = value;
}

template <typename T>
constexpr int kVector = static_cast<int>(16 / sizeof(T));  // values per 16-byte vector

inline bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

inline MapRef advance(MapRef m, int64_t samples, int64_t elem_size) {
  m.data = static_cast<const char*>(m.data) + samples * m.sample_stride * elem_size;
  return m;
}

// Calls launch(n0, count) for consecutive batch chunks of at most 2^31 - 1 elements of
// `per_sample` each (0 < per_sample <= 2^31 - 1); stops at the first error.
template <typename F>
int for_each_chunk(int32_t n, int64_t per_sample, F launch) {
  const int64_t step = kMaxLaunchElements / per_sample;
  for (int64_t n0 = 0; n0 < n; n0 += step) {
    const int err = launch(n0, static_cast<int32_t>(n0 + step < n ? step : n - n0));
    if (err != 0) return err;
  }
  return 0;
}

// Calls f(T{}) for the storage type (fp32, fp16, bf16; fp64 is not built for the GPU).
template <typename F>
int dispatch_gpu_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kFloat32:
      return f(float{});
    case DType::kFloat16:
      return f(Half{});
    case DType::kBFloat16:
      return f(BFloat16{});
    case DType::kFloat64:
      break;
  }
  return kUnsupportedDType;
}

}  // namespace hrnet_fast::cuda
