/*
 * ringreader.c - follow the ring file: VM set, event window, status.
 * See ringreader.h.
 *
 * State is rebuilt into fresh objects and swapped in only when complete,
 * so a failed reload leaves the previous (consistent) state in place.
 */
#include "ringreader.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

/* How often a reload retries when it races with the writer; each try is
 * a snapshot copy and a walk over the ring, and the writer would have to
 * lap the whole ring during every one of them to exhaust this. */
#define LOAD_ATTEMPTS 20

/* One event of the window: its line (shared block; the block also holds
 * the zonename after the line's NUL, see copy_line) and what filters
 * need to know without parsing it. */
struct win_ent {
	struct rcbuf *line;
	enum ring_ev_type type;
	uint32_t zlen;
};

/* Event lines for versions first .. first+n-1, in a circular array. */
struct window {
	struct win_ent *slot;
	size_t cap;      /* power of two, or 0 */
	size_t start;    /* slot index of `first` */
	size_t n;
	uint64_t first;
};

struct ringreader {
	char *path;
	struct ring_reader *r;
	char epoch[RING_EPOCH_LEN + 1];
	uint64_t version;
	struct vmset *vms;
	struct window win;
	struct ring_rec rec;   /* scratch copy, reused */
};

static void win_clear(struct window *w)
{
	for (size_t i = 0; i < w->n; i++)
		rcbuf_unref(w->slot[(w->start + i) & (w->cap - 1)].line);
	w->start = w->n = 0;
}

static void win_free(struct window *w)
{
	win_clear(w);
	free(w->slot);
	memset(w, 0, sizeof(*w));
}

/* Append the line of event `version`; takes over the caller's reference.
 * The window stays contiguous: a line that does not follow the last one
 * held starts it afresh. */
static int win_push(struct window *w, uint64_t version, struct rcbuf *line, const struct ring_rec *rec)
{
	if (w->n && version != w->first + w->n)
		win_clear(w);
	if (w->n == w->cap) {
		size_t cap = w->cap ? w->cap * 2 : 1024;
		struct win_ent *s = malloc(cap * sizeof(*s));
		if (!s)
			return -ENOMEM;
		for (size_t i = 0; i < w->n; i++)
			s[i] = w->slot[(w->start + i) & (w->cap - 1)];
		free(w->slot);
		w->slot = s;
		w->cap = cap;
		w->start = 0;
	}
	if (w->n == 0)
		w->first = version;
	w->slot[(w->start + w->n) & (w->cap - 1)] =
		(struct win_ent){ line, rec->ev_type, (uint32_t)rec->zonename_len };
	w->n++;
	return 0;
}

static const struct win_ent *win_get(const struct window *w, uint64_t version)
{
	if (w->n == 0 || version < w->first || version - w->first >= w->n)
		return NULL;
	return &w->slot[(w->start + (size_t)(version - w->first)) & (w->cap - 1)];
}

/* Drop the lines older than `oldest`. */
static void win_trim(struct window *w, uint64_t oldest)
{
	while (w->n && w->first < oldest) {
		rcbuf_unref(w->slot[w->start].line);
		w->start = (w->start + 1) & (w->cap - 1);
		w->first++;
		w->n--;
	}
}

/* The event's line in a new shared block: the line, NUL, the zonename,
 * NUL; len covers the line only, so senders see just the line.  A
 * zonename longer than 64 KiB (never valid) is not kept. */
static struct rcbuf *copy_line(const struct ring_rec *rec)
{
	size_t zlen = rec->zonename_len <= UINT16_MAX ? rec->zonename_len : 0;
	struct rcbuf *b = rcbuf_new(rec->line_len + 1 + zlen);
	if (!b)
		return NULL;
	memcpy(b->data, rec->line, rec->line_len);
	b->data[rec->line_len] = '\0';
	if (zlen)
		memcpy(b->data + rec->line_len + 1, rec->zonename, zlen);
	b->len = rec->line_len;
	return b;
}

/* Apply the event in rec (whose line was copied into `line`) to vms. */
static int apply(struct vmset *vms, const struct ring_rec *rec, struct rcbuf *line)
{
	switch (rec->ev_type) {
	case RING_EV_CREATE:
	case RING_EV_MODIFY:
		if (rec->vm_len == 0 || rec->vm_off > line->len || rec->vm_len > line->len - rec->vm_off)
			return -EPROTO;
		return vmset_put(vms, rec->zonename, rec->zonename_len, line, line->data + rec->vm_off, rec->vm_len);
	case RING_EV_DELETE:
		(void)vmset_del(vms, rec->zonename, rec->zonename_len);   /* unknown: nothing to remove */
		return 0;
	}
	return -EPROTO;
}

/* A VM set holding the snapshot in rec; its JSON texts are copied into
 * one block that the entries share. */
static int vms_from_snapshot(const struct ring_rec *rec, struct vmset **ret)
{
	size_t total = 0;
	for (size_t i = 0; i < rec->nvms; i++)
		total += rec->vms[i].json_len;
	struct vmset *vms = vmset_new();
	struct rcbuf *block = rcbuf_new(total);
	if (!vms || !block) {
		vmset_free(vms);
		rcbuf_unref(block);
		return -ENOMEM;
	}
	size_t off = 0;
	for (size_t i = 0; i < rec->nvms; i++) {
		const struct ring_snap_vm *vm = &rec->vms[i];
		memcpy(block->data + off, vm->json, vm->json_len);
		int r = vmset_put(vms, vm->zonename, vm->zonename_len, block, block->data + off, vm->json_len);
		if (r < 0) {
			vmset_free(vms);
			rcbuf_unref(block);
			return r;
		}
		off += vm->json_len;
	}
	rcbuf_unref(block);
	*ret = vms;
	return 0;
}

/* One attempt at loading the newest snapshot, the window and the events
 * after the snapshot.  -EAGAIN when the writer got in the way. */
static int load_once(struct ringreader *rr)
{
	char epoch[RING_EPOCH_LEN + 1];
	int r = ring_reader_epoch(rr->r, epoch);
	if (r < 0)
		return r;
	r = ring_reader_snapshot(rr->r, &rr->rec);
	if (r < 0)
		return r;
	uint64_t snap_version = rr->rec.version;
	struct vmset *vms = NULL;
	r = vms_from_snapshot(&rr->rec, &vms);
	if (r < 0)
		return r;

	struct window win = { 0 };
	uint64_t version = snap_version;
	uint64_t head = ring_reader_head_version(rr->r);
	uint64_t v = ring_reader_oldest_version(rr->r);
	if (v == 0)
		v = 1;
	if (v > snap_version + 1 && head > snap_version) {
		r = -EAGAIN;   /* events after the snapshot already gone: a newer snapshot exists */
		goto fail;
	}
	for (; v <= head; v++) {
		r = ring_reader_event(rr->r, v, &rr->rec);
		if (r == -ESTALE && v <= snap_version) {
			win_clear(&win);   /* older history only serves resumes: keep what follows */
			continue;
		}
		if (r == -ESTALE) {
			r = -EAGAIN;
			goto fail;
		}
		if (r == -ENOENT)
			break;
		if (r < 0)
			goto fail;
		struct rcbuf *line = copy_line(&rr->rec);
		if (!line) {
			r = -ENOMEM;
			goto fail;
		}
		if (v > snap_version) {
			r = apply(vms, &rr->rec, line);
			if (r < 0) {
				rcbuf_unref(line);
				goto fail;
			}
			version = v;
		}
		r = win_push(&win, v, line, &rr->rec);
		if (r < 0) {
			rcbuf_unref(line);
			goto fail;
		}
	}

	vmset_free(rr->vms);
	win_free(&rr->win);
	rr->vms = vms;
	rr->win = win;
	rr->version = version;
	memcpy(rr->epoch, epoch, sizeof(epoch));
	return 0;
fail:
	vmset_free(vms);
	win_free(&win);
	return r;
}

static int load(struct ringreader *rr)
{
	int r = -EAGAIN;
	for (int i = 0; i < LOAD_ATTEMPTS && r == -EAGAIN; i++)
		r = load_once(rr);
	return r;
}

int ringreader_open(const char *path, struct ringreader **ret)
{
	struct ringreader *rr = calloc(1, sizeof(*rr));
	if (!rr)
		return -ENOMEM;
	rr->path = strdup(path);
	if (!rr->path) {
		free(rr);
		return -ENOMEM;
	}
	int r = ring_reader_open(path, &rr->r);
	if (r == 0)
		r = load(rr);
	if (r < 0) {
		ringreader_free(rr);
		return r;
	}
	*ret = rr;
	return 0;
}

void ringreader_free(struct ringreader *rr)
{
	if (!rr)
		return;
	if (rr->r)
		ring_reader_close(rr->r);
	vmset_free(rr->vms);
	win_free(&rr->win);
	ring_rec_done(&rr->rec);
	free(rr->path);
	free(rr);
}

/* The file was replaced by the writer (new epoch): map the new one. */
static int reopen(struct ringreader *rr)
{
	struct ring_reader *nr = NULL;
	int r = ring_reader_open(rr->path, &nr);
	if (r < 0)
		return r;
	struct ring_reader *old = rr->r;
	rr->r = nr;
	r = load(rr);
	if (r < 0) {
		/* Keep serving the old state from the old mapping. */
		rr->r = old;
		ring_reader_close(nr);
		return r;
	}
	ring_reader_close(old);
	return 0;
}

int ringreader_poll(struct ringreader *rr, bool *ret_reset)
{
	*ret_reset = false;
	if (ring_reader_replaced(rr->r)) {
		int r = reopen(rr);
		if (r < 0)
			return r;
		*ret_reset = true;
		return 0;
	}
	int count = 0;
	for (;;) {
		uint64_t v = rr->version + 1;
		int r = ring_reader_event(rr->r, v, &rr->rec);
		if (r == -ENOENT)
			break;
		if (r == -ESTALE) {
			r = load(rr);
			if (r < 0)
				return r;
			*ret_reset = true;
			return 0;
		}
		if (r < 0)
			return r;
		struct rcbuf *line = copy_line(&rr->rec);
		if (!line)
			return -ENOMEM;
		/* A record whose metadata does not fit its line (-EPROTO) still
		 * goes to subscribers: stalling the stream on it would be worse
		 * than a VM set missing one change, which the next snapshot
		 * reload repairs. */
		r = apply(rr->vms, &rr->rec, line);
		if (r == 0 || r == -EPROTO)
			r = win_push(&rr->win, v, line, &rr->rec);
		if (r < 0) {
			rcbuf_unref(line);
			return r;
		}
		rr->version = v;
		count++;
	}
	win_trim(&rr->win, ring_reader_oldest_version(rr->r));
	return count;
}

const char *ringreader_epoch(const struct ringreader *rr)
{
	return rr->epoch;
}

uint64_t ringreader_version(const struct ringreader *rr)
{
	return rr->version;
}

uint64_t ringreader_oldest(const struct ringreader *rr)
{
	return rr->win.n ? rr->win.first : rr->version + 1;
}

struct rcbuf *ringreader_event(const struct ringreader *rr, uint64_t version)
{
	const struct win_ent *e = win_get(&rr->win, version);
	return e ? e->line : NULL;
}

struct rcbuf *ringreader_event_info(const struct ringreader *rr, uint64_t version, enum ring_ev_type *ret_type,
				    const char **ret_zonename, size_t *ret_zlen)
{
	const struct win_ent *e = win_get(&rr->win, version);
	if (!e)
		return NULL;
	*ret_type = e->type;
	*ret_zonename = e->line->data + e->line->len + 1;
	*ret_zlen = e->zlen > UINT16_MAX ? 0 : e->zlen;
	return e->line;
}

void ringreader_writer(const struct ringreader *rr, pid_t *ret_pid, uint64_t *ret_generation)
{
	ring_reader_writer(rr->r, ret_pid, ret_generation, NULL);
}

struct vmset *ringreader_vms(struct ringreader *rr)
{
	return rr->vms;
}

int ringreader_status(struct ringreader *rr, struct buf *out)
{
	return ring_reader_status(rr->r, out);
}
