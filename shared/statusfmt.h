/*
 * statusfmt.h - /status as the original answers it (spec/http-api.md
 * §3.2), built from the supervisor's raw status facts.
 *
 * The supervisor publishes facts with monotonic timestamps; whoever
 * answers turns them into hrtime strings and pretty "ago" deltas at the
 * moment of the request, so the answer is exact without asking the
 * supervisor.  Facts (timestamps are tu_mono_ns() values, integers or
 * reals; `*_ns` may be null or missing):
 *
 *   {"pid":1234,"start_ns":123,"rss":47710208,"heapTotal":0,"heapUsed":0,
 *    "state":"running","status":"working","numVms":34,
 *    "queue":{"paused":false,"idle":true,"paused_at_ns":null,
 *             "pending":[{"id","description","created_ns","started_ns"}],
 *             "queued":[{"description","created_ns"}],
 *             "paused_queue":[{"id","description","created_ns"}]},
 *    "last_refresh_ns":5,"refresh_errors":[{"err":"message","time_ns":6}],
 *    "refresh_log":[{"cacheChanges":[],"vmChanges":[],"started_ns":7,
 *                    "ended_ns":8}],
 *    "fswatcher":{…},"children":{…},"heartbeat_ns":9}
 *
 * Deltas into the future (a timestamp after now) count as 0.
 */
#ifndef VMINFOD_STATUSFMT_H
#define VMINFOD_STATUSFMT_H

#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>

/* The "queue" object of /status (http-api.md §3.2.1) from the queue facts
 * at monotonic time now_ns.  New reference; NULL on ENOMEM. */
json_t *statusfmt_queue(const json_t *queue_facts, uint64_t now_ns);

/* The whole /status object, members in the contract's order; `listeners`
 * (borrowed, may be NULL for {}) becomes eventsListeners; `full` adds
 * refreshLog and fswatcher.  Facts members that are missing give zeros,
 * empty lists or null rather than failing.  New reference; NULL on
 * ENOMEM. */
json_t *statusfmt_status(const json_t *facts, uint64_t now_ns,
    int64_t now_wall_ms, json_t *listeners, bool full);

#endif
