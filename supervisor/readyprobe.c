/*
 * readyprobe.c - GET /ping on our own listener until it answers 200.
 * See readyprobe.h.
 *
 * One attempt is a small state machine on one non-blocking socket:
 *   connect --writable--> send request --readable--> read status line
 * Any error, EOF, other status or the attempt timer closes the socket and
 * arms the retry timer.
 */
#include "readyprobe.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static const char REQUEST[] =
	"GET /ping HTTP/1.0\r\nHost: localhost\r\nUser-Agent: vminfod-readiness\r\n\r\n";

enum probe_state { P_IDLE, P_CONNECTING, P_READING };

struct readyprobe {
	struct ev_loop *loop;
	struct sockaddr_storage addr;
	socklen_t addrlen;
	readyprobe_fn done;
	void *arg;
	int fd;
	enum probe_state state;
	unsigned attempts;
	char got[16];             /* the start of the status line */
	size_t ngot;
	ev_io io;
	ev_timer timer;           /* attempt deadline, or the pause before a retry */
};

static void attempt(struct readyprobe *p);

static void close_attempt(struct readyprobe *p)
{
	ev_io_stop(p->loop, &p->io);
	ev_timer_stop(p->loop, &p->timer);
	if (p->fd >= 0)
		close(p->fd);
	p->fd = -1;
	p->state = P_IDLE;
	p->ngot = 0;
}

static void retry_later(struct readyprobe *p)
{
	close_attempt(p);
	ev_timer_set(&p->timer, READYPROBE_RETRY_MS / 1000.0, 0.);
	ev_timer_start(p->loop, &p->timer);
}

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct readyprobe *p = w->data;
	if (p->state == P_IDLE)
		attempt(p);
	else
		retry_later(p);  /* the attempt timed out */
}

/* "HTTP/1.0 200" or "HTTP/1.1 200": 12 bytes decide. */
static bool status_ok(const char *s)
{
	return memcmp(s, "HTTP/1.", 7) == 0 && (s[7] == '0' || s[7] == '1') && memcmp(s + 8, " 200", 4) == 0;
}

static void on_io(struct ev_loop *loop, ev_io *w, int revents)
{
	struct readyprobe *p = w->data;
	if (p->state == P_CONNECTING) {
		int err = 0;
		socklen_t len = sizeof(err);
		if (getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0) {
			retry_later(p);
			return;
		}
		/* The request is far smaller than any socket buffer. */
		ssize_t n = send(p->fd, REQUEST, sizeof(REQUEST) - 1, MSG_NOSIGNAL);
		if (n != (ssize_t)(sizeof(REQUEST) - 1)) {
			retry_later(p);
			return;
		}
		p->state = P_READING;
		ev_io_stop(loop, &p->io);
		ev_io_set(&p->io, p->fd, EV_READ);
		ev_io_start(loop, &p->io);
		return;
	}
	ssize_t n = recv(p->fd, p->got + p->ngot, 12 - p->ngot, 0);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		retry_later(p);
		return;
	}
	p->ngot += (size_t)n;
	if (p->ngot < 12)
		return;
	if (!status_ok(p->got)) {
		retry_later(p);
		return;
	}
	close_attempt(p);
	p->done(p->arg);  /* may free p */
}

static void attempt(struct readyprobe *p)
{
	p->attempts++;
	p->fd = socket(p->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (p->fd < 0) {
		retry_later(p);
		return;
	}
	if (connect(p->fd, (struct sockaddr *)&p->addr, p->addrlen) < 0 && errno != EINPROGRESS &&
	    errno != EAGAIN) {
		retry_later(p);
		return;
	}
	p->state = P_CONNECTING;
	ev_io_set(&p->io, p->fd, EV_WRITE);
	ev_io_start(p->loop, &p->io);
	ev_timer_set(&p->timer, READYPROBE_ATTEMPT_MS / 1000.0, 0.);
	ev_timer_start(p->loop, &p->timer);
}

/* Where to connect to reach `listen_fd`: its own address, with a wildcard
 * replaced by loopback. */
static int probe_address(int listen_fd, struct sockaddr_storage *ss, socklen_t *ret_len)
{
	socklen_t len = sizeof(*ss);
	if (getsockname(listen_fd, (struct sockaddr *)ss, &len) < 0)
		return -errno;
	if (ss->ss_family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;
		if (sin->sin_addr.s_addr == htonl(INADDR_ANY))
			sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	} else if (ss->ss_family == AF_INET6) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
		if (IN6_IS_ADDR_UNSPECIFIED(&sin6->sin6_addr))
			sin6->sin6_addr = in6addr_loopback;
	} else if (ss->ss_family != AF_UNIX) {
		return -EAFNOSUPPORT;
	}
	*ret_len = len;
	return 0;
}

struct readyprobe *readyprobe_new(struct ev_loop *loop, int listen_fd, readyprobe_fn done, void *arg)
{
	struct readyprobe *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	int r = probe_address(listen_fd, &p->addr, &p->addrlen);
	if (r < 0) {
		free(p);
		errno = -r;
		return NULL;
	}
	p->loop = loop;
	p->done = done;
	p->arg = arg;
	p->fd = -1;
	ev_io_init(&p->io, on_io, -1, EV_WRITE);
	p->io.data = p;
	ev_timer_init(&p->timer, on_timer, 0., 0.);
	p->timer.data = p;
	/* First attempt from the loop, after the frontend had its fork. */
	ev_timer_start(loop, &p->timer);
	return p;
}

void readyprobe_free(struct readyprobe *p)
{
	if (!p)
		return;
	close_attempt(p);
	free(p);
}

unsigned readyprobe_attempts(const struct readyprobe *p)
{
	return p->attempts;
}
