/*
 * vms.c - the VM map and the per-VM operations of spec/daemon.md §7:
 * refresh (reload some raw sections, rebuild, diff, emit modify), create
 * and delete.  The map is keyed by zonename in insertion order; each
 * entry keeps its object's serialisation, made once when it changes and
 * used for events, snapshots and the log, and the object itself frozen
 * (vms.h).
 */
#include "vms.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "diff.h"
#include "jfreeze.h"
#include "json.h"
#include "log.h"
#include "publish.h"
#include "ring.h"
#include "supervisor.h"

/* The allocation behind a struct vm_entry: the entry and what only this
 * file touches. */
struct vm_slot {
	struct vm_entry e;
	struct jfreeze *frozen;   /* the VM object */
};

static struct vm_slot *slot_of(const struct vm_entry *e)
{
	return (struct vm_slot *)((char *)e - offsetof(struct vm_slot, e));
}

json_t *vms_object(const struct vm_entry *e)
{
	return jfreeze_thaw(slot_of(e)->frozen);
}

const struct jfreeze *vms_frozen(const struct vm_entry *e)
{
	return slot_of(e)->frozen;
}

json_t *vms_old_object(const struct vm_entry *e, json_t *vm, struct jfreeze **ret_frozen)
{
	*ret_frozen = jfreeze_new(vm);
	if (!*ret_frozen)
		return NULL;
	json_t *old = jfreeze_thaw_reusing(slot_of(e)->frozen, *ret_frozen, vm);
	if (!old) {
		jfreeze_unref(*ret_frozen);
		*ret_frozen = NULL;
	}
	return old;
}

struct vm_entry *vms_get(struct supervisor *s, const char *zonename)
{
	return strmap_get(&s->vms, zonename, strlen(zonename));
}

static void entry_free(struct vm_entry *e)
{
	if (!e)
		return;
	free(e->zonename);
	free(e->uuid);
	vm_raw_free(e->raw);
	free(e->json);
	jfreeze_unref(slot_of(e)->frozen);
	free(slot_of(e));
}

void vms_free_all(struct supervisor *s)
{
	for (struct strmap_entry *me = s->vms.head; me; me = me->next)
		entry_free(me->value);
	strmap_done(&s->vms);
}

/* Replace the object (frozen: vm frozen, or NULL to freeze it here).
 * Takes vm and frozen. */
static int replace(struct vm_entry *e, json_t *vm, struct jfreeze *frozen,
	struct vm_raw *raw)
{
	size_t len;
	char *json = js_dumps(vm, &len);
	if (json && !frozen)
		frozen = jfreeze_new(vm);
	if (!json || !frozen) {
		free(json);
		jfreeze_unref(frozen);
		json_decref(vm);
		return -ENOMEM;
	}
	/* The text lives as long as the VM: give back the buffer's growth
	 * slack (about 40% of it). */
	char *fit = realloc(json, len + 1);
	if (fit)
		json = fit;
	free(e->json);
	jfreeze_unref(slot_of(e)->frozen);
	slot_of(e)->frozen = frozen;
	json_decref(vm);
	e->json = json;
	e->json_len = len;
	if (raw && raw != e->raw) {
		vm_raw_free(e->raw);
		e->raw = raw;
	}
	return 0;
}

int vms_replace(struct vm_entry *e, json_t *vm, struct vm_raw *raw)
{
	return replace(e, vm, NULL, raw);
}

int vms_replace_frozen(struct vm_entry *e, json_t *vm, struct jfreeze *frozen,
	struct vm_raw *raw)
{
	return replace(e, vm, frozen, raw);
}

int vms_insert(struct supervisor *s, const char *zonename, const char *uuid,
	struct vm_raw *raw, json_t *vm)
{
	/* Takes raw and vm whatever happens. */
	struct vm_slot *slot = calloc(1, sizeof(*slot));
	struct vm_entry *e = slot ? &slot->e : NULL;
	if (e) {
		e->zonename = strdup(zonename);
		e->uuid = strdup(uuid);
	}
	if (!e || !e->zonename || !e->uuid) {
		json_decref(vm);
		vm_raw_free(raw);
		entry_free(e);
		return -ENOMEM;
	}
	e->raw = raw;
	if (replace(e, vm, NULL, NULL) < 0 ||
	    strmap_set(&s->vms, zonename, strlen(zonename), e, NULL) < 0) {
		entry_free(e);
		return -ENOMEM;
	}
	return 0;
}

/* JavaScript orders integer-like keys first: the VM map too
 * (spec/http-api.md §3.3).  Zonenames are UUIDs in practice, so the
 * first pass finds nothing and costs one check per VM. */
int vms_foreach(struct supervisor *s, int (*fn)(void *arg, struct vm_entry *e), void *arg)
{
	size_t nidx = 0;
	for (struct strmap_entry *me = s->vms.head; me; me = me->next)
		if (js_is_index_key(me->key))
			nidx++;
	if (nidx) {
		json_t *tmp = json_object();
		for (struct strmap_entry *me = s->vms.head; me; me = me->next)
			if (js_is_index_key(me->key))
				json_object_set_new(tmp, me->key, json_null());
		const char **keys;
		long n = js_object_keys(tmp, &keys);
		int r = n < 0 ? (int)n : 0;
		for (long i = 0; i < n && r == 0; i++)
			r = fn(arg, vms_get(s, keys[i]));
		if (n >= 0)
			free(keys);
		json_decref(tmp);
		if (r < 0)
			return r;
	}
	for (struct strmap_entry *me = s->vms.head; me; me = me->next) {
		if (nidx && js_is_index_key(me->key))
			continue;
		int r = fn(arg, me->value);
		if (r < 0)
			return r;
	}
	return 0;
}

void vms_emit(struct supervisor *s, int type, const char *zonename, const char *uuid,
	struct vm_entry *e, json_t *changes)
{
	/* The tree only serves the info-level log record of the event. */
	json_t *vm = e && log_enabled(LOG_INFO) ? vms_object(e) : NULL;
	int64_t v = publish_event(s->pub, (enum ring_ev_type)type, zonename, uuid,
	                          e ? e->json : NULL, e ? e->json_len : 0, vm,
	                          changes, strmap_count(&s->vms));
	json_decref(vm);
	if (v >= 0)
		supervisor_published(s);
	if (v < 0)
		log_error(json_pack("{s:s,s:o}", "zonename", zonename, "err",
		                    log_err_obj(strerror((int)-v), NULL)),
		          "cannot publish \"%s\" event for %s, subscribers will miss it; "
		          "the next full refresh resynchronises them",
		          publish_type_name((enum ring_ev_type)type), zonename);
}

static const struct zone_record *index_record(struct supervisor *s, const char *zonename)
{
	return strmap_get(&s->index_map, zonename, strlen(zonename));
}

int vms_delete(struct supervisor *s, const char *zonename)
{
	struct vm_entry *e = strmap_del(&s->vms, zonename, strlen(zonename));
	if (!e) {
		log_warn(NULL, "deleteVmobj(%s) called for non-existent zone", zonename);
		return 0;
	}
	/* Watches stay while the zone is still in the index: its XML may
	 * come back (a file replaced by delete + create). */
	if (!index_record(s, zonename))
		tasks_unwatch_zone(s, zonename);
	log_info(NULL, "stopped watching %s", zonename);
	vms_emit(s, RING_EV_DELETE, zonename, e->uuid, NULL, NULL);
	entry_free(e);
	supervisor_status_changed(s);
	return 0;
}

int vms_create(struct supervisor *s, const char *zonename)
{
	char err[512];
	if (vms_get(s, zonename)) {
		log_warn(NULL, "createVmobj(%s) called for zone already known about", zonename);
		return 0;
	}
	const struct zone_record *rec = index_record(s, zonename);
	if (!rec) {
		log_debug(log_err_fields("No such zone configured", "ENOENT"),
		          "failed to getZoneRecords(%s)", zonename);
		log_error(log_err_fields("No such zone configured", "ENOENT"),
		          "createVmobj(%s) (uuid: %s)", zonename, "undefined");
		return -ENOENT;
	}
	if (strcmp(rec->uuid, zonename) != 0 && !zoneindex_is_uuid(zonename))
		log_warn(NULL, "VM zonename \"%s\" does not match uuid \"%s\"", zonename, rec->uuid);
	log_debug(json_pack("{s:s,s:s}", "uuid", rec->uuid, "zonename", zonename),
	          "createVmobj zonename: %s -> uuid: %s", zonename, rec->uuid);
	tasks_watch_zone(s, rec);
	struct vm_raw *raw = vm_raw_new();
	if (!raw)
		return -ENOMEM;
	int r = vmload_zone(&s->vl, rec, raw, VMS_ALL, err, sizeof(err));
	if (r < 0) {
		log_error(NULL, "failed to getZoneData(%s): %s", rec->uuid, err);
		log_error(log_err_fields(err, NULL), "createVmobj(%s) (uuid: %s)", zonename, rec->uuid);
		vm_raw_free(raw);
		return r;
	}
	json_t *vm = vmload_build(raw, s->sysinfo, err, sizeof(err));
	if (!vm) {
		log_error(NULL, "failed to getVmobj(%s): %s", rec->uuid, err);
		log_error(log_err_fields(err, NULL), "createVmobj(%s) (uuid: %s)", zonename, rec->uuid);
		vm_raw_free(raw);
		return -EINVAL;
	}
	r = vms_insert(s, zonename, rec->uuid, raw, vm);
	if (r < 0)
		return r;
	log_info(NULL, "started watching %s", zonename);
	struct vm_entry *e = vms_get(s, zonename);
	vms_emit(s, RING_EV_CREATE, zonename, e->uuid, e, NULL);
	supervisor_status_changed(s);
	return 0;
}

int vms_refresh(struct supervisor *s, const char *zonename, unsigned sections,
	char *err, size_t errlen)
{
	struct vm_entry *e = vms_get(s, zonename);
	if (!e) {
		log_debug(NULL, "cannot refresh vmobj, doesn't exist");
		return 0;
	}
	log_debug(NULL, "refreshing zoneData for %s", zonename);
	const struct zone_record *rec = index_record(s, zonename);
	if (!rec) {
		/* The zone left the index: "No such zone configured". */
		snprintf(err, errlen, "zoneadm: %s: No such zone configured", zonename);
		log_error(log_err_fields(err, "ENOENT"), "failed to refresh vmobj %s: getZoneData %s",
		          zonename, err);
		log_debug(json_pack("{s:s}", "uuid", zonename), "marking %s as deleted", zonename);
		vms_delete(s, zonename);
		log_debug(json_pack("{s:s}", "uuid", zonename), "successfully marked %s as deleted",
		          zonename);
		return 0;
	}
	struct vm_raw *raw = vm_raw_dup(e->raw);
	if (!raw) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	int r = vmload_zone(&s->vl, rec, raw, sections, err, errlen);
	if (r < 0) {
		log_error(log_err_fields(err, NULL), "failed to refresh vmobj %s: getZoneData %s",
		          zonename, err);
		vm_raw_free(raw);
		return r;
	}
	log_debug(NULL, "requesting new vmobj for %s", zonename);
	json_t *vm = vmload_build(raw, s->sysinfo, err, errlen);
	if (!vm) {
		log_error(log_err_fields(err, NULL), "unable to refresh vmobj for %s, failed getVmobj",
		          zonename);
		vm_raw_free(raw);
		return -EINVAL;
	}
	char derr[256];
	struct jfreeze *frozen;
	json_t *old = vms_old_object(e, vm, &frozen);
	if (!old) {
		json_decref(vm);
		vm_raw_free(raw);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	json_t *changes = diff_values(old, vm, true, derr, sizeof(derr));
	if (!changes) {
		/* The original crashed here; the port keeps the old object
		 * and reports it, so one odd VM cannot stop the daemon. */
		log_error(json_pack("{s:O,s:O,s:o}", "from", old, "to", vm, "err",
		                    log_err_obj(derr, NULL)),
		          "failed to calculate object diff");
		json_decref(old);
		jfreeze_unref(frozen);
		json_decref(vm);
		vm_raw_free(raw);
		snprintf(err, errlen, "%s", derr);
		return -EINVAL;
	}
	json_decref(old);
	if (json_array_size(changes) == 0) {
		/* Quirk kept: an empty diff keeps the old object (and its key
		 * order), but the raw data is the new one. */
		vm_raw_free(e->raw);
		e->raw = raw;
		jfreeze_unref(frozen);
		json_decref(vm);
		json_decref(changes);
		return 0;
	}
	r = vms_replace_frozen(e, vm, frozen, raw);
	if (r < 0) {
		json_decref(changes);
		vm_raw_free(raw);
		snprintf(err, errlen, "out of memory");
		return r;
	}
	vms_emit(s, RING_EV_MODIFY, zonename, e->uuid, e, changes);
	json_decref(changes);
	return 0;
}
