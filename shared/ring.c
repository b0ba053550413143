/*
 * ring.c - the ring file: format, writer and reader.  See ring.h for the
 * layout diagram and the publication protocol.
 *
 * The writer is the only process that stores into the file; it trusts its
 * own mapping once ring_writer_open() has validated it.  Readers trust
 * nothing: every offset and length they take from the mapping is checked
 * against the layout before bytes are touched, and record contents are
 * parsed only from their private copy, after the seqlock check said the
 * copy is not torn.
 *
 * Memory ordering: the record bytes themselves are copied with memcpy; the
 * atomics around them (tail_pos, index slots, head/snap positions, status
 * sequence) carry release/acquire fences as in the Linux seqlock: the
 * writer stores the sequence, fences, writes the bytes; the reader copies
 * the bytes, fences, re-reads the sequence.
 */
#include "ring.h"

#include "buf.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uuid/uuid.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the ring format is little-endian");
_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "64-bit atomics must be lock-free to share them across processes");
_Static_assert(sizeof(_Atomic uint64_t) == 8, "atomic u64 must be 8 bytes");

#define RING_MAGIC "VMIRING" /* 8 bytes with its NUL */
#define RING_FORMAT_VERSION 1u
#define RING_HEADER_SIZE 4096u
#define RING_PAGE 4096u
#define RING_ALIGN 32u
#define REC_HDR_SIZE 32u
#define EV_HDR_SIZE 24u
#define SNAP_HDR_SIZE 8u
#define SNAP_ENT_SIZE 8u
#define STATUS_HDR_SIZE 16u
#define STATUS_MAX_SIZE (1024u * 1024u)
#define POS_NONE UINT64_MAX
#define REC_PAD 3u
/* A reader retries a status copy that raced with the writer this often
 * before answering -EAGAIN. */
#define STATUS_TRIES 64

struct ring_hdr {
	char magic[8];
	uint32_t format_version;
	uint32_t header_size;
	uint64_t file_size;
	uint64_t index_off;
	uint64_t index_slots;
	uint64_t status_off;
	uint64_t status_size;
	uint64_t data_off;
	uint64_t data_size;
	char epoch[40];
	_Atomic uint64_t writer_pid;
	_Atomic uint64_t generation;
	_Atomic uint64_t retired;
	_Atomic uint64_t heartbeat_ns;
	_Atomic uint64_t head_version;
	_Atomic uint64_t head_pos;
	_Atomic uint64_t tail_pos;
	_Atomic uint64_t snap_pos;
	_Atomic uint64_t oldest_version;
	uint8_t reserved[RING_HEADER_SIZE - 184];
};
_Static_assert(offsetof(struct ring_hdr, format_version) == 8, "layout");
_Static_assert(offsetof(struct ring_hdr, header_size) == 12, "layout");
_Static_assert(offsetof(struct ring_hdr, file_size) == 16, "layout");
_Static_assert(offsetof(struct ring_hdr, index_off) == 24, "layout");
_Static_assert(offsetof(struct ring_hdr, index_slots) == 32, "layout");
_Static_assert(offsetof(struct ring_hdr, status_off) == 40, "layout");
_Static_assert(offsetof(struct ring_hdr, status_size) == 48, "layout");
_Static_assert(offsetof(struct ring_hdr, data_off) == 56, "layout");
_Static_assert(offsetof(struct ring_hdr, data_size) == 64, "layout");
_Static_assert(offsetof(struct ring_hdr, epoch) == 72, "layout");
_Static_assert(offsetof(struct ring_hdr, writer_pid) == 112, "layout");
_Static_assert(offsetof(struct ring_hdr, generation) == 120, "layout");
_Static_assert(offsetof(struct ring_hdr, retired) == 128, "layout");
_Static_assert(offsetof(struct ring_hdr, heartbeat_ns) == 136, "layout");
_Static_assert(offsetof(struct ring_hdr, head_version) == 144, "layout");
_Static_assert(offsetof(struct ring_hdr, head_pos) == 152, "layout");
_Static_assert(offsetof(struct ring_hdr, tail_pos) == 160, "layout");
_Static_assert(offsetof(struct ring_hdr, snap_pos) == 168, "layout");
_Static_assert(offsetof(struct ring_hdr, oldest_version) == 176, "layout");
_Static_assert(sizeof(struct ring_hdr) == RING_HEADER_SIZE, "layout");

struct ring_slot {
	_Atomic uint64_t version;
	_Atomic uint64_t pos;
};
_Static_assert(sizeof(struct ring_slot) == 16, "layout");

struct ring_status {
	_Atomic uint64_t seq;
	_Atomic uint64_t len;
};
_Static_assert(sizeof(struct ring_status) == STATUS_HDR_SIZE, "layout");

struct rec_hdr {
	uint64_t pos;
	uint64_t version;
	uint32_t type;
	uint32_t len;
	uint32_t zero[2];
};
_Static_assert(sizeof(struct rec_hdr) == REC_HDR_SIZE, "layout");
_Static_assert(offsetof(struct rec_hdr, type) == 16 && offsetof(struct rec_hdr, len) == 20, "layout");

/* Where the areas are; a pure function of the file size (layout_for). */
struct layout {
	uint64_t file_size;
	uint64_t index_off, index_slots;
	uint64_t status_off, status_size;
	uint64_t data_off, data_size;
};

struct ring_writer {
	int fd;
	uint8_t *map;
	struct layout lay;
	struct ring_hdr *h;
	struct ring_slot *index;
	struct ring_status *status;
	uint8_t *data;
	char epoch[RING_EPOCH_LEN + 1];
	/* Our copies of the header's positions (we are the only writer). */
	uint64_t head_version, head_pos, tail_pos, snap_pos, snap_version, oldest_version;
	ring_snapshot_cb cb;
	void *cb_arg;
	bool in_cb;
};

struct ring_reader {
	const uint8_t *map;
	struct layout lay;
	const struct ring_hdr *h;
	const struct ring_slot *index;
	const struct ring_status *status;
	const uint8_t *data;
	char *path;
	dev_t dev;
	ino_t ino;
};

static uint64_t align_up(uint64_t n, uint64_t a)
{
	return (n + a - 1) / a * a;
}

static uint64_t rec_total(uint64_t payload_len)
{
	return align_up(REC_HDR_SIZE + payload_len, RING_ALIGN);
}

static void set_why(char *why, size_t whylen, const char *s)
{
	if (why && whylen)
		snprintf(why, whylen, "%s", s);
}

static int layout_for(uint64_t size, struct layout *l)
{
	size -= size % RING_PAGE;
	if (size < RING_MIN_SIZE)
		return -EINVAL;
	uint64_t status = size / 8;
	if (status > STATUS_MAX_SIZE)
		status = STATUS_MAX_SIZE;
	status -= status % RING_PAGE;
	if (status < RING_PAGE)
		status = RING_PAGE;
	uint64_t rest = size - RING_HEADER_SIZE - status;
	uint64_t slots = rest / 1024;
	if (slots < 64)
		slots = 64;
	uint64_t index_bytes = align_up(slots * sizeof(struct ring_slot), RING_PAGE);
	l->file_size = size;
	l->index_off = RING_HEADER_SIZE;
	l->index_slots = index_bytes / sizeof(struct ring_slot);
	l->status_off = l->index_off + index_bytes;
	l->status_size = status;
	l->data_off = l->status_off + status;
	l->data_size = size - l->data_off;
	return 0;
}

static bool epoch_valid(const char *e)
{
	for (int i = 0; i < RING_EPOCH_LEN; i++) {
		char c = e[i];
		bool dash = i == 8 || i == 13 || i == 18 || i == 23;
		if (dash ? c != '-' : !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
			return false;
	}
	for (size_t i = RING_EPOCH_LEN; i < 40; i++)
		if (e[i] != '\0')
			return false;
	return true;
}

static uint64_t get64(const uint8_t *p, size_t off)
{
	uint64_t v;
	memcpy(&v, p + off, sizeof v);
	return v;
}

static uint32_t get32(const uint8_t *p, size_t off)
{
	uint32_t v;
	memcpy(&v, p + off, sizeof v);
	return v;
}

static void put32(uint8_t *p, size_t off, uint32_t v)
{
	memcpy(p + off, &v, sizeof v);
}

/* Check the immutable part of a header copy `hb` (st_size bytes long at
 * most RING_HEADER_SIZE of which are in hb) against the file size.
 * Returns NULL and fills *lay when it describes a ring of this format, or
 * the reason it does not (the words of ring_writer_open's `why`). */
static const char *header_check(const uint8_t *hb, size_t hb_len, uint64_t st_size, struct layout *lay)
{
	if (hb_len < sizeof RING_MAGIC)
		return "truncated";
	if (memcmp(hb, RING_MAGIC, sizeof RING_MAGIC) != 0)
		return "foreign magic";
	if (hb_len < RING_HEADER_SIZE)
		return "truncated";
	if (get32(hb, offsetof(struct ring_hdr, format_version)) != RING_FORMAT_VERSION ||
	    get32(hb, offsetof(struct ring_hdr, header_size)) != RING_HEADER_SIZE)
		return "format version";
	uint64_t fsize = get64(hb, offsetof(struct ring_hdr, file_size));
	if (fsize > st_size)
		return "truncated";
	if (fsize != st_size)
		return "corrupt";
	if (layout_for(fsize, lay) < 0 || lay->file_size != fsize)
		return "corrupt";
	if (get64(hb, offsetof(struct ring_hdr, index_off)) != lay->index_off ||
	    get64(hb, offsetof(struct ring_hdr, index_slots)) != lay->index_slots ||
	    get64(hb, offsetof(struct ring_hdr, status_off)) != lay->status_off ||
	    get64(hb, offsetof(struct ring_hdr, status_size)) != lay->status_size ||
	    get64(hb, offsetof(struct ring_hdr, data_off)) != lay->data_off ||
	    get64(hb, offsetof(struct ring_hdr, data_size)) != lay->data_size)
		return "corrupt";
	if (!epoch_valid((const char *)hb + offsetof(struct ring_hdr, epoch)))
		return "corrupt";
	return NULL;
}

/* ---- payload parsing (shared by the writer's validation and readers;
 * `p` is a private copy or the writer's own trusted mapping) ---- */

struct ev_view {
	uint32_t ev_type, zlen, llen, vm_off, vm_len;
	const char *zonename, *line;
};

static int ev_parse(const uint8_t *p, uint64_t len, struct ev_view *ev)
{
	if (len < EV_HDR_SIZE + 2)
		return -EPROTO;
	ev->ev_type = get32(p, 0);
	ev->zlen = get32(p, 4);
	ev->llen = get32(p, 8);
	ev->vm_off = get32(p, 12);
	ev->vm_len = get32(p, 16);
	if (ev->ev_type < RING_EV_CREATE || ev->ev_type > RING_EV_DELETE)
		return -EPROTO;
	if ((uint64_t)EV_HDR_SIZE + ev->zlen + 1 + ev->llen + 1 != len)
		return -EPROTO;
	if (ev->vm_off > ev->llen || ev->vm_len > ev->llen - ev->vm_off)
		return -EPROTO;
	ev->zonename = (const char *)p + EV_HDR_SIZE;
	ev->line = ev->zonename + ev->zlen + 1;
	if (ev->zonename[ev->zlen] != '\0' || ev->line[ev->llen] != '\0')
		return -EPROTO;
	return 0;
}

/* Check a snapshot payload; on success *ret_n is its VM count.  Visits
 * each VM with `fn` when given. */
static int snap_parse(const uint8_t *p, uint64_t len, uint32_t *ret_n,
		      void (*fn)(void *arg, uint32_t i, const char *z, uint32_t zl, const char *j, uint32_t jl),
		      void *arg)
{
	if (len < SNAP_HDR_SIZE)
		return -EPROTO;
	uint32_t n = get32(p, 0);
	if ((uint64_t)n * SNAP_ENT_SIZE > len - SNAP_HDR_SIZE)
		return -EPROTO;
	uint64_t off = SNAP_HDR_SIZE + (uint64_t)n * SNAP_ENT_SIZE;
	for (uint32_t i = 0; i < n; i++) {
		uint32_t zl = get32(p, SNAP_HDR_SIZE + (size_t)i * SNAP_ENT_SIZE);
		uint32_t jl = get32(p, SNAP_HDR_SIZE + (size_t)i * SNAP_ENT_SIZE + 4);
		uint64_t need = (uint64_t)zl + 1 + jl + 1;
		if (need > len - off)
			return -EPROTO;
		const char *z = (const char *)p + off;
		const char *j = z + zl + 1;
		if (z[zl] != '\0' || j[jl] != '\0')
			return -EPROTO;
		if (fn)
			fn(arg, i, z, zl, j, jl);
		off += need;
	}
	if (off != len)
		return -EPROTO;
	*ret_n = n;
	return 0;
}

/* ---- writer ---- */

static void writer_bind(struct ring_writer *w)
{
	w->h = (struct ring_hdr *)w->map;
	w->index = (struct ring_slot *)(w->map + w->lay.index_off);
	w->status = (struct ring_status *)(w->map + w->lay.status_off);
	w->data = w->map + w->lay.data_off;
}

static const struct rec_hdr *w_rec(const struct ring_writer *w, uint64_t pos)
{
	return (const struct rec_hdr *)(w->data + pos % w->lay.data_size);
}

/* Validate the dynamic state of a mapped file that passed header_check
 * and load it into w.  Walks every record in [tail, head): a file that
 * fails any check is "corrupt". */
static int writer_load(struct ring_writer *w)
{
	struct ring_hdr *h = w->h;
	uint64_t D = w->lay.data_size, nslots = w->lay.index_slots;
	uint64_t hv = atomic_load(&h->head_version);
	uint64_t H = atomic_load(&h->head_pos);
	uint64_t T = atomic_load(&h->tail_pos);
	uint64_t SP = atomic_load(&h->snap_pos);

	if (T > H || H - T > D || T % RING_ALIGN || H % RING_ALIGN)
		return -EPROTO;
	if (SP != POS_NONE && (SP < T || SP >= H))
		return -EPROTO;
	uint64_t first_ev = 0, last_ev = 0, snap_version = 0, events_after_snap = 0;
	bool snap_found = false;
	for (uint64_t p = T; p < H;) {
		uint64_t off = p % D;
		if (D - off < REC_HDR_SIZE)
			return -EPROTO;
		struct rec_hdr rh;
		memcpy(&rh, w->data + off, sizeof rh);
		uint64_t total = rec_total(rh.len);
		if (rh.pos != p || total > D - off || total > H - p)
			return -EPROTO;
		const uint8_t *pl = w->data + off + REC_HDR_SIZE;
		if (rh.type == RING_REC_EVENT) {
			struct ev_view ev;
			if (ev_parse(pl, rh.len, &ev) < 0)
				return -EPROTO;
			if (first_ev && rh.version != last_ev + 1)
				return -EPROTO;
			if (!first_ev)
				first_ev = rh.version;
			if (rh.version == 0)
				return -EPROTO;
			last_ev = rh.version;
			if (snap_found)
				events_after_snap++;
			/* Index slots of events still in range must point here. */
			if (rh.version + nslots > hv) {
				const struct ring_slot *s = &w->index[rh.version % nslots];
				if (atomic_load(&s->version) != rh.version || atomic_load(&s->pos) != p)
					return -EPROTO;
			}
		} else if (rh.type == RING_REC_SNAPSHOT) {
			uint32_t n;
			if (snap_parse(pl, rh.len, &n, NULL, NULL) < 0)
				return -EPROTO;
			if (p == SP) {
				snap_found = true;
				snap_version = rh.version;
			}
		} else if (rh.type == REC_PAD) {
			if (off + total != D)
				return -EPROTO;
		} else {
			return -EPROTO;
		}
		p += total;
	}
	if (first_ev && last_ev != hv)
		return -EPROTO;
	if (SP != POS_NONE) {
		if (!snap_found || snap_version > hv || events_after_snap != hv - snap_version)
			return -EPROTO;
	}
	uint64_t st_len = atomic_load(&w->status->len);
	if (st_len > w->lay.status_size - STATUS_HDR_SIZE)
		atomic_store(&w->status->len, 0);

	uint64_t oldest = first_ev ? first_ev : hv + 1;
	if (hv >= nslots && oldest < hv - nslots + 1)
		oldest = hv - nslots + 1;
	atomic_store(&h->oldest_version, oldest);
	w->head_version = hv;
	w->head_pos = H;
	w->tail_pos = T;
	w->snap_pos = SP;
	w->snap_version = SP == POS_NONE ? 0 : snap_version;
	w->oldest_version = oldest;
	return 0;
}

/* Map an open ring file read-write. */
static int writer_map(struct ring_writer *w)
{
	void *m = mmap(NULL, w->lay.file_size, PROT_READ | PROT_WRITE, MAP_SHARED, w->fd, 0);
	if (m == MAP_FAILED)
		return -errno;
	w->map = m;
	writer_bind(w);
	return 0;
}

/* Build a fresh ring at "<path>.tmp" and rename it over `path`.  On
 * success w->fd/map describe the new file (flocked). */
static int writer_create(struct ring_writer *w, const char *path)
{
	size_t plen = strlen(path);
	char *tmp = malloc(plen + 5);
	if (!tmp)
		return -ENOMEM;
	memcpy(tmp, path, plen);
	memcpy(tmp + plen, ".tmp", 5);
	int r;
	if (unlink(tmp) < 0 && errno != ENOENT) {
		r = -errno;
		goto out;
	}
	int fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0) {
		r = -errno;
		goto out;
	}
	w->fd = fd;
	/* The mode must not depend on the umask: readers run as others. */
	if (fchmod(fd, 0644) < 0 || flock(fd, LOCK_EX | LOCK_NB) < 0 ||
	    ftruncate(fd, (off_t)w->lay.file_size) < 0) {
		r = -errno;
		goto fail;
	}
	r = writer_map(w);
	if (r < 0)
		goto fail;
	struct ring_hdr *h = w->h;
	h->format_version = RING_FORMAT_VERSION;
	h->header_size = RING_HEADER_SIZE;
	h->file_size = w->lay.file_size;
	h->index_off = w->lay.index_off;
	h->index_slots = w->lay.index_slots;
	h->status_off = w->lay.status_off;
	h->status_size = w->lay.status_size;
	h->data_off = w->lay.data_off;
	h->data_size = w->lay.data_size;
	uuid_t u;
	uuid_generate_random(u);
	char e[37];
	uuid_unparse_lower(u, e);
	memcpy(h->epoch, e, RING_EPOCH_LEN);
	atomic_store(&h->writer_pid, (uint64_t)getpid());
	atomic_store(&h->generation, 1);
	atomic_store(&h->snap_pos, POS_NONE);
	atomic_store(&h->oldest_version, 1);
	memcpy(h->magic, RING_MAGIC, sizeof RING_MAGIC);
	if (rename(tmp, path) < 0) {
		r = -errno;
		goto fail;
	}
	w->head_version = 0;
	w->head_pos = 0;
	w->tail_pos = 0;
	w->snap_pos = POS_NONE;
	w->snap_version = 0;
	w->oldest_version = 1;
	r = 0;
	goto out;
fail:
	if (w->map) {
		munmap(w->map, w->lay.file_size);
		w->map = NULL;
	}
	close(w->fd);
	w->fd = -1;
	(void)unlink(tmp);
out:
	free(tmp);
	return r;
}

/* Tell readers that still map an old ring file that it was replaced. */
static void retire_old(int fd, const uint8_t *hb, size_t hb_len)
{
	if (hb_len < RING_HEADER_SIZE || memcmp(hb, RING_MAGIC, sizeof RING_MAGIC) != 0)
		return; /* not one of ours: no reader can have mapped it */
	uint64_t one = 1;
	(void)pwrite(fd, &one, sizeof one, offsetof(struct ring_hdr, retired));
}

int ring_writer_open(const char *path, size_t size_bytes, struct ring_writer **ret, bool *ret_kept, char *why,
		     size_t whylen)
{
	struct ring_writer *w = calloc(1, sizeof *w);
	if (!w)
		return -ENOMEM;
	w->fd = -1;
	int r = layout_for(size_bytes, &w->lay);
	if (r < 0)
		goto fail;

	const char *reason = "missing";
	int old_fd = open(path, O_RDWR | O_CLOEXEC | O_NOCTTY);
	uint8_t hb[RING_HEADER_SIZE];
	ssize_t hb_len = 0;
	if (old_fd < 0 && errno != ENOENT) {
		r = -errno;
		goto fail;
	}
	if (old_fd >= 0) {
		struct stat st;
		if (fstat(old_fd, &st) < 0) {
			r = -errno;
			close(old_fd);
			goto fail;
		}
		if (!S_ISREG(st.st_mode)) {
			close(old_fd);
			r = -EINVAL;
			goto fail;
		}
		if (flock(old_fd, LOCK_EX | LOCK_NB) < 0) {
			r = errno == EWOULDBLOCK ? -EBUSY : -errno;
			close(old_fd);
			goto fail;
		}
		hb_len = pread(old_fd, hb, sizeof hb, 0);
		if (hb_len < 0) {
			r = -errno;
			close(old_fd);
			goto fail;
		}
		struct layout lay;
		reason = header_check(hb, (size_t)hb_len, (uint64_t)st.st_size, &lay);
		if (!reason && lay.file_size != w->lay.file_size)
			reason = "size";
		if (!reason) {
			w->fd = old_fd;
			r = writer_map(w);
			if (r < 0) {
				close(old_fd);
				w->fd = -1;
				goto fail;
			}
			if (writer_load(w) == 0) {
				memcpy(w->epoch, w->h->epoch, RING_EPOCH_LEN);
				/* Only a file renamed back could carry the flag; it
				 * is the live one again. */
				atomic_store(&w->h->retired, 0);
				atomic_store(&w->h->writer_pid, (uint64_t)getpid());
				atomic_fetch_add(&w->h->generation, 1);
				*ret_kept = true;
				set_why(why, whylen, "kept");
				*ret = w;
				return 0;
			}
			reason = "corrupt";
			munmap(w->map, w->lay.file_size);
			w->map = NULL;
			w->fd = -1;
		}
	}

	r = writer_create(w, path);
	if (old_fd >= 0) {
		/* After the rename, so a reader that sees `retired` and reopens
		 * the path finds the new file. */
		if (r == 0)
			retire_old(old_fd, hb, (size_t)hb_len);
		close(old_fd);
	}
	if (r < 0)
		goto fail;
	memcpy(w->epoch, w->h->epoch, RING_EPOCH_LEN);
	*ret_kept = false;
	set_why(why, whylen, reason);
	*ret = w;
	return 0;
fail:
	free(w);
	return r;
}

void ring_writer_close(struct ring_writer *w)
{
	if (!w)
		return;
	if (w->map)
		munmap(w->map, w->lay.file_size);
	if (w->fd >= 0)
		close(w->fd);
	free(w);
}

const char *ring_writer_epoch(const struct ring_writer *w)
{
	return w->epoch;
}

uint64_t ring_writer_version(const struct ring_writer *w)
{
	return w->head_version;
}

void ring_writer_set_snapshot_cb(struct ring_writer *w, ring_snapshot_cb cb, void *arg)
{
	w->cb = cb;
	w->cb_arg = arg;
}

size_t ring_writer_status_max(const struct ring_writer *w)
{
	return w->lay.status_size - STATUS_HDR_SIZE;
}

void ring_writer_heartbeat(struct ring_writer *w, uint64_t now_ns)
{
	atomic_store_explicit(&w->h->heartbeat_ns, now_ns, memory_order_relaxed);
}

/* Where a record of `total` bytes appended now would start (after any PAD
 * to the end of the area) and the lowest tail that leaves its bytes free. */
static uint64_t place(const struct ring_writer *w, uint64_t total, uint64_t *ret_need_tail)
{
	uint64_t D = w->lay.data_size;
	uint64_t off = w->head_pos % D;
	uint64_t pos = w->head_pos + (off + total > D ? D - off : 0);
	uint64_t end = pos + total;
	*ret_need_tail = end > D ? end - D : 0;
	return pos;
}

/* Would appending `total` bytes (and event `version`, 0 for a snapshot)
 * overwrite the newest snapshot or an event after it? */
static bool snapshot_needed(const struct ring_writer *w, uint64_t total, uint64_t version)
{
	if (w->snap_pos == POS_NONE)
		return true;
	uint64_t need_tail;
	(void)place(w, total, &need_tail);
	if (need_tail > w->snap_pos)
		return true;
	uint64_t nslots = w->lay.index_slots;
	return version > nslots && version - nslots > w->snap_version;
}

static void drop_snapshot(struct ring_writer *w)
{
	w->snap_pos = POS_NONE;
	atomic_store_explicit(&w->h->snap_pos, POS_NONE, memory_order_release);
}

/* Make room for a record of `total` bytes: move the tail past every record
 * the new bytes cover, publish the tail (and the oldest version) before a
 * byte is overwritten, write the PAD if the record starts a new lap.
 * Returns the record's logical position. */
static uint64_t reserve(struct ring_writer *w, uint64_t total, uint64_t version)
{
	uint64_t D = w->lay.data_size, nslots = w->lay.index_slots;
	uint64_t need_tail;
	uint64_t pos = place(w, total, &need_tail);
	uint64_t tail = w->tail_pos, oldest = w->oldest_version;
	while (tail < need_tail) {
		const struct rec_hdr *rh = w_rec(w, tail);
		uint64_t t = rec_total(rh->len);
		if (rh->pos != tail || t > D - tail % D || t > w->head_pos - tail) {
			/* Our own bytes disagree with us: nothing before the new
			 * record can be trusted any more. */
			tail = pos;
			oldest = w->head_version + 1;
			if (w->snap_pos != POS_NONE)
				drop_snapshot(w);
			break;
		}
		if (rh->type == RING_REC_EVENT && rh->version + 1 > oldest)
			oldest = rh->version + 1;
		if (tail == w->snap_pos)
			drop_snapshot(w);
		tail += t;
	}
	if (version > nslots && version - nslots + 1 > oldest) {
		oldest = version - nslots + 1;
		/* The index forgets an event after the snapshot: the snapshot
		 * no longer leads to every event after it. */
		if (w->snap_pos != POS_NONE && version - nslots > w->snap_version)
			drop_snapshot(w);
	}
	if (tail != w->tail_pos) {
		w->tail_pos = tail;
		atomic_store_explicit(&w->h->tail_pos, tail, memory_order_relaxed);
	}
	if (oldest != w->oldest_version) {
		w->oldest_version = oldest;
		atomic_store_explicit(&w->h->oldest_version, oldest, memory_order_relaxed);
	}
	/* The tail must be visible before any byte it gave up changes. */
	atomic_thread_fence(memory_order_release);
	if (pos != w->head_pos) {
		struct rec_hdr pad = { .pos = w->head_pos, .type = REC_PAD,
				       .len = (uint32_t)(pos - w->head_pos - REC_HDR_SIZE) };
		memcpy(w->data + w->head_pos % D, &pad, sizeof pad);
	}
	return pos;
}

static void write_hdr(struct ring_writer *w, uint64_t pos, uint64_t version, uint32_t type, uint64_t len)
{
	struct rec_hdr rh = { .pos = pos, .version = version, .type = type, .len = (uint32_t)len };
	memcpy(w->data + pos % w->lay.data_size, &rh, sizeof rh);
}

int ring_writer_event(struct ring_writer *w, enum ring_ev_type type, const char *zonename, size_t zonename_len,
		      const char *line, size_t line_len, size_t vm_off, size_t vm_len)
{
	if (w->in_cb)
		return -EDEADLK;
	if (type < RING_EV_CREATE || type > RING_EV_DELETE || vm_off > line_len || vm_len > line_len - vm_off)
		return -EINVAL;
	uint64_t D = w->lay.data_size;
	if (zonename_len > D || line_len > D)
		return -EMSGSIZE;
	uint64_t len = EV_HDR_SIZE + zonename_len + 1 + line_len + 1;
	uint64_t total = rec_total(len);
	if (total > D / 4)
		return -EMSGSIZE;
	uint64_t v = w->head_version + 1;
	if (w->cb && snapshot_needed(w, total, v)) {
		w->in_cb = true;
		int r = w->cb(w, w->cb_arg);
		w->in_cb = false;
		if (r < 0)
			return r;
	}
	uint64_t pos = reserve(w, total, v);
	uint8_t *p = w->data + pos % D + REC_HDR_SIZE;
	put32(p, 0, (uint32_t)type);
	put32(p, 4, (uint32_t)zonename_len);
	put32(p, 8, (uint32_t)line_len);
	put32(p, 12, (uint32_t)vm_off);
	put32(p, 16, (uint32_t)vm_len);
	put32(p, 20, 0);
	memcpy(p + EV_HDR_SIZE, zonename, zonename_len);
	p[EV_HDR_SIZE + zonename_len] = '\0';
	memcpy(p + EV_HDR_SIZE + zonename_len + 1, line, line_len);
	p[EV_HDR_SIZE + zonename_len + 1 + line_len] = '\0';
	write_hdr(w, pos, v, RING_REC_EVENT, len);

	struct ring_slot *s = &w->index[v % w->lay.index_slots];
	atomic_store_explicit(&s->version, 0, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
	atomic_store_explicit(&s->pos, pos, memory_order_relaxed);
	atomic_store_explicit(&s->version, v, memory_order_release);

	w->head_pos = pos + total;
	w->head_version = v;
	atomic_store_explicit(&w->h->head_pos, w->head_pos, memory_order_release);
	atomic_store_explicit(&w->h->head_version, v, memory_order_release);
	return 0;
}

int ring_writer_snapshot(struct ring_writer *w, const struct ring_snap_vm *vms, size_t n)
{
	uint64_t D = w->lay.data_size;
	if (n > D / SNAP_ENT_SIZE)
		return -EMSGSIZE;
	uint64_t len = SNAP_HDR_SIZE + (uint64_t)n * SNAP_ENT_SIZE;
	for (size_t i = 0; i < n; i++) {
		if (vms[i].zonename_len > D || vms[i].json_len > D)
			return -EMSGSIZE;
		len += vms[i].zonename_len + 1 + vms[i].json_len + 1;
		if (len > D)
			return -EMSGSIZE;
	}
	uint64_t total = rec_total(len);
	if (total > D / 4)
		return -EMSGSIZE;
	uint64_t pos = reserve(w, total, 0);
	uint8_t *p = w->data + pos % D + REC_HDR_SIZE;
	put32(p, 0, (uint32_t)n);
	put32(p, 4, 0);
	uint8_t *s = p + SNAP_HDR_SIZE + n * SNAP_ENT_SIZE;
	for (size_t i = 0; i < n; i++) {
		put32(p, SNAP_HDR_SIZE + i * SNAP_ENT_SIZE, (uint32_t)vms[i].zonename_len);
		put32(p, SNAP_HDR_SIZE + i * SNAP_ENT_SIZE + 4, (uint32_t)vms[i].json_len);
		memcpy(s, vms[i].zonename, vms[i].zonename_len);
		s += vms[i].zonename_len;
		*s++ = '\0';
		memcpy(s, vms[i].json, vms[i].json_len);
		s += vms[i].json_len;
		*s++ = '\0';
	}
	write_hdr(w, pos, w->head_version, RING_REC_SNAPSHOT, len);
	w->head_pos = pos + total;
	w->snap_pos = pos;
	w->snap_version = w->head_version;
	atomic_store_explicit(&w->h->head_pos, w->head_pos, memory_order_release);
	atomic_store_explicit(&w->h->snap_pos, pos, memory_order_release);
	return 0;
}

int ring_writer_status(struct ring_writer *w, const char *json, size_t len)
{
	if (len > ring_writer_status_max(w))
		return -EMSGSIZE;
	struct ring_status *st = w->status;
	uint64_t seq = atomic_load_explicit(&st->seq, memory_order_relaxed);
	seq |= 1; /* odd: being written (also repairs a crash mid-update) */
	atomic_store_explicit(&st->seq, seq, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
	atomic_store_explicit(&st->len, len, memory_order_relaxed);
	memcpy((uint8_t *)st + STATUS_HDR_SIZE, json, len);
	atomic_store_explicit(&st->seq, seq + 1, memory_order_release);
	return 0;
}

/* ---- last state (restarted writer) ---- */

struct ls_ent {
	const char *z, *j;
	uint32_t zl, jl;
	bool alive;
};

struct ls {
	struct ls_ent *ents;
	size_t n, cap;
	uint32_t *table; /* open addressing: index + 1, 0 = empty */
	size_t tcap;     /* power of two, > 2 * cap */
	int err;
};

static uint64_t hash_bytes(const char *s, size_t n)
{
	uint64_t h = 1469598103934665603ull;
	for (size_t i = 0; i < n; i++)
		h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
	return h;
}

/* The table position of zonename z: either holding it, or the empty one
 * where it would go. */
static size_t ls_find(const struct ls *ls, const char *z, uint32_t zl)
{
	size_t mask = ls->tcap - 1;
	for (size_t i = hash_bytes(z, zl) & mask;; i = (i + 1) & mask) {
		uint32_t e = ls->table[i];
		if (!e)
			return i;
		const struct ls_ent *en = &ls->ents[e - 1];
		if (en->zl == zl && memcmp(en->z, z, zl) == 0)
			return i;
	}
}

static int ls_grow(struct ls *ls)
{
	size_t cap = ls->cap ? ls->cap * 2 : 64;
	struct ls_ent *e = realloc(ls->ents, cap * sizeof *e);
	if (!e)
		return -ENOMEM;
	ls->ents = e;
	ls->cap = cap;
	size_t tcap = 1;
	while (tcap <= 2 * cap)
		tcap *= 2;
	uint32_t *t = calloc(tcap, sizeof *t);
	if (!t)
		return -ENOMEM;
	free(ls->table);
	ls->table = t;
	ls->tcap = tcap;
	/* In entry order, so a zone deleted and created again ends up
	 * pointing at its newest entry. */
	for (size_t i = 0; i < ls->n; i++)
		ls->table[ls_find(ls, ls->ents[i].z, ls->ents[i].zl)] = (uint32_t)i + 1;
	return 0;
}

/* create/modify of zonename z: a live zone keeps its place in /vms order
 * and gets the new JSON; otherwise the zone goes to the end. */
static void ls_put(struct ls *ls, const char *z, uint32_t zl, const char *j, uint32_t jl)
{
	if (ls->err)
		return;
	if (ls->n == ls->cap && (ls->err = ls_grow(ls)) < 0)
		return;
	size_t i = ls_find(ls, z, zl);
	uint32_t e = ls->table[i];
	if (e && ls->ents[e - 1].alive) {
		ls->ents[e - 1].j = j;
		ls->ents[e - 1].jl = jl;
		return;
	}
	ls->ents[ls->n] = (struct ls_ent){ .z = z, .zl = zl, .j = j, .jl = jl, .alive = true };
	ls->table[i] = (uint32_t)++ls->n;
}

static void ls_del(struct ls *ls, const char *z, uint32_t zl)
{
	if (ls->err || !ls->tcap)
		return;
	uint32_t e = ls->table[ls_find(ls, z, zl)];
	if (e)
		ls->ents[e - 1].alive = false;
}

static void ls_snap_vm(void *arg, uint32_t i, const char *z, uint32_t zl, const char *j, uint32_t jl)
{
	ls_put(arg, z, zl, j, jl);
}

int ring_writer_last_state(struct ring_writer *w,
			   void (*cb)(void *arg, const char *zonename, size_t zlen, const char *json, size_t jlen),
			   void *arg)
{
	if (w->snap_pos == POS_NONE)
		return -ENOENT;
	struct ls ls = { 0 };
	const struct rec_hdr *rh = w_rec(w, w->snap_pos);
	uint32_t n;
	int r = snap_parse((const uint8_t *)(rh + 1), rh->len, &n, ls_snap_vm, &ls);
	/* The records were validated when the file was opened and written
	 * by us since; the walk stays within [snap_pos, head_pos). */
	for (uint64_t p = w->snap_pos + rec_total(rh->len); r == 0 && !ls.err && p < w->head_pos;) {
		rh = w_rec(w, p);
		if (rh->type == RING_REC_EVENT) {
			struct ev_view ev;
			r = ev_parse((const uint8_t *)(rh + 1), rh->len, &ev);
			if (r < 0)
				break;
			if (ev.ev_type == RING_EV_DELETE)
				ls_del(&ls, ev.zonename, ev.zlen);
			else
				ls_put(&ls, ev.zonename, ev.zlen, ev.line + ev.vm_off, ev.vm_len);
		}
		p += rec_total(rh->len);
	}
	if (r == 0 && ls.err)
		r = ls.err;
	if (r == 0)
		for (size_t i = 0; i < ls.n; i++)
			if (ls.ents[i].alive)
				cb(arg, ls.ents[i].z, ls.ents[i].zl, ls.ents[i].j, ls.ents[i].jl);
	free(ls.ents);
	free(ls.table);
	return r;
}

/* ---- reader ---- */

int ring_reader_open(const char *path, struct ring_reader **ret)
{
	struct ring_reader *r = calloc(1, sizeof *r);
	if (!r)
		return -ENOMEM;
	r->path = strdup(path);
	if (!r->path) {
		free(r);
		return -ENOMEM;
	}
	int err;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		err = -errno;
		goto fail;
	}
	struct stat st;
	if (fstat(fd, &st) < 0) {
		err = -errno;
		goto fail_fd;
	}
	if (!S_ISREG(st.st_mode)) {
		err = -EPROTO;
		goto fail_fd;
	}
	uint8_t hb[RING_HEADER_SIZE];
	ssize_t n = pread(fd, hb, sizeof hb, 0);
	if (n < 0) {
		err = -errno;
		goto fail_fd;
	}
	if (header_check(hb, (size_t)n, (uint64_t)st.st_size, &r->lay)) {
		err = -EPROTO;
		goto fail_fd;
	}
	void *m = mmap(NULL, r->lay.file_size, PROT_READ, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED) {
		err = -errno;
		goto fail_fd;
	}
	close(fd);
	r->map = m;
	r->h = (const struct ring_hdr *)r->map;
	r->index = (const struct ring_slot *)(r->map + r->lay.index_off);
	r->status = (const struct ring_status *)(r->map + r->lay.status_off);
	r->data = r->map + r->lay.data_off;
	r->dev = st.st_dev;
	r->ino = st.st_ino;
	*ret = r;
	return 0;
fail_fd:
	close(fd);
fail:
	free(r->path);
	free(r);
	return err;
}

void ring_reader_close(struct ring_reader *r)
{
	if (!r)
		return;
	munmap((void *)r->map, r->lay.file_size);
	free(r->path);
	free(r);
}

int ring_reader_epoch(struct ring_reader *r, char out[RING_EPOCH_LEN + 1])
{
	/* Written before the file got its name and never again; checked at
	 * open. */
	memcpy(out, r->h->epoch, RING_EPOCH_LEN);
	out[RING_EPOCH_LEN] = '\0';
	return 0;
}

bool ring_reader_replaced(struct ring_reader *r)
{
	if (atomic_load_explicit(&r->h->retired, memory_order_acquire))
		return true;
	struct stat st;
	if (stat(r->path, &st) < 0) {
		/* Only a missing file means "replaced": a reader that may not
		 * look the path up (EACCES after a privilege drop) still
		 * learns of a replacement through the retired flag above. */
		return errno == ENOENT || errno == ENOTDIR;
	}
	return st.st_dev != r->dev || st.st_ino != r->ino;
}

void ring_reader_writer(struct ring_reader *r, pid_t *ret_pid, uint64_t *ret_generation, uint64_t *ret_heartbeat_ns)
{
	if (ret_pid)
		*ret_pid = (pid_t)atomic_load_explicit(&r->h->writer_pid, memory_order_relaxed);
	if (ret_generation)
		*ret_generation = atomic_load_explicit(&r->h->generation, memory_order_relaxed);
	if (ret_heartbeat_ns)
		*ret_heartbeat_ns = atomic_load_explicit(&r->h->heartbeat_ns, memory_order_relaxed);
}

uint64_t ring_reader_head_version(struct ring_reader *r)
{
	return atomic_load_explicit(&r->h->head_version, memory_order_acquire);
}

uint64_t ring_reader_oldest_version(struct ring_reader *r)
{
	return atomic_load_explicit(&r->h->oldest_version, memory_order_acquire);
}

void ring_rec_done(struct ring_rec *rec)
{
	free(rec->mem);
	memset(rec, 0, sizeof *rec);
}

static int rec_reserve(struct ring_rec *rec, size_t need)
{
	if (need <= rec->memcap)
		return 0;
	size_t cap = rec->memcap ? rec->memcap : 256;
	while (cap < need)
		cap *= 2;
	void *m = realloc(rec->mem, cap);
	if (!m)
		return -ENOMEM;
	rec->mem = m;
	rec->memcap = cap;
	return 0;
}

static bool overtaken(const struct ring_reader *r, uint64_t pos)
{
	atomic_thread_fence(memory_order_acquire);
	return atomic_load_explicit(&r->h->tail_pos, memory_order_relaxed) > pos;
}

/* Copy the record at logical position `pos` (header into *rh, payload
 * into rec->mem).  -ESTALE if the writer overwrote it meanwhile, -EPROTO
 * if the intact bytes make no sense. */
static int copy_record(const struct ring_reader *r, uint64_t pos, struct ring_rec *rec, struct rec_hdr *rh)
{
	uint64_t D = r->lay.data_size;
	if (atomic_load_explicit(&r->h->tail_pos, memory_order_acquire) > pos)
		return -ESTALE;
	uint64_t off = pos % D;
	if (pos % RING_ALIGN || D - off < REC_HDR_SIZE)
		return -EPROTO;
	memcpy(rh, r->data + off, sizeof *rh);
	uint64_t len = rh->len;
	if (rec_total(len) > D / 4 || rec_total(len) > D - off)
		return overtaken(r, pos) ? -ESTALE : -EPROTO;
	/* +8: room to align what snapshot parsing puts after the copy. */
	int e = rec_reserve(rec, len + 8);
	if (e < 0)
		return e;
	memcpy(rec->mem, r->data + off + REC_HDR_SIZE, len);
	if (overtaken(r, pos))
		return -ESTALE;
	if (rh->pos != pos)
		return -EPROTO;
	return 0;
}

int ring_reader_snapshot(struct ring_reader *r, struct ring_rec *rec)
{
	uint64_t pos = atomic_load_explicit(&r->h->snap_pos, memory_order_acquire);
	if (pos == POS_NONE)
		return -ENOENT;
	struct rec_hdr rh;
	int e = copy_record(r, pos, rec, &rh);
	if (e == -ESTALE)
		return -EAGAIN; /* a newer snapshot replaced it while we copied */
	if (e < 0)
		return e;
	uint32_t n;
	if (rh.type != RING_REC_SNAPSHOT || snap_parse(rec->mem, rh.len, &n, NULL, NULL) < 0)
		return -EPROTO;
	size_t arr_off = (size_t)align_up(rh.len, 8);
	e = rec_reserve(rec, arr_off + (size_t)n * sizeof(struct ring_snap_vm));
	if (e < 0)
		return e;
	/* Pointers only now: the reserve may have moved the copy. */
	const uint8_t *p = rec->mem;
	struct ring_snap_vm *vms = (struct ring_snap_vm *)((uint8_t *)rec->mem + arr_off);
	const char *s = (const char *)p + SNAP_HDR_SIZE + (size_t)n * SNAP_ENT_SIZE;
	for (uint32_t i = 0; i < n; i++) {
		vms[i].zonename_len = get32(p, SNAP_HDR_SIZE + (size_t)i * SNAP_ENT_SIZE);
		vms[i].json_len = get32(p, SNAP_HDR_SIZE + (size_t)i * SNAP_ENT_SIZE + 4);
		vms[i].zonename = s;
		s += vms[i].zonename_len + 1;
		vms[i].json = s;
		s += vms[i].json_len + 1;
	}
	rec->type = RING_REC_SNAPSHOT;
	rec->version = rh.version;
	rec->ev_type = 0;
	rec->zonename = NULL;
	rec->zonename_len = 0;
	rec->line = NULL;
	rec->line_len = rec->vm_off = rec->vm_len = 0;
	rec->nvms = n;
	rec->vms = vms;
	return 0;
}

int ring_reader_event(struct ring_reader *r, uint64_t version, struct ring_rec *rec)
{
	if (version == 0)
		return -EINVAL;
	if (version > atomic_load_explicit(&r->h->head_version, memory_order_acquire))
		return -ENOENT;
	const struct ring_slot *s = &r->index[version % r->lay.index_slots];
	uint64_t v1 = atomic_load_explicit(&s->version, memory_order_acquire);
	uint64_t pos = atomic_load_explicit(&s->pos, memory_order_relaxed);
	atomic_thread_fence(memory_order_acquire);
	uint64_t v2 = atomic_load_explicit(&s->version, memory_order_relaxed);
	if (v1 != version || v2 != version) {
		/* The slot moved on to a newer event (or is being rewritten for
		 * one); an older one would mean a broken index. */
		if (v1 != 0 && v1 < version)
			return -EPROTO;
		return -ESTALE;
	}
	struct rec_hdr rh;
	int e = copy_record(r, pos, rec, &rh);
	if (e < 0)
		return e;
	struct ev_view ev;
	if (rh.type != RING_REC_EVENT || rh.version != version || ev_parse(rec->mem, rh.len, &ev) < 0)
		return -EPROTO;
	rec->type = RING_REC_EVENT;
	rec->version = version;
	rec->ev_type = (enum ring_ev_type)ev.ev_type;
	rec->zonename = ev.zonename;
	rec->zonename_len = ev.zlen;
	rec->line = ev.line;
	rec->line_len = ev.llen;
	rec->vm_off = ev.vm_off;
	rec->vm_len = ev.vm_len;
	rec->nvms = 0;
	rec->vms = NULL;
	return 0;
}

int ring_reader_status(struct ring_reader *r, struct buf *out)
{
	const struct ring_status *st = r->status;
	uint64_t cap = r->lay.status_size - STATUS_HDR_SIZE;
	const char *text = (const char *)st + STATUS_HDR_SIZE;
	for (int i = 0; i < STATUS_TRIES; i++) {
		uint64_t s1 = atomic_load_explicit(&st->seq, memory_order_acquire);
		if (s1 & 1) {
			sched_yield();
			continue;
		}
		uint64_t len = atomic_load_explicit(&st->len, memory_order_relaxed);
		buf_reset(out);
		int e = 0;
		if (len <= cap)
			e = buf_add(out, text, len);
		atomic_thread_fence(memory_order_acquire);
		uint64_t s2 = atomic_load_explicit(&st->seq, memory_order_relaxed);
		if (s1 != s2)
			continue;
		if (len > cap)
			return -EPROTO;
		return e;
	}
	return -EAGAIN;
}

/* ---- doorbell ---- */

int ring_doorbell_new(void)
{
	int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	return fd < 0 ? -errno : fd;
}

int ring_doorbell_ring(int fd)
{
	uint64_t one = 1;
	for (;;) {
		ssize_t n = write(fd, &one, sizeof one);
		if (n == (ssize_t)sizeof one)
			return 0;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return 0; /* the counter is full: the reader will wake anyway */
		return n < 0 ? -errno : -EIO;
	}
}

int ring_doorbell_drain(int fd)
{
	/* An eventfd read returns the whole counter at once; loop only on
	 * EINTR. */
	for (;;) {
		uint64_t v;
		ssize_t n = read(fd, &v, sizeof v);
		if (n == (ssize_t)sizeof v)
			return 0;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return 0;
		return n < 0 ? -errno : -EIO;
	}
}

int ring_size_parse(const char *s, size_t *ret)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || s[0] == '-')
		return -EINVAL;
	unsigned long long mul = 1;
	if (*end == 'K' || *end == 'k')
		mul = 1ULL << 10;
	else if (*end == 'M' || *end == 'm')
		mul = 1ULL << 20;
	else if (*end == 'G' || *end == 'g')
		mul = 1ULL << 30;
	if (mul != 1)
		end++;
	if (*end || v > SIZE_MAX / mul)
		return -EINVAL;
	*ret = (size_t)(v * mul);
	return 0;
}
