/*
 * frontend.h - the frontend process's one context (STYLE.md §3).
 *
 * vminfod-frontend serves the HTTP API from what the supervisor publishes
 * in the ring file: it maps the ring read-only, follows it when the
 * doorbell rings, and answers /ping, /status, /vms, /vms/<z> and /events
 * on h2o's evloop.  It keeps nothing it cannot rebuild from the ring.
 *
 * main.c owns this struct (options, sockets, loop); routes.c answers
 * requests; subscribers.c owns the /events streams; ringreader.c the
 * published state.
 */
#ifndef VMINFOD_FE_FRONTEND_H
#define VMINFOD_FE_FRONTEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <h2o.h>

#define FE_MAX_LISTENERS 16

struct ringreader;
struct subscribers;
struct metrics;
struct handover;

struct frontend {
	h2o_evloop_t *loop;
	/* Requests of connections within the limit. */
	h2o_globalconf_t config;
	h2o_context_t ctx;
	h2o_accept_ctx_t accept_ctx;
	/* Connections past --max-connections: every request answers 503. */
	h2o_globalconf_t busy_config;
	h2o_context_t busy_ctx;
	h2o_accept_ctx_t busy_accept_ctx;

	h2o_socket_t *listeners[FE_MAX_LISTENERS];
	size_t nlisteners;
	h2o_timeout_t accept_pause;            /* out of fds: stop accepting a moment */
	h2o_timeout_entry_t accept_pause_entry;

	int doorbell_fd;                       /* -1: test mode, poll the ring instead */
	h2o_socket_t *doorbell_sock;
	h2o_timeout_t ring_poll;               /* test mode only */
	h2o_timeout_entry_t ring_poll_entry;

	int signal_fd;
	h2o_socket_t *signal_sock;

	struct ringreader *rr;
	int ring_err;                          /* last ring read error (logged once), 0 */
	struct subscribers *subs;
	struct metrics *metrics;               /* /metrics counters */
	struct handover *handover;             /* NULL in test mode */

	json_t *log_child;                     /* {"component":"frontend"} */
	int request_log_level;                 /* level of the "HTTP request" line */
	size_t nconns;                         /* accepted, not yet closed */
	size_t max_conns;
	size_t max_header_bytes;               /* request headers past it: 431 */
	size_t max_url_bytes;                  /* request target past it: 414 */
	int sndbuf;                            /* SO_SNDBUF of accepted sockets; 0: kernel default */
	bool stopping;
};

#endif
