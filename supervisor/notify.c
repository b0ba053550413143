/*
 * notify.c - the sd_notify datagram protocol.  See notify.h.
 *
 * Spoken by hand rather than through libsystemd: it is one sendmsg() on
 * an AF_UNIX datagram socket, documented as a stable interface
 * (sd_notify(3), "Notes"), and this way vminfod builds and runs on hosts
 * without libsystemd.
 */
#include "notify.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NOTIFY_MSG_MAX 1024

int notify_init(struct notify *n)
{
	memset(n, 0, sizeof(*n));
	n->fd = -1;
	const char *e = getenv("NOTIFY_SOCKET");
	if (!e || !*e)
		return 0;
	size_t len = strlen(e);
	int r = 0;
	if ((e[0] != '/' && e[0] != '@') || len >= sizeof(n->addr.sun_path)) {
		r = -EINVAL;
		goto out;
	}
	n->addr.sun_family = AF_UNIX;
	memcpy(n->addr.sun_path, e, len);
	if (e[0] == '@')
		n->addr.sun_path[0] = '\0';  /* abstract namespace */
	n->addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + (e[0] == '/' ? 1 : 0));
	n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (n->fd < 0)
		r = -errno;
out:
	/* Only the supervisor speaks for the service. */
	(void)unsetenv("NOTIFY_SOCKET");
	return r;
}

void notify_done(struct notify *n)
{
	if (n->fd >= 0)
		close(n->fd);
	n->fd = -1;
}

bool notify_enabled(const struct notify *n)
{
	return n->fd >= 0;
}

int notify_send(struct notify *n, const char *msg)
{
	if (n->fd < 0)
		return 0;
	ssize_t w = sendto(n->fd, msg, strlen(msg), MSG_NOSIGNAL, (const struct sockaddr *)&n->addr,
	                   n->addrlen);
	if (w < 0)
		return -errno;
	return 0;
}

/* "KEY=VALUE" lines end at a newline, so a status cannot contain one. */
static void one_line(char *dst, size_t dstlen, const char *prefix, const char *status)
{
	int k = snprintf(dst, dstlen, "%sSTATUS=%s", prefix, status ? status : "");
	if (k < 0)
		dst[0] = '\0';
	size_t plen = strlen(prefix);
	for (char *p = dst + plen; *p; p++)
		if (*p == '\n')
			*p = ' ';
}

int notify_ready(struct notify *n, const char *status)
{
	if (n->ready_sent)
		return 0;
	char msg[NOTIFY_MSG_MAX];
	one_line(msg, sizeof(msg), "READY=1\n", status);
	int r = notify_send(n, msg);
	if (r == 0)
		n->ready_sent = true;
	return r;
}

int notify_status(struct notify *n, const char *status)
{
	char msg[NOTIFY_MSG_MAX];
	one_line(msg, sizeof(msg), "", status);
	return notify_send(n, msg);
}

int notify_stopping(struct notify *n, const char *status)
{
	char msg[NOTIFY_MSG_MAX];
	one_line(msg, sizeof(msg), "STOPPING=1\n", status);
	return notify_send(n, msg);
}
