/*
 * stream.c - GET /events as a sequence of callbacks (spec/http-api.md §4,
 * §5; DESIGN.md §6 resume).
 *
 * Owns one libcurl transfer at a time, the splitting of its body into
 * lines (on "\r\n", "\n" or a lone "\r"), the ready timeout, and the
 * reconnect/resume cycle: after a connection loss the stream reconnects
 * with ?since=<epoch>:<version> of the last event delivered, drops any
 * event whose version it already delivered, and tells the caller whether
 * the new ready resumed (the events in between follow) or not (a fresh
 * snapshot the caller must reconcile against).
 *
 * Lines are delivered only from vminfod_stream_run(); bytes libcurl hands
 * over are buffered and consumed one line at a time, so a callback that
 * stops the run leaves the rest for the next run.  Nothing is read while
 * no run is in progress: the kernel and the server hold the backlog.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "client_int.h"
#include "json.h"
#include "timeutil.h"

/* Reconnect delays: immediately, then doubling from 50 ms up to 1 s. */
#define RECONNECT_FIRST_MS 50
#define RECONNECT_MAX_DELAY_MS 1000
/* Internal stop value of vminfod_stream_wait_ready(). */
#define STOP_READY INT32_MAX

struct vminfod_stream {
	struct vminfod_client *c;
	struct vminfod_stream_opts opts;
	vminfod_stream_cb cb;
	void *arg;
	CURLM *multi;
	CURL *easy;              /* the current transfer, NULL when none */
	uint64_t conn_start_ns;
	bool ready_seen;         /* on the current connection */
	bool ever_ready;         /* on any connection: reconnecting allowed */
	bool status_checked;     /* response code looked at */
	unsigned connections;
	bool stop_at_ready;      /* vminfod_stream_wait_ready() in progress */

	/* Received bytes; [in_off, in.len) not consumed yet. */
	struct buf in;
	size_t in_off;
	bool skip_lf;            /* the last line ended with a lone "\r" */

	/* The current connection failed: pending until the complete lines
	 * received before the failure were delivered (or at once when
	 * fail_now, e.g. an unparsable line). */
	bool failed;
	bool fail_now;
	struct vminfod_error fail_err;

	uint64_t lost_since_ns;  /* 0 while connected and ready */
	uint64_t next_attempt_ns;
	unsigned attempts;

	char *epoch;
	uint64_t version;
	bool have_version;
};

struct vminfod_stream *
vminfod_stream_new(struct vminfod_client *c,
    const struct vminfod_stream_opts *opts, vminfod_stream_cb cb, void *arg)
{
	struct vminfod_stream *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->c = c;
	if (opts)
		s->opts = *opts;
	if (s->opts.ready_timeout_ms <= 0)
		s->opts.ready_timeout_ms = VMINFOD_DEFAULT_READY_TIMEOUT_MS;
	if (s->opts.reconnect_max_ms == 0)
		s->opts.reconnect_max_ms = VMINFOD_DEFAULT_RECONNECT_MAX_MS;
	s->cb = cb;
	s->arg = arg;
	if (!(s->multi = curl_multi_init())) {
		free(s);
		return NULL;
	}
	return s;
}

static void
stream_disconnect(struct vminfod_stream *s)
{
	if (s->easy) {
		(void)curl_multi_remove_handle(s->multi, s->easy);
		curl_easy_cleanup(s->easy);
		s->easy = NULL;
	}
	buf_reset(&s->in);
	s->in_off = 0;
	s->skip_lf = false;
	s->failed = false;
	s->fail_now = false;
	s->ready_seen = false;
}

void
vminfod_stream_free(struct vminfod_stream *s)
{
	if (!s)
		return;
	stream_disconnect(s);
	vminfod_error_clear(&s->fail_err);
	curl_multi_cleanup(s->multi);
	buf_done(&s->in);
	free(s->epoch);
	free(s);
}

void
vminfod_stream_set_callback(struct vminfod_stream *s, vminfod_stream_cb cb,
    void *arg)
{
	s->cb = cb;
	s->arg = arg;
}

void
vminfod_stream_close(struct vminfod_stream *s)
{
	stream_disconnect(s);
	s->next_attempt_ns = 0;
}

const char *
vminfod_stream_epoch(const struct vminfod_stream *s)
{
	return s->epoch;
}

uint64_t
vminfod_stream_version(const struct vminfod_stream *s)
{
	return s->version;
}

unsigned
vminfod_stream_connections(const struct vminfod_stream *s)
{
	return s->connections;
}

/* Record the failure of the current connection (the first one wins). */
static void
stream_fail(struct vminfod_stream *s, bool now, int code, long status,
    const char *msg)
{
	if (s->failed) {
		s->fail_now = s->fail_now || now;
		return;
	}
	s->failed = true;
	s->fail_now = now;
	client_fail(&s->fail_err, code, "%s", msg);
	s->fail_err.status = status;
}

static size_t
stream_write(char *data, size_t size, size_t n, void *arg)
{
	struct vminfod_stream *s = arg;
	char msg[64];

	if (!s->status_checked) {
		long status = 0;

		s->status_checked = true;
		(void)curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &status);
		if (status != 200) {
			snprintf(msg, sizeof(msg), "bad statusCode: %ld", status);
			stream_fail(s, true, -EPROTO, status, msg);
			return 0;
		}
	}
	if (s->in_off > 0) {
		/* Keep only the unconsumed tail before growing. */
		memmove(s->in.data, s->in.data + s->in_off, s->in.len - s->in_off);
		s->in.len -= s->in_off;
		s->in_off = 0;
	}
	if (s->in.len + n > s->c->max_bytes) {
		snprintf(msg, sizeof(msg), "event line exceeds %zu bytes",
		    s->c->max_bytes);
		stream_fail(s, true, -EFBIG, 0, msg);
		return 0;
	}
	if (buf_add(&s->in, data, n) < 0) {
		stream_fail(s, true, -ENOMEM, 0, "out of memory");
		return 0;
	}
	return n;
}

static int
stream_connect(struct vminfod_stream *s, struct vminfod_error *err)
{
	struct buf path = BUF_INIT;
	int r = 0;

	stream_disconnect(s);
	r = buf_adds(&path, "/events");
	/* Resume only an epoch we know and only after a ready: the first
	 * connection always asks for the full snapshot. */
	if (r == 0 && s->ever_ready && s->epoch && s->have_version)
		r = buf_printf(&path, "?since=%s:%" PRIu64, s->epoch, s->version);
	if (r < 0 || !(s->easy = client_easy(s->c, path.data))) {
		buf_done(&path);
		return client_fail(err, -ENOMEM, "out of memory");
	}
	buf_done(&path);
	if (curl_easy_setopt(s->easy, CURLOPT_WRITEFUNCTION, stream_write) != CURLE_OK ||
	    curl_easy_setopt(s->easy, CURLOPT_WRITEDATA, s) != CURLE_OK ||
	    curl_easy_setopt(s->easy, CURLOPT_CONNECTTIMEOUT_MS,
	        s->opts.ready_timeout_ms) != CURLE_OK ||
	    curl_easy_setopt(s->easy, CURLOPT_TCP_KEEPALIVE, 1L) != CURLE_OK ||
	    curl_multi_add_handle(s->multi, s->easy) != CURLM_OK) {
		curl_easy_cleanup(s->easy);
		s->easy = NULL;
		return client_fail(err, -ENOMEM, "out of memory");
	}
	s->conn_start_ns = tu_mono_ns();
	s->status_checked = false;
	s->connections++;
	return 0;
}

static int
stream_deliver(struct vminfod_stream *s, const struct vminfod_msg *msg,
    struct vminfod_error *err)
{
	int r = s->cb ? s->cb(s->arg, msg) : 0;

	if (r < 0)
		return client_fail(err, r, "stream callback failed: %s", strerror(-r));
	return r;
}

static int
stream_ready(struct vminfod_stream *s, json_t *obj, const char *line,
    size_t len, struct vminfod_error *err)
{
	struct vminfod_msg msg = { .type = VMINFOD_MSG_READY, .obj = obj,
	    .line = line, .line_len = len };
	const json_t *epoch = json_object_get(obj, "epoch");
	const json_t *version = json_object_get(obj, "version");
	const json_t *vms = json_object_get(obj, "vms");
	json_t *parsed = NULL;
	char perr[256];
	int r;

	msg.resumed = json_is_true(json_object_get(obj, "resumed"));
	msg.reconnected = s->ever_ready;
	if (!msg.resumed) {
		/* A new snapshot: the stream's position is the ready's. */
		free(s->epoch);
		s->epoch = json_is_string(epoch) ? strdup(json_string_value(epoch))
		    : NULL;
		s->have_version = json_is_number(version);
		s->version = s->have_version ?
		    (uint64_t)js_number_value(version) : 0;
		if (json_is_string(vms)) {
			parsed = js_parse(json_string_value(vms),
			    json_string_length(vms), perr, sizeof(perr));
			if (!parsed || !json_is_array(parsed)) {
				json_decref(parsed);
				stream_fail(s, true, -EBADMSG, 0, parsed ? "vms is not an array" : perr);
				return 0;
			}
		}
	}
	msg.vms = parsed;
	s->ready_seen = true;
	s->ever_ready = true;
	s->lost_since_ns = 0;
	s->attempts = 0;
	r = stream_deliver(s, &msg, err);
	json_decref(parsed);
	if (r >= 0 && s->stop_at_ready)
		r = STOP_READY;
	return r;
}

/* Parse and deliver one line.  A malformed line fails the connection. */
static int
stream_line(struct vminfod_stream *s, const char *line, size_t len,
    struct vminfod_error *err)
{
	struct vminfod_msg msg = { .type = VMINFOD_MSG_EVENT, .line = line,
	    .line_len = len };
	const json_t *type, *version;
	char perr[256];
	json_t *obj;
	int r;

	obj = js_parse(line, len, perr, sizeof(perr));
	if (!obj || !json_is_object(obj)) {
		stream_fail(s, true, -EBADMSG, 0, obj ? "event line is not an object"
		    : perr);
		json_decref(obj);
		return 0;
	}
	type = json_object_get(obj, "type");
	if (!json_is_string(type) || !json_is_string(json_object_get(obj, "date"))) {
		stream_fail(s, true, -EBADMSG, 0, "Invalid date");
		json_decref(obj);
		return 0;
	}
	if (strcmp(json_string_value(type), "ready") == 0) {
		r = stream_ready(s, obj, line, len, err);
		json_decref(obj);
		return r;
	}
	if (strcmp(json_string_value(type), "error") == 0) {
		/* The server gave up on us (e.g. "lagged"); resume like after
		 * any other loss. */
		const json_t *code = json_object_get(obj, "code");
		char m[128];

		snprintf(m, sizeof(m), "VminfodEventStream server error: %s",
		    json_is_string(code) ? json_string_value(code) : "unknown");
		stream_fail(s, true, -ECONNABORTED, 0, m);
		json_decref(obj);
		return 0;
	}
	version = json_object_get(obj, "version");
	if (json_is_number(version)) {
		uint64_t v = (uint64_t)js_number_value(version);

		if (s->have_version && v <= s->version) {
			json_decref(obj);  /* seen before a reconnect */
			return 0;
		}
		s->version = v;
		s->have_version = true;
	}
	msg.obj = obj;
	r = stream_deliver(s, &msg, err);
	json_decref(obj);
	return r;
}

/* Deliver the complete lines buffered: 0 when none is left (or the
 * connection failed), else the value a callback asked to return. */
static int
stream_dispatch(struct vminfod_stream *s, struct vminfod_error *err)
{
	while (!s->fail_now && s->in_off < s->in.len) {
		char *start = s->in.data + s->in_off;
		size_t avail = s->in.len - s->in_off, i;
		int r;

		if (s->skip_lf && start[0] == '\n') {
			s->in_off++;
			s->skip_lf = false;
			continue;
		}
		s->skip_lf = false;
		for (i = 0; i < avail && start[i] != '\n' && start[i] != '\r'; i++)
			;
		if (i == avail)
			return 0;  /* incomplete line */
		s->in_off += i + 1;
		if (start[i] == '\r')
			s->skip_lf = true;
		if (i == 0)
			continue;
		r = stream_line(s, start, i, err);
		if (r != 0)
			return r;
	}
	return 0;
}

static uint64_t
reconnect_delay_ns(unsigned attempts)
{
	uint64_t ms;

	if (attempts == 0)
		return 0;
	ms = RECONNECT_FIRST_MS;
	while (--attempts > 0 && ms < RECONNECT_MAX_DELAY_MS)
		ms *= 2;
	if (ms > RECONNECT_MAX_DELAY_MS)
		ms = RECONNECT_MAX_DELAY_MS;
	return ms * TU_NS_PER_MS;
}

/* The current connection is gone: give up or schedule a reconnect. */
static int
stream_handle_failure(struct vminfod_stream *s, struct vminfod_error *err)
{
	struct vminfod_error why = s->fail_err;
	struct vminfod_msg msg = { .type = VMINFOD_MSG_DISCONNECTED, .err = &why };
	uint64_t now = tu_mono_ns();
	int r;

	memset(&s->fail_err, 0, sizeof(s->fail_err));
	stream_disconnect(s);
	if (!s->opts.reconnect || !s->ever_ready) {
		if (err) {
			vminfod_error_clear(err);
			*err = why;
		} else {
			vminfod_error_clear(&why);
		}
		return why.code ? why.code : -EIO;
	}
	if (s->lost_since_ns == 0)
		s->lost_since_ns = now;
	if (s->opts.reconnect_max_ms > 0 &&
	    now - s->lost_since_ns > (uint64_t)s->opts.reconnect_max_ms * TU_NS_PER_MS) {
		if (err) {
			vminfod_error_clear(err);
			*err = why;
		} else {
			vminfod_error_clear(&why);
		}
		return why.code ? why.code : -EIO;
	}
	s->next_attempt_ns = now + reconnect_delay_ns(s->attempts++);
	r = stream_deliver(s, &msg, err);
	vminfod_error_clear(&why);
	return r;
}

/* Look at finished transfers: any end of an /events response is a
 * failure ("ended prematurely" when it ended cleanly). */
static void
stream_check_done(struct vminfod_stream *s)
{
	struct vminfod_error e = { 0 };
	CURLMsg *m;
	int left;

	while ((m = curl_multi_info_read(s->multi, &left))) {
		long status = 0;

		if (m->msg != CURLMSG_DONE || m->easy_handle != s->easy)
			continue;
		if (s->failed)
			continue;  /* we aborted it ourselves */
		(void)curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &status);
		if (m->data.result == CURLE_OK && status != 200) {
			char msg[64];

			snprintf(msg, sizeof(msg), "bad statusCode: %ld", status);
			stream_fail(s, false, -EPROTO, status, msg);
		} else if (m->data.result == CURLE_OK) {
			stream_fail(s, false, -EPIPE, 0,
			    "VminfodEventStream ended prematurely");
		} else {
			(void)client_curl_fail(s->easy, m->data.result, &e);
			stream_fail(s, false, e.code, 0, e.message);
		}
	}
}

static int
ms_until(uint64_t now, uint64_t t)
{
	uint64_t ms;

	if (t <= now)
		return 0;
	ms = (t - now + TU_NS_PER_MS - 1) / TU_NS_PER_MS;
	return ms > 1000000 ? 1000000 : (int)ms;
}

int
vminfod_stream_run(struct vminfod_stream *s, long timeout_ms,
    struct vminfod_error *err)
{
	uint64_t start = tu_mono_ns();
	uint64_t deadline = timeout_ms < 0 ? UINT64_MAX :
	    start + (uint64_t)timeout_ms * TU_NS_PER_MS;

	for (;;) {
		uint64_t now, wake;
		int r, running;

		r = stream_dispatch(s, err);
		if (r != 0)
			return r;
		if (s->failed) {
			/* Only the partial line (if any) is left: it dies with
			 * the connection. */
			r = stream_handle_failure(s, err);
			if (r != 0)
				return r;
			continue;
		}
		now = tu_mono_ns();
		if (!s->easy && now >= s->next_attempt_ns) {
			r = stream_connect(s, err);
			if (r < 0)
				return r;
		}
		if (s->easy && !s->ready_seen && now >= s->conn_start_ns +
		    (uint64_t)s->opts.ready_timeout_ms * TU_NS_PER_MS) {
			char msg[96];

			snprintf(msg, sizeof(msg),
			    "VminfodEventStream ready timeout (%ldms) exceeded",
			    s->opts.ready_timeout_ms);
			stream_fail(s, true, -ETIMEDOUT, 0, msg);
			continue;
		}
		if (now >= deadline)
			return 0;
		wake = deadline;
		if (!s->easy && s->next_attempt_ns < wake)
			wake = s->next_attempt_ns;
		if (s->easy && !s->ready_seen) {
			uint64_t rt = s->conn_start_ns +
			    (uint64_t)s->opts.ready_timeout_ms * TU_NS_PER_MS;
			if (rt < wake)
				wake = rt;
		}
		if (curl_multi_poll(s->multi, NULL, 0, ms_until(now, wake), NULL) !=
		    CURLM_OK || curl_multi_perform(s->multi, &running) != CURLM_OK) {
			stream_fail(s, true, -EIO, 0, "libcurl multi interface failed");
			continue;
		}
		stream_check_done(s);
	}
}

int
vminfod_stream_wait_ready(struct vminfod_stream *s, struct vminfod_error *err)
{
	int r;

	if (s->easy && s->ready_seen && !s->failed)
		return 0;
	s->stop_at_ready = true;
	r = vminfod_stream_run(s, -1, err);
	s->stop_at_ready = false;
	if (r == STOP_READY)
		return 0;
	if (r > 0)
		return client_fail(err, -ECANCELED, "stopped before ready");
	return r;
}
