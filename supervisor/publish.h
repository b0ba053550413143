/*
 * publish.h - where events and snapshots leave the supervisor.
 *
 * An event is built and serialised ONCE here, as the exact line every
 * subscriber will receive:
 *
 *   {"type":"modify","date":"…","zonename":"…","uuid":"…","vm":{…},"changes":[…],"version":N}\n
 *
 * (spec/http-api.md §4.1 plus the port's "version"), logged as the
 * original does (`emitting "modify" event (34 VMs total)` with the event
 * under `ev`), and handed to every sink: the ring file (the frontend's
 * source) and, optionally, an NDJSON file descriptor that tests read.
 * Versions are consecutive within the ring's epoch.
 *
 * Snapshots: the ring asks for one when it needs it; the publisher gets
 * the current VM list from the callback its owner registered.
 */
#ifndef VMINFOD_PUBLISH_H
#define VMINFOD_PUBLISH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "ring.h"

struct publish;

/* Calls emit(arg, zonename, json, json_len) for every VM, in /vms order;
 * returns 0 or a negative errno from emit. */
typedef int (*publish_vm_iter_fn)(void *owner,
	int (*emit)(void *arg, const char *zonename, const char *json, size_t json_len),
	void *arg);

/* A publisher over an open ring (may be NULL: events then only go to the
 * NDJSON fd) and an NDJSON fd (-1 for none; not owned).  `vms` lists the
 * current VMs for snapshots.  NULL on ENOMEM. */
struct publish *publish_new(struct ring_writer *ring, int ndjson_fd,
	publish_vm_iter_fn vms, void *owner);
void publish_free(struct publish *p);

/* Emit one event.  `vm_json` (create/modify: the VM object's compact
 * JSON, exactly what /vms/<z> returns) and `changes` (modify: the diff,
 * borrowed) may be NULL.  `vm` (borrowed, may be NULL) is only used for
 * the log record.  `nvms` is the VM count for the log line.  Returns the
 * event's version, or a negative errno (the event is then lost to
 * subscribers, which the caller logs). */
int64_t publish_event(struct publish *p, enum ring_ev_type type, const char *zonename,
	const char *uuid, const char *vm_json, size_t vm_json_len, json_t *vm,
	json_t *changes, size_t nvms);

/* Append a snapshot of the current VMs to the ring now.  0 or -errno. */
int publish_snapshot(struct publish *p);

/* Version of the last event published. */
uint64_t publish_version(const struct publish *p);

/* The ring's type name for an event type ("create", "modify", "delete"). */
const char *publish_type_name(enum ring_ev_type type);

#endif
