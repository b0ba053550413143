/*
 * subscribers.h - the GET /events streams (spec/http-api.md §4, DESIGN.md
 * §6): ready line, resume, fan-out of event lines, lag and shutdown.
 *
 * A subscriber holds only a cursor (the next event version it needs) and
 * the references of its one send in flight; event bytes are the shared
 * blocks of the ringreader's window, sent unchanged to everyone.  A
 * subscriber whose cursor left the window (the ring overwrote it) gets a
 * final {"type":"error","code":"lagged",...} line and is closed.
 */
#ifndef VMINFOD_FE_SUBSCRIBERS_H
#define VMINFOD_FE_SUBSCRIBERS_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <h2o.h>

struct frontend;
struct subscribers;

/* The (empty) subscriber list of fe; NULL on ENOMEM. */
struct subscribers *subscribers_new(struct frontend *fe);
/* Free the list head; the streams themselves belong to their requests. */
void subscribers_free(struct subscribers *s);
/* Answer req with an event stream.  `query` (may be NULL; not decoded)
 * is the request's query string: ?since=<epoch>:<version> resumes,
 * ?zonename=<z> (repeatable, at most 64) and ?type=create,modify,delete
 * filter.  Headers: Accept: text/event-stream selects Server-Sent Events
 * (each event "id: <epoch>:<version>\ndata: <line>\n\n"), Last-Event-ID
 * resumes like ?since= (and wins over it).  A bad filter answers 400.
 * Returns 0 (h2o handler result). */
int subscribers_start(struct subscribers *s, h2o_req_t *req, const char *query, size_t query_len);
/* New events were applied: wake the streams that wait for them. */
void subscribers_notify(struct subscribers *s);
/* The ring state was rebuilt (new epoch or fell behind): end every
 * stream with a lagged error line so that clients resume. */
void subscribers_lag_all(struct subscribers *s, const char *why);
/* Shutdown: end every stream with the final chunk. */
void subscribers_end_all(struct subscribers *s);
/* Streams open (including those being ended). */
size_t subscribers_count(const struct subscribers *s);
/* eventsListeners of /status: listener id -> {userAgent, createdTime,
 * createdDate, createdAgo} at monotonic now_ns.  New reference; NULL on
 * ENOMEM. */
json_t *subscribers_listeners_json(const struct subscribers *s, uint64_t now_ns);

#endif
