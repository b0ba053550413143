/*
 * ringreader.h - the frontend's view of the ring file: the current VM set
 * at the version it has applied, a window of recent event lines, and the
 * supervisor's status facts.
 *
 * Every event record is copied out of the ring once, into one refcounted
 * block (rcbuf) that the window, the VM set (which points into the line
 * for the VM JSON) and every subscriber's in-flight send share.  The
 * window mirrors the ring: it holds every event the ring still holds
 * (oldest_version..head), so a subscriber or a ?since= resume is served
 * from memory exactly as long as the ring could serve it, and memory is
 * bounded by the ring size.
 *
 * Falling behind the writer (-ESTALE at our own cursor), a new epoch or a
 * replaced file make ringreader_poll() rebuild everything from the newest
 * snapshot and report a reset: the caller must then end every stream
 * (their cursors belong to the old history).
 */
#ifndef VMINFOD_FE_RINGREADER_H
#define VMINFOD_FE_RINGREADER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "rcbuf.h"
#include "ring.h"
#include "vmset.h"

struct buf;
struct ringreader;

/* Open the ring at `path` and load it (newest snapshot + the events after
 * it).  0; -ENOENT (no snapshot published yet), -EPROTO, -errno. */
int ringreader_open(const char *path, struct ringreader **ret);
void ringreader_free(struct ringreader *rr);
/* Read what was published since the last call and apply it.  Returns the
 * number of new events (>= 0) or -errno (the previous state is kept);
 * *ret_reset is set when the state was rebuilt from a snapshot (new
 * epoch, replaced file, or we fell behind). */
int ringreader_poll(struct ringreader *rr, bool *ret_reset);
/* The epoch of the state held (36 chars + NUL). */
const char *ringreader_epoch(const struct ringreader *rr);
/* The version applied to the VM set (events 1..version). */
uint64_t ringreader_version(const struct ringreader *rr);
/* The oldest event version held in the window (version + 1 when none). */
uint64_t ringreader_oldest(const struct ringreader *rr);
/* The line of event `version` (borrowed; rcbuf_ref() to keep), or NULL
 * when it is not in the window. */
struct rcbuf *ringreader_event(const struct ringreader *rr, uint64_t version);
/* Like ringreader_event(), also telling the event's type and zonename
 * (borrowed, NUL-terminated, valid as long as the returned block) so
 * that filters need not parse the line. */
struct rcbuf *ringreader_event_info(const struct ringreader *rr, uint64_t version, enum ring_ev_type *ret_type,
				    const char **ret_zonename, size_t *ret_zlen);
/* The ring's writer: pid and generation of the supervisor that opened it
 * last (a frontend whose parent died learns a new one took over). */
void ringreader_writer(const struct ringreader *rr, pid_t *ret_pid, uint64_t *ret_generation);
/* The VM set at ringreader_version(). */
struct vmset *ringreader_vms(struct ringreader *rr);
/* Copy the supervisor's status facts JSON text into out.  0 or -errno. */
int ringreader_status(struct ringreader *rr, struct buf *out);

#endif
