/*
 * vminfod.h - libvminfod, the C client of vminfod's HTTP API.
 *
 * Four layers, each usable alone:
 *
 *   client   host, port, User-Agent and timeouts; one GET per call for
 *            /ping, /status, /vms and /vms/<zonename>
 *   stream   GET /events: the ready line, then one callback per event,
 *            with a ready timeout and (optionally) automatic reconnect
 *            that resumes with ?since=<epoch>:<version>
 *   watch    waits for an event or for a set of changes, with the
 *            original client's matching rules and timeout errors
 *   mirror   a local copy of every VM kept current from the stream; after
 *            a reconnect that could not resume it reconciles against the
 *            new snapshot and reports synthetic create/modify/delete events
 *
 * Nothing here starts a thread or installs a signal handler: every call
 * blocks in the caller's thread for at most its timeout.  JSON values are
 * jansson trees in which every number is a real (JavaScript semantics);
 * "borrowed" results are valid until the next call on the same object.
 *
 * Errors: functions return 0 (or a documented positive value) on success
 * and a negative errno on failure, and fill a struct vminfod_error with
 * the message the original client would give, e.g. "bad statusCode: 404",
 * "connect ECONNREFUSED",
 * "VminfodEventStream ready timeout (30000ms) exceeded".
 */
#ifndef VMINFOD_CLIENT_H
#define VMINFOD_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#ifdef __cplusplus
extern "C" {
#endif

#define VMINFOD_DEFAULT_HOST "127.0.0.1"
#define VMINFOD_DEFAULT_PORT 9090
#define VMINFOD_DEFAULT_TIMEOUT_MS 30000L
#define VMINFOD_DEFAULT_READY_TIMEOUT_MS 30000L
#define VMINFOD_DEFAULT_RECONNECT_MAX_MS 60000L
#define VMINFOD_DEFAULT_MAX_BYTES (256UL * 1024 * 1024)
#define VMINFOD_ERRMSG_MAX 512

/* An error as the original client reports it. */
struct vminfod_error {
	int code;           /* the negative errno also returned */
	long status;        /* HTTP status for "bad statusCode: N", else 0 */
	char message[VMINFOD_ERRMSG_MAX];
	json_t *detail;     /* extra data or NULL (owned; see below) */
};

/* Release err->detail and reset the struct (safe on a zeroed struct). */
void vminfod_error_clear(struct vminfod_error *err);

/* ------------------------------------------------------------------ */
/* client (request.c) */

struct vminfod_client;

/* A client of host:port (NULL / 0 give 127.0.0.1:9090).  The User-Agent
 * starts as vminfod_user_agent("libvminfod").  NULL on ENOMEM. */
struct vminfod_client *vminfod_client_new(const char *host, unsigned port);
void vminfod_client_free(struct vminfod_client *c);

/* The original's User-Agent for `name`:
 * "<name> - <hostname>/<pid> (<path of the running program>)".
 * Heap string (caller frees); NULL on ENOMEM. */
char *vminfod_user_agent(const char *name);
/* Set the User-Agent to vminfod_user_agent(name).  0 or -ENOMEM. */
int vminfod_client_set_name(struct vminfod_client *c, const char *name);
/* Set the User-Agent verbatim; NULL sends no User-Agent.  0 or -ENOMEM. */
int vminfod_client_set_user_agent(struct vminfod_client *c, const char *ua);
/* The User-Agent sent (NULL when none). */
const char *vminfod_client_user_agent(const struct vminfod_client *c);
/* Whole-request timeout of the plain requests (default 30000 ms; 0: none). */
void vminfod_client_set_timeout(struct vminfod_client *c, long timeout_ms);
/* Largest response body or event line accepted (default 256 MiB). */
void vminfod_client_set_max_bytes(struct vminfod_client *c, size_t max_bytes);

/* GET `path` (already URL-encoded), require 200 and a JSON body; the
 * parsed body goes to *ret (caller decrefs).  0 or negative errno. */
int vminfod_get(struct vminfod_client *c, const char *path, json_t **ret,
    struct vminfod_error *err);
int vminfod_ping(struct vminfod_client *c, json_t **ret,
    struct vminfod_error *err);
/* GET /status, or /status?full=true when `full`. */
int vminfod_status(struct vminfod_client *c, bool full, json_t **ret,
    struct vminfod_error *err);
int vminfod_vms(struct vminfod_client *c, json_t **ret,
    struct vminfod_error *err);
/* GET /vms/<zonename> with the zonename URL-component-encoded. */
int vminfod_vm(struct vminfod_client *c, const char *zonename, json_t **ret,
    struct vminfod_error *err);

/* ------------------------------------------------------------------ */
/* stream (stream.c) */

struct vminfod_stream;

struct vminfod_stream_opts {
	long ready_timeout_ms;   /* per connection; 0 → 30000 */
	bool reconnect;          /* once ready, survive connection losses */
	/* Give up when no ready line arrived for this long after a loss;
	 * 0 → 60000, negative → never give up. */
	long reconnect_max_ms;
};

enum vminfod_msg_type {
	VMINFOD_MSG_READY,         /* a ready line (every connection has one) */
	VMINFOD_MSG_EVENT,         /* an event line (create, modify, delete…) */
	VMINFOD_MSG_DISCONNECTED,  /* the connection was lost; reconnecting */
};

/* What a stream callback receives; every pointer is borrowed for the
 * duration of the call. */
struct vminfod_msg {
	enum vminfod_msg_type type;
	const json_t *obj;        /* READY/EVENT: the parsed line */
	const char *line;         /* READY/EVENT: its bytes (not terminated) */
	size_t line_len;
	/* READY: the VM array parsed from the "vms" string; NULL for a
	 * resumed ready (the events since the last one seen follow). */
	const json_t *vms;
	bool resumed;             /* READY: "resumed":true */
	bool reconnected;         /* READY: not the stream's first connection */
	const struct vminfod_error *err;  /* DISCONNECTED: why */
};

/* Return 0 to go on, a positive value to make vminfod_stream_run()
 * return it (the stream stays connected; the next run continues with the
 * following line), a negative errno to fail the run with it. */
typedef int (*vminfod_stream_cb)(void *arg, const struct vminfod_msg *msg);

/* A stream on `c` (which must outlive it); opts may be NULL (defaults:
 * 30000 ms ready timeout, no reconnect).  Not connected yet.  NULL on
 * ENOMEM. */
struct vminfod_stream *vminfod_stream_new(struct vminfod_client *c,
    const struct vminfod_stream_opts *opts, vminfod_stream_cb cb, void *arg);
void vminfod_stream_free(struct vminfod_stream *s);
/* Change the callback (e.g. between two waits). */
void vminfod_stream_set_callback(struct vminfod_stream *s,
    vminfod_stream_cb cb, void *arg);
/* Connect and return once the first ready line was delivered to the
 * callback.  0 or negative errno (connection error, "bad statusCode: N",
 * ready timeout). */
int vminfod_stream_wait_ready(struct vminfod_stream *s,
    struct vminfod_error *err);
/* Deliver lines for up to timeout_ms (negative: no limit; connects first
 * if needed).  Returns 0 at the timeout, the callback's positive value
 * when it asked to stop, or a negative errno (the stream failed and could
 * not, or may not, reconnect; err says why, e.g.
 * "VminfodEventStream ended prematurely"). */
int vminfod_stream_run(struct vminfod_stream *s, long timeout_ms,
    struct vminfod_error *err);
/* Close the connection; the next run connects (and resumes) again. */
void vminfod_stream_close(struct vminfod_stream *s);
/* The epoch (NULL before a ready carrying one) and the version of the
 * last event seen (or of the last non-resumed ready). */
const char *vminfod_stream_epoch(const struct vminfod_stream *s);
uint64_t vminfod_stream_version(const struct vminfod_stream *s);
/* Number of connections made so far. */
unsigned vminfod_stream_connections(const struct vminfod_stream *s);

/* ------------------------------------------------------------------ */
/* watch (watch.c) */

struct vminfod_watch;

/* A stream on `c` kept for waiting; connects and waits for ready before
 * returning, so whatever happens after this call is seen.  NULL with err
 * filled on failure. */
struct vminfod_watch *vminfod_watch_new(struct vminfod_client *c,
    const struct vminfod_stream_opts *opts, struct vminfod_error *err);
void vminfod_watch_free(struct vminfod_watch *w);

/* Does `ev` match the pattern `obj`: every leaf of obj equal (same type
 * and value) to the value at the same path in ev? */
bool vminfod_event_matches(const json_t *obj, const json_t *ev);

/* Wait for the first event matching `obj` (NULL matches any).  The event
 * goes to *ret_event (caller decrefs; ret_event may be NULL).  Timeout:
 * -ETIMEDOUT, "vminfod watchForEvent timeout exceeded - unmatched events",
 * err->detail = {"wanted":obj,"events":[the events seen]}. */
int vminfod_watch_for_event(struct vminfod_watch *w, const json_t *obj,
    long timeout_ms, json_t **ret_event, struct vminfod_error *err);

/* Wait until every item of `changes` was seen in events matching `obj`.
 * An item is a wanted change ({"path":[...], <other keys>}; null in path
 * matches any element) or an array of alternative wanted changes.  A seen
 * change satisfies at most one item; the items may be satisfied across
 * several events.  Values compare strictly ("1024" is not 1024).  An
 * empty list succeeds at once.  -EINVAL for a malformed list.  Timeout:
 * -ETIMEDOUT, "vminfod watchForChanges timeout exceeded - unmatched
 * events", err->detail = {"wanted":changes,"unmatched":[items not yet
 * satisfied],"events":[the matching events seen]}. */
int vminfod_watch_for_changes(struct vminfod_watch *w, const json_t *obj,
    const json_t *changes, long timeout_ms, struct vminfod_error *err);
/* The same for events of one zone, with `changes` as JSON text. */
int vminfod_watch_for_zone_changes(struct vminfod_watch *w,
    const char *zonename, const char *changes_json, long timeout_ms,
    struct vminfod_error *err);

/* ------------------------------------------------------------------ */
/* mirror (mirror.c) */

struct vminfod_mirror;

/* Called for every event applied to the mirror; `synthetic` marks the
 * events made up by a reconciliation (they carry "synthetic":true, and a
 * modify has the changes between the old and new copy).  Return as for
 * vminfod_stream_cb. */
typedef int (*vminfod_mirror_cb)(void *arg, const json_t *event,
    bool synthetic);

/* A mirror of every VM; opts as for a stream (reconnect is forced on).
 * Connects and loads the snapshot before returning.  NULL with err
 * filled on failure. */
struct vminfod_mirror *vminfod_mirror_new(struct vminfod_client *c,
    const struct vminfod_stream_opts *opts, vminfod_mirror_cb cb, void *arg,
    struct vminfod_error *err);
void vminfod_mirror_free(struct vminfod_mirror *m);
/* Keep the copy current for up to timeout_ms; returns as
 * vminfod_stream_run. */
int vminfod_mirror_run(struct vminfod_mirror *m, long timeout_ms,
    struct vminfod_error *err);
/* The copy: an object zonename → VM object, in /vms order (borrowed). */
const json_t *vminfod_mirror_vms(const struct vminfod_mirror *m);
/* Number of reconciliations done (non-resumed reconnects). */
unsigned vminfod_mirror_reconciliations(const struct vminfod_mirror *m);
/* The underlying stream (for its epoch and version). */
struct vminfod_stream *vminfod_mirror_stream(struct vminfod_mirror *m);

#ifdef __cplusplus
}
#endif

#endif
