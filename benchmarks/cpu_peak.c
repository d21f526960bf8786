// The CPU's multiply-accumulate peak, for benchmarks/cpu_roofline.py: every OpenMP thread runs
// independent accumulator chains of one vector instruction, in registers, no memory traffic:
//   AVX-512, 24 chains: vfmadd231ps zmm (16 fp32 multiply-adds), vdpbf16ps zmm (32 bf16 ones into fp32);
//   AVX2 + FMA, 12 chains: vfmadd231ps ymm (8 fp32 multiply-adds).
// The chains cover the latency x throughput of these on current x86 cores. Prints one JSON object:
// {"threads": N, "isa": "avx512" | "avx2", "fp32_gmac_per_s": ..., "bf16_gmac_per_s": ... or null
// without AVX512-BF16}, each the multiply-adds of all threads over the slowest thread's wall time.
//
//   cc -O2 -march=native -fopenmp cpu_peak.c -o cpu_peak && OMP_NUM_THREADS=2 ./cpu_peak
#include <omp.h>
#include <stdio.h>
#include <time.h>

#define ITERS 20000000L

#define STR(x) #x
#define XSTR(x) STR(x)
// OP src_a, src_b, chain n (AT&T order: the chain register is the accumulator).
#define ON(OP, n) OP " %%" REG XSTR(SRC_A) ", %%" REG XSTR(SRC_B) ", %%" REG #n "\n\t"
#define REPEAT12(OP)                                                                                \
  ON(OP, 0) ON(OP, 1) ON(OP, 2) ON(OP, 3) ON(OP, 4) ON(OP, 5) ON(OP, 6) ON(OP, 7) ON(OP, 8) ON(OP, 9) \
      ON(OP, 10) ON(OP, 11)

#if defined(__AVX512F__)
#define ISA "avx512"
#define REG "zmm"
#define SRC_A 30
#define SRC_B 31
#define CHAINS 24
#define LANES 16
#define ZERO "vpxord"
#define REPEAT(OP)                                                                                         \
  REPEAT12(OP)                                                                                             \
  ON(OP, 12) ON(OP, 13) ON(OP, 14) ON(OP, 15) ON(OP, 16) ON(OP, 17) ON(OP, 18) ON(OP, 19) ON(OP, 20)       \
      ON(OP, 21) ON(OP, 22) ON(OP, 23)
#define CLOBBERS                                                                                       \
  "rcx", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", \
      "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22",    \
      "xmm23", "xmm30", "xmm31"
#elif defined(__AVX2__) && defined(__FMA__)
#define ISA "avx2"
#define REG "ymm"
#define SRC_A 14
#define SRC_B 15
#define CHAINS 12
#define LANES 8
#define ZERO "vpxor"
#define REPEAT(OP) REPEAT12(OP)
#define CLOBBERS                                                                                       \
  "rcx", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", \
      "xmm14", "xmm15"
#else
#error "cpu_peak.c measures AVX-512 or AVX2 + FMA peaks: compile with -march=native on such a CPU"
#endif

// the chains := 0 (no denormal or NaN garbage in them), SRC_A, SRC_B := 1.0f in every lane.
#define PROLOGUE                                                                                   \
  "vbroadcastss (%1), %%" REG XSTR(SRC_A) "\n\t"                                                 \
  "vmovaps %%" REG XSTR(SRC_A) ", %%" REG XSTR(SRC_B) "\n\t" REPEAT(ZERO)

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static const float kOne = 1.0f;

// name(iters): iters rounds of OP on the chains.
#define CHAIN_KERNEL(name, OP)                                                                                    \
  static void name(long iters) {                                                                                  \
    __asm__ volatile(PROLOGUE "mov %0, %%rcx\n1:\n\t" REPEAT(OP) "dec %%rcx\n\tjnz 1b\n\t"                      \
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
  const double fp32 = gmac_per_s(fp32_chains, LANES);
  printf("{\"threads\": %d, \"isa\": \"%s\", \"fp32_gmac_per_s\": %.2f, ", omp_get_max_threads(), ISA, fp32);
#if defined(__AVX512BF16__)
  printf("\"bf16_gmac_per_s\": %.2f}\n", gmac_per_s(bf16_chains, 32));
#else
  printf("\"bf16_gmac_per_s\": null}\n");
#endif
  return 0;
}
