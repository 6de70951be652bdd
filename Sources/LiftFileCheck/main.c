/* lift-file-check LIBRARY FILE KIND MEMORY_LIMIT
 *
 * The process lift_file_check() starts to read a file from an untrusted source: it caps its
 * own data segment at MEMORY_LIMIT bytes (RLIMIT_DATA; 0 = no cap), loads the liblift at
 * LIBRARY (the caller's own, so both sides are the same build), reads FILE in full with
 * lift_file_read_all(FILE, KIND) and prints one verdict line on standard output:
 *   ok<TAB>summary            or            error<TAB>status<TAB>message
 * Exit status 0 when the file passed, 1 when liblift refused it, 2 for a usage error. A crash
 * or a hang inside libhdf5 ends this process, which is what it is for. Not meant to be run by
 * hand (`lift check FILE` is the command for that). */
#include <dlfcn.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

typedef int (*read_all_fn)(const char *path, int kind, char *summary, size_t cap, size_t *len);
typedef const char *(*last_error_fn)(void);

/* Prints `text` with tabs and line breaks as spaces (the verdict is one line). */
static void print_one_line(const char *text) {
  for (const char *p = text; *p; p++) putchar(*p == '\n' || *p == '\r' || *p == '\t' ? ' ' : *p);
}

static int verdict_error(int status, const char *message) {
  printf("error\t%d\t", status);
  print_one_line(message);
  putchar('\n');
  fflush(stdout);
  return 1;
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: lift-file-check LIBRARY FILE KIND MEMORY_LIMIT (started by lift_file_check)\n");
    return 2;
  }
  /* A check must not outlive the process waiting for it (killed, or its own time limit gone):
   * a file that hangs libhdf5 would otherwise keep a core busy forever. */
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() == 1) return 2;
  char *end = NULL;
  const unsigned long long limit = strtoull(argv[4], &end, 10);
  if (*argv[4] == '\0' || *end != '\0') {
    fprintf(stderr, "lift-file-check: MEMORY_LIMIT must be a byte count, got '%s'\n", argv[4]);
    return 2;
  }
  if (limit > 0) {
    const struct rlimit cap = {(rlim_t)limit, (rlim_t)limit};
    setrlimit(RLIMIT_DATA, &cap);
  }
  void *library = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!library) return verdict_error(2 /* LIFT_ERR_IO */, dlerror());
  read_all_fn read_all = (read_all_fn)dlsym(library, "lift_file_read_all");
  last_error_fn last_error = (last_error_fn)dlsym(library, "lift_last_error");
  if (!read_all || !last_error) return verdict_error(2, "the library lacks lift_file_read_all or lift_last_error");
  char summary[4096];
  size_t len = 0;
  const int status = read_all(argv[2], atoi(argv[3]), summary, sizeof summary, &len);
  if (status != 0) return verdict_error(status, last_error());
  fputs("ok\t", stdout);
  print_one_line(summary);
  putchar('\n');
  fflush(stdout);
  /* No library destructors: the verdict is out, and nothing else of this process matters. */
  _exit(0);
}
