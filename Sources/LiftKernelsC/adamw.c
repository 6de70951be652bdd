/* The elementwise AdamW update (see lift_kernels.h). Plain C, vectorised by the compiler for
 * the build's baseline instruction set: the loop is bound by memory bandwidth, not arithmetic. */
#include "lift_kernels.h"

#include <math.h>

#pragma clang fp contract(off)

void lk_adamw_update(const lk_adamw_constants *c, float step_size, float decay, float *restrict p,
                     float *restrict g, float *restrict m, float *restrict v, size_t count) {
  const float b1 = c->beta1, b2 = c->beta2, eps = c->eps, bc = c->inv_sqrt_bc2, scale = c->grad_scale;
  for (size_t i = 0; i < count; i++) {
    const float gi = g[i] * scale;
    g[i] = 0;
    const float mi = m[i] * b1 + (1 - b1) * gi;
    const float vi = v[i] * b2 + (1 - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * decay - step_size * mi / (sqrtf(vi) * bc + eps);
  }
}
