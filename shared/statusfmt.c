/*
 * statusfmt.c - /status from the supervisor's raw facts.  See statusfmt.h.
 *
 * Only formatting: no clocks are read here (now is an argument), so the
 * same facts and times always give the same bytes.
 */
#include <errno.h>
#include <stddef.h>

#include "statusfmt.h"
#include "json.h"
#include "timeutil.h"

/* Builders record the first failure in *err and carry on, so a whole
 * object is assembled with one check at the end.  put() steals value and
 * returns it (borrowed, to fill it further) or NULL on failure. */
static json_t *
put(json_t *obj, const char *key, json_t *value, int *err)
{
	if (value == NULL || json_object_set_new(obj, key, value) < 0) {
		*err = -ENOMEM;
		return NULL;
	}
	return value;
}

static void
push(json_t *arr, json_t *value, int *err)
{
	if (value == NULL || json_array_append_new(arr, value) < 0)
		*err = -ENOMEM;
}

/* A monotonic timestamp member; false when missing, null or negative. */
static bool
get_ns(const json_t *obj, const char *key, uint64_t *ret_ns)
{
	const json_t *v = json_object_get(obj, key);
	double d;

	if (json_is_integer(v)) {
		if (json_integer_value(v) < 0)
			return false;
		*ret_ns = (uint64_t)json_integer_value(v);
		return true;
	}
	if (json_is_real(v)) {
		d = json_real_value(v);
		if (!(d >= 0) || d >= 18446744073709551616.0)
			return false;
		*ret_ns = (uint64_t)d;
		return true;
	}
	return false;
}

static json_t *
hrtime_str(uint64_t ns)
{
	char s[32];
	int n = tu_hrtime_str(ns, s);

	return json_stringn(s, (size_t)n);
}

static json_t *
pretty(uint64_t ns)
{
	char s[96];
	int n = tu_pretty_delta(ns, s);

	return json_stringn(s, (size_t)n);
}

/* later - earlier, 0 when "later" is in fact earlier. */
static uint64_t
delta(uint64_t later, uint64_t earlier)
{
	return later > earlier ? later - earlier : 0;
}

/* A member copied as given (a new reference), or `dflt` (stolen). */
static json_t *
copy_or(const json_t *obj, const char *key, json_t *dflt)
{
	json_t *v = json_object_get(obj, key);

	if (v == NULL || js_is_undefined(v))
		return dflt;
	json_decref(dflt);
	return json_incref(v);
}

static json_t *
number_or_zero(const json_t *obj, const char *key)
{
	const json_t *v = json_object_get(obj, key);

	return js_number(json_is_number(v) ? js_number_value(v) : 0);
}

static json_t *
string_or_empty(const json_t *obj, const char *key)
{
	const json_t *v = json_object_get(obj, key);

	return json_is_string(v) ? json_incref((json_t *)v) : json_string("");
}

/* {"description","created_at","started_at","created_ago","started_ago",
 * "start_latency"}; the started_* members only once the task started. */
static json_t *
pending_entry(const json_t *t, uint64_t now_ns, int *err)
{
	json_t *o = json_object();
	uint64_t created = 0, started = 0;
	bool has_created, has_started;

	if (o == NULL) {
		*err = -ENOMEM;
		return NULL;
	}
	has_created = get_ns(t, "created_ns", &created);
	has_started = get_ns(t, "started_ns", &started);
	put(o, "description", string_or_empty(t, "description"), err);
	if (has_created)
		put(o, "created_at", hrtime_str(created), err);
	if (has_started)
		put(o, "started_at", hrtime_str(started), err);
	if (has_created)
		put(o, "created_ago", pretty(delta(now_ns, created)), err);
	if (has_started)
		put(o, "started_ago", pretty(delta(now_ns, started)), err);
	if (has_created && has_started)
		put(o, "start_latency", pretty(delta(started, created)), err);
	return o;
}

/* {["id",]"description","created_at","created_ago"} */
static json_t *
queued_entry(const json_t *t, uint64_t now_ns, bool with_id, int *err)
{
	json_t *o = json_object();
	uint64_t created = 0;

	if (o == NULL) {
		*err = -ENOMEM;
		return NULL;
	}
	if (with_id)
		put(o, "id", string_or_empty(t, "id"), err);
	put(o, "description", string_or_empty(t, "description"), err);
	if (get_ns(t, "created_ns", &created)) {
		put(o, "created_at", hrtime_str(created), err);
		put(o, "created_ago", pretty(delta(now_ns, created)), err);
	}
	return o;
}

json_t *
statusfmt_queue(const json_t *facts, uint64_t now_ns)
{
	const json_t *pending = json_object_get(facts, "pending");
	const json_t *queued = json_object_get(facts, "queued");
	const json_t *paused_q = json_object_get(facts, "paused_queue");
	bool paused = json_is_true(json_object_get(facts, "paused"));
	json_t *q, *vq, *pend, *list, *t;
	uint64_t paused_at;
	size_t i;
	int err = 0;

	if ((q = json_object()) == NULL)
		return NULL;
	put(q, "now", hrtime_str(now_ns), &err);
	put(q, "paused", json_boolean(paused), &err);
	put(q, "idle", json_boolean(json_is_true(json_object_get(facts,
	    "idle"))), &err);
	vq = put(q, "vasync_queue", json_object(), &err);
	if (vq != NULL) {
		put(vq, "concurrency", js_number(1), &err);
		put(vq, "npending", js_number((double)json_array_size(pending)),
		    &err);
		put(vq, "nqueued", js_number((double)json_array_size(queued)),
		    &err);
		pend = put(vq, "pending", json_object(), &err);
		json_array_foreach(pending, i, t) {
			const json_t *id = json_object_get(t, "id");

			if (pend != NULL && json_is_string(id))
				put(pend, json_string_value(id),
				    pending_entry(t, now_ns, &err), &err);
		}
		list = put(vq, "queued", json_array(), &err);
		json_array_foreach(queued, i, t)
			if (list != NULL)
				push(list, queued_entry(t, now_ns, false, &err),
				    &err);
	}
	if (paused) {
		if (get_ns(facts, "paused_at_ns", &paused_at)) {
			put(q, "paused_at", hrtime_str(paused_at), &err);
			put(q, "paused_ago", pretty(delta(now_ns, paused_at)),
			    &err);
		}
		put(q, "paused_nqueued",
		    js_number((double)json_array_size(paused_q)), &err);
		list = put(q, "paused_queue", json_array(), &err);
		json_array_foreach(paused_q, i, t)
			if (list != NULL)
				push(list, queued_entry(t, now_ns, true, &err),
				    &err);
	}
	if (err < 0) {
		json_decref(q);
		return NULL;
	}
	return q;
}

static json_t *
refresh_errors(const json_t *list, uint64_t now_ns, int *err)
{
	json_t *out = json_array(), *o;
	const json_t *e;
	uint64_t time_ns;
	size_t i;

	if (out == NULL) {
		*err = -ENOMEM;
		return NULL;
	}
	json_array_foreach(list, i, e) {
		if ((o = json_object()) == NULL) {
			*err = -ENOMEM;
			break;
		}
		put(o, "err", string_or_empty(e, "err"), err);
		if (get_ns(e, "time_ns", &time_ns)) {
			put(o, "time", hrtime_str(time_ns), err);
			put(o, "ago", pretty(delta(now_ns, time_ns)), err);
		}
		push(out, o, err);
	}
	return out;
}

static json_t *
refresh_log(const json_t *list, uint64_t now_ns, int *err)
{
	json_t *out = json_array(), *o;
	const json_t *e;
	uint64_t started = 0, ended = 0;
	bool has_started, has_ended;
	size_t i;

	if (out == NULL) {
		*err = -ENOMEM;
		return NULL;
	}
	json_array_foreach(list, i, e) {
		if ((o = json_object()) == NULL) {
			*err = -ENOMEM;
			break;
		}
		has_started = get_ns(e, "started_ns", &started);
		has_ended = get_ns(e, "ended_ns", &ended);
		put(o, "cacheChanges", copy_or(e, "cacheChanges", json_array()),
		    err);
		put(o, "vmChanges", copy_or(e, "vmChanges", json_array()), err);
		if (has_started)
			put(o, "started", hrtime_str(started), err);
		if (has_ended)
			put(o, "ended", hrtime_str(ended), err);
		if (has_started && has_ended)
			put(o, "took", pretty(delta(ended, started)), err);
		if (has_ended)
			put(o, "endedAgo", pretty(delta(now_ns, ended)), err);
		push(out, o, err);
	}
	return out;
}

json_t *
statusfmt_status(const json_t *facts, uint64_t now_ns, int64_t now_wall_ms,
    json_t *listeners, bool full)
{
	const json_t *queue_facts = json_object_get(facts, "queue");
	json_t *s, *mem, *empty_queue = NULL;
	uint64_t start_ns = now_ns, last_ns;
	char date[32];
	int err = 0;

	if ((s = json_object()) == NULL)
		return NULL;
	put(s, "pid", number_or_zero(facts, "pid"), &err);
	(void)get_ns(facts, "start_ns", &start_ns);
	put(s, "uptime", pretty(delta(now_ns, start_ns)), &err);
	mem = put(s, "memory", json_object(), &err);
	if (mem != NULL) {
		put(mem, "rss", number_or_zero(facts, "rss"), &err);
		put(mem, "heapTotal", number_or_zero(facts, "heapTotal"), &err);
		put(mem, "heapUsed", number_or_zero(facts, "heapUsed"), &err);
	}
	put(s, "state", string_or_empty(facts, "state"), &err);
	put(s, "status", string_or_empty(facts, "status"), &err);
	put(s, "numVms", number_or_zero(facts, "numVms"), &err);
	put(s, "curDate", tu_iso_date(now_wall_ms, date) < 0 ? json_null() :
	    json_string(date), &err);
	put(s, "curTime", hrtime_str(now_ns), &err);
	if (!json_is_object(queue_facts))
		queue_facts = empty_queue = json_object();
	put(s, "queue", queue_facts != NULL ?
	    statusfmt_queue(queue_facts, now_ns) : NULL, &err);
	json_decref(empty_queue);
	put(s, "lastRefresh", get_ns(facts, "last_refresh_ns", &last_ns) ?
	    pretty(delta(now_ns, last_ns)) : json_null(), &err);
	put(s, "refreshErrors", refresh_errors(json_object_get(facts,
	    "refresh_errors"), now_ns, &err), &err);
	put(s, "eventsListeners", listeners != NULL ? json_incref(listeners) :
	    json_object(), &err);
	if (full) {
		put(s, "refreshLog", refresh_log(json_object_get(facts,
		    "refresh_log"), now_ns, &err), &err);
		put(s, "fswatcher", copy_or(facts, "fswatcher", json_null()),
		    &err);
	}
	if (err < 0) {
		json_decref(s);
		return NULL;
	}
	return s;
}
