/* Kernels that need instructions Swift cannot name: the fused bfloat16 attention core on
 * AVX512-BF16 dot products (vdpbf16ps), and the MLP activation and LayerNorm on 512-bit vectors;
 * and the thread pool every parallel kernel of liblift runs on. Not part of liblift's C ABI (names start with lk_;
 * liblift.so keeps them local).
 *
 * Callers check lk_cpu_has_avx512_bf16() first: the functions are compiled for that instruction
 * set alone and must not run on a CPU without it (lk_adamw_update and lk_parallel_run excepted: any
 * CPU). Thread-safe: each call works in the scratch it is given; the one global state is
 * lk_parallel_run's thread pool, which serialises its jobs itself. */
#ifndef LIFT_KERNELS_H
#define LIFT_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A part of a parallel job: called once per part index, 0 <= part < parts. */
typedef void (*lk_part_fn)(void *ctx, int part);

/* Calls fn(ctx, part) for every part in 0..<parts and returns when all have returned: part 0
 * on the calling thread, the others on the pool's helper threads (started on first use; an idle
 * helper spins about 0.2 ms before it sleeps). A call made while the pool runs another job
 * (from another thread, or from inside a part) runs all its parts on the calling thread, in
 * order. Any thread may call it. */
void lk_parallel_run(int parts, lk_part_fn fn, void *ctx);

/* Whether this CPU has AVX512F, AVX512BW, AVX512VL and AVX512_BF16 (and the OS saves ZMM state). */
int lk_cpu_has_avx512_bf16(void);

/* One attention head of one image: T tokens, head dimension hd (even), bfloat16 q, k, v with
 * rows `ld_qkv` elements apart, bfloat16 O and dO with rows `ld_out` elements apart.
 * scale = 1 / sqrt(hd). */
typedef struct {
  int tokens;
  int head_dim;
  float scale;
  ptrdiff_t ld_qkv;
  ptrdiff_t ld_out;
} lk_attention_head;

/* Bytes of scratch (64-byte aligned) one call of the forward or backward needs. */
size_t lk_attention_scratch_bytes(int tokens, int head_dim);

/* O = softmax(scale * Q K^T) V, rounded to bfloat16; lse[i] (if not NULL) = log-sum-exp of the
 * scaled scores of row i. The unnormalised probabilities are rounded to bfloat16 for the
 * product with V and each output row is divided by its row sum afterwards. */
void lk_attention_forward(const lk_attention_head *head, const uint16_t *q, const uint16_t *k,
                          const uint16_t *v, uint16_t *o, float *lse, void *scratch);

/* Gradients of the forward, given dO and the forward's O and lse: dq, dk, dv (bfloat16, rows
 * `ld_dqkv` elements apart) and, added into sum_q, sum_k, sum_v (hd floats each), the column
 * sums of the float32 gradients before rounding. P and dS are rounded to bfloat16 before
 * their products; everything else accumulates in float32. */
void lk_attention_backward(const lk_attention_head *head, const uint16_t *q, const uint16_t *k,
                           const uint16_t *v, const uint16_t *o, const uint16_t *d_o, const float *lse,
                           uint16_t *dq, uint16_t *dk, uint16_t *dv, ptrdiff_t ld_dqkv,
                           float *sum_q, float *sum_k, float *sum_v, void *scratch);

/* The same core in float32, for any head dimension (scratch sized by its own function): q, k,
 * v, O and dO float32, dq, dk, dv float32 (rows `ld_dqkv` apart), bias column sums added into
 * sum_q, sum_k, sum_v. Every product accumulates in float32 with fused multiply-adds. */
size_t lk_attention_f32_scratch_bytes(int tokens, int head_dim);
void lk_attention_f32_forward(const lk_attention_head *head, const float *q, const float *k, const float *v, float *o,
                              float *lse, void *scratch);
void lk_attention_f32_backward(const lk_attention_head *head, const float *q, const float *k, const float *v,
                               const float *o, const float *d_o, const float *lse, float *dq, float *dk, float *dv,
                               ptrdiff_t ld_dqkv, float *sum_q, float *sum_k, float *sum_v, void *scratch);

/* The MLP's activation: exact (erf) GELU, or QuickGELU x sigmoid(1.702 x). */
typedef enum { LK_GELU = 0, LK_QUICK_GELU = 1 } lk_activation;

/* y[i] = bfloat16(f(x[i])) for i in 0..<count. */
void lk_activation_forward(lk_activation kind, const uint16_t *x, uint16_t *y, size_t count);

/* Backward through the activation for rows x cols values (rows `cols` apart), one pass over the
 * saved bfloat16 pre-activation x: y = bfloat16(f(x)) again (the input of the next weight
 * gradient), g = dy * f'(x) in float32, dx = bfloat16(g), and bias_sums[j] += the column sums
 * of g (cols floats). */
void lk_activation_backward(lk_activation kind, const float *dy, const uint16_t *x, uint16_t *y, uint16_t *dx,
                            size_t rows, size_t cols, float *bias_sums);

/* The same in float32: y = f(x); and dx = dy * f'(x) written over dy. */
void lk_activation_forward_f32(lk_activation kind, const float *x, float *y, size_t count);
void lk_activation_backward_f32(lk_activation kind, float *dy, const float *x, float *y, size_t rows, size_t cols,
                                float *bias_sums);

/* LayerNorm over rows of `cols` floats (rows contiguous): mean and variance per row in float32,
 * rstd = 1 / sqrt(var + eps), xhat = (x - mean) rstd, y = xhat gamma + beta, written as float32
 * (y_f32) or rounded to bfloat16 (y_bf16): exactly one of the two is non-NULL. y_f32 may alias x;
 * xhat and rstd may be NULL. */
void lk_layernorm_forward(const float *x, size_t rows, size_t cols, const float *gamma, const float *beta, float eps,
                          float *y_f32, uint16_t *y_bf16, float *xhat, float *rstd);

/* y = xhat gamma + beta from a saved xhat (float32 or bfloat16 output as above). */
void lk_layernorm_affine(const float *xhat, size_t rows, size_t cols, const float *gamma, const float *beta,
                         float *y_f32, uint16_t *y_bf16);

/* Backward: dx (+)= rstd (g - mean(g) - xhat mean(g xhat)) with g = dy gamma (added to dx when
 * `accumulate`, else written); dgamma += sum over the rows of dy xhat, dbeta += sum of dy (cols
 * floats each, added row after row). */
void lk_layernorm_backward(const float *dy, const float *xhat, const float *rstd, const float *gamma, size_t rows,
                           size_t cols, float *dx, int accumulate, float *dgamma, float *dbeta);

/* AdamW's per-step constants: betas, eps, 1 / sqrt(1 - beta2^t), and the clipping factor the
 * gradient is scaled by. */
typedef struct {
  float beta1, beta2, eps, inv_sqrt_bc2, grad_scale;
} lk_adamw_constants;

/* For i in 0..<count: g' = grad_scale g[i]; m = beta1 m + (1 - beta1) g'; v = beta2 v +
 * (1 - beta2) g'^2; p = p decay - step_size m / (sqrt(v) inv_sqrt_bc2 + eps); g[i] = 0.
 * Each operation rounds to float32 on its own (no fused multiply-add), so the result does not
 * depend on how the buffer is split. Any CPU. */
void lk_adamw_update(const lk_adamw_constants *c, float step_size, float decay, float *p, float *g, float *m,
                     float *v, size_t count);

#ifdef __cplusplus
}
#endif

#endif
