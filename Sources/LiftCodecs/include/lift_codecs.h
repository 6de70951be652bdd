/* Image decoding for liblift's data loader: JPEG (TurboJPEG), PNG (libpng) and WebP (libwebp)
 * behind one small interface, so that every decoder's error path - libpng's longjmp included -
 * stays inside this C file and reaches Swift as a status and a message.
 *
 * Output follows Pillow's Image.open(...).convert("RGB") (channels 3) or .convert("L")
 * (channels 1): alpha is dropped (not composited), palettes are looked up, CMYK JPEGs are read
 * with Adobe's inverted convention and converted as Pillow's cmyk2rgb does, 16-bit colour keeps
 * the high byte, 16-bit grey is clipped at 255 (Pillow's I;16 -> L/RGB), 1/2/4-bit grey is
 * scaled to 0..255, and RGB -> L is ITU-R 601-2 luma in Pillow's fixed point.
 *
 * Not part of liblift's C ABI (the names do not start with lift_; liblift.so keeps them local).
 * Thread-safe: no global state; each call uses its own decoder objects. */
#ifndef LIFT_CODECS_H
#define LIFT_CODECS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Results. */
enum {
  LC_OK = 0,
  LC_UNSUPPORTED = 1, /* not a JPEG, PNG or WebP stream (or a variant the decoder refuses) */
  LC_CORRUPT = 2,     /* the decoder found invalid data */
  LC_TRUNCATED = 3,   /* the data ends before the image does */
  LC_EMPTY = 4,       /* zero bytes */
  LC_NOMEM = 5,       /* an allocation failed */
  LC_ARGUMENT = 6     /* a caller error (buffer too small, bad channels or scale) */
};

/* Formats. */
enum { LC_FORMAT_UNKNOWN = 0, LC_FORMAT_JPEG = 1, LC_FORMAT_PNG = 2, LC_FORMAT_WEBP = 3 };

typedef struct lc_info {
  int format;   /* LC_FORMAT_* */
  int width;    /* full-size width and height in pixels */
  int height;
  int colour;   /* 1 grey, 3 colour, 4 CMYK (JPEG), as stored */
  int scalable; /* 1 if the decoder can decode at n/8 of the size in the DCT domain (JPEG) */
} lc_info;

/* Reads the header: format and size. Returns LC_OK or an error with a message in msg. */
int lc_probe(const uint8_t *data, size_t len, lc_info *info, char *msg, size_t msg_cap);

/* Width or height of a JPEG decoded at eighths/8 of its size (TurboJPEG's TJSCALED: rounded up). */
int lc_scaled(int dimension, int eighths);

/* Decodes `data` into `out` as `channels` (1 or 3) interleaved uint8 samples per pixel, rows of
 * width * channels bytes, at eighths/8 of the full size (8 = full size; other values only for
 * JPEG). out_cap must hold lc_scaled(width) * lc_scaled(height) * channels bytes. The decoded
 * size is stored in *width and *height. On error returns LC_* and a message in msg. */
int lc_decode(const uint8_t *data, size_t len, int channels, int eighths, uint8_t *out, size_t out_cap,
              int *width, int *height, char *msg, size_t msg_cap);

#ifdef __cplusplus
}
#endif
#endif
