/* Reads an embedding store and prints the K rows most similar (cosine) to row Q, with keys when
 * the store has them. Usage: store_topk STORE.h5 [Q] [K] */
#include <stdio.h>
#include <stdlib.h>

#include "lift.h"

static int fail(const char *what, lift_status st) {
  fprintf(stderr, "%s failed: %s: %s\n", what, lift_status_name(st), lift_last_error());
  return 1;
}

int main(int argc, char **argv) {
  if (argc < 2 || argc > 4) {
    fprintf(stderr, "usage: %s STORE.h5 [QUERY_ROW] [K]\n", argv[0]);
    return 2;
  }
  int64_t query = argc > 2 ? strtoll(argv[2], NULL, 10) : 0;
  int64_t k = argc > 3 ? strtoll(argv[3], NULL, 10) : 5;
  const char *paths[1] = {argv[1]};

  lift_store *store = NULL;
  lift_status st = lift_store_open(paths, 1, NULL, 0, &store);
  if (st != LIFT_OK) return fail("lift_store_open", st);

  int rc = 1;
  float *q = NULL;
  int64_t *idx = NULL;
  float *scores = NULL;
  int64_t rows = 0, dim = 0;
  int has_keys = 0;
  if ((st = lift_store_shape(store, &rows, &dim)) != LIFT_OK) { fail("lift_store_shape", st); goto done; }
  if (query < 0 || query >= rows || k < 1 || k > rows) {
    fprintf(stderr, "query row must be in [0, %lld) and k in [1, %lld]\n", (long long)rows, (long long)rows);
    goto done;
  }
  q = malloc(sizeof(float) * (size_t)dim);
  idx = malloc(sizeof(int64_t) * (size_t)k);
  scores = malloc(sizeof(float) * (size_t)k);
  if (!q || !idx || !scores) { fprintf(stderr, "out of memory\n"); goto done; }

  if ((st = lift_store_read_rows(store, &query, 1, q, (size_t)dim)) != LIFT_OK) { fail("lift_store_read_rows", st); goto done; }
  if ((st = lift_store_search(store, q, 1, dim, k, idx, scores)) != LIFT_OK) { fail("lift_store_search", st); goto done; }
  if ((st = lift_store_has_strings(store, "keys", &has_keys)) != LIFT_OK) { fail("lift_store_has_strings", st); goto done; }

  printf("%lld rows x %lld dims; top %lld for row %lld:\n", (long long)rows, (long long)dim, (long long)k,
         (long long)query);
  for (int64_t i = 0; i < k; i++) {
    char key[256] = "";
    if (has_keys) {
      size_t len = 0;
      st = lift_store_read_string(store, "keys", idx[i], key, sizeof key, &len);
      if (st != LIFT_OK) { fail("lift_store_read_string", st); goto done; }
    }
    printf("  %2lld. row %-8lld cos %.4f  %s\n", (long long)(i + 1), (long long)idx[i], scores[i], key);
  }
  rc = 0;
done:
  free(q);
  free(idx);
  free(scores);
  lift_store_free(store);
  return rc;
}
