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
 *   - Every struct begins with `size_t struct_size`, which the caller sets to sizeof the struct
 *     before passing it, in either direction (`lift_batch b = {.struct_size = sizeof b};`; the
 *     other fields may start zero). liblift reads and writes only structs whose size it knows and
 *     refuses others with LIFT_ERR_ARGUMENT naming the struct and both sizes, so a program built
 *     against another lift.h fails cleanly instead of corrupting memory. Within one major version
 *     the ABI only grows: functions are added, structs gain fields at their end only, and a
 *     library accepts the struct sizes of every earlier header of its major version (reading and
 *     writing just that prefix). lift_struct_size() reports the sizes this library uses.
 *   - Thread safety is stated per function. "Thread-safe" means any thread may call it at any
 *     time. "Handle-serialised" means calls on the same handle from several threads are safe and
 *     run one at a time (an internal lock); calls on different handles run concurrently. A
 *     `*_free` must not race with other calls on the same handle.
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

/* Version of this header (semantic versioning). The shared library is liblift.so.MAJOR; its own
 * version is lift_version() / lift_version_number(), which a program may compare with these. */
#define LIFT_VERSION_MAJOR 0
#define LIFT_VERSION_MINOR 6
#define LIFT_VERSION_PATCH 0
#define LIFT_VERSION_NUMBER (LIFT_VERSION_MAJOR * 10000 + LIFT_VERSION_MINOR * 100 + LIFT_VERSION_PATCH)
#define LIFT_QUOTE_(x) #x
#define LIFT_EXPAND_AND_QUOTE_(x) LIFT_QUOTE_(x)
#define LIFT_VERSION_STRING \
  LIFT_EXPAND_AND_QUOTE_(LIFT_VERSION_MAJOR) "." LIFT_EXPAND_AND_QUOTE_(LIFT_VERSION_MINOR) "." \
  LIFT_EXPAND_AND_QUOTE_(LIFT_VERSION_PATCH)

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
  LIFT_ERR_UNSUPPORTED = 10, /* this CPU lacks what the request needs (e.g. bf16 dot products) */
  LIFT_ERR_UNSAFE = 11,   /* reading the file crashed or hung a checking process (lift_file_check) */
  LIFT_ERR_INTERNAL = 99  /* a bug in liblift or a dependency; the message has details         */
} lift_status;

/* Library version as "MAJOR.MINOR.PATCH" (LIFT_VERSION_STRING of the header it was built
 * with). Static storage; thread-safe. */
const char *lift_version(void);

/* Library version as MAJOR * 10000 + MINOR * 100 + PATCH (compare with LIFT_VERSION_NUMBER).
 * Thread-safe. */
uint32_t lift_version_number(void);

/* sizeof the struct called `name` (e.g. "lift_train_config") as this library was built, i.e. the
 * struct_size it expects; LIFT_ERR_NOT_FOUND for a name that is not a lift.h struct. For
 * bindings in other languages, which declare the structs themselves. Thread-safe. */
lift_status lift_struct_size(const char *name, size_t *size);

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
/* "captions"; variable- or fixed-length) can be read row by row. Uncompressed, unfiltered    */
/* shards are read directly with pread at the offsets HDF5's layout gives; others go through   */
/* HDF5 hyperslab selections. Either way reads use a bounded staging buffer, so files larger   */
/* than memory work. Opening reads only metadata: O(shards), not O(rows).                      */
/* ------------------------------------------------------------------------------------------ */

typedef struct lift_store lift_store;

/* Default name of the embeddings dataset. */
#define LIFT_STORE_DEFAULT_DATASET "embeddings"

/* Flags for lift_store_open. */
#define LIFT_STORE_NORMALIZE 1u         /* L2-normalise every row on read (zero rows: LIFT_ERR_VALUE) */
#define LIFT_STORE_SKIP_FINITE_CHECK 2u /* do not check rows read for NaN/Inf (faster)                */

/* Flag of every opener of files (lift_store_open, lift_dataset_open, lift_model_load,
 * lift_trainer_load): the files come from an untrusted source. Each is first read in full in a
 * separate process (lift_file_check; time limit: the environment variable LIFT_CHECK_TIMEOUT in
 * seconds if set, else 600 s, or 120 s per GiB for larger files), once per process for each
 * version of the file (device, inode, size and modification time); a file that fails is not
 * opened, and the open returns the check's error: the reader's own for a file liblift refuses,
 * LIFT_ERR_UNSAFE for one that crashed or hung the checking process (see lift_file_check),
 * LIFT_ERR_ARGUMENT for a LIFT_CHECK_TIMEOUT that is not a number in (0, 86400]. */
#define LIFT_OPEN_UNTRUSTED 0x100u

/* Opens `n_paths` shard files as one store. `dataset` is the embeddings dataset name in every
 * shard, NULL for LIFT_STORE_DEFAULT_DATASET. `flags` is a bitwise OR of LIFT_STORE_* flags.
 * On success *out receives a handle to release with lift_store_free.
 * Errors: LIFT_ERR_IO (missing file, not HDF5), LIFT_ERR_NOT_FOUND (no such dataset),
 * LIFT_ERR_FORMAT (rank != 2, non-float dtype, not a dataset), LIFT_ERR_SHAPE (D differs between
 * shards), LIFT_ERR_ARGUMENT. With LIFT_OPEN_UNTRUSTED, each shard is checked first.
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
 * shard is read once for its sorted, coalesced rows. Handle-serialised. */
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

/* Rows whose key (the "keys" dataset) is `key`, compared without a trailing image extension
 * (".jpg", ".jpeg", ".png", ".webp", any case: "0001.jpg" and "0001" match). Several rows under
 * one key are alternative captions of one sample. The rows go to rows[0 .. *count) in increasing
 * order; *count is set (0 if no row has the key) and LIFT_ERR_BUFFER returned if cap is smaller.
 * Lookups use the file's key index (written by lift_store_writer_finish; one block read per
 * lookup); a file with keys but no index is indexed in memory on first use. LIFT_ERR_NOT_FOUND
 * if the store has no keys. Handle-serialised. */
lift_status lift_store_rows_for_key(lift_store *store, const char *key, int64_t *rows, size_t cap, size_t *count);

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

/* Writes the key index of LIFT_WRITER_KEYS (sorted 64-bit key hashes, built in memory bounded by
 * 16 MiB whatever the row count, spilling sorted runs next to the file and merging them), then
 * flushes, fsyncs and atomically renames the file into place. Afterwards the writer accepts no
 * more appends (LIFT_ERR_STATE) and must still be freed. Without LIFT_WRITER_OVERWRITE, finishing
 * fails with LIFT_ERR_IO if `path` appeared in the meantime; the data stays in the temporary
 * file, whose name the message gives. Handle-serialised. */
lift_status lift_store_writer_finish(lift_store_writer *writer);

/* Releases the writer. If it was not finished, the temporary file is deleted and nothing at
 * `path` changes. NULL is a no-op. Not thread-safe with other calls on the same handle. */
void lift_store_writer_free(lift_store_writer *writer);

/* ------------------------------------------------------------------------------------------ */
/* Similarity                                                                                  */
/* ------------------------------------------------------------------------------------------ */

/* Cosine similarity between every row of a (n x d) and of b (m x d): out[i*m + j] =
 * <a_i, b_j> / (|a_i| |b_j|). Inputs need not be normalised. out_len >= n*m. A zero or
 * non-finite row is LIFT_ERR_VALUE naming the input and row. One matrix product. Thread-safe. */
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

/* ------------------------------------------------------------------------------------------ */
/* Model: ViT image encoder + LIFT projection head                                             */
/*                                                                                             */
/* OpenCLIP VisionTransformer semantics: patch conv (no bias), class token, learned positional */
/* embedding, ln_pre, pre-norm blocks (fused qkv attention, exact-GELU MLP), ln_post, pooling  */
/* ('avg' over patch tokens, LIFT's choice, or 'tok'), then Linear(width, text_dim) followed by */
/* (GELU, Linear(text_dim, text_dim)) per extra head layer. Image embedding = L2-normalised    */
/* head output. All parameters live in one contiguous float buffer; each named tensor (PyTorch */
/* state_dict names) is a view at an offset, padded to 16 floats.                             */
/* ------------------------------------------------------------------------------------------ */

typedef struct lift_model lift_model;

typedef enum lift_pool { LIFT_POOL_AVG = 0, LIFT_POOL_TOKEN = 1 } lift_pool;

typedef enum lift_objective {
  LIFT_OBJECTIVE_CONTRASTIVE = 0, /* CLIP InfoNCE both ways, learnable logit scale          */
  LIFT_OBJECTIVE_COSINE = 1,      /* LIFT's simplistic cosine loss mean(1 - cos)            */
  LIFT_OBJECTIVE_SIGMOID = 2      /* SigLIP pairwise sigmoid, learnable scale and bias      */
} lift_objective;

/* Arithmetic of the matrix products. Weights, AdamW moments, the loss, softmax and LayerNorm
 * statistics and all reductions are float32 in both. */
typedef enum lift_precision {
  LIFT_PRECISION_FP32 = 0, /* float32 everywhere (default)                                     */
  LIFT_PRECISION_BF16 = 1  /* products take bfloat16 inputs (round to nearest even) with float32
                            * accumulation and float32 results (torch.autocast-style mixed
                            * precision); needs AVX512-BF16 or AMX, else creating a trainer or
                            * encoding is LIFT_ERR_UNSUPPORTED                                 */
} lift_precision;

/* MLP activation of the residual blocks (the LIFT head always uses exact GELU). */
typedef enum lift_activation {
  LIFT_ACTIVATION_GELU = 0,      /* exact (erf) GELU: OpenCLIP, timm, DINOv2                  */
  LIFT_ACTIVATION_QUICK_GELU = 1 /* x * sigmoid(1.702 x): OpenAI's CLIP weights              */
} lift_activation;

/* Where the final LayerNorm (ln_post) applies. */
typedef enum lift_final_norm {
  LIFT_FINAL_NORM_TOKENS = 0, /* every token, then pooling (OpenCLIP; timm's `norm`)             */
  LIFT_FINAL_NORM_POOLED = 1  /* the pooled feature (timm's `fc_norm`, OpenCLIP final_ln_after_pool) */
} lift_final_norm;

/* Architecture. Fill with lift_model_config_preset, then adjust fields. The fields after
 * `precision` (added in 0.3) describe pretrained encoders of other families; zero means LIFT's
 * own model, so a 0.2 struct (which ends at `precision`) is still accepted. */
typedef struct lift_model_config {
  size_t struct_size;  /* sizeof(lift_model_config), set by the caller                       */
  int32_t image_size;  /* square images, divisible by patch                                */
  int32_t channels;    /* 1 or 3                                                           */
  int32_t patch;
  int32_t width;       /* divisible by heads                                               */
  int32_t depth;
  int32_t heads;
  int32_t mlp_ratio;   /* MLP hidden = mlp_ratio * width                                   */
  int32_t head_layers; /* Linear layers of the projection head (LIFT: 2)                   */
  int32_t text_dim;    /* dimension of the text embeddings                                 */
  int32_t pool;        /* lift_pool                                                        */
  int32_t objective;   /* lift_objective; decides logit_scale init and logit_bias presence */
  float image_mean[3]; /* uint8 images are normalised as (x/255 - mean[c]) / std[c]        */
  float image_std[3];  /* (first `channels` entries used)                                  */
  int32_t precision;   /* lift_precision (presets: LIFT_PRECISION_FP32); saved with the model */
  int32_t patch_bias;  /* 1: the patch embedding has a bias (visual.conv1.bias)              */
  int32_t no_ln_pre;   /* 1: no ln_pre before the first block                                */
  int32_t activation;  /* lift_activation                                                    */
  int32_t layer_scale; /* 1: LayerScale vectors on both residual branches (ls_1/ls_2.gamma)  */
  int32_t registers;   /* register tokens after the class token, 0 .. 64                     */
  int32_t final_norm;  /* lift_final_norm                                                    */
  float layer_norm_eps; /* every LayerNorm's epsilon; 0 means 1e-5                           */
} lift_model_config;

/* Presets: "ViT-Ti/16", "ViT-S/16", "ViT-B/16" (224 px, RGB), "ViT-XS/7-28" and "ViT-XS/14-28"
 * (28 px, grey, patch 7 or 14), "ViT-XS/4-32" (32 px, RGB); contrastive objective, avg pooling,
 * 2 head layers, OpenAI CLIP mean/std for RGB and 0.5/0.5 for grey. out->struct_size must be
 * set. Thread-safe. */
lift_status lift_model_config_preset(const char *name, int32_t text_dim, lift_model_config *out);

/* A new model with deterministic initialisation from `seed` (PyTorch's default initialisers
 * for each module type; see README). Thread-safe. */
lift_status lift_model_create(const lift_model_config *config, uint64_t seed, lift_model **out);

/* Loads weights written by lift_model_save or lift_trainer_save (safetensors with liblift
 * metadata). Corrupt, truncated or inconsistent files are LIFT_ERR_FORMAT / LIFT_ERR_SHAPE.
 * `flags`: 0 or LIFT_OPEN_UNTRUSTED. Thread-safe. */
lift_status lift_model_load(const char *path, uint32_t flags, lift_model **out);

/* Naming schemes of pretrained vision transformers that lift_model_import reads. */
typedef enum lift_scheme {
  LIFT_SCHEME_OPENCLIP = 0,  /* visual.conv1.weight, visual.transformer.resblocks.N... (and liblift's files) */
  LIFT_SCHEME_TIMM = 1,      /* patch_embed.proj.weight, blocks.N..., norm / fc_norm               */
  LIFT_SCHEME_HF_CLIP = 2,   /* vision_model.embeddings..., encoder.layers.N.self_attn.q_proj...    */
  LIFT_SCHEME_HF_DINOV2 = 3  /* embeddings.patch_embeddings..., encoder.layer.N.attention...        */
} lift_scheme;

/* Choices of lift_model_import besides the weights. lift_import_options_default fills: 2 head
 * layers, contrastive, fp32, and "from the source" for the rest. */
typedef struct lift_import_options {
  size_t struct_size;      /* sizeof(lift_import_options), set by the caller                    */
  int32_t text_dim;        /* dimension of the text embeddings (required, >= 1)                 */
  int32_t head_layers;     /* Linear layers of the new LIFT head                               */
  int32_t objective;       /* lift_objective                                                    */
  int32_t precision;       /* lift_precision                                                    */
  int32_t image_size;      /* training image size; 0 keeps the source's (else the positional
                            * embedding is resampled: bicubic, antialiased when shrinking)     */
  int32_t heads;           /* 0: from the config file                                           */
  int32_t activation;      /* -1: from the config file; else lift_activation                    */
  int32_t pool;            /* -1: the source's pooling; else lift_pool                          */
  const char *config_path; /* NULL: config.json / open_clip_config.json beside the weights      */
  uint64_t seed;           /* initialisation of the new LIFT head                               */
} lift_import_options;

lift_status lift_import_options_default(lift_import_options *out);

/* A model whose image tower is the pretrained encoder in `path` (safetensors; F32, F16, BF16 or
 * F64 tensors; the scheme is detected from the tensor names, see lift_scheme) and whose LIFT
 * head is new. Shapes give width, depth, patch, grid and MLP size; heads, activation, pooling,
 * final norm, LayerNorm eps and image mean/std come from the config file (or `options`).
 * Tensors outside the image tower (a text tower, a classifier head, CLIP's projection) are
 * ignored. Errors name the tensor (missing, wrongly shaped, or unknown: LIFT_ERR_FORMAT /
 * LIFT_ERR_SHAPE) or the option to pass when the file does not say (LIFT_ERR_ARGUMENT).
 * *scheme (may be NULL) receives the detected scheme. Thread-safe. */
lift_status lift_model_import(const char *path, const lift_import_options *options, lift_model **out,
                              lift_scheme *scheme);

/* Writes the image tower (not the LIFT head, which no scheme has) to `path` in `scheme`'s names
 * (safetensors, float32, atomically), and the scheme's config file beside it
 * (open_clip_config.json or config.json), so lift_model_import and the scheme's own loaders read
 * it back. Options a scheme cannot express (e.g. registers in OpenCLIP) are LIFT_ERR_ARGUMENT;
 * timm expresses every option. Handle-serialised. */
lift_status lift_model_export(lift_model *model, const char *path, lift_scheme scheme);

/* Writes the weights as safetensors (PyTorch names and shapes, float32, config in the
 * metadata), atomically: a temporary file, fsync, rename. Handle-serialised. */
lift_status lift_model_save(lift_model *model, const char *path);

/* Releases the caller's reference (trainers keep their own). NULL is a no-op. Not thread-safe
 * with other calls on the same reference. */
void lift_model_free(lift_model *model);

/* The model's architecture (out->struct_size must be set). Thread-safe (the config never
 * changes). */
lift_status lift_model_get_config(lift_model *model, lift_model_config *out);

/* The flat parameter buffer (*count floats, padding included). The pointer stays valid while
 * the model lives; writes change the model (do not write during a step on another thread).
 * Thread-safe (the call; the buffer itself is the caller's to synchronise). */
lift_status lift_model_parameters(lift_model *model, float **data, int64_t *count);

/* One named tensor of the layout. `name` points into the model and lives as long as it. */
typedef struct lift_tensor_info {
  size_t struct_size; /* sizeof(lift_tensor_info), set by the caller */
  const char *name;
  int32_t ndim;     /* 0 for scalars (logit_scale, logit_bias) */
  int64_t shape[4];
  int64_t offset;   /* in floats, into the parameter / gradient / moment buffers */
  int64_t count;    /* elements (1 for scalars) */
  int32_t decays;   /* 1 if AdamW weight decay applies (ndim >= 2) */
} lift_tensor_info;

/* The layout's tensors: how many, and tensor `index` in [0, count) (info->struct_size must be
 * set). Thread-safe (the layout never changes). */
lift_status lift_model_tensor_count(lift_model *model, int64_t *count);
lift_status lift_model_tensor_info(lift_model *model, int64_t index, lift_tensor_info *info);
/* Index of the tensor called `name`, or LIFT_ERR_NOT_FOUND. Thread-safe. */
lift_status lift_model_find_tensor(lift_model *model, const char *name, int64_t *index);

typedef enum lift_image_format {
  LIFT_IMAGE_F32_NCHW = 0, /* float32 (B, C, S, S), already normalised                       */
  LIFT_IMAGE_U8_NHWC = 1   /* uint8 (B, S, S, C); normalised with the config's mean and std  */
} lift_image_format;

/* Unit-norm embeddings (count x text_dim) of `count` images, in bounded-memory chunks, with no
 * gradient, in the model's precision. `images_len` is the number of elements (floats or bytes)
 * in `images`: at least count * C * S * S. Non-finite input pixels are LIFT_ERR_VALUE naming the
 * image; a bf16 model on a CPU without bfloat16 dot products is LIFT_ERR_UNSUPPORTED.
 * Handle-serialised. */
lift_status lift_model_encode(lift_model *model, const void *images, lift_image_format format, size_t images_len,
                              int64_t count, float *out, size_t out_len);

/* Pooled features (count x width) of `count` images: the image tower's output (after the final
 * LayerNorm and pooling), which the head maps to embeddings. With the whole tower locked, these
 * are all a step needs (lift_trainer_step_features): compute them once per image (augmentation
 * off) and train the head on them. Formats and errors as lift_model_encode; out_len >= count *
 * width. Handle-serialised. */
lift_status lift_model_features(lift_model *model, const void *images, lift_image_format format, size_t images_len,
                                int64_t count, float *out, size_t out_len);

/* ------------------------------------------------------------------------------------------ */
/* Trainer                                                                                     */
/*                                                                                             */
/* Owns the gradient and both AdamW moments (each one contiguous buffer laid out like the      */
/* parameters) and activation memory for `batch_capacity` images. Drive it either with         */
/* lift_trainer_step, or with the split form for multi-worker drivers:                         */
/*   forward -> (exchange features) -> loss -> backward -> (all-reduce gradients) -> apply.    */
/* The one-call step runs exactly that sequence: both give bit-identical results.            */
/* All trainer calls are handle-serialised (and serialised with calls on its model).          */
/* ------------------------------------------------------------------------------------------ */

typedef struct lift_trainer lift_trainer;

/* Optimisation settings; lift_train_config_default fills LIFT's: AdamW lr 1e-3, betas
 * (0.9, 0.98), eps 1e-6, weight decay 0.2 on >= 2-D tensors, 500 warm-up steps then cosine
 * decay to 0 at total_steps (10000), gradient-norm clip 1.0, batch capacity 64. */
typedef struct lift_train_config {
  size_t struct_size;     /* sizeof(lift_train_config), set by the caller */
  double learning_rate;   /* [0, 10] */
  double beta1;
  double beta2;
  double eps;
  double weight_decay;    /* [0, 10] */
  double grad_clip;       /* at most 1e6; <= 0 disables clipping */
  int64_t warmup_steps;
  int64_t total_steps;
  int64_t batch_capacity; /* most images per forward; bigger steps accumulate micro-batches */
  /* Added in 0.3 (zero = off, so a 0.2 struct, which ends at batch_capacity, still works): */
  int32_t lock_image;      /* 1: freeze the image tower except its last `unlocked_groups` layer
                            * groups (OpenCLIP's grouping: the embeddings, each block, the last
                            * block with ln_post; the LIFT head always trains). Frozen tensors get
                            * no gradient, update or weight decay; backward stops below them,
                            * and they cost no memory: no saved activations, and their part of
                            * the gradient and moment buffers is never written (so never
                            * backed by RAM; checkpoints hold moments of trained tensors only). */
  int32_t unlocked_groups; /* with lock_image: tower groups that still train (0 = the head only) */
  double layer_decay;      /* layer-wise lr decay (0 or 1 = off): group g of a depth-L tower
                            * learns at lr * layer_decay^(L + 1 - g), the head at lr           */
} lift_train_config;

/* Fills LIFT's defaults (out->struct_size must be set). Thread-safe. */
lift_status lift_train_config_default(lift_train_config *out);

/* What a step did; every step function takes an optional one (NULL, or struct_size set). */
typedef struct lift_step_stats {
  size_t struct_size;   /* sizeof(lift_step_stats), set by the caller */
  double loss;          /* batch loss before the update            */
  double learning_rate; /* learning rate the update used           */
  double logit_scale;   /* exp(logit_scale) after the update       */
  double logit_bias;    /* logit_bias after the update (sigmoid)   */
  double grad_norm;     /* global gradient norm before clipping    */
  int64_t step;         /* updates applied so far, this one included */
} lift_step_stats;

/* A trainer for `model` (which it keeps a reference to), computing in the model's precision.
 * `seed` seeds the trainer's RNG (its state is saved in checkpoints; see lift_trainer_random).
 * A bf16 model on a CPU without bfloat16 dot products is LIFT_ERR_UNSUPPORTED. Thread-safe. */
lift_status lift_trainer_create(lift_model *model, const lift_train_config *config, uint64_t seed,
                                lift_trainer **out);

/* Resumes from a training checkpoint written by lift_trainer_save. `batch_capacity` > 0
 * replaces the saved capacity, 0 keeps it. A different capacity splits steps into other
 * micro-batches, which changes float summation order: results then agree with an unchanged
 * resume up to rounding, not bit for bit. The trainer's total memory (workspace, loss matrix,
 * moments) is checked against the memory budget before anything is allocated. `flags`: 0 or
 * LIFT_OPEN_UNTRUSTED. Thread-safe. */
lift_status lift_trainer_load(const char *path, int64_t batch_capacity, uint32_t flags, lift_trainer **out);

/* Writes weights, AdamW moments, step, RNG state and config, atomically. `keys`/`values` are
 * n_metadata strings stored as user metadata (e.g. the data position), readable after
 * lift_trainer_load with lift_trainer_metadata. Save between steps: gradients are not saved.
 * Handle-serialised. */
lift_status lift_trainer_save(lift_trainer *trainer, const char *path, const char *const *keys,
                              const char *const *values, size_t n_metadata);

/* User metadata `key` of the checkpoint the trainer was loaded from, copied as in
 * lift_store_read_string (LIFT_ERR_BUFFER with *len set when cap is too small;
 * LIFT_ERR_NOT_FOUND if absent). Thread-safe (the metadata never changes). */
lift_status lift_trainer_metadata(lift_trainer *trainer, const char *key, char *buf, size_t cap, size_t *len);

/* Releases the trainer (and its reference to the model). NULL is a no-op. Not thread-safe with
 * other calls on the same handle. */
void lift_trainer_free(lift_trainer *trainer);

/* A new reference to the trainer's model; release it with lift_model_free. Thread-safe. */
lift_status lift_trainer_model(lift_trainer *trainer, lift_model **out);
/* The optimiser settings (out->struct_size must be set). Thread-safe. */
lift_status lift_trainer_get_config(lift_trainer *trainer, lift_train_config *out);
/* Updates applied so far. Handle-serialised. */
lift_status lift_trainer_step_count(lift_trainer *trainer, int64_t *step);
/* Next 64-bit value of the trainer's seeded RNG (xoshiro256**), for drivers' shuffling.
 * Handle-serialised. */
lift_status lift_trainer_random(lift_trainer *trainer, uint64_t *value);

/* One optimiser step on `batch` pairs: images (see lift_model_encode for formats and
 * images_len) and texts (batch x text_dim raw embeddings, normalised by the library,
 * texts_len >= batch * text_dim). Batches above the capacity run as micro-batches with cached
 * features, giving the gradient of the whole batch. On any error (bad input, non-finite loss
 * or gradient) the parameters are unchanged, the gradient is zeroed and the status says why.
 * The contrastive objective needs batch >= 2. Handle-serialised. */
lift_status lift_trainer_step(lift_trainer *trainer, const void *images, lift_image_format format,
                              size_t images_len, const float *texts, size_t texts_len, int64_t batch,
                              lift_step_stats *stats);

/* lift_trainer_step on the images' pooled features (batch x width, from lift_model_features)
 * instead of the images: the head-only step of a trainer whose whole image tower is locked
 * (lock_image, or unlocked_groups 0), without the tower's cost. The update equals that of
 * lift_trainer_step on the same images up to float rounding. LIFT_ERR_STATE if any tower
 * group trains; LIFT_ERR_VALUE for a non-finite feature. Handle-serialised. */
lift_status lift_trainer_step_features(lift_trainer *trainer, const float *features, size_t features_len,
                                       const float *texts, size_t texts_len, int64_t batch, lift_step_stats *stats);

/* Split form. forward: training forward of `batch` (1 .. capacity) images; writes their
 * unit-norm embeddings (batch x text_dim) and keeps activations for backward. Handle-serialised. */
lift_status lift_trainer_forward(lift_trainer *trainer, const void *images, lift_image_format format,
                                 size_t images_len, int64_t batch, float *features, size_t features_len);

/* loss: `features` (n x D) are the unit-norm embeddings of all workers' images in global
 * order, `texts` (n x D) their text embeddings. Writes dLoss/dfeatures for the rows
 * [local_start, local_start + local_count) into grad (local_count x D), scaled by world_size
 * so that averaging the workers' gradient buffers gives the exact global-batch gradient, and
 * adds the logit scale/bias gradients to the gradient buffer. *loss receives the global loss
 * (may be NULL). Handle-serialised. */
lift_status lift_trainer_loss(lift_trainer *trainer, const float *features, const float *texts, int64_t n,
                              int64_t local_start, int64_t local_count, int64_t world_size, float *grad,
                              size_t grad_len, double *loss);

/* backward: dLoss/d(embeddings) of the last forward (batch x D); adds parameter gradients.
 * LIFT_ERR_STATE without a pending forward. Handle-serialised. */
lift_status lift_trainer_backward(lift_trainer *trainer, const float *grad, size_t grad_len, int64_t batch);

/* apply: clip to the global gradient norm, AdamW update with the scheduled learning rate,
 * clamp logit_scale to [0, ln 100], zero the gradient, advance the step. A non-finite gradient
 * refuses the update (LIFT_ERR_VALUE; parameters and moments unchanged, gradient zeroed).
 * Handle-serialised. */
lift_status lift_trainer_apply(lift_trainer *trainer, lift_step_stats *stats);

/* Zeroes the gradient buffer. Handle-serialised. */
lift_status lift_trainer_zero_grad(lift_trainer *trainer);

/* The gradient and AdamW moment buffers (each *count floats, laid out like the parameters;
 * any pointer may be NULL; the part of locked tensors stays zero and is ignored). Valid while the trainer lives; an external driver may all-reduce
 * the gradient in place between backward and apply. Thread-safe (the call; the buffers are the
 * caller's to synchronise with steps). */
lift_status lift_trainer_buffers(lift_trainer *trainer, float **gradients, float **exp_avg, float **exp_avg_sq,
                                 int64_t *count);

/* ------------------------------------------------------------------------------------------ */
/* Datasets (image-caption HDF5 files; layout in the README)                                   */
/* ------------------------------------------------------------------------------------------ */

typedef struct lift_dataset lift_dataset;

typedef struct lift_dataset_info {
  size_t struct_size; /* sizeof(lift_dataset_info), set by the caller */
  int64_t images;     /* N over all shards                                */
  int64_t captions;   /* M over all shards                                */
  int32_t height;
  int32_t width;
  int32_t channels;   /* 1 or 3                                           */
  int32_t text_dim;
  int32_t has_labels; /* 1 if every shard has images/labels               */
  int64_t classes;    /* classes for zero-shot evaluation (0 if none)     */
} lift_dataset_info;

/* Opens shard files as one dataset (metadata only; everything else streams). `flags`: 0 or
 * LIFT_OPEN_UNTRUSTED (each shard checked first). Thread-safe. */
lift_status lift_dataset_open(const char *const *paths, size_t n_paths, uint32_t flags, lift_dataset **out);
/* Releases the caller's reference (loaders keep their own). NULL is a no-op. Not thread-safe with
 * other calls on the same reference. */
void lift_dataset_free(lift_dataset *dataset);
/* Sizes and counts (out->struct_size must be set). Thread-safe (they never change). */
lift_status lift_dataset_get_info(lift_dataset *dataset, lift_dataset_info *out);
/* Stored pixels (H x W x C uint8 each) of the listed images, in list order. Handle-serialised. */
lift_status lift_dataset_read_pixels(lift_dataset *dataset, const int64_t *images, int64_t n, uint8_t *out,
                                     size_t out_len);
/* Labels of the listed images (LIFT_ERR_NOT_FOUND without labels). Handle-serialised. */
lift_status lift_dataset_read_labels(lift_dataset *dataset, const int64_t *images, int64_t n, int64_t *out);
/* The encoded file (JPEG, PNG or WebP bytes) of image `image` of a dataset that stores encoded
 * images: *len receives its size; if cap < size nothing is copied and LIFT_ERR_BUFFER returned,
 * so cap 0 queries the size. LIFT_ERR_UNSUPPORTED for a dataset of stored pixels. Handle-serialised. */
lift_status lift_dataset_read_image(lift_dataset *dataset, int64_t image, uint8_t *buf, size_t cap, size_t *len);
/* Global caption rows of one image: *count receives how many; up to cap are copied (a cap
 * smaller than the count is LIFT_ERR_BUFFER, so cap 0 queries the count). Handle-serialised. */
lift_status lift_dataset_caption_rows(lift_dataset *dataset, int64_t image, int64_t *rows, size_t cap, size_t *count);
/* Name (as lift_store_read_string) and prompt caption rows (as above) of class k.
 * Handle-serialised. */
lift_status lift_dataset_class_name(lift_dataset *dataset, int64_t k, char *buf, size_t cap, size_t *len);
lift_status lift_dataset_class_prompts(lift_dataset *dataset, int64_t k, int64_t *rows, size_t cap, size_t *count);
/* The caption embeddings as a store (new reference; free with lift_store_free). Thread-safe. */
lift_status lift_dataset_captions(lift_dataset *dataset, lift_store **out);

/* ------------------------------------------------------------------------------------------ */
/* Data loader: shuffled, preprocessed training batches, prepared on a background thread       */
/* ------------------------------------------------------------------------------------------ */

typedef struct lift_loader lift_loader;

typedef struct lift_loader_options {
  size_t struct_size;    /* sizeof(lift_loader_options), set by the caller                   */
  int64_t batch_size;    /* images per global batch, split over the workers                 */
  int32_t image_size;    /* output S (S x S)                                                */
  int32_t channels;      /* output channels, 1 or 3 (grey <-> RGB converted)                */
  uint64_t seed;         /* everything random is a function of (seed, epoch, position)     */
  int32_t shuffle;       /* 1: seeded permutation per epoch; 0: file order                  */
  int32_t augment;       /* 1: random-resized crop (+ flip); 0: centre crop                 */
  double crop_scale_min; /* augment: crop area fraction range (default 0.08 .. 1)           */
  double crop_scale_max;
  int32_t flip;          /* augment: horizontal flip with probability 1/2                   */
  int32_t rank;          /* this worker's rank in [0, workers)                              */
  int32_t workers;       /* ranks sharing each global batch (disjoint parts)                */
  int32_t prefetch;      /* 1: prepare the next batch on a background thread                */
  int64_t start_epoch;   /* resume position: the first batch returned                       */
  int64_t start_batch;
  /* Since 0.4: */
  int32_t filter;           /* lift_filter of the resampling (default bicubic)              */
  int32_t reduced_decode;   /* 1: decode large JPEGs at 1/2, 1/4, 1/8 scale when the view allows */
  int64_t max_pixels;       /* images with more pixels are bad samples (0: 89478485)        */
  int32_t decode_threads;   /* threads decoding a batch (default 1, the loader's own thread) */
  int32_t shuffle_block;    /* sharded sources: samples shuffled together (default 5000)     */
  double max_bad_fraction;  /* stop when more of the samples seen were bad (default 0.01;
                               checked from 1000 samples on and at each epoch's end; 1: never) */
} lift_loader_options;

/* One batch; pointers stay valid until the next lift_loader_next or lift_loader_free. */
typedef struct lift_batch {
  size_t struct_size;          /* sizeof(lift_batch), set by the caller                         */
  const uint8_t *images;       /* count x S x S x channels, uint8 NHWC (lift_trainer_step's U8 format) */
  const float *texts;          /* count x text_dim: the chosen caption embedding of each image  */
  const int64_t *indices;      /* count image indices                                          */
  const int64_t *caption_rows; /* count chosen caption rows                                    */
  int64_t count;
  int64_t global_count;        /* images in the global batch (all ranks)                       */
  int64_t epoch;
  int64_t batch;               /* index within the epoch                                       */
  double wait_seconds;         /* how long this call waited for the batch                      */
  /* Since 0.4: */
  int64_t skipped;             /* samples of this part left out as bad (count excludes them)   */
  const char *const *keys;     /* count sample keys (file names, tar keys; "" if none)         */
} lift_batch;

/* Default options (out->struct_size must be set): batch 128, 224 px, 3 channels, seed 0,
 * shuffled, no augmentation (when on: crop scale 0.08 .. 1 with flips), one worker, prefetching,
 * bicubic, reduced decoding, Pillow's pixel limit, one decode thread, blocks of 5000, 1 % bad.
 * Thread-safe. */
lift_status lift_loader_options_default(lift_loader_options *out);
/* Every image is used exactly once per epoch; epochs have ceil(N / batch_size) global batches
 * of near-equal size, each split over the workers in near-equal parts (rank `rank` gets its
 * part); the global batches do not depend on the number of workers. Each image draws one of its
 * captions afresh at every visit. Thread-safe. */
lift_status lift_loader_create(lift_dataset *dataset, const lift_loader_options *options, lift_loader **out);
/* The next batch. Handle-serialised (two threads taking batches get distinct ones, in order);
 * the batch's pointers are shared: one thread should consume batches. */
lift_status lift_loader_next(lift_loader *loader, lift_batch *out);
/* Global batches per epoch. Thread-safe. */
lift_status lift_loader_batches_per_epoch(lift_loader *loader, int64_t *count);

/* Why a sample was left out of its batch. */
typedef enum lift_sample_problem {
  LIFT_SAMPLE_EMPTY = 0,                /* the image has no bytes                                */
  LIFT_SAMPLE_UNSUPPORTED = 1,          /* not a JPEG, PNG or WebP image (or no image at all)   */
  LIFT_SAMPLE_CORRUPT = 2,              /* the decoder found invalid data                       */
  LIFT_SAMPLE_TRUNCATED = 3,            /* the data ends before the image does                  */
  LIFT_SAMPLE_TOO_LARGE = 4,            /* more pixels than max_pixels (a decompression bomb)   */
  LIFT_SAMPLE_MISSING_EMBEDDING = 5,    /* no caption embedding under the sample's key          */
  LIFT_SAMPLE_NON_FINITE_EMBEDDING = 6, /* the caption embedding holds NaN or infinity          */
  LIFT_SAMPLE_DUPLICATE_KEY = 7,        /* the key was seen before in the same shard or index   */
  LIFT_SAMPLE_PROBLEM_COUNT = 8
} lift_sample_problem;

/* The loader's bad samples up to the last batch lift_loader_next returned: *seen samples read,
 * counts[k] left out for problem k (n_counts entries are written, at most
 * LIFT_SAMPLE_PROBLEM_COUNT). Handle-serialised. */
lift_status lift_loader_bad_samples(lift_loader *loader, int64_t *seen, int64_t *counts, size_t n_counts);
/* The same as text naming the first samples of each kind ("2 corrupt (a.jpg: JPEG: ...), ...");
 * "" if none. Size query as lift_store_read_string. Handle-serialised. */
lift_status lift_loader_bad_report(lift_loader *loader, char *buf, size_t cap, size_t *len);

/* ------------------------------------------------------------------------------------------ */
/* Data sources: image-caption data as it is on disk                                           */
/* ------------------------------------------------------------------------------------------ */
/* The kind is detected from the content: liblift HDF5 datasets (which carry their captions);
 * webdataset tar shards (.tar files, brace patterns such as "shards/{00000..00099}.tar", or a
 * folder of .tar files); image folders (the LIFT repository's images/<shard>/<key>.<ext>, also
 * found as <root>/images, or a flat folder of images); an image folder with an index file
 * (CSV with an "image" column and an optional "key" column, or JSONL). All but the first pair
 * each sample with the rows of an embedding store under its key (compared without image
 * extensions); tar samples may carry their own .npy / .emb embedding instead. */

typedef struct lift_source lift_source;

typedef enum lift_source_kind {
  LIFT_SOURCE_DATASET = 0,
  LIFT_SOURCE_TAR = 1,
  LIFT_SOURCE_FOLDERS = 2,
  LIFT_SOURCE_INDEX = 3
} lift_source_kind;

typedef struct lift_source_info {
  size_t struct_size; /* sizeof(lift_source_info), set by the caller                       */
  int32_t kind;       /* lift_source_kind                                                   */
  int32_t text_dim;   /* caption embedding dimension                                        */
  int64_t samples;    /* samples counted when opened                                        */
  int64_t shards;     /* shards streamed (tar files, image folders); 0 for indexed sources  */
} lift_source_info;

/* Opens n_paths paths (files, folders or brace patterns) as one source; embeddings names the
 * store files (n_embeddings, may be 0), index the index file of an image folder (NULL if none).
 * Opening counts the samples (a tar shard's headers are read; a folder is listed). Thread-safe. */
lift_status lift_source_open(const char *const *paths, size_t n_paths, const char *const *embeddings,
                             size_t n_embeddings, const char *index, lift_source **out);
lift_status lift_source_get_info(lift_source *source, lift_source_info *out);
/* A one-line description ("webdataset tar shards: 12 files, ..."). Size query as
 * lift_store_read_string. Thread-safe. */
lift_status lift_source_summary(lift_source *source, char *buf, size_t cap, size_t *len);
/* Releases the caller's reference (loaders keep their own). NULL is a no-op. */
void lift_source_free(lift_source *source);
/* A loader over any source (lift_loader_create is this for a dataset). Sharded sources stream:
 * each epoch shuffles the shards and deals them to the workers (each reads only its own; at
 * least as many shards as workers), and shuffles samples in blocks of shuffle_block; every
 * worker runs the same batches per epoch (floor(samples / batch_size)). Thread-safe. */
lift_status lift_loader_create_from_source(lift_source *source, const lift_loader_options *options, lift_loader **out);
/* Stops the background thread and releases the loader. NULL is a no-op. Not thread-safe with
 * other calls on the same handle. */
void lift_loader_free(lift_loader *loader);

/* Resamples `box` (x0, y0, x1, y1 in source pixels; NULL = the centred square of side
 * min(H, W)) of an H x W x C uint8 image to size x size x out_channels, Pillow-exact bilinear
 * (antialiased) resampling, grey/RGB conversion as Pillow's convert(), optional horizontal flip.
 * Thread-safe. */
lift_status lift_preprocess_image(const uint8_t *src, int32_t height, int32_t width, int32_t channels,
                                  const double *box, int32_t size, int32_t out_channels, int32_t flip, uint8_t *dst,
                                  size_t dst_len);

/* ------------------------------------------------------------------------------------------ */
/* Images: decoding (JPEG, PNG, WebP) and preprocessing, as the loader does it per sample      */
/* ------------------------------------------------------------------------------------------ */
/* Decoded pixels follow Pillow's Image.open(...).convert("RGB") (3 channels) or .convert("L")
 * (1 channel): alpha dropped, palettes looked up, CMYK JPEGs converted as Pillow does, 16-bit
 * colour keeps the high byte, 16-bit grey is clipped at 255, RGB -> grey is ITU-R 601-2 luma.
 * A file that is not an image, is truncated or corrupt fails with LIFT_ERR_FORMAT (not a JPEG,
 * PNG or WebP: LIFT_ERR_UNSUPPORTED; over the pixel limit: LIFT_ERR_VALUE) and a message. */

typedef enum lift_codec {
  LIFT_CODEC_JPEG = 1,
  LIFT_CODEC_PNG = 2,
  LIFT_CODEC_WEBP = 3
} lift_codec;

typedef struct lift_image_info {
  size_t struct_size; /* sizeof(lift_image_info), set by the caller                        */
  int32_t codec;      /* lift_codec                                                        */
  int32_t width;      /* full size in pixels                                               */
  int32_t height;
  int32_t colour;     /* as stored: 1 grey, 3 colour, 4 CMYK                               */
} lift_image_info;

/* Resampling filters, Pillow's: bilinear (support 1) and bicubic (a = -0.5, support 2; what
 * OpenCLIP, LIFT and pretrained encoders use). */
typedef enum lift_filter {
  LIFT_FILTER_BILINEAR = 0,
  LIFT_FILTER_BICUBIC = 1
} lift_filter;

/* Which part of an image becomes the square output. */
typedef enum lift_view {
  LIFT_VIEW_CENTRE = 0, /* resize the short side to the output size, then crop the centre
                           (torchvision Resize(S) + CenterCrop(S): CLIP's evaluation)         */
  LIFT_VIEW_CROP = 1,   /* crop rect = (x, y, width, height) in whole pixels, then resize it
                           (torchvision RandomResizedCrop's crop + resize)                     */
  LIFT_VIEW_BOX = 2     /* Pillow resize(box = rect as (x0, y0, x1, y1)) of the whole image     */
} lift_view;

typedef struct lift_preprocess_options {
  size_t struct_size;     /* sizeof(lift_preprocess_options), set by the caller             */
  int32_t size;           /* output S (S x S)                                               */
  int32_t channels;       /* output channels, 1 or 3                                        */
  int32_t filter;         /* lift_filter                                                    */
  int32_t view;           /* lift_view                                                      */
  double rect[4];         /* the crop or box of LIFT_VIEW_CROP / LIFT_VIEW_BOX, full-size pixels */
  int32_t flip;           /* 1: mirror the output horizontally                              */
  int32_t reduced_decode; /* 1: decode a JPEG at 1/2, 1/4 or 1/8 scale in the DCT domain when
                             the view still spans >= S decoded pixels (faster; not pixel-exact
                             with a full decode); 0: always full size                        */
  int64_t max_pixels;     /* images with more pixels are refused (decompression bombs)      */
} lift_preprocess_options;

/* Defaults (out->struct_size must be set): 224 px, 3 channels, bicubic, centre view, no flip,
 * reduced decoding on, max_pixels 89478485 (Pillow's limit). Thread-safe. */
lift_status lift_preprocess_options_default(lift_preprocess_options *out);
/* Format and size from an encoded image's header. Thread-safe. */
lift_status lift_image_probe(const uint8_t *data, size_t len, lift_image_info *out);
/* Decodes a whole image to height x width x channels (1 or 3) uint8 into out (out_len bytes;
 * lift_image_probe gives the size). Images above max_pixels (0: the default) are refused.
 * Thread-safe. */
lift_status lift_image_decode(const uint8_t *data, size_t len, int32_t channels, int64_t max_pixels, uint8_t *out,
                              size_t out_len);
/* Decodes an encoded image and renders the options' view of it into dst (size x size x channels
 * bytes, dst_len >= that), exactly as the data loader prepares a sample. Thread-safe. */
lift_status lift_image_preprocess(const uint8_t *data, size_t len, const lift_preprocess_options *options, uint8_t *dst,
                                  size_t dst_len);
/* The same for decoded pixels: an H x W x C (C = 1 or 3) uint8 image of src_len >= H * W * C
 * bytes; reduced_decode is ignored. Thread-safe. */
lift_status lift_pixels_preprocess(const uint8_t *src, size_t src_len, int32_t height, int32_t width, int32_t channels,
                                   const lift_preprocess_options *options, uint8_t *dst, size_t dst_len);

/* ------------------------------------------------------------------------------------------ */
/* Evaluation (protocols in docs/design.md). Embeddings need not be normalised. Thread-safe.   */
/* ------------------------------------------------------------------------------------------ */

/* Class embeddings (classes x d): per class k, the normalised mean of its normalised prompts
 * prompts[rows[offsets[k] .. offsets[k+1])]. `prompt_count` is the number of prompt rows. */
lift_status lift_eval_class_embeddings(const float *prompts, int64_t prompt_count, int64_t d, const int64_t *offsets,
                                       const int64_t *rows, int64_t classes, float *out);
/* Zero-shot top-1 and top-5 accuracy (either output may be NULL). */
lift_status lift_eval_zero_shot(const float *images, int64_t n, const float *classes, int64_t class_count, int64_t d,
                                const int64_t *labels, double *top1, double *top5);
/* Recall@1/5/10 image->text and text->image; image i owns the captions
 * rows[offsets[i] .. offsets[i+1]) of texts (m x d). */
lift_status lift_eval_retrieval(const float *images, int64_t n, const float *texts, int64_t m, int64_t d,
                                const int64_t *caption_offsets, const int64_t *caption_rows, double image_to_text[3],
                                double text_to_image[3]);
/* correct[i] = 1 if cos(image i, positive i) > cos(image i, negative i), else 0. */
lift_status lift_eval_pairwise(const float *images, const float *positives, const float *negatives, int64_t n,
                               int64_t d, uint8_t *correct);

/* ------------------------------------------------------------------------------------------ */
/* Benchmark suites read from their published layouts (docs/evaluation.md)                     */
/*                                                                                             */
/* imagenet (any folder of class folders, or a flat folder + label file), coco (val2017 +      */
/* captions_val2017.json), flickr30k (Karpathy split JSON or CSV), sugarcrepe (its subset JSON */
/* files over COCO val2017), captions (JSONL/CSV of image-caption pairs). Texts (class prompts, */
/* captions, negatives) are embedded by the caller's own text model: list them with            */
/* lift_suite_text, embed them into a store with a text column, then evaluate.                 */
/* ------------------------------------------------------------------------------------------ */

typedef struct lift_suite lift_suite;

typedef struct lift_suite_options {
  size_t struct_size;         /* sizeof(lift_suite_options), set by the caller                 */
  const char *name;           /* "imagenet", "coco", "flickr30k", "sugarcrepe" or "captions"   */
  const char *root;           /* the suite's image folder (coco: the folder holding val2017/)  */
  const char *annotations;    /* the suite's annotation file or folder; NULL: none / default   */
  const char *classes;        /* imagenet: class table (JSON or TSV); NULL: the folder names   */
  const char *templates;      /* imagenet: template file or "lift", "simple", "openai"; NULL: lift */
  int64_t captions_per_image; /* retrieval: each image's first N captions; 0: all              */
  const char *split;          /* flickr30k: the split evaluated; NULL: "test"                  */
} lift_suite_options;

typedef struct lift_suite_run_options {
  size_t struct_size;         /* sizeof(lift_suite_run_options), set by the caller             */
  int64_t batch;              /* images decoded and encoded together (default 128)             */
  int32_t filter;             /* lift_filter (default bicubic)                                 */
  int32_t resize;             /* short side before the centre crop; 0: the model's image size  */
  int32_t decode_threads;     /* threads decoding images (default 1)                           */
  int32_t reduced_decode;     /* 1: decode large JPEGs at a reduced scale (default 1)          */
  const char *image_cache;    /* image-embedding cache file, read and updated; NULL: none      */
} lift_suite_run_options;

/* Zeroes *out (keeping struct_size), all paths NULL. Thread-safe. */
lift_status lift_suite_options_default(lift_suite_options *out);
lift_status lift_suite_run_options_default(lift_suite_run_options *out);
/* Reads the suite's layout (annotations parsed, every image they name checked to exist).
 * Errors name the file and entry. Thread-safe. */
lift_status lift_suite_open(const lift_suite_options *options, lift_suite **out);
void lift_suite_free(lift_suite *suite);
/* The image files the suite uses and the distinct texts it needs (either output may be NULL).
 * Thread-safe. */
lift_status lift_suite_counts(lift_suite *suite, int64_t *images, int64_t *texts);
/* Text `index` (0 .. texts-1) in UTF-8. Size query as lift_store_read_string. Thread-safe. */
lift_status lift_suite_text(lift_suite *suite, int64_t index, char *buf, size_t cap, size_t *len);
/* Evaluates `model` on the suite: the texts' embeddings are looked up by exact text in `texts`
 * (a store with a text column: a missing text, or one store dimension other than the model's
 * text dimension, is an error naming it); each image is encoded once (images that cannot be read
 * are left out and counted). The result replaces the suite's previous one. Handle-serialised. */
lift_status lift_suite_evaluate(lift_suite *suite, lift_model *model, lift_store *texts,
                                const lift_suite_run_options *options);
/* The last result as JSON (format 0) or a text table (format 1). Size query as
 * lift_store_read_string; LIFT_ERR_STATE before any evaluation. Handle-serialised. */
lift_status lift_suite_result(lift_suite *suite, int32_t format, char *buf, size_t cap, size_t *len);

/* ------------------------------------------------------------------------------------------ */
/* Data-parallel steps                                                                         */
/*                                                                                             */
/* liblift does not link an MPI library: the caller passes its collectives as callbacks        */
/* (examples/mpi wraps MPI, bindings/python wraps mpi4py, `lift train` under mpirun uses       */
/* Open MPI). Every rank calls lift_trainer_step_distributed with its own part of the global   */
/* batch; the ranks' trainers must start identical (same model seed or checkpoint).            */
/* ------------------------------------------------------------------------------------------ */

typedef struct lift_comm {
  size_t struct_size; /* sizeof(lift_comm), set by the caller                                   */
  void *context; /* passed back to every callback                                            */
  int32_t rank;  /* this process, in [0, size)                                                 */
  int32_t size;  /* number of ranks                                                            */
  /* all[r] = the value rank r passed. Returns 0 on success. */
  int (*allgather_int64)(void *context, int64_t value, int64_t *all);
  /* Concatenates in rank order the `count` floats each rank sends (counts[r] of rank r) into
   * recv on every rank. Returns 0 on success. */
  int (*allgatherv_float)(void *context, const float *send, int64_t count, float *recv, const int64_t *counts);
  /* Sums `count` floats over the ranks, in place, with the same result on every rank.
   * Returns 0 on success. */
  int (*allreduce_sum_float)(void *context, float *data, int64_t count);
} lift_comm;

/* One optimiser step of the global batch formed by every rank's `local_batch` images and text
 * embeddings (formats as lift_trainer_step; a rank may contribute more images than its batch
 * capacity: they run as micro-batches). The sequence is: local forward; all-gather of the image
 * features and text embeddings; the loss of the whole global batch and its exact gradient with
 * respect to this rank's features; local backward; all-reduce of the gradient buffer divided by
 * the number of ranks; global-norm clipping and the update, identical on every rank. The result
 * equals one process stepping on the whole global batch (up to summation order).
 * Errors: as lift_trainer_step; LIFT_ERR_ARGUMENT for a NULL comm, a NULL callback or a rank
 * outside [0, size); LIFT_ERR_IO when a callback returns non-zero or the gathered counts
 * disagree with this rank's local_batch. On any error nothing is updated and the gradient is
 * zeroed. An error that only this rank sees (e.g. a bad image) leaves the other ranks waiting
 * in a collective: callers must then abort the job (MPI_Abort), as examples/mpi does.
 * Thread-safe: holds the trainer's lock for the whole step, collectives included. */
lift_status lift_trainer_step_distributed(lift_trainer *trainer, const void *images, lift_image_format format,
                                          size_t images_len, const float *texts, size_t texts_len, int64_t local_batch,
                                          const lift_comm *comm, lift_step_stats *stats);

/* lift_trainer_step_distributed on this rank's images' pooled features (local_batch x width,
 * from lift_model_features) instead of the images, as lift_trainer_step_features: the head-only
 * step of a trainer whose whole image tower is locked. Errors as both; thread-safe as
 * lift_trainer_step_distributed. */
lift_status lift_trainer_step_features_distributed(lift_trainer *trainer, const float *features, size_t features_len,
                                                   const float *texts, size_t texts_len, int64_t local_batch,
                                                   const lift_comm *comm, lift_step_stats *stats);

/* ---- Files from untrusted sources ----
 *
 * liblift checks every size, index and value it reads, but HDF5 metadata is parsed by libhdf5,
 * which can crash or loop on a crafted file (a damaged heap behind a variable-length string,
 * say): in-process, such a file can take the host down whatever liblift does. lift_file_check
 * reads a file in full in a separate process first. */

/* The memory budget: the most one operation may allocate when its sizes come from outside (a
 * file's declared batch capacity, shapes and counts, or a caller's). Every buffer liblift sizes
 * from an input, and every trainer's total (workspace, loss matrix, moments), is checked against
 * it before anything is allocated or touched: LIFT_ERR_MEMORY names what and how many bytes.
 * The checking process of lift_file_check runs under it. Default: LIFT_MEMORY_LIMIT (bytes, or a
 * number followed by K, M, G or T, powers of 1024), else half the physical memory. `bytes` 0
 * restores the default. Process-wide; thread-safe. */
lift_status lift_set_memory_limit(uint64_t bytes);
/* The budget in force, in bytes. Thread-safe. */
uint64_t lift_memory_limit(void);

/* What a file is expected to hold. */
typedef enum lift_file_kind {
  LIFT_FILE_ANY = 0,           /* whatever its content says it is */
  LIFT_FILE_MODEL = 1,         /* a model or a training checkpoint (safetensors) */
  LIFT_FILE_STORE = 2,         /* an embedding store */
  LIFT_FILE_DATASET = 3,       /* an image-caption dataset */
  LIFT_FILE_CAPTIONS = 4,      /* a captions file (caption embeddings and class prompts) */
  LIFT_FILE_FEATURE_CACHE = 5, /* a feature cache */
  LIFT_FILE_IMAGE_SOURCE = 6   /* tar shards (a path or a {a..b} pattern) or a folder of images */
} lift_file_kind;

/* Reads everything liblift would read from `path` as `kind`, in this process: every tensor, row,
 * image (decoded), caption, label, class name and variable-length string. LIFT_OK when all of it
 * reads; otherwise the status and message an open or read would give (LIFT_ERR_FORMAT when the
 * content is not of `kind`). A one-line summary of what the file holds ("embedding store of
 * 1000 x 512") is copied into `summary` (cut to cap - 1 bytes and NUL-terminated when cap > 0;
 * may be NULL with cap 0); *len (may be NULL) receives its full length. This is what the
 * checking process of lift_file_check runs; on its own it protects nothing. Thread-safe. */
lift_status lift_file_read_all(const char *path, lift_file_kind kind, char *summary, size_t cap, size_t *len);

/* lift_file_read_all in a separate process, so that a crash or hang below liblift (in libhdf5)
 * ends that process, not the caller. The process is the program lift-file-check, installed with
 * the library (next to liblift.so, or in the liblift/ folder beside it; LIFT_FILE_CHECK_HELPER
 * names another), started with posix_spawn: safe in a multi-threaded host, which is never
 * forked. It loads this same liblift.so, caps its data segment at the memory budget
 * (LIFT_MEMORY_LIMIT, default half the physical memory) and is killed after timeout_seconds.
 * Returns LIFT_OK when the file reads in full (summary as lift_file_read_all); the reader's
 * status and message when liblift refuses the file ("'PATH' is unusable: ..."); LIFT_ERR_UNSAFE
 * when the process crashed or did not finish in time (the message says which: do not open that
 * file in-process); LIFT_ERR_IO when the process cannot be started; LIFT_ERR_ARGUMENT for a
 * timeout outside (0, 86400]. Costs one full read of the file plus starting a process (tens of
 * milliseconds). Thread-safe (several checks may run at once). */
lift_status lift_file_check(const char *path, lift_file_kind kind, double timeout_seconds, char *summary, size_t cap,
                            size_t *len);

/* Matrix-product FLOPs of one training step of `batch` images (forward + backward), as
 * lift-bench counts them. Thread-safe. */
lift_status lift_model_step_flops(lift_model *model, int64_t batch, double *flops);

#ifdef __cplusplus
}
#endif

#endif /* LIFT_H */
