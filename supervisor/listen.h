/*
 * listen.h - the listening sockets, owned by the supervisor.
 *
 * They are bound before any child exists and handed to every frontend
 * generation at fds 3.. (LISTEN_FDS convention), so a frontend restart
 * never closes them: connections arriving meanwhile wait in the backlog.
 * Under systemd socket activation they come from LISTEN_FDS instead.
 */
#ifndef VMINFOD_LISTEN_H
#define VMINFOD_LISTEN_H

#include <stddef.h>

#define LISTEN_MAX 16

struct listeners {
	int fds[LISTEN_MAX];
	char names[LISTEN_MAX][64];  /* "127.0.0.1:9090" as bound */
	size_t n;
};

/* Bind and listen on "HOST:PORT" ("[::1]:PORT" for IPv6), non-blocking,
 * close-on-exec, SO_REUSEADDR and SO_REUSEPORT (so a restarted supervisor
 * can bind while an orphaned frontend still serves).  Appends to `ls`.
 * 0 or -errno with a message in err. */
int listen_add(struct listeners *ls, const char *hostport, char *err, size_t errlen);
/* Take sockets passed by systemd (LISTEN_FDS/LISTEN_PID for this pid),
 * marking them close-on-exec and non-blocking.  Returns how many (0 when
 * not socket-activated) or -errno. */
int listen_from_env(struct listeners *ls);
/* Close every socket. */
void listen_close(struct listeners *ls);

#endif
