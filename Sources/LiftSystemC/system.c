#define _GNU_SOURCE
#include "lift_system.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <string.h>
#include <unistd.h>

int ls_object_path(const void *address, char *buf, size_t cap) {
  Dl_info info;
  if (!dladdr(address, &info) || !info.dli_fname) return -1;
  const size_t n = strlen(info.dli_fname);
  if (n + 1 > cap) return -1;
  memcpy(buf, info.dli_fname, n + 1);
  return 0;
}

int ls_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

int ls_die_with_parent(void) { return prctl(PR_SET_PDEATHSIG, SIGKILL); }
