/*
 * queue.c - the serial task queue (spec/daemon.md §6).
 *
 * Owns task order, deduplication, task timeouts, pause/resume/fast-forward
 * and idle detection, and the queue's log lines (§12).  It knows nothing
 * of what tasks do.
 *
 * A task lives on exactly one of:
 *
 *   waiting ──dispatch──► current (pending → running) ──done──► freed
 *      ▲                        │ timeout
 *   paused (resume / ff)        ▼
 *                            abandoned ──late done──► freed
 *
 * Dispatch takes the head of `waiting` as soon as nothing is current, and
 * its work starts on the next loop turn (a zero timer).  Hence a task
 * pushed to an empty queue leaves `waiting` at once and an immediate
 * duplicate is not dropped, while bursts behind a running task collapse
 * (quirk §14.4).
 */
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <uuid/uuid.h>

#include "queue.h"
#include "json.h"
#include "log.h"
#include "statusfmt.h"
#include "timeutil.h"

enum task_state {
	TASK_WAITING,
	TASK_PAUSED,
	TASK_PENDING,     /* dispatched, work starts on the next loop turn */
	TASK_RUNNING,
	TASK_ABANDONED,   /* timed out; its work may still call done */
};

struct queue_task {
	TAILQ_ENTRY(queue_task) link;
	struct queue *q;          /* NULL once the queue is gone */
	enum task_state state;
	char id[37];
	char *description;
	uint64_t timeout_ms;
	uint64_t created_ns, started_ns, finished_ns;
	queue_work_fn work;
	void *arg;
	void (*arg_free)(void *);
	json_t *logger;           /* {"task":{…}} from the start on */
	ev_timer timeout_timer;
};

TAILQ_HEAD(task_list, queue_task);

/* A pause or fast-forward waiting for the queue to drain. */
struct waiter {
	bool active;
	queue_wait_cb cb;         /* may be NULL: nobody to tell */
	void *arg;
	uint64_t timeout_ms;
	ev_timer timer;
};

struct queue {
	struct ev_loop *loop;
	uint64_t default_timeout_ms;
	uint64_t idle_ms;
	struct task_list waiting;
	struct task_list paused_tasks;
	struct task_list abandoned;
	struct queue_task *current;   /* pending or running; NULL if none */
	ev_timer start_timer;         /* starts `current` next loop turn */
	ev_timer idle_timer;
	bool idle;
	bool paused;
	uint64_t paused_at_ns;
	struct waiter pause_wait;
	struct waiter ff_wait;
	void (*on_idle)(void *arg);
	void *on_idle_arg;
	queue_end_fn on_end;
	void *on_end_arg;
};

#define container_of(ptr, type, member) \
	((type *)(void *)((char *)(ptr) - offsetof(type, member)))

static void dispatch(struct queue *q);

/* process.hrtime()-style [seconds, nanoseconds] of a monotonic time. */
static json_t *
hrtime_array(uint64_t ns)
{
	return json_pack("[oo]", js_number((double)(ns / TU_NS_PER_SEC)),
	    js_number((double)(ns % TU_NS_PER_SEC)));
}

static void
task_free(struct queue_task *t)
{
	if (t->arg_free != NULL)
		t->arg_free(t->arg);
	json_decref(t->logger);
	free(t->description);
	free(t);
}

/* The task as the original serialises it in `opts`:
 * {"description","timeout","id","created_at":[s,ns]}; a task without a
 * timeout has an undefined one, which log lines leave out. */
static json_t *
task_opts(const struct queue_task *t)
{
	return json_pack("{s:s,s:o,s:s,s:o}", "description", t->description,
	    "timeout", t->timeout_ms > 0 ? js_number((double)t->timeout_ms) :
	    js_undefined(), "id", t->id,
	    "created_at", hrtime_array(t->created_ns));
}

static json_t *
opts_fields(const struct queue_task *t)
{
	return json_pack("{s:o}", "opts", task_opts(t));
}

static void
idle_timer_stop(struct queue *q, bool log)
{
	if (ev_is_active(&q->idle_timer)) {
		if (log)
			log_debug(NULL, "clearing idleTimer");
		ev_timer_stop(q->loop, &q->idle_timer);
	}
	q->idle = false;
}

/* Finish a waiter: clear it first, so its callback may pause, resume or
 * fast-forward again. */
static void
waiter_finish(struct queue *q, struct waiter *w, const char *err)
{
	queue_wait_cb cb = w->cb;
	void *arg = w->arg;

	if (!w->active)
		return;
	ev_timer_stop(q->loop, &w->timer);
	w->active = false;
	w->cb = NULL;
	w->arg = NULL;
	if (cb != NULL)
		cb(arg, err);
}

static void
waiter_start(struct queue *q, struct waiter *w, uint64_t timeout_ms,
    queue_wait_cb cb, void *arg)
{
	w->active = true;
	w->cb = cb;
	w->arg = arg;
	w->timeout_ms = timeout_ms;
	if (timeout_ms > 0) {
		ev_timer_set(&w->timer, (double)timeout_ms / 1000.0, 0.);
		ev_timer_start(q->loop, &w->timer);
	}
}

/* Nothing runs and nothing waits: complete a pause / fast-forward, or
 * (running queue) start counting towards idle. */
static void
drained(struct queue *q)
{
	if (q->paused) {
		if (q->pause_wait.active) {
			log_debug(NULL, "queue paused");
			waiter_finish(q, &q->pause_wait, NULL);
		}
		/* the pause callback may have resumed and refilled the queue */
		if (q->paused && q->current == NULL)
			waiter_finish(q, &q->ff_wait, NULL);
		return;
	}
	ev_timer_stop(q->loop, &q->idle_timer);
	ev_timer_set(&q->idle_timer, (double)q->idle_ms / 1000.0, 0.);
	ev_timer_start(q->loop, &q->idle_timer);
}

/* The current task is over (done or abandoned): run the next one. */
static void
advance(struct queue *q)
{
	q->current = NULL;
	dispatch(q);
	if (q->current == NULL)
		drained(q);
}

static void
dispatch(struct queue *q)
{
	struct queue_task *t = TAILQ_FIRST(&q->waiting);

	if (q->current != NULL || t == NULL)
		return;
	TAILQ_REMOVE(&q->waiting, t, link);
	t->state = TASK_PENDING;
	q->current = t;
	ev_timer_set(&q->start_timer, 0., 0.);
	ev_timer_start(q->loop, &q->start_timer);
}

static int
task_logger_set(struct queue_task *t, const char *key, uint64_t ns)
{
	json_t *task = json_object_get(t->logger, "task");

	if (task == NULL)
		return -ENOMEM;
	return json_object_set_new(task, key, hrtime_array(ns)) < 0 ?
	    -ENOMEM : 0;
}

static void
start_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct queue *q = container_of(w, struct queue, start_timer);
	struct queue_task *t = q->current;

	if (t == NULL || t->state != TASK_PENDING)
		return;
	t->state = TASK_RUNNING;
	t->started_ns = tu_mono_ns();
	/* the child logger's task object grows finished_at later; without
	 * memory for it, log lines simply lack the task field */
	t->logger = json_pack("{s:o}", "task", task_opts(t));
	if (t->logger != NULL && task_logger_set(t, "started_at",
	    t->started_ns) < 0) {
		json_decref(t->logger);
		t->logger = NULL;
	}
	if (t->timeout_ms > 0) {
		ev_timer_set(&t->timeout_timer, (double)t->timeout_ms / 1000.0,
		    0.);
		ev_timer_start(loop, &t->timeout_timer);
	}
	log_emit(LOG_DEBUG, t->logger, NULL, "starting task");
	/* may call queue_task_done() and free t before returning */
	t->work(t, t->arg);
}

static void
task_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct queue_task *t = container_of(w, struct queue_task,
	    timeout_timer);
	struct queue *q = t->q;
	json_t *fields;

	fields = log_err_fields("timeout exceeded", NULL);
	if (fields != NULL)
		(void)json_object_set_new(fields, "timeout",
		    js_number((double)t->timeout_ms));
	log_emit(LOG_FATAL, t->logger, fields, "task took longer than %" PRIu64
	    "ms", t->timeout_ms);
	log_debug(log_err_fields("timeout exceeded", NULL),
	    "ignoring queue error: timeout exceeded");
	/* abandon it: the queue moves on, its work may still end later */
	t->finished_ns = tu_mono_ns();
	(void)task_logger_set(t, "finished_at", t->finished_ns);
	t->state = TASK_ABANDONED;
	TAILQ_INSERT_TAIL(&q->abandoned, t, link);
	if (q->on_end != NULL)
		q->on_end(q->on_end_arg, t->finished_ns - t->started_ns, true, true);
	advance(q);
}

static void
idle_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct queue *q = container_of(w, struct queue, idle_timer);

	log_debug(NULL, "queue is idle");
	q->idle = true;
	if (q->on_idle != NULL)
		q->on_idle(q->on_idle_arg);
}

static void
pause_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct queue *q = container_of(w, struct queue, pause_wait.timer);
	queue_wait_cb cb = q->pause_wait.cb;
	void *arg = q->pause_wait.arg;
	uint64_t ms = q->pause_wait.timeout_ms;
	json_t *fields = log_err_fields("pause timeout exceeded", NULL);

	if (fields != NULL)
		(void)json_object_set_new(fields, "timeout",
		    js_number((double)ms));
	log_fatal(fields, "pause took longer than %" PRIu64 "ms", ms);
	/* resume first (it must not report to this waiter), then report */
	q->pause_wait.active = false;
	q->pause_wait.cb = NULL;
	(void)queue_resume(q);
	if (cb != NULL)
		cb(arg, "pause timeout exceeded");
}

static void
ff_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct queue *q = container_of(w, struct queue, ff_wait.timer);
	uint64_t ms = q->ff_wait.timeout_ms;
	json_t *fields = log_err_fields("fast-forward timeout exceeded", NULL);

	if (fields != NULL)
		(void)json_object_set_new(fields, "timeout",
		    js_number((double)ms));
	log_error(fields, "fast-forward took longer than %" PRIu64 "ms", ms);
	waiter_finish(q, &q->ff_wait, "fast-forward timeout exceeded");
}

struct queue *
queue_new(struct ev_loop *loop, uint64_t default_timeout_ms, uint64_t idle_ms)
{
	struct queue *q = calloc(1, sizeof(*q));

	if (q == NULL)
		return NULL;
	q->loop = loop;
	q->default_timeout_ms = default_timeout_ms;
	q->idle_ms = idle_ms;
	TAILQ_INIT(&q->waiting);
	TAILQ_INIT(&q->paused_tasks);
	TAILQ_INIT(&q->abandoned);
	ev_timer_init(&q->start_timer, start_cb, 0., 0.);
	ev_timer_init(&q->idle_timer, idle_cb, 0., 0.);
	ev_timer_init(&q->pause_wait.timer, pause_timeout_cb, 0., 0.);
	ev_timer_init(&q->ff_wait.timer, ff_timeout_cb, 0., 0.);
	return q;
}

static void
free_list(struct task_list *list)
{
	struct queue_task *t;

	while ((t = TAILQ_FIRST(list)) != NULL) {
		TAILQ_REMOVE(list, t, link);
		task_free(t);
	}
}

void
queue_free(struct queue *q)
{
	struct queue_task *t;

	if (q == NULL)
		return;
	ev_timer_stop(q->loop, &q->start_timer);
	ev_timer_stop(q->loop, &q->idle_timer);
	ev_timer_stop(q->loop, &q->pause_wait.timer);
	ev_timer_stop(q->loop, &q->ff_wait.timer);
	free_list(&q->waiting);
	free_list(&q->paused_tasks);
	/* tasks whose work is out are orphaned: their done() frees them */
	while ((t = TAILQ_FIRST(&q->abandoned)) != NULL) {
		TAILQ_REMOVE(&q->abandoned, t, link);
		t->q = NULL;
	}
	if ((t = q->current) != NULL) {
		if (t->state == TASK_PENDING) {
			task_free(t);
		} else {
			ev_timer_stop(q->loop, &t->timeout_timer);
			t->q = NULL;
		}
	}
	free(q);
}

static struct queue_task *
find_description(struct task_list *list, const char *description)
{
	struct queue_task *t;

	TAILQ_FOREACH(t, list, link)
		if (strcmp(t->description, description) == 0)
			return t;
	return NULL;
}

int
queue_push(struct queue *q, const char *description, queue_work_fn work,
    void *arg, void (*arg_free)(void *))
{
	struct queue_task *t = calloc(1, sizeof(*t));
	uuid_t uu;
	size_t len;
	bool dup;

	/* descriptions may quote file names: keep them valid UTF-8 so they
	 * can go into JSON as they are */
	if (t == NULL || (t->description = js_utf8_sanitize(description,
	    strlen(description), &len)) == NULL) {
		free(t);
		if (arg_free != NULL)
			arg_free(arg);
		return -ENOMEM;
	}
	t->q = q;
	t->work = work;
	t->arg = arg;
	t->arg_free = arg_free;
	t->timeout_ms = q->default_timeout_ms;
	t->created_ns = tu_mono_ns();
	uuid_generate_random(uu);
	uuid_unparse_lower(uu, t->id);
	ev_timer_init(&t->timeout_timer, task_timeout_cb, 0., 0.);

	/* the running task is never compared: only waiting (or paused) ones */
	dup = (q->paused &&
	    find_description(&q->paused_tasks, t->description) != NULL) ||
	    find_description(&q->waiting, t->description) != NULL;
	if (dup) {
		log_debug(opts_fields(t), "duplicate task found - discarding");
		task_free(t);
		return 0;
	}
	if (q->paused) {
		t->state = TASK_PAUSED;
		TAILQ_INSERT_TAIL(&q->paused_tasks, t, link);
		log_debug(opts_fields(t),
		    "no duplicate task found - pushing to paused queue");
		return 1;
	}
	log_debug(opts_fields(t),
	    "no duplicate task found - pushing to vasync queue");
	idle_timer_stop(q, true);
	t->state = TASK_WAITING;
	TAILQ_INSERT_TAIL(&q->waiting, t, link);
	dispatch(q);
	return 1;
}

void
queue_task_done(struct queue_task *t, const char *errmsg)
{
	struct queue *q = t->q;
	char pretty[96];
	uint64_t delta_ns;
	json_t *fields;

	if (q == NULL || t->state == TASK_ABANDONED) {
		/* its late completion: the queue moved on long ago */
		if (q != NULL)
			TAILQ_REMOVE(&q->abandoned, t, link);
		task_free(t);
		return;
	}
	t->finished_ns = tu_mono_ns();
	(void)task_logger_set(t, "finished_at", t->finished_ns);
	delta_ns = t->finished_ns - t->started_ns;
	(void)tu_pretty_delta(delta_ns, pretty);
	fields = json_pack("{s:o}", "delta", hrtime_array(delta_ns));
	log_emit(LOG_DEBUG, t->logger, fields, "finished task in %s", pretty);
	ev_timer_stop(q->loop, &t->timeout_timer);
	if (errmsg != NULL) {
		log_emit(LOG_ERROR, t->logger, log_err_fields(errmsg, NULL),
		    "task failed: %s", errmsg);
		log_debug(log_err_fields(errmsg, NULL),
		    "ignoring queue error: %s", errmsg);
	}
	if (q->on_end != NULL)
		q->on_end(q->on_end_arg, delta_ns, errmsg != NULL, false);
	task_free(t);
	advance(q);
}

void
queue_on_task_end(struct queue *q, queue_end_fn cb, void *arg)
{
	q->on_end = cb;
	q->on_end_arg = arg;
}

json_t *
queue_task_logger(struct queue_task *t)
{
	return t->logger;
}

const char *
queue_task_description(const struct queue_task *t)
{
	return t->description;
}

int
queue_pause(struct queue *q, uint64_t timeout_ms, queue_wait_cb cb,
    void *arg)
{
	if (q->paused)
		return -EALREADY;
	q->paused = true;
	q->paused_at_ns = tu_mono_ns();
	idle_timer_stop(q, false);
	if (q->current == NULL) {
		log_debug(NULL, "queue paused");
		if (cb != NULL)
			cb(arg, NULL);
		return 0;
	}
	waiter_start(q, &q->pause_wait, timeout_ms, cb, arg);
	return 0;
}

int
queue_resume(struct queue *q)
{
	struct queue_task *t;
	size_t n = 0;

	if (!q->paused)
		return -EINVAL;
	q->paused = false;
	TAILQ_FOREACH(t, &q->paused_tasks, link)
		n++;
	log_debug(NULL, "queue resumed - enqueueing %zu tasks", n);
	if (n == 0) {
		/* with a task still running (a pause that timed out), idle
		 * comes from the drain instead */
		if (q->current == NULL) {
			log_debug(NULL, "queue is idle");
			q->idle = true;
		}
	} else {
		while ((t = TAILQ_FIRST(&q->paused_tasks)) != NULL) {
			TAILQ_REMOVE(&q->paused_tasks, t, link);
			t->state = TASK_WAITING;
			TAILQ_INSERT_TAIL(&q->waiting, t, link);
		}
		dispatch(q);
	}
	waiter_finish(q, &q->pause_wait, "queue resumed");
	waiter_finish(q, &q->ff_wait, "queue resumed");
	return 0;
}

int
queue_fast_forward(struct queue *q, uint64_t until_ns, uint64_t timeout_ms,
    queue_wait_cb cb, void *arg)
{
	struct queue_task *t;
	size_t n = 0;

	if (!q->paused)
		return -EINVAL;
	if (q->ff_wait.active)
		return -EBUSY;
	while ((t = TAILQ_FIRST(&q->paused_tasks)) != NULL &&
	    t->created_ns <= until_ns) {
		TAILQ_REMOVE(&q->paused_tasks, t, link);
		t->state = TASK_WAITING;
		TAILQ_INSERT_TAIL(&q->waiting, t, link);
		n++;
	}
	log_debug(NULL, "fast-forward pushed %zu tasks into queue", n);
	if (n == 0) {
		if (cb != NULL)
			cb(arg, NULL);
		return 0;
	}
	dispatch(q);
	waiter_start(q, &q->ff_wait, timeout_ms, cb, arg);
	return 0;
}

bool
queue_is_idle(const struct queue *q)
{
	return q->idle;
}

bool
queue_is_paused(const struct queue *q)
{
	return q->paused;
}

void
queue_on_idle(struct queue *q, void (*cb)(void *arg), void *arg)
{
	q->on_idle = cb;
	q->on_idle_arg = arg;
}

static json_t *
ns_or_null(uint64_t ns, bool set)
{
	return set ? json_integer((json_int_t)ns) : json_null();
}

static int
append_task(json_t *list, const struct queue_task *t, bool with_id,
    bool with_started)
{
	json_t *o = json_object();

	if (o == NULL)
		return -ENOMEM;
	if ((with_id && json_object_set_new(o, "id", json_string(t->id)) < 0) ||
	    json_object_set_new(o, "description",
	    json_string(t->description)) < 0 ||
	    json_object_set_new(o, "created_ns",
	    json_integer((json_int_t)t->created_ns)) < 0 ||
	    (with_started && json_object_set_new(o, "started_ns",
	    ns_or_null(t->started_ns, t->state == TASK_RUNNING)) < 0)) {
		json_decref(o);
		return -ENOMEM;
	}
	return json_array_append_new(list, o) < 0 ? -ENOMEM : 0;
}

json_t *
queue_status_facts(const struct queue *q)
{
	json_t *f, *pending, *queued, *paused;
	const struct queue_task *t;

	f = json_pack("{s:b,s:b,s:o,s:[],s:[],s:[]}", "paused", q->paused,
	    "idle", q->idle, "paused_at_ns",
	    ns_or_null(q->paused_at_ns, q->paused), "pending", "queued",
	    "paused_queue");
	if (f == NULL)
		return NULL;
	pending = json_object_get(f, "pending");
	queued = json_object_get(f, "queued");
	paused = json_object_get(f, "paused_queue");
	if (q->current != NULL &&
	    append_task(pending, q->current, true, true) < 0)
		goto fail;
	TAILQ_FOREACH(t, &q->waiting, link)
		if (append_task(queued, t, false, false) < 0)
			goto fail;
	TAILQ_FOREACH(t, &q->paused_tasks, link)
		if (append_task(paused, t, true, false) < 0)
			goto fail;
	return f;
fail:
	json_decref(f);
	return NULL;
}

json_t *
queue_dump(const struct queue *q, uint64_t now_ns)
{
	json_t *facts = queue_status_facts(q), *dump;

	if (facts == NULL)
		return NULL;
	dump = statusfmt_queue(facts, now_ns);
	json_decref(facts);
	return dump;
}
