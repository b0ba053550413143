/*
 * fsw.c - the fswatcher child seen from the supervisor.  See fsw.h.
 *
 * Owns: the child's pipes and their libev watchers, the path tables, the
 * pending requests and the message-delay ring.  The child's life (spawn,
 * reap, restart with backoff) is supervisor/child.c's; this file only
 * says how to spawn it and what to do when it comes and goes.
 *
 *   stdin   socketpair (send(MSG_NOSIGNAL): a dead child never raises
 *           SIGPIPE in the supervisor), non-blocking, with a write queue
 *   stdout  pipe, split into lines (\r\n, \n or \r), one message each
 *   stderr  pipe, lines kept in a 100-line ring for the exit report
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "child.h"
#include "fsw.h"
#include "json.h"
#include "log.h"
#include "strmap.h"
#include "timeutil.h"

extern char **environ;

#define FSW_MAX_LINE (1024 * 1024)     /* longer stdout lines: protocol error */
#define FSW_STDERR_LINES 100
#define FSW_STDERR_LINE_MAX 1024
#define FSW_DELAYS 1000
#define FSW_LOG_LINE_MAX 1024          /* quoted lines are cut to this */
#define FSW_RETRY_S 10.0               /* retry of paths that failed otherwise */
#define FSW_STOP_WAIT_MS 2000
/* WATCH commands in flight at most; later ones wait in the send queue.
 * Keeps the pipeline to the child shallow: thousands of watches added at
 * once (boot, re-registration after a restart) cost neither a queue of
 * thousands of commands and pending actions in memory nor answers that
 * wait in the pipe for long (each such answer would log a "message took
 * ...ms" warning). */
#define FSW_WINDOW 128

enum where { IN_WATCHING, IN_NOT_YET };
enum ny_state {
	NY_UNSENT,    /* no child has it: send WATCH when one is up */
	NY_SENT,      /* WATCH in flight (watch_key) */
	NY_WAITING,   /* FAIL: missing; the child reports "exists" */
	NY_FAILED,    /* FAIL for another reason: retried by the timer */
};

struct fsw_path {
	char *path;
	enum where where;
	enum ny_state ny;
	uint32_t watch_key;
	unsigned tries;       /* failed WATCH attempts since it was added */
	bool after_final;     /* re-watched after a final (delete) event */
	bool queued;          /* in the send queue (ny is NY_UNSENT) */
	TAILQ_ENTRY(fsw_path) q_link;
};

enum action_kind { A_WATCH, A_UNWATCH };

struct fsw_action {
	uint32_t key;
	enum action_kind kind;
	uint64_t started_ns;
	char *cmd;                 /* "<key> WATCH <path>\n" */
	char *path;
	struct fsw_action *prev, *next;
};

struct fsw {
	struct ev_loop *loop;
	char *cmd;
	struct fsw_callbacks cbs;
	struct child child;

	int stdin_fd, stdout_fd, stderr_fd;
	ev_io in_io, out_io, err_io;
	struct buf outq;           /* bytes not yet written to the child */
	size_t outq_off;
	struct buf line;           /* partial stdout line */
	bool line_cr;              /* last byte seen was \r: skip a \n */
	struct buf errline;        /* partial stderr line */
	char *stderr_ring[FSW_STDERR_LINES];
	unsigned stderr_n;         /* lines ever stored */

	uint32_t key;              /* last key used */
	struct fsw_action *actions, *actions_tail;
	size_t nactions;           /* length of the actions list */
	TAILQ_HEAD(, fsw_path) sendq;         /* WATCHes waiting for the window */
	size_t nsendq;
	bool batching;             /* send_cmd leaves flushing to the caller */
	struct strmap watching, not_yet;
	/* The bounded path lists of the last status dump, rebuilt only when
	 * their map changed (the status is published after every event). */
	struct paths_cache {
		json_t *json;
		unsigned long gen;
		size_t max;
	} watching_cache, not_yet_cache;
	ev_timer retry_timer;

	int64_t delays[FSW_DELAYS];
	unsigned ndelays;          /* samples ever stored */

	bool started;              /* fsw_start called, fsw_stop not */
	bool stopping;
	bool child_ready;          /* this child printed ready */
	bool broken;               /* this child was killed for a protocol error */
	bool ready_called;
};

/* ---- small helpers ---- */

static json_t *trunc_str(const char *s, size_t n)
{
	if (n > FSW_LOG_LINE_MAX)
		n = FSW_LOG_LINE_MAX;
	size_t len;
	char *clean = js_utf8_sanitize(s, n, &len);
	json_t *v = clean ? json_stringn(clean, len) : json_null();
	free(clean);
	return v ? v : json_null();
}

static bool child_up(const struct fsw *w)
{
	return w->child.pid > 0 && w->stdin_fd >= 0 && !w->broken && !w->stopping;
}

static struct fsw_path *find_path(const struct fsw *w, const char *path, size_t n)
{
	struct fsw_path *p = strmap_get(&w->watching, path, n);
	return p ? p : strmap_get(&w->not_yet, path, n);
}

static void path_free(struct fsw_path *p)
{
	if (p != NULL) {
		free(p->path);
		free(p);
	}
}

static void action_free(struct fsw_action *a)
{
	free(a->cmd);
	free(a->path);
	free(a);
}

static void actions_clear(struct fsw *w)
{
	while (w->actions != NULL) {
		struct fsw_action *a = w->actions;
		w->actions = a->next;
		action_free(a);
	}
	w->actions_tail = NULL;
	w->nactions = 0;
}

static void close_fd(int *fd)
{
	if (*fd >= 0) {
		(void)close(*fd);
		*fd = -1;
	}
}

/* Kill the child because it broke the protocol; its exit restarts it. */
static void blame_child(struct fsw *w, const char *why)
{
	if (w->broken || w->child.pid <= 0)
		return;
	w->broken = true;
	log_error(json_pack("{s:i}", "watcher_pid", (int)w->child.pid),
		"fswatcher %s, killing it and restarting", why);
	(void)child_kill(&w->child, SIGKILL);
}

/* ---- writing commands ---- */

static void flush_outq(struct fsw *w)
{
	while (w->outq_off < w->outq.len) {
		ssize_t n = send(w->stdin_fd, w->outq.data + w->outq_off,
			w->outq.len - w->outq_off, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				ev_io_start(w->loop, &w->in_io);
				return;
			}
			log_error(log_err_fields(strerror(errno), NULL), "failed to write to stdin");
			buf_reset(&w->outq);
			w->outq_off = 0;
			ev_io_stop(w->loop, &w->in_io);
			blame_child(w, "stdin cannot be written");
			return;
		}
		w->outq_off += (size_t)n;
	}
	buf_reset(&w->outq);
	w->outq_off = 0;
	ev_io_stop(w->loop, &w->in_io);
}

static void on_stdin_writable(struct ev_loop *loop, ev_io *io, int revents)
{
	flush_outq(io->data);
}

/* Queue "<key> <verb> <path>\n" and remember it as a pending action.
 * Returns the key, or 0 when nothing could be sent (no child, ENOMEM). */
static uint32_t send_cmd(struct fsw *w, enum action_kind kind, const char *path)
{
	if (!child_up(w))
		return 0;
	struct fsw_action *a = calloc(1, sizeof(*a));
	if (a == NULL)
		return 0;
	if (++w->key == 0)
		w->key = 1;   /* 0 is rejected by the child */
	a->key = w->key;
	a->kind = kind;
	a->started_ns = tu_mono_ns();
	a->path = strdup(path);
	if (a->path == NULL || asprintf(&a->cmd, "%u %s %s\n", a->key,
	    kind == A_WATCH ? "WATCH" : "UNWATCH", path) < 0) {
		a->cmd = NULL;
		action_free(a);
		return 0;
	}
	if (buf_adds(&w->outq, a->cmd) < 0) {
		action_free(a);
		return 0;
	}
	if (log_enabled(LOG_TRACE)) {
		log_trace(json_pack("{s:s%}", "cmd", a->cmd, strlen(a->cmd) - 1),
			"writing to fswatcher stdin");
	}
	a->prev = w->actions_tail;
	if (w->actions_tail != NULL)
		w->actions_tail->next = a;
	else
		w->actions = a;
	w->actions_tail = a;
	w->nactions++;
	if (!w->batching)
		flush_outq(w);
	return a->key;
}

static void sendq_remove(struct fsw *w, struct fsw_path *p)
{
	if (!p->queued)
		return;
	TAILQ_REMOVE(&w->sendq, p, q_link);
	p->queued = false;
	w->nsendq--;
}

/* Forget the send queue (its paths stay in not_yet_watching, unsent). */
static void sendq_clear(struct fsw *w)
{
	while (!TAILQ_EMPTY(&w->sendq))
		sendq_remove(w, TAILQ_FIRST(&w->sendq));
}

/* Send WATCH for p now, or queue it behind the window. */
static void send_watch(struct fsw *w, struct fsw_path *p)
{
	if (p->queued)
		return;   /* already waiting for its turn */
	if (child_up(w) && w->nactions >= FSW_WINDOW) {
		p->ny = NY_UNSENT;
		p->watch_key = 0;
		p->queued = true;
		TAILQ_INSERT_TAIL(&w->sendq, p, q_link);
		w->nsendq++;
		return;
	}
	uint32_t key = send_cmd(w, A_WATCH, p->path);
	p->watch_key = key;
	p->ny = key != 0 ? NY_SENT : NY_UNSENT;
}

/* Answers freed places in the window: once half of it is free, refill it
 * with what waits, written to the child in one go (the child then reads
 * and answers them in one batch too). */
static void sendq_pump(struct fsw *w)
{
	if (TAILQ_EMPTY(&w->sendq) || w->nactions > FSW_WINDOW / 2 || !child_up(w))
		return;
	w->batching = true;
	while (!TAILQ_EMPTY(&w->sendq) && w->nactions < FSW_WINDOW) {
		struct fsw_path *p = TAILQ_FIRST(&w->sendq);
		sendq_remove(w, p);
		send_watch(w, p);
		if (p->ny != NY_SENT)
			break;   /* could not be sent (out of memory): stays unsent */
	}
	w->batching = false;
	flush_outq(w);
}

/* ---- paths ---- */

/* Put p at the end of not_yet_watching and try it (tries as given). */
static int queue_watch(struct fsw *w, struct fsw_path *p)
{
	p->where = IN_NOT_YET;
	int r = strmap_set(&w->not_yet, p->path, strlen(p->path), p, NULL);
	if (r < 0)
		return r;
	send_watch(w, p);
	return 0;
}

static bool valid_path(const char *path)
{
	size_t n = strlen(path);
	if (n == 0 || n > PATH_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)path[i];
		if (c < 0x20 || c == 0x7f || isspace(c))
			return false;
	}
	/* The child's JSON must round-trip the path: valid UTF-8 only. */
	size_t len;
	char *clean = js_utf8_sanitize(path, n, &len);
	bool ok = clean != NULL && len == n && memcmp(clean, path, n) == 0;
	free(clean);
	return ok;
}

int fsw_watch(struct fsw *w, const char *path)
{
	if (!valid_path(path))
		return -EINVAL;
	if (find_path(w, path, strlen(path)) != NULL)
		return -EEXIST;
	struct fsw_path *p = calloc(1, sizeof(*p));
	if (p == NULL || (p->path = strdup(path)) == NULL) {
		free(p);
		return -ENOMEM;
	}
	int r = queue_watch(w, p);
	if (r < 0)
		path_free(p);
	return r;
}

int fsw_unwatch(struct fsw *w, const char *path)
{
	size_t n = strlen(path);
	struct fsw_path *p = strmap_del(&w->watching, path, n);
	bool tell = p != NULL;
	if (p == NULL) {
		p = strmap_del(&w->not_yet, path, n);
		if (p == NULL)
			return -ENOENT;
		/* The child holds it (watched or pending) once WATCH was sent. */
		tell = p->ny == NY_SENT || p->ny == NY_WAITING;
		sendq_remove(w, p);
	}
	if (tell)
		(void)send_cmd(w, A_UNWATCH, path);
	path_free(p);
	return 0;
}

bool fsw_is_watching(const struct fsw *w, const char *path)
{
	return find_path(w, path, strlen(path)) != NULL;
}

/* FAIL messages whose errno is ENOENT or ENOTDIR: the child keeps such a
 * path pending and says when it exists. */
static bool fail_is_missing(const char *message)
{
	const char *e = strstr(message, "errno ");
	if (e == NULL)
		return false;
	long n = strtol(e + 6, NULL, 10);
	return n == ENOENT || n == ENOTDIR;
}

static void on_retry_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct fsw *w = t->data;
	bool any = false;
	for (struct strmap_entry *e = w->not_yet.head; e != NULL; e = e->next) {
		struct fsw_path *p = e->value;
		if (p->ny == NY_FAILED) {
			send_watch(w, p);
			any = true;
		}
	}
	if (!any)
		ev_timer_stop(loop, t);
}

static void emit(struct fsw *w, const char *path, const char *type, json_t *changes, bool final)
{
	if (w->cbs.event == NULL)
		return;
	struct fsw_event ev = { path, type, changes, final };
	w->cbs.event(w->cbs.arg, &ev);
}

/* ---- messages from the child ---- */

static void on_response(struct fsw *w, json_t *obj)
{
	double k = js_number_value(json_object_get(obj, "key"));
	const char *result = json_string_value(json_object_get(obj, "result"));
	if (!(k >= 1 && k <= UINT32_MAX && k == floor(k)) || result == NULL) {
		blame_child(w, "sent a malformed response");
		return;
	}
	uint32_t key = (uint32_t)k;
	struct fsw_action *a = w->actions;
	while (a != NULL && a->key != key)
		a = a->next;
	if (a == NULL) {
		blame_child(w, "answered an unknown key");
		return;
	}
	if (a->prev != NULL)
		a->prev->next = a->next;
	else
		w->actions = a->next;
	if (a->next != NULL)
		a->next->prev = a->prev;
	else
		w->actions_tail = a->prev;
	w->nactions--;
	if (log_enabled(LOG_TRACE)) {
		char pretty[80];
		tu_pretty_delta(tu_mono_ns() - a->started_ns, pretty);
		log_trace(NULL, "command %.*s took %s", (int)strlen(a->cmd) - 1, a->cmd, pretty);
	}
	if (a->kind == A_WATCH) {
		struct fsw_path *p = strmap_get(&w->not_yet, a->path, strlen(a->path));
		/* Unwatched (or unwatched and watched again) meanwhile: stale. */
		if (p != NULL && p->ny == NY_SENT && p->watch_key == key) {
			if (strcmp(result, "SUCCESS") == 0) {
				/* Port change: a file deleted and back before the
				 * re-WATCH also reports "create": the delete handler may
				 * have seen it gone, and nothing else would say it is
				 * back (upstream lost such a file until a refresh). */
				bool appeared = p->tries > 0 || p->after_final;
				p->after_final = false;
				log_trace(NULL, "%u/10 %s watch succeeded", p->tries, p->path);
				(void)strmap_del(&w->not_yet, p->path, strlen(p->path));
				p->where = IN_WATCHING;
				p->watch_key = 0;
				p->tries = 0;
				if (strmap_set(&w->watching, p->path, strlen(p->path), p, NULL) < 0) {
					/* Cannot track it: tell the child to drop it too. */
					(void)send_cmd(w, A_UNWATCH, p->path);
					path_free(p);
				} else if (appeared) {
					emit(w, p->path, "create", NULL, false);
				}
			} else {
				const char *msg = json_string_value(json_object_get(obj, "message"));
				p->tries++;
				log_trace(NULL, "%u/10 %s watch failed", p->tries, p->path);
				if (msg != NULL && fail_is_missing(msg)) {
					p->ny = NY_WAITING;
				} else {
					log_warn(json_pack("{s:s,s:s}", "path", p->path,
						"message", msg ? msg : ""),
						"cannot watch %s, retrying in %.0f s", p->path, FSW_RETRY_S);
					p->ny = NY_FAILED;
					if (!ev_is_active(&w->retry_timer))
						ev_timer_again(w->loop, &w->retry_timer);
				}
			}
		}
	}
	action_free(a);
	sendq_pump(w);
}

static void on_event(struct fsw *w, json_t *obj)
{
	json_t *jfinal = json_object_get(obj, "final");
	json_t *changes = json_object_get(obj, "changes");
	const char *path = json_string_value(json_object_get(obj, "pathname"));
	bool ok = json_is_boolean(jfinal) && json_is_array(changes) && path != NULL;
	size_t i;
	json_t *c;
	bool modified = false, deleted = false;
	json_array_foreach(changes, i, c) {
		const char *s = json_string_value(c);
		if (s == NULL) {
			ok = false;
			break;
		}
		if (strcmp(s, "FILE_MODIFIED") == 0 || strcmp(s, "FILE_RENAME_TO") == 0 ||
		    strcmp(s, "FILE_TRUNC") == 0)
			modified = true;
		if (strcmp(s, "FILE_DELETE") == 0 || strcmp(s, "UNMOUNTED") == 0)
			deleted = true;
	}
	if (!ok) {
		blame_child(w, "sent a malformed event");
		return;
	}
	if (log_enabled(LOG_TRACE))
		log_trace(json_pack("{s:O}", "obj", obj), "fswatcher event");
	bool final = json_is_true(jfinal);
	struct fsw_path *p = strmap_get(&w->watching, path, strlen(path));
	if (p == NULL)
		return;   /* unwatched meanwhile, or not confirmed yet */
	const char *type = deleted ? "delete" : modified ? "change" : "event";
	if (final && strcmp(type, "delete") != 0) {
		log_warn(json_pack("{s:O}", "obj", obj), "final event seen for non-delete type");
		type = "delete";
	}
	if (final) {
		log_debug(json_pack("{s:s}", "f", path), "file was final, queueing rewatch");
		(void)strmap_del(&w->watching, path, strlen(path));
		p->tries = 0;
		p->after_final = true;
		if (queue_watch(w, p) < 0) {
			log_error(json_pack("{s:s}", "path", path),
				"cannot re-watch %s: out of memory, dropping it", path);
			path_free(p);
			p = NULL;
		}
	}
	/* `path` belongs to obj, which outlives the callback. */
	emit(w, path, type, changes, final);
}

static void on_exists(struct fsw *w, json_t *obj)
{
	const char *path = json_string_value(json_object_get(obj, "pathname"));
	if (path == NULL) {
		blame_child(w, "sent a malformed exists message");
		return;
	}
	struct fsw_path *p = strmap_get(&w->not_yet, path, strlen(path));
	if (p != NULL && p->ny == NY_WAITING)
		send_watch(w, p);
}

static void on_ready(struct fsw *w, json_t *obj)
{
	if (w->child_ready) {
		blame_child(w, "sent a second ready message");
		return;
	}
	w->child_ready = true;
	log_debug(json_pack("{s:O?,s:i}", "version", json_object_get(obj, "version"),
		"watcher_pid", (int)w->child.pid), "fswatcher ready");
	if (!w->ready_called) {
		w->ready_called = true;
		if (w->cbs.ready != NULL)
			w->cbs.ready(w->cbs.arg);
	} else if (w->cbs.restarted != NULL) {
		w->cbs.restarted(w->cbs.arg);
	}
}

static void push_delay(struct fsw *w, int64_t ms);
static json_t *delays_json(const struct fsw *w);

static void on_line(struct fsw *w, const char *line, size_t len)
{
	if (w->broken)
		return;   /* being killed for an earlier line; its exit was logged */
	if (w->stopping || !w->started) {
		log_warn(json_pack("{s:o}", "line", trunc_str(line, len)),
			"stdout received while not running");
		return;
	}
	if (log_enabled(LOG_TRACE))
		log_trace(json_pack("{s:o}", "line", trunc_str(line, len)), "fswatcher stdout line");
	char err[160] = "";
	json_t *obj = js_parse(line, len, err, sizeof(err));
	json_t *t = obj ? json_object_get(obj, "time") : NULL;
	const char *type = obj ? json_string_value(json_object_get(obj, "type")) : NULL;
	double s = js_number_value(json_array_get(t, 0));
	double ns = js_number_value(json_array_get(t, 1));
	if (obj == NULL || type == NULL || !json_is_array(t) || json_array_size(t) != 2 ||
	    !isfinite(s) || !isfinite(ns)) {
		if (err[0] == '\0')
			snprintf(err, sizeof(err), "message without a string type and a time pair");
		json_t *f = json_object();
		json_object_set_new(f, "err", log_err_obj(err, NULL));
		json_object_set_new(f, "line", trunc_str(line, len));
		log_error(f, "BAD JSON");
		json_decref(obj);
		blame_child(w, "printed an unparsable line");
		return;
	}
	int64_t now = (int64_t)tu_mono_ns();
	int64_t ms = (int64_t)floor(((double)now - (s * 1e9 + ns)) / 1e6);
	push_delay(w, ms);
	if (ms > 10) {
		log_warn(json_pack("{s:I,s:o}", "deltaMs", (json_int_t)ms, "avg", delays_json(w)),
			"message took %lldms to process (> 10ms)", (long long)ms);
	}
	if (strcmp(type, "ready") == 0) {
		on_ready(w, obj);
	} else if (strcmp(type, "event") == 0) {
		on_event(w, obj);
	} else if (strcmp(type, "response") == 0) {
		on_response(w, obj);
	} else if (strcmp(type, "exists") == 0) {
		on_exists(w, obj);
	} else if (strcmp(type, "overflow") == 0) {
		log_warn(NULL, "fswatcher lost events (inotify queue overflow)");
		if (w->cbs.overflow != NULL)
			w->cbs.overflow(w->cbs.arg);
	} else {
		const char *m = json_string_value(json_object_get(obj, "message"));
		json_t *f = json_object();
		json_object_set_new(f, "err", log_err_obj(m ? m : type, NULL));
		json_object_set(f, "obj", obj);
		log_warn(f, "dispatching error");
		blame_child(w, strcmp(type, "error") == 0 ? "reported an error" :
			"sent an unknown message type");
	}
	json_decref(obj);
}

/* Append bytes of a stdout line; past FSW_MAX_LINE the line is a protocol
 * error and the rest of it is dropped. */
static void line_add(struct fsw *w, const char *p, size_t n)
{
	size_t room = FSW_MAX_LINE - w->line.len;
	if (n > room) {
		if (!w->broken) {
			json_t *f = json_object();
			json_object_set_new(f, "err", log_err_obj("line too long", NULL));
			json_object_set_new(f, "line", trunc_str(w->line.data, w->line.len));
			log_error(f, "BAD JSON");
			blame_child(w, "printed an overlong line");
		}
		n = room;
	}
	if (n > 0 && buf_add(&w->line, p, n) < 0)
		blame_child(w, "output could not be buffered (out of memory)");
}

static void on_stdout(struct ev_loop *loop, ev_io *io, int revents)
{
	struct fsw *w = io->data;
	char chunk[16384];
	ssize_t n = read(w->stdout_fd, chunk, sizeof(chunk));
	if (n < 0) {
		if (errno == EINTR || errno == EAGAIN)
			return;
		n = 0;
	}
	if (n == 0) {
		/* EOF: the exit is reported through child.c. */
		ev_io_stop(loop, io);
		close_fd(&w->stdout_fd);
		return;
	}
	/* Lines end with \r\n, \n or \r.  Whole lines inside the chunk are
	 * handled in place; only a line cut by the chunk's end is copied. */
	const char *p = chunk, *end = chunk + n;
	while (p < end) {
		if (w->line_cr) {
			w->line_cr = false;
			if (*p == '\n') {
				p++;
				continue;
			}
		}
		const char *q = p;
		while (q < end && *q != '\n' && *q != '\r')
			q++;
		if (q == end) {
			line_add(w, p, (size_t)(q - p));
			break;
		}
		w->line_cr = *q == '\r';
		if (w->line.len == 0 && q - p <= FSW_MAX_LINE) {
			on_line(w, p, (size_t)(q - p));
		} else {
			line_add(w, p, (size_t)(q - p));
			on_line(w, w->line.data ? w->line.data : "", w->line.len);
			buf_reset(&w->line);
		}
		if (w->stdout_fd < 0)
			return;   /* stopped by a callback */
		p = q + 1;
	}
}

static void stderr_line(struct fsw *w, const char *s, size_t n)
{
	if (log_enabled(LOG_TRACE))
		log_trace(json_pack("{s:o}", "line", trunc_str(s, n)), "fswatcher stderr line");
	unsigned slot = w->stderr_n++ % FSW_STDERR_LINES;
	free(w->stderr_ring[slot]);
	w->stderr_ring[slot] = strndup(s, n);
}

static void on_stderr(struct ev_loop *loop, ev_io *io, int revents)
{
	struct fsw *w = io->data;
	char chunk[4096];
	ssize_t n = read(w->stderr_fd, chunk, sizeof(chunk));
	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return;
	if (n <= 0) {
		if (w->errline.len > 0)
			stderr_line(w, w->errline.data, w->errline.len);
		buf_reset(&w->errline);
		ev_io_stop(loop, io);
		close_fd(&w->stderr_fd);
		return;
	}
	for (ssize_t i = 0; i < n; i++) {
		if (chunk[i] == '\n') {
			stderr_line(w, w->errline.data ? w->errline.data : "", w->errline.len);
			buf_reset(&w->errline);
		} else if (w->errline.len < FSW_STDERR_LINE_MAX) {
			(void)buf_addc(&w->errline, chunk[i]);
		}
	}
}

/* ---- the child's life ---- */

static void close_pipes(struct fsw *w)
{
	ev_io_stop(w->loop, &w->in_io);
	ev_io_stop(w->loop, &w->out_io);
	ev_io_stop(w->loop, &w->err_io);
	/* Drain what the child wrote to stderr before dying. */
	if (w->stderr_fd >= 0) {
		for (int i = 0; i < 64 && w->stderr_fd >= 0; i++)
			on_stderr(w->loop, &w->err_io, 0);
	}
	close_fd(&w->stdin_fd);
	close_fd(&w->stdout_fd);
	close_fd(&w->stderr_fd);
	buf_reset(&w->outq);
	w->outq_off = 0;
	buf_reset(&w->line);
	w->line_cr = false;
	buf_reset(&w->errline);
}

static pid_t spawn_child(struct child *c, void *arg)
{
	struct fsw *w = arg;
	int in[2] = { -1, -1 }, out[2] = { -1, -1 }, err[2] = { -1, -1 };
	pid_t pid = -1;
	int r = 0;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, in) < 0 ||
	    pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0) {
		r = -errno;
		goto fail;
	}
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	if ((r = posix_spawn_file_actions_init(&fa)) != 0) {
		r = -r;
		goto fail;
	}
	if ((r = posix_spawnattr_init(&attr)) != 0) {
		posix_spawn_file_actions_destroy(&fa);
		r = -r;
		goto fail;
	}
	/* dup2 onto 0..2 clears close-on-exec on exactly those three. */
	(void)posix_spawn_file_actions_adddup2(&fa, in[1], STDIN_FILENO);
	(void)posix_spawn_file_actions_adddup2(&fa, out[1], STDOUT_FILENO);
	(void)posix_spawn_file_actions_adddup2(&fa, err[1], STDERR_FILENO);
	sigset_t none, all;
	sigemptyset(&none);
	sigfillset(&all);
	(void)posix_spawnattr_setsigmask(&attr, &none);
	(void)posix_spawnattr_setsigdefault(&attr, &all);
	(void)posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
	char *argv[] = { w->cmd, "-r", "-j", "-p", NULL };
	r = posix_spawn(&pid, w->cmd, &fa, &attr, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	if (r != 0) {
		r = -r;
		goto fail;
	}
	close(in[1]);
	close(out[1]);
	close(err[1]);
	(void)fcntl(in[0], F_SETFL, O_NONBLOCK);
	(void)fcntl(out[0], F_SETFL, O_NONBLOCK);
	(void)fcntl(err[0], F_SETFL, O_NONBLOCK);
	w->stdin_fd = in[0];
	w->stdout_fd = out[0];
	w->stderr_fd = err[0];
	ev_io_set(&w->in_io, w->stdin_fd, EV_WRITE);
	ev_io_set(&w->out_io, w->stdout_fd, EV_READ);
	ev_io_set(&w->err_io, w->stderr_fd, EV_READ);
	ev_io_start(w->loop, &w->out_io);
	ev_io_start(w->loop, &w->err_io);
	return pid;
fail:
	for (int i = 0; i < 2; i++) {
		if (in[i] >= 0)
			close(in[i]);
		if (out[i] >= 0)
			close(out[i]);
		if (err[i] >= 0)
			close(err[i]);
	}
	json_t *f = json_object();
	json_object_set_new(f, "err", log_err_obj(strerror(-r), NULL));
	log_error(f, "fswatcher error");
	return r;
}

static json_t *exit_fields(pid_t pid, int status, json_t *err)
{
	json_t *f = json_object();
	json_object_set_new(f, "err", err ? err : json_null());
	if (WIFSIGNALED(status)) {
		const char *abbrev = sigabbrev_np(WTERMSIG(status));
		char name[32];
		snprintf(name, sizeof(name), "SIG%s", abbrev ? abbrev : "UNKNOWN");
		json_object_set_new(f, "signal", json_string(name));
		json_object_set_new(f, "code", json_null());
	} else {
		json_object_set_new(f, "signal", json_null());
		json_object_set_new(f, "code", json_integer(WEXITSTATUS(status)));
	}
	json_object_set_new(f, "pid", json_integer(pid));
	return f;
}

static json_t *stderr_json(const struct fsw *w)
{
	struct buf b = BUF_INIT;
	unsigned n = w->stderr_n < FSW_STDERR_LINES ? w->stderr_n : FSW_STDERR_LINES;
	for (unsigned i = w->stderr_n - n; i < w->stderr_n; i++) {
		const char *s = w->stderr_ring[i % FSW_STDERR_LINES];
		(void)buf_adds(&b, s ? s : "");
		(void)buf_addc(&b, '\n');
	}
	json_t *v = trunc_str(b.data ? b.data : "", b.len);
	buf_done(&b);
	return v;
}

/* Every path back to not_yet_watching, unsent (the next child gets them
 * all); pending requests die with the child. */
static void reset_paths(struct fsw *w)
{
	actions_clear(w);
	sendq_clear(w);
	for (struct strmap_entry *e = w->not_yet.head; e != NULL; e = e->next) {
		struct fsw_path *p = e->value;
		p->ny = NY_UNSENT;
		p->watch_key = 0;
	}
	while (w->watching.head != NULL) {
		struct fsw_path *p = strmap_del(&w->watching, w->watching.head->key,
			w->watching.head->keylen);
		p->where = IN_NOT_YET;
		p->ny = NY_UNSENT;
		p->watch_key = 0;
		p->tries = 0;
		if (strmap_set(&w->not_yet, p->path, strlen(p->path), p, NULL) < 0) {
			log_error(json_pack("{s:s}", "path", p->path),
				"cannot re-watch %s: out of memory, dropping it", p->path);
			path_free(p);
		}
	}
}

static void child_event(struct child *c, void *arg, bool spawned, int status)
{
	struct fsw *w = arg;
	if (spawned) {
		w->broken = false;
		w->child_ready = false;
		for (struct strmap_entry *e = w->not_yet.head; e != NULL; e = e->next) {
			struct fsw_path *p = e->value;
			if (p->ny == NY_UNSENT || p->ny == NY_FAILED)
				send_watch(w, p);
		}
		return;
	}
	/* c->pid is already -1 here; the reaper saw this pid. */
	pid_t pid = c->reaper.rpid;
	close_pipes(w);
	if (w->stopping) {
		log_debug(exit_fields(pid, status, NULL), "fswatcher exited");
		return;
	}
	char msg[96];
	if (WIFSIGNALED(status))
		snprintf(msg, sizeof(msg), "fswatcher (pid %d) exited on signal %d", (int)pid,
			WTERMSIG(status));
	else
		snprintf(msg, sizeof(msg), "fswatcher (pid %d) exited with code %d", (int)pid,
			WEXITSTATUS(status));
	json_t *err = log_err_obj(msg, NULL);
	json_t *f = exit_fields(pid, status, NULL);
	json_object_set(err, "signal", json_object_get(f, "signal"));
	json_object_set(err, "code", json_object_get(f, "code"));
	json_object_set_new(err, "pid", json_integer(pid));
	json_object_set_new(err, "stderr", stderr_json(w));
	json_object_set_new(f, "err", err);
	log_error(f, "fswatcher exited");
	log_error(json_pack("{s:o}", "dump", fsw_dump(w)), "fswatcher .dump()");
	log_error(json_pack("{s:o}", "stderr", stderr_json(w)), "fswatcher stderr");
	reset_paths(w);
	/* child.c restarts it (at once, or after a backoff). */
}

/* ---- delays ---- */

static void push_delay(struct fsw *w, int64_t ms)
{
	w->delays[w->ndelays++ % FSW_DELAYS] = ms;
}

static json_t *delays_json(const struct fsw *w)
{
	json_t *o = json_object();
	unsigned have = w->ndelays < FSW_DELAYS ? w->ndelays : FSW_DELAYS;
	static const unsigned sizes[] = { 1, 10, 100, 1000 };
	for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
		if (have < sizes[s])
			break;
		double sum = 0;
		for (unsigned i = 0; i < sizes[s]; i++)
			sum += (double)w->delays[(w->ndelays - 1 - i) % FSW_DELAYS];
		char key[8];
		snprintf(key, sizeof(key), "%u", sizes[s]);
		(void)js_set(o, key, js_number(sum / sizes[s]));
	}
	return o;
}

/* ---- public ---- */

struct fsw *fsw_new(struct ev_loop *loop, const char *cmd, const struct fsw_callbacks *cbs)
{
	if (loop == NULL || !ev_is_default_loop(loop) || cmd == NULL) {
		errno = EINVAL;
		return NULL;
	}
	struct fsw *w = calloc(1, sizeof(*w));
	if (w == NULL || (w->cmd = strdup(cmd)) == NULL) {
		free(w);
		errno = ENOMEM;
		return NULL;
	}
	w->loop = loop;
	if (cbs != NULL)
		w->cbs = *cbs;
	w->stdin_fd = w->stdout_fd = w->stderr_fd = -1;
	ev_io_init(&w->in_io, on_stdin_writable, -1, EV_WRITE);
	ev_io_init(&w->out_io, on_stdout, -1, EV_READ);
	ev_io_init(&w->err_io, on_stderr, -1, EV_READ);
	w->in_io.data = w->out_io.data = w->err_io.data = w;
	ev_init(&w->retry_timer, on_retry_timer);
	w->retry_timer.repeat = FSW_RETRY_S;
	w->retry_timer.data = w;
	w->watching = (struct strmap)STRMAP_INIT;
	TAILQ_INIT(&w->sendq);
	w->not_yet = (struct strmap)STRMAP_INIT;
	child_init(&w->child, loop, "fswatcher", spawn_child, child_event, w);
	return w;
}

int fsw_start(struct fsw *w)
{
	if (w->started)
		return -EALREADY;
	w->started = true;
	w->stopping = false;
	w->ready_called = false;
	return child_start(&w->child);
}

static void forget_paths(struct strmap *m)
{
	for (struct strmap_entry *e = m->head; e != NULL; e = e->next)
		path_free(e->value);
	strmap_done(m);
	*m = (struct strmap)STRMAP_INIT;
}

void fsw_stop(struct fsw *w)
{
	if (!w->started)
		return;
	w->stopping = true;
	pid_t pid = w->child.pid;
	child_stop(&w->child);
	ev_timer_stop(w->loop, &w->retry_timer);
	if (pid > 0) {
		/* Reap here so the caller can free us right after. */
		close_fd(&w->stdin_fd);
		int status = 0;
		pid_t r = 0;
		for (int i = 0; i < FSW_STOP_WAIT_MS / 10; i++) {
			r = waitpid(pid, &status, WNOHANG);
			if (r != 0)
				break;
			struct timespec ts = { 0, 10 * 1000 * 1000 };
			(void)nanosleep(&ts, NULL);
		}
		if (r == 0) {
			(void)kill(pid, SIGKILL);
			do {
				r = waitpid(pid, &status, 0);
			} while (r < 0 && errno == EINTR);
		}
		ev_child_stop(w->loop, &w->child.reaper);
		w->child.pid = -1;
		w->child.state = CHILD_STOPPED;
		close_pipes(w);
		if (r == pid)
			log_debug(exit_fields(pid, status, NULL), "fswatcher exited");
	}
	actions_clear(w);
	sendq_clear(w);
	forget_paths(&w->watching);
	forget_paths(&w->not_yet);
	w->started = false;
}

void fsw_free(struct fsw *w)
{
	if (w == NULL)
		return;
	fsw_stop(w);
	ev_timer_stop(w->loop, &w->child.retry);
	ev_timer_stop(w->loop, &w->retry_timer);
	close_pipes(w);
	strmap_done(&w->watching);
	strmap_done(&w->not_yet);
	json_decref(w->watching_cache.json);
	json_decref(w->not_yet_cache.json);
	buf_done(&w->outq);
	buf_done(&w->line);
	buf_done(&w->errline);
	for (unsigned i = 0; i < FSW_STDERR_LINES; i++)
		free(w->stderr_ring[i]);
	free(w->cmd);
	free(w);
}

pid_t fsw_pid(const struct fsw *w)
{
	return w->child.pid > 0 ? w->child.pid : -1;
}

unsigned fsw_restarts(const struct fsw *w)
{
	return w->child.restarts;
}

size_t fsw_in_flight(const struct fsw *w)
{
	return w->nactions + w->nsendq;
}

static json_t *paths_json(struct paths_cache *c, const struct strmap *m, size_t max)
{
	if (c->json && c->gen == m->gen && c->max == max)
		return json_incref(c->json);
	json_t *a = json_array();
	size_t n = 0;
	for (const struct strmap_entry *e = m->head; e != NULL && n < max; e = e->next, n++)
		json_array_append_new(a, json_string(e->key));
	json_decref(c->json);
	c->json = json_incref(a);
	c->gen = m->gen;
	c->max = max;
	return a;
}

json_t *fsw_dump(struct fsw *w)
{
	return fsw_dump_bounded(w, SIZE_MAX);
}

json_t *fsw_dump_bounded(struct fsw *w, size_t max_paths)
{
	json_t *d = json_object();
	json_t *pending = json_object();
	size_t npending = w->nactions, listed = 0;
	for (const struct fsw_action *a = w->actions; a != NULL && listed < max_paths;
	     a = a->next, listed++) {
		char key[16];
		snprintf(key, sizeof(key), "%u", a->key);
		json_t *started = json_array();
		json_array_append_new(started, js_number((double)(a->started_ns / TU_NS_PER_SEC)));
		json_array_append_new(started, js_number((double)(a->started_ns % TU_NS_PER_SEC)));
		(void)js_set(pending, key, json_pack("{s:o,s:s}", "started", started, "cmd", a->cmd));
	}
	(void)js_set(d, "message_delays", delays_json(w));
	(void)js_set(d, "watching", paths_json(&w->watching_cache, &w->watching, max_paths));
	(void)js_set(d, "not_yet_watching", paths_json(&w->not_yet_cache, &w->not_yet, max_paths));
	(void)js_set(d, "pending_actions", pending);
	bool alive = w->child.pid > 0;
	(void)js_set(d, "watcher_pid", alive ? js_number(w->child.pid) : json_null());
	(void)js_set(d, "running", alive ? json_boolean(!w->stopping) : json_null());
	if (strmap_count(&w->watching) > max_paths || strmap_count(&w->not_yet) > max_paths ||
	    npending > max_paths) {
		/* Lists were cut: their full sizes, after the original's keys. */
		(void)js_set(d, "watching_count", json_integer((json_int_t)strmap_count(&w->watching)));
		(void)js_set(d, "not_yet_watching_count",
		             json_integer((json_int_t)strmap_count(&w->not_yet)));
		(void)js_set(d, "pending_actions_count", json_integer((json_int_t)npending));
	}
	return d;
}
