// The execution model of the tiled CUDA kernels, written so the same kernel body runs on the GPU and,
// emulated, on the host (tests without a GPU). Torch-free.
//
// A body is called once per CTA with a Cta object and works in phases:
//   cta.threads(f)   f(tid, state) for each thread of the CTA (its registers are `state`)
//   cta.sync()       __syncthreads()
//   cta.warps(f)     f(warp) for each warp; warp.each(g) calls g(lane, state) for each of its lanes,
//                    and the warp-collective operations below take the warp
//   cta.smem()       the CTA's shared memory
// On the GPU every thread runs each phase for itself (DeviceCta: threads(f) is f(threadIdx.x, its
// registers)). On the host HostCta runs each phase for all threads in turn, with one State per thread,
// and emulates the collectives (ldmatrix, mma.sync) from the lanes' registers exactly as the PTX ISA
// distributes them, so the emulation checks the fragment layouts and addressing of the real code.
// Code between two syncs may not depend on another thread's writes of the same phase (as on a GPU).
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <type_traits>

#include "../scalar_types.h"

namespace hrnet_fast::cuda {

constexpr uint32_t kWarpSize = 32;

// Pointers into one lane's registers for an mma: c (4 fp32) += a (4 x 2 halves) * b (2 x 2 halves).
struct MmaOperands {
  float* c;
  const uint32_t* a;
  const uint32_t* b;
};

#if defined(__CUDACC__)

template <class State>
struct DeviceWarp {
  State& st;
  uint32_t warp, lane;

  HRNET_HD uint32_t id() const { return warp; }
  template <class F>
  HRNET_HD void each(F&& f) {
    f(lane, st);
  }
};

template <class State>
struct DeviceCta {
  unsigned char* shared;
  uint32_t tid, bx, by;
  State st;

  HRNET_HD uint32_t block_x() const { return bx; }
  HRNET_HD uint32_t block_y() const { return by; }
  HRNET_HD unsigned char* smem() const { return shared; }
  template <class F>
  HRNET_HD void threads(F&& f) {
    f(tid, st);
  }
  template <class F>
  HRNET_HD void warps(F&& f) {
    DeviceWarp<State> w{st, tid / kWarpSize, tid % kWarpSize};
    f(w);
  }
  HRNET_HD void sync() const {
#if defined(__CUDA_ARCH__)
    __syncthreads();
#endif
  }
};

// ldmatrix .x4 (.trans): lane l gives address(l), the first of 8 16-bit values of row l % 8 of matrix
// l / 8; dest(state) receives 4 words, word j from matrix j (see HostWarp's version for the layout).
template <bool kTrans, class State, class Address, class Dest>
HRNET_HD void ldmatrix_x4(DeviceWarp<State>& w, Address address, Dest dest) {
#if defined(__CUDA_ARCH__)
  uint32_t* r = dest(w.st);
  const uint32_t at = static_cast<uint32_t>(__cvta_generic_to_shared(address(w.lane)));
  if constexpr (kTrans) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(at)
                 : "memory");
  } else {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(at)
                 : "memory");
  }
#endif
}

// mma.sync m16n8k16, fp32 accumulation, T = Half or BFloat16 (see HostWarp's version for the layout).
template <typename T, class State, class Operands>
HRNET_HD void mma_16816(DeviceWarp<State>& w, Operands operands) {
#if defined(__CUDA_ARCH__)
  const MmaOperands o = operands(w.st);
  if constexpr (std::is_same_v<T, BFloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};"
        : "+f"(o.c[0]), "+f"(o.c[1]), "+f"(o.c[2]), "+f"(o.c[3])
        : "r"(o.a[0]), "r"(o.a[1]), "r"(o.a[2]), "r"(o.a[3]), "r"(o.b[0]), "r"(o.b[1]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};"
        : "+f"(o.c[0]), "+f"(o.c[1]), "+f"(o.c[2]), "+f"(o.c[3])
        : "r"(o.a[0]), "r"(o.a[1]), "r"(o.a[2]), "r"(o.a[3]), "r"(o.b[0]), "r"(o.b[1]));
  }
#endif
}

#endif  // __CUDACC__

// ---- host emulation ----------------------------------------------------------------------------

template <class State>
struct HostWarp {
  State* lanes;  // kWarpSize of them
  uint32_t warp;

  uint32_t id() const { return warp; }
  template <class F>
  void each(F&& f) {
    for (uint32_t lane = 0; lane < kWarpSize; ++lane) f(lane, lanes[lane]);
  }
};

template <class State, uint32_t kThreads, uint32_t kSmemBytes>
class HostCta {
 public:
  HostCta() : states_(new State[kThreads]), shared_(new SharedBytes) {}

  void start(uint32_t bx, uint32_t by) {
    bx_ = bx;
    by_ = by;
  }
  uint32_t block_x() const { return bx_; }
  uint32_t block_y() const { return by_; }
  unsigned char* smem() const { return shared_->bytes; }
  template <class F>
  void threads(F&& f) {
    for (uint32_t t = 0; t < kThreads; ++t) f(t, states_[t]);
  }
  template <class F>
  void warps(F&& f) {
    for (uint32_t w = 0; w < kThreads / kWarpSize; ++w) {
      HostWarp<State> warp{states_.get() + w * kWarpSize, w};
      f(warp);
    }
  }
  void sync() const {}

 private:
  struct SharedBytes {
    alignas(16) unsigned char bytes[kSmemBytes];
  };
  std::unique_ptr<State[]> states_;
  std::unique_ptr<SharedBytes> shared_;
  uint32_t bx_ = 0, by_ = 0;
};

inline uint16_t u16_at(const void* p) {
  uint16_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline uint32_t pack_u16(uint16_t low, uint16_t high) { return uint32_t{low} | (uint32_t{high} << 16); }

// ldmatrix .x4: 4 matrices of 8x8 16-bit values; row r of matrix j starts at address(8 * j + r). Lane l
// receives in word j the values (l / 4, 2 * (l % 4)) and (l / 4, 2 * (l % 4) + 1) of matrix j, or with
// .trans those of the transposed matrix: (2 * (l % 4), l / 4) and (2 * (l % 4) + 1, l / 4).
template <bool kTrans, class State, class Address, class Dest>
void ldmatrix_x4(HostWarp<State>& w, Address address, Dest dest) {
  uint32_t words[kWarpSize][4];
  for (uint32_t lane = 0; lane < kWarpSize; ++lane) {
    const uint32_t row = lane / 4, col = 2 * (lane % 4);
    for (uint32_t j = 0; j < 4; ++j) {
      if (kTrans) {
        words[lane][j] = pack_u16(u16_at(address(8 * j + col) + row), u16_at(address(8 * j + col + 1) + row));
      } else {
        const auto* r = address(8 * j + row);
        words[lane][j] = pack_u16(u16_at(r + col), u16_at(r + col + 1));
      }
    }
  }
  for (uint32_t lane = 0; lane < kWarpSize; ++lane) std::memcpy(dest(w.lanes[lane]), words[lane], 16);
}

template <typename T>
float half_bits_to_float(uint16_t bits) {
  return to_acc(T{bits});
}

// mma.sync m16n8k16 (row-major A 16x16, column-major B 16x8, C/D 16x8 fp32). With g = lane / 4 and
// t = lane % 4, a lane holds A words {(g, 2t), (g + 8, 2t), (g, 2t + 8), (g + 8, 2t + 8)} (each word
// the element and its right neighbour), B words {(2t, g), (2t + 8, g)} (each the element and the one
// below), and C/D {(g, 2t), (g, 2t + 1), (g + 8, 2t), (g + 8, 2t + 1)}. The products are exact in fp32;
// they are summed in k order (the hardware's order and rounding within the sum may differ).
template <typename T, class State, class Operands>
void mma_16816(HostWarp<State>& w, Operands operands) {
  float a[16][16], b[16][8], c[16][8];
  for (uint32_t lane = 0; lane < kWarpSize; ++lane) {
    const MmaOperands o = operands(w.lanes[lane]);
    const uint32_t g = lane / 4, t = lane % 4;
    for (uint32_t r = 0; r < 4; ++r) {
      const uint32_t row = g + 8 * (r % 2), col = 2 * t + 8 * (r / 2);
      a[row][col] = half_bits_to_float<T>(static_cast<uint16_t>(o.a[r] & 0xffffu));
      a[row][col + 1] = half_bits_to_float<T>(static_cast<uint16_t>(o.a[r] >> 16));
    }
    for (uint32_t r = 0; r < 2; ++r) {
      b[2 * t + 8 * r][g] = half_bits_to_float<T>(static_cast<uint16_t>(o.b[r] & 0xffffu));
      b[2 * t + 8 * r + 1][g] = half_bits_to_float<T>(static_cast<uint16_t>(o.b[r] >> 16));
    }
    for (uint32_t r = 0; r < 4; ++r) c[g + 8 * (r / 2)][2 * t + r % 2] = o.c[r];
  }
  for (int i = 0; i < 16; ++i) {
    for (int j = 0; j < 8; ++j) {
      float sum = c[i][j];
      for (int k = 0; k < 16; ++k) sum += a[i][k] * b[k][j];
      c[i][j] = sum;
    }
  }
  for (uint32_t lane = 0; lane < kWarpSize; ++lane) {
    const MmaOperands o = operands(w.lanes[lane]);
    const uint32_t g = lane / 4, t = lane % 4;
    for (uint32_t r = 0; r < 4; ++r) o.c[r] = c[g + 8 * (r / 2)][2 * t + r % 2];
  }
}

}  // namespace hrnet_fast::cuda
