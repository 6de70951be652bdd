/* JPEG, PNG and WebP decoding with Pillow's colour conversions (see include/lift_codecs.h). */
#include "lift_codecs.h"

#include <png.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>
#include <webp/decode.h>

static void set_msg(char *msg, size_t cap, const char *fmt, ...) {
  if (!msg || cap == 0) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, cap, fmt, ap);
  va_end(ap);
}

static int detect(const uint8_t *d, size_t n) {
  if (n >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF) return LC_FORMAT_JPEG;
  if (n >= 8 && memcmp(d, "\x89PNG\r\n\x1a\n", 8) == 0) return LC_FORMAT_PNG;
  if (n >= 12 && memcmp(d, "RIFF", 4) == 0 && memcmp(d + 8, "WEBP", 4) == 0) return LC_FORMAT_WEBP;
  return LC_FORMAT_UNKNOWN;
}

static const char *format_name(const uint8_t *d, size_t n) {
  if (n >= 6 && (memcmp(d, "GIF87a", 6) == 0 || memcmp(d, "GIF89a", 6) == 0)) return "GIF";
  if (n >= 2 && d[0] == 'B' && d[1] == 'M') return "BMP";
  if (n >= 4 && (memcmp(d, "II*\0", 4) == 0 || memcmp(d, "MM\0*", 4) == 0)) return "TIFF";
  if (n >= 12 && memcmp(d + 4, "ftyp", 4) == 0) return "ISO media (AVIF/HEIC)";
  return NULL;
}

/* Pillow's RGB -> L (L24 >> 16 of Convert.c). */
static inline uint8_t luma(uint8_t r, uint8_t g, uint8_t b) {
  return (uint8_t)(((uint32_t)r * 19595 + (uint32_t)g * 38470 + (uint32_t)b * 7471 + 0x8000) >> 16);
}

/* Pillow's MULDIV255. */
static inline int muldiv255(int a, int b) {
  int t = a * b + 128;
  return ((t >> 8) + t) >> 8;
}

static inline uint8_t clip8(int v) { return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v); }

/* Stores one RGB pixel as `channels` samples. */
static inline void put_rgb(uint8_t *out, int channels, uint8_t r, uint8_t g, uint8_t b) {
  if (channels == 3) {
    out[0] = r, out[1] = g, out[2] = b;
  } else {
    out[0] = luma(r, g, b);
  }
}

static inline void put_grey(uint8_t *out, int channels, uint8_t v) {
  out[0] = v;
  if (channels == 3) out[1] = v, out[2] = v;
}

int lc_scaled(int dimension, int eighths) { return (int)(((long long)dimension * eighths + 7) / 8); }

/* ---------------------------------------------------------------------------------------- JPEG */

/* Whether a JPEG stream ends with its EOI marker (FF D9, trailing zero padding allowed): a
 * stream that fails to decode without one was most likely cut short. */
static int jpeg_complete(const uint8_t *data, size_t len) {
  while (len > 2 && data[len - 1] == 0) len--;
  return len >= 2 && data[len - 2] == 0xFF && data[len - 1] == 0xD9;
}

static int jpeg_header(tjhandle tj, const uint8_t *data, size_t len, lc_info *info, char *msg, size_t cap) {
  int w = 0, h = 0, subsamp = 0, cs = 0;
  if (tjDecompressHeader3(tj, data, (unsigned long)len, &w, &h, &subsamp, &cs) != 0) {
    set_msg(msg, cap, "JPEG header: %s", tjGetErrorStr2(tj));
    return jpeg_complete(data, len) ? LC_CORRUPT : LC_TRUNCATED;
  }
  info->format = LC_FORMAT_JPEG;
  info->width = w;
  info->height = h;
  info->colour = cs == TJCS_GRAY ? 1 : (cs == TJCS_CMYK || cs == TJCS_YCCK) ? 4 : 3;
  info->scalable = 1;
  return LC_OK;
}

/* Pillow reads CMYK JPEGs as "CMYK;I" (Adobe's inverted samples) and converts with cmyk2rgb. */
static void cmyk_to_out(const uint8_t *src, size_t pixels, int channels, uint8_t *out) {
  for (size_t i = 0; i < pixels; i++, src += 4, out += channels) {
    int c = 255 - src[0], m = 255 - src[1], y = 255 - src[2], nk = src[3]; /* nk = 255 - (255 - K) */
    put_rgb(out, channels, clip8(nk - muldiv255(c, nk)), clip8(nk - muldiv255(m, nk)), clip8(nk - muldiv255(y, nk)));
  }
}

static int decode_jpeg(const uint8_t *data, size_t len, int channels, int eighths, uint8_t *out, size_t out_cap,
                       int *width, int *height, char *msg, size_t cap) {
  tjhandle tj = tjInitDecompress();
  if (!tj) {
    set_msg(msg, cap, "cannot create a JPEG decoder");
    return LC_NOMEM;
  }
  lc_info info;
  int status = jpeg_header(tj, data, len, &info, msg, cap);
  uint8_t *tmp = NULL;
  if (status != LC_OK) goto done;
  int w = lc_scaled(info.width, eighths), h = lc_scaled(info.height, eighths);
  size_t pixels = (size_t)w * (size_t)h;
  if (out_cap / (size_t)channels < pixels) {
    set_msg(msg, cap, "output buffer of %zu bytes is too small for %dx%dx%d", out_cap, w, h, channels);
    status = LC_ARGUMENT;
    goto done;
  }
  int stored = info.colour == 1 ? 1 : info.colour == 4 ? 4 : 3;
  int format = stored == 1 ? TJPF_GRAY : stored == 4 ? TJPF_CMYK : TJPF_RGB;
  uint8_t *dst = out;
  if (stored > channels) {
    tmp = malloc(pixels * (size_t)stored);
    if (!tmp) {
      set_msg(msg, cap, "cannot allocate %zu bytes for a %dx%d JPEG", pixels * (size_t)stored, w, h);
      status = LC_NOMEM;
      goto done;
    }
    dst = tmp;
  }
  /* Default flags: accurate integer IDCT and fancy upsampling, as libjpeg (and so Pillow) uses;
   * LIMITSCANS refuses progressive files with absurd scan counts (a denial of service). */
  if (tjDecompress2(tj, data, (unsigned long)len, dst, w, 0, h, format, TJFLAG_LIMITSCANS) != 0) {
    const char *text = tjGetErrorStr2(tj);
    if (tjGetErrorCode(tj) == TJERR_FATAL) {
      set_msg(msg, cap, "JPEG: %s", text);
      status = jpeg_complete(data, len) ? LC_CORRUPT : LC_TRUNCATED;
      goto done;
    }
    if (strstr(text, "Premature end") != NULL) {
      set_msg(msg, cap, "JPEG: %s", text);
      status = LC_TRUNCATED;
      goto done;
    }
    /* Other warnings (extraneous bytes, ...): the image decoded, as Pillow accepts it. */
  }
  if (stored == 4) {
    cmyk_to_out(tmp, pixels, channels, out);
  } else if (stored == 3 && channels == 1) {
    for (size_t i = 0; i < pixels; i++) out[i] = luma(tmp[3 * i], tmp[3 * i + 1], tmp[3 * i + 2]);
  } else if (stored == 1 && channels == 3) {
    for (size_t i = pixels; i-- > 0;) out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = out[i];
  }
  *width = w;
  *height = h;
done:
  free(tmp);
  tjDestroy(tj);
  return status;
}

/* ----------------------------------------------------------------------------------------- PNG */

typedef struct png_source {
  const uint8_t *data;
  size_t len, pos;
  int ended; /* the stream ran out: a truncated file */
  char *msg;
  size_t cap;
} png_source;

static void png_read_memory(png_structp png, png_bytep out, size_t n) {
  png_source *s = png_get_io_ptr(png);
  if (n > s->len - s->pos) {
    s->ended = 1;
    png_error(png, "the data ends before the image does");
  }
  memcpy(out, s->data + s->pos, n);
  s->pos += n;
}

static void png_fail(png_structp png, png_const_charp text) {
  png_source *s = png_get_error_ptr(png);
  set_msg(s->msg, s->cap, "PNG: %s", text);
  png_longjmp(png, 1);
}

static void png_ignore_warning(png_structp png, png_const_charp text) {
  (void)png;
  (void)text;
}

typedef struct png_layout {
  int colour_type, depth;
  png_colorp palette;
  int palette_size;
} png_layout;

/* One row as libpng delivers it (packing on: one byte per sample below 8 bits; 16-bit samples
 * big-endian) into `width` output pixels, as Pillow unpacks and converts that PNG mode. */
static void png_row(const png_layout *l, const uint8_t *row, int width, int channels, uint8_t *out) {
  int d = l->depth;
  for (int x = 0; x < width; x++, out += channels) {
    switch (l->colour_type) {
    case PNG_COLOR_TYPE_GRAY: {
      uint8_t v;
      if (d == 16) {
        v = row[2 * x] != 0 ? 255 : row[2 * x + 1]; /* I;16 -> L clips */
      } else {
        v = d == 8 ? row[x] : d == 4 ? (uint8_t)(row[x] * 17) : d == 2 ? (uint8_t)(row[x] * 85) : (row[x] ? 255 : 0);
      }
      put_grey(out, channels, v);
      break;
    }
    case PNG_COLOR_TYPE_GRAY_ALPHA:
      put_grey(out, channels, d == 16 ? row[4 * x] : row[2 * x]);
      break;
    case PNG_COLOR_TYPE_RGB:
      if (d == 16) put_rgb(out, channels, row[6 * x], row[6 * x + 2], row[6 * x + 4]);
      else put_rgb(out, channels, row[3 * x], row[3 * x + 1], row[3 * x + 2]);
      break;
    case PNG_COLOR_TYPE_RGB_ALPHA:
      if (d == 16) put_rgb(out, channels, row[8 * x], row[8 * x + 2], row[8 * x + 4]);
      else put_rgb(out, channels, row[4 * x], row[4 * x + 1], row[4 * x + 2]);
      break;
    case PNG_COLOR_TYPE_PALETTE: {
      /* Pillow's palette starts as a grey ramp: an index past PLTE reads (i, i, i). */
      int i = row[x];
      if (i < l->palette_size) put_rgb(out, channels, l->palette[i].red, l->palette[i].green, l->palette[i].blue);
      else put_rgb(out, channels, (uint8_t)i, (uint8_t)i, (uint8_t)i);
      break;
    }
    }
  }
}

static int decode_png(const uint8_t *data, size_t len, int channels, uint8_t *out, size_t out_cap, lc_info *probe,
                      int *width, int *height, char *msg, size_t cap) {
  png_source src = {data, len, 0, 0, msg, cap};
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, png_fail, png_ignore_warning);
  if (!png) {
    set_msg(msg, cap, "cannot create a PNG decoder");
    return LC_NOMEM;
  }
  png_infop info = png_create_info_struct(png);
  /* Written after setjmp and used after a longjmp: volatile. */
  uint8_t *volatile rows = NULL;
  png_bytepp volatile pointers = NULL;
  volatile int status = LC_CORRUPT;
  if (!info) {
    set_msg(msg, cap, "cannot create a PNG decoder");
    status = LC_NOMEM;
    goto done;
  }
  if (setjmp(png_jmpbuf(png))) {
    if (src.ended) status = LC_TRUNCATED;
    goto done;
  }
  png_set_read_fn(png, &src, png_read_memory);
  png_read_info(png, info);
  png_uint_32 w = 0, h = 0;
  int depth = 0, type = 0, interlace = 0;
  png_get_IHDR(png, info, &w, &h, &depth, &type, &interlace, NULL, NULL);
  if (probe) {
    probe->format = LC_FORMAT_PNG;
    probe->width = (int)w;
    probe->height = (int)h;
    probe->colour = (type == PNG_COLOR_TYPE_GRAY || type == PNG_COLOR_TYPE_GRAY_ALPHA) ? 1 : 3;
    probe->scalable = 0;
    status = LC_OK;
    goto done;
  }
  size_t pixels = (size_t)w * (size_t)h;
  if (out_cap / (size_t)channels < pixels) {
    set_msg(msg, cap, "output buffer of %zu bytes is too small for %ux%ux%d", out_cap, (unsigned)w, (unsigned)h, channels);
    status = LC_ARGUMENT;
    goto done;
  }
  png_layout layout = {type, depth, NULL, 0};
  if (type == PNG_COLOR_TYPE_PALETTE && png_get_PLTE(png, info, &layout.palette, &layout.palette_size) == 0) {
    set_msg(msg, cap, "PNG: a palette image without a palette");
    goto done;
  }
  if (depth < 8) png_set_packing(png);
  int passes = png_set_interlace_handling(png);
  png_read_update_info(png, info);
  size_t rowbytes = png_get_rowbytes(png, info);
  if (passes == 1) {
    /* One row at a time: memory is one row, whatever the image's size. */
    rows = malloc(rowbytes);
    if (!rows) goto nomem;
    for (png_uint_32 y = 0; y < h; y++) {
      png_read_row(png, rows, NULL);
      png_row(&layout, rows, (int)w, channels, out + (size_t)y * w * (size_t)channels);
    }
  } else {
    /* Interlaced: the passes fill the whole image. */
    if (rowbytes != 0 && h > SIZE_MAX / rowbytes) goto nomem;
    rows = malloc(rowbytes * h);
    pointers = malloc(sizeof(png_bytep) * h);
    if (!rows || !pointers) goto nomem;
    for (png_uint_32 y = 0; y < h; y++) pointers[y] = rows + (size_t)y * rowbytes;
    png_read_image(png, pointers);
    for (png_uint_32 y = 0; y < h; y++) png_row(&layout, pointers[y], (int)w, channels, out + (size_t)y * w * (size_t)channels);
  }
  *width = (int)w;
  *height = (int)h;
  status = LC_OK;
  goto done;
nomem:
  set_msg(msg, cap, "cannot allocate the rows of a %ux%u PNG", (unsigned)w, (unsigned)h);
  status = LC_NOMEM;
done:
  free(rows);
  free(pointers);
  png_destroy_read_struct(&png, info ? &info : NULL, NULL);
  return status;
}

/* ---------------------------------------------------------------------------------------- WebP */

static int webp_status(VP8StatusCode code, char *msg, size_t cap) {
  switch (code) {
  case VP8_STATUS_OK: return LC_OK;
  case VP8_STATUS_NOT_ENOUGH_DATA: set_msg(msg, cap, "WebP: the data ends before the image does"); return LC_TRUNCATED;
  case VP8_STATUS_OUT_OF_MEMORY: set_msg(msg, cap, "WebP: out of memory"); return LC_NOMEM;
  case VP8_STATUS_UNSUPPORTED_FEATURE: set_msg(msg, cap, "WebP: unsupported feature"); return LC_UNSUPPORTED;
  default: set_msg(msg, cap, "WebP: invalid data (status %d)", (int)code); return LC_CORRUPT;
  }
}

static int webp_header(const uint8_t *data, size_t len, WebPBitstreamFeatures *f, lc_info *info, char *msg, size_t cap) {
  int status = webp_status(WebPGetFeatures(data, len, f), msg, cap);
  if (status != LC_OK) return status;
  if (f->has_animation) {
    set_msg(msg, cap, "WebP: animated images are not supported");
    return LC_UNSUPPORTED;
  }
  info->format = LC_FORMAT_WEBP;
  info->width = f->width;
  info->height = f->height;
  info->colour = 3;
  info->scalable = 0;
  return LC_OK;
}

static int decode_webp(const uint8_t *data, size_t len, int channels, uint8_t *out, size_t out_cap, int *width,
                       int *height, char *msg, size_t cap) {
  WebPDecoderConfig config;
  if (!WebPInitDecoderConfig(&config)) {
    set_msg(msg, cap, "WebP: decoder version mismatch");
    return LC_UNSUPPORTED;
  }
  lc_info info;
  int status = webp_header(data, len, &config.input, &info, msg, cap);
  if (status != LC_OK) return status;
  size_t pixels = (size_t)info.width * (size_t)info.height;
  if (out_cap / (size_t)channels < pixels) {
    set_msg(msg, cap, "output buffer of %zu bytes is too small for %dx%dx%d", out_cap, info.width, info.height, channels);
    return LC_ARGUMENT;
  }
  uint8_t *dst = out, *tmp = NULL;
  if (channels == 1) {
    tmp = malloc(pixels * 3);
    if (!tmp) {
      set_msg(msg, cap, "cannot allocate %zu bytes for a %dx%d WebP", pixels * 3, info.width, info.height);
      return LC_NOMEM;
    }
    dst = tmp;
  }
  config.output.colorspace = MODE_RGB;
  config.output.is_external_memory = 1;
  config.output.u.RGBA.rgba = dst;
  config.output.u.RGBA.stride = info.width * 3;
  config.output.u.RGBA.size = pixels * 3;
  status = webp_status(WebPDecode(data, len, &config), msg, cap);
  WebPFreeDecBuffer(&config.output);
  if (status == LC_OK && tmp) {
    for (size_t i = 0; i < pixels; i++) out[i] = luma(tmp[3 * i], tmp[3 * i + 1], tmp[3 * i + 2]);
  }
  free(tmp);
  if (status == LC_OK) {
    *width = info.width;
    *height = info.height;
  }
  return status;
}

/* ----------------------------------------------------------------------------------- interface */

static int unknown_format(const uint8_t *data, size_t len, char *msg, size_t cap) {
  if (len == 0) {
    set_msg(msg, cap, "no data (0 bytes)");
    return LC_EMPTY;
  }
  const char *name = format_name(data, len);
  if (name) set_msg(msg, cap, "%s images are not supported (JPEG, PNG and WebP are)", name);
  else set_msg(msg, cap, "not a JPEG, PNG or WebP image (first bytes %02x %02x %02x %02x)", len > 0 ? data[0] : 0,
               len > 1 ? data[1] : 0, len > 2 ? data[2] : 0, len > 3 ? data[3] : 0);
  return LC_UNSUPPORTED;
}

int lc_probe(const uint8_t *data, size_t len, lc_info *info, char *msg, size_t cap) {
  if (!info || (!data && len > 0)) return LC_ARGUMENT;
  memset(info, 0, sizeof *info);
  switch (detect(data, len)) {
  case LC_FORMAT_JPEG: {
    tjhandle tj = tjInitDecompress();
    if (!tj) return LC_NOMEM;
    int status = jpeg_header(tj, data, len, info, msg, cap);
    tjDestroy(tj);
    return status;
  }
  case LC_FORMAT_PNG: return decode_png(data, len, 3, NULL, 0, info, NULL, NULL, msg, cap);
  case LC_FORMAT_WEBP: {
    WebPBitstreamFeatures f;
    return webp_header(data, len, &f, info, msg, cap);
  }
  default: return unknown_format(data, len, msg, cap);
  }
}

int lc_decode(const uint8_t *data, size_t len, int channels, int eighths, uint8_t *out, size_t out_cap, int *width,
              int *height, char *msg, size_t cap) {
  if ((!data && len > 0) || !out || !width || !height || (channels != 1 && channels != 3) || eighths < 1 || eighths > 8) {
    set_msg(msg, cap, "invalid decode arguments");
    return LC_ARGUMENT;
  }
  int format = detect(data, len);
  if (eighths != 8 && format != LC_FORMAT_JPEG) {
    set_msg(msg, cap, "only JPEG decodes at a reduced scale");
    return LC_ARGUMENT;
  }
  switch (format) {
  case LC_FORMAT_JPEG: return decode_jpeg(data, len, channels, eighths, out, out_cap, width, height, msg, cap);
  case LC_FORMAT_PNG: return decode_png(data, len, channels, out, out_cap, NULL, width, height, msg, cap);
  case LC_FORMAT_WEBP: return decode_webp(data, len, channels, out, out_cap, width, height, msg, cap);
  default: return unknown_format(data, len, msg, cap);
  }
}
