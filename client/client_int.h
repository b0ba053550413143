/*
 * client_int.h - what the files of libvminfod share and callers do not
 * see: the client struct, error filling and libcurl handle setup.
 */
#ifndef VMINFOD_CLIENT_INT_H
#define VMINFOD_CLIENT_INT_H

#include <curl/curl.h>

#include "vminfod.h"

struct vminfod_client {
	char *host;
	unsigned port;
	char *user_agent;      /* NULL: no header */
	long timeout_ms;       /* plain requests; 0 = none */
	size_t max_bytes;      /* body / line limit */
};

/* Fill err (if not NULL) with code and a printf message; returns code. */
int client_fail(struct vminfod_error *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* A new easy handle for GET http://host:port<path> with the client's
 * User-Agent, no proxy, no signals, close-on-exec sockets.  NULL on
 * ENOMEM. */
CURL *client_easy(const struct vminfod_client *c, const char *path);

/* Turn a failed transfer into the original's message ("connect
 * ECONNREFUSED", "socket hang up", ...); returns the negative errno. */
int client_curl_fail(CURL *h, CURLcode rc, struct vminfod_error *err);

#endif
