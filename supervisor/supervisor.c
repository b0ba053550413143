/*
 * supervisor.c - the vminfod daemon: boot sequence, children, status
 * facts, signals (spec/daemon.md §2, DESIGN.md §2, §8).
 *
 * Order matters at start-up: the listening sockets are bound (in main)
 * before any child exists; the ring file is opened before the first load
 * so that a restarted supervisor can compare the host with what it last
 * published; the frontend starts once the first snapshot is in the ring.
 */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "diff.h"
#include "fsw.h"
#include "json.h"
#include "log.h"
#include "publish.h"
#include "queue.h"
#include "ring.h"
#include "supervisor.h"
#include "timeutil.h"
#include "vms.h"

/* The status facts (/status, /metrics) follow changes within this
 * delay.  Building them costs about as much as handling an event, so a
 * busy host rebuilds them a few times a second, not after every event. */
#define STATUS_COALESCE_S 0.25
/* The heartbeat says "alive" this often, even when nothing changed. */
#define HEARTBEAT_S 1.0
/* Longest wait at boot for the fswatcher to answer every WATCH. */
#define BOOT_WATCH_WAIT_NS (120ULL * TU_NS_PER_SEC)

char *supervisor_path(const struct supervisor *s, const char *hostpath)
{
	const char *root = s->opt.root;
	size_t rl = strlen(root);
	while (rl > 0 && root[rl - 1] == '/')
		rl--;
	struct buf b = BUF_INIT;
	if (buf_printf(&b, "%.*s%s", (int)rl, root, hostpath) < 0) {
		buf_done(&b);
		return NULL;
	}
	return buf_steal(&b, NULL);
}

void supervisor_set_state(struct supervisor *s, const char *state)
{
	if (s->state && strcmp(s->state, state) == 0)
		return;
	log_debug(json_pack("{s:s,s:s}", "oldstate", s->state ? s->state : "", "newstate", state),
	          "state changed from \"%s\" to \"%s\"", s->state ? s->state : "", state);
	s->state = state;
	supervisor_status_changed(s);
}

void supervisor_set_status(struct supervisor *s, const char *status)
{
	if (s->status && strcmp(s->status, status) == 0)
		return;
	log_debug(json_pack("{s:s,s:s}", "oldstatus", s->status ? s->status : "", "newstatus",
	                    status),
	          "status changed from \"%s\" to \"%s\"", s->status ? s->status : "", status);
	s->status = status;
	(void)notify_status(&s->notify, status);
	supervisor_status_changed(s);
}

/* ---- status facts (the ring's status area) ---- */

static long rss_bytes(void)
{
	FILE *f = fopen("/proc/self/statm", "re");
	long size = 0, rss = 0;
	if (f) {
		if (fscanf(f, "%ld %ld", &size, &rss) != 2)
			rss = 0;
		fclose(f);
	}
	return rss * sysconf(_SC_PAGESIZE);
}

/* Status facts list at most this many paths of each fswatcher list (the
 * counts are always there): with thousands of zones the full lists would
 * make every status update cost O(watches). */
#define STATUS_MAX_PATHS 100
/* mallinfo2() walks the heap: sample it this often, not per update. */
#define HEAP_SAMPLE_NS (10ULL * TU_NS_PER_SEC)
/* The RSS: a read of /proc per status would be a good part of an
 * event's cost. */
#define RSS_SAMPLE_NS (1ULL * TU_NS_PER_SEC)

static json_t *status_facts(struct supervisor *s)
{
	uint64_t now = tu_mono_ns();
	if (!s->heap_sampled_ns || now - s->heap_sampled_ns >= HEAP_SAMPLE_NS) {
		struct mallinfo2 mi = mallinfo2();
		s->heap_total = mi.arena + mi.hblkhd;
		s->heap_used = mi.uordblks + mi.hblkhd;
		s->heap_sampled_ns = now;
	}
	if (!s->rss_sampled_ns || now - s->rss_sampled_ns >= RSS_SAMPLE_NS) {
		s->rss = rss_bytes();
		s->rss_sampled_ns = now;
	}
	json_t *f = json_object();
	js_set(f, "pid", json_integer(getpid()));
	js_set(f, "start_ns", json_integer((json_int_t)s->start_ns));
	js_set(f, "rss", json_integer(s->rss));
	js_set(f, "heapTotal", json_integer((json_int_t)s->heap_total));
	js_set(f, "heapUsed", json_integer((json_int_t)s->heap_used));
	js_set(f, "state", json_string(s->state));
	js_set(f, "status", json_string(s->status));
	js_set(f, "numVms", json_integer((json_int_t)strmap_count(&s->vms)));
	js_set(f, "queue", queue_status_facts(s->queue));
	js_set(f, "last_refresh_ns",
	       s->last_refresh_ns ? json_integer((json_int_t)s->last_refresh_ns) : json_null());
	js_set(f, "refresh_errors", json_incref(s->refresh_errors));
	js_set(f, "refresh_log", json_incref(s->refresh_log));
	json_t *fd = fsw_dump_bounded(s->fsw, STATUS_MAX_PATHS);
	js_set(f, "fswatcher", fd ? fd : json_object());
	js_set(f, "children",
	       json_pack("{s:o,s:o}", "fswatcher",
	                 json_pack("{s:o,s:i,s:s}", "pid",
	                           fsw_pid(s->fsw) > 0 ? json_integer(fsw_pid(s->fsw)) : json_null(),
	                           "restarts", (int)fsw_restarts(s->fsw), "state",
	                           fsw_pid(s->fsw) > 0 ? "up" : "down"),
	                 "frontend", child_facts(&s->frontend)));
	js_set(f, "ring", json_pack("{s:s,s:I}", "epoch", s->ring ? ring_writer_epoch(s->ring) : "",
	                            "version", (json_int_t)publish_version(s->pub)));
	js_set(f, "metrics", counters_facts(&s->counters));
	js_set(f, "heartbeat_ns", json_integer((json_int_t)tu_mono_ns()));
	return f;
}

static void publish_status(struct supervisor *s)
{
	if (!s->ring)
		return;
	s->status_dirty = false;
	json_t *f = status_facts(s);
	size_t len;
	char *text = js_dumps(f, &len);
	json_decref(f);
	if (!text)
		return;
	int r = ring_writer_status(s->ring, text, len);
	if (r < 0)
		log_warn(json_pack("{s:I}", "size", (json_int_t)len),
		         "cannot publish the status (%zu bytes): %s, ignoring", len, strerror(-r));
	free(text);
}

static void on_status_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct supervisor *s = w->data;
	/* The heartbeat alone says "alive"; the facts are rebuilt only when
	 * something changed (the ages in them are computed by readers). */
	if (s->status_dirty)
		publish_status(s);
	ring_writer_heartbeat(s->ring, tu_mono_ns());
	(void)ring_doorbell_ring(s->doorbell_fd);
	ev_timer_set(w, HEARTBEAT_S, 0.);
	ev_timer_start(loop, w);
}

void supervisor_status_changed(struct supervisor *s)
{
	if (s->status_dirty || !s->ring)
		return;
	s->status_dirty = true;
	/* Coalesce: publish at most every STATUS_COALESCE_S. */
	if (ev_timer_remaining(s->loop, &s->status_timer) > STATUS_COALESCE_S) {
		ev_timer_stop(s->loop, &s->status_timer);
		ev_timer_set(&s->status_timer, STATUS_COALESCE_S, 0.);
		ev_timer_start(s->loop, &s->status_timer);
	}
}

static void ring_doorbell(struct supervisor *s)
{
	if (s->ring && publish_version(s->pub) != s->rung_version) {
		s->rung_version = publish_version(s->pub);
		(void)ring_doorbell_ring(s->doorbell_fd);
	}
}

/* The first event of a loop iteration rings the doorbell at once (the
 * subscribers should not wait for the rest of the iteration's work);
 * the others of the same iteration are announced together when it ends,
 * so a burst of events costs the frontend few wake-ups. */
void supervisor_published(struct supervisor *s)
{
	if (!s->rung_this_turn) {
		s->rung_this_turn = true;
		ring_doorbell(s);
	}
}

static void on_prepare(struct ev_loop *loop, ev_prepare *w, int revents)
{
	struct supervisor *s = w->data;
	ring_doorbell(s);
	s->rung_this_turn = false;
}

/* ---- the frontend child ---- */

static pid_t spawn_frontend(struct child *c, void *arg)
{
	struct supervisor *s = arg;
	/* The ready pipe: the frontend writes a byte once it accepts; an
	 * orphaned frontend of a previous supervisor waits for that fact
	 * (children.frontend.ready) before it hands over (DESIGN.md §8). */
	int ready[2];
	if (pipe2(ready, O_CLOEXEC) < 0)
		return -errno;
	pid_t pid = fork();
	if (pid < 0) {
		int r = -errno;
		close(ready[0]);
		close(ready[1]);
		return r;
	}
	if (pid > 0) {
		close(ready[1]);
		child_watch_ready(c, ready[0]);
		return pid;
	}
	/* Child: the fds crossing exec are arranged here and nowhere else:
	 * listeners at 3..3+n-1 (LISTEN_FDS), the doorbell and the ready
	 * pipe right after. */
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	size_t n = s->listeners.n;
	int moved[LISTEN_MAX + 2];
	for (size_t i = 0; i < n; i++)
		moved[i] = fcntl(s->listeners.fds[i], F_DUPFD_CLOEXEC, 64);
	moved[n] = fcntl(s->doorbell_fd, F_DUPFD_CLOEXEC, 64);
	moved[n + 1] = fcntl(ready[1], F_DUPFD_CLOEXEC, 64);
	for (size_t i = 0; i <= n + 1; i++)
		if (moved[i] < 0 || dup2(moved[i], 3 + (int)i) < 0)
			_exit(127);
	char nfds[24], pidbuf[24], dfd[24], rfd[24], level[24];
	snprintf(nfds, sizeof(nfds), "%zu", n);
	snprintf(pidbuf, sizeof(pidbuf), "%d", (int)getpid());
	snprintf(dfd, sizeof(dfd), "%zu", 3 + n);
	snprintf(rfd, sizeof(rfd), "%zu", 3 + n + 1);
	snprintf(level, sizeof(level), "%d", s->opt.log_level);
	setenv("LISTEN_FDS", nfds, 1);
	setenv("LISTEN_PID", pidbuf, 1);
	const char *argv[32];
	int a = 0;
	argv[a++] = s->opt.frontend_cmd;
	argv[a++] = "--ring";
	argv[a++] = s->ring_path;
	argv[a++] = "--doorbell-fd";
	argv[a++] = dfd;
	argv[a++] = "--ready-fd";
	argv[a++] = rfd;
	argv[a++] = "--log-level";
	argv[a++] = level;
	if (s->opt.log_file) {
		argv[a++] = "--log-file";
		argv[a++] = s->opt.log_file;
	}
	if (s->opt.frontend_user) {
		argv[a++] = "--user";
		argv[a++] = s->opt.frontend_user;
	}
	char fe_opts[5][32];
	for (size_t i = 0; i + 1 < s->opt.nfe_args && i / 2 < 5; i += 2) {
		snprintf(fe_opts[i / 2], sizeof(fe_opts[0]), "--%s", s->opt.fe_args[i]);
		argv[a++] = fe_opts[i / 2];
		argv[a++] = s->opt.fe_args[i + 1];
	}
	argv[a] = NULL;
	execv(s->opt.frontend_cmd, (char *const *)argv);
	_exit(127);
}

static void notify_serving(struct supervisor *s);

static void on_frontend(struct child *c, void *arg, bool spawned, int status)
{
	struct supervisor *s = arg;
	supervisor_status_changed(s);
	if (spawned && c->ready)
		notify_serving(s);
	if (!spawned && s->stopping)
		ev_break(s->loop, EVBREAK_ALL);
}

/* ---- service manager readiness and /metrics totals ---- */

/* The frontend said it accepts (its ready pipe): every condition of
 * readiness holds (first load, first snapshot, first accept). */
static void notify_serving(struct supervisor *s)
{
	if (s->ready_notified)
		return;
	s->ready_notified = true;
	log_info(NULL, "frontend is serving, vminfod is ready");
	int r = notify_ready(&s->notify, s->status);
	if (r < 0)
		log_warn(log_err_fields(strerror(-r), NULL), "cannot notify the service manager, ignoring");
}

static void on_task_end(void *arg, uint64_t duration_ns, bool failed, bool timed_out)
{
	struct supervisor *s = arg;
	counters_task(&s->counters,
	              timed_out ? COUNTERS_TASK_TIMEOUT : failed ? COUNTERS_TASK_ERROR : COUNTERS_TASK_OK,
	              duration_ns);
}

/* ---- fswatcher callbacks ---- */

static void on_fsw_ready(void *arg)
{
	log_debug(NULL, "filesystem watcher ready");
}

static void on_fsw_overflow(void *arg)
{
	struct supervisor *s = arg;
	log_error(NULL, "fswatcher lost events (inotify queue overflow), queueing a full refresh");
	refresh_request(s, "inotify queue overflow");
}

static void on_fsw_restarted(void *arg)
{
	struct supervisor *s = arg;
	supervisor_status_changed(s);
	refresh_request(s, "fswatcher restarted");
}

/* ---- ring: what was published before this supervisor started ---- */

struct last_state {
	struct strmap vms;  /* zonename -> json_t* */
};

static void last_state_cb(void *arg, const char *zonename, size_t zlen, const char *json, size_t jlen)
{
	struct last_state *ls = arg;
	char err[128];
	json_t *vm = js_parse(json, jlen, err, sizeof(err));
	if (vm && strmap_set(&ls->vms, zonename, zlen, vm, NULL) < 0)
		json_decref(vm);
}

/* A restarted supervisor publishes the differences between what it last
 * published and the host as ordinary events (DESIGN.md §5.5). */
static void publish_missed(struct supervisor *s, struct last_state *ls)
{
	for (struct strmap_entry *me = s->vms.head; me; me = me->next) {
		struct vm_entry *e = me->value;
		json_t *old = strmap_del(&ls->vms, me->key, me->keylen);
		if (!old) {
			vms_emit(s, RING_EV_CREATE, e->zonename, e->uuid, e, NULL);
			continue;
		}
		char err[256];
		json_t *cur = vms_object(e);
		json_t *changes = cur ? diff_values(old, cur, true, err, sizeof(err)) : NULL;
		if (changes && json_array_size(changes))
			vms_emit(s, RING_EV_MODIFY, e->zonename, e->uuid, e, changes);
		json_decref(changes);
		json_decref(cur);
		json_decref(old);
	}
	for (struct strmap_entry *me = ls->vms.head; me; me = me->next) {
		json_t *old = me->value;
		const char *uuid = json_string_value(json_object_get(old, "uuid"));
		vms_emit(s, RING_EV_DELETE, me->key, uuid ? uuid : me->key, NULL, NULL);
		json_decref(old);
	}
	strmap_done(&ls->vms);
}

struct snap_ctx {
	int (*emit)(void *arg, const char *zonename, const char *json, size_t json_len);
	void *arg;
};

static int snapshot_each(void *p, struct vm_entry *e)
{
	struct snap_ctx *sc = p;
	return sc->emit(sc->arg, e->zonename, e->json, e->json_len);
}

static int snapshot_iter(void *owner,
	int (*emit)(void *arg, const char *zonename, const char *json, size_t json_len), void *arg)
{
	struct snap_ctx sc = { emit, arg };
	return vms_foreach(owner, snapshot_each, &sc);
}

/* ---- boot ---- */

static int open_ring(struct supervisor *s, struct last_state *ls, bool *ret_kept)
{
	if (mkdir(s->opt.rundir, 0755) < 0 && errno != EEXIST) {
		int r = -errno;
		log_fatal(log_err_fields(strerror(-r), NULL), "cannot create run directory %s",
		          s->opt.rundir);
		return r;
	}
	struct buf b = BUF_INIT;
	if (buf_printf(&b, "%s/vminfod.ring", s->opt.rundir) < 0)
		return -ENOMEM;
	s->ring_path = buf_steal(&b, NULL);
	char why[256] = "";
	int r = ring_writer_open(s->ring_path, s->opt.ring_size, &s->ring, ret_kept, why, sizeof(why));
	if (r < 0) {
		log_fatal(log_err_fields(strerror(-r), NULL), "cannot open ring file %s", s->ring_path);
		return r;
	}
	if (*ret_kept) {
		log_info(json_pack("{s:s,s:I}", "epoch", ring_writer_epoch(s->ring), "version",
		                   (json_int_t)ring_writer_version(s->ring)),
		         "ring file %s kept: epoch %s, version %llu", s->ring_path,
		         ring_writer_epoch(s->ring), (unsigned long long)ring_writer_version(s->ring));
		r = ring_writer_last_state(s->ring, last_state_cb, ls);
		if (r < 0)
			log_warn(log_err_fields(strerror(-r), NULL),
			         "cannot read the last published state, publishing the host as new");
	} else {
		log_info(json_pack("{s:s,s:s}", "epoch", ring_writer_epoch(s->ring), "why", why),
		         "ring file %s: new epoch %s (%s)", s->ring_path, ring_writer_epoch(s->ring),
		         why);
	}
	s->doorbell_fd = ring_doorbell_new();
	if (s->doorbell_fd < 0) {
		log_fatal(log_err_fields(strerror(-s->doorbell_fd), NULL), "cannot create doorbell");
		return s->doorbell_fd;
	}
	return 0;
}

/*
 * Step 4 ends when the fswatcher has answered every WATCH, as upstream's
 * boot waits for each watch's first attempt: a file is then watched
 * before it is loaded, so no change between the load and the watch goes
 * unseen; and the registration of every watch (O(watches) work in both
 * processes) is over before the daemon says it is ready, instead of
 * running behind the first events.  The loop runs meanwhile (the queue
 * is paused: file events become tasks for later).  Bounded: a child that
 * dies takes its requests with it, and the wait gives up after
 * BOOT_WATCH_WAIT_NS.
 */
static void wait_watches(struct supervisor *s)
{
	uint64_t t0 = tu_mono_ns();
	while (fsw_in_flight(s->fsw) > 0 && !s->stopping) {
		if (tu_mono_ns() - t0 >= BOOT_WATCH_WAIT_NS) {
			log_warn(json_pack("{s:I}", "in_flight", (json_int_t)fsw_in_flight(s->fsw)),
			         "fswatcher did not answer every watch in time, going on");
			return;
		}
		ev_run(s->loop, EVRUN_ONCE);
	}
	char took[80];
	tu_pretty_delta(tu_mono_ns() - t0, took);
	log_debug(NULL, "vm watchers registered, waited %s", took);
}

/* Steps 4–6 of the boot sequence: watch, load and build every zone. */
static void initial_load(struct supervisor *s)
{
	char err[512];
	supervisor_set_status(s, "starting vm watchers");
	if (tasks_load_index(s) < 0)
		log_error(NULL, "failed to start vm watchers");
	for (size_t i = 0; i < s->index.n; i++)
		tasks_watch_zone(s, &s->index.recs[i]);
	wait_watches(s);
	if (s->stopping)
		return;

	supervisor_set_status(s, "setting initial cache data");
	s->sysinfo = vmload_sysinfo(&s->vl, err, sizeof(err));
	if (!s->sysinfo)
		log_error(log_err_fields(err, NULL), "%s", err);
	supervisor_set_status(s, "setting initial vmobjs data");
	for (size_t i = 0; i < s->index.n; i++) {
		const struct zone_record *rec = &s->index.recs[i];
		struct vm_raw *raw = vm_raw_new();
		if (!raw)
			continue;
		if (vmload_zone(&s->vl, rec, raw, VMS_ALL, err, sizeof(err)) < 0) {
			/* Isolated per VM (DESIGN.md §11): skipped until its
			 * sources are good again. */
			log_error(log_err_fields(err, NULL), "skipping VM %s: %s", rec->zonename, err);
			vm_raw_free(raw);
			continue;
		}
		json_t *vm = vmload_build(raw, s->sysinfo, err, sizeof(err));
		if (!vm) {
			log_error(log_err_fields(err, NULL), "failed to vmload.getVmobjs: %s", err);
			vm_raw_free(raw);
			continue;
		}
		(void)vms_insert(s, rec->zonename, rec->uuid, raw, vm);
	}
	log_debug(NULL, "setVmobjs %zu VMs found", strmap_count(&s->vms));
}

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct supervisor *s = w->data;
	if (w->signum == SIGHUP) {
		int r = log_reopen();
		if (r < 0)
			log_error(log_err_fields(strerror(-r), NULL), "cannot reopen the log file");
		else
			log_info(NULL, "log file reopened");
		return;
	}
	if (s->stopping)
		return;
	s->stopping = true;
	(void)notify_stopping(&s->notify, "stopping");
	log_info(json_pack("{s:i}", "signal", w->signum), "stopping on signal %d", w->signum);
	supervisor_set_state(s, "stopped");
	publish_status(s);
	fsw_stop(s->fsw);
	if (s->frontend.pid > 0)
		child_stop(&s->frontend);
	else
		ev_break(loop, EVBREAK_ALL);
}

static int boot(struct supervisor *s)
{
	char err[512];
	struct last_state ls = { STRMAP_INIT };
	bool kept = false;

	s->start_ns = tu_mono_ns();
	log_info(NULL, "vminfod starting");
	supervisor_set_state(s, "booting");
	supervisor_set_status(s, "initializing event queue");
	s->queue = queue_new(s->loop, s->opt.task_timeout_ms, QUEUE_DEFAULT_IDLE_MS);
	if (!s->queue)
		return -ENOMEM;
	(void)queue_pause(s->queue, 0, NULL, NULL);
	queue_on_task_end(s->queue, on_task_end, s);
	refresh_init(s);

	if (vmload_ctx_init(&s->vl, s->opt.root, err, sizeof(err)) < 0) {
		log_fatal(log_err_fields(err, NULL), "cannot open root %s: %s", s->opt.root, err);
		return -EINVAL;
	}
	s->index_path = supervisor_path(s, "/etc/zones/index");
	s->sysinfo_path = supervisor_path(s, "/tmp/.sysinfo.json");
	if (!s->index_path || !s->sysinfo_path)
		return -ENOMEM;
	int r = open_ring(s, &ls, &kept);
	if (r < 0)
		return r;
	int events_fd = -1;
	if (s->opt.events_file) {
		events_fd = open(s->opt.events_file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
		if (events_fd < 0) {
			log_fatal(log_err_fields(strerror(errno), NULL), "cannot open events file %s",
			          s->opt.events_file);
			return -errno;
		}
	}
	s->events_fd = events_fd;
	s->pub = publish_new(s->ring, events_fd, snapshot_iter, s);
	if (!s->pub)
		return -ENOMEM;

	supervisor_set_status(s, "starting global watchers");
	struct fsw_callbacks cbs = { tasks_on_fs_event, on_fsw_overflow, on_fsw_restarted,
	                             on_fsw_ready, s };
	s->fsw = fsw_new(s->loop, s->opt.fswatcher_cmd, &cbs);
	if (!s->fsw)
		return -ENOMEM;
	r = fsw_start(s->fsw);
	if (r < 0) {
		log_fatal(log_err_fields(strerror(-r), NULL), "cannot start fswatcher %s",
		          s->opt.fswatcher_cmd);
		return r;
	}
	r = tasks_watch_globals(s);
	if (r < 0)
		return r;
	log_info(NULL, "global watchers ready");

	initial_load(s);
	if (s->stopping)
		return 0;   /* a signal during the watch wait: no children yet */
	s->last_refresh_ns = tu_mono_ns();
	if (kept)
		publish_missed(s, &ls);
	r = publish_snapshot(s->pub);
	if (r < 0)
		log_error(log_err_fields(strerror(-r), NULL), "cannot publish the initial snapshot");
	s->booted = true;

	supervisor_set_status(s, "resuming the event queue");
	(void)queue_resume(s->queue);

	supervisor_set_status(s, "starting http server");
	for (size_t i = 0; i < s->listeners.n; i++)
		log_debug(NULL, "listening on http://%s", s->listeners.names[i]);
	child_init(&s->frontend, s->loop, "vminfod-frontend", spawn_frontend, on_frontend, s);
	if (!s->opt.no_frontend)
		(void)child_start(&s->frontend);

	supervisor_set_status(s, "starting refresh timers");
	refresh_arm(s);
	supervisor_set_state(s, "running");
	supervisor_set_status(s, "working");
	char took[80];
	tu_pretty_delta(tu_mono_ns() - s->start_ns, took);
	log_info(NULL, "boot sequence complete, took %s", took);
	/* Loading left freed temporaries all over the heap; give them back. */
	(void)malloc_trim(0);
	publish_status(s);
	if (s->opt.no_frontend)
		notify_serving(s);
	return 0;
}

static void shutdown_all(struct supervisor *s)
{
	notify_done(&s->notify);
	refresh_done(s);
	ev_timer_stop(s->loop, &s->status_timer);
	ev_prepare_stop(s->loop, &s->prepare);
	if (s->fsw) {
		fsw_stop(s->fsw);
		fsw_free(s->fsw);
	}
	if (s->queue)
		queue_free(s->queue);
	vms_free_all(s);
	struct strmap_entry *me;
	for (me = s->watches.head; me; me = me->next) {
		struct watch_info *wi = me->value;
		free(wi->zonename);
		free(wi);
	}
	strmap_done(&s->watches);
	for (me = s->zone_watches.head; me; me = me->next) {
		struct zone_watch *zw = me->value;
		for (int i = 0; i < ZONE_WATCHES; i++)
			free(zw->paths[i]);
		free(zw);
	}
	strmap_done(&s->zone_watches);
	strmap_done(&s->index_map);
	zoneindex_done(&s->index);
	json_decref(s->sysinfo);
	publish_free(s->pub);
	if (s->ring)
		ring_writer_close(s->ring);
	if (s->doorbell_fd >= 0)
		close(s->doorbell_fd);
	if (s->events_fd >= 0)
		close(s->events_fd);
	listen_close(&s->listeners);
	vmload_ctx_done(&s->vl);
	free(s->index_path);
	free(s->sysinfo_path);
	free(s->ring_path);
}

int supervisor_run(const struct options *opt)
{
	struct supervisor s;
	memset(&s, 0, sizeof(s));
	s.opt = *opt;
	s.doorbell_fd = -1;
	s.events_fd = -1;
	s.state = "stopped";
	s.status = "initialized";
	s.loop = ev_default_loop(EVFLAG_SIGNALFD);
	if (!s.loop) {
		log_fatal(NULL, "cannot create the event loop");
		return 1;
	}
	char err[256];
	int r = notify_init(&s.notify);
	if (r < 0)
		log_warn(log_err_fields(strerror(-r), NULL), "bad NOTIFY_SOCKET, not notifying the service manager");
	r = listen_from_env(&s.listeners);
	if (r < 0) {
		log_fatal(log_err_fields(strerror(-r), NULL), "bad LISTEN_FDS from the environment");
		return 1;
	}
	if (r == 0) {
		for (size_t i = 0; i < opt->nlisten; i++) {
			if (listen_add(&s.listeners, opt->listen[i], err, sizeof(err)) < 0) {
				log_fatal(NULL, "%s", err);
				listen_close(&s.listeners);
				return 1;
			}
			/* An orphaned frontend of a previous supervisor may still
			 * share the port (SO_REUSEPORT) and, when it handed over
			 * before, left a program steering connections to the
			 * group's second socket: remove it, so that the orphan of
			 * our predecessor keeps its share until our frontend is
			 * accepting.  ENOENT (none) is the usual answer. */
			int zero = 0;
			(void)setsockopt(s.listeners.fds[i], SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, &zero, sizeof(zero));
		}
	}
	signal(SIGPIPE, SIG_IGN);
	ev_signal_init(&s.sigterm, on_signal, SIGTERM);
	ev_signal_init(&s.sigint, on_signal, SIGINT);
	ev_signal_init(&s.sighup, on_signal, SIGHUP);
	s.sigterm.data = s.sigint.data = s.sighup.data = &s;
	ev_signal_start(s.loop, &s.sigterm);
	ev_signal_start(s.loop, &s.sigint);
	ev_signal_start(s.loop, &s.sighup);
	ev_timer_init(&s.status_timer, on_status_timer, HEARTBEAT_S, 0.);
	s.status_timer.data = &s;
	ev_timer_start(s.loop, &s.status_timer);
	ev_prepare_init(&s.prepare, on_prepare);
	s.prepare.data = &s;
	ev_prepare_start(s.loop, &s.prepare);

	r = boot(&s);
	if (r < 0) {
		log_fatal(log_err_fields(strerror(-r), NULL), "failed to complete boot sequence");
		shutdown_all(&s);
		return 1;
	}
	if (!s.stopping)
		ev_run(s.loop, 0);
	log_info(NULL, "vminfod stopped");
	shutdown_all(&s);
	return 0;
}
