/*
 * metrics.h - GET /metrics: Prometheus text exposition format (0.0.4).
 *
 * Two sources: what the frontend sees itself (events read from the ring,
 * by type; streams by transport; lagged closes; connections; the ring's
 * window) and the supervisor's status facts in the ring (queue, task and
 * full-refresh histograms, children, fswatcher watches, VMs, heartbeat).
 * Counters kept here start at 0 with each frontend process, as
 * Prometheus counters may (a restart is a counter reset).
 */
#ifndef VMINFOD_FE_METRICS_H
#define VMINFOD_FE_METRICS_H

#include <stdbool.h>

#include <h2o.h>

struct frontend;
struct metrics;
struct ringreader;

/* Empty counters; ring_path is only stat()ed for the ring's size (the
 * string must outlive m).  NULL on ENOMEM. */
struct metrics *metrics_new(const char *ring_path);
void metrics_free(struct metrics *m);
/* Count the events applied to rr since the last call, by type: call after
 * every ringreader_poll() that did not fail.  The first call (and a new
 * epoch) only sets the starting point. */
void metrics_count_events(struct metrics *m, struct ringreader *rr);
/* An /events stream started / ended (every stream that started ends
 * exactly once), with its framing; `lagged`: it was closed because the
 * ring overwrote its cursor. */
void metrics_stream_opened(struct metrics *m, bool sse);
void metrics_stream_closed(struct metrics *m, bool sse, bool lagged);
/* Answer GET /metrics.  Returns 0 (h2o handler result). */
int metrics_handle(struct frontend *fe, h2o_req_t *req);
/* Render the exposition text into out (for tests and the handler).
 * 0 or -ENOMEM. */
struct buf;
int metrics_render(struct frontend *fe, struct buf *out);

#endif
