/*
 * lift.h - C interface of liblift, a LIFT (Language-Image alignment with Fixed Text encoders)
 * trainer: an image encoder learns to align with caption embeddings that a frozen text model
 * computed once, offline, and stored in HDF5.
 *
 * Conventions (every function follows them)
 *   - Objects are opaque handles created by a `*_create` / `*_open` function and released by the
 *     matching `*_free` function. `*_free(NULL)` is a no-op. A handle must not be used after free.
 *   - Every call that can fail returns a `lift_status`. LIFT_OK (0) is success; on any other value
 *     `lift_last_error()` returns a message naming what was wrong (file, dataset, shape, row) and
 *     the call's outputs and the handle's state are unchanged unless the function says otherwise.
 *   - Matrices are dense, row-major, float32 unless stated. Sizes and indices are int64_t and must
 *     be non-negative; element counts must fit in memory (overflowing products are errors).
 *   - Strings are NUL-terminated UTF-8. The library never keeps a pointer the caller passed in
 *     after the call returns, and the caller never frees memory the library returns unless stated.
 *   - Thread safety is stated per function. "Handle-serialised" means calls on the same handle
 *     from several threads are safe and run one at a time (an internal lock); calls on different
 *     handles run concurrently.
 *   - No input makes the library abort the process: null pointers, bad sizes, wrong dtypes,
 *     corrupt files and non-finite values are reported as status codes.
 */
#ifndef LIFT_H
#define LIFT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------------------------ */
/* Status codes and errors                                                                     */
/* ------------------------------------------------------------------------------------------ */

typedef enum lift_status {
  LIFT_OK = 0,
  LIFT_ERR_ARGUMENT = 1,  /* null pointer, negative or overflowing size, bad flag, bad index   */
  LIFT_ERR_IO = 2,        /* file missing, unreadable, not HDF5, cannot be created or renamed  */
  LIFT_ERR_FORMAT = 3,    /* file readable but wrong: missing dataset, rank, dtype, corruption */
  LIFT_ERR_SHAPE = 4,     /* dimensions disagree (e.g. D differs across shards or inputs)      */
  LIFT_ERR_VALUE = 5,     /* data values invalid: NaN/Inf, zero-norm row, float16 overflow     */
  LIFT_ERR_NOT_FOUND = 6, /* an optional dataset or named item does not exist                  */
  LIFT_ERR_MEMORY = 7,    /* allocation failed                                                 */
  LIFT_ERR_STATE = 8,     /* call not valid in the handle's current state (e.g. after finish)  */
  LIFT_ERR_BUFFER = 9,    /* caller's output buffer too small; the needed size is reported     */
  LIFT_ERR_INTERNAL = 99  /* a bug in liblift or a dependency; the message has details         */
} lift_status;

/* Library version as "MAJOR.MINOR.PATCH". Static storage; thread-safe. */
const char *lift_version(void);

/* Message of the last failed call on the calling thread ("" if none yet). Thread-local: each
 * thread sees its own last error. The pointer stays valid until the next liblift call on the
 * same thread; copy it to keep it. Thread-safe. */
const char *lift_last_error(void);

/* Constant name of a status code, e.g. "LIFT_ERR_IO". Never NULL. Thread-safe. */
const char *lift_status_name(lift_status status);

/* On-disk element type of an embedding store. */
typedef enum lift_dtype {
  LIFT_DTYPE_FLOAT32 = 0,
  LIFT_DTYPE_FLOAT16 = 1,
  LIFT_DTYPE_FLOAT64 = 2 /* readable (converted to float32 on read); the writer does not emit it */
} lift_dtype;

/* ------------------------------------------------------------------------------------------ */
/* Embedding store (read)                                                                      */
/*                                                                                             */
/* One logical (N, D) float matrix made of one or more HDF5 files ("shards") concatenated in   */
/* the order given. Each shard holds a rank-2 float dataset (default name "embeddings") of     */
/* float16, float32 or float64 (any byte order, contiguous, chunked or compressed); all shards */
/* must agree on D. Optional rank-1 string datasets with one entry per row (e.g. "keys",       */
/* "captions"; variable- or fixed-length) can be read row by row. Reads go through HDF5        */
/* hyperslab selections into a bounded staging buffer, so files larger than memory work.     */
/* Opening reads only metadata: O(shards), not O(rows).                                       */
/* ------------------------------------------------------------------------------------------ */

typedef struct lift_store lift_store;

/* Default name of the embeddings dataset. */
#define LIFT_STORE_DEFAULT_DATASET "embeddings"

/* Flags for lift_store_open. */
#define LIFT_STORE_NORMALIZE 1u         /* L2-normalise every row on read (zero rows: LIFT_ERR_VALUE) */
#define LIFT_STORE_SKIP_FINITE_CHECK 2u /* do not check rows read for NaN/Inf (faster)                */

/* Opens `n_paths` shard files as one store. `dataset` is the embeddings dataset name in every
 * shard, NULL for LIFT_STORE_DEFAULT_DATASET. `flags` is a bitwise OR of LIFT_STORE_* flags.
 * On success *out receives a handle to release with lift_store_free.
 * Errors: LIFT_ERR_IO (missing file, not HDF5), LIFT_ERR_NOT_FOUND (no such dataset),
 * LIFT_ERR_FORMAT (rank != 2, non-float dtype, not a dataset), LIFT_ERR_SHAPE (D differs between
 * shards), LIFT_ERR_ARGUMENT.
 * Thread-safe. */
lift_status lift_store_open(const char *const *paths, size_t n_paths, const char *dataset,
                            uint32_t flags, lift_store **out);

/* Releases a store and closes its files. NULL is a no-op. Not thread-safe with other calls on the
 * same handle. */
void lift_store_free(lift_store *store);

/* Shape of the logical matrix: *rows = N (sum over shards), *dim = D. Either pointer may be NULL.
 * Handle-serialised. */
lift_status lift_store_shape(lift_store *store, int64_t *rows, int64_t *dim);

/* Number of shard files and the on-disk dtype of shard `shard` (shards may differ in dtype).
 * Handle-serialised. */
lift_status lift_store_shard_count(lift_store *store, int64_t *count);
lift_status lift_store_shard_dtype(lift_store *store, int64_t shard, lift_dtype *dtype);

/* Sets the staging-buffer budget used while reading (bytes, >= 1; default 8 MiB). Reads larger
 * than the budget are split; it bounds memory, not what a single call can return. Rows wider
 * than the budget are still read one at a time. Handle-serialised. */
lift_status lift_store_set_buffer_bytes(lift_store *store, int64_t bytes);

/* Reads rows [start, start + count) into out (count x D float32, row-major). `out_len` is the
 * capacity of out in floats and must be >= count * D. Rows are checked for NaN/Inf (unless
 * LIFT_STORE_SKIP_FINITE_CHECK) and normalised (if LIFT_STORE_NORMALIZE); a failure names the
 * global row index and the shard file. On error the contents of out are unspecified.
 * Handle-serialised. */
lift_status lift_store_read_range(lift_store *store, int64_t start, int64_t count, float *out,
                                  size_t out_len);

/* Reads the rows listed in `rows` (any order, repeats allowed) into out: row rows[i] goes to
 * out[i*D .. i*D+D). out_len as above (>= count * D). Designed for shuffled mini-batches: each
 * shard is read with one hyperslab selection of the sorted, coalesced rows. Handle-serialised. */
lift_status lift_store_read_rows(lift_store *store, const int64_t *rows, int64_t count, float *out,
                                 size_t out_len);

/* Scans every row of the store in bounded memory and reports the first row that is NaN/Inf
 * (LIFT_ERR_VALUE naming row and shard), regardless of LIFT_STORE_SKIP_FINITE_CHECK.
 * Handle-serialised. */
lift_status lift_store_validate(lift_store *store);

/* *present = 1 if every shard has a rank-1 string dataset `name` with one entry per row, else 0.
 * Handle-serialised. */
lift_status lift_store_has_strings(lift_store *store, const char *name, int *present);

/* Copies string `row` of the string dataset `name` (e.g. "keys", "captions") into buf as
 * NUL-terminated UTF-8. *len (may be NULL) receives the string's length in bytes without the NUL.
 * If cap < length + 1 nothing is copied and LIFT_ERR_BUFFER is returned with *len set, so a call
 * with cap 0 queries the size. LIFT_ERR_NOT_FOUND if a shard lacks the dataset.
 * Handle-serialised. */
lift_status lift_store_read_string(lift_store *store, const char *name, int64_t row, char *buf,
                                   size_t cap, size_t *len);

/* ------------------------------------------------------------------------------------------ */
/* Embedding store (write)                                                                     */
/*                                                                                             */
/* Builds a store file by appending float32 rows, stored as float32 or float16. The file is    */
/* written under a temporary name in the same directory and renamed into place by             */
/* lift_store_writer_finish, so readers never see a half-written file and an interrupted       */
/* writer leaves any previous file at `path` intact. h5py reads the result (float16 is HDF5's  */
/* IEEE half type as h5py defines it; strings are variable-length UTF-8).                      */
/* ------------------------------------------------------------------------------------------ */

typedef struct lift_store_writer lift_store_writer;

/* Flags for lift_store_writer_create. */
#define LIFT_WRITER_KEYS 1u      /* also write a "keys" string dataset (one per row)           */
#define LIFT_WRITER_CAPTIONS 2u  /* also write a "captions" string dataset (one per row)       */
#define LIFT_WRITER_OVERWRITE 4u /* replace an existing file at path (default: LIFT_ERR_IO)    */

/* Starts a new store at `path` with rows of `dim` floats stored as `dtype` (FLOAT32 or FLOAT16)
 * in dataset `dataset` (NULL = LIFT_STORE_DEFAULT_DATASET). Thread-safe. */
lift_status lift_store_writer_create(const char *path, const char *dataset, int64_t dim,
                                     lift_dtype dtype, uint32_t flags, lift_store_writer **out);

/* Appends n rows (n x dim float32, row-major). `keys` / `captions` are arrays of n strings and
 * must be given (non-NULL, no NULL entries) exactly when the writer was created with the
 * matching flag, else NULL. Rows must be finite and, for FLOAT16, within +-65504; a bad value is
 * LIFT_ERR_VALUE naming the row and column and nothing of the call is written.
 * Handle-serialised. */
lift_status lift_store_writer_append(lift_store_writer *writer, const float *rows, int64_t n,
                                     const char *const *keys, const char *const *captions);

/* Rows appended so far. Handle-serialised. */
lift_status lift_store_writer_rows(lift_store_writer *writer, int64_t *rows);

/* Flushes, fsyncs and atomically renames the file into place. Afterwards the writer accepts no
 * more appends (LIFT_ERR_STATE) and must still be freed. Without LIFT_WRITER_OVERWRITE, finishing
 * fails with LIFT_ERR_IO if `path` appeared in the meantime; the data stays in the temporary
 * file, whose name the message gives. Handle-serialised. */
lift_status lift_store_writer_finish(lift_store_writer *writer);

/* Releases the writer. If it was not finished, the temporary file is deleted and nothing at
 * `path` changes. NULL is a no-op. */
void lift_store_writer_free(lift_store_writer *writer);

/* ------------------------------------------------------------------------------------------ */
/* Similarity                                                                                  */
/* ------------------------------------------------------------------------------------------ */

/* Cosine similarity between every row of a (n x d) and of b (m x d): out[i*m + j] =
 * <a_i, b_j> / (|a_i| |b_j|). Inputs need not be normalised. out_len >= n*m. A zero or
 * non-finite row is LIFT_ERR_VALUE naming the input and row. Uses sgemm. Thread-safe. */
lift_status lift_cosine_similarity(const float *a, int64_t n, const float *b, int64_t m,
                                   int64_t d, float *out, size_t out_len);

/* For each of the n rows of scores (n x m), the k largest entries in descending order: their
 * column indices into indices[i*k ..] and values into values[i*k ..] (either output may be NULL).
 * Ties go to the lower column index. Requires 1 <= k <= m; NaN scores are LIFT_ERR_VALUE.
 * Thread-safe. */
lift_status lift_topk(const float *scores, int64_t n, int64_t m, int64_t k, int64_t *indices,
                      float *values);

/* Nearest rows of a store by cosine similarity: for each of the nq queries (nq x d, d = the
 * store's D) the k most similar store rows, streamed from disk in bounded memory. Outputs as in
 * lift_topk (nq x k). Requires 1 <= k <= N. Handle-serialised. */
lift_status lift_store_search(lift_store *store, const float *queries, int64_t nq, int64_t d,
                              int64_t k, int64_t *indices, float *scores);

#ifdef __cplusplus
}
#endif

#endif /* LIFT_H */
