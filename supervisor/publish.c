/*
 * publish.c - event lines and snapshots out of the supervisor.  See
 * publish.h.
 */
#include "publish.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "json.h"
#include "log.h"
#include "timeutil.h"

struct publish {
	struct ring_writer *ring;  /* not owned */
	int ndjson_fd;             /* not owned; -1 for none */
	uint64_t version;          /* last published */
	publish_vm_iter_fn vms;
	void *owner;
	struct buf line;           /* reused for every event */
	struct ring_snap_vm *snap; /* reused for every snapshot */
	size_t snap_cap, snap_n;
};

static int snapshot_cb(struct ring_writer *w, void *arg);

struct publish *publish_new(struct ring_writer *ring, int ndjson_fd,
	publish_vm_iter_fn vms, void *owner)
{
	struct publish *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->ring = ring;
	p->ndjson_fd = ndjson_fd;
	p->vms = vms;
	p->owner = owner;
	if (ring) {
		p->version = ring_writer_version(ring);
		ring_writer_set_snapshot_cb(ring, snapshot_cb, p);
	}
	return p;
}

void publish_free(struct publish *p)
{
	if (!p)
		return;
	if (p->ring)
		ring_writer_set_snapshot_cb(p->ring, NULL, NULL);
	buf_done(&p->line);
	free(p->snap);
	free(p);
}

uint64_t publish_version(const struct publish *p)
{
	return p->version;
}

const char *publish_type_name(enum ring_ev_type type)
{
	switch (type) {
	case RING_EV_CREATE: return "create";
	case RING_EV_MODIFY: return "modify";
	case RING_EV_DELETE: return "delete";
	}
	return "event";
}

static int collect_vm(void *arg, const char *zonename, const char *json, size_t json_len)
{
	struct publish *p = arg;
	if (p->snap_n == p->snap_cap) {
		size_t cap = p->snap_cap ? p->snap_cap * 2 : 64;
		struct ring_snap_vm *s = realloc(p->snap, cap * sizeof(*s));
		if (!s)
			return -ENOMEM;
		p->snap = s;
		p->snap_cap = cap;
	}
	p->snap[p->snap_n++] = (struct ring_snap_vm){ zonename, strlen(zonename), json, json_len };
	return 0;
}

static int snapshot_cb(struct ring_writer *w, void *arg)
{
	struct publish *p = arg;
	p->snap_n = 0;
	int r = p->vms(p->owner, collect_vm, p);
	if (r < 0)
		return r;
	r = ring_writer_snapshot(w, p->snap, p->snap_n);
	if (r == -EMSGSIZE) {
		size_t size = 0;
		for (size_t i = 0; i < p->snap_n; i++)
			size += p->snap[i].json_len + p->snap[i].zonename_len;
		log_error(json_pack("{s:I,s:I}", "size", (json_int_t)size, "vms", (json_int_t)p->snap_n),
		          "snapshot of %zu VMs (%zu bytes) is larger than a quarter of the ring; "
		          "raise --ring-size to at least 4 times that", p->snap_n, size);
	}
	return r;
}

int publish_snapshot(struct publish *p)
{
	if (!p->ring)
		return 0;
	return snapshot_cb(p->ring, p);
}

/* The log record's `ev`: the event object as the original logs it. */
static json_t *log_event(const char *type, const char *date, const char *zonename,
	const char *uuid, json_t *vm, json_t *changes)
{
	json_t *ev = json_object();
	if (!ev)
		return NULL;
	js_set(ev, "type", json_string(type));
	js_set(ev, "date", json_string(date));
	js_set(ev, "zonename", json_string(zonename));
	js_set(ev, "uuid", json_string(uuid));
	if (vm)
		js_set(ev, "vm", json_incref(vm));
	if (changes)
		js_set(ev, "changes", json_incref(changes));
	return json_pack("{s:o}", "ev", ev);
}

int64_t publish_event(struct publish *p, enum ring_ev_type type, const char *zonename,
	const char *uuid, const char *vm_json, size_t vm_json_len, json_t *vm,
	json_t *changes, size_t nvms)
{
	const char *tname = publish_type_name(type);
	char date[32];
	if (tu_iso_date(tu_wall_ms(), date) < 0)
		return -EINVAL;
	if (log_enabled(LOG_INFO))
		log_info(log_event(tname, date, zonename, uuid, vm, changes),
		         "emitting \"%s\" event (%zu VMs total)", tname, nvms);

	uint64_t version = p->version + 1;
	struct buf *b = &p->line;
	size_t vm_off = 0;
	buf_reset(b);
	int r = buf_printf(b, "{\"type\":\"%s\",\"date\":\"%s\",\"zonename\":", tname, date);
	if (r == 0)
		r = js_dump_string(zonename, strlen(zonename), b);
	if (r == 0)
		r = buf_adds(b, ",\"uuid\":");
	if (r == 0)
		r = js_dump_string(uuid, strlen(uuid), b);
	if (r == 0 && vm_json) {
		r = buf_adds(b, ",\"vm\":");
		vm_off = b->len;
		if (r == 0)
			r = buf_add(b, vm_json, vm_json_len);
	}
	if (r == 0 && changes) {
		r = buf_adds(b, ",\"changes\":");
		if (r == 0)
			r = js_dump(changes, b) < 0 ? -ENOMEM : 0;
	}
	if (r == 0)
		r = buf_printf(b, ",\"version\":%llu}\n", (unsigned long long)version);
	if (r < 0)
		return r;

	if (p->ring) {
		r = ring_writer_event(p->ring, type, zonename, strlen(zonename), b->data,
		                      b->len, vm_off, vm_json ? vm_json_len : 0);
		if (r == -EMSGSIZE)
			log_error(json_pack("{s:s,s:I}", "zonename", zonename, "size", (json_int_t)b->len),
			          "event of %zu bytes (or the snapshot it needs first) is larger than a "
			          "quarter of the ring; raise --ring-size", b->len);
		if (r < 0)
			return r;
	}
	p->version = version;
	if (p->ndjson_fd >= 0) {
		r = buf_write(b, p->ndjson_fd);
		if (r < 0)
			log_warn(log_err_fields(strerror(-r), NULL),
			         "cannot write event to the events file, ignoring");
	}
	return (int64_t)version;
}
