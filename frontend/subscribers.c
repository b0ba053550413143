/*
 * subscribers.c - the /events streams.  See subscribers.h.
 *
 * Life of a stream: subscribers_start() makes the subscriber inside the
 * request's memory pool (as a shared entry whose dispose hook runs when
 * h2o frees the request, whatever ended it), sends the ready line and
 * sets the cursor right after the version the ready line describes.
 * From then on pump() runs whenever the stream is idle and there may be
 * something to send: after each completed send (proceed) and when new
 * events arrive (notify, which goes round the streams a slice per turn
 * of the loop: rotate()).  One send is in flight per stream, so a stream
 * that is behind sends a batch of pending lines at once.  HTTP/1.1
 * streams write their chunks to the socket themselves once the ready
 * line is out (see "Direct writes" below); h2o still sends the head,
 * the ready line and the ending.
 *
 * Memory per stream is fixed (the struct below, plus a fixed block from
 * the request's pool for SSE framing and filters, allocated once at
 * start); event bytes are shared.  The struct is kept small because an
 * idle stream is the common case and there may be tens of thousands:
 * iovec arrays live on the stack (h2o copies them before h2o_send
 * returns; only the bytes must stay alive), and the per-stream text of
 * the ready and lagged lines is allocated for that one send and freed
 * when it completes.
 *
 * A stream that stops reading keeps its one send in flight until the
 * socket drains; when the ring overwrites its cursor meanwhile, the
 * socket could not take even that send, so the stream is shut down at
 * once without the lagged line (an idle stream whose cursor was
 * overwritten gets the line, since its socket can take it).  Nothing is
 * queued per stream beyond that one send.
 *
 * Server-Sent Events (Accept: text/event-stream) frame the very same
 * shared line bytes: "id: <epoch>:<version>\ndata: " + line + "\n".
 * Filters skip events by the type and zonename the ringreader keeps
 * beside each line; skipped events still advance the cursor.
 */
#include "subscribers.h"
#include "reqpath.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <uuid/uuid.h>

#include "buf.h"
#include "frontend.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "rcbuf.h"
#include "ringreader.h"
#include "timeutil.h"
#include "vmset.h"

/* Lines per send and bytes per send when a stream is behind: big enough
 * to amortise the syscalls, small enough to keep the iovec array (and so
 * every subscriber) small and to let other streams have their turn. */
#define SUB_BATCH 16
#define SUB_BATCH_BYTES (256 * 1024)
/* iovecs of one send: SSE frames each line with an id and a newline. */
#define SUB_IOV (3 * SUB_BATCH + 2)
/* Batches one stream may write directly in one turn before it lets the
 * others have theirs (it then comes back when its socket is writable). */
#define SUB_RAW_ROUNDS 64
/* Streams served per turn of the loop by a fan-out (see rotate()). */
#define SUB_SLICE 1024
/* Most ?zonename= values one stream may ask for. */
#define SUB_MAX_ZONES 64
#define SUB_ZONE_MAX 64
/* "id: <epoch>:<version>\ndata: " */
#define SSE_ID_MAX (4 + RING_EPOCH_LEN + 1 + 20 + 7 + 1)

/* ?type= filter bits, by enum ring_ev_type. */
#define TYPE_BIT(t) (1u << (t))

enum sub_end {
	SUB_END_NONE,
	SUB_END_LAGGED,     /* send the error line, then end */
	SUB_END_SHUTDOWN,   /* send the final chunk */
	SUB_END_GONE,       /* the client hung up: end so that h2o closes */
};

struct subscriber {
	h2o_generator_t gen;          /* first: h2o hands it back to proceed/stop */
	struct subscribers *owner;
	h2o_req_t *req;
	struct subscriber *prev, *next;
	uint64_t cursor;              /* next event version to send */
	uint64_t created_ns;
	char uuid[37];
	char date[32];
	h2o_iovec_t user_agent;       /* base NULL: no header */
	int hup_fd;                   /* socket watched for the client hanging up, or -1 */
	bool in_flight;               /* an h2o_send awaits its proceed */
	bool finished;                /* the final send was made, or the client left */
	enum sub_end end;
	char *why;                    /* message of the lagged line (malloc), or NULL */
	char *text;                   /* this stream's bytes of the send in flight (malloc), or NULL */
	bool sse;                     /* Server-Sent Events framing */
	unsigned types;               /* TYPE_BIT mask of wanted types; 0: all */
	size_t nzones;                /* zonename filter; 0: all */
	h2o_iovec_t *zones;           /* in the request's pool */
	char (*sse_id)[SSE_ID_MAX];   /* SUB_BATCH id prefixes, in the pool (SSE only) */
	size_t nheld;
	struct rcbuf *held[SUB_BATCH];   /* references of the send in flight */
	/* Direct writes (see "Direct writes" below): */
	bool raw_checked;             /* raw_ok was decided */
	bool raw_ok;                  /* event chunks may be written to hup_fd directly */
	bool raw_pending;             /* a direct write is partly done; waits for EPOLLOUT */
	size_t raw_off;               /* bytes of the held batch already written */
	char chunk_hdr[20];           /* "<hex length>\r\n" of the held batch */
	unsigned char chunk_hdr_len;
};

static const char SSE_DATA[] = "data: ";
static const char SSE_END[] = "\n";

/*
 * h2o stops reading an HTTP/1 connection while its response is being
 * generated, so a client that hangs up is only noticed at the next write,
 * which may be hours away: /status would list it meanwhile.  A private
 * epoll set watches every stream's socket for EPOLLRDHUP (a second epoll
 * instance may watch fds of h2o's own); the set's fd is itself pollable
 * and sits in h2o's loop.
 */
struct subscribers {
	struct frontend *fe;
	struct subscriber *head, *tail;
	size_t count;
	int hup_epoll_fd;
	h2o_socket_t *hup_sock;
	bool shrink_in_place;   /* realloc() shrinks without moving: see shrink_input() */
	/* The fan-out in progress (rotate()): */
	struct subscriber *rot;   /* next stream to serve, NULL: at the end of the list */
	bool rot_active;
	bool rot_again;           /* new events came during it: go round once more */
	int kick_fd;              /* eventfd: continue at the next turn of the loop */
	h2o_socket_t *kick_sock;
	/* Random bytes for listener ids, drawn 4 KiB at a time. */
	unsigned char rnd[4096];
	size_t rnd_left;
};

static void pump(struct subscriber *sub);
static bool probe_shrink_in_place(void);

static void raw_writable(struct subscriber *sub);
static void raw_abandon(struct subscriber *sub);

static void on_hup_ready(h2o_socket_t *sock, const char *err)
{
	struct subscribers *s = sock->data;
	struct epoll_event evs[64];
	int n = epoll_wait(s->hup_epoll_fd, evs, 64, 0);
	for (int i = 0; i < n; i++) {
		struct subscriber *sub = evs[i].data.ptr;
		if (evs[i].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
			if (sub->end == SUB_END_NONE && !sub->finished) {
				sub->end = SUB_END_GONE;
				raw_abandon(sub);
				pump(sub);
			}
		} else if (evs[i].events & EPOLLOUT) {
			raw_writable(sub);
		}
	}
}

static void rotate(struct subscribers *s);

/* A random (version 4) UUID naming a listener.  libuuid asks the kernel
 * for 16 bytes per id (and more: getpid, getuid), which showed in the
 * profile of 10,000 streams reconnecting at once; this draws them from a
 * pool. */
static void new_listener_id(struct subscribers *s, char out[37])
{
	uuid_t u;
	if (s->rnd_left < sizeof(u)) {
		ssize_t n = getrandom(s->rnd, sizeof(s->rnd), 0);
		s->rnd_left = n > 0 ? (size_t)n : 0;
	}
	if (s->rnd_left < sizeof(u)) {
		uuid_generate_random(u);   /* no entropy to be had: let libuuid decide */
	} else {
		s->rnd_left -= sizeof(u);
		memcpy(u, s->rnd + s->rnd_left, sizeof(u));
		memset(s->rnd + s->rnd_left, 0, sizeof(u));
		u[6] = (unsigned char)((u[6] & 0x0f) | 0x40);   /* version 4 */
		u[8] = (unsigned char)((u[8] & 0x3f) | 0x80);   /* RFC 4122 variant */
	}
	uuid_unparse_lower(u, out);
}

static void on_kick(h2o_socket_t *sock, const char *err)
{
	struct subscribers *s = sock->data;
	eventfd_t v;
	(void)eventfd_read(s->kick_fd, &v);   /* EAGAIN: already drained */
	if (s->rot_active)
		rotate(s);
}

struct subscribers *subscribers_new(struct frontend *fe)
{
	struct subscribers *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->fe = fe;
	s->kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->kick_fd < 0) {
		free(s);
		return NULL;
	}
	s->kick_sock = h2o_evloop_socket_create(fe->loop, s->kick_fd, H2O_SOCKET_FLAG_DONT_READ);
	if (!s->kick_sock) {
		close(s->kick_fd);
		free(s);
		return NULL;
	}
	s->kick_sock->data = s;
	h2o_socket_read_start(s->kick_sock, on_kick);
	s->shrink_in_place = probe_shrink_in_place();
	s->hup_epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (s->hup_epoll_fd < 0) {
		h2o_socket_read_stop(s->kick_sock);
		h2o_socket_close(s->kick_sock);   /* closes kick_fd */
		free(s);
		return NULL;
	}
	s->hup_sock = h2o_evloop_socket_create(fe->loop, s->hup_epoll_fd, H2O_SOCKET_FLAG_DONT_READ);
	if (!s->hup_sock) {
		close(s->hup_epoll_fd);
		h2o_socket_read_stop(s->kick_sock);
		h2o_socket_close(s->kick_sock);
		free(s);
		return NULL;
	}
	s->hup_sock->data = s;
	h2o_socket_read_start(s->hup_sock, on_hup_ready);
	return s;
}

void subscribers_free(struct subscribers *s)
{
	/* Streams still linked are being disposed by h2o with their
	 * requests; detach them so their dispose hooks do not touch s. */
	if (!s)
		return;
	for (struct subscriber *sub = s->head; sub; sub = sub->next)
		sub->owner = NULL;
	h2o_socket_read_stop(s->hup_sock);
	h2o_socket_close(s->hup_sock);   /* closes hup_epoll_fd */
	h2o_socket_read_stop(s->kick_sock);
	h2o_socket_close(s->kick_sock);   /* closes kick_fd */
	free(s);
}

/* Watch the stream's socket for the client hanging up (HTTP/1 only: an
 * HTTP/2 socket carries other streams). */
static void watch_hup(struct subscribers *s, struct subscriber *sub)
{
	sub->hup_fd = -1;
	if (sub->req->version >= 0x200 || !sub->req->conn->callbacks->get_socket)
		return;
	h2o_socket_t *sock = sub->req->conn->callbacks->get_socket(sub->req->conn);
	int fd = sock ? h2o_socket_get_fd(sock) : -1;
	struct epoll_event ev = { .events = EPOLLRDHUP | EPOLLET, .data.ptr = sub };
	if (fd >= 0 && epoll_ctl(s->hup_epoll_fd, EPOLL_CTL_ADD, fd, &ev) == 0)
		sub->hup_fd = fd;
}

/*
 * h2o keeps an HTTP/1 connection's input buffer (8 KiB at least) until
 * the response ends, because the request's strings (path, headers) point
 * into it, and a stream is a response that does not end: with tens of
 * thousands of idle streams that buffer would be most of their memory.
 * Give its unused tail back to the allocator.  glibc's realloc shrinks a
 * heap chunk in place (it only ever moves a chunk to grow it), so those
 * pointers stay valid; h2o frees a buffer whose capacity is not its
 * prototype's with free(), and grows it again should the connection read
 * another request.  Allocators that move on shrinking (ASan, valgrind, a
 * preloaded malloc) are found by a probe at start-up (shrink_in_place),
 * and the buffer is then left as it is.
 */
static void shrink_input(const struct subscribers *s, h2o_req_t *req)
{
#ifdef __GLIBC__
	if (!s->shrink_in_place || req->version >= 0x200 || !req->conn->callbacks->get_socket)
		return;
	h2o_socket_t *sock = req->conn->callbacks->get_socket(req->conn);
	h2o_buffer_t *b = sock ? sock->input : NULL;
	if (!b || !b->bytes || b->_fd != -1)
		return;
	size_t used = (size_t)(b->bytes - b->_buf) + b->size;
	size_t keep = (used + 64) & ~(size_t)63;
	if (keep + 1024 > b->capacity)
		return;
	uintptr_t was = (uintptr_t)b;
	h2o_buffer_t *nb = realloc(b, offsetof(h2o_buffer_t, _buf) + keep);
	if ((uintptr_t)nb != was)
		abort();   /* cannot happen with glibc (see above); never run on with dangling pointers */
	nb->capacity = keep;
#else
	(void)s;
	(void)req;
#endif
}

/* Does realloc() shrink a buffer the size of h2o's socket input buffer
 * in place? */
static bool probe_shrink_in_place(void)
{
	char *p = malloc(8192 + 64);
	if (!p)
		return false;
	p[0] = 1;
	uintptr_t was = (uintptr_t)p;
	char *q = realloc(p, 128);
	if (!q) {
		free(p);
		return false;
	}
	bool same = (uintptr_t)q == was;
	free(q);
	return same;
}

size_t subscribers_count(const struct subscribers *s)
{
	return s->count;
}

static void release_held(struct subscriber *sub)
{
	for (size_t i = 0; i < sub->nheld; i++)
		rcbuf_unref(sub->held[i]);
	sub->nheld = 0;
	free(sub->text);
	sub->text = NULL;
}

/* Does the stream's filter let this event through? */
static bool wants(const struct subscriber *sub, enum ring_ev_type type, const char *zonename, size_t zlen)
{
	if (sub->types && !(sub->types & TYPE_BIT(type)))
		return false;
	if (!sub->nzones)
		return true;
	for (size_t i = 0; i < sub->nzones; i++)
		if (sub->zones[i].len == zlen && memcmp(sub->zones[i].base, zonename, zlen) == 0)
			return true;
	return false;
}

/* {userAgent, createdDate, createdTime} as the original logs "ret". */
static json_t *listener_ret(const struct subscriber *sub)
{
	char hr[32];
	tu_hrtime_str(sub->created_ns, hr);
	json_t *o = json_object();
	if (!o)
		return NULL;
	if (sub->user_agent.base)
		json_object_set_new(o, "userAgent", json_stringn(sub->user_agent.base, sub->user_agent.len));
	json_object_set_new(o, "createdDate", json_string(sub->date));
	json_object_set_new(o, "createdTime", json_string(hr));
	return o;
}

static void log_listener(const struct subscriber *sub, json_t *child, const char *msg)
{
	if (!log_enabled(LOG_DEBUG))
		return;
	json_t *f = json_pack("{s:s, s:o*}", "uuid", sub->uuid, "ret", listener_ret(sub));
	log_emit(LOG_DEBUG, child, f, "%s", msg);
}

/* Runs when h2o frees the request's pool: the stream is over, however it
 * ended (final send done, client gone, connection closed). */
static void sub_dispose(void *p)
{
	struct subscriber *sub = p;
	release_held(sub);
	free(sub->why);
	sub->why = NULL;
	struct subscribers *s = sub->owner;
	if (!s)
		return;
	/* h2o frees the request before it closes the socket: the fd is
	 * still this stream's. */
	if (sub->hup_fd >= 0)
		(void)epoll_ctl(s->hup_epoll_fd, EPOLL_CTL_DEL, sub->hup_fd, NULL);
	if (s->rot == sub)
		s->rot = sub->next;
	if (sub->prev)
		sub->prev->next = sub->next;
	else
		s->head = sub->next;
	if (sub->next)
		sub->next->prev = sub->prev;
	else
		s->tail = sub->prev;
	s->count--;
	metrics_stream_closed(s->fe->metrics, sub->sse, sub->end == SUB_END_LAGGED);
	log_listener(sub, s->fe->log_child, "/events listener removed");
}

/*
 * Direct writes.  An HTTP/1.1 stream spends its life sending chunks of
 * event lines, and for those h2o's send path (generator, chunked
 * encoder, socket write, then a completion callback one loop iteration
 * later, per stream and per event) is most of the user-space cost of a
 * fan-out.  Once the ready line is out (so the response headers are on
 * the wire and h2o has nothing in flight for the stream), the stream
 * writes its chunks itself: "<hex length>\r\n" + lines + "\r\n", one
 * writev() per batch, straight from the shared event blocks.  A write the
 * socket cannot take whole keeps the batch's references and continues
 * when the private epoll set reports the socket writable.  Endings (the
 * lagged line, the final chunk) still go through h2o, which then owns
 * the connection again and closes it.  HTTP/2, HTTP/1.0 and anything
 * that did not get a chunked response keep using h2o_send.
 */
static bool raw_usable(struct subscriber *sub)
{
	if (!sub->raw_checked) {
		sub->raw_checked = true;
		h2o_req_t *req = sub->req;
		ssize_t te = h2o_find_header(&req->res.headers, H2O_TOKEN_TRANSFER_ENCODING, -1);
		sub->raw_ok = sub->hup_fd >= 0 && req->version == 0x101 &&
			      h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET")) && te >= 0 &&
			      h2o_memis(req->res.headers.entries[te].value.base, req->res.headers.entries[te].value.len,
					H2O_STRLIT("chunked"));
	}
	return sub->raw_ok;
}

static const char CRLF[] = "\r\n";

/* The iovecs of the held batch, from byte `skip` on; their count. */
static int raw_iov(const struct subscriber *sub, struct iovec *iov, size_t skip)
{
	if (sub->nheld == 0)
		return 0;
	int k = 0;
	iov[k++] = (struct iovec){ (void *)sub->chunk_hdr, sub->chunk_hdr_len };
	for (size_t i = 0; i < sub->nheld; i++) {
		if (sub->sse)
			iov[k++] = (struct iovec){ (void *)sub->sse_id[i], strlen(sub->sse_id[i]) };
		iov[k++] = (struct iovec){ sub->held[i]->data, sub->held[i]->len };
		if (sub->sse)
			iov[k++] = (struct iovec){ (void *)SSE_END, sizeof(SSE_END) - 1 };
	}
	iov[k++] = (struct iovec){ (void *)CRLF, 2 };
	int first = 0;
	while (first < k && skip >= iov[first].iov_len)
		skip -= iov[first++].iov_len;
	if (first < k) {
		iov[first].iov_base = (char *)iov[first].iov_base + skip;
		iov[first].iov_len -= skip;
	}
	if (first)
		memmove(iov, iov + first, (size_t)(k - first) * sizeof(*iov));
	return k - first;
}

/* Write (the rest of) the held batch.  1: all of it is out; 0: the
 * socket is full, the rest waits for EPOLLOUT; -1: the connection is
 * broken. */
static int raw_write(struct subscriber *sub)
{
	struct iovec iov[SUB_IOV + 2];
	for (int guard = 0; guard < 1024; guard++) {
		int k = raw_iov(sub, iov, sub->raw_off);
		if (k == 0)
			return 1;
		ssize_t w = writev(sub->hup_fd, iov, k);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (w < 0)
			return -1;
		sub->raw_off += (size_t)w;
	}
	struct epoll_event ev = { .events = EPOLLRDHUP | EPOLLOUT | EPOLLET, .data.ptr = sub };
	if (epoll_ctl(sub->owner->hup_epoll_fd, EPOLL_CTL_MOD, sub->hup_fd, &ev) < 0)
		return -1;
	sub->raw_pending = sub->in_flight = true;
	return 0;
}

/* Drop a partial direct write of a stream that is ending, and shut its
 * socket down: the ending then goes through h2o, whose write fails (it
 * must not land in the middle of a chunk), and h2o closes the
 * connection. */
static void raw_abandon(struct subscriber *sub)
{
	if (!sub->raw_pending)
		return;
	sub->raw_pending = sub->in_flight = false;
	release_held(sub);
	(void)shutdown(sub->hup_fd, SHUT_RDWR);   /* best effort: fails only if already gone */
}

/* The socket of a stream with a partial write became writable. */
static void raw_writable(struct subscriber *sub)
{
	if (!sub->raw_pending || !sub->owner)
		return;
	int r = raw_write(sub);
	if (r == 0)
		return;
	sub->raw_pending = sub->in_flight = false;
	struct epoll_event ev = { .events = EPOLLRDHUP | EPOLLET, .data.ptr = sub };
	if (r < 0 || epoll_ctl(sub->owner->hup_epoll_fd, EPOLL_CTL_MOD, sub->hup_fd, &ev) < 0) {
		if (sub->end == SUB_END_NONE)
			sub->end = SUB_END_GONE;
	}
	pump(sub);
}

/* Take the next batch of wanted events into sub->held (and its iovecs,
 * framed for SSE, into iov[0..*ret_k), *ret_bytes bytes in all); their
 * count.  Filtered-out events only move the cursor; the scan is bounded
 * by the window (what the ring holds). */
static size_t collect(struct subscriber *sub, struct ringreader *rr, uint64_t version, h2o_iovec_t *iov,
		      size_t *ret_k, size_t *ret_bytes)
{
	size_t n = 0, k = 0, bytes = 0, framed = 0;
	while (n < SUB_BATCH && bytes < SUB_BATCH_BYTES && sub->cursor <= version) {
		enum ring_ev_type type;
		const char *zonename;
		size_t zlen;
		struct rcbuf *ev = ringreader_event_info(rr, sub->cursor, &type, &zonename, &zlen);
		if (!ev)
			break;   /* cannot happen: oldest <= cursor <= version */
		uint64_t v = sub->cursor++;
		if (!wants(sub, type, zonename, zlen))
			continue;
		sub->held[n] = rcbuf_ref(ev);
		if (sub->sse) {
			int m = snprintf(sub->sse_id[n], SSE_ID_MAX, "id: %s:%" PRIu64 "\ndata: ", ringreader_epoch(rr), v);
			iov[k++] = h2o_iovec_init(sub->sse_id[n], m > 0 ? (size_t)m : 0);
		}
		iov[k++] = h2o_iovec_init(ev->data, ev->len);
		if (sub->sse)
			iov[k++] = h2o_iovec_init(SSE_END, sizeof(SSE_END) - 1);
		bytes += ev->len;
		n++;
	}
	for (size_t i = 0; i < k; i++)
		framed += iov[i].len;
	sub->nheld = n;
	*ret_k = k;
	*ret_bytes = framed;
	return n;
}

/* "<hex len>\r\n", the head of one chunk; its length. */
static unsigned char chunk_header(char out[20], size_t len)
{
	static const char hex[] = "0123456789abcdef";
	char digits[16];
	size_t n = 0;
	do {
		digits[n++] = hex[len & 15];
		len >>= 4;
	} while (len && n < sizeof(digits));
	for (size_t i = 0; i < n; i++)
		out[i] = digits[n - 1 - i];
	out[n] = '\r';
	out[n + 1] = '\n';
	return (unsigned char)(n + 2);
}

/* Send what the stream needs next, if it is idle. */
static void pump(struct subscriber *sub)
{
	if (sub->in_flight || sub->finished || !sub->owner)
		return;
	release_held(sub);
	struct ringreader *rr = sub->owner->fe->rr;
	uint64_t version = ringreader_version(rr);

	h2o_iovec_t iov[SUB_IOV];
	char why[200];
	const char *msg = sub->why;
	if (sub->end == SUB_END_NONE && sub->cursor <= version && sub->cursor < ringreader_oldest(rr)) {
		sub->end = SUB_END_LAGGED;
		snprintf(why, sizeof(why),
			 "event %" PRIu64 " is no longer available (this stream fell behind); reconnect to resume",
			 sub->cursor);
		msg = why;
	}
	if (sub->end == SUB_END_LAGGED) {
		/* Without a message (out of memory when the stream was ended)
		 * the line is left out; the stream still ends. */
		struct buf b = BUF_INIT;
		size_t cnt = 0;
		if (msg && buf_adds(&b, "{\"type\":\"error\",\"code\":\"lagged\",\"message\":") == 0 &&
		    js_dump_string(msg, strlen(msg), &b) == 0 && buf_adds(&b, "}\n") == 0) {
			/* The buffer's bytes become the stream's text; freed after the send. */
			size_t len;
			sub->text = buf_steal(&b, &len);
			if (sub->sse)
				iov[cnt++] = h2o_iovec_init(SSE_DATA, sizeof(SSE_DATA) - 1);
			iov[cnt++] = h2o_iovec_init(sub->text, len);
			if (sub->sse)
				iov[cnt++] = h2o_iovec_init(SSE_END, sizeof(SSE_END) - 1);
		} else {
			buf_done(&b);
		}
		sub->finished = sub->in_flight = true;
		h2o_send(sub->req, iov, cnt, H2O_SEND_STATE_FINAL);
		return;
	}
	if (sub->end == SUB_END_SHUTDOWN || sub->end == SUB_END_GONE) {
		sub->finished = sub->in_flight = true;
		h2o_send(sub->req, iov, 0, H2O_SEND_STATE_FINAL);
		return;
	}

	bool raw = raw_usable(sub);
	for (int round = 0; round < SUB_RAW_ROUNDS; round++) {
		size_t k, total;
		size_t n = collect(sub, rr, version, iov, &k, &total);
		if (n == 0)
			return;
		if (!raw) {
			sub->in_flight = true;
			h2o_send(sub->req, iov, k, H2O_SEND_STATE_IN_PROGRESS);
			return;
		}
		sub->chunk_hdr_len = chunk_header(sub->chunk_hdr, total);
		sub->raw_off = 0;
		int r = raw_write(sub);
		if (r == 0)
			return;   /* continues in raw_writable */
		if (r < 0) {
			/* Let h2o find the broken connection and close it. */
			release_held(sub);
			sub->end = SUB_END_GONE;
			sub->finished = sub->in_flight = true;
			h2o_send(sub->req, iov, 0, H2O_SEND_STATE_FINAL);
			return;
		}
		release_held(sub);
	}
	/* More to send than one turn allows: come back when writable (at
	 * once, unless the socket is full) with nothing held. */
	struct epoll_event ev = { .events = EPOLLRDHUP | EPOLLOUT | EPOLLET, .data.ptr = sub };
	sub->raw_off = 0;
	if (epoll_ctl(sub->owner->hup_epoll_fd, EPOLL_CTL_MOD, sub->hup_fd, &ev) == 0)
		sub->raw_pending = sub->in_flight = true;
}

static void on_proceed(h2o_generator_t *gen, h2o_req_t *req)
{
	struct subscriber *sub = (struct subscriber *)gen;
	sub->in_flight = false;
	release_held(sub);
	pump(sub);
}

/* The client is gone (or the connection failed): nothing more may be
 * sent.  The references of the send in flight are kept until the dispose
 * hook, when h2o has surely let go of the bytes. */
static void on_stop(h2o_generator_t *gen, h2o_req_t *req)
{
	struct subscriber *sub = (struct subscriber *)gen;
	sub->finished = true;
	sub->in_flight = false;
	sub->raw_pending = false;
}

/* "<epoch>:<version>" naming a point of the current history whose every
 * later event is still held: resume right after it. */
static bool can_resume(struct ringreader *rr, const char *since, uint64_t *ret_version)
{
	const char *colon = strrchr(since, ':');
	if (!colon || (size_t)(colon - since) != RING_EPOCH_LEN ||
	    memcmp(since, ringreader_epoch(rr), RING_EPOCH_LEN) != 0)
		return false;
	const char *d = colon + 1;
	if (*d == '\0' || strlen(d) > 20 || strspn(d, "0123456789") != strlen(d))
		return false;
	errno = 0;
	unsigned long long v = strtoull(d, NULL, 10);
	if (errno)
		return false;
	uint64_t version = ringreader_version(rr);
	if (v > version)
		return false;
	if (v < version && ringreader_oldest(rr) > v + 1)
		return false;
	*ret_version = v;
	return true;
}

/* Send the ready line: `head`, then (full ready line) the shared VM list
 * and `tail`; for SSE preceded by the line's id prefix and followed by
 * the blank line that ends an SSE event.  The stream's own bytes are
 * copied into one block that lives until the send completes.  -ENOMEM:
 * nothing was sent (the caller still holds `vms`' reference). */
static int send_ready_line(struct subscriber *sub, const char *head, size_t hlen, struct rcbuf *vms,
			   const char *tail, size_t tlen, uint64_t version)
{
	char id[SSE_ID_MAX];
	size_t idlen = 0;
	if (sub->sse) {
		int m = snprintf(id, sizeof(id), "id: %s:%" PRIu64 "\ndata: ", ringreader_epoch(sub->owner->fe->rr),
				 version);
		idlen = m > 0 && (size_t)m < sizeof(id) ? (size_t)m : 0;
	}
	char *text = malloc(idlen + hlen + tlen + 1);
	if (!text)
		return -ENOMEM;
	/* memcpy with a NULL source is undefined even for 0 bytes. */
	if (idlen)
		memcpy(text, id, idlen);
	if (hlen)
		memcpy(text + idlen, head, hlen);
	if (tlen)
		memcpy(text + idlen + hlen, tail, tlen);
	size_t k = 0;
	h2o_iovec_t iov[5];
	if (idlen)
		iov[k++] = h2o_iovec_init(text, idlen);
	iov[k++] = h2o_iovec_init(text + idlen, hlen);
	if (vms) {
		sub->held[0] = vms;
		sub->nheld = 1;
		iov[k++] = h2o_iovec_init(vms->data, vms->len);
	}
	if (tlen)
		iov[k++] = h2o_iovec_init(text + idlen + hlen, tlen);
	if (sub->sse)
		iov[k++] = h2o_iovec_init(SSE_END, sizeof(SSE_END) - 1);
	sub->text = text;
	sub->in_flight = true;
	h2o_send(sub->req, iov, k, H2O_SEND_STATE_IN_PROGRESS);
	return 0;
}

/* Build and send the ready line (spec/http-api.md §4 item 3, plus epoch,
 * version and resumed).  Returns -ENOMEM when the VM list cannot be
 * built; nothing is sent then. */
static int send_ready(struct subscriber *sub, const char *since)
{
	struct ringreader *rr = sub->owner->fe->rr;
	uint64_t resume_version;
	char line[400];
	if (since && can_resume(rr, since, &resume_version)) {
		int n = snprintf(line, sizeof(line),
				 "{\"type\":\"ready\",\"date\":\"%s\",\"uuid\":\"%s\",\"epoch\":\"%s\",\"version\":%" PRIu64
				 ",\"resumed\":true}\n",
				 sub->date, sub->uuid, ringreader_epoch(rr), resume_version);
		if (n < 0 || (size_t)n >= sizeof(line))
			return -ENOBUFS;
		sub->cursor = resume_version + 1;
		return send_ready_line(sub, line, (size_t)n, NULL, NULL, 0, resume_version);
	}
	/* The VM list is the big part: one shared copy per version, between
	 * a small per-stream head and tail. */
	struct rcbuf *vms = vmset_array_string(ringreader_vms(rr));
	if (!vms)
		return -ENOMEM;
	uint64_t version = ringreader_version(rr);
	char tail[128];
	int h = snprintf(line, sizeof(line), "{\"type\":\"ready\",\"date\":\"%s\",\"uuid\":\"%s\",\"vms\":",
			 sub->date, sub->uuid);
	int t = snprintf(tail, sizeof(tail), ",\"epoch\":\"%s\",\"version\":%" PRIu64 ",\"resumed\":false}\n",
			 ringreader_epoch(rr), version);
	if (h < 0 || (size_t)h >= sizeof(line) || t < 0 || (size_t)t >= sizeof(tail))
		return -ENOBUFS;
	sub->cursor = version + 1;
	int r = send_ready_line(sub, line, (size_t)h, rcbuf_ref(vms), tail, (size_t)t, version);
	if (r < 0)
		rcbuf_unref(vms);
	return r;
}

/* ---- request options: ?since=, ?zonename=, ?type=, Accept, Last-Event-ID ---- */

/* A query component decoded into out (cap bytes, no NUL); its length, or
 * SIZE_MAX when it does not fit. */
static size_t qs_decode(const char *p, size_t n, char *out, size_t cap)
{
	size_t len = reqpath_decode(p, n, out, cap);
	return len > cap ? SIZE_MAX : len;
}

struct sub_opts {
	char since[128];
	bool has_since;
	unsigned types;
	size_t nzones;
	char zones[SUB_MAX_ZONES][SUB_ZONE_MAX + 1];
	size_t zlen[SUB_MAX_ZONES];
	const char *err;
};

/* Add the comma-separated type names of one ?type= value. */
static bool add_types(struct sub_opts *o, const char *v, size_t n)
{
	size_t i = 0;
	while (i <= n) {
		size_t j = i;
		while (j < n && v[j] != ',')
			j++;
		size_t len = j - i;
		if (len == 6 && memcmp(v + i, "create", 6) == 0)
			o->types |= TYPE_BIT(RING_EV_CREATE);
		else if (len == 6 && memcmp(v + i, "modify", 6) == 0)
			o->types |= TYPE_BIT(RING_EV_MODIFY);
		else if (len == 6 && memcmp(v + i, "delete", 6) == 0)
			o->types |= TYPE_BIT(RING_EV_DELETE);
		else if (len != 0)
			return false;
		i = j + 1;
	}
	return true;
}

/* Parse the query; false (o->err says why) on a bad filter. */
static bool parse_query(struct sub_opts *o, const char *q, size_t qlen)
{
	size_t i = 0;
	while (q && i < qlen) {
		size_t j = i;
		while (j < qlen && q[j] != '&')
			j++;
		const char *kv = q + i;
		size_t kvlen = j - i;
		i = j + 1;
		const char *eq = memchr(kv, '=', kvlen);
		size_t klen = eq ? (size_t)(eq - kv) : kvlen;
		const char *val = eq ? eq + 1 : kv + kvlen;
		size_t vlen = kvlen - klen - (eq ? 1 : 0);
		char key[16];
		size_t kl = qs_decode(kv, klen, key, sizeof(key));
		if (kl == SIZE_MAX)
			continue;
		if (kl == 5 && memcmp(key, "since", 5) == 0 && !o->has_since) {
			size_t sl = qs_decode(val, vlen, o->since, sizeof(o->since) - 1);
			if (sl != SIZE_MAX) {
				o->since[sl] = '\0';
				o->has_since = true;
			}
		} else if (kl == 8 && memcmp(key, "zonename", 8) == 0) {
			if (o->nzones == SUB_MAX_ZONES) {
				o->err = "too many zonename filters";
				return false;
			}
			size_t zl = qs_decode(val, vlen, o->zones[o->nzones], SUB_ZONE_MAX);
			if (zl == SIZE_MAX || zl == 0) {
				o->err = "bad zonename filter";
				return false;
			}
			o->zlen[o->nzones++] = zl;
		} else if (kl == 4 && memcmp(key, "type", 4) == 0) {
			char tv[64];
			size_t tl = qs_decode(val, vlen, tv, sizeof(tv));
			if (tl == SIZE_MAX || !add_types(o, tv, tl)) {
				o->err = "bad type filter (want create, modify, delete)";
				return false;
			}
		}
	}
	return true;
}

static bool header_has(h2o_req_t *req, const h2o_token_t *token, const char *needle)
{
	for (ssize_t i = -1; (i = h2o_find_header(&req->headers, token, i)) >= 0;) {
		h2o_iovec_t v = req->headers.entries[i].value;
		if (h2o_strstr(v.base, v.len, needle, strlen(needle)) != SIZE_MAX)
			return true;
	}
	return false;
}

static int respond_400(h2o_req_t *req, const char *msg)
{
	struct buf b = BUF_INIT;
	bool ok = buf_adds(&b, "{\"error\":") == 0 && js_dump_string(msg, strlen(msg), &b) == 0 &&
		  buf_adds(&b, "}") == 0;
	h2o_iovec_t body = ok ? h2o_strdup(&req->pool, b.data, b.len) : h2o_iovec_init(H2O_STRLIT("{}"));
	buf_done(&b);
	h2o_generator_t *gen = h2o_mem_alloc_pool(&req->pool, sizeof(*gen));
	gen->proceed = NULL;
	gen->stop = NULL;
	req->res.status = 400;
	req->res.reason = "Bad Request";
	req->res.content_length = body.len;
	h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("application/json"));
	h2o_start_response(req, gen);
	h2o_send(req, &body, 1, H2O_SEND_STATE_FINAL);
	return 0;
}

int subscribers_start(struct subscribers *s, h2o_req_t *req, const char *query, size_t query_len)
{
	/* Parsed on the stack: the request pool lives as long as the stream,
	 * and only the filters the stream keeps are copied there. */
	struct sub_opts opts;
	struct sub_opts *o = &opts;
	memset(o, 0, sizeof(*o));
	if (!parse_query(o, query, query_len))
		return respond_400(req, o->err);
	bool sse = header_has(req, H2O_TOKEN_ACCEPT, "text/event-stream");
	/* An EventSource reconnecting sends the id of the last event it got;
	 * it is newer than any ?since= of the URL it was created with. */
	ssize_t li = h2o_find_header_by_str(&req->headers, H2O_STRLIT("last-event-id"), -1);
	if (li >= 0) {
		h2o_iovec_t leid = req->headers.entries[li].value;
		if (leid.len < sizeof(o->since)) {
			memcpy(o->since, leid.base, leid.len);
			o->since[leid.len] = '\0';
			o->has_since = true;
		}
	}

	struct subscriber *sub = h2o_mem_alloc_shared(&req->pool, sizeof(*sub), sub_dispose);
	memset(sub, 0, sizeof(*sub));
	sub->gen.proceed = on_proceed;
	sub->gen.stop = on_stop;
	sub->req = req;
	sub->sse = sse;
	sub->types = o->types;
	if (o->nzones) {
		sub->zones = h2o_mem_alloc_pool(&req->pool, o->nzones * sizeof(*sub->zones));
		for (size_t i = 0; i < o->nzones; i++)
			sub->zones[i] = h2o_strdup(&req->pool, o->zones[i], o->zlen[i]);
		sub->nzones = o->nzones;
	}
	if (sse)
		sub->sse_id = h2o_mem_alloc_pool(&req->pool, SUB_BATCH * sizeof(*sub->sse_id));
	sub->created_ns = tu_mono_ns();
	if (tu_iso_date(tu_wall_ms(), sub->date) < 0)
		snprintf(sub->date, sizeof(sub->date), "1970-01-01T00:00:00.000Z");
	new_listener_id(s, sub->uuid);
	ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_USER_AGENT, -1);
	if (i >= 0)
		sub->user_agent = h2o_strdup(&req->pool, req->headers.entries[i].value.base,
					     req->headers.entries[i].value.len);

	sub->owner = s;
	watch_hup(s, sub);
	sub->prev = s->tail;
	if (s->tail)
		s->tail->next = sub;
	else
		s->head = sub;
	s->tail = sub;
	s->count++;
	metrics_stream_opened(s->fe->metrics, sub->sse);
	log_listener(sub, s->fe->log_child, "new /events listener created");

	req->res.status = 200;
	req->res.reason = "OK";
	req->res.content_length = SIZE_MAX;
	if (sse) {
		h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("text/event-stream"));
		h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-cache"));
	} else {
		h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("application/json"));
	}
	h2o_start_response(req, &sub->gen);
	shrink_input(s, req);
	if (send_ready(sub, o->has_since ? o->since : NULL) < 0) {
		/* Out of memory for the VM list: end the stream at once; the
		 * client sees it close without a ready line and retries. */
		log_emit(LOG_ERROR, s->fe->log_child, json_pack("{s:s}", "uuid", sub->uuid),
			 "cannot build the ready line, closing the stream");
		sub->finished = sub->in_flight = true;
		h2o_send(req, NULL, 0, H2O_SEND_STATE_FINAL);
	}
	return 0;
}

/* The stream's cursor was overwritten while its last send is still
 * waiting for the socket to drain: the socket cannot take the lagged
 * line either, so shut it down; h2o's pending write then fails and the
 * connection is closed and disposed as usual. */
static void close_stalled(struct subscriber *sub)
{
	sub->end = SUB_END_LAGGED;
	sub->finished = true;
	log_emit(LOG_INFO, sub->owner->fe->log_child,
		 json_pack("{s:s, s:I}", "uuid", sub->uuid, "cursor", (json_int_t)sub->cursor),
		 "/events listener fell behind the ring while not reading, closing it");
	h2o_socket_t *sock = sub->req->conn->callbacks->get_socket
				     ? sub->req->conn->callbacks->get_socket(sub->req->conn)
				     : NULL;
	int fd = sock ? h2o_socket_get_fd(sock) : -1;
	if (sub->raw_pending) {
		/* h2o has nothing in flight to fail: end through it. */
		raw_abandon(sub);
		sub->in_flight = true;
		h2o_send(sub->req, NULL, 0, H2O_SEND_STATE_FINAL);
	} else if (fd >= 0) {
		(void)shutdown(fd, SHUT_RDWR);   /* best effort: fails only if already gone */
	}
}

/*
 * A fan-out goes round the list SUB_SLICE streams per turn of the loop.
 * With tens of thousands of streams one round takes longer than the gap
 * between events; in between slices the loop reads the doorbell, so the
 * streams further on get the newer events in the same write, and a
 * second round serves the ones before (instead of every event waiting
 * for a whole round and then taking one more).
 */
static void rotate(struct subscribers *s)
{
	struct ringreader *rr = s->fe->rr;
	uint64_t oldest = ringreader_oldest(rr), version = ringreader_version(rr);
	for (size_t i = 0; i < SUB_SLICE && s->rot; i++) {
		struct subscriber *sub = s->rot;
		s->rot = sub->next;
		if (sub->in_flight && !sub->finished && sub->end == SUB_END_NONE && sub->cursor <= version &&
		    sub->cursor < oldest)
			close_stalled(sub);
		else
			pump(sub);
	}
	if (!s->rot && s->rot_again) {
		s->rot_again = false;
		s->rot = s->head;
	}
	if (!s->rot) {
		s->rot_active = false;
		return;
	}
	if (eventfd_write(s->kick_fd, 1) < 0) {
		/* Cannot happen short of a counter overflow: finish the round
		 * at the next notification instead. */
		s->rot_active = false;
	}
}

void subscribers_notify(struct subscribers *s)
{
	if (s->rot_active) {
		s->rot_again = true;
		return;
	}
	s->rot_active = true;
	s->rot_again = false;
	s->rot = s->head;
	rotate(s);
}

static void end_all(struct subscribers *s, enum sub_end end, const char *why)
{
	for (struct subscriber *sub = s->head, *next; sub; sub = next) {
		next = sub->next;
		if (sub->finished || sub->end != SUB_END_NONE)
			continue;
		sub->end = end;
		if (why && !sub->why)
			sub->why = strdup(why);   /* NULL (out of memory): the line is left out */
		pump(sub);
	}
}

void subscribers_lag_all(struct subscribers *s, const char *why)
{
	end_all(s, SUB_END_LAGGED, why);
}

void subscribers_end_all(struct subscribers *s)
{
	end_all(s, SUB_END_SHUTDOWN, NULL);
}

json_t *subscribers_listeners_json(const struct subscribers *s, uint64_t now_ns)
{
	json_t *o = json_object();
	if (!o)
		return NULL;
	for (const struct subscriber *sub = s->head; sub; sub = sub->next) {
		if ((sub->finished && sub->end == SUB_END_NONE) || sub->end == SUB_END_GONE)
			continue;   /* client already gone */
		char hr[32], ago[80];
		tu_hrtime_str(sub->created_ns, hr);
		tu_pretty_delta(now_ns > sub->created_ns ? now_ns - sub->created_ns : 0, ago);
		json_t *l = json_object();
		if (!l) {
			json_decref(o);
			return NULL;
		}
		if (sub->user_agent.base) {
			json_t *ua = json_stringn(sub->user_agent.base, sub->user_agent.len);
			if (!ua) {
				/* Not UTF-8: show it as Node would decode it. */
				size_t n;
				char *clean = js_utf8_sanitize(sub->user_agent.base, sub->user_agent.len, &n);
				ua = clean ? json_stringn(clean, n) : NULL;
				free(clean);
			}
			if (ua)
				json_object_set_new(l, "userAgent", ua);
		}
		json_object_set_new(l, "createdTime", json_string(hr));
		json_object_set_new(l, "createdDate", json_string(sub->date));
		json_object_set_new(l, "createdAgo", json_string(ago));
		json_object_set_new(o, sub->uuid, l);
	}
	return o;
}
