/*
 * test_queue.c - the serial task queue on a real libev loop.
 *
 * Every scenario runs the loop until a condition holds, bounded by a
 * deadline; logs go to a temporary file and are read back as bunyan
 * records for the assertions on the spec's messages.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "../../supervisor/queue.h"
#include "json.h"
#include "log.h"
#include "timeutil.h"

#define MAX_TASKS 16
#define DEADLINE_S 5.0

struct tctx {
	struct ev_loop *loop;
	struct queue *q;
	char log_path[64];
	char started[MAX_TASKS][64];     /* descriptions, in start order */
	int nstarted;
	struct queue_task *held[MAX_TASKS];   /* work not finished yet */
	int nheld;
	int freed;                        /* arg_free calls */
	int idle_count;
	int waits_done;
	char wait_err[64];
};

/* Per-task argument: how the work behaves. */
struct warg {
	struct tctx *c;
	bool hold;            /* keep the task running until the test ends it */
	const char *fail;     /* report this error */
};

static void
warg_free(void *p)
{
	struct warg *w = p;

	w->c->freed++;
	free(w);
}

static void
work(struct queue_task *t, void *arg)
{
	struct warg *w = arg;
	struct tctx *c = w->c;

	assert_true(c->nstarted < MAX_TASKS);
	snprintf(c->started[c->nstarted++], sizeof(c->started[0]), "%s",
	    queue_task_description(t));
	if (w->hold) {
		c->held[c->nheld++] = t;
		return;
	}
	queue_task_done(t, w->fail);
}

static int
push(struct tctx *c, const char *description, bool hold, const char *fail)
{
	struct warg *w = calloc(1, sizeof(*w));

	assert_non_null(w);
	w->c = c;
	w->hold = hold;
	w->fail = fail;
	return queue_push(c->q, description, work, w, warg_free);
}

/* Finish the oldest held task. */
static void
finish_held(struct tctx *c, const char *err)
{
	struct queue_task *t;

	assert_true(c->nheld > 0);
	t = c->held[0];
	memmove(&c->held[0], &c->held[1], (size_t)(c->nheld - 1) *
	    sizeof(c->held[0]));
	c->nheld--;
	queue_task_done(t, err);
}

static void
on_idle(void *arg)
{
	((struct tctx *)arg)->idle_count++;
}

static void
on_wait(void *arg, const char *err)
{
	struct tctx *c = arg;

	c->waits_done++;
	snprintf(c->wait_err, sizeof(c->wait_err), "%s", err ? err : "");
}

static void
deadline_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	*(bool *)w->data = true;
}

/* Run the loop until *counter >= want, failing after the deadline. */
static void
run_until(struct tctx *c, const int *counter, int want)
{
	bool expired = false;
	ev_timer deadline;
	int i;

	ev_timer_init(&deadline, deadline_cb, DEADLINE_S, 0.);
	deadline.data = &expired;
	ev_timer_start(c->loop, &deadline);
	/* each turn either makes progress or waits for the deadline */
	for (i = 0; i < 100000 && *counter < want && !expired; i++)
		ev_run(c->loop, EVRUN_ONCE);
	ev_timer_stop(c->loop, &deadline);
	if (*counter < want)
		fail_msg("condition not reached before the deadline (%d < %d)",
		    *counter, want);
}

/* Run pending zero-delay work (a dispatch) without waiting. */
static void
run_nowait(struct tctx *c)
{
	int i;

	for (i = 0; i < 10; i++)
		ev_run(c->loop, EVRUN_NOWAIT);
}

static struct tctx *
ctx_new(uint64_t timeout_ms, uint64_t idle_ms)
{
	struct tctx *c = calloc(1, sizeof(*c));
	int fd;

	assert_non_null(c);
	snprintf(c->log_path, sizeof(c->log_path), "/tmp/test_queue.XXXXXX");
	fd = mkstemp(c->log_path);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(log_init("vminfod", c->log_path, LOG_DEBUG), 0);
	c->loop = ev_loop_new(EVFLAG_AUTO);
	assert_non_null(c->loop);
	c->q = queue_new(c->loop, timeout_ms, idle_ms);
	assert_non_null(c->q);
	queue_on_idle(c->q, on_idle, c);
	return c;
}

static void
ctx_free(struct tctx *c)
{
	queue_free(c->q);
	/* tasks still held were orphaned by queue_free: done frees them */
	while (c->nheld > 0)
		finish_held(c, NULL);
	ev_loop_destroy(c->loop);
	log_done();
	unlink(c->log_path);
	free(c);
}

/* The log records written so far, as a JSON array. */
static json_t *
read_logs(struct tctx *c)
{
	FILE *f = fopen(c->log_path, "re");
	json_t *all = json_array(), *rec;
	char line[65536];

	assert_non_null(f);
	while (fgets(line, sizeof(line), f) != NULL) {
		rec = json_loads(line, 0, NULL);
		if (rec == NULL)
			fail_msg("log line is not JSON: %s", line);
		json_array_append_new(all, rec);
	}
	fclose(f);
	return all;
}

/* Number of records with this exact msg. */
static int
count_logs(struct tctx *c, const char *msg)
{
	json_t *all = read_logs(c), *rec;
	size_t i;
	int n = 0;

	json_array_foreach(all, i, rec)
		if (strcmp(json_string_value(json_object_get(rec, "msg")), msg)
		    == 0)
			n++;
	json_decref(all);
	return n;
}

/* The nth (0-based) record with this msg, new reference. */
static json_t *
find_log(struct tctx *c, const char *msg, int nth)
{
	json_t *all = read_logs(c), *rec, *found = NULL;
	size_t i;

	json_array_foreach(all, i, rec)
		if (strcmp(json_string_value(json_object_get(rec, "msg")), msg)
		    == 0 && nth-- == 0) {
			found = json_incref(rec);
			break;
		}
	json_decref(all);
	if (found == NULL)
		fail_msg("no log record \"%s\"", msg);
	return found;
}

/* Assert the member names of obj, in order, as "a,b,c". */
static void
assert_keys(const json_t *obj, const char *want)
{
	struct buf got = BUF_INIT;
	const char **keys;
	long n, i;

	assert_true(json_is_object(obj));
	n = js_object_keys(obj, &keys);
	assert_true(n >= 0);
	for (i = 0; i < n; i++) {
		if (i > 0)
			buf_addc(&got, ',');
		buf_adds(&got, keys[i]);
	}
	buf_add(&got, "", 0);
	assert_string_equal(got.data, want);
	free(keys);
	buf_done(&got);
}

static void
assert_started(struct tctx *c, const char *want)
{
	struct buf got = BUF_INIT;
	int i;

	for (i = 0; i < c->nstarted; i++) {
		if (i > 0)
			buf_addc(&got, ',');
		buf_adds(&got, c->started[i]);
	}
	buf_add(&got, "", 0);
	assert_string_equal(got.data, want);
	buf_done(&got);
}

static void
test_queue_runs_tasks_one_at_a_time_in_order(void **state)
{
	struct tctx *c = ctx_new(60000, 20);
	json_t *rec;

	assert_int_equal(push(c, "A", true, NULL), 1);
	assert_int_equal(push(c, "B", false, NULL), 1);
	assert_int_equal(push(c, "C", false, NULL), 1);
	run_until(c, &c->nstarted, 1);
	run_nowait(c);
	/* B must not start while A runs */
	assert_started(c, "A");
	finish_held(c, NULL);
	run_until(c, &c->idle_count, 1);
	assert_started(c, "A,B,C");
	assert_int_equal(c->freed, 3);
	assert_true(queue_is_idle(c->q));
	assert_int_equal(count_logs(c, "starting task"), 3);

	/* task lines carry the task child fields before "level" */
	rec = find_log(c, "starting task", 1);
	assert_keys(rec, "name,hostname,pid,task,level,msg,time,v");
	assert_keys(json_object_get(rec, "task"),
	    "description,timeout,id,created_at,started_at");
	assert_string_equal(json_string_value(json_object_get(
	    json_object_get(rec, "task"), "description")), "B");
	json_decref(rec);
	ctx_free(c);
}

static void
test_queue_logs_push_with_opts(void **state)
{
	struct tctx *c = ctx_new(60000, 20);
	json_t *rec, *opts;
	const char *id;
	size_t i;

	assert_int_equal(push(c, "handle zone event - zonename: z1", false,
	    NULL), 1);
	rec = find_log(c, "no duplicate task found - pushing to vasync queue",
	    0);
	assert_int_equal(json_integer_value(json_object_get(rec, "level")),
	    20);
	opts = json_object_get(rec, "opts");
	assert_keys(opts, "description,timeout,id,created_at");
	assert_string_equal(json_string_value(json_object_get(opts,
	    "description")), "handle zone event - zonename: z1");
	assert_int_equal(json_integer_value(json_object_get(opts, "timeout")),
	    60000);
	assert_int_equal(json_array_size(json_object_get(opts, "created_at")),
	    2);
	/* a lowercase random (v4) UUID */
	id = json_string_value(json_object_get(opts, "id"));
	assert_int_equal(strlen(id), 36);
	assert_int_equal(id[14], '4');
	for (i = 0; i < 36; i++)
		assert_true(strchr("0123456789abcdef-", id[i]) != NULL);
	json_decref(rec);
	run_until(c, &c->idle_count, 1);
	ctx_free(c);
}

static void
test_queue_merges_duplicates_behind_running_task(void **state)
{
	struct tctx *c = ctx_new(60000, 20);

	assert_int_equal(push(c, "A", true, NULL), 1);
	assert_int_equal(push(c, "B", false, NULL), 1);
	assert_int_equal(push(c, "B", false, NULL), 0);
	assert_int_equal(c->freed, 1);   /* the discarded one's arg */
	assert_int_equal(count_logs(c, "duplicate task found - discarding"), 1);
	run_until(c, &c->nstarted, 1);
	/* the running task is not compared: another A waits behind it */
	assert_int_equal(push(c, "A", false, NULL), 1);
	assert_int_equal(push(c, "B", false, NULL), 0);
	finish_held(c, NULL);
	run_until(c, &c->idle_count, 1);
	assert_started(c, "A,B,A");
	assert_int_equal(c->freed, 5);
	ctx_free(c);
}

static void
test_queue_keeps_immediate_duplicate_of_dispatched_task(void **state)
{
	struct tctx *c = ctx_new(60000, 20);

	/* the first A leaves the waiting list at once (quirk §14.4) */
	assert_int_equal(push(c, "A", false, NULL), 1);
	assert_int_equal(push(c, "A", false, NULL), 1);
	assert_int_equal(push(c, "A", false, NULL), 0);
	run_until(c, &c->idle_count, 1);
	assert_started(c, "A,A");
	ctx_free(c);
}

static void
test_queue_logs_finish_with_delta_and_failure(void **state)
{
	struct tctx *c = ctx_new(60000, 20);
	json_t *rec, *delta;
	char want[96];

	assert_int_equal(push(c, "bad", false, "boom"), 1);
	run_until(c, &c->idle_count, 1);

	rec = find_log(c, "task failed: boom", 0);
	assert_int_equal(json_integer_value(json_object_get(rec, "level")), 50);
	assert_keys(rec, "name,hostname,pid,task,level,err,msg,time,v");
	assert_string_equal(json_string_value(json_object_get(
	    json_object_get(rec, "err"), "message")), "boom");
	assert_keys(json_object_get(rec, "task"),
	    "description,timeout,id,created_at,started_at,finished_at");
	json_decref(rec);
	rec = find_log(c, "ignoring queue error: boom", 0);
	assert_null(json_object_get(rec, "task"));
	assert_int_equal(json_integer_value(json_object_get(rec, "level")), 20);
	json_decref(rec);

	/* "finished task in <pretty>" with delta [s,ns] matching the text */
	{
		json_t *all = read_logs(c), *r;
		size_t i;

		rec = NULL;
		json_array_foreach(all, i, r)
			if (strncmp(json_string_value(json_object_get(r,
			    "msg")), "finished task in ", 17) == 0)
				rec = json_incref(r);
		json_decref(all);
	}
	assert_non_null(rec);
	delta = json_object_get(rec, "delta");
	assert_int_equal(json_array_size(delta), 2);
	tu_pretty_delta((uint64_t)json_integer_value(json_array_get(delta, 0)) *
	    TU_NS_PER_SEC + (uint64_t)json_integer_value(json_array_get(delta,
	    1)), want);
	assert_string_equal(json_string_value(json_object_get(rec, "msg")) + 17,
	    want);
	json_decref(rec);
	ctx_free(c);
}

static void
test_queue_becomes_idle_after_idle_ms(void **state)
{
	struct tctx *c = ctx_new(60000, 20);
	uint64_t t0;

	assert_false(queue_is_idle(c->q));
	assert_int_equal(push(c, "A", false, NULL), 1);
	run_until(c, &c->nstarted, 1);
	t0 = tu_mono_ns();
	/* the idle timer is armed: a push clears it */
	assert_false(queue_is_idle(c->q));
	assert_int_equal(push(c, "B", false, NULL), 1);
	assert_int_equal(count_logs(c, "clearing idleTimer"), 1);
	run_until(c, &c->idle_count, 1);
	assert_true(tu_mono_ns() - t0 >= 15 * TU_NS_PER_MS);
	assert_true(queue_is_idle(c->q));
	assert_int_equal(count_logs(c, "queue is idle"), 1);
	/* a push makes it busy again; no timer was armed any more */
	assert_int_equal(push(c, "C", false, NULL), 1);
	assert_false(queue_is_idle(c->q));
	assert_int_equal(count_logs(c, "clearing idleTimer"), 1);
	run_until(c, &c->idle_count, 2);
	assert_started(c, "A,B,C");
	ctx_free(c);
}

static void
test_queue_pause_on_empty_queue_completes_at_once(void **state)
{
	struct tctx *c = ctx_new(60000, 20);

	assert_int_equal(queue_pause(c->q, 1000, on_wait, c), 0);
	assert_int_equal(c->waits_done, 1);
	assert_string_equal(c->wait_err, "");
	assert_true(queue_is_paused(c->q));
	assert_int_equal(count_logs(c, "queue paused"), 1);
	assert_int_equal(queue_pause(c->q, 1000, on_wait, c), -EALREADY);
	/* a resume that finds nothing is idle at once, without the signal */
	assert_int_equal(queue_resume(c->q), 0);
	assert_true(queue_is_idle(c->q));
	assert_int_equal(c->idle_count, 0);
	assert_int_equal(count_logs(c, "queue resumed - enqueueing 0 tasks"),
	    1);
	assert_int_equal(count_logs(c, "queue is idle"), 1);
	assert_int_equal(queue_resume(c->q), -EINVAL);
	ctx_free(c);
}

static void
test_queue_pause_with_running_task_waits_for_drain(void **state)
{
	struct tctx *c = ctx_new(60000, 20);

	assert_int_equal(push(c, "A", true, NULL), 1);
	assert_int_equal(push(c, "B", false, NULL), 1);
	run_until(c, &c->nstarted, 1);
	assert_int_equal(queue_pause(c->q, 5000, on_wait, c), 0);
	assert_int_equal(c->waits_done, 0);
	assert_false(queue_is_idle(c->q));

	/* new tasks go to the paused list, deduplicated there */
	assert_int_equal(push(c, "C", false, NULL), 1);
	assert_int_equal(count_logs(c,
	    "no duplicate task found - pushing to paused queue"), 1);
	assert_int_equal(push(c, "C", false, NULL), 0);
	/* a task equal to a waiting one is a duplicate too */
	assert_int_equal(push(c, "B", false, NULL), 0);

	finish_held(c, NULL);
	/* B was already waiting: it still runs before the pause completes */
	run_until(c, &c->waits_done, 1);
	assert_string_equal(c->wait_err, "");
	assert_started(c, "A,B");
	assert_int_equal(count_logs(c, "queue paused"), 1);
	run_nowait(c);
	assert_started(c, "A,B");
	assert_false(queue_is_idle(c->q));

	assert_int_equal(queue_resume(c->q), 0);
	assert_int_equal(count_logs(c, "queue resumed - enqueueing 1 tasks"),
	    1);
	run_until(c, &c->idle_count, 1);
	assert_started(c, "A,B,C");
	ctx_free(c);
}

static void
test_queue_resume_moves_paused_tasks_in_order(void **state)
{
	struct tctx *c = ctx_new(60000, 20);

	assert_int_equal(queue_pause(c->q, 0, NULL, NULL), 0);
	assert_int_equal(push(c, "X", false, NULL), 1);
	assert_int_equal(push(c, "Y", false, NULL), 1);
	assert_int_equal(push(c, "Z", false, NULL), 1);
	assert_int_equal(push(c, "Y", false, NULL), 0);
	run_nowait(c);
	assert_int_equal(c->nstarted, 0);
	assert_int_equal(queue_resume(c->q), 0);
	assert_int_equal(count_logs(c, "queue resumed - enqueueing 3 tasks"),
	    1);
	run_until(c, &c->idle_count, 1);
	assert_started(c, "X,Y,Z");
	ctx_free(c);
}

static void
test_queue_fast_forward_moves_only_tasks_created_until_time(void **state)
{
	struct tctx *c = ctx_new(60000, 20);
	json_t *facts;
	uint64_t cut;
	int spins;

	assert_int_equal(queue_fast_forward(c->q, tu_mono_ns(), 0, on_wait, c),
	    -EINVAL);
	assert_int_equal(queue_pause(c->q, 0, NULL, NULL), 0);
	/* nothing to move: done at once */
	assert_int_equal(queue_fast_forward(c->q, tu_mono_ns(), 0, on_wait, c),
	    0);
	assert_int_equal(c->waits_done, 1);
	assert_int_equal(count_logs(c, "fast-forward pushed 0 tasks into queue"),
	    1);

	assert_int_equal(push(c, "X", false, NULL), 1);
	assert_int_equal(push(c, "Y", false, NULL), 1);
	cut = tu_mono_ns();
	for (spins = 0; tu_mono_ns() <= cut && spins < 1000000; spins++)
		;
	assert_int_equal(push(c, "Z", false, NULL), 1);
	assert_int_equal(queue_fast_forward(c->q, cut, 5000, on_wait, c), 0);
	assert_int_equal(count_logs(c, "fast-forward pushed 2 tasks into queue"),
	    1);
	assert_int_equal(c->waits_done, 1);
	run_until(c, &c->waits_done, 2);
	assert_string_equal(c->wait_err, "");
	assert_started(c, "X,Y");
	assert_true(queue_is_paused(c->q));

	facts = queue_status_facts(c->q);
	assert_int_equal(json_array_size(json_object_get(facts,
	    "paused_queue")), 1);
	assert_string_equal(json_string_value(json_object_get(json_array_get(
	    json_object_get(facts, "paused_queue"), 0), "description")), "Z");
	json_decref(facts);

	assert_int_equal(queue_resume(c->q), 0);
	run_until(c, &c->idle_count, 1);
	assert_started(c, "X,Y,Z");
	ctx_free(c);
}

static void
test_queue_abandons_task_after_timeout_and_runs_next(void **state)
{
	struct tctx *c = ctx_new(30, 20);
	json_t *rec;

	assert_int_equal(push(c, "slow", true, NULL), 1);
	assert_int_equal(push(c, "next", false, NULL), 1);
	run_until(c, &c->nstarted, 2);
	assert_started(c, "slow,next");

	rec = find_log(c, "task took longer than 30ms", 0);
	assert_int_equal(json_integer_value(json_object_get(rec, "level")), 60);
	assert_keys(rec, "name,hostname,pid,task,level,err,timeout,msg,time,v");
	assert_string_equal(json_string_value(json_object_get(
	    json_object_get(rec, "err"), "message")), "timeout exceeded");
	assert_int_equal(json_integer_value(json_object_get(rec, "timeout")),
	    30);
	assert_string_equal(json_string_value(json_object_get(
	    json_object_get(rec, "task"), "description")), "slow");
	json_decref(rec);
	assert_int_equal(count_logs(c, "ignoring queue error: timeout exceeded"),
	    1);

	run_until(c, &c->idle_count, 1);
	/* the late completion is ignored: no log line, only freed */
	assert_int_equal(c->freed, 1);
	finish_held(c, "late error");
	assert_int_equal(c->freed, 2);
	assert_int_equal(count_logs(c, "task failed: late error"), 0);
	assert_int_equal(count_logs(c, "starting task"), 2);
	{
		json_t *all = read_logs(c), *r;
		size_t i;
		int finished = 0;

		json_array_foreach(all, i, r)
			if (strncmp(json_string_value(json_object_get(r,
			    "msg")), "finished task in ", 17) == 0)
				finished++;
		json_decref(all);
		assert_int_equal(finished, 1);
	}
	assert_true(queue_is_idle(c->q));
	ctx_free(c);
}

static void
test_queue_pause_timeout_resumes_and_reports(void **state)
{
	struct tctx *c = ctx_new(0, 20);

	assert_int_equal(push(c, "A", true, NULL), 1);
	run_until(c, &c->nstarted, 1);
	assert_int_equal(queue_pause(c->q, 20, on_wait, c), 0);
	assert_int_equal(push(c, "P", false, NULL), 1);
	run_until(c, &c->waits_done, 1);
	assert_string_equal(c->wait_err, "pause timeout exceeded");
	assert_false(queue_is_paused(c->q));
	assert_int_equal(count_logs(c, "pause took longer than 20ms"), 1);
	assert_int_equal(count_logs(c, "queue resumed - enqueueing 1 tasks"),
	    1);
	finish_held(c, NULL);
	run_until(c, &c->idle_count, 1);
	assert_started(c, "A,P");
	ctx_free(c);
}

static void
test_queue_fast_forward_timeout_reports_error(void **state)
{
	struct tctx *c = ctx_new(0, 20);
	json_t *rec;

	assert_int_equal(queue_pause(c->q, 0, NULL, NULL), 0);
	assert_int_equal(push(c, "X", true, NULL), 1);
	assert_int_equal(queue_fast_forward(c->q, tu_mono_ns(), 20, on_wait, c),
	    0);
	assert_int_equal(queue_fast_forward(c->q, tu_mono_ns(), 20, on_wait, c),
	    -EBUSY);
	run_until(c, &c->waits_done, 1);
	assert_string_equal(c->wait_err, "fast-forward timeout exceeded");
	rec = find_log(c, "fast-forward took longer than 20ms", 0);
	assert_int_equal(json_integer_value(json_object_get(rec, "level")), 50);
	assert_int_equal(json_integer_value(json_object_get(rec, "timeout")),
	    20);
	json_decref(rec);
	assert_true(queue_is_paused(c->q));
	finish_held(c, NULL);
	assert_int_equal(queue_resume(c->q), 0);
	ctx_free(c);
}

static void
test_queue_dump_has_spec_shape_and_key_order(void **state)
{
	struct tctx *c = ctx_new(60000, 20);
	json_t *dump, *vq, *pending, *entry;
	const char *key;
	char now[32];
	uint64_t now_ns;

	assert_int_equal(push(c, "A", true, NULL), 1);
	assert_int_equal(push(c, "B", false, NULL), 1);
	run_until(c, &c->nstarted, 1);
	assert_int_equal(queue_pause(c->q, 0, NULL, NULL), 0);
	assert_int_equal(push(c, "C", false, NULL), 1);

	now_ns = tu_mono_ns();
	dump = queue_dump(c->q, now_ns);
	assert_non_null(dump);
	assert_keys(dump, "now,paused,idle,vasync_queue,paused_at,paused_ago,"
	    "paused_nqueued,paused_queue");
	tu_hrtime_str(now_ns, now);
	assert_string_equal(json_string_value(json_object_get(dump, "now")),
	    now);
	assert_true(json_is_true(json_object_get(dump, "paused")));
	assert_true(json_is_false(json_object_get(dump, "idle")));
	vq = json_object_get(dump, "vasync_queue");
	assert_keys(vq, "concurrency,npending,nqueued,pending,queued");
	assert_int_equal(js_number_value(json_object_get(vq, "npending")), 1);
	assert_int_equal(js_number_value(json_object_get(vq, "nqueued")), 1);
	pending = json_object_get(vq, "pending");
	assert_int_equal(json_object_size(pending), 1);
	json_object_foreach(pending, key, entry) {
		assert_int_equal(strlen(key), 36);
		assert_keys(entry, "description,created_at,started_at,"
		    "created_ago,started_ago,start_latency");
		assert_string_equal(json_string_value(json_object_get(entry,
		    "description")), "A");
	}
	assert_keys(json_array_get(json_object_get(vq, "queued"), 0),
	    "description,created_at,created_ago");
	assert_int_equal(js_number_value(json_object_get(dump,
	    "paused_nqueued")), 1);
	assert_keys(json_array_get(json_object_get(dump, "paused_queue"), 0),
	    "id,description,created_at,created_ago");
	json_decref(dump);

	finish_held(c, NULL);
	assert_int_equal(queue_resume(c->q), 0);
	run_until(c, &c->idle_count, 1);
	dump = queue_dump(c->q, tu_mono_ns());
	assert_keys(dump, "now,paused,idle,vasync_queue");
	assert_true(json_is_true(json_object_get(dump, "idle")));
	json_decref(dump);
	ctx_free(c);
}

static void
test_queue_free_releases_waiting_and_orphans_running(void **state)
{
	struct tctx *c = ctx_new(60000, 20);

	assert_int_equal(push(c, "A", true, NULL), 1);
	assert_int_equal(push(c, "B", false, NULL), 1);
	run_until(c, &c->nstarted, 1);
	assert_int_equal(queue_pause(c->q, 0, NULL, NULL), 0);
	assert_int_equal(push(c, "C", false, NULL), 1);
	/* ctx_free frees the queue (B and C freed unrun), then finishes A */
	ctx_free(c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_queue_runs_tasks_one_at_a_time_in_order),
		cmocka_unit_test(test_queue_logs_push_with_opts),
		cmocka_unit_test(test_queue_merges_duplicates_behind_running_task),
		cmocka_unit_test(test_queue_keeps_immediate_duplicate_of_dispatched_task),
		cmocka_unit_test(test_queue_logs_finish_with_delta_and_failure),
		cmocka_unit_test(test_queue_becomes_idle_after_idle_ms),
		cmocka_unit_test(test_queue_pause_on_empty_queue_completes_at_once),
		cmocka_unit_test(test_queue_pause_with_running_task_waits_for_drain),
		cmocka_unit_test(test_queue_resume_moves_paused_tasks_in_order),
		cmocka_unit_test(test_queue_fast_forward_moves_only_tasks_created_until_time),
		cmocka_unit_test(test_queue_abandons_task_after_timeout_and_runs_next),
		cmocka_unit_test(test_queue_pause_timeout_resumes_and_reports),
		cmocka_unit_test(test_queue_fast_forward_timeout_reports_error),
		cmocka_unit_test(test_queue_dump_has_spec_shape_and_key_order),
		cmocka_unit_test(test_queue_free_releases_waiting_and_orphans_running),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
