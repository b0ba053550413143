/*
 * counters.c - running totals for /metrics.  See counters.h.
 */
#include "counters.h"

#include "timeutil.h"

const double counters_bounds_s[COUNTERS_BUCKETS] = {
	0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30,
};

void counters_observe(struct histogram *h, uint64_t duration_ns)
{
	double s = (double)duration_ns / (double)TU_NS_PER_SEC;
	size_t i = 0;
	while (i < COUNTERS_BUCKETS && s > counters_bounds_s[i])
		i++;
	if (i < COUNTERS_BUCKETS)
		h->counts[i]++;
	else
		h->overflow++;
	h->count++;
	h->sum_ns += duration_ns;
}

void counters_task(struct counters *c, enum counters_task_result result, uint64_t duration_ns)
{
	if ((unsigned)result < 3)
		c->tasks[result]++;
	counters_observe(&c->task_duration, duration_ns);
}

void counters_refresh(struct counters *c, uint64_t duration_ns)
{
	counters_observe(&c->refresh_duration, duration_ns);
}

static json_t *histogram_facts(const struct histogram *h)
{
	json_t *le = json_array(), *counts = json_array();
	if (!le || !counts)
		goto fail;
	for (size_t i = 0; i < COUNTERS_BUCKETS; i++)
		if (json_array_append_new(le, json_real(counters_bounds_s[i])) < 0 ||
		    json_array_append_new(counts, json_integer((json_int_t)h->counts[i])) < 0)
			goto fail;
	return json_pack("{s:o,s:o,s:I,s:I,s:I}", "le", le, "counts", counts, "inf",
	                 (json_int_t)h->overflow, "count", (json_int_t)h->count, "sum_ns",
	                 (json_int_t)h->sum_ns);
fail:
	json_decref(le);
	json_decref(counts);
	return NULL;
}

json_t *counters_facts(const struct counters *c)
{
	return json_pack("{s:o?,s:{s:I,s:I,s:I},s:o?}", "task_duration",
	                 histogram_facts(&c->task_duration), "tasks", "ok", (json_int_t)c->tasks[0],
	                 "error", (json_int_t)c->tasks[1], "timeout", (json_int_t)c->tasks[2],
	                 "refresh_duration", histogram_facts(&c->refresh_duration));
}
