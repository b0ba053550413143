/*
 * counters.h - the supervisor's running totals for GET /metrics: task
 * outcomes and durations, full refreshes.  They travel to the frontend
 * in the status facts ("metrics" member), which renders them in the
 * Prometheus text format; gauges (queue length, children, watches, ring)
 * are read from the other facts at request time and need no counter.
 *
 * Histograms keep per-bucket counts over fixed upper bounds in seconds
 * (the "le" labels); memory is fixed.
 */
#ifndef VMINFOD_COUNTERS_H
#define VMINFOD_COUNTERS_H

#include <stdint.h>
#include <jansson.h>

#define COUNTERS_BUCKETS 12

struct histogram {
	uint64_t counts[COUNTERS_BUCKETS]; /* per bucket, not cumulative */
	uint64_t overflow;                 /* above the last bound (+Inf only) */
	uint64_t count;
	uint64_t sum_ns;
};

enum counters_task_result { COUNTERS_TASK_OK, COUNTERS_TASK_ERROR, COUNTERS_TASK_TIMEOUT };

struct counters {
	struct histogram task_duration;
	uint64_t tasks[3];                 /* by enum counters_task_result */
	struct histogram refresh_duration;
};

/* The upper bounds (seconds) shared by every histogram. */
extern const double counters_bounds_s[COUNTERS_BUCKETS];

/* Add one observation. */
void counters_observe(struct histogram *h, uint64_t duration_ns);
/* A task ended (duration from start to done or to its timeout). */
void counters_task(struct counters *c, enum counters_task_result result, uint64_t duration_ns);
/* A full refresh ended. */
void counters_refresh(struct counters *c, uint64_t duration_ns);
/* {"task_duration":H,"tasks":{"ok","error","timeout"},"refresh_duration":H}
 * with H = {"le":[bounds...],"counts":[per bucket...],"inf":n,"count":n,
 * "sum_ns":n}.  New reference, NULL on ENOMEM. */
json_t *counters_facts(const struct counters *c);

#endif
