/* The cores' FP32 fused multiply-add peak, the ceiling for bench/eval.py's GFLOP/s figures: 12 independent
 * chains of 512-bit FMAs per thread, one thread per core.
 *
 *     gcc -O2 -mavx512f -fopenmp bench/fma_peak.c -o /tmp/fma_peak && OMP_NUM_THREADS=2 /tmp/fma_peak
 */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>

#define CHAINS 12
#define LANES 16

int main(void) {
    const long iterations = 100000000L;
    double start = omp_get_wtime();
    float sink = 0.0f;
#pragma omp parallel reduction(+ : sink)
    {
        __m512 acc[CHAINS];
        const __m512 mul = _mm512_set1_ps(0.999f), add = _mm512_set1_ps(0.001f);
        for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_set1_ps((float)i);
        for (long k = 0; k < iterations; k++) {
#pragma GCC unroll 12
            for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_fmadd_ps(acc[i], mul, add);
        }
        for (int i = 0; i < CHAINS; i++) sink += _mm512_reduce_add_ps(acc[i]);
    }
    double seconds = omp_get_wtime() - start;
    int threads = omp_get_max_threads();
    printf("FP32 FMA peak, %d threads: %.0f GFLOP/s (checksum %.1f)\n", threads,
           threads * (double)iterations * CHAINS * LANES * 2 / seconds / 1e9, sink);
    return 0;
}
