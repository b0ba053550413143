/*
 * mirror.c - a local copy of every VM kept current from /events
 * (spec/http-api.md §5 VminfodWatcher; DESIGN.md §7).
 *
 * The copy is a jansson object zonename → VM in /vms order.  Events
 * replace (create, modify) or remove (delete) entries and are handed to
 * the caller.  After a reconnect that could not resume, the events missed
 * while away are gone; the new snapshot is compared with the copy and the
 * differences are reported as synthetic events ("synthetic":true): a
 * create for each new zone, a modify (with the daemon's diff as
 * "changes") for each zone whose object differs, a delete for each zone
 * that disappeared.  Afterwards the copy equals the snapshot.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "diff.h"
#include "client_int.h"
#include "json.h"
#include "timeutil.h"

struct vminfod_mirror {
	struct vminfod_stream *s;
	json_t *vms;              /* zonename → VM object */
	vminfod_mirror_cb cb;
	void *arg;
	unsigned reconciliations;
};

/* The snapshot array as an object keyed by zonename; NULL on ENOMEM. */
static json_t *
snapshot_object(const json_t *arr)
{
	json_t *obj = json_object();
	size_t i;

	for (i = 0; obj && i < json_array_size(arr); i++) {
		json_t *vm = json_array_get(arr, i);
		const char *z = json_string_value(json_object_get(vm, "zonename"));

		if (z && json_object_set(obj, z, vm) < 0) {
			json_decref(obj);
			obj = NULL;
		}
	}
	return obj;
}

/* Build and deliver one synthetic event.  Returns the callback's value. */
static int
synthetic(struct vminfod_mirror *m, const char *type, const char *zonename,
    json_t *oldvm, json_t *newvm)
{
	char date[32];
	const json_t *uuid = json_object_get(newvm ? newvm : oldvm, "uuid");
	json_t *ev = json_object();
	char err[128];
	int r;

	if (!ev)
		return -ENOMEM;
	if (tu_iso_date(tu_wall_ms(), date) < 0)
		date[0] = '\0';
	if (json_object_set_new(ev, "type", json_string(type)) < 0 ||
	    json_object_set_new(ev, "date", json_string(date)) < 0 ||
	    json_object_set_new(ev, "zonename", json_string(zonename)) < 0 ||
	    (uuid && json_object_set(ev, "uuid", (json_t *)uuid) < 0) ||
	    (newvm && json_object_set(ev, "vm", newvm) < 0)) {
		json_decref(ev);
		return -ENOMEM;
	}
	if (oldvm && newvm) {
		json_t *changes = diff_values(oldvm, newvm, true, err, sizeof(err));

		if (json_object_set_new(ev, "changes",
		    changes ? changes : json_array()) < 0) {
			json_decref(ev);
			return -ENOMEM;
		}
	}
	if (json_object_set_new(ev, "synthetic", json_true()) < 0) {
		json_decref(ev);
		return -ENOMEM;
	}
	r = m->cb ? m->cb(m->arg, ev, true) : 0;
	json_decref(ev);
	return r;
}

/* Replace the copy with the snapshot, reporting what changed while we
 * were away.  Every difference is reported even when a callback asks to
 * stop; its first non-zero answer is returned. */
static int
reconcile(struct vminfod_mirror *m, json_t *now)
{
	json_t *old = m->vms, *vm;
	const char *z;
	int ret = 0, r;

	m->vms = now;
	m->reconciliations++;
	json_object_foreach(now, z, vm) {
		json_t *was = json_object_get(old, z);

		if (!was)
			r = synthetic(m, "create", z, NULL, vm);
		else if (!json_equal(was, vm))
			r = synthetic(m, "modify", z, was, vm);
		else
			r = 0;
		if (r != 0 && ret == 0)
			ret = r;
	}
	json_object_foreach(old, z, vm) {
		if (json_object_get(now, z))
			continue;
		r = synthetic(m, "delete", z, vm, NULL);
		if (r != 0 && ret == 0)
			ret = r;
	}
	json_decref(old);
	return ret;
}

static int
apply_event(struct vminfod_mirror *m, const json_t *ev)
{
	const char *type = json_string_value(json_object_get(ev, "type"));
	const char *z = json_string_value(json_object_get(ev, "zonename"));
	json_t *vm = json_object_get(ev, "vm");

	if (type && z && (!strcmp(type, "create") || !strcmp(type, "modify")) &&
	    json_is_object(vm)) {
		if (js_set(m->vms, z, json_incref(vm)) < 0)
			return -ENOMEM;
	} else if (type && z && !strcmp(type, "delete")) {
		(void)json_object_del(m->vms, z);
	}
	return m->cb ? m->cb(m->arg, ev, false) : 0;
}

static int
mirror_cb(void *arg, const struct vminfod_msg *msg)
{
	struct vminfod_mirror *m = arg;
	json_t *now;

	switch (msg->type) {
	case VMINFOD_MSG_READY:
		if (msg->resumed || !msg->vms)
			return 0;  /* the missed events follow */
		if (!(now = snapshot_object(msg->vms)))
			return -ENOMEM;
		if (!msg->reconnected || !m->vms) {
			json_decref(m->vms);
			m->vms = now;
			return 0;
		}
		return reconcile(m, now);
	case VMINFOD_MSG_EVENT:
		return apply_event(m, msg->obj);
	case VMINFOD_MSG_DISCONNECTED:
		return 0;
	}
	return 0;
}

struct vminfod_mirror *
vminfod_mirror_new(struct vminfod_client *c,
    const struct vminfod_stream_opts *opts, vminfod_mirror_cb cb, void *arg,
    struct vminfod_error *err)
{
	struct vminfod_stream_opts o = { 0 };
	struct vminfod_mirror *m = calloc(1, sizeof(*m));

	if (!m) {
		client_fail(err, -ENOMEM, "out of memory");
		return NULL;
	}
	if (opts)
		o = *opts;
	o.reconnect = true;
	m->cb = cb;
	m->arg = arg;
	if (!(m->s = vminfod_stream_new(c, &o, mirror_cb, m))) {
		free(m);
		client_fail(err, -ENOMEM, "out of memory");
		return NULL;
	}
	if (vminfod_stream_wait_ready(m->s, err) < 0) {
		vminfod_mirror_free(m);
		return NULL;
	}
	if (!m->vms && !(m->vms = json_object())) {
		vminfod_mirror_free(m);
		client_fail(err, -ENOMEM, "out of memory");
		return NULL;
	}
	return m;
}

void
vminfod_mirror_free(struct vminfod_mirror *m)
{
	if (!m)
		return;
	vminfod_stream_free(m->s);
	json_decref(m->vms);
	free(m);
}

int
vminfod_mirror_run(struct vminfod_mirror *m, long timeout_ms,
    struct vminfod_error *err)
{
	return vminfod_stream_run(m->s, timeout_ms, err);
}

const json_t *
vminfod_mirror_vms(const struct vminfod_mirror *m)
{
	return m->vms;
}

unsigned
vminfod_mirror_reconciliations(const struct vminfod_mirror *m)
{
	return m->reconciliations;
}

struct vminfod_stream *
vminfod_mirror_stream(struct vminfod_mirror *m)
{
	return m->s;
}
