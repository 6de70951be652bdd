/* zlib (Debian: zlib1g-dev; pkg-config name "zlib"), for gzip-compressed IDX files. */
#include <zlib.h>
