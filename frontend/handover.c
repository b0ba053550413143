/*
 * handover.c - an orphaned frontend hands over to the next supervisor's
 * frontend.  See handover.h.
 */
#include "handover.h"

#include <errno.h>
#include <inttypes.h>
#include <linux/filter.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "buf.h"
#include "frontend.h"
#include "json.h"
#include "log.h"
#include "ringreader.h"

/* How often an orphan looks at the ring (new events, a new writer). */
#define ORPHAN_POLL_MS 20

struct handover {
	struct frontend *fe;
	void (*poll)(struct frontend *);
	void (*stop)(struct frontend *);
	pid_t parent;
	int pidfd;                  /* -1 once the parent is gone */
	h2o_socket_t *pidfd_sock;
	bool orphaned;
	bool handing_over;
	pid_t old_writer;           /* the ring's writer when we were orphaned */
	uint64_t old_generation;
	h2o_timeout_t timer;
	h2o_timeout_entry_t timer_entry;
};

/* Does the new supervisor say its frontend accepts connections? */
static bool successor_ready(struct handover *h)
{
	struct buf b = BUF_INIT;
	if (ringreader_status(h->fe->rr, &b) < 0 || !b.data) {
		buf_done(&b);
		return false;
	}
	char err[128];
	json_t *facts = js_parse(b.data, b.len, err, sizeof(err));
	buf_done(&b);
	if (!facts)
		return false;
	json_t *fe = json_object_get(json_object_get(facts, "children"), "frontend");
	json_t *pid = json_object_get(fe, "pid");
	bool ready = json_is_true(json_object_get(fe, "ready")) && json_is_number(pid) &&
		     (pid_t)json_number_value(pid) != getpid();
	json_decref(facts);
	return ready;
}

static void on_orphan_timer(h2o_timeout_entry_t *entry)
{
	struct handover *h = (struct handover *)((char *)entry - offsetof(struct handover, timer_entry));
	h->poll(h->fe);
	if (h->handing_over)
		return;
	pid_t pid = 0;
	uint64_t gen = 0;
	ringreader_writer(h->fe->rr, &pid, &gen);
	if ((pid != h->old_writer || gen != h->old_generation) && successor_ready(h)) {
		h->handing_over = true;
		log_emit(LOG_INFO, h->fe->log_child, json_pack("{s:i, s:I}", "writer", (int)pid, "generation", (json_int_t)gen),
			 "a new supervisor (pid %d) has a frontend accepting: handing over and exiting", (int)pid);
		h->stop(h->fe);
		return;
	}
	if (!h->fe->stopping)
		h2o_timeout_link(h->fe->loop, &h->timer, &h->timer_entry);
}

static void become_orphan(struct handover *h)
{
	if (h->orphaned)
		return;
	h->orphaned = true;
	ringreader_writer(h->fe->rr, &h->old_writer, &h->old_generation);
	log_emit(LOG_WARN, h->fe->log_child, json_pack("{s:i}", "parent", (int)h->parent),
		 "the supervisor (pid %d) is gone: serving the last published state until a new one takes over",
		 (int)h->parent);
	if (!h->fe->stopping)
		h2o_timeout_link(h->fe->loop, &h->timer, &h->timer_entry);
}

static void on_parent_exit(h2o_socket_t *sock, const char *err)
{
	struct handover *h = sock->data;
	h2o_socket_read_stop(sock);
	h2o_socket_close(sock);   /* closes the pidfd */
	h->pidfd_sock = NULL;
	h->pidfd = -1;
	become_orphan(h);
}

struct handover *handover_new(struct frontend *fe, void (*poll)(struct frontend *), void (*stop)(struct frontend *))
{
	struct handover *h = calloc(1, sizeof(*h));
	if (!h)
		return NULL;
	h->fe = fe;
	h->poll = poll;
	h->stop = stop;
	h->parent = getppid();
	h->pidfd = -1;
	h2o_timeout_init(fe->loop, &h->timer, ORPHAN_POLL_MS);
	h->timer_entry.cb = on_orphan_timer;
	pid_t writer = 0;
	ringreader_writer(fe->rr, &writer, NULL);
	/* The parent may have died before we looked: then it is no longer
	 * the ring's writer (we were reparented). */
	if (writer != h->parent) {
		become_orphan(h);
		return h;
	}
	h->pidfd = (int)syscall(SYS_pidfd_open, h->parent, 0);
	if (h->pidfd < 0) {
		log_emit(LOG_WARN, fe->log_child, log_err_fields(strerror(errno), NULL),
			 "cannot watch the supervisor (pidfd_open), an orphaned frontend will not hand over");
		return h;
	}
	/* pidfds are close-on-exec by definition. */
	h->pidfd_sock = h2o_evloop_socket_create(fe->loop, h->pidfd, H2O_SOCKET_FLAG_DONT_READ);
	if (!h->pidfd_sock) {
		close(h->pidfd);
		h->pidfd = -1;
		return h;
	}
	h->pidfd_sock->data = h;
	h2o_socket_read_start(h->pidfd_sock, on_parent_exit);
	return h;
}

void handover_free(struct handover *h)
{
	if (!h)
		return;
	if (h2o_timeout_is_linked(&h->timer_entry))
		h2o_timeout_unlink(&h->timer_entry);
	if (h->pidfd_sock) {
		h2o_socket_read_stop(h->pidfd_sock);
		h2o_socket_close(h->pidfd_sock);
	}
	free(h);
}

bool handover_in_progress(const struct handover *h)
{
	return h && h->handing_over;
}

void handover_ready(int ready_fd)
{
	if (ready_fd < 0)
		return;
	ssize_t n;
	do
		n = write(ready_fd, "1", 1);
	while (n < 0 && errno == EINTR);
	/* A supervisor that is gone cannot be told; nothing else to do. */
	close(ready_fd);
}

void handover_steer_away(int listen_fd)
{
	/* A classic BPF program selecting socket index 1 of the group: the
	 * sockets of a group are numbered in joining order, and the one that
	 * joined after ours (the new supervisor's) is 1 while ours is the
	 * oldest.  Once ours is closed the index is out of range and the
	 * kernel falls back to its usual hash, so the program is harmless
	 * afterwards; the next supervisor removes it when it binds. */
	struct sock_filter code[] = { BPF_STMT(BPF_RET | BPF_K, 1) };
	struct sock_fprog prog = { .len = 1, .filter = code };
	(void)setsockopt(listen_fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof(prog));
}
