/* LayerNorm over the last dimension on AVX-512: forward (statistics, xhat, the affine output in
 * float32 or bfloat16), the affine output alone from a saved xhat, and backward.
 *
 * A row's sums run in 16 float32 lanes, reduced at the end, the same order whatever range of
 * rows a call gets; so the results do not depend on how the rows are split between threads. */
#include "lift_kernels.h"
#include "avx512_bf16.h"

#include <immintrin.h>
#include <math.h>

#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16"))), \
                             apply_to = function)

/* The output row: float32 (y_f32) or bfloat16 (y_bf16), exactly one of them non-NULL. */
static inline void store_out(float *y_f32, uint16_t *y_bf16, size_t i, __mmask16 m, __m512 v) {
  if (y_f32) _mm512_mask_storeu_ps(y_f32 + i, m, v);
  else _mm256_mask_storeu_epi16(y_bf16 + i, m, round16(v));
}

void lk_layernorm_forward(const float *x, size_t rows, size_t cols, const float *gamma, const float *beta, float eps,
                          float *y_f32, uint16_t *y_bf16, float *xhat, float *rstd) {
  const float inv = 1.0f / (float)cols;
  for (size_t r = 0; r < rows; r++) {
    const float *xr = x + r * cols;
    __m512 acc = _mm512_setzero_ps();
    for (size_t j = 0; j < cols; j += 16) acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(lanes((int)(cols - j)), xr + j));
    const __m512 mean = _mm512_set1_ps(_mm512_reduce_add_ps(acc) * inv);
    __m512 sq = _mm512_setzero_ps();
    for (size_t j = 0; j < cols; j += 16) {
      const __mmask16 m = lanes((int)(cols - j));
      const __m512 d = _mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, xr + j), mean);
      sq = _mm512_fmadd_ps(d, d, sq);
    }
    const float rs = 1.0f / sqrtf(_mm512_reduce_add_ps(sq) * inv + eps);
    if (rstd) rstd[r] = rs;
    const __m512 s = _mm512_set1_ps(rs);
    /* Read the whole row's input before the output overwrites it (y may alias x): each vector
     * of x is read in the same iteration that writes it. */
    for (size_t j = 0; j < cols; j += 16) {
      const __mmask16 m = lanes((int)(cols - j));
      const __m512 h = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, xr + j), mean), s);
      if (xhat) _mm512_mask_storeu_ps(xhat + r * cols + j, m, h);
      const __m512 y = _mm512_fmadd_ps(h, _mm512_maskz_loadu_ps(m, gamma + j), _mm512_maskz_loadu_ps(m, beta + j));
      store_out(y_f32 ? y_f32 + r * cols : NULL, y_bf16 ? y_bf16 + r * cols : NULL, j, m, y);
    }
  }
}

void lk_layernorm_affine(const float *xhat, size_t rows, size_t cols, const float *gamma, const float *beta,
                         float *y_f32, uint16_t *y_bf16) {
  for (size_t r = 0; r < rows; r++) {
    for (size_t j = 0; j < cols; j += 16) {
      const __mmask16 m = lanes((int)(cols - j));
      const __m512 y = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, xhat + r * cols + j), _mm512_maskz_loadu_ps(m, gamma + j),
                                       _mm512_maskz_loadu_ps(m, beta + j));
      store_out(y_f32 ? y_f32 + r * cols : NULL, y_bf16 ? y_bf16 + r * cols : NULL, j, m, y);
    }
  }
}

void lk_layernorm_backward(const float *dy, const float *xhat, const float *rstd, const float *gamma, size_t rows,
                           size_t cols, float *dx, int accumulate, float *dgamma, float *dbeta) {
  const float inv = 1.0f / (float)cols;
  for (size_t r = 0; r < rows; r++) {
    const float *dyr = dy + r * cols, *xr = xhat + r * cols;
    float *dxr = dx + r * cols;
    __m512 a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps();
    for (size_t j = 0; j < cols; j += 16) {
      const __mmask16 m = lanes((int)(cols - j));
      const __m512 d = _mm512_maskz_loadu_ps(m, dyr + j), h = _mm512_maskz_loadu_ps(m, xr + j);
      const __m512 g = _mm512_mul_ps(d, _mm512_maskz_loadu_ps(m, gamma + j));
      a1 = _mm512_add_ps(a1, g);
      a2 = _mm512_fmadd_ps(g, h, a2);
      _mm512_mask_storeu_ps(dgamma + j, m, _mm512_fmadd_ps(d, h, _mm512_maskz_loadu_ps(m, dgamma + j)));
      _mm512_mask_storeu_ps(dbeta + j, m, _mm512_add_ps(d, _mm512_maskz_loadu_ps(m, dbeta + j)));
    }
    const __m512 mg = _mm512_set1_ps(_mm512_reduce_add_ps(a1) * inv);
    const __m512 mgh = _mm512_set1_ps(_mm512_reduce_add_ps(a2) * inv);
    const __m512 rs = _mm512_set1_ps(rstd[r]);
    for (size_t j = 0; j < cols; j += 16) {
      const __mmask16 m = lanes((int)(cols - j));
      const __m512 g = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, dyr + j), _mm512_maskz_loadu_ps(m, gamma + j));
      __m512 v = _mm512_mul_ps(rs, _mm512_fnmadd_ps(_mm512_maskz_loadu_ps(m, xr + j), mgh, _mm512_sub_ps(g, mg)));
      if (accumulate) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, dxr + j));
      _mm512_mask_storeu_ps(dxr + j, m, v);
    }
  }
}

#pragma clang attribute pop
