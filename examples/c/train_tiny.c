/* Trains a tiny LIFT image encoder for a few steps on random images and random "caption
 * embeddings", checking every status, then saves the weights and a training checkpoint and
 * reloads the checkpoint. Usage: train_tiny OUT_DIR [STEPS] */
#include <stdio.h>
#include <stdlib.h>

#include "lift.h"

#define CHECK(call)                                                                           \
  do {                                                                                        \
    lift_status st_ = (call);                                                                 \
    if (st_ != LIFT_OK) {                                                                     \
      fprintf(stderr, "%s failed: %s: %s\n", #call, lift_status_name(st_), lift_last_error()); \
      goto fail;                                                                              \
    }                                                                                         \
  } while (0)

int main(int argc, char **argv) {
  if (argc < 2 || argc > 3) {
    fprintf(stderr, "usage: %s OUT_DIR [STEPS]\n", argv[0]);
    return 2;
  }
  int steps = argc > 2 ? atoi(argv[2]) : 20;
  if (steps < 1) {
    fprintf(stderr, "STEPS must be >= 1\n");
    return 2;
  }
  char weights[4096], checkpoint[4096];
  snprintf(weights, sizeof weights, "%s/tiny.safetensors", argv[1]);
  snprintf(checkpoint, sizeof checkpoint, "%s/tiny-train.safetensors", argv[1]);

  lift_model *model = NULL;
  lift_trainer *trainer = NULL, *resumed = NULL;
  unsigned char *images = NULL;
  float *texts = NULL;
  int rc = 1;

  /* A small grey-image model: 28 px, patch 7, width 128, 2 blocks, 32-d text embeddings. */
  lift_model_config mc = {.struct_size = sizeof(lift_model_config)};
  CHECK(lift_model_config_preset("ViT-XS/7-28", 32, &mc));
  mc.depth = 2;
  CHECK(lift_model_create(&mc, 42, &model));

  lift_train_config tc = {.struct_size = sizeof(lift_train_config)};
  CHECK(lift_train_config_default(&tc));
  tc.warmup_steps = steps / 4;
  tc.total_steps = steps;
  tc.batch_capacity = 16;
  CHECK(lift_trainer_create(model, &tc, 7, &trainer));

  const int batch = 16, pixels = 28 * 28;
  images = malloc((size_t)batch * pixels);
  texts = malloc(sizeof(float) * (size_t)batch * 32);
  if (!images || !texts) goto fail;
  unsigned s = 12345;
  for (int i = 0; i < batch * pixels; i++) { s = s * 1103515245u + 12345u; images[i] = (unsigned char)(s >> 24); }
  for (int i = 0; i < batch * 32; i++) { s = s * 1103515245u + 12345u; texts[i] = (float)((int)(s >> 16) % 2001 - 1000) / 1000.0f; }

  lift_step_stats stats = {.struct_size = sizeof(lift_step_stats)};
  for (int step = 0; step < steps; step++) {
    CHECK(lift_trainer_step(trainer, images, LIFT_IMAGE_U8_NHWC, (size_t)batch * pixels, texts, (size_t)batch * 32,
                            batch, &stats));
    if (step == 0 || step + 1 == steps)
      printf("step %3lld  loss %.4f  lr %.2e  scale %.2f  |g| %.3f\n", (long long)stats.step, stats.loss,
             stats.learning_rate, stats.logit_scale, stats.grad_norm);
  }

  const char *keys[1] = {"note"}, *values[1] = {"written by train_tiny.c"};
  CHECK(lift_model_save(model, weights));
  CHECK(lift_trainer_save(trainer, checkpoint, keys, values, 1));
  CHECK(lift_trainer_load(checkpoint, 0, 0, &resumed));
  int64_t done = 0;
  CHECK(lift_trainer_step_count(resumed, &done));
  char note[64];
  size_t len = 0;
  CHECK(lift_trainer_metadata(resumed, "note", note, sizeof note, &len));
  printf("saved %s and %s; resumed at step %lld (%s)\n", weights, checkpoint, (long long)done, note);
  if (done != steps) goto fail;
  rc = 0;
fail:
  free(images);
  free(texts);
  lift_trainer_free(resumed);
  lift_trainer_free(trainer);
  lift_model_free(model);
  return rc;
}
