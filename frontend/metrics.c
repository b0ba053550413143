/*
 * metrics.c - GET /metrics.  See metrics.h.
 *
 * Families are written in a fixed order, each with its HELP and TYPE
 * lines first and all its samples together, as the format requires.
 * Supervisor facts that are missing (an older supervisor, the status
 * area unreadable for a moment) leave their families without samples and
 * vminfod_supervisor_up at 0: a scrape never fails for that.
 */
#include "metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "buf.h"
#include "frontend.h"
#include "json.h"
#include "ring.h"
#include "ringreader.h"
#include "timeutil.h"

/* A supervisor whose heartbeat (every second) is older is reported down. */
#define HEARTBEAT_STALE_NS (5ULL * TU_NS_PER_SEC)

enum ev_kind { EV_CREATE, EV_MODIFY, EV_DELETE, EV_OTHER, EV_KINDS };
static const char *const ev_kind_name[EV_KINDS] = { "create", "modify", "delete", "unknown" };

struct metrics {
	const char *ring_path;
	bool started;
	char epoch[RING_EPOCH_LEN + 1];
	uint64_t counted;                /* events counted through this version */
	uint64_t events[EV_KINDS];
	uint64_t streams_open[2];        /* by sse */
	uint64_t streams_opened[2];
	uint64_t lagged;
};

struct metrics *metrics_new(const char *ring_path)
{
	struct metrics *m = calloc(1, sizeof(*m));
	if (m)
		m->ring_path = ring_path;
	return m;
}

void metrics_free(struct metrics *m)
{
	free(m);
}

/* Event lines start {"type":"<name>",... (publish.c writes type first);
 * look only at the head. */
static enum ev_kind line_kind(const char *line, size_t len)
{
	static const char key[] = "\"type\":\"";
	size_t head = len < 64 ? len : 64;
	const char *p = memmem(line, head, key, sizeof(key) - 1);
	if (!p)
		return EV_OTHER;
	p += sizeof(key) - 1;
	size_t rest = (size_t)(line + len - p);
	for (int k = 0; k < EV_OTHER; k++) {
		size_t n = strlen(ev_kind_name[k]);
		if (rest > n && memcmp(p, ev_kind_name[k], n) == 0 && p[n] == '"')
			return (enum ev_kind)k;
	}
	return EV_OTHER;
}

void metrics_count_events(struct metrics *m, struct ringreader *rr)
{
	uint64_t head = ringreader_version(rr);
	const char *epoch = ringreader_epoch(rr);
	if (!m->started || strcmp(epoch, m->epoch) != 0 || head < m->counted) {
		/* A new history: its earlier events were not read one by one. */
		snprintf(m->epoch, sizeof(m->epoch), "%s", epoch);
		m->counted = head;
		m->started = true;
		return;
	}
	uint64_t v = m->counted + 1, oldest = ringreader_oldest(rr);
	if (v < oldest) {
		/* Rebuilt from a snapshot after falling behind: these events
		 * were never seen, their types are unknown. */
		m->events[EV_OTHER] += oldest - v;
		v = oldest;
	}
	for (; v <= head; v++) {
		struct rcbuf *line = ringreader_event(rr, v);
		m->events[line ? line_kind(line->data, line->len) : EV_OTHER]++;
	}
	m->counted = head;
}

void metrics_stream_opened(struct metrics *m, bool sse)
{
	m->streams_open[sse]++;
	m->streams_opened[sse]++;
}

void metrics_stream_closed(struct metrics *m, bool sse, bool lagged)
{
	if (m->streams_open[sse] > 0)
		m->streams_open[sse]--;
	if (lagged)
		m->lagged++;
}

/* ---- the text format ---- */

static int family(struct buf *b, const char *name, const char *type, const char *help)
{
	return buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value with \, " and newline escaped. */
static int label_value(struct buf *b, const char *v)
{
	int r = 0;
	for (; *v && r == 0; v++) {
		if (*v == '\\')
			r = buf_adds(b, "\\\\");
		else if (*v == '"')
			r = buf_adds(b, "\\\"");
		else if (*v == '\n')
			r = buf_adds(b, "\\n");
		else
			r = buf_addc(b, *v);
	}
	return r;
}

/* Integers exactly (counters stay exact to 2^53), others to 9 digits. */
static int number(struct buf *b, double v)
{
	if (v == (double)(int64_t)v && v > -9007199254740992.0 && v < 9007199254740992.0)
		return buf_printf(b, "%" PRId64, (int64_t)v);
	return buf_printf(b, "%.9g", v);
}

/* name{label="value"} value; label NULL: no labels. */
static int sample(struct buf *b, const char *name, const char *label, const char *lvalue, double value)
{
	int r = buf_adds(b, name);
	if (r == 0 && label)
		r = buf_printf(b, "{%s=\"", label) || label_value(b, lvalue) || buf_adds(b, "\"}");
	if (r == 0)
		r = buf_adds(b, " ") || number(b, value) || buf_adds(b, "\n");
	return r ? -ENOMEM : 0;
}

static double num(const json_t *o, const char *key)
{
	return json_number_value(json_object_get(o, key));
}

/* A histogram from the supervisor's facts (counters.h). */
static int histogram(struct buf *b, const char *name, const char *help, const json_t *h)
{
	int r = family(b, name, "histogram", help);
	if (r < 0 || !json_is_object(h))
		return r;
	const json_t *le = json_object_get(h, "le"), *counts = json_object_get(h, "counts");
	double cum = 0;
	for (size_t i = 0; i < json_array_size(le) && i < json_array_size(counts); i++) {
		cum += json_number_value(json_array_get(counts, i));
		if (buf_printf(b, "%s_bucket{le=\"%g\"} ", name, json_number_value(json_array_get(le, i))) < 0 ||
		    number(b, cum) < 0 || buf_adds(b, "\n") < 0)
			return -ENOMEM;
	}
	if (buf_printf(b, "%s_bucket{le=\"+Inf\"} ", name) < 0 || number(b, num(h, "count")) < 0 ||
	    buf_printf(b, "\n%s_sum %.9f\n%s_count ", name, num(h, "sum_ns") / 1e9, name) < 0 ||
	    number(b, num(h, "count")) < 0 || buf_adds(b, "\n") < 0)
		return -ENOMEM;
	return 0;
}

static double list_len(const json_t *o, const char *list)
{
	char key[64];
	snprintf(key, sizeof(key), "%s_count", list);
	const json_t *n = json_object_get(o, key);  /* set when the list was cut */
	return n ? json_number_value(n) : (double)json_array_size(json_object_get(o, list));
}

static int supervisor_families(struct buf *b, const json_t *f, uint64_t now_ns)
{
	const json_t *q = json_object_get(f, "queue"), *met = json_object_get(f, "metrics");
	const json_t *ch = json_object_get(f, "children"), *fsw = json_object_get(f, "fswatcher");
	int r = 0;
	double hb = num(f, "heartbeat_ns");
	bool up = f && hb > 0 && (double)now_ns - hb < (double)HEARTBEAT_STALE_NS;

	r |= family(b, "vminfod_supervisor_up", "gauge",
		    "1 when the supervisor's status is readable and its heartbeat is recent");
	r |= sample(b, "vminfod_supervisor_up", NULL, NULL, up);
	if (!f)
		return r ? -ENOMEM : 0;
	r |= family(b, "vminfod_supervisor_heartbeat_age_seconds", "gauge", "Time since the supervisor's last heartbeat");
	r |= sample(b, "vminfod_supervisor_heartbeat_age_seconds", NULL, NULL,
		    hb > 0 ? ((double)now_ns - hb) / 1e9 : 0);
	r |= family(b, "vminfod_supervisor_state", "gauge", "The supervisor's state (1 for the current one)");
	if (json_is_string(json_object_get(f, "state")))
		r |= sample(b, "vminfod_supervisor_state", "state", json_string_value(json_object_get(f, "state")), 1);
	r |= family(b, "vminfod_supervisor_resident_memory_bytes", "gauge", "Resident set size of the supervisor");
	r |= sample(b, "vminfod_supervisor_resident_memory_bytes", NULL, NULL, num(f, "rss"));
	r |= family(b, "vminfod_vms", "gauge", "VMs in the supervisor's cache");
	r |= sample(b, "vminfod_vms", NULL, NULL, num(f, "numVms"));

	r |= family(b, "vminfod_queue_tasks", "gauge", "Tasks in the supervisor's queue, by state");
	if (json_is_object(q)) {
		r |= sample(b, "vminfod_queue_tasks", "state", "running", (double)json_array_size(json_object_get(q, "pending")));
		r |= sample(b, "vminfod_queue_tasks", "state", "queued", (double)json_array_size(json_object_get(q, "queued")));
		r |= sample(b, "vminfod_queue_tasks", "state", "paused",
			    (double)json_array_size(json_object_get(q, "paused_queue")));
	}
	r |= family(b, "vminfod_queue_paused", "gauge", "1 while the queue is paused (full refresh)");
	if (json_is_object(q))
		r |= sample(b, "vminfod_queue_paused", NULL, NULL, json_is_true(json_object_get(q, "paused")));

	const json_t *tasks = json_object_get(met, "tasks");
	r |= family(b, "vminfod_tasks_total", "counter", "Tasks finished, by result (timeout: abandoned)");
	if (json_is_object(tasks)) {
		static const char *const res[] = { "ok", "error", "timeout" };
		for (size_t i = 0; i < 3; i++)
			r |= sample(b, "vminfod_tasks_total", "result", res[i], num(tasks, res[i]));
	}
	r |= histogram(b, "vminfod_task_duration_seconds", "Run time of queue tasks",
		       json_object_get(met, "task_duration"));
	r |= histogram(b, "vminfod_full_refresh_duration_seconds", "Duration of full refreshes",
		       json_object_get(met, "refresh_duration"));
	r |= family(b, "vminfod_full_refresh_errors", "gauge", "Recent full refresh errors kept in /status (at most 5)");
	r |= sample(b, "vminfod_full_refresh_errors", NULL, NULL, (double)json_array_size(json_object_get(f, "refresh_errors")));

	static const char *const children[] = { "fswatcher", "frontend" };
	r |= family(b, "vminfod_child_restarts_total", "counter", "Restarts of the supervisor's children");
	for (size_t i = 0; i < 2; i++)
		if (json_is_object(json_object_get(ch, children[i])))
			r |= sample(b, "vminfod_child_restarts_total", "child", children[i],
				    num(json_object_get(ch, children[i]), "restarts"));
	r |= family(b, "vminfod_child_up", "gauge", "1 while the child runs");
	for (size_t i = 0; i < 2; i++) {
		const json_t *c = json_object_get(ch, children[i]);
		if (json_is_object(c))
			r |= sample(b, "vminfod_child_up", "child", children[i],
				    json_is_string(json_object_get(c, "state")) && strcmp(json_string_value(json_object_get(c, "state")), "up") == 0);
	}
	r |= family(b, "vminfod_fswatcher_watches", "gauge",
		    "Paths watched by fswatcher (pending: waiting for the path to exist)");
	if (json_is_object(fsw)) {
		r |= sample(b, "vminfod_fswatcher_watches", "state", "watching", list_len(fsw, "watching"));
		r |= sample(b, "vminfod_fswatcher_watches", "state", "pending", list_len(fsw, "not_yet_watching"));
	}
	return r ? -ENOMEM : 0;
}

int metrics_render(struct frontend *fe, struct buf *b)
{
	struct metrics *m = fe->metrics;
	struct ringreader *rr = fe->rr;
	uint64_t now_ns = tu_mono_ns();
	int r = 0;

	uint64_t version = ringreader_version(rr), oldest = ringreader_oldest(rr);
	r |= family(b, "vminfod_events_total", "counter",
		    "Events read from the ring by this frontend, by type");
	for (int k = 0; k < EV_KINDS; k++)
		r |= sample(b, "vminfod_events_total", "type", ev_kind_name[k], (double)m->events[k]);
	r |= family(b, "vminfod_version", "gauge", "Version of the newest event applied (within the epoch)");
	r |= sample(b, "vminfod_version", NULL, NULL, (double)version);
	r |= family(b, "vminfod_epoch_info", "gauge", "The ring's epoch");
	r |= sample(b, "vminfod_epoch_info", "epoch", ringreader_epoch(rr), 1);
	r |= family(b, "vminfod_ring_events", "gauge", "Events the ring still holds (resumable with ?since=)");
	r |= sample(b, "vminfod_ring_events", NULL, NULL, version >= oldest ? (double)(version - oldest + 1) : 0);
	r |= family(b, "vminfod_ring_oldest_version", "gauge", "Oldest event version still in the ring");
	r |= sample(b, "vminfod_ring_oldest_version", NULL, NULL, (double)oldest);
	struct stat st;
	r |= family(b, "vminfod_ring_size_bytes", "gauge", "Size of the ring file");
	if (m->ring_path && stat(m->ring_path, &st) == 0)
		r |= sample(b, "vminfod_ring_size_bytes", NULL, NULL, (double)st.st_size);

	r |= family(b, "vminfod_subscribers", "gauge", "Open /events streams, by transport");
	r |= sample(b, "vminfod_subscribers", "transport", "json", (double)m->streams_open[0]);
	r |= sample(b, "vminfod_subscribers", "transport", "sse", (double)m->streams_open[1]);
	r |= family(b, "vminfod_subscribers_opened_total", "counter", "/events streams started, by transport");
	r |= sample(b, "vminfod_subscribers_opened_total", "transport", "json", (double)m->streams_opened[0]);
	r |= sample(b, "vminfod_subscribers_opened_total", "transport", "sse", (double)m->streams_opened[1]);
	r |= family(b, "vminfod_subscribers_lagged_total", "counter",
		    "Streams closed because the ring overwrote their cursor");
	r |= sample(b, "vminfod_subscribers_lagged_total", NULL, NULL, (double)m->lagged);
	r |= family(b, "vminfod_http_connections", "gauge", "Open HTTP connections");
	r |= sample(b, "vminfod_http_connections", NULL, NULL, (double)fe->nconns);
	if (r)
		return -ENOMEM;

	struct buf facts = BUF_INIT;
	json_t *f = NULL;
	char err[160];
	if (ringreader_status(rr, &facts) == 0)
		f = js_parse(facts.data ? facts.data : "", facts.len, err, sizeof(err));
	buf_done(&facts);
	r = supervisor_families(b, json_is_object(f) ? f : NULL, now_ns);
	json_decref(f);
	return r;
}

int metrics_handle(struct frontend *fe, h2o_req_t *req)
{
	static const char type[] = "text/plain; version=0.0.4; charset=utf-8";
	struct buf b = BUF_INIT;
	int r = metrics_render(fe, &b);
	h2o_iovec_t body = r == 0 ? h2o_strdup(&req->pool, b.data, b.len) : h2o_iovec_init(H2O_STRLIT("out of memory\n"));
	buf_done(&b);
	h2o_generator_t *gen = h2o_mem_alloc_pool(&req->pool, sizeof(*gen));
	gen->proceed = NULL;
	gen->stop = NULL;
	req->res.status = r == 0 ? 200 : 500;
	req->res.reason = r == 0 ? "OK" : "Internal Server Error";
	req->res.content_length = body.len;
	h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, type, sizeof(type) - 1);
	h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-store"));
	h2o_start_response(req, gen);
	h2o_send(req, &body, 1, H2O_SEND_STATE_FINAL);
	return 0;
}
