/* Checks the versioned ABI from C, as a program built against lift.h sees it:
 *   - the library's version equals the header's;
 *   - lift_struct_size reports sizeof of every struct of this header;
 *   - a struct of another size (an older or newer lift.h, or struct_size left unset) is refused
 *     with LIFT_ERR_ARGUMENT and a message naming the struct and both sizes, and the library
 *     writes nothing into it (canary bytes past the declared size stay intact);
 *   - the benchmark-suite calls as C sees them: defaults, errors naming the path, texts by size query.
 * Exit status 0 when every check passes; each failure is printed. */
#define _POSIX_C_SOURCE 200809L /* mkdtemp */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lift.h"

static int failures = 0;

/* lift_model_config as liblift 0.2's lift.h declared it (it ended at `precision`), followed by
 * canary bytes where 0.3 appended fields. */
typedef struct {
  size_t struct_size;
  int32_t image_size, channels, patch, width, depth, heads, mlp_ratio, head_layers, text_dim, pool, objective;
  float image_mean[3], image_std[3];
  int32_t precision;
  unsigned char canary[32];
} model_config_0_2;

#define EXPECT(cond, ...)                          \
  do {                                             \
    if (!(cond)) {                                 \
      fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
      fprintf(stderr, __VA_ARGS__);                \
      fputc('\n', stderr);                         \
      failures++;                                  \
    }                                              \
  } while (0)

/* The call refused a struct whose struct_size is `declared` for C type `name` of `actual` bytes. */
static void expect_refused(lift_status st, const char *name, size_t declared, size_t actual) {
  char sizes[2][32];
  snprintf(sizes[0], sizeof sizes[0], "%zu", declared);
  snprintf(sizes[1], sizeof sizes[1], "%zu", actual);
  const char *message = lift_last_error();
  EXPECT(st == LIFT_ERR_ARGUMENT, "%s of size %zu: status %s, expected LIFT_ERR_ARGUMENT", name, declared,
         lift_status_name(st));
  EXPECT(strstr(message, name) && strstr(message, sizes[0]) && strstr(message, sizes[1]),
         "message does not name %s, %s and %s: \"%s\"", name, sizes[0], sizes[1], message);
}

/* An "old" lift_train_config: this header's struct without its last field, followed by canary
 * bytes where a newer library would write that field. */
typedef struct {
  size_t struct_size;
  double learning_rate, beta1, beta2, eps, weight_decay, grad_clip;
  int64_t warmup_steps, total_steps;
  unsigned char canary[sizeof(int64_t)];
} old_train_config;

static void versions(void) {
  EXPECT(lift_version_number() == LIFT_VERSION_NUMBER, "lift_version_number() %u != LIFT_VERSION_NUMBER %u",
         (unsigned)lift_version_number(), (unsigned)LIFT_VERSION_NUMBER);
  EXPECT(strcmp(lift_version(), LIFT_VERSION_STRING) == 0, "lift_version() %s != LIFT_VERSION_STRING %s",
         lift_version(), LIFT_VERSION_STRING);
}

static void struct_sizes(void) {
  const struct { const char *name; size_t size; } known[] = {
    {"lift_model_config", sizeof(lift_model_config)},     {"lift_tensor_info", sizeof(lift_tensor_info)},
    {"lift_train_config", sizeof(lift_train_config)},     {"lift_step_stats", sizeof(lift_step_stats)},
    {"lift_dataset_info", sizeof(lift_dataset_info)},     {"lift_loader_options", sizeof(lift_loader_options)},
    {"lift_batch", sizeof(lift_batch)},                   {"lift_comm", sizeof(lift_comm)},
    {"lift_import_options", sizeof(lift_import_options)}, {"lift_image_info", sizeof(lift_image_info)},
    {"lift_preprocess_options", sizeof(lift_preprocess_options)}, {"lift_source_info", sizeof(lift_source_info)},
    {"lift_suite_options", sizeof(lift_suite_options)}, {"lift_suite_run_options", sizeof(lift_suite_run_options)},
  };
  for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
    size_t size = 0;
    EXPECT(lift_struct_size(known[i].name, &size) == LIFT_OK, "lift_struct_size(%s): %s", known[i].name,
           lift_last_error());
    EXPECT(size == known[i].size, "%s: library %zu, header %zu", known[i].name, size, known[i].size);
  }
  size_t size = 0;
  EXPECT(lift_struct_size("lift_nothing", &size) == LIFT_ERR_NOT_FOUND, "unknown struct name accepted");
}

static void refused_sizes(void) {
  /* An older header's struct: refused, nothing written past its end. */
  old_train_config old;
  memset(&old, 0, sizeof old);
  old.struct_size = offsetof(old_train_config, canary);
  memset(old.canary, 0xA5, sizeof old.canary);
  expect_refused(lift_train_config_default((lift_train_config *)&old), "lift_train_config", old.struct_size,
                 sizeof(lift_train_config));
  for (size_t i = 0; i < sizeof old.canary; i++) EXPECT(old.canary[i] == 0xA5, "canary byte %zu overwritten", i);
  EXPECT(old.learning_rate == 0, "a refused struct was filled");

  /* struct_size left at zero, and a bigger (newer) struct, in and out. */
  lift_model_config mc;
  memset(&mc, 0, sizeof mc);
  expect_refused(lift_model_config_preset("ViT-XS/7-28", 16, &mc), "lift_model_config", 0, sizeof mc);
  mc.struct_size = sizeof mc;
  EXPECT(lift_model_config_preset("ViT-XS/7-28", 16, &mc) == LIFT_OK, "preset: %s", lift_last_error());
  mc.struct_size = sizeof mc + 8;
  lift_model *model = NULL;
  expect_refused(lift_model_create(&mc, 0, &model), "lift_model_config", sizeof mc + 8, sizeof mc);
  EXPECT(model == NULL, "a model was created from a refused config");
  mc.struct_size = sizeof mc;
  EXPECT(lift_model_create(&mc, 0, &model) == LIFT_OK, "create: %s", lift_last_error());

  lift_tensor_info info = {.struct_size = sizeof info - 8};
  expect_refused(lift_model_tensor_info(model, 0, &info), "lift_tensor_info", sizeof info - 8, sizeof info);

  /* An optional output: NULL is fine, a wrong size is refused before the step runs. */
  lift_train_config tc = {.struct_size = sizeof tc};
  EXPECT(lift_train_config_default(&tc) == LIFT_OK, "default: %s", lift_last_error());
  tc.batch_capacity = 2;
  lift_trainer *trainer = NULL;
  EXPECT(lift_trainer_create(model, &tc, 0, &trainer) == LIFT_OK, "trainer: %s", lift_last_error());
  uint8_t images[2 * 28 * 28] = {0};
  for (size_t i = 0; i < sizeof images; i++) images[i] = (uint8_t)(i * 7);
  float texts[2 * 16];
  for (size_t i = 0; i < 32; i++) texts[i] = (float)((i * 37) % 11) - 5.0f;
  lift_step_stats stats = {.struct_size = 8};
  expect_refused(lift_trainer_step(trainer, images, LIFT_IMAGE_U8_NHWC, sizeof images, texts, 32, 2, &stats),
                 "lift_step_stats", 8, sizeof stats);
  int64_t step = -1;
  lift_trainer_step_count(trainer, &step);
  EXPECT(step == 0, "a step ran although its stats struct was refused");
  EXPECT(lift_trainer_step(trainer, images, LIFT_IMAGE_U8_NHWC, sizeof images, texts, 32, 2, NULL) == LIFT_OK,
         "step: %s", lift_last_error());
  lift_trainer_free(trainer);
  lift_model_free(model);
}

/* A program built against the 0.2 header keeps working: its smaller lift_model_config is
 * filled (only its own bytes) and accepted (the newer fields take their defaults). */
static void older_struct_accepted(void) {
  model_config_0_2 old;
  memset(&old, 0, sizeof old);
  memset(old.canary, 0xA5, sizeof old.canary);
  old.struct_size = offsetof(model_config_0_2, canary);
  EXPECT(lift_model_config_preset("ViT-XS/7-28", 16, (lift_model_config *)&old) == LIFT_OK, "0.2 preset: %s",
         lift_last_error());
  for (size_t i = 0; i < sizeof old.canary; i++) EXPECT(old.canary[i] == 0xA5, "0.2 struct: byte %zu past it written", i);
  EXPECT(old.width == 128 && old.text_dim == 16 && old.struct_size == offsetof(model_config_0_2, canary),
         "0.2 preset filled width %d, text_dim %d, struct_size %zu", old.width, old.text_dim, old.struct_size);
  lift_model *model = NULL;
  EXPECT(lift_model_create((const lift_model_config *)&old, 0, &model) == LIFT_OK, "0.2 create: %s", lift_last_error());
  lift_model_config now = {.struct_size = sizeof now};
  EXPECT(lift_model_get_config(model, &now) == LIFT_OK, "get_config: %s", lift_last_error());
  EXPECT(now.no_ln_pre == 0 && now.registers == 0 && now.layer_norm_eps == 1e-5f && now.width == 128,
         "a 0.2 config made another model");
  lift_model_free(model);
  /* 0.2's lift_train_config ended at batch_capacity: its defaults come back, locking stays off. */
  struct { lift_train_config now; unsigned char canary[16]; } tc;
  memset(&tc, 0xA5, sizeof tc);
  tc.now.struct_size = offsetof(lift_train_config, lock_image);
  EXPECT(lift_train_config_default(&tc.now) == LIFT_OK, "0.2 train config: %s", lift_last_error());
  EXPECT(tc.now.learning_rate == 1e-3 && tc.now.batch_capacity == 64, "0.2 train config not filled");
  EXPECT(((unsigned char *)&tc.now)[offsetof(lift_train_config, lock_image)] == 0xA5, "0.2 train config: written past its end");
  /* Smaller than any release's struct: refused. */
  old.struct_size = 72;
  expect_refused(lift_model_config_preset("ViT-XS/7-28", 16, (lift_model_config *)&old), "lift_model_config", 72,
                 sizeof(lift_model_config));
}

/* Benchmark suites from C: defaults, refused sizes, errors naming the path, the texts listed. */
static void suites(void) {
  lift_suite_options bad = {.struct_size = sizeof bad - 8};
  expect_refused(lift_suite_options_default(&bad), "lift_suite_options", sizeof bad - 8, sizeof bad);
  lift_suite_run_options run = {.struct_size = sizeof run};
  EXPECT(lift_suite_run_options_default(&run) == LIFT_OK && run.batch == 128 && run.filter == LIFT_FILTER_BICUBIC,
         "run options default: %s", lift_last_error());

  char root[] = "/tmp/lift-abi-suite-XXXXXX";
  EXPECT(mkdtemp(root) != NULL, "mkdtemp");
  char path[256];
  snprintf(path, sizeof path, "%s/cat", root);
  mkdir(path, 0700);
  snprintf(path, sizeof path, "%s/cat/a.png", root);  /* opening a suite lists images, never decodes them */
  FILE *f = fopen(path, "w");
  if (f) fclose(f);

  lift_suite_options o = {.struct_size = sizeof o};
  EXPECT(lift_suite_options_default(&o) == LIFT_OK, "options default: %s", lift_last_error());
  lift_suite *suite = NULL;
  EXPECT(lift_suite_open(&o, &suite) == LIFT_ERR_ARGUMENT && suite == NULL, "a suite without a name was opened");
  o.name = "imagenet";
  o.root = "/nonexistent/lift-abi";
  EXPECT(lift_suite_open(&o, &suite) == LIFT_ERR_IO && strstr(lift_last_error(), "/nonexistent/lift-abi"),
         "missing root: %s", lift_last_error());
  o.root = root;
  EXPECT(lift_suite_open(&o, &suite) == LIFT_OK, "open: %s", lift_last_error());
  int64_t images = 0, texts = 0;
  EXPECT(lift_suite_counts(suite, &images, &texts) == LIFT_OK && images == 1 && texts == 1, "counts %lld %lld",
         (long long)images, (long long)texts);
  size_t len = 0;
  EXPECT(lift_suite_text(suite, 0, NULL, 0, &len) == LIFT_ERR_BUFFER && len == strlen("It is a photo of a cat"),
         "size query: %zu", len);
  char text[64];
  EXPECT(lift_suite_text(suite, 0, text, sizeof text, &len) == LIFT_OK && strcmp(text, "It is a photo of a cat") == 0,
         "text: %s", text);
  EXPECT(lift_suite_text(suite, 1, text, sizeof text, &len) == LIFT_ERR_ARGUMENT, "text 1 of 1 was read");
  EXPECT(lift_suite_result(suite, 0, text, sizeof text, &len) == LIFT_ERR_STATE, "a result before any evaluation");
  lift_suite_free(suite);
  lift_suite_free(NULL);
  unlink(path);
  snprintf(path, sizeof path, "%s/cat", root);
  rmdir(path);
  rmdir(root);
}

/* lift_file_check from a C program: a file that passes, one liblift refuses, one that crashes
 * libhdf5 in the checking process (the caller survives), and the arguments it refuses. */
static void file_check(void) {
  char summary[128];
  size_t len = 0;
  const char *asset = LIFT_ROOT_DIR "/assets/fashion-mnist-captions.h5";
  EXPECT(lift_file_check(asset, LIFT_FILE_CAPTIONS, 60, summary, sizeof summary, &len) == LIFT_OK, "%s", lift_last_error());
  EXPECT(strcmp(summary, "captions file of 160 captions, 10 classes") == 0 && len == strlen(summary), "summary: %s", summary);
  EXPECT(lift_file_check(asset, LIFT_FILE_STORE, 60, NULL, 0, NULL) == LIFT_ERR_FORMAT &&
             strstr(lift_last_error(), "is not an embedding store"),
         "wrong kind: %s", lift_last_error());
  const char *crash = LIFT_ROOT_DIR "/Fuzz/libhdf5/strings/crash-vlen-heap.h5";
  EXPECT(lift_file_check(crash, LIFT_FILE_ANY, 60, summary, sizeof summary, &len) == LIFT_ERR_UNSAFE &&
             strstr(lift_last_error(), "crashed the checking process"),
         "crash: %s", lift_last_error());
  EXPECT(lift_file_check(asset, LIFT_FILE_ANY, 0, NULL, 0, NULL) == LIFT_ERR_ARGUMENT, "timeout 0 accepted");
  EXPECT(lift_file_check(asset, (lift_file_kind)99, 60, NULL, 0, NULL) == LIFT_ERR_ARGUMENT, "kind 99 accepted");
  EXPECT(lift_file_check(NULL, LIFT_FILE_ANY, 60, NULL, 0, NULL) == LIFT_ERR_ARGUMENT, "NULL path accepted");
  /* A summary cut to the buffer, NUL-terminated, with the full length reported. */
  EXPECT(lift_file_read_all(asset, LIFT_FILE_ANY, summary, 8, &len) == LIFT_OK && strcmp(summary, "caption") == 0 &&
             len == strlen("captions file of 160 captions, 10 classes"),
         "cut summary: %s (%zu)", summary, len);
}

int main(void) {
  versions();
  file_check();
  struct_sizes();
  refused_sizes();
  older_struct_accepted();
  suites();
  if (failures) {
    fprintf(stderr, "abi_test: %d failures\n", failures);
    return 1;
  }
  printf("abi_test: liblift %s, every struct size checked\n", lift_version());
  return 0;
}
