/* Peak issue rate of the vector multiply-add instructions our GEMMs use, on one core.
 * Ten independent accumulator chains per loop iteration hide each instruction's latency, so the
 * loop runs at the core's issue rate for that instruction. Prints "name instructions_per_ns".
 * x86-64 only; AVX-512 probes run only where the CPU has the feature. */
#include <stdio.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

#define R10(I) I(0) I(1) I(2) I(3) I(4) I(5) I(6) I(7) I(8) I(9)
#define FMA_Y(i) "vfmadd231ps %%ymm14, %%ymm15, %%ymm" #i "\n"
#define MADDWD_Y(i) "vpmaddwd %%ymm14, %%ymm15, %%ymm" #i "\n"
#define FMA_Z(i) "vfmadd231ps %%zmm14, %%zmm15, %%zmm" #i "\n"
#define DPBUSD_Z(i) "vpdpbusd %%zmm14, %%zmm15, %%zmm" #i "\n"
#define PROBE(name, body)                                                    \
    do {                                                                     \
        long n_ = 50000000;                                                  \
        double best_ = 0;                                                    \
        for (int r_ = 0; r_ < 3; r_++) {                                     \
            double t_ = now();                                               \
            for (long i_ = 0; i_ < n_; i_++) __asm__ volatile(body ::: "memory"); \
            double rate_ = n_ * 10 / (now() - t_) / 1e9;                     \
            if (rate_ > best_) best_ = rate_;                                \
        }                                                                    \
        printf("%s %.3f\n", name, best_);                                    \
    } while (0)

int main(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        PROBE("vfmadd231ps.ymm", R10(FMA_Y));
        PROBE("vpmaddwd.ymm", R10(MADDWD_Y));
    }
    if (__builtin_cpu_supports("avx512f")) PROBE("vfmadd231ps.zmm", R10(FMA_Z));
    if (__builtin_cpu_supports("avx512vnni")) PROBE("vpdpbusd.zmm", R10(DPBUSD_Z));
    return 0;
}
