/* The bfloat16 attention core of one (image, head), fused: every product of forward and backward
 * runs on one register-blocked AVX512-BF16 kernel over operands packed in this file, and the
 * softmax, its gradient, the rounding to bfloat16 and the bias column sums happen between the
 * products while their data is in cache.
 *
 * Query rows are processed in blocks of ROW_BLOCK: the score block (ROW_BLOCK x T floats) stays
 * in the L2 cache for every sequence length a ViT uses, and no T x T matrix is ever kept. Forward
 * keeps only the log-sum-exp per row; backward recomputes the probabilities from it and adds each
 * block's share of dK and dV into float32 accumulators (transposed: hd x T).
 *
 * Word layouts. vdpbf16ps multiplies pairs of bfloat16 values held in one 32-bit word (low half
 * first) and adds both products to a float32 lane, so each product is C (m x n) += A B with
 *   A: m rows of k2 words, word p of row i = (A[i][2p], A[i][2p+1])     ("pairs along k")
 *   B: k2 rows of n words, word (p, j)   = (B[2p][j], B[2p+1][j])       ("pairs across rows")
 * A bfloat16 matrix stored row-major already has the A layout (q, dO and rows of P or dS); the B
 * operands are packed: K^T and V^T (pairs along the head dimension) by a 32-bit transpose, K and V
 * (pairs of tokens) by interleaving two rows, and P and dS by rounding two rows at once. The A
 * operands Q^T and dO^T of the key and value gradients (pairs of tokens) are packed once per head.
 *
 * Numerics: products of bfloat16 values are exact in float32 and accumulate in float32 (the
 * instruction treats denormal inputs as zero and flushes denormal results); exp is the same
 * Cephes-style approximation as liblift's Swift kernels (MathApprox.exp); bfloat16 rounding is to
 * nearest even, NaN kept quiet (BF16.round). */
#include "lift_kernels.h"
#include "avx512_bf16.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

int lk_cpu_has_avx512_bf16(void) {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
}

enum { ROW_BLOCK = 64, TILE_ROWS = 8 };

static inline size_t round_up(size_t x, size_t to) { return (x + to - 1) / to * to; }

/* Scratch sections (bytes, each 64-byte aligned). T tokens, Tp = T rounded up to 16, tw = ceil(T/2)
 * token pairs, hp = hd / 2 dimension pairs. */
typedef struct {
  uint32_t *kp, *vp;     /* hp x Tp: K^T, V^T, pairs along hd (B of S = Q K^T and dP = dO V^T) */
  uint32_t *kn, *vn;     /* tw x hd: K, V, pairs of tokens (B of dQ = dS K and O = P V) */
  uint32_t *qt, *dot;    /* hd x twp: Q^T, dO^T, pairs of tokens (A of dK^T and dV^T), tw rounded up to 16 */
  float *s, *dp;         /* ROW_BLOCK x Tp: scores / probabilities, probability gradients / dS */
  uint32_t *pr;          /* ROW_BLOCK x Tp/2: P or dS rounded, row-major (A of O = P V, dQ = dS K) */
  uint32_t *pn, *dsn;    /* ROW_BLOCK/2 x Tp: P and dS, pairs of rows (B of dV^T, dK^T) */
  float *acc;            /* ROW_BLOCK x hd: O or dQ of the block */
  float *dkt, *dvt;      /* hd x Tp: dK^T, dV^T */
  float *row;            /* ROW_BLOCK: 1 / row sum (forward), rowsum(dO * O) (backward) */
} scratch_layout;

static size_t layout_scratch(int tokens, int head_dim, char *base, scratch_layout *l) {
  size_t t = (size_t)tokens, hd = (size_t)head_dim, tp = round_up(t, 16), tw = (t + 1) / 2, twp = round_up(tw, 16);
  size_t hp = hd / 2;
  size_t offset = 0;
#define TAKE(field, type, count)                                        \
  do {                                                                  \
    if (l) l->field = (type *)(base + offset);                          \
    offset += round_up((count) * sizeof(type), 64);                     \
  } while (0)
  TAKE(kp, uint32_t, hp * tp);
  TAKE(vp, uint32_t, hp * tp);
  TAKE(kn, uint32_t, tw * hd);
  TAKE(vn, uint32_t, tw * hd);
  TAKE(qt, uint32_t, hd * twp);
  TAKE(dot, uint32_t, hd * twp);
  TAKE(s, float, ROW_BLOCK * tp);
  TAKE(dp, float, ROW_BLOCK * tp);
  TAKE(pr, uint32_t, ROW_BLOCK * tp / 2);
  TAKE(pn, uint32_t, ROW_BLOCK / 2 * tp);
  TAKE(dsn, uint32_t, ROW_BLOCK / 2 * tp);
  TAKE(acc, float, ROW_BLOCK * hd);
  TAKE(dkt, float, hd * tp);
  TAKE(dvt, float, hd * tp);
  TAKE(row, float, ROW_BLOCK);
#undef TAKE
  return offset;
}

size_t lk_attention_scratch_bytes(int tokens, int head_dim) {
  if (tokens <= 0 || head_dim <= 0) return 0;
  return layout_scratch(tokens, head_dim, NULL, NULL);
}

#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16"))), \
                             apply_to = function)

/* ---- The product kernel ---- */

/* A TILE_ROWS x 32 (at most) block of C: mr rows, nv vectors of 16 columns, the last vector's
 * columns masked by `last`. Inlined with constant mr and nv, so the accumulators live in
 * registers (up to 16 of the 32 zmm). */
static inline __attribute__((always_inline)) void tile(const int mr, const int nv, int k2, const uint32_t *a,
                                                       ptrdiff_t lda, const uint32_t *b, ptrdiff_t ldb, float *c,
                                                       ptrdiff_t ldc, __mmask16 last, int accumulate) {
  __m512 acc[TILE_ROWS][2];
  const __mmask16 m0 = nv == 1 ? last : (__mmask16)0xFFFF;
  for (int r = 0; r < mr; r++) {
    acc[r][0] = accumulate ? _mm512_maskz_loadu_ps(m0, c + r * ldc) : _mm512_setzero_ps();
    if (nv == 2) acc[r][1] = accumulate ? _mm512_maskz_loadu_ps(last, c + r * ldc + 16) : _mm512_setzero_ps();
  }
  for (int p = 0; p < k2; p++) {
    const __m512bh b0 = (__m512bh)_mm512_maskz_loadu_epi32(m0, b + p * ldb);
    const __m512bh b1 = nv == 2 ? (__m512bh)_mm512_maskz_loadu_epi32(last, b + p * ldb + 16) : b0;
    for (int r = 0; r < mr; r++) {
      const __m512bh av = (__m512bh)_mm512_set1_epi32((int)a[r * lda + p]);
      acc[r][0] = _mm512_dpbf16_ps(acc[r][0], av, b0);
      if (nv == 2) acc[r][1] = _mm512_dpbf16_ps(acc[r][1], av, b1);
    }
  }
  for (int r = 0; r < mr; r++) {
    _mm512_mask_storeu_ps(c + r * ldc, m0, acc[r][0]);
    if (nv == 2) _mm512_mask_storeu_ps(c + r * ldc + 16, last, acc[r][1]);
  }
}

#define TILE_CASE(MR)                                                                                    \
  case MR:                                                                                               \
    if (nv == 2) tile(MR, 2, k2, a + i * lda, lda, b + j, ldb, c + i * ldc + j, ldc, last, accumulate); \
    else tile(MR, 1, k2, a + i * lda, lda, b + j, ldb, c + i * ldc + j, ldc, last, accumulate);         \
    break;

/* C (m x n floats, row stride ldc) = A B, or += when `accumulate`, in the word layouts above:
 * A m x k2 words (row stride lda), B k2 x n words (row stride ldb). */
static void product(int m, int n, int k2, const uint32_t *a, ptrdiff_t lda, const uint32_t *b, ptrdiff_t ldb,
                    float *c, ptrdiff_t ldc, int accumulate) {
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

/* ---- Elementwise helpers ---- */

/* Words (bf16(a[x]), bf16(b[x])) for the 16 lanes x: two rows rounded and interleaved. */
static inline __m512i round_pairs(__m512 a, __m512 b) {
  const __m512i interleave = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
                                              23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  return _mm512_permutexvar_epi16(interleave, (__m512i)_mm512_cvtne2ps_pbh(b, a));
}

/* dst[0..<n] = bfloat16(src[0..<n] * factor). */
static inline void store_rounded(uint16_t *dst, const float *src, int n, float factor) {
  const __m512 f = _mm512_set1_ps(factor);
  for (int j = 0; j < n; j += 16) {
    const __mmask16 m = lanes(n - j);
    _mm256_mask_storeu_epi16(dst + j, m, round16(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, src + j), f)));
  }
}

/* <x, y> over n bfloat16 values, float32 accumulation. */
static inline float dot16(const uint16_t *x, const uint16_t *y, int n) {
  __m512 acc = _mm512_setzero_ps();
  for (int j = 0; j < n; j += 16) {
    const __mmask16 m = lanes(n - j);
    acc = _mm512_fmadd_ps(widen16(x + j, m), widen16(y + j, m), acc);
  }
  return _mm512_reduce_add_ps(acc);
}

/* ---- Packing ---- */

/* dst (hd/2 x tp words) = src^T with pairs along hd: word (p, j) = src[j][2p..2p+1]; columns
 * j >= t are zero. src: t rows of hd bfloat16, `ld` elements apart. */
static void pack_pairs_along_dim(const uint16_t *src, ptrdiff_t ld, int t, int hd, int tp, uint32_t *dst) {
  transpose_words((const uint32_t *)src, ld / 2, t, hd / 2, tp, dst);
}

/* dst (ceil(t/2) x hd words): word (p, d) = (src[2p][d], src[2p+1][d]), a missing last row 0. */
static void pack_token_pairs(const uint16_t *src, ptrdiff_t ld, int t, int hd, uint32_t *dst) {
  for (int p = 0; p < (t + 1) / 2; p++) {
    const uint16_t *r0 = src + 2 * p * ld, *r1 = 2 * p + 1 < t ? r0 + ld : NULL;
    for (int d = 0; d < hd; d += 16) {
      const __mmask16 m = lanes(hd - d);
      const __m512i lo = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, r0 + d));
      const __m512i hi = r1 ? _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, r1 + d)) : _mm512_setzero_si512();
      _mm512_mask_storeu_epi32(dst + p * hd + d, m, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
    }
  }
}

/* dst (hd x twp words, tw = ceil(t/2) token pairs rounded up to twp, a multiple of 16): word
 * (d, p) = (src[2p][d], src[2p+1][d]), a missing last row 0, columns >= tw 0. The token pairs
 * are built row-major in `pairs` (tw x hd words of scratch), then transposed. */
static void pack_token_pairs_transposed(const uint16_t *src, ptrdiff_t ld, int t, int hd, uint32_t *pairs,
                                        uint32_t *dst) {
  const int tw = (t + 1) / 2;
  pack_token_pairs(src, ld, t, hd, pairs);
  transpose_words(pairs, hd, tw, hd, (int)round_up((size_t)tw, 16), dst);
}

/* ---- Softmax rows (tp floats, t valid; lanes t..<tp are zero on input) ---- */

/* out = bf16(exp(scale * (row - max))) over the valid lanes, 0 in the others (tp values);
 * returns the sum of the unrounded exponentials and the max in *max_out. */
static inline float exp_row(const float *row, int t, int tp, float scale, uint16_t *out, float *max_out) {
  const int last = (t - 1) / 16 * 16;
  __m512 vmax = _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), valid_lanes(last, t), row + last);
  for (int j = 0; j < last; j += 16) vmax = _mm512_max_ps(vmax, _mm512_loadu_ps(row + j));
  const float m = _mm512_reduce_max_ps(vmax);
  const __m512 mv = _mm512_set1_ps(m), sv = _mm512_set1_ps(scale);
  __m512 sum = _mm512_setzero_ps();
  for (int j = 0; j < tp; j += 16) {
    const __m512 e = _mm512_maskz_mov_ps(valid_lanes(j, t), exp16(_mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(row + j), mv), sv)));
    _mm256_storeu_si256((__m256i *)(out + j), round16(e));
    sum = _mm512_add_ps(sum, e);
  }
  *max_out = m;
  return _mm512_reduce_add_ps(sum);
}

/* Rows r and r + 1 of P = exp(scale * S - lse) in place (float32, 0 in the padding lanes), and
 * their words (P[r][j], P[r+1][j]) in pairs; `second` = 0 when row r is the block's last (its
 * partner is a zero row). */
static inline void probability_row_pair(float *s0, float *s1, int second, int t, int tp, float scale, float lse0,
                                        float lse1, uint32_t *pairs) {
  const __m512 sc = _mm512_set1_ps(scale), l0 = _mm512_set1_ps(lse0), l1 = _mm512_set1_ps(lse1);
  for (int j = 0; j < tp; j += 16) {
    const __mmask16 valid = valid_lanes(j, t);
    const __m512 p0 = _mm512_maskz_mov_ps(valid, exp16(_mm512_fmsub_ps(_mm512_loadu_ps(s0 + j), sc, l0)));
    const __m512 p1 = second ? _mm512_maskz_mov_ps(valid, exp16(_mm512_fmsub_ps(_mm512_loadu_ps(s1 + j), sc, l1)))
                             : _mm512_setzero_ps();
    _mm512_storeu_ps(s0 + j, p0);
    if (second) _mm512_storeu_ps(s1 + j, p1);
    _mm512_storeu_si512(pairs + j, round_pairs(p0, p1));
  }
}

/* dS = scale * P * (dP - rowdot) for rows r and r + 1 (0 in the padding lanes, where P is 0),
 * rounded: row-major into ds0 and ds1, and as word pairs; `second` as above. */
static inline void score_gradient_row_pair(const float *p0, const float *p1, const float *dp0, const float *dp1,
                                           int second, int tp, float rowdot0, float rowdot1, float scale, uint16_t *ds0,
                                           uint16_t *ds1, uint32_t *pairs) {
  const __m512 sc = _mm512_set1_ps(scale), d0 = _mm512_set1_ps(rowdot0), d1 = _mm512_set1_ps(rowdot1);
  for (int j = 0; j < tp; j += 16) {
    const __m512 g0 = _mm512_mul_ps(_mm512_mul_ps(sc, _mm512_loadu_ps(p0 + j)), _mm512_sub_ps(_mm512_loadu_ps(dp0 + j), d0));
    const __m512 g1 = second ? _mm512_mul_ps(_mm512_mul_ps(sc, _mm512_loadu_ps(p1 + j)), _mm512_sub_ps(_mm512_loadu_ps(dp1 + j), d1))
                             : _mm512_setzero_ps();
    _mm256_storeu_si256((__m256i *)(ds0 + j), round16(g0));
    if (second) _mm256_storeu_si256((__m256i *)(ds1 + j), round16(g1));
    _mm512_storeu_si512(pairs + j, round_pairs(g0, g1));
  }
}

/* ---- Forward and backward of one head ---- */

void lk_attention_forward(const lk_attention_head *head, const uint16_t *q, const uint16_t *k, const uint16_t *v,
                          uint16_t *o, float *lse, void *scratch) {
  const int t = head->tokens, hd = head->head_dim, tp = (int)round_up((size_t)t, 16), tw = (t + 1) / 2;
  const ptrdiff_t ldq = head->ld_qkv;
  scratch_layout l;
  layout_scratch(t, hd, (char *)scratch, &l);
  pack_pairs_along_dim(k, ldq, t, hd, tp, l.kp);
  pack_token_pairs(v, ldq, t, hd, l.vn);
  for (int i0 = 0; i0 < t; i0 += ROW_BLOCK) {
    const int rb = t - i0 < ROW_BLOCK ? t - i0 : ROW_BLOCK;
    // S = Q K^T (rb x tp); E = exp(scale * (S - max)) rounded row by row into pr.
    product(rb, tp, hd / 2, (const uint32_t *)(q + i0 * ldq), ldq / 2, l.kp, tp, l.s, tp, 0);
    for (int r = 0; r < rb; r++) {
      float m;
      const float sum = exp_row(l.s + r * tp, t, tp, head->scale, (uint16_t *)(l.pr + r * tp / 2), &m);
      if (lse) lse[i0 + r] = m * head->scale + logf(sum);
      l.row[r] = 1 / sum;
    }
    // O = E V, each row divided by its sum, rounded.
    product(rb, hd, tw, l.pr, tp / 2, l.vn, hd, l.acc, hd, 0);
    for (int r = 0; r < rb; r++) store_rounded(o + (i0 + r) * head->ld_out, l.acc + r * hd, hd, l.row[r]);
  }
}

/* dst rows j < t (row stride ld) = bfloat16(src^T) for src hd x tp floats; sums[d] += row d's
 * sum (as a vector over 16 rows d: the sum of the transposed block's columns, token by token). */
static void store_transposed(uint16_t *dst, ptrdiff_t ld, const float *src, int t, int tp, int hd, float *sums) {
  for (int d = 0; d < hd; d += 16) {
    const __mmask16 m = lanes(hd - d);
    __m512 sum = _mm512_maskz_loadu_ps(m, sums + d);
    for (int j = 0; j < t; j += 16) {
      __m512i column[16];
      transposed_block(src, hd, tp, d, j, column);
      for (int c = 0; c < 16 && j + c < t; c++) {
        const __m512 values = _mm512_castsi512_ps(column[c]);
        _mm256_mask_storeu_epi16(dst + (j + c) * ld + d, m, round16(values));
        sum = _mm512_add_ps(sum, values);
      }
    }
    _mm512_mask_storeu_ps(sums + d, m, sum);
  }
}

void lk_attention_backward(const lk_attention_head *head, const uint16_t *q, const uint16_t *k, const uint16_t *v,
                           const uint16_t *o, const uint16_t *d_o, const float *lse, uint16_t *dq, uint16_t *dk,
                           uint16_t *dv, ptrdiff_t ld_dqkv, float *sum_q, float *sum_k, float *sum_v, void *scratch) {
  const int t = head->tokens, hd = head->head_dim, tp = (int)round_up((size_t)t, 16), tw = (t + 1) / 2,
            twp = (int)round_up((size_t)tw, 16);
  const ptrdiff_t ldq = head->ld_qkv, ldo = head->ld_out;
  const float scale = head->scale;
  scratch_layout l;
  layout_scratch(t, hd, (char *)scratch, &l);
  pack_pairs_along_dim(k, ldq, t, hd, tp, l.kp);
  pack_pairs_along_dim(v, ldq, t, hd, tp, l.vp);
  pack_token_pairs(k, ldq, t, hd, l.kn);
  // dK^T's accumulator is free until it is zeroed: scratch for the token pairs (tw x hd <= hd x Tp).
  pack_token_pairs_transposed(q, ldq, t, hd, (uint32_t *)l.dkt, l.qt);
  pack_token_pairs_transposed(d_o, ldo, t, hd, (uint32_t *)l.dkt, l.dot);
  memset(l.dkt, 0, (size_t)hd * tp * sizeof(float));
  memset(l.dvt, 0, (size_t)hd * tp * sizeof(float));
  for (int i0 = 0; i0 < t; i0 += ROW_BLOCK) {
    const int rb = t - i0 < ROW_BLOCK ? t - i0 : ROW_BLOCK, pairs = (rb + 1) / 2;
    // P = exp(scale * Q K^T - lse) (rb x tp), also as row pairs (an odd block's last row is paired with zeros).
    product(rb, tp, hd / 2, (const uint32_t *)(q + i0 * ldq), ldq / 2, l.kp, tp, l.s, tp, 0);
    for (int r = 0; r < rb; r += 2) {
      const int second = r + 1 < rb;
      probability_row_pair(l.s + r * tp, l.s + (r + 1) * tp, second, t, tp, scale, lse[i0 + r],
                           second ? lse[i0 + r + 1] : 0, l.pn + r / 2 * tp);
    }
    // dV^T += dO^T P.
    product(hd, tp, pairs, l.dot + i0 / 2, twp, l.pn, tp, l.dvt, tp, 1);
    // dP = dO V^T; dS = scale * P * (dP - rowsum(dO * O)), rounded row-major and as row pairs.
    product(rb, tp, hd / 2, (const uint32_t *)(d_o + i0 * ldo), ldo / 2, l.vp, tp, l.dp, tp, 0);
    for (int r = 0; r < rb; r += 2) {
      const int second = r + 1 < rb;
      const float dot0 = dot16(d_o + (i0 + r) * ldo, o + (i0 + r) * ldo, hd);
      const float dot1 = second ? dot16(d_o + (i0 + r + 1) * ldo, o + (i0 + r + 1) * ldo, hd) : 0;
      uint16_t *ds = (uint16_t *)l.pr;
      score_gradient_row_pair(l.s + r * tp, l.s + (r + 1) * tp, l.dp + r * tp, l.dp + (r + 1) * tp, second, tp, dot0,
                              dot1, scale, ds + r * tp, ds + (r + 1) * tp, l.dsn + r / 2 * tp);
    }
    // dQ = dS K (rounded, column sums); dK^T += Q^T dS.
    product(rb, hd, tw, l.pr, tp / 2, l.kn, hd, l.acc, hd, 0);
    for (int r = 0; r < rb; r++) store_rounded(dq + (i0 + r) * ld_dqkv, l.acc + r * hd, hd, 1);
    add_column_sums(sum_q, l.acc, rb, hd, hd);
    product(hd, tp, pairs, l.qt + i0 / 2, twp, l.dsn, tp, l.dkt, tp, 1);
  }
  store_transposed(dk, ld_dqkv, l.dkt, t, tp, hd, sum_k);
  store_transposed(dv, ld_dqkv, l.dvt, t, tp, hd, sum_v);
}

#pragma clang attribute pop
