/* The worker threads behind liblift's Parallel: lk_parallel_run(parts, fn, ctx) calls fn(ctx, p)
 * for every part p, part 0 on the calling thread and part p > 0 on helper thread p.
 *
 * Why not libdispatch's concurrentPerform: on Linux it wakes its workers through the kernel on
 * every call, so a two-part job of 50 microseconds per part took longer than running both parts
 * on one thread, and a training step makes hundreds of such calls. Here an idle helper spins for
 * SPIN_NS on its own mailbox before it sleeps on a condition variable, as OpenMP runtimes do, so
 * back-to-back jobs start within a few hundred nanoseconds.
 *
 * One job at a time: a caller that finds the pool busy (another host thread's job, or a part
 * calling lk_parallel_run again) runs all its parts itself, in order. Each part index is run
 * exactly once either way, so results depend on the part count only, not on which thread ran a
 * part. Helpers are started on first use and live until the process exits; a forked child starts
 * its own (the parent's helpers do not exist there). */
#include "lift_kernels.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

enum { MAX_HELPERS = 255 };
#define SPIN_NS 200000 /* how long an idle helper polls its mailbox before sleeping */

/* One helper's mailbox: the caller writes fn, ctx and part, then bumps `job` (release); the
 * helper runs the part and decrements the pool's `remaining` (release). The caller rewrites a
 * mailbox only after `remaining` reached zero, so a helper never reads a half-written one. */
typedef struct {
  _Atomic unsigned job;
  int sleeping; /* guarded by the pool's mutex */
  lk_part_fn fn;
  void *ctx;
  int part;
} mailbox;

static struct {
  pthread_mutex_t mutex;
  pthread_cond_t wake;
  atomic_flag busy;
  _Atomic int remaining;
  int helpers; /* started; only the caller holding `busy` starts more */
  mailbox box[MAX_HELPERS];
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, ATOMIC_FLAG_INIT, 0, 0, {{0}}};

static pthread_once_t fork_handler_once = PTHREAD_ONCE_INIT;

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

static inline int64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* Waits until box->job differs from `seen`: spins, then sleeps. Returns the new job number. */
static unsigned wait_for_job(mailbox *box, unsigned seen) {
  const int64_t give_up = now_ns() + SPIN_NS;
  for (int spin = 0;; spin++) {
    const unsigned job = atomic_load_explicit(&box->job, memory_order_acquire);
    if (job != seen) return job;
    if ((spin & 255) == 255 && now_ns() > give_up) break;
    cpu_relax();
  }
  pthread_mutex_lock(&pool.mutex);
  box->sleeping = 1;
  unsigned job;
  while ((job = atomic_load_explicit(&box->job, memory_order_acquire)) == seen) pthread_cond_wait(&pool.wake, &pool.mutex);
  box->sleeping = 0;
  pthread_mutex_unlock(&pool.mutex);
  return job;
}

static void *helper_main(void *arg) {
  mailbox *box = arg;
  unsigned seen = 0;
  for (;;) {
    seen = wait_for_job(box, seen);
    box->fn(box->ctx, box->part);
    atomic_fetch_sub_explicit(&pool.remaining, 1, memory_order_release);
  }
  return NULL;
}

/* In a forked child the helpers are gone: forget them (their mailboxes are reset) and the lock. */
static void after_fork_in_child(void) {
  pthread_mutex_t fresh_mutex = PTHREAD_MUTEX_INITIALIZER;
  pthread_cond_t fresh_cond = PTHREAD_COND_INITIALIZER;
  pool.mutex = fresh_mutex;
  pool.wake = fresh_cond;
  atomic_flag_clear(&pool.busy);
  atomic_store(&pool.remaining, 0);
  for (int i = 0; i < pool.helpers; i++) {
    atomic_store(&pool.box[i].job, 0);
    pool.box[i].sleeping = 0;
  }
  pool.helpers = 0;
}

static void install_fork_handler(void) { pthread_atfork(NULL, NULL, after_fork_in_child); }

/* Starts helpers until `wanted` run (the caller holds `busy`); returns how many run. */
static int start_helpers(int wanted) {
  if (wanted > MAX_HELPERS) wanted = MAX_HELPERS;
  pthread_once(&fork_handler_once, install_fork_handler);
  while (pool.helpers < wanted) {
    pthread_t thread;
    pthread_attr_t attr;
    if (pthread_attr_init(&attr) != 0) break;
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    const int failed = pthread_create(&thread, &attr, helper_main, &pool.box[pool.helpers]);
    pthread_attr_destroy(&attr);
    if (failed) break;
    pool.helpers++;
  }
  return pool.helpers;
}

static void run_serially(int parts, lk_part_fn fn, void *ctx) {
  for (int p = 0; p < parts; p++) fn(ctx, p);
}

void lk_parallel_run(int parts, lk_part_fn fn, void *ctx) {
  if (parts <= 1 || atomic_flag_test_and_set_explicit(&pool.busy, memory_order_acquire)) {
    run_serially(parts, fn, ctx);
    return;
  }
  const int helpers = start_helpers(parts - 1);
  /* Parts beyond the helpers (thread creation failed) run on the caller after part 0. */
  const int delegated = parts - 1 < helpers ? parts - 1 : helpers;
  atomic_store_explicit(&pool.remaining, delegated, memory_order_relaxed);
  int any_sleeping = 0;
  for (int h = 0; h < delegated; h++) {
    mailbox *box = &pool.box[h];
    box->fn = fn;
    box->ctx = ctx;
    box->part = h + 1;
    atomic_fetch_add_explicit(&box->job, 1, memory_order_release);
  }
  pthread_mutex_lock(&pool.mutex);
  for (int h = 0; h < delegated; h++) any_sleeping |= pool.box[h].sleeping;
  if (any_sleeping) pthread_cond_broadcast(&pool.wake);
  pthread_mutex_unlock(&pool.mutex);

  fn(ctx, 0);
  for (int p = delegated + 1; p < parts; p++) fn(ctx, p);
  for (int spin = 0; atomic_load_explicit(&pool.remaining, memory_order_acquire) != 0; spin++) {
    if (spin < 4096) cpu_relax();
    else sched_yield(); /* a helper was preempted: give it the core */
  }
  atomic_flag_clear_explicit(&pool.busy, memory_order_release);
}
