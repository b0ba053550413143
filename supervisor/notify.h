/*
 * notify.h - tell the service manager how we are doing: the sd_notify(3)
 * datagram protocol, spoken directly (no libsystemd).
 *
 * The protocol is one AF_UNIX datagram of newline-separated KEY=VALUE
 * lines sent to the socket named by $NOTIFY_SOCKET (a path, or
 * "@name" for the abstract namespace).  Without $NOTIFY_SOCKET every call
 * is a no-op returning 0, so the daemon behaves the same under a shell.
 *
 * notify_init() takes the address out of the environment so that the
 * children (fswatcher, frontend) never see it: only the supervisor speaks
 * for the service (NotifyAccess=main).
 */
#ifndef VMINFOD_NOTIFY_H
#define VMINFOD_NOTIFY_H

#include <stdbool.h>
#include <sys/socket.h>
#include <sys/un.h>

struct notify {
	int fd;                       /* datagram socket, -1 when disabled */
	struct sockaddr_un addr;
	socklen_t addrlen;
	bool ready_sent;
};

/* Read and unset $NOTIFY_SOCKET.  0 (also when unset: disabled), or
 * -errno for a malformed address or a socket that cannot be made (then
 * disabled). */
int notify_init(struct notify *n);
/* Close the socket. */
void notify_done(struct notify *n);
/* True when a service manager listens. */
bool notify_enabled(const struct notify *n);
/* Send `msg` ("READY=1\nSTATUS=…") as one datagram.  0 or -errno; 0 when
 * disabled.  Never blocks. */
int notify_send(struct notify *n, const char *msg);
/* READY=1 with a STATUS= line, once: later calls return 0 and send
 * nothing. */
int notify_ready(struct notify *n, const char *status);
/* STATUS=<status> (newlines in status are replaced by spaces). */
int notify_status(struct notify *n, const char *status);
/* STOPPING=1 with a STATUS= line. */
int notify_stopping(struct notify *n, const char *status);

#endif
