// fusion_branch as one CUDA kernel launch per output branch (see fusion_branch_problem.h for the
// math), torch-free: `nvcc -arch=sm_90 -c` compiles it without torch headers, and a plain C++
// compiler compiles it for the host, where the tests run it through the emulation of cta.cuh.
//
// A CTA computes a tile of kBM output pixels x kBN output channels as one GEMM over all paths:
//   out[p, co] = act( base[p, co] + bias[co] + sum_k A[p, k] * B[k, co] ),
// the K dimension walked in steps of kBK input channels of one tap of one path:
//   - a stride-2 3x3 conv (implicit GEMM): A[p, (tap, ci)] = down[n, ci, 2y - 1 + ty, 2x - 1 + tx]
//     gathered straight from the input map (zero padding and tails by masks), B = the weights;
//   - a 1x1 projection + interpolation, by linearity interp-then-project: A[p, ci] = the low map
//     interpolated at (y, x) (nearest: one source pixel; bilinear: four, blended in fp32 in
//     PyTorch's order and rounded to the storage type), B = the projection weights;
// as the Triton kernel does (kernels/fusion_branch.py). Each step's A and B tiles are gathered into
// registers while the tensor cores work on the previous step's tiles in shared memory (double
// buffering, one __syncthreads per step). fp16/bf16 tiles run on tensor cores (ldmatrix +
// mma.sync.m16n8k16, fp32 accumulation), 4 warps each owning a kBM/kWarpsM x kBN/kWarpsN block;
// fp32 tiles run on the FMA units in exact fp32 (no TF32), each thread owning a kTM x kTN block.
// The epilogue stages the fp32 tile through shared memory, adds bias and base, applies the ReLU,
// rounds once and stores coalesced along the layout's contiguous axis (channels for channels_last,
// pixels for NCHW).
//
// Tiles are chosen per launch from the shape (choose_tiles; no autotuning): 128 or 64 pixels x 32,
// 64 or 128 channels, aiming at two waves of CTAs on an H100/H200. A launch covers at most 2^31 - 1
// pixels (the batch is split beyond). Static shared memory (< 48 KB), no allocation, no host sync:
// safe to capture in CUDA graphs.
#pragma once

#include <cstdint>
#include <type_traits>

#include "../fusion_branch_problem.h"
#include "../resample_index.h"
#include "cta.cuh"
#include "launch_common.cuh"

namespace hrnet_fast::cuda::branch {

constexpr uint32_t kThreads = 128;
// CTAs that fill the GPU twice (132-SM H100/H200); the host emulation defines a few, so that its small
// test problems run every tile of choose_tiles.
#ifndef HRNET_FAST_TARGET_CTAS
#define HRNET_FAST_TARGET_CTAS 264
#endif
constexpr int64_t kTargetCtas = HRNET_FAST_TARGET_CTAS;

// One step of the K loop: kBK input channels from ci0 of one tap of one path.
struct Step {
  bool low;
  int32_t path, tap, ci0;
};

HRNET_HD int32_t chunks(int32_t channels, int32_t bk) { return (channels + bk - 1) / bk; }

template <typename T, bool kChannelsLast, int kBM, int kBN>
struct Body {
  static constexpr bool kMma = !std::is_same_v<T, float>;  // fp16/bf16 on tensor cores
  static constexpr int kBK = kMma ? 32 : 16;
  using S = std::conditional_t<kMma, uint16_t, float>;  // shared-memory element: T's bits, or fp32
  static constexpr int kVec = static_cast<int>(16 / sizeof(T));
  static constexpr int kAcc = kBM * kBN / static_cast<int>(kThreads);  // outputs per thread
  // A gathers. channels_last: a thread loads kVec consecutive channels of kPassesA pixels; NCHW: a
  // thread loads kKPerThread channels of one pixel, consecutive threads taking consecutive pixels.
  static constexpr int kGroupsA = kBK / kVec;
  static constexpr int kRowsPerPass = static_cast<int>(kThreads) / kGroupsA;
  static constexpr int kPassesA = kBM / kRowsPerPass;
  static constexpr int kThreadsPerPixel = static_cast<int>(kThreads) / kBM;
  static constexpr int kKPerThread = kBK / kThreadsPerPixel;
  static constexpr int kPixels = kChannelsLast ? kPassesA : 1;  // pixels a thread gathers for
  static constexpr int kAElems = kBM * kBK / static_cast<int>(kThreads);
  // B loads: kVec consecutive output channels of kPassesB weight rows.
  static constexpr int kGroupsB = kBN / kVec;
  static constexpr int kRowsPerPassB = static_cast<int>(kThreads) / kGroupsB;
  static constexpr int kPassesB = kBK / kRowsPerPassB;
  static constexpr int kBElems = kBK * kBN / static_cast<int>(kThreads);
  // Tensor-core warps (kMma) and FMA thread tiles (fp32).
  static constexpr int kWarpsN = kBN >= 64 ? 2 : 1;
  static constexpr int kWarpsM = static_cast<int>(kThreads / kWarpSize) / kWarpsN;
  static constexpr int kWM = kBM / kWarpsM, kWN = kBN / kWarpsN;
  static constexpr int kMT = kWM / 16, kNT = kWN / 8;
  static constexpr int kTN = kBN >= 64 ? 8 : 4;
  static constexpr int kTM = kAcc / kTN;
  // Shared memory: two A and two B tiles (MMA: [m][k] and [k][n]; fp32: [k][m] and [k][n]), padded
  // against bank conflicts; the epilogue's fp32 tile reuses them; then the CTA's pixel table.
  static constexpr int kLdA = kMma ? kBK + 8 : kBM + 4;
  static constexpr int kLdB = kMma ? kBN + 8 : kBN + 4;
  static constexpr int kATile = kMma ? kBM * kLdA : kBK * kLdA;
  static constexpr int kBTile = kBK * kLdB;
  static constexpr int kLdC = kBN + 1;
  static constexpr int kMainBytes = 2 * (kATile + kBTile) * static_cast<int>(sizeof(S));
  static constexpr int kTileBytes = ((kMainBytes > kBM * kLdC * 4 ? kMainBytes : kBM * kLdC * 4) + 15) / 16 * 16;
  static constexpr uint32_t kSmemBytes = kTileBytes + 2 * kBM * sizeof(int32_t);

  static_assert(kThreads % kGroupsA == 0 && kBM % kRowsPerPass == 0 && kThreads % kBM == 0);
  static_assert(kThreads % kGroupsB == 0 && kBK % kRowsPerPassB == 0);
  static_assert(kWM % 16 == 0 && kWN % 16 == 0 && kMT * kNT * 4 == kAcc);
  static_assert(kBM % kTM == 0 && kBN % kTN == 0 && kTM % 4 == 0 && (kBM / kTM) * (kBN / kTN) == kThreads);
  static_assert(kSmemBytes <= 48 * 1024, "static shared memory is limited to 48 KB");

  struct State {
    int32_t n[kPixels], y[kPixels], x[kPixels];  // n = -1: a pixel past the launch
    S a[kAElems];                                  // the next step's A and B values, staged
    S b[kBElems];
    float acc[kAcc];
    uint32_t fa[kMma ? kMT : 1][4];  // tensor-core fragments of the current k16 slice
    uint32_t fb[kMma ? kNT : 1][2];
  };

  FusionBranchProblem p;  // p.n: the samples of this launch
  Axis<float> ay[kMaxPaths], ax[kMaxPaths];
  bool down_vec[kMaxPaths], low_vec[kMaxPaths];  // channel vectors of a path's map load as 16 bytes
  bool weight_vec[2][kMaxPaths];                 // [low][path]: weight rows load as 16 bytes
  int32_t pixels;                                // n * h * w
  int32_t steps;                                 // of the K loop

  // ---- indexing --------------------------------------------------------------------------------

  HRNET_HD Step step_at(int32_t s) const {
    for (int32_t k = 0; k < p.num_down; ++k) {
      const int32_t per_tap = chunks(p.down[k].cin, kBK);
      if (s < 9 * per_tap) return Step{false, k, s / per_tap, (s % per_tap) * kBK};
      s -= 9 * per_tap;
    }
    int32_t k = 0;
    while (k + 1 < p.num_low && s >= chunks(p.low[k].cin, kBK)) s -= chunks(p.low[k++].cin, kBK);
    return Step{true, k, 0, s * kBK};
  }

  HRNET_HD void locate(int64_t pixel, int32_t& n, int32_t& y, int32_t& x) const {
    if (pixel >= pixels) {
      n = -1, y = 0, x = 0;
      return;
    }
    const int32_t plane = p.h * p.w, q = static_cast<int32_t>(pixel);
    n = q / plane;
    y = (q % plane) / p.w;
    x = q % p.w;
  }

  HRNET_HD static int row_of(uint32_t t, int i) {  // the tile row (pixel) of a thread's i-th gather
    return kChannelsLast ? static_cast<int>(t) / kGroupsA + i * kRowsPerPass : static_cast<int>(t) % kBM;
  }

  // ---- gathers into registers ------------------------------------------------------------------

  // v[e] = m[n, ci + e, y, x] for e < V (channels past `valid` read as 0).
  template <int V>
  HRNET_HD static void read(const MapRef& m, int32_t n, int32_t ci, int32_t y, int32_t x, int32_t valid, bool vec,
                            float* v) {
    const T* at = static_cast<const T*>(m.data) + n * m.sample_stride + int64_t{ci} * m.channel_stride +
                  (int64_t{y} * m.w + x) * m.pixel_stride;
    if (V > 1 && vec && valid >= V) {
      const Pack<T, V> pack = load<T, V>(at);
#pragma unroll
      for (int e = 0; e < V; ++e) v[e] = to_acc(pack.v[e]);
      return;
    }
#pragma unroll
    for (int e = 0; e < V; ++e) v[e] = e < valid ? to_acc(at[e * m.channel_stride]) : 0.f;
  }

  // v[e] = A[pixel (n, y, x), channel ci + e of the step's tap and path], e < V.
  template <int V>
  HRNET_HD void gather(const Step& s, int32_t n, int32_t y, int32_t x, int32_t ci, float* v) const {
    const ConvPath& path = s.low ? p.low[s.path] : p.down[s.path];
    const int32_t valid = path.cin - ci;
    if (n < 0 || valid <= 0) {
#pragma unroll
      for (int e = 0; e < V; ++e) v[e] = 0.f;
      return;
    }
    if (!s.low) {
      const int32_t iy = 2 * y - 1 + s.tap / 3, ix = 2 * x - 1 + s.tap % 3;
      if (iy < 0 || iy >= path.x.h || ix < 0 || ix >= path.x.w) {
#pragma unroll
        for (int e = 0; e < V; ++e) v[e] = 0.f;
        return;
      }
      read<V>(path.x, n, ci, iy, ix, valid, down_vec[s.path], v);
      return;
    }
    const bool vec = low_vec[s.path];
    const Taps<float> ty = taps(ay[s.path], y), tx = taps(ax[s.path], x);
    read<V>(path.x, n, ci, ty.i0, tx.i0, valid, vec, v);
    if (!p.bilinear) return;
    float b[V], c[V], d[V];
    read<V>(path.x, n, ci, ty.i0, tx.i1, valid, vec, b);
    read<V>(path.x, n, ci, ty.i1, tx.i0, valid, vec, c);
    read<V>(path.x, n, ci, ty.i1, tx.i1, valid, vec, d);
#pragma unroll
    for (int e = 0; e < V; ++e) {
      v[e] = ty.w0 * (tx.w0 * v[e] + tx.w1 * b[e]) + ty.w1 * (tx.w0 * c[e] + tx.w1 * d[e]);
    }
  }

  HRNET_HD static S to_smem(float v) {
    if constexpr (kMma) {
      return from_acc<T>(v).bits;
    } else {
      return v;
    }
  }

  // The A and B values of step s that thread t stages (the B tile covers channels co0..co0+kBN).
  HRNET_HD void fetch(const Step& s, int32_t co0, uint32_t t, State& st) const {
    if (kChannelsLast) {
      const int32_t ci = s.ci0 + static_cast<int32_t>(t % kGroupsA) * kVec;
#pragma unroll
      for (int i = 0; i < kPassesA; ++i) {
        float v[kVec];
        gather<kVec>(s, st.n[i], st.y[i], st.x[i], ci, v);
#pragma unroll
        for (int e = 0; e < kVec; ++e) st.a[i * kVec + e] = to_smem(v[e]);
      }
    } else {
      const int32_t kk0 = static_cast<int32_t>(t) / kBM;
#pragma unroll
      for (int j = 0; j < kKPerThread; ++j) {
        float v[1];
        gather<1>(s, st.n[0], st.y[0], st.x[0], s.ci0 + kk0 + j * kThreadsPerPixel, v);
        st.a[j] = to_smem(v[0]);
      }
    }
    const ConvPath& path = s.low ? p.low[s.path] : p.down[s.path];
    const bool vec = weight_vec[s.low][s.path];
    const int32_t co = co0 + static_cast<int32_t>(t % kGroupsB) * kVec, kk0 = static_cast<int32_t>(t) / kGroupsB;
#pragma unroll
    for (int i = 0; i < kPassesB; ++i) {
      const int32_t ci = s.ci0 + kk0 + i * kRowsPerPassB;
      float v[kVec];
      if (ci < path.cin) {  // weight row (tap, ci), a 1 x C map for read()
        const MapRef row{static_cast<const T*>(path.weight) + (int64_t{s.tap} * path.cin + ci) * p.c, 0, 1, 0, 1,
                         p.c};
        read<kVec>(row, 0, co, 0, 0, p.c - co, vec, v);
      } else {
#pragma unroll
        for (int e = 0; e < kVec; ++e) v[e] = 0.f;
      }
#pragma unroll
      for (int e = 0; e < kVec; ++e) st.b[i * kVec + e] = to_smem(v[e]);
    }
  }

  // ---- shared memory ---------------------------------------------------------------------------

  HRNET_HD static S* a_tile(unsigned char* smem, int buf) { return reinterpret_cast<S*>(smem) + buf * kATile; }
  HRNET_HD static S* b_tile(unsigned char* smem, int buf) {
    return reinterpret_cast<S*>(smem) + 2 * kATile + buf * kBTile;
  }

  // Thread t's staged values into buffer `buf`.
  HRNET_HD static void put(unsigned char* smem, int buf, uint32_t t, const State& st) {
    S* as = a_tile(smem, buf);
    if (kChannelsLast) {
      const int kk0 = static_cast<int>(t % kGroupsA) * kVec;
#pragma unroll
      for (int i = 0; i < kPassesA; ++i) {
        const int m = row_of(t, i);
        if constexpr (kMma) {  // kVec 16-bit values: one 16-byte store along k
          Pack<S, kVec> pack;
#pragma unroll
          for (int e = 0; e < kVec; ++e) pack.v[e] = st.a[i * kVec + e];
          store<S, kVec>(as + m * kLdA + kk0, pack);
        } else {
#pragma unroll
          for (int e = 0; e < kVec; ++e) as[(kk0 + e) * kLdA + m] = st.a[i * kVec + e];
        }
      }
    } else {
      const int m = row_of(t, 0), kk0 = static_cast<int>(t) / kBM;
#pragma unroll
      for (int j = 0; j < kKPerThread; ++j) {
        const int kk = kk0 + j * kThreadsPerPixel;
        as[kMma ? m * kLdA + kk : kk * kLdA + m] = st.a[j];
      }
    }
    S* bs = b_tile(smem, buf);
    const int col = static_cast<int>(t % kGroupsB) * kVec, kk0 = static_cast<int>(t) / kGroupsB;
#pragma unroll
    for (int i = 0; i < kPassesB; ++i) {
      Pack<S, kVec> pack;
#pragma unroll
      for (int e = 0; e < kVec; ++e) pack.v[e] = st.b[i * kVec + e];
      store<S, kVec>(bs + (kk0 + i * kRowsPerPassB) * kLdB + col, pack);
    }
  }

  // ---- math on one step's tiles ----------------------------------------------------------------

  template <class Cta>
  HRNET_HD void multiply(Cta& cta, int buf) const {
    unsigned char* smem = cta.smem();
    if constexpr (kMma) {
      const uint16_t* as = a_tile(smem, buf);
      const uint16_t* bs = b_tile(smem, buf);
      cta.warps([&](auto& warp) {
        const int wm0 = static_cast<int>(warp.id()) / kWarpsN * kWM, wn0 = static_cast<int>(warp.id()) % kWarpsN * kWN;
#pragma unroll
        for (int k16 = 0; k16 < kBK; k16 += 16) {
          // Lane l addresses row l % 8 of 8x8 matrix l / 8: A's (rows +0/+8, k +0/+8) quarters in
          // fragment order; B's (k +0/+8, n +0/+8) quarters, transposed to the "col" operand.
#pragma unroll
          for (int i = 0; i < kMT; ++i) {
            ldmatrix_x4<false>(
                warp,
                [&](uint32_t l) {
                  return as + (wm0 + i * 16 + static_cast<int>(l % 8 + (l / 8) % 2 * 8)) * kLdA + k16 +
                         static_cast<int>(l / 16) * 8;
                },
                [&](State& s) { return s.fa[i]; });
          }
#pragma unroll
          for (int j = 0; j < kNT; j += 2) {
            ldmatrix_x4<true>(
                warp,
                [&](uint32_t l) {
                  return bs + (k16 + static_cast<int>(l % 8 + (l / 8) % 2 * 8)) * kLdB + wn0 + j * 8 +
                         static_cast<int>(l / 16) * 8;
                },
                [&](State& s) { return &s.fb[j][0]; });
          }
#pragma unroll
          for (int i = 0; i < kMT; ++i) {
#pragma unroll
            for (int j = 0; j < kNT; ++j) {
              mma_16816<T>(warp, [&](State& s) { return MmaOperands{&s.acc[(i * kNT + j) * 4], s.fa[i], s.fb[j]}; });
            }
          }
        }
      });
    } else {
      const float* as = a_tile(smem, buf);
      const float* bs = b_tile(smem, buf);
      cta.threads([&](uint32_t t, State& st) {
        const int tm = static_cast<int>(t) / (kBN / kTN) * kTM, tn = static_cast<int>(t) % (kBN / kTN) * kTN;
#pragma unroll
        for (int kk = 0; kk < kBK; ++kk) {
          float a[kTM], b[kTN];
#pragma unroll
          for (int i = 0; i < kTM; i += 4) {
            const Pack<float, 4> v = load<float, 4>(as + kk * kLdA + tm + i);
#pragma unroll
            for (int e = 0; e < 4; ++e) a[i + e] = v.v[e];
          }
#pragma unroll
          for (int j = 0; j < kTN; j += 4) {
            const Pack<float, 4> v = load<float, 4>(bs + kk * kLdB + tn + j);
#pragma unroll
            for (int e = 0; e < 4; ++e) b[j + e] = v.v[e];
          }
#pragma unroll
          for (int i = 0; i < kTM; ++i) {
#pragma unroll
            for (int j = 0; j < kTN; ++j) st.acc[i * kTN + j] += a[i] * b[j];
          }
        }
      });
    }
  }

  // The accumulators into the fp32 tile c[m * kLdC + n].
  template <class Cta>
  HRNET_HD void stage_accumulators(Cta& cta, float* c) const {
    if constexpr (kMma) {
      cta.warps([&](auto& warp) {
        const int wm0 = static_cast<int>(warp.id()) / kWarpsN * kWM, wn0 = static_cast<int>(warp.id()) % kWarpsN * kWN;
        warp.each([&](uint32_t lane, State& st) {
          const int g = static_cast<int>(lane / 4), q = static_cast<int>(lane % 4);
#pragma unroll
          for (int i = 0; i < kMT; ++i) {
#pragma unroll
            for (int j = 0; j < kNT; ++j) {
#pragma unroll
              for (int r = 0; r < 4; ++r) {
                const int m = wm0 + i * 16 + g + 8 * (r / 2), n = wn0 + j * 8 + 2 * q + r % 2;
                c[m * kLdC + n] = st.acc[(i * kNT + j) * 4 + r];
              }
            }
          }
        });
      });
    } else {
      cta.threads([&](uint32_t t, State& st) {
        const int tm = static_cast<int>(t) / (kBN / kTN) * kTM, tn = static_cast<int>(t) % (kBN / kTN) * kTN;
#pragma unroll
        for (int i = 0; i < kTM; ++i) {
#pragma unroll
          for (int j = 0; j < kTN; ++j) c[(tm + i) * kLdC + tn + j] = st.acc[i * kTN + j];
        }
      });
    }
  }

  // ---- the CTA -----------------------------------------------------------------------------------

  template <class Cta>
  HRNET_HD void operator()(Cta& cta) const {
    unsigned char* smem = cta.smem();
    int32_t* pixel_n = reinterpret_cast<int32_t*>(smem + kTileBytes);
    int32_t* pixel_yx = pixel_n + kBM;
    const int64_t p0 = int64_t{cta.block_x()} * kBM;
    const int32_t co0 = static_cast<int32_t>(cta.block_y()) * kBN;
    cta.threads([&](uint32_t t, State& st) {
#pragma unroll
      for (int i = 0; i < kPixels; ++i) locate(p0 + row_of(t, i), st.n[i], st.y[i], st.x[i]);
#pragma unroll
      for (int i = 0; i < kAcc; ++i) st.acc[i] = 0.f;
      if (t < static_cast<uint32_t>(kBM)) {
        int32_t n, y, x;
        locate(p0 + t, n, y, x);
        pixel_n[t] = n;
        pixel_yx[t] = y * p.w + x;
      }
    });
    if (steps > 0) {
      const Step first = step_at(0);
      cta.threads([&](uint32_t t, State& st) { fetch(first, co0, t, st); });
      cta.threads([&](uint32_t t, State& st) { put(smem, 0, t, st); });
      cta.sync();
      for (int32_t s = 0; s < steps; ++s) {
        const bool more = s + 1 < steps;
        if (more) {
          const Step next = step_at(s + 1);
          cta.threads([&](uint32_t t, State& st) { fetch(next, co0, t, st); });
        }
        multiply(cta, s % 2);
        if (more) cta.threads([&](uint32_t t, State& st) { put(smem, (s + 1) % 2, t, st); });
        cta.sync();
      }
    }
    float* c = reinterpret_cast<float*>(smem);
    stage_accumulators(cta, c);
    cta.sync();
    const T* base = static_cast<const T*>(p.base.data);
    const T* bias = static_cast<const T*>(p.bias);
    T* out = static_cast<T*>(const_cast<void*>(p.out.data));
    cta.threads([&](uint32_t t, State&) {
#pragma unroll 4
      for (int i = 0; i < kAcc; ++i) {
        const int e = static_cast<int>(t) + i * static_cast<int>(kThreads);
        const int m = kChannelsLast ? e / kBN : e % kBM, j = kChannelsLast ? e % kBN : e / kBM;
        const int32_t n = pixel_n[m], co = co0 + j;
        if (n < 0 || co >= p.c) continue;
        const int64_t yx = pixel_yx[m];
        float v = c[m * kLdC + j] + to_acc(bias[co]) +
                  to_acc(base[n * p.base.sample_stride + co * p.base.channel_stride + yx * p.base.pixel_stride]);
        v = p.relu && v < 0.f ? 0.f : v;  // keeps NaN, as torch.relu
        out[n * p.out.sample_stride + co * p.out.channel_stride + yx * p.out.pixel_stride] = from_acc<T>(v);
      }
    });
  }
};

// ---- launcher --------------------------------------------------------------------------------------

inline int32_t count_steps(const FusionBranchProblem& p, int32_t bk) {
  int32_t steps = 0;
  for (int k = 0; k < p.num_down; ++k) steps += 9 * chunks(p.down[k].cin, bk);
  for (int k = 0; k < p.num_low; ++k) steps += chunks(p.low[k].cin, bk);
  return steps;
}

// A map's channel vectors (channels_last: v consecutive channels of a pixel) load as 16 bytes.
inline bool channel_vectors(const MapRef& m, int32_t channels, int v) {
  return aligned16(m.data) && channels % v == 0 && m.pixel_stride % v == 0 && m.sample_stride % v == 0;
}

template <typename T, bool kChannelsLast, int kBM, int kBN, class Exec>
int launch_tiles(const FusionBranchProblem& problem, Exec& exec) {
  using B = Body<T, kChannelsLast, kBM, kBN>;
  const int64_t plane = int64_t{problem.h} * problem.w;
  if (plane > kMaxLaunchElements) return kSampleTooLarge;
  const int64_t column_tiles = (int64_t{problem.c} + kBN - 1) / kBN;
  if (column_tiles > kMaxGridY) return kTooManyChannels;
  B body{};
  body.p = problem;
  body.steps = count_steps(problem, B::kBK);
  const int v = kVector<T>;
  for (int k = 0; k < problem.num_down; ++k) {
    body.down_vec[k] = kChannelsLast && channel_vectors(problem.down[k].x, problem.down[k].cin, v);
    body.weight_vec[0][k] = aligned16(problem.down[k].weight) && problem.c % v == 0;
  }
  for (int k = 0; k < problem.num_low; ++k) {
    const MapRef& m = problem.low[k].x;
    body.ay[k] = make_axis<float>(m.h, problem.h, problem.bilinear, problem.align_corners);
    body.ax[k] = make_axis<float>(m.w, problem.w, problem.bilinear, problem.align_corners);
    body.low_vec[k] = kChannelsLast && channel_vectors(m, problem.low[k].cin, v);
    body.weight_vec[1][k] = aligned16(problem.low[k].weight) && problem.c % v == 0;
  }
  return for_each_chunk(problem.n, plane, [&](int64_t n0, int32_t count) {
    body.p.n = count;
    body.p.out = advance(problem.out, n0, sizeof(T));
    body.p.base = advance(problem.base, n0, sizeof(T));
    for (int k = 0; k < problem.num_down; ++k) body.p.down[k].x = advance(problem.down[k].x, n0, sizeof(T));
    for (int k = 0; k < problem.num_low; ++k) body.p.low[k].x = advance(problem.low[k].x, n0, sizeof(T));
    body.pixels = static_cast<int32_t>(count * plane);
    const int64_t row_tiles = (int64_t{body.pixels} + kBM - 1) / kBM;
    return exec.launch(static_cast<uint32_t>(row_tiles), static_cast<uint32_t>(column_tiles), body);
  });
}

// The CTA tile for a problem: the output channels in one to four column tiles, and 128-pixel rows
// unless that leaves fewer than two waves of CTAs.
struct Tiles {
  int bm, bn;
};

inline Tiles choose_tiles(int64_t pixels, int32_t channels) {
  const auto ctas = [&](int bm, int bn) { return (pixels + bm - 1) / bm * ((channels + bn - 1) / bn); };
  if (channels <= 32) return {128, 32};
  if (channels <= 64) return ctas(128, 64) >= kTargetCtas ? Tiles{128, 64} : Tiles{64, 64};
  return ctas(64, 128) >= kTargetCtas ? Tiles{64, 128} : Tiles{64, 64};
}

template <typename T, bool kChannelsLast, class Exec>
int run_layout(const FusionBranchProblem& p, Exec& exec) {
  const Tiles tiles = choose_tiles(int64_t{p.n} * p.h * p.w, p.c);
  if (tiles.bn == 32) return launch_tiles<T, kChannelsLast, 128, 32>(p, exec);
  if (tiles.bn == 128) return launch_tiles<T, kChannelsLast, 64, 128>(p, exec);
  if (tiles.bm == 128) return launch_tiles<T, kChannelsLast, 128, 64>(p, exec);
  return launch_tiles<T, kChannelsLast, 64, 64>(p, exec);
}

// Entry point: runs the problem on `exec` (exec.launch(grid_x, grid_y, body)); 0 or an error code.
template <class Exec>
int run_fusion_branch(const FusionBranchProblem& p, Exec& exec) {
  if (int64_t{p.n} * p.h * p.w == 0 || p.c == 0) return 0;
  return dispatch_gpu_dtype(p.dtype, [&](auto tag) {
    using T = decltype(tag);
    return p.layout == Layout::kChannelsLast ? run_layout<T, true>(p, exec) : run_layout<T, false>(p, exec);
  });
}

}  // namespace hrnet_fast::cuda::branch
