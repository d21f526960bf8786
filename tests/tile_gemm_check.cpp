// Test program for csrc/cpu/tile_gemm.h (built by tests/test_tile_gemm.py, torch-free): the fp32 and
// fp64 register tiles of the vector width HRNET_FAST_VECTOR_BYTES (16, 32 or 64 bytes: the SSE, AVX2
// and AVX-512 tiles, all runnable on any x86-64 CPU, wider vectors split by the compiler) against
// plain loops, for panels of rows side by side ([k][ldb]) and panels stored in column blocks
// ([ldb / kPanelBlock][k][kPanelBlock], as winograd_panel), two segments of odd depths, every
// output-channel tile of a 96-channel panel, accumulating or not. Prints one line; exits 1 on a mismatch.
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "cpu/tile_gemm.h"

namespace {

using namespace hrnet_fast::cpu;

template <typename A>
int check(std::mt19937& rng) {
  constexpr int kC = kTileC<A>, B = kPanelBlock<A>, kSegments = 2;
  constexpr int64_t kChannels = 96, kDepth[kSegments] = {37, 5};
  std::uniform_real_distribution<double> value(-1, 1);
  std::vector<std::vector<A>> inputs(kSegments), rows_major(kSegments), blocked(kSegments);
  std::vector<std::vector<const A*>> rows(kSegments);
  for (int s = 0; s < kSegments; ++s) {
    const int64_t k = kDepth[s];
    inputs[s].resize(kTileP * k);
    for (A& v : inputs[s]) v = static_cast<A>(value(rng));
    for (int p = 0; p < kTileP; ++p) rows[s].push_back(inputs[s].data() + p * k);
    rows_major[s].resize(k * kChannels);
    for (A& v : rows_major[s]) v = static_cast<A>(value(rng));
    blocked[s].resize(k * kChannels);
    for (int64_t i = 0; i < k; ++i) {
      for (int64_t c = 0; c < kChannels; ++c) blocked[s][(c / B * k + i) * B + c % B] = rows_major[s][i * kChannels + c];
    }
  }
  int failures = 0;
  for (int layout = 0; layout < 2; ++layout) {
    for (const bool accumulate : {false, true}) {
      std::vector<A> c(kTileP * kChannels), start(kTileP * kChannels);
      for (A& v : start) v = static_cast<A>(value(rng));
      c = start;
      for (int64_t j = 0; j < kChannels; j += kC) {
        Segment<A> segments[kSegments];
        for (int s = 0; s < kSegments; ++s) {
          const int64_t k = kDepth[s];
          segments[s] = layout == 0 ? Segment<A>{k, rows[s].data(), rows_major[s].data() + j, kChannels}
                                    : Segment<A>{k, rows[s].data(), blocked[s].data() + j / B * k * B + j % B, B, k * B};
        }
        if (accumulate) {
          tile_gemm<true>(segments, kSegments, c.data() + j, kChannels);
        } else {
          tile_gemm<false>(segments, kSegments, c.data() + j, kChannels);
        }
      }
      for (int p = 0; p < kTileP; ++p) {
        for (int64_t ch = 0; ch < kChannels; ++ch) {
          double want = accumulate ? start[p * kChannels + ch] : 0.0;
          for (int s = 0; s < kSegments; ++s) {
            for (int64_t i = 0; i < kDepth[s]; ++i) want += double{rows[s][p][i]} * rows_major[s][i * kChannels + ch];
          }
          const double got = c[p * kChannels + ch];
          if (std::fabs(got - want) > 1e-4 * (1 + std::fabs(want)) && failures++ < 5) {
            std::printf("mismatch: %zu-byte values, layout %s, accumulate %d, pixel %d, channel %ld: %g, want %g\n",
                        sizeof(A), layout == 0 ? "rows" : "blocks", accumulate, p, static_cast<long>(ch), got, want);
          }
        }
      }
    }
  }
  return failures;
}

}  // namespace

int main() {
  std::mt19937 rng(1234);
  const int failures = check<float>(rng) + check<double>(rng);
  std::printf("tile_gemm, %d-byte vectors (tiles %d x %d fp32, %d x %d fp64): %d mismatches\n", kVectorBytes, kTileP,
              kTileC<float>, kTileP, kTileC<double>, failures);
  return failures == 0 ? 0 : 1;
}
