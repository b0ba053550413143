/*
 * listen.c - bind the listening sockets, or take them from systemd.
 * See listen.h.
 */
#include "listen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define LISTEN_BACKLOG 4096

static int split_hostport(const char *hostport, char *host, size_t hostlen,
	char *port, size_t portlen)
{
	const char *colon;
	if (hostport[0] == '[') {
		const char *end = strchr(hostport, ']');
		if (!end || end[1] != ':')
			return -EINVAL;
		if ((size_t)(end - hostport - 1) >= hostlen)
			return -EINVAL;
		memcpy(host, hostport + 1, (size_t)(end - hostport - 1));
		host[end - hostport - 1] = '\0';
		colon = end + 1;
	} else {
		colon = strrchr(hostport, ':');
		if (!colon || (size_t)(colon - hostport) >= hostlen)
			return -EINVAL;
		memcpy(host, hostport, (size_t)(colon - hostport));
		host[colon - hostport] = '\0';
	}
	if (!colon[1] || strlen(colon + 1) >= portlen)
		return -EINVAL;
	snprintf(port, portlen, "%s", colon + 1);
	return 0;
}

int listen_add(struct listeners *ls, const char *hostport, char *err, size_t errlen)
{
	char host[256], port[16];
	if (ls->n >= LISTEN_MAX) {
		snprintf(err, errlen, "too many listen addresses (at most %d)", LISTEN_MAX);
		return -E2BIG;
	}
	if (split_hostport(hostport, host, sizeof(host), port, sizeof(port)) < 0) {
		snprintf(err, errlen, "bad listen address \"%s\" (want HOST:PORT)", hostport);
		return -EINVAL;
	}
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
	                          .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE };
	struct addrinfo *ai;
	int gai = getaddrinfo(host, port, &hints, &ai);
	if (gai != 0) {
		snprintf(err, errlen, "bad listen address \"%s\": %s", hostport, gai_strerror(gai));
		return -EINVAL;
	}
	int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int r = 0;
	const char *what = "socket";
	if (fd < 0) {
		r = -errno;
	} else {
		int one = 1;
		if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
		    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) {
			r = -errno;
			what = "setsockopt";
		} else if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
			r = -errno;
			what = "bind";
		} else if (listen(fd, LISTEN_BACKLOG) < 0) {
			r = -errno;
			what = "listen";
		}
	}
	freeaddrinfo(ai);
	if (r < 0) {
		snprintf(err, errlen, "cannot listen on %s: %s: %s", hostport, what, strerror(-r));
		if (fd >= 0)
			close(fd);
		return r;
	}
	/* Name it as bound (port 0 becomes the real port). */
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char addr[INET6_ADDRSTRLEN] = "?";
	unsigned bound_port = 0;
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
		if (ss.ss_family == AF_INET) {
			struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
			inet_ntop(AF_INET, &sin->sin_addr, addr, sizeof(addr));
			bound_port = ntohs(sin->sin_port);
		} else if (ss.ss_family == AF_INET6) {
			struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
			inet_ntop(AF_INET6, &sin6->sin6_addr, addr, sizeof(addr));
			bound_port = ntohs(sin6->sin6_port);
		}
	}
	snprintf(ls->names[ls->n], sizeof(ls->names[0]),
	         ss.ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u", addr, bound_port);
	ls->fds[ls->n++] = fd;
	return 0;
}

int listen_from_env(struct listeners *ls)
{
	const char *pid_s = getenv("LISTEN_PID");
	const char *fds_s = getenv("LISTEN_FDS");
	if (!pid_s || !fds_s || atol(pid_s) != (long)getpid())
		return 0;
	long n = atol(fds_s);
	if (n <= 0)
		return 0;
	if (n > LISTEN_MAX)
		return -E2BIG;
	for (long i = 0; i < n; i++) {
		int fd = 3 + (int)i;
		int flags = fcntl(fd, F_GETFD);
		if (flags < 0 || fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0)
			return -errno;
		int fl = fcntl(fd, F_GETFL);
		if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
			return -errno;
		snprintf(ls->names[ls->n], sizeof(ls->names[0]), "systemd fd %d", fd);
		ls->fds[ls->n++] = fd;
	}
	/* Not for our children: they get the sockets from us. */
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	return (int)n;
}

void listen_close(struct listeners *ls)
{
	for (size_t i = 0; i < ls->n; i++)
		if (ls->fds[i] >= 0)
			close(ls->fds[i]);
	ls->n = 0;
}
