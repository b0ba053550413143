/*
 * benchresume - many idle /events streams, then a frontend kill -9 and
 * how fast every stream resumes (scripts/bench).
 *
 *   benchresume --port P --since EPOCH:VERSION [--count N] [--inflight K]
 *               [--pause] [--kill PID] [--timeout-ms T] [--retry-ms R]
 *               [--max-tries M]
 *
 * One thread, one epoll, non-blocking sockets to 127.0.0.1:P.
 *
 * 1. Opens N streams `GET /events?since=EPOCH:VERSION` (default 1000),
 *    at most K (default 1000) connecting or waiting for their ready line
 *    at a time, until each has its ready line.
 * 2. With --pause: prints "ready N" on stdout (flushed) and waits for one
 *    line on stdin: "go" goes on, anything else (or EOF) ends the run
 *    after the open figures.  The streams are not read meanwhile, so the
 *    server sees them idle (what a memory figure wants).
 * 3. With --kill PID: sends SIGKILL to PID (the frontend) and starts the
 *    clock.  Without it but with --pause, the clock starts at "go" and
 *    something else ends the streams.  Each stream that ends (EOF, reset)
 *    reconnects at once with ?since=EPOCH:<last version it saw> (the
 *    version of its ready line or of its last event), like a resuming
 *    client; connection failures (refused, reset, a non-200 answer) retry
 *    after R ms (default 10), at most M tries (default 50) per stream.
 *    The run ends when every stream has its new ready line, or at T ms
 *    (default 60000) after the start of each phase.
 *
 * Prints one JSON object on stdout (the last line); times in ms from the
 * kill (or "go"):
 *   count, inflight, open_ok, open_ready, open_ms, open_failures,
 *   open_not_resumed (ready lines with "resumed":false), open_cpu_ms,
 *   ended (streams that ended), eof_first_ms, eof_last_ms,
 *   exit_ms (the killed process became a zombie, from a pidfd: by then
 *   the kernel has closed all its sockets; null without --kill),
 *   resumed, not_resumed (ready lines with "resumed":false), failures
 *   (failed attempts, retried), failures_refused, failures_reset,
 *   gave_up, resume_first_ms, resume_p50_ms, resume_p99_ms,
 *   resume_last_ms, resume_cpu_ms (this program's user+system CPU from
 *   the kill to the end), ok (every stream resumed, none gave up).
 * Exit status 0 when every stream got its ready line(s), 1 otherwise,
 * 2 on a usage or set-up error.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "timeutil.h"

#define MAX_COUNT 100000
#define HDR_MAX 1024          /* response head: h2o's is ~150 bytes */
#define TAIL_MAX 256          /* last bytes of a line: version/resumed are at its end */
#define PATH_MAX_LEN 160
#define EPOCH_MAX 64
#define READ_BUF (64 * 1024)
#define MAX_EVENTS 64          /* short batches: timestamps stay close to the events */
#define PIDFD_ID UINT32_MAX    /* epoll data of the pidfd */

enum state { S_IDLE, S_QUEUED, S_CONNECTING, S_WAITING, S_READY, S_GAVE_UP };
enum body { B_RAW, B_CHUNK_SIZE, B_CHUNK_EXT, B_CHUNK_SIZE_LF, B_CHUNK_DATA, B_CHUNK_CR, B_CHUNK_LF, B_END };

struct conn {
	int fd;
	enum state state;
	enum body body;
	bool have_version;
	bool head_done;
	unsigned tries;
	uint64_t version;
	uint64_t chunk_left;
	uint64_t ready_ns;     /* last ready line */
	uint64_t due_ns;       /* retry queue */
	char *head;            /* response head being collected (HDR_MAX) */
	size_t head_len;
	size_t tail_len;
	char tail[TAIL_MAX];
};

struct fifo {
	unsigned *v;
	size_t head, len, cap;
};

struct ctx {
	unsigned port;
	unsigned count;
	unsigned inflight;
	unsigned busy;          /* CONNECTING + WAITING */
	unsigned max_tries;
	unsigned retry_ms;
	long timeout_ms;
	char epoch[EPOCH_MAX];
	uint64_t since_version;
	int ep;
	struct conn *conns;
	struct fifo now_q;      /* start as soon as a slot is free */
	struct fifo retry_q;    /* start at due_ns (a constant delay keeps it sorted) */
	unsigned nready;        /* streams READY */
	bool resume_phase;
	unsigned done;          /* resume phase: streams with their new ready line */
	/* figures */
	uint64_t t0;
	unsigned failures, refused, reset, not_resumed, resumed, ended, gave_up;
	unsigned open_not_resumed;
	uint64_t eof_first, eof_last;
	uint64_t *resume_ns;    /* per resumed stream, from t0 */
	int pidfd;              /* of the killed process, in the epoll set; -1 */
	uint64_t exit_ns;       /* it exited (from t0); 0: not seen */
	char buf[READ_BUF];
};

static int fifo_init(struct fifo *f, size_t cap)
{
	f->v = calloc(cap, sizeof(*f->v));
	f->head = f->len = 0;
	f->cap = cap;
	return f->v ? 0 : -ENOMEM;
}

static void fifo_push(struct fifo *f, unsigned id)
{
	/* Each stream is in at most one queue once: never full. */
	f->v[(f->head + f->len++) % f->cap] = id;
}

static unsigned fifo_pop(struct fifo *f)
{
	unsigned id = f->v[f->head];
	f->head = (f->head + 1) % f->cap;
	f->len--;
	return id;
}

static uint64_t cpu_ns(void)
{
	struct rusage ru;
	if (getrusage(RUSAGE_SELF, &ru) < 0)
		return 0;
	return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000ULL +
	       (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000ULL;
}

static double ms(uint64_t ns)
{
	return ns / 1e6;
}

static void conn_close(struct ctx *c, struct conn *k)
{
	if (k->fd >= 0) {
		close(k->fd);   /* also leaves the epoll set */
		k->fd = -1;
	}
	if (k->state == S_CONNECTING || k->state == S_WAITING)
		c->busy--;
	if (k->state == S_READY)
		c->nready--;
	free(k->head);
	k->head = NULL;
	k->state = S_IDLE;
}

static void start(struct ctx *c, unsigned id);

/* A failed attempt: retry after retry_ms, or give up. */
static void retry(struct ctx *c, unsigned id, int err)
{
	struct conn *k = &c->conns[id];
	conn_close(c, k);
	c->failures++;
	if (err == ECONNREFUSED)
		c->refused++;
	else if (err == ECONNRESET || err == EPIPE)
		c->reset++;
	if (k->tries >= c->max_tries) {
		k->state = S_GAVE_UP;
		c->gave_up++;
		return;
	}
	k->state = S_QUEUED;
	k->due_ns = tu_mono_ns() + (uint64_t)c->retry_ms * 1000000ULL;
	fifo_push(&c->retry_q, id);
}

static void start(struct ctx *c, unsigned id)
{
	struct conn *k = &c->conns[id];
	k->tries++;
	k->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (k->fd < 0) {
		fprintf(stderr, "benchresume: socket: %s\n", strerror(errno));
		k->state = S_IDLE;
		retry(c, id, errno);
		return;
	}
	k->state = S_CONNECTING;
	c->busy++;
	k->head = malloc(HDR_MAX);
	if (!k->head) {
		retry(c, id, ENOMEM);
		return;
	}
	k->head_len = 0;
	k->head_done = false;
	k->tail_len = 0;
	k->body = B_RAW;
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)c->port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	if (connect(k->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EINPROGRESS) {
		retry(c, id, errno);
		return;
	}
	struct epoll_event ev = { .events = EPOLLOUT, .data.u32 = id };
	if (epoll_ctl(c->ep, EPOLL_CTL_ADD, k->fd, &ev) < 0)
		retry(c, id, errno);
}

static void send_request(struct ctx *c, unsigned id)
{
	struct conn *k = &c->conns[id];
	int err = 0;
	socklen_t len = sizeof(err);
	if (getsockopt(k->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err) {
		retry(c, id, err);
		return;
	}
	char req[PATH_MAX_LEN + 128];
	uint64_t v = k->have_version ? k->version : c->since_version;
	int n = snprintf(req, sizeof(req),
			 "GET /events?since=%s:%" PRIu64 " HTTP/1.1\r\nHost: 127.0.0.1\r\n"
			 "User-Agent: benchresume\r\n\r\n", c->epoch, v);
	ssize_t w = send(k->fd, req, (size_t)n, MSG_NOSIGNAL);
	if (w != n) {
		retry(c, id, w < 0 ? errno : EIO);
		return;
	}
	k->state = S_WAITING;
	struct epoll_event ev = { .events = EPOLLIN, .data.u32 = id };
	if (epoll_ctl(c->ep, EPOLL_CTL_MOD, k->fd, &ev) < 0)
		retry(c, id, errno);
}

/* The last occurrence of `key` in the tail, or NULL. */
static const char *last_key(const char *s, size_t n, const char *key)
{
	size_t kl = strlen(key);
	for (size_t i = n >= kl ? n - kl + 1 : 0; i-- > 0;)
		if (!memcmp(s + i, key, kl))
			return s + i + kl;
	return NULL;
}

/* A complete line (its last TAIL_MAX bytes in k->tail). */
static void on_line(struct ctx *c, unsigned id)
{
	struct conn *k = &c->conns[id];
	const char *p = last_key(k->tail, k->tail_len, "\"version\":");
	if (p) {
		char *end;
		errno = 0;
		unsigned long long v = strtoull(p, &end, 10);
		if (!errno && end != p) {
			k->version = v;
			k->have_version = true;
		}
	}
	if (k->state != S_WAITING)
		return;
	/* The ready line. */
	const char *e = last_key(k->tail, k->tail_len, "\"epoch\":\"");
	if (e) {
		const char *q = memchr(e, '"', (size_t)(k->tail + k->tail_len - e));
		/* A new epoch (not resumed): later reconnects use it. */
		if (q && q - e < EPOCH_MAX) {
			memcpy(c->epoch, e, (size_t)(q - e));
			c->epoch[q - e] = '\0';
		}
	}
	bool resumed = last_key(k->tail, k->tail_len, "\"resumed\":true") != NULL;
	free(k->head);
	k->head = NULL;
	k->state = S_READY;
	c->busy--;
	c->nready++;
	uint64_t now = tu_mono_ns();
	k->ready_ns = now;
	if (!c->resume_phase) {
		if (!resumed)
			c->open_not_resumed++;
		return;
	}
	c->done++;
	if (resumed)
		c->resume_ns[c->resumed++] = now - c->t0;
	else
		c->not_resumed++;
}

/* Decoded body bytes: split into lines, keeping each line's tail. */
static void on_body(struct ctx *c, unsigned id, const char *p, size_t n)
{
	struct conn *k = &c->conns[id];
	while (n > 0) {
		const char *nl = memchr(p, '\n', n);
		size_t take = nl ? (size_t)(nl - p) : n;
		if (take >= TAIL_MAX) {
			memcpy(k->tail, p + take - TAIL_MAX, TAIL_MAX);
			k->tail_len = TAIL_MAX;
		} else {
			if (k->tail_len + take > TAIL_MAX) {
				size_t drop = k->tail_len + take - TAIL_MAX;
				memmove(k->tail, k->tail + drop, k->tail_len - drop);
				k->tail_len -= drop;
			}
			memcpy(k->tail + k->tail_len, p, take);
			k->tail_len += take;
		}
		if (!nl)
			return;
		on_line(c, id);
		k->tail_len = 0;
		p = nl + 1;
		n -= take + 1;
	}
}

static int hexval(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/* Raw bytes after the response head: undo chunked transfer coding.
 * Returns false on a malformed chunk. */
static bool on_data(struct ctx *c, unsigned id, const char *p, size_t n)
{
	struct conn *k = &c->conns[id];
	while (n > 0) {
		switch (k->body) {
		case B_RAW:
			on_body(c, id, p, n);
			return true;
		case B_END:
			return true;
		case B_CHUNK_SIZE: {
			int h = hexval(*p);
			if (h >= 0) {
				if (k->chunk_left >> 56)
					return false;
				k->chunk_left = k->chunk_left * 16 + (unsigned)h;
			} else if (*p == '\r') {
				k->body = B_CHUNK_SIZE_LF;
			} else if (*p == ';' || *p == ' ') {
				k->body = B_CHUNK_EXT;
			} else {
				return false;
			}
			p++, n--;
			break;
		}
		case B_CHUNK_EXT:
			if (*p == '\r')
				k->body = B_CHUNK_SIZE_LF;
			p++, n--;
			break;
		case B_CHUNK_SIZE_LF:
			if (*p != '\n')
				return false;
			k->body = k->chunk_left ? B_CHUNK_DATA : B_END;
			p++, n--;
			break;
		case B_CHUNK_DATA: {
			size_t take = n < k->chunk_left ? n : (size_t)k->chunk_left;
			on_body(c, id, p, take);
			if (k->state != S_WAITING && k->state != S_READY)
				return true;
			k->chunk_left -= take;
			p += take, n -= take;
			if (!k->chunk_left)
				k->body = B_CHUNK_CR;
			break;
		}
		case B_CHUNK_CR:
			if (*p != '\r')
				return false;
			k->body = B_CHUNK_LF;
			p++, n--;
			break;
		case B_CHUNK_LF:
			if (*p != '\n')
				return false;
			k->body = B_CHUNK_SIZE;
			k->chunk_left = 0;
			p++, n--;
			break;
		}
	}
	return true;
}

/* Collect the response head; returns the bytes of `p` it used, or -1 on
 * a bad or non-200 answer. */
static ssize_t on_head(struct ctx *c, unsigned id, const char *p, size_t n)
{
	struct conn *k = &c->conns[id];
	size_t room = HDR_MAX - 1 - k->head_len;
	size_t take = n < room ? n : room;
	memcpy(k->head + k->head_len, p, take);
	size_t old = k->head_len;
	k->head_len += take;
	k->head[k->head_len] = '\0';
	char *end = strstr(k->head, "\r\n\r\n");
	if (!end)
		return k->head_len == HDR_MAX - 1 ? -1 : (ssize_t)take;
	size_t used = (size_t)(end + 4 - k->head) - old;
	if (strncmp(k->head, "HTTP/1.1 200 ", 13) && strncmp(k->head, "HTTP/1.0 200 ", 13))
		return -1;
	*end = '\0';
	k->head_done = true;
	k->body = strcasestr(k->head, "\r\ntransfer-encoding: chunked") ? B_CHUNK_SIZE : B_RAW;
	k->chunk_left = 0;
	return (ssize_t)used;
}

/* The stream ended (EOF, reset): reconnect at once in the resume phase. */
static void on_end(struct ctx *c, unsigned id, int err)
{
	struct conn *k = &c->conns[id];
	if (k->state != S_READY) {
		retry(c, id, err);
		return;
	}
	conn_close(c, k);
	if (!c->resume_phase) {
		/* Not expected before the trigger: count it, reconnect. */
		c->failures++;
	} else {
		uint64_t now = tu_mono_ns() - c->t0;
		if (!c->ended++)
			c->eof_first = now;
		c->eof_last = now;
	}
	k->tries = 0;
	k->state = S_QUEUED;
	fifo_push(&c->now_q, id);
}

static void on_readable(struct ctx *c, unsigned id)
{
	struct conn *k = &c->conns[id];
	for (int round = 0; round < 4; round++) {
		ssize_t n = recv(k->fd, c->buf, sizeof(c->buf), 0);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n <= 0) {
			on_end(c, id, n < 0 ? errno : ECONNRESET);
			return;
		}
		const char *p = c->buf;
		size_t len = (size_t)n;
		if (!k->head_done) {
			ssize_t used = on_head(c, id, p, len);
			if (used < 0) {
				retry(c, id, EPROTO);
				return;
			}
			p += used;
			len -= (size_t)used;
		}
		if (k->head_done && !on_data(c, id, p, len)) {
			retry(c, id, EPROTO);
			return;
		}
		if ((size_t)n < sizeof(c->buf))
			return;
	}
}

/* Start what the queues allow. */
static void pump(struct ctx *c)
{
	while (c->now_q.len && c->busy < c->inflight)
		start(c, fifo_pop(&c->now_q));
	uint64_t now = tu_mono_ns();
	while (c->retry_q.len && c->busy < c->inflight &&
	       c->conns[c->retry_q.v[c->retry_q.head]].due_ns <= now)
		start(c, fifo_pop(&c->retry_q));
}

/* Has the killed process exited?  Looked at every loop turn, not only
 * when epoll lists the pidfd among thousands of ready streams. */
static void check_exit(struct ctx *c)
{
	if (c->pidfd < 0 || c->exit_ns)
		return;
	struct pollfd pfd = { .fd = c->pidfd, .events = POLLIN };
	if (poll(&pfd, 1, 0) == 1)
		c->exit_ns = tu_mono_ns() - c->t0;
}

/* Run the loop until `done` says so or the deadline; false on timeout. */
static bool run(struct ctx *c, bool (*done)(const struct ctx *), uint64_t deadline)
{
	struct epoll_event evs[MAX_EVENTS];
	for (;;) {
		pump(c);
		check_exit(c);
		if (done(c))
			return true;
		uint64_t now = tu_mono_ns();
		if (now >= deadline)
			return false;
		if (!c->now_q.len && !c->retry_q.len && !c->busy && c->gave_up &&
		    c->nready + c->gave_up == c->count)
			return false;   /* nothing left that could still finish */
		uint64_t wait = deadline - now;
		if (c->retry_q.len) {
			uint64_t due = c->conns[c->retry_q.v[c->retry_q.head]].due_ns;
			wait = due > now ? due - now : 0;
		}
		int timeout = (int)((wait + 999999) / 1000000);
		if (timeout > 100)
			timeout = 100;
		int n = epoll_wait(c->ep, evs, MAX_EVENTS, timeout);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "benchresume: epoll_wait: %s\n", strerror(errno));
			return false;
		}
		for (int i = 0; i < n; i++) {
			unsigned id = evs[i].data.u32;
			if (id == PIDFD_ID) {
				check_exit(c);
				(void)epoll_ctl(c->ep, EPOLL_CTL_DEL, c->pidfd, NULL);
				continue;
			}
			struct conn *k = &c->conns[id];
			if (k->fd < 0)
				continue;   /* closed earlier in this batch */
			if (k->state == S_CONNECTING)
				send_request(c, id);
			else
				on_readable(c, id);
		}
	}
}

static bool all_ready(const struct ctx *c)
{
	return c->nready == c->count;
}

static bool all_resumed(const struct ctx *c)
{
	return c->done + c->gave_up >= c->count;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static bool parse_ulong(const char *s, unsigned long min, unsigned long max, unsigned long *ret)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max || *s == '-')
		return false;
	*ret = v;
	return true;
}

static void usage(void)
{
	fprintf(stderr, "usage: benchresume --port P --since EPOCH:VERSION [--count N] [--inflight K]\n"
			"                   [--pause] [--kill PID] [--timeout-ms T] [--retry-ms R]\n"
			"                   [--max-tries M]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	static struct ctx c;   /* large (the read buffer): not on the stack */
	unsigned long v, kill_pid = 0;
	bool pause_go = false;
	const char *since = NULL;

	c.count = 1000;
	c.inflight = 1000;
	c.max_tries = 50;
	c.retry_ms = 10;
	c.timeout_ms = 60000;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *val = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--pause")) {
			pause_go = true;
			continue;
		}
		if (!val)
			usage();
		i++;
		if (!strcmp(a, "--port") && parse_ulong(val, 1, 65535, &v))
			c.port = (unsigned)v;
		else if (!strcmp(a, "--since"))
			since = val;
		else if (!strcmp(a, "--count") && parse_ulong(val, 1, MAX_COUNT, &v))
			c.count = (unsigned)v;
		else if (!strcmp(a, "--inflight") && parse_ulong(val, 1, MAX_COUNT, &v))
			c.inflight = (unsigned)v;
		else if (!strcmp(a, "--kill") && parse_ulong(val, 2, 1UL << 22, &v))
			kill_pid = v;
		else if (!strcmp(a, "--timeout-ms") && parse_ulong(val, 1, 3600000, &v))
			c.timeout_ms = (long)v;
		else if (!strcmp(a, "--retry-ms") && parse_ulong(val, 0, 10000, &v))
			c.retry_ms = (unsigned)v;
		else if (!strcmp(a, "--max-tries") && parse_ulong(val, 1, 10000, &v))
			c.max_tries = (unsigned)v;
		else
			usage();
	}
	const char *colon = since ? strrchr(since, ':') : NULL;
	if (!c.port || !colon || colon == since || (size_t)(colon - since) >= EPOCH_MAX ||
	    !parse_ulong(colon + 1, 0, ULONG_MAX - 1, &v))
		usage();
	memcpy(c.epoch, since, (size_t)(colon - since));
	c.since_version = v;

	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur < (rlim_t)c.count + 32) {
		fprintf(stderr, "benchresume: RLIMIT_NOFILE too low for %u streams\n", c.count);
		return 2;
	}
	c.pidfd = -1;
	c.conns = calloc(c.count, sizeof(*c.conns));
	c.resume_ns = calloc(c.count, sizeof(*c.resume_ns));
	c.ep = epoll_create1(EPOLL_CLOEXEC);
	if (!c.conns || !c.resume_ns || c.ep < 0 || fifo_init(&c.now_q, c.count) < 0 ||
	    fifo_init(&c.retry_q, c.count) < 0) {
		fprintf(stderr, "benchresume: set-up failed: %s\n", strerror(errno));
		return 2;
	}
	for (unsigned i = 0; i < c.count; i++) {
		c.conns[i].fd = -1;
		c.conns[i].state = S_QUEUED;
		fifo_push(&c.now_q, i);
	}

	/* Phase 1: open. */
	uint64_t cpu0 = cpu_ns(), t_open = tu_mono_ns();
	bool ok = run(&c, all_ready, t_open + (uint64_t)c.timeout_ms * 1000000ULL);
	uint64_t open_ns = tu_mono_ns() - t_open, open_cpu = cpu_ns() - cpu0;
	unsigned open_failures = c.failures;
	bool go = ok && (kill_pid || pause_go);
	if (ok && pause_go) {
		printf("ready %u\n", c.count);
		fflush(stdout);
		char line[64];
		go = fgets(line, sizeof(line), stdin) && !strncmp(line, "go", 2);
	}

	/* Phase 2: trigger, then every stream resumes. */
	uint64_t cpu1 = 0;
	bool resumed_ok = false;
	if (go) {
		c.failures = c.refused = c.reset = 0;
		c.resume_phase = true;
		cpu1 = cpu_ns();
		if (kill_pid) {
			/* Readable once the process has exited, i.e. after the
			 * kernel closed its files: how long its sockets took. */
			c.pidfd = (int)syscall(SYS_pidfd_open, (pid_t)kill_pid, 0);
			struct epoll_event ev = { .events = EPOLLIN, .data.u32 = PIDFD_ID };
			if (c.pidfd >= 0 && epoll_ctl(c.ep, EPOLL_CTL_ADD, c.pidfd, &ev) < 0) {
				close(c.pidfd);
				c.pidfd = -1;
			}
		}
		c.t0 = tu_mono_ns();
		if (kill_pid && kill((pid_t)kill_pid, SIGKILL) < 0) {
			fprintf(stderr, "benchresume: kill %lu: %s\n", kill_pid, strerror(errno));
			return 2;
		}
		resumed_ok = run(&c, all_resumed, c.t0 + (uint64_t)c.timeout_ms * 1000000ULL) && !c.gave_up;
		cpu1 = cpu_ns() - cpu1;
		if (c.pidfd >= 0)
			close(c.pidfd);
	}

	printf("{\"count\":%u,\"inflight\":%u,\"open_ok\":%s,\"open_ready\":%u,\"open_ms\":%.1f,"
	       "\"open_failures\":%u,\"open_not_resumed\":%u,\"open_cpu_ms\":%.1f",
	       c.count, c.inflight, ok ? "true" : "false", ok ? c.count : c.nready, ms(open_ns),
	       open_failures, c.open_not_resumed, ms(open_cpu));
	if (go) {
		qsort(c.resume_ns, c.resumed, sizeof(*c.resume_ns), cmp_u64);
		printf(",\"kill_pid\":%lu,\"ended\":%u,\"eof_first_ms\":%.1f,\"eof_last_ms\":%.1f,",
		       kill_pid, c.ended, ms(c.eof_first), ms(c.eof_last));
		if (c.exit_ns)
			printf("\"exit_ms\":%.1f,", ms(c.exit_ns));
		else
			printf("\"exit_ms\":null,");
		printf("\"resumed\":%u,\"not_resumed\":%u,\"failures\":%u,\"failures_refused\":%u,"
		       "\"failures_reset\":%u,\"gave_up\":%u,",
		       c.resumed, c.not_resumed, c.failures, c.refused, c.reset, c.gave_up);
		if (c.resumed)
			printf("\"resume_first_ms\":%.1f,\"resume_p50_ms\":%.1f,\"resume_p99_ms\":%.1f,"
			       "\"resume_last_ms\":%.1f,",
			       ms(c.resume_ns[0]), ms(c.resume_ns[c.resumed / 2]),
			       ms(c.resume_ns[(c.resumed * 99) / 100 < c.resumed ? (c.resumed * 99) / 100 : c.resumed - 1]),
			       ms(c.resume_ns[c.resumed - 1]));
		else
			printf("\"resume_first_ms\":null,\"resume_p50_ms\":null,\"resume_p99_ms\":null,"
			       "\"resume_last_ms\":null,");
		printf("\"resume_cpu_ms\":%.1f,\"ok\":%s", ms(cpu1),
		       resumed_ok && c.resumed == c.count ? "true" : "false");
	}
	printf(",\"cpu_ms\":%.1f}\n", ms(cpu_ns() - cpu0));
	fflush(stdout);
	for (unsigned i = 0; i < c.count; i++)
		if (c.conns[i].fd >= 0)
			close(c.conns[i].fd);
	return ok && (!go || (resumed_ok && c.resumed == c.count)) ? 0 : 1;
}
