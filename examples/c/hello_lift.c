/* Trains a tiny LIFT encoder for 5 steps on random data (the README's "Use it from C"). */
#include <lift.h>
#include <stdio.h>
#include <stdlib.h>

#define CHECK(call) do { lift_status s_ = (call); if (s_ != LIFT_OK) { \
  fprintf(stderr, "%s: %s\n", lift_status_name(s_), lift_last_error()); return 1; } } while (0)

int main(void) {
  enum { B = 8, S = 28, D = 16 };  /* images per step, image side, text-embedding dimension */
  static unsigned char images[B * S * S];
  static float texts[B * D];
  for (int i = 0; i < B * S * S; i++) images[i] = (unsigned char)rand();
  for (int i = 0; i < B * D; i++) texts[i] = (float)rand() / RAND_MAX - 0.5f;

  lift_model_config mc = {.struct_size = sizeof mc};
  CHECK(lift_model_config_preset("ViT-XS/7-28", D, &mc));
  lift_model *model;
  CHECK(lift_model_create(&mc, 0, &model));
  lift_train_config tc = {.struct_size = sizeof tc};
  CHECK(lift_train_config_default(&tc));
  tc.total_steps = 5, tc.warmup_steps = 1, tc.batch_capacity = B;
  lift_trainer *trainer;
  CHECK(lift_trainer_create(model, &tc, 0, &trainer));
  lift_step_stats stats = {.struct_size = sizeof stats};
  for (int step = 0; step < 5; step++) {
    CHECK(lift_trainer_step(trainer, images, LIFT_IMAGE_U8_NHWC, sizeof images, texts, B * D, B, &stats));
    printf("liblift %s  step %d  loss %.4f\n", lift_version(), (int)stats.step, stats.loss);
  }
  lift_trainer_free(trainer);
  lift_model_free(model);
  return 0;
}
