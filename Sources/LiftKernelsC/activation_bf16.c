/* The MLP activation, forward and backward, on AVX-512: bfloat16 storage (bf16 precision) or
 * float32.
 *
 * The transcendentals are the ones liblift's Swift kernels use (MathApprox): exp by Cephes-style
 * range reduction and a degree-6 polynomial, erf by Abramowitz & Stegun 7.1.26, so the float32
 * values agree with the Swift path to float rounding; bfloat16 results are rounded to nearest
 * even (vcvtneps2bf16). */
#include "lift_kernels.h"
#include "avx512_bf16.h"

#include <immintrin.h>

#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16"))), \
                             apply_to = function)

/* erf(u) given e = exp(-u * u). */
static inline __m512 erf16(__m512 u, __m512 e) {
  const __m512 a = _mm512_abs_ps(u);
  const __m512 t = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_fmadd_ps(_mm512_set1_ps(0.3275911f), a, _mm512_set1_ps(1.0f)));
  __m512 poly = _mm512_set1_ps(1.061405429f);
  poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(-1.453152027f));
  poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(1.421413741f));
  poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(-0.284496736f));
  poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(0.254829592f));
  const __m512 y = _mm512_fnmadd_ps(_mm512_mul_ps(poly, t), e, _mm512_set1_ps(1.0f)); /* >= 0 */
  const __m512i sign = _mm512_and_si512(_mm512_castps_si512(u), _mm512_set1_epi32((int)0x80000000u));
  return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(y), sign));
}

/* f(x) and f'(x) of the activation, sharing the transcendental parts. Exact GELU:
 * f = x Phi(x), f' = Phi(x) + x phi(x). QuickGELU: f = x s(1.702 x), f' = s + 1.702 x s (1 - s). */
static inline __m512 activate(lk_activation kind, __m512 x, __m512 *slope) {
  const __m512 one = _mm512_set1_ps(1.0f);
  if (kind == LK_QUICK_GELU) {
    const __m512 alpha = _mm512_set1_ps(1.702f);
    const __m512 s = _mm512_div_ps(one, _mm512_add_ps(one, exp16(_mm512_mul_ps(x, _mm512_set1_ps(-1.702f)))));
    if (slope) *slope = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_mul_ps(alpha, x), s), _mm512_sub_ps(one, s), s);
    return _mm512_mul_ps(x, s);
  }
  const __m512 u = _mm512_mul_ps(x, _mm512_set1_ps(0.7071067811865475f));
  const __m512 e = exp16(_mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), u), u));
  const __m512 cdf = _mm512_mul_ps(_mm512_set1_ps(0.5f), _mm512_add_ps(one, erf16(u, e)));
  if (slope) *slope = _mm512_fmadd_ps(_mm512_mul_ps(x, _mm512_set1_ps(0.3989422804014327f)), e, cdf);
  return _mm512_mul_ps(x, cdf);
}

/* The first 16 lanes (at most) of n. */
static inline __mmask16 head_lanes(size_t n) { return lanes(n < 16 ? (int)n : 16); }

/* Element access in the two storage types: bfloat16 (widened, rounded) or float32. */
static inline __m512 load_bf16(const void *p, size_t i, __mmask16 m) { return widen16((const uint16_t *)p + i, m); }
static inline __m512 load_f32(const void *p, size_t i, __mmask16 m) { return _mm512_maskz_loadu_ps(m, (const float *)p + i); }
static inline void store_bf16(void *p, size_t i, __mmask16 m, __m512 v) {
  _mm256_mask_storeu_epi16((uint16_t *)p + i, m, round16(v));
}
static inline void store_f32(void *p, size_t i, __mmask16 m, __m512 v) { _mm512_mask_storeu_ps((float *)p + i, m, v); }

/* The two passes, written once for both storage types (inlined with the type's load and store). */
static inline __attribute__((always_inline)) void forward(lk_activation kind, const void *x, void *y, size_t count,
                                                          __m512 (*load)(const void *, size_t, __mmask16),
                                                          void (*store)(void *, size_t, __mmask16, __m512)) {
  for (size_t i = 0; i < count; i += 16) {
    const __mmask16 m = head_lanes(count - i);
    store(y, i, m, activate(kind, load(x, i, m), NULL));
  }
}

static inline __attribute__((always_inline)) void backward(lk_activation kind, const float *dy, const void *x, void *y,
                                                           void *dx, size_t rows, size_t cols, float *bias_sums,
                                                           __m512 (*load)(const void *, size_t, __mmask16),
                                                           void (*store)(void *, size_t, __mmask16, __m512)) {
  for (size_t r = 0; r < rows; r++) {
    const size_t first = r * cols;
    for (size_t j = 0; j < cols; j += 16) {
      const __mmask16 m = head_lanes(cols - j);
      __m512 slope;
      const __m512 value = activate(kind, load(x, first + j, m), &slope);
      const __m512 grad = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, dy + first + j), slope);
      store(y, first + j, m, value);
      store(dx, first + j, m, grad);
      _mm512_mask_storeu_ps(bias_sums + j, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, bias_sums + j), grad));
    }
  }
}

void lk_activation_forward(lk_activation kind, const uint16_t *x, uint16_t *y, size_t count) {
  forward(kind, x, y, count, load_bf16, store_bf16);
}

void lk_activation_backward(lk_activation kind, const float *dy, const uint16_t *x, uint16_t *y, uint16_t *dx,
                            size_t rows, size_t cols, float *bias_sums) {
  backward(kind, dy, x, y, dx, rows, cols, bias_sums, load_bf16, store_bf16);
}

void lk_activation_forward_f32(lk_activation kind, const float *x, float *y, size_t count) {
  forward(kind, x, y, count, load_f32, store_f32);
}

void lk_activation_backward_f32(lk_activation kind, float *dy, const float *x, float *y, size_t rows, size_t cols,
                                float *bias_sums) {
  backward(kind, dy, x, y, dy, rows, cols, bias_sums, load_f32, store_f32);
}

#pragma clang attribute pop
