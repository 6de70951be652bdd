/* oneDNN's C API (Debian: libdnnl-dev, oneDNN 2.x, OpenMP threading) and the two OpenMP calls
 * liblift needs to keep oneDNN single-threaded inside its own workers (libgomp, which
 * libdnnl links). */
#include <oneapi/dnnl/dnnl.h>

int omp_get_max_threads(void);
void omp_set_num_threads(int num_threads);
