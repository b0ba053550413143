/*
 * ring.h - the ring file: how the supervisor (one writer) publishes VM
 * snapshots, events and its status to frontends and tools (any number of
 * readers in other processes, mapping the file read-only).  DESIGN.md §5.
 *
 * This module owns the byte format and both sides of it.  It does not
 * know what a VM is: payloads are opaque bytes plus the few facts the
 * frontend needs without parsing JSON.
 *
 * File layout (all fields little-endian, fixed width; offsets in bytes;
 * every area starts on a 4096-byte boundary; the layout is a pure function
 * of the file size, see "sizes" below):
 *
 *   0            +-------------------------------------------------------+
 *                | header (4096)                                         |
 *                |   0 magic "VMIRING\0"   8 format_version u32 (=1)     |
 *                |  12 header_size u32 (=4096)                           |
 *                |  16 file_size   24 index_off   32 index_slots         |
 *                |  40 status_off  48 status_size 56 data_off            |
 *                |  64 data_size                               (u64 each)|
 *                |  72 epoch[40]: 36-char lowercase UUID, NUL padded     |
 *                | --- written after creation, atomically (u64 each) --- |
 *                | 112 writer_pid      120 generation (writer starts)    |
 *                | 128 retired (1: replaced, reopen the path)            |
 *                | 136 heartbeat_ns (CLOCK_MONOTONIC)                    |
 *                | 144 head_version  (newest event version published)    |
 *                | 152 head_pos      (logical end of the data written)   |
 *                | 160 tail_pos      (logical start of the intact data)  |
 *                | 168 snap_pos      (newest snapshot record; ~0: none)  |
 *                | 176 oldest_version (oldest event still readable)      |
 *   index_off    +-------------------------------------------------------+
 *                | index: index_slots x { u64 version, u64 pos }         |
 *                |   event v lives in slot v % index_slots; each slot is |
 *                |   a tiny seqlock (version 0 while being rewritten)    |
 *   status_off   +-------------------------------------------------------+
 *                | status: u64 seq (odd while written), u64 len,         |
 *                |         status_size - 16 bytes of JSON text           |
 *   data_off     +-------------------------------------------------------+
 *                | data: circular, data_size bytes, records of          |
 *                |   32-byte aligned size that never straddle the end:   |
 *                |                                                       |
 *                |   record header (32): u64 pos (its own logical        |
 *                |     position: tells a live record from an older lap)  |
 *                |     u64 version, u32 type, u32 len (payload bytes),   |
 *                |     u32 0, u32 0                                      |
 *                |   EVENT payload: u32 ev_type, u32 zonename_len,       |
 *                |     u32 line_len, u32 vm_off, u32 vm_len, u32 0,      |
 *                |     zonename NUL line NUL                             |
 *                |   SNAPSHOT payload: u32 nvms, u32 0,                  |
 *                |     nvms x { u32 zonename_len, u32 json_len },        |
 *                |     then per VM: zonename NUL json NUL                |
 *                |   PAD (type 3): fills the end of the area when the    |
 *                |     next record does not fit before it                |
 *   file_size    +-------------------------------------------------------+
 *
 * Positions are logical byte counts that only grow; the byte of position p
 * is data[p % data_size].  Bytes in [tail_pos, head_pos) are intact
 * records.  Before the writer overwrites anything it moves tail_pos past
 * every record the new bytes will cover (a release fence between), so a
 * reader that copies a record at pos and then (acquire fence) still sees
 * tail_pos <= pos knows its copy is not torn: a seqlock whose sequence is
 * the tail.  Publication order of a record: tail, payload, record header,
 * index slot, head_pos/snap_pos, head_version (release stores).
 *
 * Invariant: the ring holds the newest snapshot (version S) and every
 * event after S.  Before an append would overwrite the snapshot's bytes,
 * or the index slot of an event after S, the writer calls the snapshot
 * callback, which appends a fresh snapshot first.  One record is at most
 * a quarter of the data area (-EMSGSIZE otherwise), so an event after a
 * fresh snapshot always fits without touching it.
 *
 * Sizes: file_size is the requested size rounded down to 4096 (at least
 * RING_MIN_SIZE); status_size = file_size / 8 clamped to [4 KiB, 1 MiB];
 * index_slots = max(64, rest / 1024) where rest is what the header and
 * status leave; the data area is what remains.
 *
 * Epochs: a new file, or one that is missing, foreign, truncated, of
 * another format or size, gets a new epoch.  Such a file is never changed
 * in place: the writer builds the new one at "<path>.tmp", renames it over
 * the path, then sets `retired` in the old header.  A reader's mapping
 * therefore never shows a half-initialised header; it notices the
 * replacement with ring_reader_replaced() and reopens the path.  A valid
 * file is kept by a restarting writer (same epoch, same records; its
 * writer_pid changes and generation grows).  A writer holds an exclusive
 * flock(2) on the file: a second writer gets -EBUSY.
 */
#ifndef VMINFOD_RING_H
#define VMINFOD_RING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct buf;

#define RING_EPOCH_LEN 36
#define RING_MIN_SIZE (64 * 1024)
#define RING_DEFAULT_SIZE (64 * 1024 * 1024)

enum ring_rec_type { RING_REC_EVENT = 1, RING_REC_SNAPSHOT = 2 };
enum ring_ev_type { RING_EV_CREATE = 1, RING_EV_MODIFY = 2, RING_EV_DELETE = 3 };

/* ---- writer (supervisor) ---- */

struct ring_writer;
struct ring_snap_vm {
	const char *zonename;
	size_t zonename_len;
	const char *json;
	size_t json_len;
};

/* Open or create `path` with total size `size_bytes` (rounded down to
 * 4096; -EINVAL below RING_MIN_SIZE).  Keeps epoch and records of a valid
 * existing file of the same format and size (*ret_kept = true, `why` =
 * "kept") and otherwise starts a new epoch in a new file (*ret_kept =
 * false; `why` says why: "missing", "foreign magic", "truncated",
 * "format version", "size", "corrupt").  0 or -errno (-EBUSY: another
 * writer has it open).  `why` may be NULL. */
int ring_writer_open(const char *path, size_t size_bytes, struct ring_writer **ret, bool *ret_kept,
		     char *why, size_t whylen);
/* Unmap and close; the file stays for readers and the next writer. */
void ring_writer_close(struct ring_writer *w);
/* The epoch: 36 chars + NUL, owned by w. */
const char *ring_writer_epoch(const struct ring_writer *w);
/* Version of the last event published (0 if none). */
uint64_t ring_writer_version(const struct ring_writer *w);
/* Append an EVENT with version ring_writer_version(w)+1 (the caller has
 * already put that version in the line).  `line` includes its trailing
 * "\n"; the VM object is line[vm_off, vm_off+vm_len) (0/0 for delete).
 * Calls the snapshot callback first when needed (a callback error is
 * returned and nothing is appended).  -EMSGSIZE if the record is larger
 * than a quarter of the data area, -EINVAL for a bad vm_off/vm_len; in
 * both cases nothing is written.  No allocation. */
int ring_writer_event(struct ring_writer *w, enum ring_ev_type type, const char *zonename, size_t zonename_len,
		      const char *line, size_t line_len, size_t vm_off, size_t vm_len);
/* Append a SNAPSHOT (the VMs in /vms order) at the current version.
 * -EMSGSIZE if larger than a quarter of the data area (nothing written).
 * Never calls the snapshot callback. */
int ring_writer_snapshot(struct ring_writer *w, const struct ring_snap_vm *vms, size_t n);
/* Called when an append needs a fresh snapshot first; must call
 * ring_writer_snapshot(w, ...) and return its result.  If it returns 0
 * without appending one, the append goes ahead and the old snapshot is
 * dropped when overwritten (readers then get -ENOENT until the next). */
typedef int (*ring_snapshot_cb)(struct ring_writer *w, void *arg);
void ring_writer_set_snapshot_cb(struct ring_writer *w, ring_snapshot_cb cb, void *arg);
/* Replace the status JSON text (<= ring_writer_status_max(w) bytes, else
 * -EMSGSIZE and the old text stays). */
int ring_writer_status(struct ring_writer *w, const char *json, size_t len);
size_t ring_writer_status_max(const struct ring_writer *w);
/* Store the writer's liveness time (CLOCK_MONOTONIC ns) in the header. */
void ring_writer_heartbeat(struct ring_writer *w, uint64_t now_ns);
/* For a restarted supervisor: rebuild "what was last published": calls cb
 * for each VM of the newest snapshot with the events after it applied
 * (modify replaces in place, create replaces or appends, delete removes),
 * in /vms order.  The pointers are valid during the call only.  0, -ENOENT
 * (no snapshot: nothing was published), -ENOMEM, -EPROTO. */
int ring_writer_last_state(struct ring_writer *w,
			   void (*cb)(void *arg, const char *zonename, size_t zlen, const char *json, size_t jlen),
			   void *arg);

/* ---- reader (frontend, tools) ---- */

struct ring_reader;
/* Map `path` O_RDONLY/PROT_READ.  0, -errno, -EPROTO if it is not a ring
 * of this format (foreign, truncated, inconsistent layout). */
int ring_reader_open(const char *path, struct ring_reader **ret);
void ring_reader_close(struct ring_reader *r);
/* The header's epoch, copied.  It never changes within one mapping: a new
 * epoch comes in a new file, so after each doorbell a reader checks
 * ring_reader_replaced() and, if true, closes and reopens the path (and
 * compares epochs).  0 or -EPROTO. */
int ring_reader_epoch(struct ring_reader *r, char out[RING_EPOCH_LEN + 1]);
/* True when the mapped file was replaced (its `retired` flag is set, or
 * the path now names another file or none): reopen to follow the writer.
 * Costs one stat(2). */
bool ring_reader_replaced(struct ring_reader *r);
/* Writer facts from the header: pid and generation of the last writer to
 * open the file (an orphaned frontend notices a new supervisor by them)
 * and its last heartbeat (CLOCK_MONOTONIC ns, 0 if none).  Any may be NULL. */
void ring_reader_writer(struct ring_reader *r, pid_t *ret_pid, uint64_t *ret_generation, uint64_t *ret_heartbeat_ns);
/* Version of the newest published event (0 if none). */
uint64_t ring_reader_head_version(struct ring_reader *r);
/* The oldest event version still available (for ?since= resume
 * decisions); head_version + 1 when there is none. */
uint64_t ring_reader_oldest_version(struct ring_reader *r);

/* A record as copied out of the ring.  The copy is owned by the struct
 * (initialise it with RING_REC_INIT or zeroes); its pointers are valid
 * until the next call with the same struct; free with ring_rec_done.
 * zonename, line and the snapshot's strings are also NUL-terminated. */
struct ring_rec {
	enum ring_rec_type type;
	uint64_t version;
	/* EVENT */
	enum ring_ev_type ev_type;
	const char *zonename;
	size_t zonename_len;
	const char *line;
	size_t line_len;
	size_t vm_off, vm_len;
	/* SNAPSHOT */
	size_t nvms;
	const struct ring_snap_vm *vms;
	/* private */
	void *mem;
	size_t memcap;
};
#define RING_REC_INIT { 0 }
void ring_rec_done(struct ring_rec *rec);
/* Load the newest snapshot into rec.  0, -EAGAIN (raced with the writer:
 * retry), -ENOENT (none yet), -ENOMEM, -EPROTO (corrupt record). */
int ring_reader_snapshot(struct ring_reader *r, struct ring_rec *rec);
/* Copy the EVENT with exactly `version` into rec.  0; -ENOENT if not
 * published yet; -ESTALE if it has been overwritten (the reader fell
 * behind: recover from the newest snapshot); -EINVAL for version 0;
 * -ENOMEM; -EPROTO (corrupt record). */
int ring_reader_event(struct ring_reader *r, uint64_t version, struct ring_rec *rec);
/* Copy the status JSON text into out (reset first; NUL-terminated).
 * 0, -EAGAIN (kept racing with the writer), -ENOMEM, -EPROTO. */
int ring_reader_status(struct ring_reader *r, struct buf *out);

/* Parse a ring size: bytes, or with a K, M or G suffix ("64M").
 * 0, or -EINVAL for anything else or an overflow. */
int ring_size_parse(const char *s, size_t *ret);

/* ---- doorbell ---- */

/* eventfd(0, EFD_CLOEXEC|EFD_NONBLOCK); the fd or -errno. */
int ring_doorbell_new(void);
/* Add 1 to the counter; 0 or -errno (EAGAIN, a full counter, ignored). */
int ring_doorbell_ring(int fd);
/* Read until empty; 0 or -errno. */
int ring_doorbell_drain(int fd);

#endif
