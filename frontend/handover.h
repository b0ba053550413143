/*
 * handover.h - an orphaned frontend hands its clients over to the next
 * supervisor's frontend (DESIGN.md §8).
 *
 * When the supervisor dies (kill -9, crash) its frontend keeps running:
 * it holds the listening sockets and the last published state, so it
 * keeps answering.  It notices the death through a pidfd on its parent
 * (no PR_SET_PDEATHSIG: dying with the parent is what we do not want),
 * then follows the ring by polling (the doorbell died with the parent),
 * which also forwards whatever a new supervisor publishes under the same
 * epoch.  A new supervisor shows up as a new writer of the ring (pid or
 * generation); once the status facts it publishes say that its frontend
 * is accepting (children.frontend.ready, a pid other than ours), the
 * orphan steers new connections of its SO_REUSEPORT groups to the newest
 * socket, accepts what is already queued, stops listening, ends its
 * streams (clients resume with ?since= or Last-Event-ID) and exits.
 *
 * The frontend tells its own supervisor that it is accepting by writing
 * one byte to --ready-fd.
 */
#ifndef VMINFOD_FE_HANDOVER_H
#define VMINFOD_FE_HANDOVER_H

#include <stdbool.h>

struct frontend;
struct handover;

/* Watch the parent of a frontend started by the supervisor.  `poll`
 * reads the ring and feeds the streams; `stop` begins the shutdown.
 * NULL on error (logged; the frontend then simply never hands over). */
struct handover *handover_new(struct frontend *fe, void (*poll)(struct frontend *),
			      void (*stop)(struct frontend *));
void handover_free(struct handover *h);
/* The listeners are in the loop: tell the supervisor through ready_fd
 * (closed; -1 for none). */
void handover_ready(int ready_fd);
/* True once the frontend decided to hand over (its shutdown drains the
 * listen queues first and waits for the connections to finish). */
bool handover_in_progress(const struct handover *h);
/* Steer new connections of the listening socket's SO_REUSEPORT group
 * away from it (to the socket that joined the group after it), so that
 * nothing more lands in its queue before it is closed.  Best effort. */
void handover_steer_away(int listen_fd);

#endif
