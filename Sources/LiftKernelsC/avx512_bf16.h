/* AVX-512 helpers shared by liblift's C kernels (internal: not installed). Every function is
 * static inline and compiled for AVX512F/BW/VL/DQ/BF16: call them only from functions compiled
 * for the same instruction set, after lk_cpu_has_avx512_bf16(). */
#ifndef LIFT_AVX512_BF16_H
#define LIFT_AVX512_BF16_H

#include <immintrin.h>
#include <stddef.h>
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

/* sums[0..<n] += the column sums of src (rows x n floats, rows ld apart), row after row in
 * order; each column's sum stays in a register (no store-to-load chain through sums). */
static inline void add_column_sums(float *sums, const float *src, int rows, int n, ptrdiff_t ld) {
  for (int j = 0; j < n; j += 16) {
    const __mmask16 m = lanes(n - j);
    __m512 acc = _mm512_maskz_loadu_ps(m, sums + j);
    for (int r = 0; r < rows; r++) acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(m, src + r * ld + j));
    _mm512_mask_storeu_ps(sums + j, m, acc);
  }
}

/* Lanes of the vector at column j that hold tokens (t valid columns). */
static inline __mmask16 valid_lanes(int j, int t) { return lanes(t - j < 0 ? 0 : t - j); }

/* Transposes the 16 x 16 block of 32-bit words in r[0..<16]: r[i] is row i on input and
 * column i on output (unpack 32- and 64-bit lanes, then exchange 128-bit lanes twice). */
static inline void transpose16(__m512i r[16]) {
  __m512i t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  for (int h = 0; h < 16; h += 8) {
    for (int i = 0; i < 4; i++) {
      t[h + i] = _mm512_shuffle_i32x4(r[h + i], r[h + i + 4], 0x88);
      t[h + i + 4] = _mm512_shuffle_i32x4(r[h + i], r[h + i + 4], 0xdd);
    }
  }
  for (int i = 0; i < 8; i++) {
    r[i] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0xdd);
  }
}

/* dst (cols x tp words, rows tp apart) = src^T for src t rows of cols 32-bit words, `ld` words
 * apart; columns t..<tp of dst are zero (tp a multiple of 16, >= t). */
static inline void transpose_words(const uint32_t *src, ptrdiff_t ld, int t, int cols, int tp, uint32_t *dst) {
  __m512i r[16];
  for (int j = 0; j < tp; j += 16) {
    for (int p = 0; p < cols; p += 16) {
      const __mmask16 m = lanes(cols - p);
      for (int i = 0; i < 16; i++) {
        r[i] = j + i < t ? _mm512_maskz_loadu_epi32(m, src + (j + i) * ld + p) : _mm512_setzero_si512();
      }
      transpose16(r);
      for (int c = 0; c < 16 && p + c < cols; c++) _mm512_storeu_si512(dst + (p + c) * tp + j, r[c]);
    }
  }
}

/* Columns j..<j+16 of src (rows x tp floats, tp a multiple of 16 and >= j + 16), rows d..<d+16
 * (rows past `rows` read as zero): out[c] = src[d..<d+16][j + c]. */
static inline void transposed_block(const float *src, int rows, int tp, int d, int j, __m512i out[16]) {
  for (int i = 0; i < 16; i++) {
    out[i] = d + i < rows ? _mm512_loadu_si512(src + (size_t)(d + i) * tp + j) : _mm512_setzero_si512();
  }
  transpose16(out);
}

#pragma clang attribute pop

#endif
