/* test_ring.c - the ring file: round trips, the snapshot invariant, size
 * limits, overtaken readers, concurrent readers in other processes (no
 * torn record, ever), bad files and restarts, the status area. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "ring.h"

#define SMALL (64 * 1024)

struct fx {
	char dir[64];
	char path[96];
};

static int setup(void **state)
{
	struct fx *fx = calloc(1, sizeof *fx);
	if (!fx)
		return -1;
	snprintf(fx->dir, sizeof fx->dir, "/tmp/test_ring.XXXXXX");
	if (!mkdtemp(fx->dir)) {
		free(fx);
		return -1;
	}
	snprintf(fx->path, sizeof fx->path, "%s/vminfod.ring", fx->dir);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fx *fx = *state;
	char p[128];
	(void)unlink(fx->path);
	snprintf(p, sizeof p, "%s.tmp", fx->path);
	(void)unlink(p);
	(void)rmdir(fx->dir);
	free(fx);
	return 0;
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static struct ring_writer *wopen(const char *path, size_t size, bool *kept, char *why)
{
	struct ring_writer *w = NULL;
	bool k = false;
	char wb[64];
	assert_int_equal(ring_writer_open(path, size, &w, &k, why ? why : wb, 64), 0);
	assert_non_null(w);
	if (kept)
		*kept = k;
	return w;
}

static struct ring_reader *ropen(const char *path)
{
	struct ring_reader *r = NULL;
	assert_int_equal(ring_reader_open(path, &r), 0);
	return r;
}

/* ---- deterministic payloads: a reader can rebuild every byte from the
 * version alone, so any torn or misplaced byte is caught ---- */

static void pattern(struct buf *b, uint64_t seed, size_t len)
{
	for (size_t i = 0; i < len; i++)
		assert_int_equal(buf_addc(b, (char)('a' + (seed + i) % 26)), 0);
}

/* The event line of version v, its zonename and VM object position. */
static void ev_make(uint64_t v, size_t maxpad, struct buf *line, char *zone, size_t *vm_off, size_t *vm_len,
		    enum ring_ev_type *type)
{
	buf_reset(line);
	*type = (enum ring_ev_type)(v % 3 + 1);
	snprintf(zone, 32, "zone-%u", (unsigned)(v % 7));
	assert_int_equal(buf_printf(line, "{\"type\":%d,\"zonename\":\"%s\",", (int)*type, zone), 0);
	*vm_off = line->len + 5;
	assert_int_equal(buf_printf(line, "\"vm\":{\"v\":%llu,\"pad\":\"", (unsigned long long)v), 0);
	pattern(line, v, (size_t)((v * 7919) % maxpad));
	assert_int_equal(buf_adds(line, "\"}"), 0);
	*vm_len = line->len - *vm_off;
	assert_int_equal(buf_printf(line, ",\"version\":%llu}\n", (unsigned long long)v), 0);
	if (*type == RING_EV_DELETE)
		*vm_off = *vm_len = 0;
}

static int ev_publish(struct ring_writer *w, size_t maxpad, struct buf *line)
{
	uint64_t v = ring_writer_version(w) + 1;
	char zone[32];
	size_t off, len;
	enum ring_ev_type t;
	ev_make(v, maxpad, line, zone, &off, &len, &t);
	return ring_writer_event(w, t, zone, strlen(zone), line->data, line->len, off, len);
}

/* True when rec is exactly event v. */
static bool ev_check(const struct ring_rec *rec, uint64_t v, size_t maxpad, struct buf *line)
{
	char zone[32];
	size_t off, len;
	enum ring_ev_type t;
	ev_make(v, maxpad, line, zone, &off, &len, &t);
	return rec->type == RING_REC_EVENT && rec->version == v && rec->ev_type == t &&
	       rec->zonename_len == strlen(zone) && memcmp(rec->zonename, zone, rec->zonename_len) == 0 &&
	       rec->zonename[rec->zonename_len] == '\0' && rec->line_len == line->len &&
	       memcmp(rec->line, line->data, line->len) == 0 && rec->line[rec->line_len] == '\0' &&
	       rec->vm_off == off && rec->vm_len == len;
}

/* Snapshot at version v: v % 5 VMs with JSON derived from (v, i). */
#define SNAP_MAX 5
struct snapgen {
	struct buf z[SNAP_MAX], j[SNAP_MAX];
	struct ring_snap_vm vms[SNAP_MAX];
	size_t n;
};

static void snap_make(struct snapgen *g, uint64_t v)
{
	g->n = v % SNAP_MAX;
	for (size_t i = 0; i < g->n; i++) {
		buf_reset(&g->z[i]);
		buf_reset(&g->j[i]);
		assert_int_equal(buf_printf(&g->z[i], "zone-%zu", i), 0);
		assert_int_equal(buf_printf(&g->j[i], "{\"snap\":%llu,\"i\":%zu,\"pad\":\"", (unsigned long long)v, i),
				 0);
		pattern(&g->j[i], v + i, (size_t)((v * 31 + i) % 500));
		assert_int_equal(buf_adds(&g->j[i], "\"}"), 0);
		g->vms[i] = (struct ring_snap_vm){ g->z[i].data, g->z[i].len, g->j[i].data, g->j[i].len };
	}
}

static void snap_gen_done(struct snapgen *g)
{
	for (size_t i = 0; i < SNAP_MAX; i++) {
		buf_done(&g->z[i]);
		buf_done(&g->j[i]);
	}
}

static bool snap_check(const struct ring_rec *rec, struct snapgen *g)
{
	if (rec->type != RING_REC_SNAPSHOT)
		return false;
	snap_make(g, rec->version);
	if (rec->nvms != g->n)
		return false;
	for (size_t i = 0; i < g->n; i++) {
		const struct ring_snap_vm *a = &rec->vms[i], *b = &g->vms[i];
		if (a->zonename_len != b->zonename_len || memcmp(a->zonename, b->zonename, a->zonename_len) ||
		    a->json_len != b->json_len || memcmp(a->json, b->json, a->json_len) || a->json[a->json_len])
			return false;
	}
	return true;
}

struct cbstate {
	struct snapgen g;
	const char *path; /* when set: check the old snapshot is still intact */
	int calls;
};

static int snap_cb(struct ring_writer *w, void *arg)
{
	struct cbstate *cs = arg;
	cs->calls++;
	if (cs->path && cs->calls > 1) {
		/* Called before the old snapshot is overwritten: it still loads. */
		struct ring_reader *r = ropen(cs->path);
		struct ring_rec rec = RING_REC_INIT;
		assert_int_equal(ring_reader_snapshot(r, &rec), 0);
		assert_true(snap_check(&rec, &cs->g));
		ring_rec_done(&rec);
		ring_reader_close(r);
	}
	snap_make(&cs->g, ring_writer_version(w));
	return ring_writer_snapshot(w, cs->g.vms, cs->g.n);
}

/* ---- tests ---- */

static void test_ring_round_trip(void **state)
{
	struct fx *fx = *state;
	bool kept = true;
	char why[64];
	struct ring_writer *w = wopen(fx->path, SMALL, &kept, why);
	assert_false(kept);
	assert_string_equal(why, "missing");
	assert_int_equal(strlen(ring_writer_epoch(w)), RING_EPOCH_LEN);
	assert_int_equal(ring_writer_version(w), 0);
	struct stat st;
	assert_int_equal(stat(fx->path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0644);
	assert_int_equal(st.st_size, SMALL);

	struct ring_reader *r = ropen(fx->path);
	struct ring_rec rec = RING_REC_INIT;
	assert_int_equal(ring_reader_snapshot(r, &rec), -ENOENT);
	assert_int_equal(ring_reader_event(r, 1, &rec), -ENOENT);
	assert_int_equal(ring_reader_event(r, 0, &rec), -EINVAL);
	assert_int_equal(ring_reader_head_version(r), 0);
	char epoch[RING_EPOCH_LEN + 1];
	assert_int_equal(ring_reader_epoch(r, epoch), 0);
	assert_string_equal(epoch, ring_writer_epoch(w));
	pid_t pid;
	uint64_t gen, hb;
	ring_writer_heartbeat(w, 12345);
	ring_reader_writer(r, &pid, &gen, &hb);
	assert_int_equal(pid, getpid());
	assert_int_equal(gen, 1);
	assert_int_equal(hb, 12345);
	assert_false(ring_reader_replaced(r));

	struct ring_snap_vm vms[2] = { { "a", 1, "{\"zonename\":\"a\"}", 16 }, { "bb", 2, "{}", 2 } };
	assert_int_equal(ring_writer_snapshot(w, vms, 2), 0);
	assert_int_equal(ring_reader_snapshot(r, &rec), 0);
	assert_int_equal(rec.type, RING_REC_SNAPSHOT);
	assert_int_equal(rec.version, 0);
	assert_int_equal(rec.nvms, 2);
	assert_int_equal(rec.vms[0].zonename_len, 1);
	assert_memory_equal(rec.vms[0].zonename, "a", 2);
	assert_memory_equal(rec.vms[0].json, "{\"zonename\":\"a\"}", 17);
	assert_memory_equal(rec.vms[1].zonename, "bb", 3);
	assert_memory_equal(rec.vms[1].json, "{}", 3);

	const char *l1 = "{\"type\":\"modify\",\"vm\":{\"x\":1},\"version\":1}\n";
	assert_int_equal(ring_writer_event(w, RING_EV_MODIFY, "a", 1, l1, strlen(l1), 22, 7), 0);
	const char *l2 = "{\"type\":\"delete\",\"version\":2}\n";
	assert_int_equal(ring_writer_event(w, RING_EV_DELETE, "bb", 2, l2, strlen(l2), 0, 0), 0);
	assert_int_equal(ring_writer_version(w), 2);
	assert_int_equal(ring_reader_head_version(r), 2);
	assert_int_equal(ring_reader_oldest_version(r), 1);

	assert_int_equal(ring_reader_event(r, 1, &rec), 0);
	assert_int_equal(rec.type, RING_REC_EVENT);
	assert_int_equal(rec.version, 1);
	assert_int_equal(rec.ev_type, RING_EV_MODIFY);
	assert_int_equal(rec.zonename_len, 1);
	assert_string_equal(rec.zonename, "a");
	assert_int_equal(rec.line_len, strlen(l1));
	assert_string_equal(rec.line, l1);
	assert_memory_equal(rec.line + rec.vm_off, "{\"x\":1}", rec.vm_len);
	assert_int_equal(ring_reader_event(r, 2, &rec), 0);
	assert_int_equal(rec.ev_type, RING_EV_DELETE);
	assert_string_equal(rec.zonename, "bb");
	assert_string_equal(rec.line, l2);
	assert_int_equal(rec.vm_off, 0);
	assert_int_equal(rec.vm_len, 0);
	assert_int_equal(ring_reader_event(r, 3, &rec), -ENOENT);
	/* The snapshot still reads after events were added. */
	assert_int_equal(ring_reader_snapshot(r, &rec), 0);
	assert_int_equal(rec.nvms, 2);

	ring_rec_done(&rec);
	ring_reader_close(r);
	ring_writer_close(w);
}

/* After every append: the newest snapshot loads and every event after it
 * is readable (the ring is always resumable). */
static void check_resumable(const char *path, size_t maxpad, struct buf *line, struct snapgen *g)
{
	struct ring_reader *r = ropen(path);
	struct ring_rec rec = RING_REC_INIT;
	assert_int_equal(ring_reader_snapshot(r, &rec), 0);
	assert_true(snap_check(&rec, g));
	uint64_t head = ring_reader_head_version(r);
	assert_true(ring_reader_oldest_version(r) <= rec.version + 1);
	for (uint64_t v = rec.version + 1; v <= head; v++) {
		assert_int_equal(ring_reader_event(r, v, &rec), 0);
		assert_true(ev_check(&rec, v, maxpad, line));
	}
	ring_rec_done(&rec);
	ring_reader_close(r);
}

static void run_resumable(const char *path, size_t maxpad, int n)
{
	struct ring_writer *w = wopen(path, SMALL, NULL, NULL);
	struct cbstate cs = { .path = path };
	struct snapgen g = { 0 };
	struct buf line = BUF_INIT, line2 = BUF_INIT;
	ring_writer_set_snapshot_cb(w, snap_cb, &cs);
	for (int i = 0; i < n; i++) {
		assert_int_equal(ev_publish(w, maxpad, &line), 0);
		check_resumable(path, maxpad, &line2, &g);
	}
	/* The first call made the initial snapshot; later ones kept it alive. */
	assert_true(cs.calls > 2);
	struct ring_reader *r = ropen(path);
	/* Old events are gone by now. */
	assert_true(ring_reader_oldest_version(r) > 1);
	struct ring_rec rec = RING_REC_INIT;
	assert_int_equal(ring_reader_event(r, 1, &rec), -ESTALE);
	ring_rec_done(&rec);
	ring_reader_close(r);
	buf_done(&line);
	buf_done(&line2);
	snap_gen_done(&g);
	snap_gen_done(&cs.g);
	ring_writer_close(w);
}

static void test_ring_snapshot_cb_keeps_ring_resumable(void **state)
{
	struct fx *fx = *state;
	/* Large events: the data area wraps (with PAD records). */
	run_resumable(fx->path, 3000, 600);
}

static void test_ring_snapshot_cb_when_index_wraps(void **state)
{
	struct fx *fx = *state;
	/* Tiny events: the index wraps before the data area does. */
	run_resumable(fx->path, 2, 1500);
}

static void test_ring_oversize_record_refused(void **state)
{
	struct fx *fx = *state;
	struct ring_writer *w = wopen(fx->path, SMALL, NULL, NULL);
	struct ring_snap_vm vm = { "a", 1, "{}", 2 };
	assert_int_equal(ring_writer_snapshot(w, &vm, 1), 0);
	const char *l1 = "{\"version\":1}\n";
	assert_int_equal(ring_writer_event(w, RING_EV_CREATE, "a", 1, l1, strlen(l1), 0, 0), 0);

	struct ring_reader *r = ropen(fx->path);
	size_t big = SMALL / 4;
	char *line = malloc(big);
	assert_non_null(line);
	memset(line, 'x', big);
	assert_int_equal(ring_writer_event(w, RING_EV_CREATE, "a", 1, line, big, 0, 0), -EMSGSIZE);
	struct ring_snap_vm bigvm = { "a", 1, line, big };
	assert_int_equal(ring_writer_snapshot(w, &bigvm, 1), -EMSGSIZE);
	assert_int_equal(ring_writer_event(w, RING_EV_CREATE, "a", 1, l1, strlen(l1), 10, 10), -EINVAL);
	assert_int_equal(ring_writer_event(w, 9, "a", 1, l1, strlen(l1), 0, 0), -EINVAL);
	assert_int_equal(ring_writer_version(w), 1);
	assert_int_equal(ring_reader_head_version(r), 1);
	struct ring_rec rec = RING_REC_INIT;
	assert_int_equal(ring_reader_event(r, 1, &rec), 0);
	assert_string_equal(rec.line, l1);
	assert_int_equal(ring_reader_event(r, 2, &rec), -ENOENT);
	assert_int_equal(ring_reader_snapshot(r, &rec), 0);
	assert_int_equal(rec.nvms, 1);
	/* Somewhat smaller fits. */
	assert_int_equal(ring_writer_event(w, RING_EV_CREATE, "a", 1, line, big / 2, 0, 0), 0);
	assert_int_equal(ring_reader_event(r, 2, &rec), 0);
	assert_int_equal(rec.line_len, big / 2);
	/* Status larger than its area. */
	size_t smax = ring_writer_status_max(w);
	char *st = calloc(1, smax + 1);
	assert_non_null(st);
	assert_int_equal(ring_writer_status(w, st, smax + 1), -EMSGSIZE);
	free(st);
	ring_rec_done(&rec);
	ring_reader_close(r);
	free(line);
	ring_writer_close(w);
}

static int failing_cb(struct ring_writer *w, void *arg)
{
	int *calls = arg;
	(*calls)++;
	return -EMSGSIZE; /* e.g. the VM set outgrew a quarter of the ring */
}

static void test_ring_snapshot_cb_failure_refuses_event(void **state)
{
	struct fx *fx = *state;
	struct ring_writer *w = wopen(fx->path, SMALL, NULL, NULL);
	int calls = 0;
	struct buf line = BUF_INIT;
	ring_writer_set_snapshot_cb(w, failing_cb, &calls);
	/* No snapshot yet: the first event needs one. */
	assert_int_equal(ev_publish(w, 100, &line), -EMSGSIZE);
	assert_int_equal(calls, 1);
	assert_int_equal(ring_writer_version(w), 0);
	struct ring_snap_vm vm = { "a", 1, "{}", 2 };
	assert_int_equal(ring_writer_snapshot(w, &vm, 1), 0);
	int i, e = 0;
	for (i = 0; i < 1000 && (e = ev_publish(w, 1000, &line)) == 0; i++)
		;
	/* Appends went on until the snapshot was about to be overwritten. */
	assert_int_equal(e, -EMSGSIZE);
	assert_int_equal(calls, 2);
	assert_true(i > 10);
	assert_int_equal(ring_writer_version(w), (uint64_t)i);
	struct ring_reader *r = ropen(fx->path);
	struct ring_rec rec = RING_REC_INIT;
	assert_int_equal(ring_reader_snapshot(r, &rec), 0);
	assert_int_equal(rec.version, 0);
	assert_int_equal(ring_reader_event(r, 1, &rec), 0);
	assert_int_equal(ring_reader_event(r, (uint64_t)i, &rec), 0);
	assert_int_equal(ring_reader_event(r, (uint64_t)i + 1, &rec), -ENOENT);
	ring_rec_done(&rec);
	ring_reader_close(r);
	buf_done(&line);
	ring_writer_close(w);
}

static void test_ring_reader_falls_behind_and_recovers(void **state)
{
	struct fx *fx = *state;
	struct ring_writer *w = wopen(fx->path, SMALL, NULL, NULL);
	struct cbstate cs = { 0 };
	struct snapgen g = { 0 };
	struct buf line = BUF_INIT;
	ring_writer_set_snapshot_cb(w, snap_cb, &cs);
	assert_int_equal(ev_publish(w, 1000, &line), 0);

	struct ring_reader *r = ropen(fx->path);
	struct ring_rec rec = RING_REC_INIT;
	assert_int_equal(ring_reader_snapshot(r, &rec), 0);
	uint64_t cursor = rec.version;
	for (int i = 0; i < 300; i++)
		assert_int_equal(ev_publish(w, 1000, &line), 0);
	assert_int_equal(ring_reader_event(r, cursor + 1, &rec), -ESTALE);
	uint64_t oldest = ring_reader_oldest_version(r);
	assert_true(oldest > cursor + 1);
	assert_int_equal(ring_reader_event(r, oldest - 1, &rec), -ESTALE);
	/* Recover: newest snapshot, then every event after it. */
	assert_int_equal(ring_reader_snapshot(r, &rec), 0);
	assert_true(snap_check(&rec, &g));
	assert_true(rec.version + 1 >= oldest);
	uint64_t head = ring_reader_head_version(r);
	assert_int_equal(head, 301);
	for (uint64_t v = rec.version + 1; v <= head; v++) {
		assert_int_equal(ring_reader_event(r, v, &rec), 0);
		assert_true(ev_check(&rec, v, 1000, &line));
	}
	ring_rec_done(&rec);
	ring_reader_close(r);
	buf_done(&line);
	snap_gen_done(&g);
	snap_gen_done(&cs.g);
	ring_writer_close(w);
}

/* ---- many processes ---- */

#define HAMMER_EVENTS 20000
#define HAMMER_READERS 3
#define HAMMER_PAD 1500
#define DEADLINE_NS (20ull * 1000000000ull)

struct rstats {
	uint64_t events, snapshots, stale, bad;
	uint64_t last;
};

/* One reader process: follow the ring to HAMMER_EVENTS, verifying every
 * byte; `lag`: wait for the writer to be far ahead once, to be overtaken
 * for sure. */
static void hammer_reader(const char *path, int ready_fd, int out_fd, bool lag)
{
	struct rstats s = { 0 };
	struct ring_reader *r = NULL;
	if (ring_reader_open(path, &r) < 0)
		_exit(2);
	char c = 'r';
	if (write(ready_fd, &c, 1) != 1)
		_exit(2);
	close(ready_fd);
	struct ring_rec rec = RING_REC_INIT;
	struct buf line = BUF_INIT;
	struct snapgen g = { 0 };
	uint64_t cursor = 0, deadline = now_ns() + DEADLINE_NS;
	bool need_snap = true;
	while (cursor < HAMMER_EVENTS && now_ns() < deadline) {
		if (need_snap) {
			int e = ring_reader_snapshot(r, &rec);
			if (e == -EAGAIN || e == -ENOENT) {
				sched_yield();
				continue;
			}
			if (e < 0 || !snap_check(&rec, &g)) {
				s.bad++;
				break;
			}
			s.snapshots++;
			cursor = rec.version;
			need_snap = false;
			if (lag) {
				lag = false;
				while (ring_reader_head_version(r) < cursor + 2000 && now_ns() < deadline)
					sched_yield();
			}
			continue;
		}
		int e = ring_reader_event(r, cursor + 1, &rec);
		if (e == 0) {
			if (!ev_check(&rec, cursor + 1, HAMMER_PAD, &line)) {
				s.bad++;
				break;
			}
			s.events++;
			cursor++;
		} else if (e == -ENOENT) {
			sched_yield();
		} else if (e == -ESTALE) {
			s.stale++;
			need_snap = true;
		} else {
			s.bad++;
			break;
		}
	}
	s.last = cursor;
	if (write(out_fd, &s, sizeof s) != (ssize_t)sizeof s)
		_exit(3);
	_exit(0);
}

static void test_ring_hammer_readers_never_see_torn_records(void **state)
{
	struct fx *fx = *state;
	struct ring_writer *w = wopen(fx->path, SMALL, NULL, NULL);
	struct cbstate cs = { 0 };
	ring_writer_set_snapshot_cb(w, snap_cb, &cs);
	int ready[2], out[2];
	assert_int_equal(pipe2(ready, O_CLOEXEC), 0);
	assert_int_equal(pipe2(out, O_CLOEXEC), 0);
	pid_t pids[HAMMER_READERS + 1];
	for (int i = 0; i <= HAMMER_READERS; i++) {
		pids[i] = fork();
		assert_true(pids[i] >= 0);
		if (pids[i] == 0) {
			close(ready[0]);
			close(out[0]);
			hammer_reader(fx->path, ready[1], out[1], i == HAMMER_READERS);
		}
	}
	close(ready[1]);
	close(out[1]);
	/* Start once every reader has the ring mapped. */
	for (int i = 0; i <= HAMMER_READERS; i++) {
		char c;
		assert_int_equal(read(ready[0], &c, 1), 1);
	}
	close(ready[0]);
	struct buf line = BUF_INIT;
	for (int i = 0; i < HAMMER_EVENTS; i++) {
		assert_int_equal(ev_publish(w, HAMMER_PAD, &line), 0);
		if (i % 64 == 0)
			sched_yield();
	}
	uint64_t stale = 0, events = 0;
	for (int i = 0; i <= HAMMER_READERS; i++) {
		int status;
		assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
	}
	for (int i = 0; i <= HAMMER_READERS; i++) {
		struct rstats s;
		assert_int_equal(read(out[0], &s, sizeof s), sizeof s);
		assert_int_equal(s.bad, 0);
		assert_int_equal(s.last, HAMMER_EVENTS);
		assert_true(s.snapshots >= 1);
		stale += s.stale;
		events += s.events;
	}
	close(out[0]);
	print_message("hammer: %d events, %d readers read %llu events, overtaken %llu times, %d snapshots written\n",
		      HAMMER_EVENTS, HAMMER_READERS + 1, (unsigned long long)events, (unsigned long long)stale,
		      cs.calls);
	/* The lagging reader was overtaken at least once. */
	assert_true(stale >= 1);
	buf_done(&line);
	snap_gen_done(&cs.g);
	ring_writer_close(w);
}

/* ---- bad files and restarts ---- */

static void write_file(const char *path, const void *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	close(fd);
}

/* Opening `path` as a writer gives a new epoch for `want_why`, and the new
 * file is a working ring. */
static void expect_new_epoch(const char *path, size_t size, const char *want_why)
{
	bool kept = true;
	char why[64];
	struct ring_writer *w = wopen(path, size, &kept, why);
	assert_false(kept);
	assert_string_equal(why, want_why);
	assert_int_equal(ring_writer_version(w), 0);
	struct ring_snap_vm vm = { "a", 1, "{}", 2 };
	assert_int_equal(ring_writer_snapshot(w, &vm, 1), 0);
	struct ring_reader *r = ropen(path);
	struct ring_rec rec = RING_REC_INIT;
	assert_int_equal(ring_reader_snapshot(r, &rec), 0);
	char epoch[RING_EPOCH_LEN + 1];
	assert_int_equal(ring_reader_epoch(r, epoch), 0);
	assert_string_equal(epoch, ring_writer_epoch(w));
	ring_rec_done(&rec);
	ring_reader_close(r);
	ring_writer_close(w);
}

static void test_ring_bad_files_get_new_epoch(void **state)
{
	struct fx *fx = *state;
	struct ring_reader *r = NULL;

	/* Random bytes. */
	size_t n = SMALL;
	uint8_t *junk = malloc(n);
	assert_non_null(junk);
	srand(42);
	for (size_t i = 0; i < n; i++)
		junk[i] = (uint8_t)rand();
	write_file(fx->path, junk, n);
	assert_int_equal(ring_reader_open(fx->path, &r), -EPROTO);
	expect_new_epoch(fx->path, SMALL, "foreign magic");

	/* A foreign file. */
	write_file(fx->path, "hello, world\n", 13);
	assert_int_equal(ring_reader_open(fx->path, &r), -EPROTO);
	expect_new_epoch(fx->path, SMALL, "foreign magic");

	/* An empty file. */
	write_file(fx->path, "", 0);
	assert_int_equal(ring_reader_open(fx->path, &r), -EPROTO);
	expect_new_epoch(fx->path, SMALL, "truncated");

	/* A truncated ring: whole header, short file. */
	assert_int_equal(truncate(fx->path, 8192), 0);
	assert_int_equal(ring_reader_open(fx->path, &r), -EPROTO);
	expect_new_epoch(fx->path, SMALL, "truncated");
	/* ... and one cut inside its header. */
	assert_int_equal(truncate(fx->path, 100), 0);
	expect_new_epoch(fx->path, SMALL, "truncated");

	/* Another format version. */
	int fd = open(fx->path, O_RDWR | O_CLOEXEC);
	assert_true(fd >= 0);
	uint32_t v = 99;
	assert_int_equal(pwrite(fd, &v, 4, 8), 4);
	close(fd);
	assert_int_equal(ring_reader_open(fx->path, &r), -EPROTO);
	expect_new_epoch(fx->path, SMALL, "format version");

	/* A valid ring of another size: readers that have it mapped are told
	 * it was replaced. */
	struct ring_reader *old = ropen(fx->path);
	char old_epoch[RING_EPOCH_LEN + 1];
	assert_int_equal(ring_reader_epoch(old, old_epoch), 0);
	assert_false(ring_reader_replaced(old));
	bool kept = true;
	char why[64];
	struct ring_writer *w = wopen(fx->path, 2 * SMALL, &kept, why);
	assert_false(kept);
	assert_string_equal(why, "size");
	assert_string_not_equal(ring_writer_epoch(w), old_epoch);
	assert_true(ring_reader_replaced(old));
	/* The old mapping still reads (what it had). */
	struct ring_rec rec = RING_REC_INIT;
	assert_int_equal(ring_reader_snapshot(old, &rec), 0);
	ring_rec_done(&rec);
	ring_reader_close(old);
	/* A second writer is refused while the first has it. */
	struct ring_writer *w2 = NULL;
	assert_int_equal(ring_writer_open(fx->path, 2 * SMALL, &w2, &kept, why, sizeof why), -EBUSY);
	ring_writer_close(w);

	/* Corrupt positions in a valid header. */
	fd = open(fx->path, O_RDWR | O_CLOEXEC);
	assert_true(fd >= 0);
	uint64_t bad = 12345;
	assert_int_equal(pwrite(fd, &bad, 8, 152), 8); /* head_pos */
	close(fd);
	expect_new_epoch(fx->path, 2 * SMALL, "corrupt");

	/* A valid header whose records were overwritten with junk. */
	w = wopen(fx->path, SMALL, NULL, NULL);
	const char *l = "{\"version\":1}\n";
	assert_int_equal(ring_writer_event(w, RING_EV_CREATE, "a", 1, l, strlen(l), 0, 0), 0);
	ring_writer_close(w);
	fd = open(fx->path, O_RDWR | O_CLOEXEC);
	assert_true(fd >= 0);
	struct stat st;
	assert_int_equal(fstat(fd, &st), 0);
	/* The data area is the last part of the file; its start is the first
	 * record (nothing has wrapped). */
	uint64_t data_off;
	assert_int_equal(pread(fd, &data_off, 8, 56), 8);
	assert_int_equal(pwrite(fd, junk, 256, (off_t)data_off), 256);
	close(fd);
	expect_new_epoch(fx->path, SMALL, "corrupt");

	/* A directory where the file should be is an error, not a crash. */
	assert_int_equal(unlink(fx->path), 0);
	assert_int_equal(mkdir(fx->path, 0755), 0);
	w = NULL;
	assert_true(ring_writer_open(fx->path, SMALL, &w, &kept, why, sizeof why) < 0);
	assert_int_equal(ring_reader_open(fx->path, &r), -EPROTO);
	assert_int_equal(rmdir(fx->path), 0);
	/* Too small a size. */
	assert_int_equal(ring_writer_open(fx->path, 4096, &w, &kept, why, sizeof why), -EINVAL);
	free(junk);
}

struct collected {
	char names[16][32];
	char jsons[16][64];
	int n;
};

static void collect(void *arg, const char *z, size_t zl, const char *j, size_t jl)
{
	struct collected *c = arg;
	assert_true(c->n < 16 && zl < 32 && jl < 64);
	memcpy(c->names[c->n], z, zl);
	c->names[c->n][zl] = '\0';
	memcpy(c->jsons[c->n], j, jl);
	c->jsons[c->n][jl] = '\0';
	c->n++;
}

/* A mechanical model of last_state: create/modify replace in place or
 * append, delete removes. */
struct model {
	char zone[16][32];
	char *json[16];
	size_t jlen[16];
	size_t n, next;
};

static void model_put(struct model *m, const char *zone, const char *json, size_t jlen)
{
	size_t i;
	for (i = 0; i < m->n && strcmp(m->zone[i], zone); i++)
		;
	if (i == m->n) {
		assert_true(m->n < 16);
		snprintf(m->zone[m->n++], 32, "%s", zone);
	}
	free(m->json[i]);
	m->json[i] = strndup(json, jlen);
	assert_non_null(m->json[i]);
	m->jlen[i] = jlen;
}

static void model_del(struct model *m, const char *zone)
{
	for (size_t i = 0; i < m->n; i++) {
		if (strcmp(m->zone[i], zone) == 0) {
			free(m->json[i]);
			memmove(&m->zone[i], &m->zone[i + 1], (m->n - i - 1) * sizeof m->zone[0]);
			memmove(&m->json[i], &m->json[i + 1], (m->n - i - 1) * sizeof m->json[0]);
			memmove(&m->jlen[i], &m->jlen[i + 1], (m->n - i - 1) * sizeof m->jlen[0]);
			m->n--;
			m->json[m->n] = NULL;
			return;
		}
	}
}

static void model_check(void *arg, const char *z, size_t zl, const char *j, size_t jl)
{
	struct model *m = arg;
	assert_true(m->next < m->n);
	assert_int_equal(zl, strlen(m->zone[m->next]));
	assert_memory_equal(z, m->zone[m->next], zl);
	assert_int_equal(jl, m->jlen[m->next]);
	assert_memory_equal(j, m->json[m->next], jl);
	m->next++;
}

static void model_done(struct model *m)
{
	for (size_t i = 0; i < m->n; i++)
		free(m->json[i]);
}

static void publish(struct ring_writer *w, enum ring_ev_type t, const char *zone, const char *vm)
{
	char line[256];
	int n = snprintf(line, sizeof line, "{\"zonename\":\"%s\",\"vm\":%s,\"version\":%llu}\n", zone,
			 vm ? vm : "null", (unsigned long long)ring_writer_version(w) + 1);
	size_t off = t == RING_EV_DELETE ? 0 : strlen("{\"zonename\":\"\",\"vm\":") + strlen(zone);
	size_t len = t == RING_EV_DELETE ? 0 : strlen(vm);
	assert_int_equal(ring_writer_event(w, t, zone, strlen(zone), line, (size_t)n, off, len), 0);
}

static void test_ring_reopen_keeps_epoch_and_last_state(void **state)
{
	struct fx *fx = *state;
	struct ring_writer *w = wopen(fx->path, SMALL, NULL, NULL);
	struct collected c = { 0 };
	assert_int_equal(ring_writer_last_state(w, collect, &c), -ENOENT);
	struct ring_snap_vm vms[3] = { { "a", 1, "{\"a\":0}", 7 }, { "b", 1, "{\"b\":0}", 7 }, { "c", 1, "{\"c\":0}", 7 } };
	assert_int_equal(ring_writer_snapshot(w, vms, 3), 0);
	publish(w, RING_EV_MODIFY, "b", "{\"b\":1}");
	publish(w, RING_EV_DELETE, "a", NULL);
	publish(w, RING_EV_CREATE, "d", "{\"d\":1}");
	publish(w, RING_EV_CREATE, "a", "{\"a\":2}");
	publish(w, RING_EV_DELETE, "c", NULL);
	publish(w, RING_EV_MODIFY, "d", "{\"d\":2}");
	assert_int_equal(ring_writer_status(w, "{\"x\":1}", 7), 0);
	char epoch[RING_EPOCH_LEN + 1];
	strcpy(epoch, ring_writer_epoch(w));
	ring_writer_close(w);

	struct ring_reader *r = ropen(fx->path);
	bool kept = false;
	char why[64];
	w = wopen(fx->path, SMALL, &kept, why);
	assert_true(kept);
	assert_string_equal(why, "kept");
	assert_string_equal(ring_writer_epoch(w), epoch);
	assert_int_equal(ring_writer_version(w), 6);
	assert_false(ring_reader_replaced(r));
	uint64_t gen;
	ring_reader_writer(r, NULL, &gen, NULL);
	assert_int_equal(gen, 2);
	assert_int_equal(ring_writer_last_state(w, collect, &c), 0);
	assert_int_equal(c.n, 3);
	assert_string_equal(c.names[0], "b");
	assert_string_equal(c.jsons[0], "{\"b\":1}");
	assert_string_equal(c.names[1], "d");
	assert_string_equal(c.jsons[1], "{\"d\":2}");
	assert_string_equal(c.names[2], "a");
	assert_string_equal(c.jsons[2], "{\"a\":2}");
	/* The next event continues the versions; readers see it. */
	publish(w, RING_EV_MODIFY, "a", "{\"a\":3}");
	assert_int_equal(ring_reader_head_version(r), 7);
	struct ring_rec rec = RING_REC_INIT;
	assert_int_equal(ring_reader_event(r, 7, &rec), 0);
	assert_int_equal(ring_reader_event(r, 1, &rec), 0);
	struct buf sb = BUF_INIT;
	assert_int_equal(ring_reader_status(r, &sb), 0);
	assert_string_equal(sb.data, "{\"x\":1}");
	buf_done(&sb);
	ring_writer_close(w);

	/* A ring that has wrapped many times (PAD records, evicted events,
	 * several snapshots) is kept too, with its state. */
	w = wopen(fx->path, SMALL, &kept, why);
	assert_true(kept);
	struct cbstate cs = { 0 };
	ring_writer_set_snapshot_cb(w, snap_cb, &cs);
	struct buf line = BUF_INIT;
	for (int i = 0; i < 500; i++)
		assert_int_equal(ev_publish(w, 2000, &line), 0);
	uint64_t ver = ring_writer_version(w);
	ring_writer_close(w);
	w = wopen(fx->path, SMALL, &kept, why);
	assert_true(kept);
	assert_string_equal(ring_writer_epoch(w), epoch);
	assert_int_equal(ring_writer_version(w), ver);
	/* Expected: the newest snapshot's VMs with the events after it
	 * applied by the same rules. */
	assert_int_equal(ring_reader_snapshot(r, &rec), 0);
	struct snapgen g = { 0 };
	snap_make(&g, rec.version);
	struct model m = { 0 };
	for (size_t i = 0; i < g.n; i++)
		model_put(&m, g.vms[i].zonename, g.vms[i].json, g.vms[i].json_len);
	snap_gen_done(&g);
	for (uint64_t v = rec.version + 1; v <= ver; v++) {
		char zone[32];
		size_t off, len;
		enum ring_ev_type t;
		ev_make(v, 2000, &line, zone, &off, &len, &t);
		if (t == RING_EV_DELETE)
			model_del(&m, zone);
		else
			model_put(&m, zone, line.data + off, len);
	}
	m.next = 0;
	assert_int_equal(ring_writer_last_state(w, model_check, &m), 0);
	assert_int_equal(m.next, m.n);
	assert_true(m.n >= 1);
	model_done(&m);
	ring_writer_close(w);
	assert_false(ring_reader_replaced(r));
	ring_rec_done(&rec);
	ring_reader_close(r);
	buf_done(&line);
	snap_gen_done(&cs.g);
}

static void status_make(struct buf *b, unsigned n)
{
	buf_reset(b);
	assert_int_equal(buf_printf(b, "{\"n\":%u,\"pad\":\"", n), 0);
	pattern(b, n, (n * 7919u) % 50000u);
	assert_int_equal(buf_adds(b, "\"}"), 0);
}

static void test_ring_status_concurrent_never_torn(void **state)
{
	struct fx *fx = *state;
	struct ring_writer *w = wopen(fx->path, 1024 * 1024, NULL, NULL);
	assert_true(ring_writer_status_max(w) >= 60000);
	struct buf b = BUF_INIT;
	status_make(&b, 0);
	assert_int_equal(ring_writer_status(w, b.data, b.len), 0);
	int done[2];
	assert_int_equal(pipe2(done, O_CLOEXEC), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(done[0]);
		struct ring_reader *r = NULL;
		if (ring_reader_open(fx->path, &r) < 0)
			_exit(2);
		struct buf got = BUF_INIT, want = BUF_INIT;
		unsigned reads = 0, last = 0;
		uint64_t deadline = now_ns() + DEADLINE_NS;
		while (last < 3000 && now_ns() < deadline) {
			int e = ring_reader_status(r, &got);
			if (e == -EAGAIN)
				continue;
			unsigned n;
			if (e < 0 || sscanf(got.data, "{\"n\":%u,", &n) != 1)
				_exit(4);
			status_make(&want, n);
			if (got.len != want.len || memcmp(got.data, want.data, got.len) != 0)
				_exit(5);
			last = n;
			reads++;
		}
		_exit(last == 3000 && reads > 0 ? 0 : 6);
	}
	close(done[1]);
	for (unsigned n = 1; n <= 3000; n++) {
		status_make(&b, n);
		assert_int_equal(ring_writer_status(w, b.data, b.len), 0);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	close(done[0]);
	buf_done(&b);
	ring_writer_close(w);
}

static void test_ring_doorbell(void **state)
{
	int fd = ring_doorbell_new();
	assert_true(fd >= 0);
	assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	assert_int_equal(ring_doorbell_drain(fd), 0);
	assert_int_equal(ring_doorbell_ring(fd), 0);
	assert_int_equal(ring_doorbell_ring(fd), 0);
	uint64_t v;
	assert_int_equal(read(fd, &v, 8), 8);
	assert_int_equal(v, 2);
	assert_int_equal(ring_doorbell_ring(fd), 0);
	assert_int_equal(ring_doorbell_drain(fd), 0);
	assert_int_equal(read(fd, &v, 8), -1);
	assert_int_equal(errno, EAGAIN);
	close(fd);
}

static void test_ring_size_parse_takes_suffixes(void **state)
{
	(void)state;
	size_t n = 0;
	assert_int_equal(ring_size_parse("65536", &n), 0);
	assert_int_equal(n, 65536);
	assert_int_equal(ring_size_parse("64M", &n), 0);
	assert_int_equal(n, 64u << 20);
	assert_int_equal(ring_size_parse("2k", &n), 0);
	assert_int_equal(n, 2048);
	assert_int_equal(ring_size_parse("1G", &n), 0);
	assert_int_equal(n, 1u << 30);
	assert_int_equal(ring_size_parse("", &n), -EINVAL);
	assert_int_equal(ring_size_parse("12Q", &n), -EINVAL);
	assert_int_equal(ring_size_parse("-1", &n), -EINVAL);
	assert_int_equal(ring_size_parse("64MB", &n), -EINVAL);
	assert_int_equal(ring_size_parse("99999999999999999999G", &n), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_ring_round_trip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ring_snapshot_cb_keeps_ring_resumable, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ring_snapshot_cb_when_index_wraps, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ring_oversize_record_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ring_snapshot_cb_failure_refuses_event, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ring_reader_falls_behind_and_recovers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ring_hammer_readers_never_see_torn_records, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ring_bad_files_get_new_epoch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ring_reopen_keeps_epoch_and_last_state, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ring_status_concurrent_never_torn, setup, teardown),
		cmocka_unit_test(test_ring_doorbell),
		cmocka_unit_test(test_ring_size_parse_takes_suffixes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
