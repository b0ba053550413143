/*
 * tasks.c - from file and zone events to queued tasks, and the tasks'
 * work (spec/daemon.md §4–§6.5).
 *
 * Watched paths are full paths under --root.  The global ones are the
 * zone index (a change is diffed against the previous index and becomes
 * one "zone event" per zonename, as SmartOS's sysevents were) and the
 * sysinfo file; per zone the XML, lastexited and the three config JSON
 * files under the zone's real zonepath.  Every watched path maps to what
 * it means (struct watch_info), so classification is a lookup.
 *
 * Task descriptions are the original's, byte for byte: they are the dedup
 * key and appear in /status.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "buf.h"
#include "fsw.h"
#include "json.h"
#include "log.h"
#include "queue.h"
#include "supervisor.h"

/* ---- watches ---- */

static int add_watch(struct supervisor *s, const char *path, enum watch_kind kind,
	const char *zonename)
{
	if (strmap_get(&s->watches, path, strlen(path)))
		return 0;
	struct watch_info *wi = calloc(1, sizeof(*wi));
	if (!wi)
		return -ENOMEM;
	wi->kind = kind;
	if (zonename && !(wi->zonename = strdup(zonename))) {
		free(wi);
		return -ENOMEM;
	}
	int r = strmap_set(&s->watches, path, strlen(path), wi, NULL);
	if (r < 0) {
		free(wi->zonename);
		free(wi);
		return r;
	}
	r = fsw_watch(s->fsw, path);
	if (r < 0)
		log_warn(json_pack("{s:s,s:o}", "path", path, "err", log_err_obj(strerror(-r), NULL)),
		         "cannot watch %s, ignoring", path);
	return 0;
}

static void del_watch(struct supervisor *s, const char *path)
{
	struct watch_info *wi = strmap_del(&s->watches, path, strlen(path));
	if (!wi)
		return;
	if (fsw_is_watching(s->fsw, path))
		(void)fsw_unwatch(s->fsw, path);
	free(wi->zonename);
	free(wi);
}

int tasks_watch_globals(struct supervisor *s)
{
	int r = add_watch(s, s->sysinfo_path, W_SYSINFO, NULL);
	if (r == 0)
		r = add_watch(s, s->index_path, W_INDEX, NULL);
	return r;
}

/* The five per-zone paths, in the original's order. */
static int zone_paths(struct supervisor *s, const struct zone_record *rec,
	char *paths[ZONE_WATCHES], enum watch_kind kinds[ZONE_WATCHES])
{
	static const char *const suffixes[ZONE_WATCHES] = {
		NULL, "/lastexited", "/config/metadata.json", "/config/routes.json",
		"/config/tags.json",
	};
	for (int i = 0; i < ZONE_WATCHES; i++) {
		struct buf b = BUF_INIT;
		int r;
		if (i == 0) {
			r = buf_printf(&b, "/etc/zones/%s.xml", rec->zonename);
			kinds[i] = W_XML;
		} else {
			const char *zp = rec->zonepath;
			size_t zl = strlen(zp);
			while (zl > 1 && zp[zl - 1] == '/')
				zl--;
			r = buf_printf(&b, "%.*s%s", (int)zl, zp, suffixes[i]);
			kinds[i] = i == 1 ? W_LASTEXITED : W_CONFIG;
		}
		paths[i] = r == 0 ? supervisor_path(s, b.data) : NULL;
		buf_done(&b);
		if (!paths[i]) {
			for (int j = 0; j < i; j++)
				free(paths[j]);
			return -ENOMEM;
		}
	}
	return 0;
}

void tasks_unwatch_zone(struct supervisor *s, const char *zonename)
{
	struct zone_watch *zw = strmap_del(&s->zone_watches, zonename, strlen(zonename));
	if (!zw)
		return;
	json_t *files = json_array();
	for (int i = 0; i < ZONE_WATCHES; i++)
		json_array_append_new(files, json_string(zw->paths[i]));
	log_debug(json_pack("{s:o}", "files", files), "removing vm fs watchers for %s", zonename);
	for (int i = 0; i < ZONE_WATCHES; i++) {
		del_watch(s, zw->paths[i]);
		free(zw->paths[i]);
	}
	free(zw);
	log_debug(NULL, "finished removing vm fs watchers for %s", zonename);
}

void tasks_watch_zone(struct supervisor *s, const struct zone_record *rec)
{
	char *paths[ZONE_WATCHES];
	enum watch_kind kinds[ZONE_WATCHES];
	if (zone_paths(s, rec, paths, kinds) < 0)
		return;
	struct zone_watch *zw = strmap_get(&s->zone_watches, rec->zonename, strlen(rec->zonename));
	if (zw) {
		bool same = true;
		for (int i = 0; i < ZONE_WATCHES; i++)
			same = same && strcmp(zw->paths[i], paths[i]) == 0;
		if (same) {
			for (int i = 0; i < ZONE_WATCHES; i++)
				free(paths[i]);
			return;
		}
		/* The zonepath moved: watch the new files instead. */
		tasks_unwatch_zone(s, rec->zonename);
	}
	zw = calloc(1, sizeof(*zw));
	if (!zw || strmap_set(&s->zone_watches, rec->zonename, strlen(rec->zonename), zw, NULL) < 0) {
		free(zw);
		for (int i = 0; i < ZONE_WATCHES; i++)
			free(paths[i]);
		return;
	}
	json_t *files = json_array();
	for (int i = 0; i < ZONE_WATCHES; i++)
		json_array_append_new(files, json_string(paths[i]));
	log_debug(json_pack("{s:o}", "files", files), "adding vm fs watchers for %s", rec->zonename);
	for (int i = 0; i < ZONE_WATCHES; i++) {
		zw->paths[i] = paths[i];
		(void)add_watch(s, paths[i], kinds[i], rec->zonename);
	}
	log_debug(NULL, "finished adding vm fs watchers for %s", rec->zonename);
}

/* ---- the zone index ---- */

static void rebuild_index_map(struct supervisor *s)
{
	strmap_done(&s->index_map);
	for (size_t i = 0; i < s->index.n; i++) {
		const struct zone_record *rec = &s->index.recs[i];
		(void)strmap_set(&s->index_map, rec->zonename, strlen(rec->zonename),
		                 (void *)rec, NULL);
	}
}

int tasks_load_index(struct supervisor *s)
{
	char err[512];
	struct zoneindex idx = ZONEINDEX_INIT;
	int r = vmload_index(&s->vl, &idx, err, sizeof(err));
	if (r < 0) {
		log_error(log_err_fields(err, NULL), "failed to load zone records");
		return r;
	}
	zoneindex_done(&s->index);
	s->index = idx;
	rebuild_index_map(s);
	return 0;
}

/* The index changed: one zone event per zonename that appeared,
 * disappeared or changed (spec/daemon.md §4.1 port note). */
static void on_index_change(struct supervisor *s)
{
	struct zoneindex old = s->index;
	s->index = (struct zoneindex)ZONEINDEX_INIT;
	if (tasks_load_index(s) < 0) {
		/* Keep what we had; the next change or refresh retries. */
		zoneindex_done(&s->index);
		s->index = old;
		rebuild_index_map(s);
		return;
	}
	struct zone_change *changes;
	size_t n;
	if (zoneindex_diff(&old, &s->index, &changes, &n) < 0) {
		zoneindex_done(&old);
		refresh_request(s, "cannot compare zone indexes");
		return;
	}
	for (size_t i = 0; i < n; i++) {
		const struct zone_record *rec = strmap_get(&s->index_map, changes[i].zonename,
		                                           strlen(changes[i].zonename));
		if (rec)
			tasks_watch_zone(s, rec);
		tasks_on_zone_event(s, changes[i].zonename, changes[i].newstate);
	}
	free(changes);
	zoneindex_done(&old);
}

/* ---- tasks ---- */

struct task_arg {
	struct supervisor *s;
	char *zonename;
	char *path;
	char type[16];
	unsigned sections;
};

static void task_arg_free(void *p)
{
	struct task_arg *a = p;
	if (!a)
		return;
	free(a->zonename);
	free(a->path);
	free(a);
}

static struct task_arg *task_arg_new(struct supervisor *s, const char *zonename,
	const char *path, const char *type, unsigned sections)
{
	struct task_arg *a = calloc(1, sizeof(*a));
	if (!a)
		return NULL;
	a->s = s;
	a->sections = sections;
	if (type)
		snprintf(a->type, sizeof(a->type), "%s", type);
	if ((zonename && !(a->zonename = strdup(zonename))) || (path && !(a->path = strdup(path)))) {
		task_arg_free(a);
		return NULL;
	}
	return a;
}

static void push(struct supervisor *s, const char *description, queue_work_fn work,
	struct task_arg *a)
{
	if (!a) {
		log_error(NULL, "out of memory queueing \"%s\", the next full refresh catches up",
		          description);
		return;
	}
	if (queue_push(s->queue, description, work, a, task_arg_free) < 0)
		log_error(NULL, "out of memory queueing \"%s\", the next full refresh catches up",
		          description);
	supervisor_status_changed(s);
}

static void finish(struct task_arg *a, struct queue_task *t, const char *err)
{
	supervisor_status_changed(a->s);
	queue_task_done(t, err);
}

static void work_zone_event(struct queue_task *t, void *arg)
{
	struct task_arg *a = arg;
	struct supervisor *s = a->s;
	char err[512] = "";
	int r = 0;
	if (!vms_get(s, a->zonename)) {
		if (strmap_get(&s->index_map, a->zonename, strlen(a->zonename)))
			(void)vms_create(s, a->zonename);
		else
			tasks_unwatch_zone(s, a->zonename);  /* never built, now gone */
	} else {
		r = vms_refresh(s, a->zonename, VMS_ZONEADM | VMS_XML | VMS_LASTMOD, err, sizeof(err));
	}
	finish(a, t, r < 0 ? err : NULL);
}

void tasks_on_zone_event(struct supervisor *s, const char *zonename, const char *newstate)
{
	log_debug(json_pack("{s:{s:s,s:s}}", "obj", "zonename", zonename, "newstate", newstate),
	          "handleZoneEvent: zonename: %s newstate: %s", zonename,
	          newstate && *newstate ? newstate : "undefined");
	struct buf d = BUF_INIT;
	if (buf_printf(&d, "handle zone event - zonename: %s", zonename) == 0)
		push(s, d.data, work_zone_event, task_arg_new(s, zonename, NULL, NULL, 0));
	buf_done(&d);
}

static void work_zonexml(struct queue_task *t, void *arg)
{
	struct task_arg *a = arg;
	struct supervisor *s = a->s;
	json_t *tl = queue_task_logger(t);
	char err[512] = "";
	int r = 0;
	if (!vms_get(s, a->zonename)) {
		/* A zone of the index whose XML was missing or broken gets
		 * its VM once the XML is good (DESIGN.md §11). */
		if (strmap_get(&s->index_map, a->zonename, strlen(a->zonename)) &&
		    strcmp(a->type, "delete") != 0)
			(void)vms_create(s, a->zonename);
		else
			log_emit(LOG_DEBUG, tl, NULL, "vmobj doesn't exist for %s", a->zonename);
		finish(a, t, NULL);
		return;
	}
	if (strcmp(a->type, "delete") == 0) {
		log_emit(LOG_DEBUG, tl, NULL, "%s delete event, checking file existence", a->path);
		struct stat st;
		if (lstat(a->path, &st) < 0) {
			if (errno == ENOENT) {
				log_emit(LOG_DEBUG, tl, NULL, "%s deleted, removing VM", a->path);
				(void)vms_delete(s, a->zonename);
			} else {
				log_emit(LOG_ERROR, tl, log_err_fields(strerror(errno), NULL),
				         "unexpected error stating %s", a->path);
			}
			finish(a, t, NULL);
			return;
		}
		log_emit(LOG_DEBUG, tl, NULL, "%s still exists, updating zone data", a->path);
	} else if (strcmp(a->type, "change") == 0 || strcmp(a->type, "create") == 0) {
		/* "create" (the file reappeared after a final event) is a
		 * change for a known VM; upstream only warned because its
		 * watcher never reported creations of watched XML. */
		log_emit(LOG_DEBUG, tl, NULL, "%s modified", a->path);
	} else {
		log_emit(LOG_WARN, tl, json_pack("{s:{s:s,s:s}}", "obj", "pathname", a->path, "type", a->type),
		         "unhandled fs change type \"%s\"", a->type);
		finish(a, t, NULL);
		return;
	}
	r = vms_refresh(s, a->zonename, VMS_LASTMOD | VMS_XML, err, sizeof(err));
	finish(a, t, r < 0 ? err : NULL);
}

static void work_context(struct queue_task *t, void *arg)
{
	struct task_arg *a = arg;
	struct supervisor *s = a->s;
	char err[512] = "";
	int r = 0;
	if (!vms_get(s, a->zonename))
		log_emit(LOG_DEBUG, queue_task_logger(t), NULL, "vmobj doesn't exist for %s", a->zonename);
	else
		r = vms_refresh(s, a->zonename, a->sections, err, sizeof(err));
	finish(a, t, r < 0 ? err : NULL);
}

static void work_sysinfo(struct queue_task *t, void *arg)
{
	struct task_arg *a = arg;
	struct supervisor *s = a->s;
	char err[512];
	/* Reload only: VMs pick the new values up at their next rebuild
	 * (quirk 6 of spec/daemon.md §14). */
	json_t *si = vmload_sysinfo(&s->vl, err, sizeof(err));
	if (!si) {
		log_emit(LOG_ERROR, queue_task_logger(t), log_err_fields(err, NULL),
		         "failed to refresh sysinfo, failed to getZoneData");
	}
	json_decref(s->sysinfo);
	s->sysinfo = si;
	finish(a, t, si ? NULL : err);
}

void tasks_on_fs_event(void *arg, const struct fsw_event *ev)
{
	struct supervisor *s = arg;
	/* meta: "pathname: <P> (<C>)", C = the changes joined with ","
	 * or, for the wrapper's synthetic events, the type. */
	struct buf meta = BUF_INIT, d = BUF_INIT;
	int r = buf_printf(&meta, "pathname: %s (", ev->pathname);
	if (ev->changes) {
		for (size_t i = 0; r == 0 && i < json_array_size(ev->changes); i++)
			r = buf_printf(&meta, "%s%s", i ? "," : "",
			               json_string_value(json_array_get(ev->changes, i)));
	} else if (r == 0) {
		r = buf_adds(&meta, ev->type);
	}
	if (r == 0)
		r = buf_addc(&meta, ')');
	if (r < 0)
		goto out;
	json_t *obj = json_pack("{s:s,s:s,s:b}", "pathname", ev->pathname, "type", ev->type,
	                        "final", ev->final);
	if (obj && ev->changes)
		json_object_set(obj, "changes", ev->changes);
	log_debug(json_pack("{s:o}", "obj", obj), "handleFsEvent: %s", meta.data);

	struct watch_info *wi = strmap_get(&s->watches, ev->pathname, strlen(ev->pathname));
	if (!wi) {
		log_warn(NULL, "unhandled event for file: %s", ev->pathname);
		goto out;
	}
	switch (wi->kind) {
	case W_INDEX:
		on_index_change(s);
		break;
	case W_SYSINFO:
		if (buf_printf(&d, "handle sysinfo fs change - %s", meta.data) == 0)
			push(s, d.data, work_sysinfo, task_arg_new(s, NULL, NULL, NULL, 0));
		break;
	case W_XML:
		if (buf_printf(&d, "handle zonexml fs change - %s", meta.data) == 0)
			push(s, d.data, work_zonexml,
			     task_arg_new(s, wi->zonename, ev->pathname, ev->type, 0));
		break;
	case W_CONFIG:
		if (buf_printf(&d, "zone context update for %s - %s - [last_modified, json_objects]",
		               wi->zonename, meta.data) == 0)
			push(s, d.data, work_context,
			     task_arg_new(s, wi->zonename, NULL, NULL, VMS_LASTMOD | VMS_JSON));
		break;
	case W_LASTEXITED:
		if (buf_printf(&d, "zone context update for %s - %s - [last_modified, last_exited]",
		               wi->zonename, meta.data) == 0)
			push(s, d.data, work_context,
			     task_arg_new(s, wi->zonename, NULL, NULL, VMS_LASTMOD | VMS_LASTEXITED));
		break;
	}
out:
	buf_done(&meta);
	buf_done(&d);
}
