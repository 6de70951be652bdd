/* Data-parallel LIFT training over MPI with liblift (which itself links no MPI).
 *
 * Every rank opens the same dataset, builds the same model (same seed) or loads the same
 * checkpoint, and reads its own part of each global batch (lift_loader with rank/workers);
 * lift_trainer_step_distributed does the exact global-batch step through the MPI collectives
 * below. Rank 0 prints progress and writes checkpoints (atomically). Any error on any rank aborts
 * the whole job with a message, so no rank is left waiting in a collective.
 *
 *   mpirun -n 2 ./build/lift_train_mpi --data train.h5 --steps 100 --batch-size 256 --out ckpt.safetensors
 *   mpirun -n 4 --hostfile hosts ./build/lift_train_mpi ... --resume      (any number of ranks)
 */
#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lift.h"

static int rank_ = 0;

static void die(const char *what, lift_status st) {
  fprintf(stderr, "lift_train_mpi: rank %d: %s failed: %s: %s\n", rank_, what, lift_status_name(st), lift_last_error());
  MPI_Abort(MPI_COMM_WORLD, 1);
}

#define CHECK(call)                  \
  do {                               \
    lift_status st_ = (call);        \
    if (st_ != LIFT_OK) die(#call, st_); \
  } while (0)

/* --- lift_comm over MPI_COMM_WORLD --------------------------------------------------------- */

/* Scratch for MPI_Allgatherv's int counts and displacements, allocated once (no allocation
 * inside a training step). */
typedef struct {
  int size;
  int *counts, *displs;
} mpi_context;

static int mpi_allgather_int64(void *ctx, int64_t value, int64_t *all) {
  (void)ctx;
  return MPI_Allgather(&value, 1, MPI_INT64_T, all, 1, MPI_INT64_T, MPI_COMM_WORLD) == MPI_SUCCESS ? 0 : 1;
}

static int mpi_allgatherv_float(void *ctx, const float *send, int64_t count, float *recv, const int64_t *counts) {
  mpi_context *c = ctx;
  int64_t offset = 0;
  for (int r = 0; r < c->size; r++) {
    if (counts[r] > INT_MAX || offset > INT_MAX) return 2; /* beyond MPI's int counts */
    c->counts[r] = (int)counts[r];
    c->displs[r] = (int)offset;
    offset += counts[r];
  }
  return MPI_Allgatherv(send, (int)count, MPI_FLOAT, recv, c->counts, c->displs, MPI_FLOAT, MPI_COMM_WORLD) ==
                 MPI_SUCCESS ? 0 : 1;
}

static int mpi_allreduce_sum_float(void *ctx, float *data, int64_t count) {
  (void)ctx;
  for (int64_t done = 0; done < count;) {
    int n = count - done > INT_MAX ? INT_MAX : (int)(count - done);
    if (MPI_Allreduce(MPI_IN_PLACE, data + done, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD) != MPI_SUCCESS) return 1;
    done += n;
  }
  return 0;
}

/* --- options ------------------------------------------------------------------------------ */

typedef struct {
  const char *data[16];
  int n_data;
  const char *preset, *objective, *out;
  int64_t steps, stop_at, batch, micro, checkpoint_every;
  double lr;
  uint64_t seed;
  int resume;
} options;

static void usage(void) {
  if (rank_ == 0)
    fprintf(stderr, "usage: lift_train_mpi --data FILE [--data FILE ...] [--preset NAME] [--objective contrastive|cosine|sigmoid]\n"
                    "       [--steps N] [--stop-at STEP] [--batch-size GLOBAL]\n"
                    "       [--micro-batch N] [--lr X] [--seed N] [--out CKPT] [--checkpoint-every N] [--resume]\n");
  MPI_Abort(MPI_COMM_WORLD, 2);
}

static options parse(int argc, char **argv) {
  options o = {{0}, 0, "ViT-XS/14-28", "contrastive", "lift-mpi.safetensors", 100, 0, 256, 0, 0, 1e-3, 0, 0};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--resume")) { o.resume = 1; continue; }
    if (!v) usage();
    if (!strcmp(a, "--data") && o.n_data < 16) o.data[o.n_data++] = v;
    else if (!strcmp(a, "--preset")) o.preset = v;
    else if (!strcmp(a, "--objective")) o.objective = v;
    else if (!strcmp(a, "--out")) o.out = v;
    else if (!strcmp(a, "--steps")) o.steps = atoll(v);
    else if (!strcmp(a, "--stop-at")) o.stop_at = atoll(v);
    else if (!strcmp(a, "--batch-size")) o.batch = atoll(v);
    else if (!strcmp(a, "--micro-batch")) o.micro = atoll(v);
    else if (!strcmp(a, "--checkpoint-every")) o.checkpoint_every = atoll(v);
    else if (!strcmp(a, "--lr")) o.lr = atof(v);
    else if (!strcmp(a, "--seed")) o.seed = (uint64_t)atoll(v);
    else usage();
    i++;
  }
  if (o.n_data == 0 || o.steps < 1 || o.batch < 1) usage();
  return o;
}

static void save(lift_trainer *trainer, const options *o, const lift_batch *next_position) {
  char epoch[32], batch[32];
  snprintf(epoch, sizeof epoch, "%lld", (long long)next_position->epoch);
  snprintf(batch, sizeof batch, "%lld", (long long)next_position->batch);
  const char *keys[2] = {"epoch", "batch"}, *values[2] = {epoch, batch};
  CHECK(lift_trainer_save(trainer, o->out, keys, values, 2));
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  int size;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  options o = parse(argc, argv);
  if (o.batch < size) usage();
  int64_t micro = o.micro > 0 ? o.micro : (o.batch + size - 1) / size;

  lift_dataset *ds = NULL;
  CHECK(lift_dataset_open(o.data, (size_t)o.n_data, 0, &ds));
  lift_dataset_info info = {.struct_size = sizeof(lift_dataset_info)};
  CHECK(lift_dataset_get_info(ds, &info));

  lift_trainer *trainer = NULL;
  lift_model *model = NULL;
  int64_t start_epoch = 0, start_batch = 0;
  if (o.resume) {
    CHECK(lift_trainer_load(o.out, micro, 0, &trainer));
    char buf[32];
    size_t len;
    CHECK(lift_trainer_metadata(trainer, "epoch", buf, sizeof buf, &len));
    start_epoch = atoll(buf);
    CHECK(lift_trainer_metadata(trainer, "batch", buf, sizeof buf, &len));
    start_batch = atoll(buf);
    CHECK(lift_trainer_model(trainer, &model));
  } else {
    lift_model_config mc = {.struct_size = sizeof(lift_model_config)};
    CHECK(lift_model_config_preset(o.preset, info.text_dim, &mc));
    if (!strcmp(o.objective, "contrastive")) mc.objective = LIFT_OBJECTIVE_CONTRASTIVE;
    else if (!strcmp(o.objective, "cosine")) mc.objective = LIFT_OBJECTIVE_COSINE;
    else if (!strcmp(o.objective, "sigmoid")) mc.objective = LIFT_OBJECTIVE_SIGMOID;
    else usage();
    CHECK(lift_model_create(&mc, o.seed, &model));
    lift_train_config tc = {.struct_size = sizeof(lift_train_config)};
    CHECK(lift_train_config_default(&tc));
    tc.learning_rate = o.lr;
    tc.total_steps = o.steps;
    tc.warmup_steps = o.steps / 10;
    tc.batch_capacity = micro;
    CHECK(lift_trainer_create(model, &tc, o.seed, &trainer));
  }
  lift_model_config mc = {.struct_size = sizeof(lift_model_config)};
  CHECK(lift_model_get_config(model, &mc));
  lift_train_config tc = {.struct_size = sizeof(lift_train_config)};
  CHECK(lift_trainer_get_config(trainer, &tc));

  lift_loader_options lo = {.struct_size = sizeof(lift_loader_options)};
  CHECK(lift_loader_options_default(&lo));
  lo.batch_size = o.batch;
  lo.image_size = mc.image_size;
  lo.channels = mc.channels;
  lo.seed = o.seed;
  lo.rank = rank_;
  lo.workers = size;
  lo.start_epoch = start_epoch;
  lo.start_batch = start_batch;
  lift_loader *loader = NULL;
  CHECK(lift_loader_create(ds, &lo, &loader));

  mpi_context ctx = {size, malloc(sizeof(int) * (size_t)size), malloc(sizeof(int) * (size_t)size)};
  if (!ctx.counts || !ctx.displs) {
    fprintf(stderr, "lift_train_mpi: out of memory\n");
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  lift_comm comm = {.struct_size = sizeof(lift_comm), .context = &ctx, .rank = rank_, .size = size,
                    .allgather_int64 = mpi_allgather_int64, .allgatherv_float = mpi_allgatherv_float,
                    .allreduce_sum_float = mpi_allreduce_sum_float};
  int64_t step = 0;
  CHECK(lift_trainer_step_count(trainer, &step));
  if (rank_ == 0)
    printf("%d ranks, global batch %lld, %lld images of %dx%dx%d, steps %lld..%lld\n", size, (long long)o.batch,
           (long long)info.images, info.height, info.width, info.channels, (long long)step, (long long)tc.total_steps);
  int64_t per_epoch = 0;
  CHECK(lift_loader_batches_per_epoch(loader, &per_epoch));
  double start = MPI_Wtime();
  int64_t first_step = step;
  lift_batch b = {.struct_size = sizeof(lift_batch)};
  lift_step_stats stats = {.struct_size = sizeof(lift_step_stats)};
  /* --stop-at ends this run early (with a checkpoint); --resume continues the schedule. */
  int64_t end = o.stop_at > 0 && o.stop_at < tc.total_steps ? o.stop_at : tc.total_steps;
  while (step < end) {
    CHECK(lift_loader_next(loader, &b));
    size_t pixels = (size_t)b.count * (size_t)mc.image_size * (size_t)mc.image_size * (size_t)mc.channels;
    CHECK(lift_trainer_step_distributed(trainer, b.images, LIFT_IMAGE_U8_NHWC, pixels, b.texts,
                                        (size_t)b.count * (size_t)info.text_dim, b.count, &comm, &stats));
    step = stats.step;
    /* The data position after this batch, saved with the checkpoint for --resume. */
    int last = b.batch + 1 >= per_epoch;
    lift_batch next = {.struct_size = sizeof(lift_batch)};
    next.epoch = last ? b.epoch + 1 : b.epoch;
    next.batch = last ? 0 : b.batch + 1;
    if (rank_ == 0 && (step % 10 == 0 || step == end))
      printf("step %lld  loss %.4f  lr %.2e  scale %.2f  |g| %.3f  %.1f img/s\n", (long long)step, stats.loss,
             stats.learning_rate, stats.logit_scale, stats.grad_norm,
             (double)((step - first_step) * b.global_count) / (MPI_Wtime() - start));
    if (rank_ == 0 && ((o.checkpoint_every > 0 && step % o.checkpoint_every == 0) || step == end))
      save(trainer, &o, &next);
    fflush(stdout);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  if (rank_ == 0) printf("done: step %lld, loss %.4f, checkpoint %s\n", (long long)step, stats.loss, o.out);
  lift_loader_free(loader);
  lift_trainer_free(trainer);
  lift_model_free(model);
  lift_dataset_free(ds);
  free(ctx.counts);
  free(ctx.displs);
  MPI_Finalize();
  return 0;
}
