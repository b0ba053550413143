/*
 * livepage.h - GET /: one self-contained HTML page (inline CSS and
 * script, no external assets) showing /status and the live event stream.
 *
 * The page reads /events with EventSource (Server-Sent Events), which
 * resumes by itself after a frontend restart by sending Last-Event-ID;
 * after a hard failure it reconnects with ?since=<epoch>:<version>.  From
 * a server without SSE it reads the same stream as newline-delimited JSON
 * with fetch().  It polls /status every 2 s.
 */
#ifndef VMINFOD_FE_LIVEPAGE_H
#define VMINFOD_FE_LIVEPAGE_H

#include <h2o.h>

/* Answer with the page.  Returns 0 (h2o handler result). */
int livepage_handle(h2o_req_t *req);

#endif
