/*
 * refresh.c - the periodic full refresh (spec/daemon.md §11).
 *
 * Every refresh interval (counted from the end of the previous refresh)
 * the whole host is reloaded into a fresh raw cache, compared with the
 * live one, and whatever the watchers missed is published as ordinary
 * create/delete/modify events.  It waits for an idle queue, at most
 * refresh_idle_max_ms, then goes anyway.
 *
 * Every file is still read, but a file holding the same bytes as at the
 * previous load keeps its parsed value (vmload_zone), and a zone whose
 * record comes back identical (vm_raw_same) is neither diffed nor
 * rebuilt: both would find nothing, so cacheChanges, events and the
 * refresh log are the same as with a full comparison.
 *
 * The reload runs synchronously inside one loop callback with the queue
 * paused, so no task can change the live cache while the new one is read
 * and the original's fast-forward step has nothing to do: tasks that
 * arrive meanwhile wait in the paused list and run after the resume
 * against the refreshed cache (they re-read their files, so they are
 * harmless when the refresh already applied their change).
 *
 * Per-VM isolation (DESIGN.md §11): a zone whose sources fail to load
 * keeps its VM as it was, and the failure is recorded in refreshErrors;
 * a zone whose XML is gone is deleted, as the XML-delete task does.
 */
#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include "diff.h"
#include "jfreeze.h"
#include "json.h"
#include "log.h"
#include "queue.h"
#include "supervisor.h"
#include "timeutil.h"
#include "vms.h"

#define REFRESH_RING 5
#define PAUSE_TIMEOUT_MS 300000

static void refresh_start(struct supervisor *s);

static void ring_append(json_t *ring, json_t *entry)
{
	json_array_append_new(ring, entry);
	while (json_array_size(ring) > REFRESH_RING)
		json_array_remove(ring, 0);
}

static void on_period(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct supervisor *s = w->data;
	refresh_request(s, NULL);
}

static void on_wait_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct supervisor *s = w->data;
	if (!s->refresh_waiting)
		return;
	s->refresh_waiting = false;
	log_warn(NULL, "event queue idle timeout exceeded (%llums) - forcing refresh",
	         (unsigned long long)s->opt.refresh_idle_max_ms);
	refresh_start(s);
}

static void on_idle(void *arg)
{
	struct supervisor *s = arg;
	supervisor_status_changed(s);  /* "idle" is part of the status facts */
	if (!s->refresh_waiting)
		return;
	s->refresh_waiting = false;
	ev_timer_stop(s->loop, &s->refresh_wait);
	char took[80];
	tu_pretty_delta(tu_mono_ns() - s->refresh_wait_ns, took);
	log_debug(NULL, "event queue now idle - took %s", took);
	refresh_start(s);
}

void refresh_init(struct supervisor *s)
{
	ev_timer_init(&s->refresh_timer, on_period, 0., 0.);
	s->refresh_timer.data = s;
	ev_timer_init(&s->refresh_wait, on_wait_timeout, 0., 0.);
	s->refresh_wait.data = s;
	s->refresh_errors = json_array();
	s->refresh_log = json_array();
	queue_on_idle(s->queue, on_idle, s);
}

void refresh_done(struct supervisor *s)
{
	ev_timer_stop(s->loop, &s->refresh_timer);
	ev_timer_stop(s->loop, &s->refresh_wait);
	json_decref(s->refresh_errors);
	json_decref(s->refresh_log);
	s->refresh_errors = s->refresh_log = NULL;
}

void refresh_arm(struct supervisor *s)
{
	ev_timer_stop(s->loop, &s->refresh_timer);
	ev_timer_set(&s->refresh_timer, (double)s->opt.refresh_interval_ms / 1000.0, 0.);
	ev_timer_start(s->loop, &s->refresh_timer);
}

void refresh_request(struct supervisor *s, const char *why)
{
	if (s->refresh_running || s->refresh_waiting || !s->booted || s->stopping)
		return;
	if (why)
		log_info(NULL, "full refresh requested: %s", why);
	ev_timer_stop(s->loop, &s->refresh_timer);
	if (queue_is_idle(s->queue)) {
		log_debug(NULL, "event queue idle - starting full refresh immediately");
		refresh_start(s);
		return;
	}
	log_debug(NULL, "event queue busy - queueing full refresh");
	s->refresh_waiting = true;
	s->refresh_wait_ns = tu_mono_ns();
	ev_timer_set(&s->refresh_wait, (double)s->opt.refresh_idle_max_ms / 1000.0, 0.);
	ev_timer_start(s->loop, &s->refresh_wait);
}

/* ---- the reset ---- */

struct loaded {
	const struct zone_record *rec;
	struct vm_raw *raw;   /* NULL when the load failed */
	int err;              /* -errno of the load */
};

/* Diff one zone's raw JSON, paths prefixed by [section, uuid]; entries
 * are bucketed per section so the result lists sections in cache order. */
static const char *const sections[] = {
	"zoneadm_objects", "sysinfo", "zoneinfo_objects", "zonexml_objects",
	"last_exited", "last_modified", "json_objects", "dataset_objects",
};
#define NSECTIONS (sizeof(sections) / sizeof(sections[0]))

static int section_index(const char *name)
{
	for (size_t i = 0; i < NSECTIONS; i++)
		if (strcmp(sections[i], name) == 0)
			return (int)i;
	return -1;
}

static void add_cache_changes(json_t *buckets[NSECTIONS], const char *uuid, json_t *a, json_t *b)
{
	char err[256];
	json_t *empty = json_object();
	json_t *ch = diff_values(a ? a : empty, b ? b : empty, false, err, sizeof(err));
	if (!ch) {
		json_decref(empty);
		return;
	}
	size_t i;
	json_t *e;
	json_array_foreach(ch, i, e) {
		json_t *path = json_object_get(e, "path");
		const char *sec = json_string_value(json_array_get(path, 0));
		int si = sec ? section_index(sec) : -1;
		if (si < 0)
			continue;
		json_t *np = json_array();
		json_array_append(np, json_array_get(path, 0));
		json_array_append_new(np, json_string(uuid));
		for (size_t k = 1; k < json_array_size(path); k++)
			json_array_append(np, json_array_get(path, k));
		json_t *ne = json_deep_copy(e);
		json_object_set_new(ne, "path", np);
		struct buf pp = BUF_INIT;
		if (diff_pretty_path(np, &pp) == 0)
			json_object_set_new(ne, "prettyPath", json_string(pp.data));
		buf_done(&pp);
		json_array_append_new(buckets[si], ne);
	}
	json_decref(ch);
	json_decref(empty);
}

static void reset(struct supervisor *s)
{
	uint64_t started = tu_mono_ns();
	char err[512];
	supervisor_set_state(s, "paused");
	supervisor_set_status(s, "pausing the event queue");
	log_debug(NULL, "%zu VMs total", strmap_count(&s->vms));

	supervisor_set_status(s, "fetching vm cache data");
	struct zoneindex idx = ZONEINDEX_INIT;
	if (vmload_index(&s->vl, &idx, err, sizeof(err)) < 0) {
		log_error(log_err_fields(err, NULL), "failed vmload.getZoneData: %s", err);
		log_error(NULL, "failed to fetch new vm_data");
		ring_append(s->refresh_errors, json_pack("{s:s,s:I}", "err", err, "time_ns",
		                                         (json_int_t)tu_mono_ns()));
		return;
	}
	json_t *sysinfo = vmload_sysinfo(&s->vl, err, sizeof(err));
	json_t *errors = json_array();
	if (!sysinfo) {
		log_error(log_err_fields(err, NULL), "%s", err);
		json_array_append_new(errors, json_string(err));
	}
	struct loaded *L = calloc(idx.n ? idx.n : 1, sizeof(*L));
	if (!L) {
		zoneindex_done(&idx);
		json_decref(sysinfo);
		json_decref(errors);
		return;
	}
	for (size_t i = 0; i < idx.n; i++) {
		L[i].rec = &idx.recs[i];
		/* Loading into a copy of the live record lets vmload reuse the
		 * parsed XML and JSON of files whose bytes did not change. */
		struct vm_entry *cur = vms_get(s, L[i].rec->zonename);
		L[i].raw = cur ? vm_raw_dup(cur->raw) : vm_raw_new();
		if (!L[i].raw) {
			L[i].err = -ENOMEM;
			continue;
		}
		int r = vmload_zone(&s->vl, L[i].rec, L[i].raw, VMS_ALL, err, sizeof(err));
		if (r < 0) {
			L[i].err = r;
			vm_raw_free(L[i].raw);
			L[i].raw = NULL;
			if (r != -ENOENT)
				json_array_append_new(errors, json_string(err));
		}
	}

	/* Compare the raw caches. */
	supervisor_set_status(s, "comparing vmobj sets");
	json_t *buckets[NSECTIONS];
	for (size_t i = 0; i < NSECTIONS; i++)
		buckets[i] = json_array();
	for (size_t i = 0; i < idx.n; i++) {
		struct vm_entry *e = vms_get(s, L[i].rec->zonename);
		/* Same record: the raw JSON diff would be empty. */
		if (e && L[i].raw && vm_raw_same(e->raw, L[i].raw))
			continue;
		json_t *a = e ? vmload_raw_json(e->raw) : NULL;
		json_t *b = L[i].raw ? vmload_raw_json(L[i].raw) : NULL;
		/* A zone that failed to load keeps its VM and raw data as they
		 * were (only a missing XML deletes it): no cache change. */
		if ((a || b) && (L[i].raw || L[i].err == -ENOENT))
			add_cache_changes(buckets, L[i].rec->uuid, a, b);
		json_decref(a);
		json_decref(b);
	}
	struct strmap newnames = STRMAP_INIT;
	for (size_t i = 0; i < idx.n; i++)
		(void)strmap_set(&newnames, idx.recs[i].zonename, strlen(idx.recs[i].zonename),
		                 &L[i], NULL);
	for (struct strmap_entry *me = s->vms.head; me; me = me->next) {
		if (strmap_get(&newnames, me->key, me->keylen))
			continue;
		struct vm_entry *e = me->value;
		json_t *a = vmload_raw_json(e->raw);
		add_cache_changes(buckets, e->uuid, a, NULL);
		json_decref(a);
	}
	if (!json_equal(s->sysinfo ? s->sysinfo : json_null(), sysinfo ? sysinfo : json_null())) {
		char dchk[256];
		json_t *wa = json_pack("{s:O}", "sysinfo", s->sysinfo ? s->sysinfo : json_object());
		json_t *wb = json_pack("{s:O}", "sysinfo", sysinfo ? sysinfo : json_object());
		json_t *ch = diff_values(wa, wb, false, dchk, sizeof(dchk));
		if (ch)
			json_array_extend(buckets[1], ch);
		json_decref(ch);
		json_decref(wa);
		json_decref(wb);
	}
	json_t *cache_changes = json_array();
	for (size_t i = 0; i < NSECTIONS; i++) {
		json_array_extend(cache_changes, buckets[i]);
		json_decref(buckets[i]);
	}

	json_t *vm_changes = json_array();
	if (json_array_size(cache_changes) == 0) {
		log_info(NULL, "vmobj sets are in sync");
	} else {
		log_warn(json_pack("{s:O}", "changes", cache_changes), "vm_data and vm_data_tmp diff");
		supervisor_set_status(s, "synchronizing data");
	}
	/* The new index and sysinfo are the live ones from now on. */
	zoneindex_done(&s->index);
	s->index = idx;
	strmap_done(&s->index_map);
	for (size_t i = 0; i < s->index.n; i++)
		(void)strmap_set(&s->index_map, s->index.recs[i].zonename,
		                 strlen(s->index.recs[i].zonename), &s->index.recs[i], NULL);
	if (sysinfo) {
		json_decref(s->sysinfo);
		s->sysinfo = sysinfo;
	}
	for (size_t i = 0; i < idx.n; i++)
		tasks_watch_zone(s, &s->index.recs[i]);

	/* creates, in index order */
	for (size_t i = 0; i < idx.n; i++) {
		if (!L[i].raw || vms_get(s, L[i].rec->zonename))
			continue;
		const char *z = L[i].rec->zonename;
		json_t *vm = vmload_build(L[i].raw, s->sysinfo, err, sizeof(err));
		if (!vm) {
			log_error(NULL, "failed to getVmobj(%s): %s", L[i].rec->uuid, err);
			json_array_append_new(errors, json_string(err));
			continue;
		}
		if (vms_insert(s, z, L[i].rec->uuid, L[i].raw, vm) < 0) {
			L[i].raw = NULL;
			continue;
		}
		L[i].raw = NULL;
		json_array_append_new(vm_changes, json_pack("{s:s,s:s}", "zonename", z, "action", "create"));
		log_info(NULL, "started watching %s", z);
		struct vm_entry *e = vms_get(s, z);
		vms_emit(s, 1, z, e->uuid, e, NULL);
	}
	/* deletes: gone from the index, or XML gone */
	struct strmap_entry *me = s->vms.head;
	while (me) {
		struct strmap_entry *next = me->next;
		struct loaded *l = strmap_get(&newnames, me->key, me->keylen);
		if (!l || (!l->raw && l->err == -ENOENT)) {
			char *z = strdup(me->key);
			if (z) {
				json_array_append_new(vm_changes,
				                      json_pack("{s:s,s:s}", "zonename", z, "action", "delete"));
				vms_delete(s, z);
				free(z);
			}
		}
		me = next;
	}
	/* modifies, in VM map order */
	for (me = s->vms.head; me; me = me->next) {
		struct vm_entry *e = me->value;
		struct loaded *l = strmap_get(&newnames, me->key, me->keylen);
		if (!l || !l->raw)
			continue;  /* created just now, or failed: kept as it was */
		/* Same raw data and sysinfo values: a rebuild would give an
		 * equal object, an empty diff and no event. */
		if (vm_raw_same(e->raw, l->raw) &&
		    vmload_sysinfo_current_frozen(vms_frozen(e), s->sysinfo))
			continue;
		json_t *vm = vmload_build(l->raw, s->sysinfo, err, sizeof(err));
		if (!vm) {
			log_error(log_err_fields(err, NULL), "unable to refresh vmobj for %s, failed getVmobj",
			          e->zonename);
			json_array_append_new(errors, json_string(err));
			continue;
		}
		struct jfreeze *frozen;
		json_t *old = vms_old_object(e, vm, &frozen);
		json_t *changes = old ? diff_values(old, vm, true, err, sizeof(err)) : NULL;
		if (!changes) {
			if (!old)
				snprintf(err, sizeof(err), "out of memory");
			log_error(json_pack("{s:O,s:O,s:o}", "from", old ? old : json_null(), "to", vm,
			                    "err", log_err_obj(err, NULL)),
			          "failed to calculate object diff");
			json_decref(old);
			jfreeze_unref(frozen);
			json_decref(vm);
			continue;
		}
		json_decref(old);
		struct vm_raw *raw = l->raw;
		l->raw = NULL;
		if (json_array_size(changes) == 0) {
			vm_raw_free(e->raw);
			e->raw = raw;
			jfreeze_unref(frozen);
			json_decref(vm);
		} else if (vms_replace_frozen(e, vm, frozen, raw) == 0) {
			json_array_append_new(vm_changes, json_pack("{s:s,s:s,s:O}", "zonename", e->zonename,
			                                            "action", "modify", "changes", changes));
			vms_emit(s, 2, e->zonename, e->uuid, e, changes);
		} else {
			vm_raw_free(raw);
		}
		json_decref(changes);
	}

	uint64_t ended = tu_mono_ns();
	char took[80];
	tu_pretty_delta(ended - started, took);
	if (json_array_size(cache_changes))
		ring_append(s->refresh_log,
		            json_pack("{s:O,s:O,s:I,s:I}", "cacheChanges", cache_changes, "vmChanges",
		                      vm_changes, "started_ns", (json_int_t)started, "ended_ns",
		                      (json_int_t)ended));
	if (json_array_size(errors)) {
		/* One refreshErrors entry per failed refresh, naming what
		 * failed (the original failed the whole load on the first). */
		struct buf m = BUF_INIT;
		size_t i;
		json_t *e;
		json_array_foreach(errors, i, e)
			(void)buf_printf(&m, "%s%s", i ? "; " : "", json_string_value(e));
		ring_append(s->refresh_errors, json_pack("{s:s,s:I}", "err", m.data ? m.data : "",
		                                         "time_ns", (json_int_t)ended));
		log_error(log_err_fields(m.data ? m.data : "", NULL), "failed to refresh data");
		buf_done(&m);
	}
	log_debug(json_pack("{s:O}", "obj", vm_changes), "self.reset() took %s: %zu vms changed", took,
	          json_array_size(vm_changes));

	for (size_t i = 0; i < idx.n; i++)
		vm_raw_free(L[i].raw);
	free(L);
	strmap_done(&newnames);
	json_decref(cache_changes);
	json_decref(vm_changes);
	json_decref(errors);
}

/* Per-zone watches whose zone is neither in the index nor a VM. */
static void unwatch_stale(struct supervisor *s)
{
	log_debug(NULL, "checking for stale files to unwatch");
	json_t *files = json_array();
	struct strmap_entry *me = s->zone_watches.head;
	while (me) {
		struct strmap_entry *next = me->next;
		if (!strmap_get(&s->index_map, me->key, me->keylen) &&
		    !strmap_get(&s->vms, me->key, me->keylen)) {
			struct zone_watch *zw = me->value;
			for (int i = 0; i < ZONE_WATCHES; i++)
				json_array_append_new(files, json_string(zw->paths[i]));
			char *z = strdup(me->key);
			if (z) {
				tasks_unwatch_zone(s, z);
				free(z);
			}
		}
		me = next;
	}
	if (json_array_size(files) == 0)
		log_debug(NULL, "found 0 stale files");
	else
		log_error(json_pack("{s:O}", "files", files), "found %zu stale files",
		          json_array_size(files));
	json_decref(files);
}

static void on_paused(void *arg, const char *err)
{
	struct supervisor *s = arg;
	uint64_t t0 = tu_mono_ns();
	if (err)
		log_warn(NULL, "failed to pause the queue: %s", err);
	reset(s);
	supervisor_set_state(s, "running");
	supervisor_set_status(s, "working");
	log_info(NULL, "resuming the event queue");
	if (queue_is_paused(s->queue))
		(void)queue_resume(s->queue);
	unwatch_stale(s);
	/* The reload freed a whole host's worth of temporaries: hand the
	 * free pages back rather than keep the peak resident. */
	(void)malloc_trim(0);
	char took[80];
	tu_pretty_delta(tu_mono_ns() - t0, took);
	log_debug(NULL, "full data refresh took %s", took);
	counters_refresh(&s->counters, tu_mono_ns() - t0);
	s->last_refresh_ns = tu_mono_ns();
	s->refresh_running = false;
	supervisor_status_changed(s);
	refresh_arm(s);
}

static void refresh_start(struct supervisor *s)
{
	if (s->stopping)
		return;
	s->refresh_running = true;
	log_info(NULL, "full data refresh");
	log_debug(NULL, "full VM reset");
	if (queue_pause(s->queue, PAUSE_TIMEOUT_MS, on_paused, s) < 0)
		on_paused(s, "queue already paused");
}
