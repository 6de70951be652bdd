/* Five training steps of a small LIFT encoder (examples/c/hello_lift.c). */
#include <lift.h>
#include <stdio.h>

#define CHECK(call) do { if ((call) != LIFT_OK) { fprintf(stderr, "%s\n", lift_last_error()); return 1; } } while (0)

int main(void) {
  enum { B = 8, S = 28, D = 16 };  /* images per step, image side, text-embedding dimension */
  static unsigned char images[B * S * S];
  static float texts[B * D];
  for (int i = 0; i < B * S * S; i++) images[i] = (unsigned char)(i * 37);
  for (int i = 0; i < B * D; i++) texts[i] = (float)((i * 7) % 11) - 5.0f;
  lift_model_config mc = {.struct_size = sizeof mc};
  lift_train_config tc = {.struct_size = sizeof tc};
  lift_step_stats stats = {.struct_size = sizeof stats};
  lift_model *model;
  lift_trainer *trainer;
  CHECK(lift_model_config_preset("ViT-XS/7-28", D, &mc));
  CHECK(lift_model_create(&mc, 0, &model));
  CHECK(lift_train_config_default(&tc));
  tc.total_steps = 5, tc.warmup_steps = 1, tc.batch_capacity = B;
  CHECK(lift_trainer_create(model, &tc, 0, &trainer));
  for (int step = 0; step < 5; step++) {
    CHECK(lift_trainer_step(trainer, images, LIFT_IMAGE_U8_NHWC, sizeof images, texts, B * D, B, &stats));
    printf("liblift %s  step %d  loss %.4f\n", lift_version(), (int)stats.step, stats.loss);
  }
  lift_trainer_free(trainer);
  lift_model_free(model);
  return 0;
}
