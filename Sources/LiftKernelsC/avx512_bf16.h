/* AVX-512 helpers shared by liblift's C kernels (internal: not installed). Every function is
 * static inline and compiled for AVX512F/BW/VL/DQ/BF16: call them only from functions compiled
 * for the same instruction set, after lk_cpu_has_avx512_bf16(). */
#ifndef LIFT_AVX512_BF16_H
#define LIFT_AVX512_BF16_H

#include <immintrin.h>
#include <stdint.h>

#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16"))), \
                             apply_to = function)

/* Lanes 0..<n of a 16-lane mask (n in 0...16). */
static inline __mmask16 lanes(int n) { return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1); }

/* exp(x) as MathApprox.exp computes it (clamped to [-87.3, 88.7], degree-6 polynomial). */
static inline __m512 exp16(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3f)), _mm512_set1_ps(88.7f));
  const __m512 magic = _mm512_set1_ps(12582912.0f);
  const __m512 shifted = _mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504f), magic);
  const __m512 n = _mm512_sub_ps(shifted, magic);
  const __m512 r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.1219444e-4f), _mm512_fmadd_ps(n, _mm512_set1_ps(-0.693359375f), x));
  __m512 p = _mm512_set1_ps(1.98756915e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.39819995e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665796e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.66666655e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  const __m512i ni = _mm512_sub_epi32(_mm512_castps_si512(shifted), _mm512_castps_si512(magic));
  const __m512 scale = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(ni, _mm512_set1_epi32(127)), 23));
  return _mm512_mul_ps(p, scale);
}

/* The bfloat16 of each lane: vcvtneps2bf16 (round to nearest even, NaN quiet; denormals become
 * zero, which the dot-product instruction would make of them anyway). */
static inline __m256i round16(__m512 x) { return (__m256i)_mm512_cvtneps_pbh(x); }

/* 16 bfloat16 values (lanes masked by m) widened to float32. */
static inline __m512 widen16(const uint16_t *p, __mmask16 m) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
}

#pragma clang attribute pop

#endif
