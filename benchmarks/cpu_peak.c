// The CPU's multiply-accumulate peak, for benchmarks/cpu_roofline.py: every OpenMP thread runs
// 24 independent accumulator chains of one AVX-512 instruction, in registers, no memory traffic:
//   vfmadd231ps zmm: 16 fp32 multiply-adds;  vdpbf16ps zmm: 32 bf16 multiply-adds into fp32.
// 24 chains cover the latency x throughput of both on current x86 cores. Prints one JSON object:
// {"threads": N, "fp32_gmac_per_s": ..., "bf16_gmac_per_s": ... or null without AVX512-BF16},
// each the multiply-adds of all threads over the slowest thread's wall time.
//
//   cc -O2 -march=native -fopenmp cpu_peak.c -o cpu_peak && OMP_NUM_THREADS=2 ./cpu_peak
#include <omp.h>
#include <stdio.h>
#include <time.h>

#if !defined(__AVX512F__)
#error "cpu_peak.c measures AVX-512 peaks: compile with -march=native on an AVX-512 CPU"
#endif

#define ITERS 20000000L
#define CHAINS 24

#define REPEAT24(OP)                                                                               \
  OP " %%zmm30, %%zmm31, %%zmm0\n\t" OP " %%zmm30, %%zmm31, %%zmm1\n\t" OP " %%zmm30, %%zmm31, %%zmm2\n\t" \
  OP " %%zmm30, %%zmm31, %%zmm3\n\t" OP " %%zmm30, %%zmm31, %%zmm4\n\t" OP " %%zmm30, %%zmm31, %%zmm5\n\t"   \
  OP " %%zmm30, %%zmm31, %%zmm6\n\t" OP " %%zmm30, %%zmm31, %%zmm7\n\t" OP " %%zmm30, %%zmm31, %%zmm8\n\t"   \
  OP " %%zmm30, %%zmm31, %%zmm9\n\t" OP " %%zmm30, %%zmm31, %%zmm10\n\t" OP " %%zmm30, %%zmm31, %%zmm11\n\t" \
  OP " %%zmm30, %%zmm31, %%zmm12\n\t" OP " %%zmm30, %%zmm31, %%zmm13\n\t" OP " %%zmm30, %%zmm31, %%zmm14\n\t" \
  OP " %%zmm30, %%zmm31, %%zmm15\n\t" OP " %%zmm30, %%zmm31, %%zmm16\n\t" OP " %%zmm30, %%zmm31, %%zmm17\n\t" \
  OP " %%zmm30, %%zmm31, %%zmm18\n\t" OP " %%zmm30, %%zmm31, %%zmm19\n\t" OP " %%zmm30, %%zmm31, %%zmm20\n\t" \
  OP " %%zmm30, %%zmm31, %%zmm21\n\t" OP " %%zmm30, %%zmm31, %%zmm22\n\t" OP " %%zmm30, %%zmm31, %%zmm23\n\t"

// zmm0..23 := 0 (no denormal or NaN garbage in the chains), zmm30, zmm31 := 1.0f in every lane.
#define PROLOGUE                                                                                   \
  "vbroadcastss (%1), %%zmm30\n\t"                                                                \
  "vmovaps %%zmm30, %%zmm31\n\t" REPEAT24("vpxord")

#define CLOBBERS                                                                                       \
  "rcx", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", \
      "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22",    \
      "xmm23", "xmm30", "xmm31"

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static const float kOne = 1.0f;

// name(iters): iters rounds of OP on the 24 chains.
#define CHAIN_KERNEL(name, OP)                                                                                    \
  static void name(long iters) {                                                                                  \
    __asm__ volatile(PROLOGUE "mov %0, %%rcx\n1:\n\t" REPEAT24(OP) "dec %%rcx\n\tjnz 1b\n\t"                      \
                     :                                                                                            \
                     : "r"(iters), "r"(&kOne)                                                                     \
                     : CLOBBERS);                                                                                 \
  }

CHAIN_KERNEL(fp32_chains, "vfmadd231ps")
#if defined(__AVX512BF16__)
CHAIN_KERNEL(bf16_chains, "vdpbf16ps")
#endif

// Multiply-adds per second of all threads running body(ITERS) at once, in units of 1e9.
static double gmac_per_s(void (*body)(long), int macs_per_instruction) {
  double slowest = 0.0;
  int threads = 1;
#pragma omp parallel reduction(max : slowest)
  {
#pragma omp single
    threads = omp_get_num_threads();
    body(ITERS / 100);  // warm up: clocks up, code in cache
#pragma omp barrier
    const double start = now();
    body(ITERS);
    slowest = now() - start;
  }
  return (double)threads * ITERS * CHAINS * macs_per_instruction / slowest / 1e9;
}

int main(void) {
  const double fp32 = gmac_per_s(fp32_chains, 16);
  printf("{\"threads\": %d, \"fp32_gmac_per_s\": %.2f, ", omp_get_max_threads(), fp32);
#if defined(__AVX512BF16__)
  printf("\"bf16_gmac_per_s\": %.2f}\n", gmac_per_s(bf16_chains, 32));
#else
  printf("\"bf16_gmac_per_s\": null}\n");
#endif
  return 0;
}
