/*
 * request.c - the client object and the plain requests (spec/http-api.md
 * §5): GET /ping, /status, /vms, /vms/<zonename>.
 *
 * Owns the User-Agent, the address and the per-request timeout, and the
 * translation of libcurl failures into the messages the original client
 * (Node.js 0.10) gives: "connect ECONNREFUSED", "bad statusCode: 404".
 * The event stream (stream.c) reuses the handle setup and error mapping.
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "buf.h"
#include "client_int.h"
#include "json.h"

void
vminfod_error_clear(struct vminfod_error *err)
{
	if (!err)
		return;
	json_decref(err->detail);
	memset(err, 0, sizeof(*err));
}

int
client_fail(struct vminfod_error *err, int code, const char *fmt, ...)
{
	va_list ap;

	if (err) {
		json_decref(err->detail);
		err->detail = NULL;
		err->code = code;
		err->status = 0;
		va_start(ap, fmt);
		vsnprintf(err->message, sizeof(err->message), fmt, ap);
		va_end(ap);
	}
	return code;
}

char *
vminfod_user_agent(const char *name)
{
	char host[HOST_NAME_MAX + 1];
	char exe[PATH_MAX];
	ssize_t n;
	struct buf b = BUF_INIT;

	if (gethostname(host, sizeof(host)) != 0)
		snprintf(host, sizeof(host), "localhost");
	host[sizeof(host) - 1] = '\0';
	/* The original shows the path of the running script; ours is the
	 * running executable. */
	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n < 0)
		n = 0;
	exe[n] = '\0';
	if (buf_printf(&b, "%s - %s/%ld (%s)", name ? name : "libvminfod", host,
	    (long)getpid(), exe) < 0) {
		buf_done(&b);
		return NULL;
	}
	return buf_steal(&b, NULL);
}

struct vminfod_client *
vminfod_client_new(const char *host, unsigned port)
{
	struct vminfod_client *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	/* Reference-counted by libcurl and thread-safe since 7.84. */
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		free(c);
		return NULL;
	}
	c->host = strdup(host && *host ? host : VMINFOD_DEFAULT_HOST);
	c->port = port ? port : VMINFOD_DEFAULT_PORT;
	c->user_agent = vminfod_user_agent("libvminfod");
	c->timeout_ms = VMINFOD_DEFAULT_TIMEOUT_MS;
	c->max_bytes = VMINFOD_DEFAULT_MAX_BYTES;
	if (!c->host || !c->user_agent) {
		vminfod_client_free(c);
		return NULL;
	}
	return c;
}

void
vminfod_client_free(struct vminfod_client *c)
{
	if (!c)
		return;
	free(c->host);
	free(c->user_agent);
	free(c);
	curl_global_cleanup();
}

int
vminfod_client_set_name(struct vminfod_client *c, const char *name)
{
	char *ua = vminfod_user_agent(name);

	if (!ua)
		return -ENOMEM;
	free(c->user_agent);
	c->user_agent = ua;
	return 0;
}

int
vminfod_client_set_user_agent(struct vminfod_client *c, const char *ua)
{
	char *copy = NULL;

	if (ua && !(copy = strdup(ua)))
		return -ENOMEM;
	free(c->user_agent);
	c->user_agent = copy;
	return 0;
}

const char *
vminfod_client_user_agent(const struct vminfod_client *c)
{
	return c->user_agent;
}

void
vminfod_client_set_timeout(struct vminfod_client *c, long timeout_ms)
{
	c->timeout_ms = timeout_ms > 0 ? timeout_ms : 0;
}

void
vminfod_client_set_max_bytes(struct vminfod_client *c, size_t max_bytes)
{
	c->max_bytes = max_bytes ? max_bytes : VMINFOD_DEFAULT_MAX_BYTES;
}

/* Sockets are close-on-exec from birth (STYLE §6); libcurl would make
 * them without the flag. */
static curl_socket_t
client_opensocket(void *arg, curlsocktype purpose, struct curl_sockaddr *addr)
{
	return socket(addr->family, addr->socktype | SOCK_CLOEXEC,
	    addr->protocol);
}

CURL *
client_easy(const struct vminfod_client *c, const char *path)
{
	struct buf url = BUF_INIT;
	bool v6 = strchr(c->host, ':') != NULL;
	CURL *h;

	if (buf_printf(&url, "http://%s%s%s:%u%s", v6 ? "[" : "", c->host,
	    v6 ? "]" : "", c->port, path) < 0) {
		buf_done(&url);
		return NULL;
	}
	h = curl_easy_init();
	if (h && (curl_easy_setopt(h, CURLOPT_URL, url.data) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
	    /* Only ever 127.0.0.1-style addresses: never via a proxy. */
	    curl_easy_setopt(h, CURLOPT_PROXY, "") != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http") != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION,
	        client_opensocket) != CURLE_OK ||
	    (c->user_agent && curl_easy_setopt(h, CURLOPT_USERAGENT,
	        c->user_agent) != CURLE_OK))) {
		curl_easy_cleanup(h);
		h = NULL;
	}
	buf_done(&url);
	return h;
}

int
client_curl_fail(CURL *h, CURLcode rc, struct vminfod_error *err)
{
	long os_errno = 0;
	const char *name;

	(void)curl_easy_getinfo(h, CURLINFO_OS_ERRNO, &os_errno);
	name = os_errno ? strerrorname_np((int)os_errno) : NULL;
	switch (rc) {
	case CURLE_COULDNT_CONNECT:
		return client_fail(err, os_errno ? -(int)os_errno : -ECONNREFUSED,
		    "connect %s", name ? name : "ECONNREFUSED");
	case CURLE_COULDNT_RESOLVE_HOST:
		return client_fail(err, -EHOSTUNREACH, "getaddrinfo ENOTFOUND");
	case CURLE_OPERATION_TIMEDOUT:
		return client_fail(err, -ETIMEDOUT, "request timeout exceeded");
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
		return client_fail(err, -ECONNRESET, "socket hang up");
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
		if (name)
			return client_fail(err, -(int)os_errno, "%s %s",
			    rc == CURLE_RECV_ERROR ? "read" : "write", name);
		return client_fail(err, -ECONNRESET, "socket hang up");
	case CURLE_OUT_OF_MEMORY:
		return client_fail(err, -ENOMEM, "out of memory");
	default:
		return client_fail(err, -EIO, "%s", curl_easy_strerror(rc));
	}
}

struct body {
	struct buf b;
	size_t max;
	bool too_big;
};

static size_t
request_write(char *data, size_t size, size_t n, void *arg)
{
	struct body *body = arg;

	if (body->b.len + n > body->max) {
		body->too_big = true;
		return 0;
	}
	return buf_add(&body->b, data, n) < 0 ? 0 : n;
}

int
vminfod_get(struct vminfod_client *c, const char *path, json_t **ret,
    struct vminfod_error *err)
{
	struct body body = { BUF_INIT, c->max_bytes, false };
	char perr[256];
	long status = 0;
	CURLcode rc;
	json_t *v;
	CURL *h;
	int r;

	*ret = NULL;
	if (!(h = client_easy(c, path)))
		return client_fail(err, -ENOMEM, "out of memory");
	if (curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, request_write) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_WRITEDATA, &body) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, c->timeout_ms) != CURLE_OK) {
		r = client_fail(err, -ENOMEM, "out of memory");
		goto out;
	}
	rc = curl_easy_perform(h);
	if (rc != CURLE_OK) {
		if (body.too_big)
			r = client_fail(err, -EFBIG, "response body exceeds %zu bytes",
			    body.max);
		else
			r = client_curl_fail(h, rc, err);
		goto out;
	}
	(void)curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	if (status != 200) {
		r = client_fail(err, -EPROTO, "bad statusCode: %ld", status);
		if (err)
			err->status = status;
		goto out;
	}
	v = js_parse(body.b.data ? body.b.data : "", body.b.len, perr, sizeof(perr));
	if (!v) {
		r = client_fail(err, -EBADMSG, "%s", perr);
		goto out;
	}
	*ret = v;
	r = 0;
out:
	buf_done(&body.b);
	curl_easy_cleanup(h);
	return r;
}

int
vminfod_ping(struct vminfod_client *c, json_t **ret, struct vminfod_error *err)
{
	return vminfod_get(c, "/ping", ret, err);
}

int
vminfod_status(struct vminfod_client *c, bool full, json_t **ret,
    struct vminfod_error *err)
{
	return vminfod_get(c, full ? "/status?full=true" : "/status", ret, err);
}

int
vminfod_vms(struct vminfod_client *c, json_t **ret, struct vminfod_error *err)
{
	return vminfod_get(c, "/vms", ret, err);
}

/* JavaScript encodeURIComponent: everything but A-Z a-z 0-9 - _ . ! ~ * '
 * ( ) is percent-encoded byte by byte. */
static int
encode_component(const char *s, struct buf *out)
{
	static const char hex[] = "0123456789ABCDEF";

	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		int r;

		if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		    (ch >= '0' && ch <= '9') || strchr("-_.!~*'()", ch))
			r = buf_addc(out, (char)ch);
		else
			r = buf_printf(out, "%%%c%c", hex[ch >> 4], hex[ch & 15]);
		if (r < 0)
			return r;
	}
	return 0;
}

int
vminfod_vm(struct vminfod_client *c, const char *zonename, json_t **ret,
    struct vminfod_error *err)
{
	struct buf path = BUF_INIT;
	int r;

	if (buf_adds(&path, "/vms/") < 0 || encode_component(zonename, &path) < 0) {
		buf_done(&path);
		*ret = NULL;
		return client_fail(err, -ENOMEM, "out of memory");
	}
	r = vminfod_get(c, path.data, ret, err);
	buf_done(&path);
	return r;
}
