/*
 * readyprobe.h - learn that the frontend is serving: the supervisor asks
 * its own listening socket "GET /ping" until a 200 comes back.
 *
 * A connect() alone proves nothing (the kernel completes handshakes into
 * the backlog whether or not anyone accepts), and an answer from the
 * frontend through the very socket clients use is the readiness systemd
 * should hear about (DESIGN.md §8).  It needs no channel between the two
 * processes and works the same for bound and socket-activated listeners.
 *
 * Attempts are retried every READYPROBE_RETRY_MS; each attempt gives up
 * after READYPROBE_ATTEMPT_MS.  The probe is bounded by nothing else: the
 * caller frees it when it stops caring (shutdown).
 */
#ifndef VMINFOD_READYPROBE_H
#define VMINFOD_READYPROBE_H

#include <ev.h>

#define READYPROBE_RETRY_MS 50
#define READYPROBE_ATTEMPT_MS 2000

struct readyprobe;

/* Called once, from the loop, when an attempt got "HTTP/1.x 200". */
typedef void (*readyprobe_fn)(void *arg);

/* Start probing the listening socket `listen_fd` (its address from
 * getsockname; a wildcard address is probed on loopback).  NULL with
 * errno set (ENOMEM, EAFNOSUPPORT, or getsockname's error). */
struct readyprobe *readyprobe_new(struct ev_loop *loop, int listen_fd, readyprobe_fn done, void *arg);
/* Stop and free (NULL is ignored).  May be called from the callback. */
void readyprobe_free(struct readyprobe *p);
/* Attempts made so far (for the log line). */
unsigned readyprobe_attempts(const struct readyprobe *p);

#endif
