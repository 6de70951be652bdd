/* The float32 attention core of one (image, head), fused: the same plan as the bfloat16 kernel
 * (attention_bf16.c) with float32 operands and fused multiply-adds.
 *
 * Query rows go in blocks of ROW_BLOCK, so the score block (ROW_BLOCK x T floats) stays in the L2
 * cache and no T x T matrix is kept; forward keeps the log-sum-exp per row, backward recomputes
 * the probabilities from it and adds each block's share of dK and dV into float32 accumulators
 * held transposed (hd x T).
 *
 * Every product is C (m x n) (+)= A B with A row-major (row stride lda) and B row-major (row
 * stride ldb), on one register-blocked kernel (8 rows x 32 columns, A broadcast). Q, dO (as A)
 * and V, K (as B) are read where they are; K^T and V^T (B of S = Q K^T, dP = dO V^T) and Q^T,
 * dO^T (A of dK^T, dV^T) are packed once per head by 16 x 16 register transposes.
 *
 * Numerics: exp is the approximation of liblift's Swift kernels (MathApprox.exp); everything
 * accumulates in float32. */
#include "lift_kernels.h"
#include "avx512_bf16.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

enum { ROW_BLOCK = 64, TILE_ROWS = 8 };

static inline size_t round_up(size_t x, size_t to) { return (x + to - 1) / to * to; }

/* Scratch sections (each 64-byte aligned), Tp = T rounded up to 16. */
typedef struct {
  float *kt, *vt;   /* hd x Tp: K^T, V^T (columns >= T zero) */
  float *qt, *dot;  /* hd x Tp: Q^T, dO^T */
  float *s, *dp;    /* ROW_BLOCK x Tp: scores / probabilities, probability gradients / dS */
  float *dkt, *dvt; /* hd x Tp: dK^T, dV^T accumulators */
} scratch_layout;

static size_t layout_scratch(int tokens, int head_dim, char *base, scratch_layout *l) {
  const size_t hd = (size_t)head_dim, tp = round_up((size_t)tokens, 16);
  float **sections[] = {l ? &l->kt : NULL, l ? &l->vt : NULL, l ? &l->qt : NULL, l ? &l->dot : NULL,
                        l ? &l->s : NULL,  l ? &l->dp : NULL, l ? &l->dkt : NULL, l ? &l->dvt : NULL};
  const size_t counts[] = {hd * tp, hd * tp, hd * tp, hd * tp, ROW_BLOCK * tp, ROW_BLOCK * tp, hd * tp, hd * tp};
  size_t offset = 0;
  for (int i = 0; i < 8; i++) {
    if (l) *sections[i] = (float *)(base + offset);
    offset += round_up(counts[i] * sizeof(float), 64);
  }
  return offset;
}

size_t lk_attention_f32_scratch_bytes(int tokens, int head_dim) {
  if (tokens <= 0 || head_dim <= 0) return 0;
  return layout_scratch(tokens, head_dim, NULL, NULL);
}

#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16"))), \
                             apply_to = function)

/* ---- The product kernel ---- */

/* A TILE_ROWS x 32 (at most) block of C: mr rows, nv vectors of 16 columns, the last vector's
 * columns masked by `last`; inlined with constant mr and nv so the accumulators stay in registers. */
static inline __attribute__((always_inline)) void tile(const int mr, const int nv, int kk, const float *a,
                                                       ptrdiff_t lda, const float *b, ptrdiff_t ldb, float *c,
                                                       ptrdiff_t ldc, __mmask16 last, int accumulate) {
  __m512 acc[TILE_ROWS][2];
  const __mmask16 m0 = nv == 1 ? last : (__mmask16)0xFFFF;
  for (int r = 0; r < mr; r++) {
    acc[r][0] = accumulate ? _mm512_maskz_loadu_ps(m0, c + r * ldc) : _mm512_setzero_ps();
    if (nv == 2) acc[r][1] = accumulate ? _mm512_maskz_loadu_ps(last, c + r * ldc + 16) : _mm512_setzero_ps();
  }
  for (int p = 0; p < kk; p++) {
    const __m512 b0 = _mm512_maskz_loadu_ps(m0, b + p * ldb);
    const __m512 b1 = nv == 2 ? _mm512_maskz_loadu_ps(last, b + p * ldb + 16) : b0;
    for (int r = 0; r < mr; r++) {
      const __m512 av = _mm512_set1_ps(a[r * lda + p]);
      acc[r][0] = _mm512_fmadd_ps(av, b0, acc[r][0]);
      if (nv == 2) acc[r][1] = _mm512_fmadd_ps(av, b1, acc[r][1]);
    }
  }
  for (int r = 0; r < mr; r++) {
    _mm512_mask_storeu_ps(c + r * ldc, m0, acc[r][0]);
    if (nv == 2) _mm512_mask_storeu_ps(c + r * ldc + 16, last, acc[r][1]);
  }
}

#define TILE_CASE(MR)                                                                                    \
  case MR:                                                                                               \
    if (nv == 2) tile(MR, 2, kk, a + i * lda, lda, b + j, ldb, c + i * ldc + j, ldc, last, accumulate); \
    else tile(MR, 1, kk, a + i * lda, lda, b + j, ldb, c + i * ldc + j, ldc, last, accumulate);         \
    break;

/* C (m x n, row stride ldc) = A B, or += when `accumulate`: A m x kk (row stride lda), B kk x n
 * (row stride ldb). */
static void product(int m, int n, int kk, const float *a, ptrdiff_t lda, const float *b, ptrdiff_t ldb, float *c,
                    ptrdiff_t ldc, int accumulate) {
  for (int j = 0; j < n; j += 32) {
    const int rest = n - j, nv = rest > 16 ? 2 : 1;
    const __mmask16 last = lanes(rest > 16 ? rest - 16 : rest);
    for (int i = 0; i < m; i += TILE_ROWS) {
      switch (m - i < TILE_ROWS ? m - i : TILE_ROWS) {
        TILE_CASE(8)
        TILE_CASE(7)
        TILE_CASE(6)
        TILE_CASE(5)
        TILE_CASE(4)
        TILE_CASE(3)
        TILE_CASE(2)
        TILE_CASE(1)
      }
    }
  }
}

/* ---- Packing and storing ---- */

/* dst (hd x tp) = src^T for src t rows of hd floats, `ld` apart; columns >= t are zero. */
static void pack_transposed(const float *src, ptrdiff_t ld, int t, int hd, int tp, float *dst) {
  transpose_words((const uint32_t *)src, ld, t, hd, tp, (uint32_t *)dst);
}

/* dst rows j < t (row stride ld) = src^T for src hd x tp; sums[d] += row d's sum (as a vector
 * over 16 rows d: the sum of the transposed block's columns, token by token). */
static void store_transposed(float *dst, ptrdiff_t ld, const float *src, int t, int tp, int hd, float *sums) {
  for (int d = 0; d < hd; d += 16) {
    const __mmask16 m = lanes(hd - d);
    __m512 sum = _mm512_maskz_loadu_ps(m, sums + d);
    for (int j = 0; j < t; j += 16) {
      __m512i column[16];
      transposed_block(src, hd, tp, d, j, column);
      for (int c = 0; c < 16 && j + c < t; c++) {
        const __m512 values = _mm512_castsi512_ps(column[c]);
        _mm512_mask_storeu_ps(dst + (j + c) * ld + d, m, values);
        sum = _mm512_add_ps(sum, values);
      }
    }
    _mm512_mask_storeu_ps(sums + d, m, sum);
  }
}

/* row[0..<n] *= factor. */
static inline void scale_row(float *row, int n, float factor) {
  const __m512 f = _mm512_set1_ps(factor);
  for (int j = 0; j < n; j += 16) {
    const __mmask16 m = lanes(n - j);
    _mm512_mask_storeu_ps(row + j, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, row + j), f));
  }
}

/* <x, y> over n floats. */
static inline float dot(const float *x, const float *y, int n) {
  __m512 acc = _mm512_setzero_ps();
  for (int j = 0; j < n; j += 16) {
    const __mmask16 m = lanes(n - j);
    acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, x + j), _mm512_maskz_loadu_ps(m, y + j), acc);
  }
  return _mm512_reduce_add_ps(acc);
}

/* ---- Softmax rows (tp floats, t valid) ---- */

/* row = exp(scale * (row - max)) over the valid lanes, 0 in the others; returns the sum and
 * the max in *max_out. */
static inline float exp_row(float *row, int t, int tp, float scale, float *max_out) {
  const int last = (t - 1) / 16 * 16;
  __m512 vmax = _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), valid_lanes(last, t), row + last);
  for (int j = 0; j < last; j += 16) vmax = _mm512_max_ps(vmax, _mm512_loadu_ps(row + j));
  const float m = _mm512_reduce_max_ps(vmax);
  const __m512 mv = _mm512_set1_ps(m), sv = _mm512_set1_ps(scale);
  __m512 sum = _mm512_setzero_ps();
  for (int j = 0; j < tp; j += 16) {
    const __m512 e = _mm512_maskz_mov_ps(valid_lanes(j, t), exp16(_mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(row + j), mv), sv)));
    _mm512_storeu_ps(row + j, e);
    sum = _mm512_add_ps(sum, e);
  }
  *max_out = m;
  return _mm512_reduce_add_ps(sum);
}

/* row = exp(scale * row - lse) over the valid lanes, 0 in the others. */
static inline void probability_row(float *row, int t, int tp, float scale, float lse) {
  const __m512 sc = _mm512_set1_ps(scale), l = _mm512_set1_ps(lse);
  for (int j = 0; j < tp; j += 16) {
    _mm512_storeu_ps(row + j, _mm512_maskz_mov_ps(valid_lanes(j, t), exp16(_mm512_fmsub_ps(_mm512_loadu_ps(row + j), sc, l))));
  }
}

/* dp = scale * p * (dp - rowdot) (0 where p is 0). */
static inline void score_gradient_row(const float *p, float *dp, int tp, float rowdot, float scale) {
  const __m512 sc = _mm512_set1_ps(scale), d = _mm512_set1_ps(rowdot);
  for (int j = 0; j < tp; j += 16) {
    _mm512_storeu_ps(dp + j, _mm512_mul_ps(_mm512_mul_ps(sc, _mm512_loadu_ps(p + j)), _mm512_sub_ps(_mm512_loadu_ps(dp + j), d)));
  }
}

/* ---- Forward and backward of one head ---- */

void lk_attention_f32_forward(const lk_attention_head *head, const float *q, const float *k, const float *v, float *o,
                              float *lse, void *scratch) {
  const int t = head->tokens, hd = head->head_dim, tp = (int)round_up((size_t)t, 16);
  const ptrdiff_t ldq = head->ld_qkv, ldo = head->ld_out;
  scratch_layout l;
  layout_scratch(t, hd, (char *)scratch, &l);
  pack_transposed(k, ldq, t, hd, tp, l.kt);
  for (int i0 = 0; i0 < t; i0 += ROW_BLOCK) {
    const int rb = t - i0 < ROW_BLOCK ? t - i0 : ROW_BLOCK;
    // S = Q K^T (rb x tp), E = exp(scale * (S - max)) in place.
    product(rb, tp, hd, q + i0 * ldq, ldq, l.kt, tp, l.s, tp, 0);
    float inverse[ROW_BLOCK];
    for (int r = 0; r < rb; r++) {
      float m;
      const float sum = exp_row(l.s + r * tp, t, tp, head->scale, &m);
      if (lse) lse[i0 + r] = m * head->scale + logf(sum);
      inverse[r] = 1 / sum;
    }
    // O = E V, each row divided by its sum.
    product(rb, hd, t, l.s, tp, v, ldq, o + i0 * ldo, ldo, 0);
    for (int r = 0; r < rb; r++) scale_row(o + (i0 + r) * ldo, hd, inverse[r]);
  }
}

void lk_attention_f32_backward(const lk_attention_head *head, const float *q, const float *k, const float *v,
                               const float *o, const float *d_o, const float *lse, float *dq, float *dk, float *dv,
                               ptrdiff_t ld_dqkv, float *sum_q, float *sum_k, float *sum_v, void *scratch) {
  const int t = head->tokens, hd = head->head_dim, tp = (int)round_up((size_t)t, 16);
  const ptrdiff_t ldq = head->ld_qkv, ldo = head->ld_out;
  const float scale = head->scale;
  scratch_layout l;
  layout_scratch(t, hd, (char *)scratch, &l);
  pack_transposed(k, ldq, t, hd, tp, l.kt);
  pack_transposed(v, ldq, t, hd, tp, l.vt);
  pack_transposed(q, ldq, t, hd, tp, l.qt);
  pack_transposed(d_o, ldo, t, hd, tp, l.dot);
  memset(l.dkt, 0, (size_t)hd * tp * sizeof(float));
  memset(l.dvt, 0, (size_t)hd * tp * sizeof(float));
  for (int i0 = 0; i0 < t; i0 += ROW_BLOCK) {
    const int rb = t - i0 < ROW_BLOCK ? t - i0 : ROW_BLOCK;
    // P = exp(scale * Q K^T - lse) (rb x tp).
    product(rb, tp, hd, q + i0 * ldq, ldq, l.kt, tp, l.s, tp, 0);
    for (int r = 0; r < rb; r++) probability_row(l.s + r * tp, t, tp, scale, lse[i0 + r]);
    // dV^T += dO^T P.
    product(hd, tp, rb, l.dot + i0, tp, l.s, tp, l.dvt, tp, 1);
    // dP = dO V^T; dS = scale * P * (dP - rowsum(dO * O)) in place.
    product(rb, tp, hd, d_o + i0 * ldo, ldo, l.vt, tp, l.dp, tp, 0);
    for (int r = 0; r < rb; r++) {
      const float rowdot = dot(d_o + (i0 + r) * ldo, o + (i0 + r) * ldo, hd);
      score_gradient_row(l.s + r * tp, l.dp + r * tp, tp, rowdot, scale);
    }
    // dQ = dS K, with its column sums; dK^T += Q^T dS.
    product(rb, hd, t, l.dp, tp, k, ldq, dq + i0 * ld_dqkv, ld_dqkv, 0);
    add_column_sums(sum_q, dq + i0 * ld_dqkv, rb, hd, ld_dqkv);
    product(hd, tp, rb, l.qt + i0, tp, l.dp, tp, l.dkt, tp, 1);
  }
  store_transposed(dk, ld_dqkv, l.dkt, t, tp, hd, sum_k);
  store_transposed(dv, ld_dqkv, l.dvt, t, tp, hd, sum_v);
}

#pragma clang attribute pop
