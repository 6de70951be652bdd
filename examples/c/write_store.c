/* Builds an embedding store from C: N rows of D pseudo-random float32 values, stored as float16,
 * with a "keys" string per row. Usage: write_store OUT.h5 N D */
#include <stdio.h>
#include <stdlib.h>

#include "lift.h"

static int fail(const char *what, lift_status st) {
  fprintf(stderr, "%s failed: %s: %s\n", what, lift_status_name(st), lift_last_error());
  return 1;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s OUT.h5 ROWS DIM\n", argv[0]);
    return 2;
  }
  const char *path = argv[1];
  long rows = strtol(argv[2], NULL, 10), dim = strtol(argv[3], NULL, 10);
  if (rows <= 0 || dim <= 0) {
    fprintf(stderr, "ROWS and DIM must be positive\n");
    return 2;
  }

  lift_store_writer *writer = NULL;
  lift_status st = lift_store_writer_create(path, NULL, dim, LIFT_DTYPE_FLOAT16,
                                            LIFT_WRITER_KEYS | LIFT_WRITER_OVERWRITE, &writer);
  if (st != LIFT_OK) return fail("lift_store_writer_create", st);

  /* Append in batches of up to 512 rows. */
  enum { BATCH = 512 };
  float *buf = malloc(sizeof(float) * BATCH * (size_t)dim);
  char names[BATCH][32];
  const char *keys[BATCH];
  if (!buf) {
    lift_store_writer_free(writer);
    return 1;
  }
  unsigned long long state = 88172645463325252ULL;
  for (long start = 0; start < rows; start += BATCH) {
    long n = rows - start < BATCH ? rows - start : BATCH;
    for (long i = 0; i < n * dim; i++) {
      state ^= state << 13; state ^= state >> 7; state ^= state << 17;
      buf[i] = (float)((double)(state >> 11) / 9007199254740992.0 * 2.0 - 1.0);
    }
    for (long i = 0; i < n; i++) {
      snprintf(names[i], sizeof names[i], "row-%ld", start + i);
      keys[i] = names[i];
    }
    st = lift_store_writer_append(writer, buf, n, keys, NULL);
    if (st != LIFT_OK) {
      free(buf);
      lift_store_writer_free(writer); /* discards the temporary file */
      return fail("lift_store_writer_append", st);
    }
  }
  free(buf);

  int64_t written = 0;
  if ((st = lift_store_writer_rows(writer, &written)) != LIFT_OK) {
    lift_store_writer_free(writer);
    return fail("lift_store_writer_rows", st);
  }
  if ((st = lift_store_writer_finish(writer)) != LIFT_OK) {
    lift_store_writer_free(writer);
    return fail("lift_store_writer_finish", st);
  }
  lift_store_writer_free(writer);
  printf("wrote %lld rows x %ld float16 to %s (liblift %s)\n", (long long)written, dim, path, lift_version());
  return 0;
}
