/* The few GNU/Linux calls liblift needs that Swift's Glibc module does not expose (they are
 * declared only under _GNU_SOURCE). Not part of liblift's C ABI (names start with ls_; liblift.so
 * keeps them local). Thread-safe. */
#ifndef LIFT_SYSTEM_H
#define LIFT_SYSTEM_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The path of the loaded object (shared library or executable) that contains `address`, as the
 * dynamic loader recorded it, copied NUL-terminated into buf; 0 on success, -1 if unknown or if
 * it does not fit. */
int ls_object_path(const void *address, char *buf, size_t cap);

/* pipe2(fds, O_CLOEXEC): both ends close-on-exec from the start, so a process another thread
 * starts meanwhile does not inherit them. 0 on success, -1 with errno. */
int ls_pipe_cloexec(int fds[2]);

/* Asks the kernel to kill this process when its parent ends (PR_SET_PDEATHSIG); 0 on success. */
int ls_die_with_parent(void);

#ifdef __cplusplus
}
#endif

#endif
