/* test_fsw.c - the supervisor's fswatcher wrapper against the real
 * fswatcher binary (path: argv[1], else $VMINFOD_BUILD/fswatcher, else
 * <dir of this test>/../fswatcher).  Every loop run is bounded by a
 * deadline timer. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../supervisor/fsw.h"
#include "log.h"

static char fsw_cmd[PATH_MAX];
static char log_path[PATH_MAX];

#define MAX_EVENTS 64

struct rec {
	char path[PATH_MAX];
	char type[16];
	bool final;
	bool has_changes;
	char changes[128];
};

struct ctx {
	struct ev_loop *loop;
	struct fsw *w;
	char dir[256];
	struct rec ev[MAX_EVENTS];
	int nev;
	int nready, nrestarted, noverflow;
};

static void on_event(void *arg, const struct fsw_event *ev)
{
	struct ctx *c = arg;
	if (c->nev >= MAX_EVENTS)
		return;
	struct rec *r = &c->ev[c->nev++];
	snprintf(r->path, sizeof(r->path), "%s", ev->pathname);
	snprintf(r->type, sizeof(r->type), "%s", ev->type);
	r->final = ev->final;
	r->has_changes = ev->changes != NULL;
	r->changes[0] = '\0';
	if (ev->changes != NULL) {
		char *s = json_dumps(ev->changes, JSON_COMPACT);
		snprintf(r->changes, sizeof(r->changes), "%s", s ? s : "");
		free(s);
	}
}

static void on_overflow(void *arg) { ((struct ctx *)arg)->noverflow++; }
static void on_restarted(void *arg) { ((struct ctx *)arg)->nrestarted++; }
static void on_ready(void *arg) { ((struct ctx *)arg)->nready++; }

static void on_deadline(struct ev_loop *loop, ev_timer *t, int revents)
{
	*(bool *)t->data = true;
}

/* Run the loop until cond(c) or timeout_s; returns cond's final value. */
static bool run_until(struct ctx *c, bool (*cond)(struct ctx *c, const void *arg),
	const void *arg, double timeout_s)
{
	bool expired = false;
	ev_timer t;
	ev_timer_init(&t, on_deadline, timeout_s, 0.);
	t.data = &expired;
	ev_timer_start(c->loop, &t);
	while (!(cond != NULL && cond(c, arg)) && !expired)
		ev_run(c->loop, EVRUN_ONCE);
	ev_timer_stop(c->loop, &t);
	return cond != NULL && cond(c, arg);
}

static bool is_ready(struct ctx *c, const void *arg) { return c->nready > 0; }
static bool is_restarted(struct ctx *c, const void *arg) { return c->nrestarted > 0; }
static bool has_overflow(struct ctx *c, const void *arg) { return c->noverflow > 0; }

static bool n_events(struct ctx *c, const void *arg)
{
	return c->nev >= *(const int *)arg;
}

/* True when `path` is in the dump's `list` and nothing is in flight. */
static bool in_list(struct ctx *c, const char *list, const char *path)
{
	json_t *d = fsw_dump(c->w);
	bool found = false;
	size_t i;
	json_t *v;
	json_array_foreach(json_object_get(d, list), i, v) {
		if (strcmp(json_string_value(v), path) == 0)
			found = true;
	}
	bool idle = json_object_size(json_object_get(d, "pending_actions")) == 0;
	json_decref(d);
	return found && idle;
}

static bool is_watching(struct ctx *c, const void *arg)
{
	return in_list(c, "watching", arg);
}

static bool is_waiting(struct ctx *c, const void *arg)
{
	return in_list(c, "not_yet_watching", arg);
}

static void write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
}

static void path_in(struct ctx *c, char *out, const char *rel)
{
	snprintf(out, PATH_MAX, "%s/%s", c->dir, rel);
}

static int setup(void **state)
{
	struct ctx *c = calloc(1, sizeof(*c));
	c->loop = EV_DEFAULT;
	snprintf(c->dir, sizeof(c->dir), "/tmp/test_fsw.XXXXXX");
	if (mkdtemp(c->dir) == NULL)
		return -1;
	struct fsw_callbacks cbs = { on_event, on_overflow, on_restarted, on_ready, c };
	c->w = fsw_new(c->loop, fsw_cmd, &cbs);
	if (c->w == NULL)
		return -1;
	*state = c;
	return 0;
}

static int teardown(void **state)
{
	struct ctx *c = *state;
	fsw_free(c->w);
	char cmd[PATH_MAX + 16];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", c->dir);
	if (system(cmd) != 0)
		return -1;
	free(c);
	return 0;
}

static void start(struct ctx *c)
{
	assert_int_equal(fsw_start(c->w), 0);
	assert_int_equal(fsw_start(c->w), -EALREADY);
	assert_true(run_until(c, is_ready, NULL, 10));
	assert_true(fsw_pid(c->w) > 0);
}

static void test_change_delete_create_of_existing_file(void **state)
{
	struct ctx *c = *state;
	char f[PATH_MAX];
	path_in(c, f, "a.json");
	write_file(f, "{}");
	assert_int_equal(fsw_watch(c->w, f), 0);   /* before start: queued */
	start(c);
	assert_true(run_until(c, is_watching, f, 10));
	assert_int_equal(c->nev, 0);   /* first-attempt success: no create */

	write_file(f, "more");
	int want = 1;
	assert_true(run_until(c, n_events, &want, 10));
	assert_string_equal(c->ev[0].path, f);
	assert_string_equal(c->ev[0].type, "change");
	assert_string_equal(c->ev[0].changes, "[\"FILE_MODIFIED\"]");
	assert_false(c->ev[0].final);

	assert_int_equal(unlink(f), 0);
	want = 2;
	assert_true(run_until(c, n_events, &want, 10));
	assert_string_equal(c->ev[1].type, "delete");
	assert_string_equal(c->ev[1].changes, "[\"FILE_DELETE\",\"FILE_EXCEPTION\"]");
	assert_true(c->ev[1].final);
	/* Final: re-watched at once, the file is missing, so it waits. */
	assert_true(fsw_is_watching(c->w, f));
	assert_true(run_until(c, is_waiting, f, 10));

	write_file(f, "{}");
	want = 3;
	assert_true(run_until(c, n_events, &want, 10));
	assert_string_equal(c->ev[2].type, "create");
	assert_false(c->ev[2].has_changes);
	assert_true(run_until(c, is_watching, f, 10));

	/* Atomic replace: a change, still watched. */
	char tmp[PATH_MAX];
	path_in(c, tmp, "a.json.tmp");
	write_file(tmp, "{\"x\":1}");
	assert_int_equal(rename(tmp, f), 0);
	want = 4;
	assert_true(run_until(c, n_events, &want, 10));
	assert_string_equal(c->ev[3].type, "change");
	assert_string_equal(c->ev[3].changes, "[\"FILE_EXCEPTION\",\"FILE_RENAME_TO\"]");
	assert_false(c->ev[3].final);
}

/* Lines of the trace log that wrote `needle` to the child's stdin. */
static int count_log(const char *needle)
{
	FILE *fp = fopen(log_path, "re");
	if (fp == NULL)
		return -1;
	char line[8192];
	int n = 0;
	while (fgets(line, sizeof(line), fp) != NULL) {
		if (strstr(line, "writing to fswatcher stdin") && strstr(line, needle))
			n++;
	}
	fclose(fp);
	return n;
}

static void test_missing_path_appears_without_polling(void **state)
{
	struct ctx *c = *state;
	start(c);
	char d1[PATH_MAX], d2[PATH_MAX], f[PATH_MAX];
	path_in(c, d1, "zones");
	path_in(c, d2, "zones/web1");
	path_in(c, f, "zones/web1/lastexited");
	assert_int_equal(fsw_watch(c->w, f), 0);
	assert_int_equal(fsw_watch(c->w, f), -EEXIST);
	assert_true(run_until(c, is_waiting, f, 10));
	/* One second of waiting: a polling wrapper would retry five times. */
	run_until(c, NULL, NULL, 1.0);
	char needle[PATH_MAX + 16];
	snprintf(needle, sizeof(needle), "WATCH %s\"", f);
	assert_int_equal(count_log(needle), 1);
	assert_int_equal(c->nev, 0);

	assert_int_equal(mkdir(d1, 0755), 0);
	assert_int_equal(mkdir(d2, 0755), 0);
	write_file(f, "1560918888");
	int want = 1;
	assert_true(run_until(c, n_events, &want, 10));
	assert_string_equal(c->ev[0].path, f);
	assert_string_equal(c->ev[0].type, "create");
	assert_null(c->ev[0].has_changes ? "changes" : NULL);
	assert_false(c->ev[0].final);
	assert_true(run_until(c, is_watching, f, 10));
	assert_int_equal(count_log(needle), 2);
}

static void test_child_killed_is_restarted_and_rewatched(void **state)
{
	struct ctx *c = *state;
	char f[PATH_MAX], missing[PATH_MAX];
	path_in(c, f, "metadata.json");
	path_in(c, missing, "later/tags.json");
	write_file(f, "{}");
	start(c);
	assert_int_equal(fsw_watch(c->w, f), 0);
	assert_int_equal(fsw_watch(c->w, missing), 0);
	assert_true(run_until(c, is_watching, f, 10));
	assert_true(run_until(c, is_waiting, missing, 10));
	pid_t old = fsw_pid(c->w);
	assert_int_equal(kill(old, SIGKILL), 0);
	assert_true(run_until(c, is_restarted, NULL, 10));
	assert_int_equal(fsw_restarts(c->w), 1);
	assert_true(fsw_pid(c->w) > 0 && fsw_pid(c->w) != old);
	assert_int_equal(c->nready, 1);
	assert_true(run_until(c, is_watching, f, 10));
	assert_true(run_until(c, is_waiting, missing, 10));

	write_file(f, "{\"a\":1}");
	int want = 1;
	assert_true(run_until(c, n_events, &want, 10));
	assert_string_equal(c->ev[0].path, f);
	assert_string_equal(c->ev[0].type, "change");

	/* The pending path is re-registered with the new child too. */
	char dir[PATH_MAX];
	path_in(c, dir, "later");
	assert_int_equal(mkdir(dir, 0755), 0);
	write_file(missing, "{}");
	want = 2;
	assert_true(run_until(c, n_events, &want, 10));
	assert_string_equal(c->ev[1].path, missing);
	assert_string_equal(c->ev[1].type, "create");
}

static void test_unwatch_and_bad_paths(void **state)
{
	struct ctx *c = *state;
	start(c);
	char a[PATH_MAX], b[PATH_MAX];
	path_in(c, a, "a");
	path_in(c, b, "b");
	write_file(a, "");
	write_file(b, "");
	assert_int_equal(fsw_watch(c->w, "/tmp/with space"), -EINVAL);
	assert_int_equal(fsw_watch(c->w, "/tmp/new\nline"), -EINVAL);
	assert_int_equal(fsw_watch(c->w, "/tmp/bad\xff"), -EINVAL);
	assert_int_equal(fsw_watch(c->w, ""), -EINVAL);
	assert_int_equal(fsw_unwatch(c->w, "/not/watched"), -ENOENT);
	assert_int_equal(fsw_watch(c->w, a), 0);
	assert_int_equal(fsw_watch(c->w, b), 0);
	assert_true(run_until(c, is_watching, a, 10));
	assert_true(run_until(c, is_watching, b, 10));
	assert_int_equal(fsw_unwatch(c->w, a), 0);
	assert_false(fsw_is_watching(c->w, a));
	write_file(a, "ignored");
	assert_int_equal(unlink(a), 0);
	write_file(b, "seen");
	int want = 1;
	assert_true(run_until(c, n_events, &want, 10));
	assert_string_equal(c->ev[0].path, b);
	run_until(c, NULL, NULL, 0.3);
	assert_int_equal(c->nev, 1);
}

static void test_dump_shape(void **state)
{
	struct ctx *c = *state;
	char a[PATH_MAX], m[PATH_MAX];
	path_in(c, a, "a");
	path_in(c, m, "missing");
	write_file(a, "");
	json_t *d = fsw_dump(c->w);
	/* Not started yet. */
	assert_true(json_is_null(json_object_get(d, "watcher_pid")));
	assert_true(json_is_null(json_object_get(d, "running")));
	json_decref(d);

	start(c);
	assert_int_equal(fsw_watch(c->w, a), 0);
	assert_int_equal(fsw_watch(c->w, m), 0);
	d = fsw_dump(c->w);
	json_t *pa = json_object_get(d, "pending_actions");
	assert_int_equal(json_object_size(pa), 2);
	json_t *act = json_object_get(pa, "1");
	assert_non_null(act);
	char cmd[PATH_MAX + 16];
	snprintf(cmd, sizeof(cmd), "1 WATCH %s\n", a);
	assert_string_equal(json_string_value(json_object_get(act, "cmd")), cmd);
	assert_int_equal(json_array_size(json_object_get(act, "started")), 2);
	json_decref(d);

	assert_true(run_until(c, is_watching, a, 10));
	assert_true(run_until(c, is_waiting, m, 10));
	d = fsw_dump(c->w);
	char *s = json_dumps(d, JSON_COMPACT | JSON_PRESERVE_ORDER);
	const char *keys[] = { "\"message_delays\"", "\"watching\"", "\"not_yet_watching\"",
		"\"pending_actions\"", "\"watcher_pid\"", "\"running\"" };
	const char *prev = s;
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		const char *at = strstr(s, keys[i]);
		assert_non_null(at);
		assert_true(at >= prev);
		prev = at;
	}
	free(s);
	json_t *md = json_object_get(d, "message_delays");
	assert_non_null(json_object_get(md, "1"));    /* ready + 2 responses */
	assert_null(json_object_get(md, "10"));
	assert_int_equal(json_array_size(json_object_get(d, "watching")), 1);
	assert_int_equal(json_array_size(json_object_get(d, "not_yet_watching")), 1);
	assert_int_equal((int)json_number_value(json_object_get(d, "watcher_pid")), fsw_pid(c->w));
	assert_true(json_is_true(json_object_get(d, "running")));
	json_decref(d);

	fsw_stop(c->w);
	assert_int_equal(fsw_pid(c->w), -1);
	assert_false(fsw_is_watching(c->w, a));
}

static void test_overflow_callback(void **state)
{
	struct ctx *c = *state;
	FILE *fp = fopen("/proc/sys/fs/inotify/max_queued_events", "re");
	long max = 0;
	if (fp != NULL) {
		if (fscanf(fp, "%ld", &max) != 1)
			max = 0;
		fclose(fp);
	}
	if (max <= 0 || max > 200000)
		skip();
	char a[PATH_MAX], b[PATH_MAX];
	path_in(c, a, "a");
	path_in(c, b, "b");
	write_file(a, "");
	write_file(b, "");
	start(c);
	assert_int_equal(fsw_watch(c->w, a), 0);
	assert_true(run_until(c, is_watching, a, 10));
	pid_t pid = fsw_pid(c->w);
	assert_int_equal(kill(pid, SIGSTOP), 0);
	int fa = open(a, O_WRONLY | O_APPEND | O_CLOEXEC);
	int fb = open(b, O_WRONLY | O_APPEND | O_CLOEXEC);
	assert_true(fa >= 0 && fb >= 0);
	for (long i = 0; i < max / 2 + 100; i++) {
		assert_int_equal(write(fa, "a", 1), 1);
		assert_int_equal(write(fb, "b", 1), 1);
	}
	close(fa);
	close(fb);
	assert_int_equal(kill(pid, SIGCONT), 0);
	assert_true(run_until(c, has_overflow, NULL, 20));
	assert_int_equal(c->nrestarted, 0);
}

/* A child that prints ready, then a line that is not JSON: it is blamed,
 * killed and restarted, again and again, without a tight loop. */
static bool none_in_flight(struct ctx *c, const void *arg)
{
	return fsw_in_flight(c->w) == 0;
}

/* More watches than the wrapper keeps in flight at once: the rest wait in
 * its send queue, go out as answers come back, and can be unwatched while
 * they wait. */
static void test_many_watches_window(void **state)
{
	struct ctx *c = *state;
	start(c);
	enum { N = 600 };
	char p[PATH_MAX];
	for (int i = 0; i < N; i++) {
		char rel[32];
		snprintf(rel, sizeof(rel), "f%d", i);
		path_in(c, p, rel);
		if (i % 2 == 0)
			write_file(p, "");
		assert_int_equal(fsw_watch(c->w, p), 0);
	}
	size_t in_flight = fsw_in_flight(c->w);
	assert_int_equal(in_flight, N);
	json_t *d = fsw_dump_bounded(c->w, 10);
	assert_int_equal(json_object_size(json_object_get(d, "pending_actions")), 10);
	json_t *pa = json_object_get(d, "pending_actions_count");
	assert_true(json_integer_value(pa) > 0 && json_integer_value(pa) < N);
	json_decref(d);
	/* The last ones are still queued: unwatching them sends nothing. */
	for (int i = N - 10; i < N; i++) {
		char rel[32];
		snprintf(rel, sizeof(rel), "f%d", i);
		path_in(c, p, rel);
		assert_int_equal(fsw_unwatch(c->w, p), 0);
		assert_false(fsw_is_watching(c->w, p));
	}
	assert_int_equal(fsw_in_flight(c->w), N - 10);
	assert_true(run_until(c, none_in_flight, NULL, 20));
	d = fsw_dump_bounded(c->w, 5);
	assert_int_equal(json_integer_value(json_object_get(d, "watching_count")), (N - 10) / 2);
	assert_int_equal(json_integer_value(json_object_get(d, "not_yet_watching_count")), (N - 10) / 2);
	assert_int_equal(json_integer_value(json_object_get(d, "pending_actions_count")), 0);
	json_decref(d);
	/* A file watched from the queue reports changes; a missing one from
	 * the queue reports its creation. */
	path_in(c, p, "f580");
	write_file(p, "changed");
	int want = 1;
	assert_true(run_until(c, n_events, &want, 10));
	assert_string_equal(c->ev[0].path, p);
	assert_string_equal(c->ev[0].type, "change");
	path_in(c, p, "f589");
	write_file(p, "");
	want = 2;
	assert_true(run_until(c, n_events, &want, 10));
	assert_string_equal(c->ev[1].path, p);
	assert_string_equal(c->ev[1].type, "create");
	/* An unwatched one (it never reached the child) stays silent. */
	path_in(c, p, "f598");
	write_file(p, "x");
	run_until(c, NULL, NULL, 0.3);
	assert_int_equal(c->nev, 2);
}

static void test_garbage_line_restarts_child(void **state)
{
	struct ctx *c = *state;
	char script[PATH_MAX];
	path_in(c, script, "fake-fswatcher");
	FILE *fp = fopen(script, "we");
	assert_non_null(fp);
	fputs("#!/bin/sh\n"
		"echo '{\"type\":\"ready\",\"time\":[0,0]}'\n"
		"echo 'this is not json'\n"
		"exec cat >/dev/null\n", fp);
	assert_int_equal(fclose(fp), 0);
	assert_int_equal(chmod(script, 0755), 0);
	fsw_free(c->w);
	struct fsw_callbacks cbs = { on_event, on_overflow, on_restarted, on_ready, c };
	c->w = fsw_new(c->loop, script, &cbs);
	assert_non_null(c->w);
	assert_int_equal(fsw_start(c->w), 0);
	assert_true(run_until(c, is_restarted, NULL, 10));
	assert_int_equal(c->nready, 1);
	pid_t first = fsw_pid(c->w);
	assert_true(fsw_restarts(c->w) >= 1);
	/* Over 2 s: at most 6 quick restarts, then a 1 s backoff. */
	run_until(c, NULL, NULL, 2.0);
	assert_true(fsw_restarts(c->w) <= 8);
	(void)first;
}

int main(int argc, char **argv)
{
	const char *build = getenv("VMINFOD_BUILD");
	if (argc > 1) {
		snprintf(fsw_cmd, sizeof(fsw_cmd), "%s", argv[1]);
	} else if (build != NULL) {
		snprintf(fsw_cmd, sizeof(fsw_cmd), "%s/fswatcher", build);
	} else {
		char self[PATH_MAX - 32];
		snprintf(self, sizeof(self), "%s", argv[0]);
		char *slash = strrchr(self, '/');
		if (slash != NULL)
			*slash = '\0';
		else
			snprintf(self, sizeof(self), ".");
		snprintf(fsw_cmd, sizeof(fsw_cmd), "%s/../fswatcher", self);
	}
	if (access(fsw_cmd, X_OK) != 0) {
		fprintf(stderr, "test_fsw: no fswatcher binary at %s\n", fsw_cmd);
		return 1;
	}
	/* Trace to a file: one test counts the commands written. */
	snprintf(log_path, sizeof(log_path), "/tmp/test_fsw.%d.log", (int)getpid());
	if (log_init("test_fsw", log_path, LOG_TRACE) < 0)
		return 1;
	signal(SIGPIPE, SIG_IGN);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_change_delete_create_of_existing_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing_path_appears_without_polling, setup, teardown),
		cmocka_unit_test_setup_teardown(test_child_killed_is_restarted_and_rewatched, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unwatch_and_bad_paths, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dump_shape, setup, teardown),
		cmocka_unit_test_setup_teardown(test_overflow_callback, setup, teardown),
		cmocka_unit_test_setup_teardown(test_garbage_line_restarts_child, setup, teardown),
		cmocka_unit_test_setup_teardown(test_many_watches_window, setup, teardown),
	};
	int r = cmocka_run_group_tests(tests, NULL, NULL);
	log_done();
	if (r == 0 && getenv("TEST_FSW_KEEP_LOG") == NULL)
		unlink(log_path);
	else
		fprintf(stderr, "test_fsw: log kept in %s\n", log_path);
	return r;
}
