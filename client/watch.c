/*
 * watch.c - waiting for events and changes with the original client's
 * rules (spec/http-api.md §5, watchForEvent / watchForChanges).
 *
 * A pattern matches an event when the diff of the pattern against the
 * event (the daemon's own diff, shared/diff.c) holds nothing but "added"
 * entries: every leaf of the pattern is present in the event with the
 * same type and value.  A wanted change matches a seen change when their
 * paths have the same length, every non-null wanted element equals the
 * seen one, and the wanted change without its path matches the seen
 * change as a pattern.
 *
 * The watch owns a stream that stays connected between waits, so a
 * caller can open it, cause something, then wait without a race.  On a
 * timeout the error carries what was wanted and what was seen.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "diff.h"
#include "client_int.h"
#include "json.h"

/* Events kept for the timeout report: the most recent ones. */
#define WATCH_MAX_SEEN 100

struct wait_state {
	const json_t *obj;        /* event filter, NULL = any */
	const json_t *changes;    /* NULL: watchForEvent */
	bool *satisfied;          /* per item of changes */
	size_t nitems, nleft;
	json_t *seen;             /* array of events that passed the filter */
	json_t *found;            /* watchForEvent: the matching event */
};

struct vminfod_watch {
	struct vminfod_stream *s;
	struct wait_state *cur;
};

bool
vminfod_event_matches(const json_t *obj, const json_t *ev)
{
	char err[128];
	json_t *d;
	size_t i;
	bool ok = true;

	if (!obj)
		return true;
	if (!ev)
		return false;
	d = diff_values(obj, ev, false, err, sizeof(err));
	if (!d)
		return false;  /* the original's diff throws: no match */
	for (i = 0; i < json_array_size(d) && ok; i++) {
		const char *action = json_string_value(
		    json_object_get(json_array_get(d, i), "action"));

		ok = action && strcmp(action, "added") == 0;
	}
	json_decref(d);
	return ok;
}

/* Strict equality of two path elements (strings, or numbers). */
static bool
path_elem_equal(const json_t *a, const json_t *b)
{
	if (json_is_string(a) && json_is_string(b))
		return json_string_length(a) == json_string_length(b) &&
		    memcmp(json_string_value(a), json_string_value(b),
		        json_string_length(a)) == 0;
	if (json_is_number(a) && json_is_number(b))
		return js_number_value(a) == js_number_value(b);
	return json_is_boolean(a) && json_typeof(a) == json_typeof(b);
}

static bool
change_matches(const json_t *wanted, const json_t *seen)
{
	const json_t *wpath = json_object_get(wanted, "path");
	const json_t *spath = json_object_get(seen, "path");
	json_t *rest;
	size_t i;
	bool ok;

	if (!json_is_array(spath) || json_array_size(wpath) != json_array_size(spath))
		return false;
	for (i = 0; i < json_array_size(wpath); i++) {
		const json_t *w = json_array_get(wpath, i);

		if (!json_is_null(w) && !path_elem_equal(w, json_array_get(spath, i)))
			return false;
	}
	if (!(rest = json_copy((json_t *)wanted)))
		return false;
	(void)json_object_del(rest, "path");
	ok = vminfod_event_matches(rest, seen);
	json_decref(rest);
	return ok;
}

static bool
item_matches(const json_t *item, const json_t *seen)
{
	size_t i;

	if (json_is_object(item))
		return change_matches(item, seen);
	for (i = 0; i < json_array_size(item); i++)
		if (change_matches(json_array_get(item, i), seen))
			return true;
	return false;
}

static bool
wanted_valid(const json_t *w)
{
	return json_is_object(w) && json_is_array(json_object_get(w, "path")) &&
	    json_object_size(w) >= 2;
}

static int
validate_changes(const json_t *changes, struct vminfod_error *err)
{
	size_t i, j;

	if (!json_is_array(changes))
		return client_fail(err, -EINVAL,
		    "watchForChanges: changes must be an array");
	for (i = 0; i < json_array_size(changes); i++) {
		const json_t *item = json_array_get(changes, i);
		bool ok = json_is_object(item) ? wanted_valid(item) :
		    json_is_array(item) && json_array_size(item) > 0;

		for (j = 0; ok && json_is_array(item) && j < json_array_size(item); j++)
			ok = wanted_valid(json_array_get(item, j));
		if (!ok)
			return client_fail(err, -EINVAL, "watchForChanges: change %zu "
			    "must have a \"path\" array and at least one other key", i);
	}
	return 0;
}

static void
remember(struct wait_state *st, const json_t *ev)
{
	if (json_array_size(st->seen) >= WATCH_MAX_SEEN)
		(void)json_array_remove(st->seen, 0);
	(void)json_array_append(st->seen, (json_t *)ev);
}

static int
watch_cb(void *arg, const struct vminfod_msg *msg)
{
	struct vminfod_watch *w = arg;
	struct wait_state *st = w->cur;
	const json_t *changes;
	size_t i, j;

	if (!st || msg->type != VMINFOD_MSG_EVENT)
		return 0;
	if (!vminfod_event_matches(st->obj, msg->obj))
		return 0;
	remember(st, msg->obj);
	if (!st->changes) {
		st->found = json_incref((json_t *)msg->obj);
		return 1;
	}
	changes = json_object_get(msg->obj, "changes");
	for (i = 0; i < json_array_size(changes) && st->nleft > 0; i++) {
		const json_t *seen = json_array_get(changes, i);

		/* Each seen change satisfies at most one wanted item: the
		 * first still open one it matches. */
		for (j = 0; j < st->nitems; j++) {
			if (st->satisfied[j] ||
			    !item_matches(json_array_get(st->changes, j), seen))
				continue;
			st->satisfied[j] = true;
			st->nleft--;
			break;
		}
	}
	return st->nleft == 0 ? 1 : 0;
}

struct vminfod_watch *
vminfod_watch_new(struct vminfod_client *c,
    const struct vminfod_stream_opts *opts, struct vminfod_error *err)
{
	struct vminfod_watch *w = calloc(1, sizeof(*w));

	if (!w) {
		client_fail(err, -ENOMEM, "out of memory");
		return NULL;
	}
	if (!(w->s = vminfod_stream_new(c, opts, watch_cb, w))) {
		free(w);
		client_fail(err, -ENOMEM, "out of memory");
		return NULL;
	}
	if (vminfod_stream_wait_ready(w->s, err) < 0) {
		vminfod_watch_free(w);
		return NULL;
	}
	return w;
}

void
vminfod_watch_free(struct vminfod_watch *w)
{
	if (!w)
		return;
	vminfod_stream_free(w->s);
	free(w);
}

/* Run the stream for the wait in st; 0 when it completed. */
static int
watch_run(struct vminfod_watch *w, struct wait_state *st, long timeout_ms,
    const char *what, struct vminfod_error *err)
{
	int r;

	w->cur = st;
	r = vminfod_stream_run(w->s, timeout_ms < 0 ? -1 : timeout_ms, err);
	w->cur = NULL;
	if (r > 0)
		return 0;
	if (r < 0)
		return r;
	client_fail(err, -ETIMEDOUT,
	    "vminfod %s timeout exceeded - unmatched events", what);
	return -ETIMEDOUT;
}

int
vminfod_watch_for_event(struct vminfod_watch *w, const json_t *obj,
    long timeout_ms, json_t **ret_event, struct vminfod_error *err)
{
	struct wait_state st = { .obj = obj };
	int r;

	if (ret_event)
		*ret_event = NULL;
	if (!(st.seen = json_array()))
		return client_fail(err, -ENOMEM, "out of memory");
	r = watch_run(w, &st, timeout_ms, "watchForEvent", err);
	if (r == -ETIMEDOUT && err) {
		err->detail = json_pack("{s:O,s:O}", "wanted",
		    obj ? (json_t *)obj : json_null(), "events", st.seen);
	}
	if (r == 0 && ret_event)
		*ret_event = st.found;
	else
		json_decref(st.found);
	json_decref(st.seen);
	return r;
}

int
vminfod_watch_for_changes(struct vminfod_watch *w, const json_t *obj,
    const json_t *changes, long timeout_ms, struct vminfod_error *err)
{
	struct wait_state st = { .obj = obj, .changes = changes };
	json_t *unmatched;
	size_t i;
	int r;

	if ((r = validate_changes(changes, err)) < 0)
		return r;
	st.nitems = st.nleft = json_array_size(changes);
	if (st.nitems == 0)
		return 0;  /* nothing wanted: done at once */
	st.satisfied = calloc(st.nitems, sizeof(*st.satisfied));
	st.seen = json_array();
	if (!st.satisfied || !st.seen) {
		free(st.satisfied);
		json_decref(st.seen);
		return client_fail(err, -ENOMEM, "out of memory");
	}
	r = watch_run(w, &st, timeout_ms, "watchForChanges", err);
	if (r == -ETIMEDOUT && err && (unmatched = json_array())) {
		for (i = 0; i < st.nitems; i++)
			if (!st.satisfied[i])
				(void)json_array_append(unmatched,
				    json_array_get(changes, i));
		err->detail = json_pack("{s:O,s:o,s:O}", "wanted", (json_t *)changes,
		    "unmatched", unmatched, "events", st.seen);
	}
	free(st.satisfied);
	json_decref(st.seen);
	return r;
}

int
vminfod_watch_for_zone_changes(struct vminfod_watch *w, const char *zonename,
    const char *changes_json, long timeout_ms, struct vminfod_error *err)
{
	char perr[256];
	json_t *obj = NULL, *changes;
	int r;

	changes = js_parse(changes_json, strlen(changes_json), perr, sizeof(perr));
	if (!changes)
		return client_fail(err, -EINVAL, "watchForChanges: %s", perr);
	if (zonename && !(obj = json_pack("{s:s}", "zonename", zonename))) {
		json_decref(changes);
		return client_fail(err, -ENOMEM, "out of memory");
	}
	r = vminfod_watch_for_changes(w, obj, changes, timeout_ms, err);
	json_decref(obj);
	json_decref(changes);
	return r;
}
