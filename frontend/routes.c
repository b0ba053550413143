/*
 * routes.c - request -> handler.  See routes.h.
 *
 * Every answer carries Content-Type: application/json, including the
 * plain-text 404 bodies and the empty 400 body (the original's quirk).
 * Bodies are framed with Content-Length; /events is chunked.
 */
#include "routes.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "buf.h"
#include "frontend.h"
#include "json.h"
#include "livepage.h"
#include "log.h"
#include "metrics.h"
#include "rcbuf.h"
#include "reqpath.h"
#include "ringreader.h"
#include "statusfmt.h"
#include "subscribers.h"
#include "timeutil.h"
#include "vmset.h"

struct fe_handler {
	h2o_handler_t super;
	struct frontend *fe;
};

static const char CONTENT_TYPE[] = "application/json";

static void set_json_type(h2o_req_t *req)
{
	h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, CONTENT_TYPE,
		       sizeof(CONTENT_TYPE) - 1);
}

/* Answer with a body copied into the request's pool, framed with
 * Content-Length. */
static int respond(h2o_req_t *req, int status, const char *reason, const char *body, size_t len)
{
	h2o_iovec_t b = h2o_strdup(&req->pool, body, len);
	h2o_generator_t *gen = h2o_mem_alloc_pool(&req->pool, sizeof(*gen));
	gen->proceed = NULL;
	gen->stop = NULL;
	req->res.status = status;
	req->res.reason = reason;
	req->res.content_length = len;
	set_json_type(req);
	h2o_start_response(req, gen);
	h2o_send(req, &b, 1, H2O_SEND_STATE_FINAL);
	return 0;
}

/* A reference to an rcbuf that lives as long as the request. */
static void release_pool_ref(void *p)
{
	rcbuf_unref(*(struct rcbuf **)p);
}

/* Answer 200 with bytes [data, data+len) of `owner` without copying them:
 * the request keeps a reference until h2o frees it. */
static int respond_shared(h2o_req_t *req, struct rcbuf *owner, const char *data, size_t len)
{
	struct rcbuf **slot = h2o_mem_alloc_shared(&req->pool, sizeof(*slot), release_pool_ref);
	*slot = rcbuf_ref(owner);
	h2o_generator_t *gen = h2o_mem_alloc_pool(&req->pool, sizeof(*gen));
	gen->proceed = NULL;
	gen->stop = NULL;
	req->res.status = 200;
	req->res.reason = "OK";
	req->res.content_length = len;
	set_json_type(req);
	h2o_start_response(req, gen);
	h2o_iovec_t body = h2o_iovec_init(data, len);
	h2o_send(req, &body, 1, H2O_SEND_STATE_FINAL);
	return 0;
}

/* X-Vminfod-Version / X-Vminfod-Epoch: the state an answer was built
 * from, so that clients and tests can line it up with the event stream. */
static void add_version_headers(struct frontend *fe, h2o_req_t *req)
{
	char v[24];
	int n = snprintf(v, sizeof(v), "%" PRIu64, ringreader_version(fe->rr));
	h2o_iovec_t vs = h2o_strdup(&req->pool, v, (size_t)n);
	h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-vminfod-version"), 0, "X-Vminfod-Version",
			      vs.base, vs.len);
	h2o_iovec_t es = h2o_strdup(&req->pool, ringreader_epoch(fe->rr), RING_EPOCH_LEN);
	h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-vminfod-epoch"), 0, "X-Vminfod-Epoch",
			      es.base, es.len);
}

static json_t *jstr(const char *p, size_t n)
{
	json_t *s = json_stringn(p, n);
	if (s)
		return s;
	size_t cn;
	char *clean = js_utf8_sanitize(p, n, &cn);
	s = clean ? json_stringn(clean, cn) : NULL;
	free(clean);
	return s;
}

/* "HTTP request" with the bunyan `req` serialiser's fields. */
static void log_request(struct frontend *fe, h2o_req_t *req)
{
	if (!log_enabled(fe->request_log_level))
		return;
	json_t *headers = json_object();
	if (!headers)
		return;
	/* h2o keeps Host apart from the other headers; Node lists it. */
	if (req->input.authority.len && h2o_find_header(&req->headers, H2O_TOKEN_HOST, -1) < 0)
		json_object_set_new(headers, "host", jstr(req->input.authority.base, req->input.authority.len));
	for (size_t i = 0; i < req->headers.size; i++) {
		const h2o_header_t *h = &req->headers.entries[i];
		char name[256];
		size_t n = h->name->len < sizeof(name) - 1 ? h->name->len : sizeof(name) - 1;
		for (size_t j = 0; j < n; j++) {
			char c = h->name->base[j];
			name[j] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
		}
		name[n] = '\0';
		json_t *old = json_object_get(headers, name);
		if (old && json_is_string(old)) {
			/* Node joins repeated headers with ", ". */
			struct buf b = BUF_INIT;
			if (buf_add(&b, json_string_value(old), json_string_length(old)) == 0 &&
			    buf_adds(&b, ", ") == 0 && buf_add(&b, h->value.base, h->value.len) == 0)
				json_object_set_new(headers, name, jstr(b.data, b.len));
			buf_done(&b);
		} else {
			json_object_set_new(headers, name, jstr(h->value.base, h->value.len));
		}
	}
	char addr[INET6_ADDRSTRLEN] = "";
	int port = 0;
	struct sockaddr_storage ss;
	socklen_t sl = req->conn->callbacks->get_peername ? req->conn->callbacks->get_peername(req->conn, (void *)&ss) : 0;
	if (sl && ss.ss_family == AF_INET) {
		struct sockaddr_in *sin = (void *)&ss;
		inet_ntop(AF_INET, &sin->sin_addr, addr, sizeof(addr));
		port = ntohs(sin->sin_port);
	} else if (sl && ss.ss_family == AF_INET6) {
		struct sockaddr_in6 *sin6 = (void *)&ss;
		inet_ntop(AF_INET6, &sin6->sin6_addr, addr, sizeof(addr));
		port = ntohs(sin6->sin6_port);
	}
	json_t *r = json_object();
	if (!r) {
		json_decref(headers);
		return;
	}
	json_object_set_new(r, "method", jstr(req->input.method.base, req->input.method.len));
	json_object_set_new(r, "url", jstr(req->input.path.base, req->input.path.len));
	json_object_set_new(r, "headers", headers);
	if (addr[0]) {
		json_object_set_new(r, "remoteAddress", json_string(addr));
		json_object_set_new(r, "remotePort", js_number(port));
	}
	log_emit(fe->request_log_level, fe->log_child, json_pack("{s:o}", "req", r), "HTTP request");
}

static int handle_status(struct frontend *fe, h2o_req_t *req, const struct reqpath *rp)
{
	struct buf facts = BUF_INIT;
	int r = ringreader_status(fe->rr, &facts);
	json_t *fj = NULL;
	char err[160] = "";
	if (r == 0)
		fj = js_parse(facts.data ? facts.data : "", facts.len, err, sizeof(err));
	buf_done(&facts);
	if (!fj) {
		log_emit(LOG_WARN, fe->log_child,
			 log_err_fields(r < 0 ? strerror(-r) : err, NULL),
			 "cannot read the supervisor's status from the ring, answering 503");
		return respond(req, 503, "Service Unavailable", H2O_STRLIT("status unavailable"));
	}
	uint64_t now_ns = tu_mono_ns();
	bool full = reqpath_query_flag(rp->query, rp->query_len, "full");
	json_t *listeners = subscribers_listeners_json(fe->subs, now_ns);
	json_t *st = statusfmt_status(fj, now_ns, tu_wall_ms(), listeners, full);
	json_decref(listeners);
	/* Port addition, after the upstream keys: the supervised children
	 * (pid, restarts, state up/backoff/maintenance, ready). */
	json_t *children = json_object_get(fj, "children");
	if (st && full && json_is_object(children))
		json_object_set(st, "children", children);
	json_decref(fj);
	struct buf out = BUF_INIT;
	if (!st || js_dump(st, &out) < 0) {
		json_decref(st);
		buf_done(&out);
		return respond(req, 500, "Internal Server Error", H2O_STRLIT("out of memory"));
	}
	json_decref(st);
	respond(req, 200, "OK", out.data, out.len);
	buf_done(&out);
	return 0;
}

static int handle_vms(struct frontend *fe, h2o_req_t *req)
{
	struct rcbuf *arr = vmset_array(ringreader_vms(fe->rr));
	if (!arr)
		return respond(req, 500, "Internal Server Error", H2O_STRLIT("out of memory"));
	add_version_headers(fe, req);
	return respond_shared(req, arr, arr->data, arr->len);
}

static int handle_vm(struct frontend *fe, h2o_req_t *req, const struct reqpath_seg *z)
{
	struct rcbuf *owner;
	const char *json;
	size_t len;
	if (!vmset_get(ringreader_vms(fe->rr), z->p, z->len, &owner, &json, &len)) {
		static const char prefix[] = "VM Not Found: ";
		size_t n = sizeof(prefix) - 1 + z->len;
		char *body = h2o_mem_alloc_pool(&req->pool, n);
		memcpy(body, prefix, sizeof(prefix) - 1);
		memcpy(body + sizeof(prefix) - 1, z->p, z->len);
		add_version_headers(fe, req);
		return respond(req, 404, "Not Found", body, n);
	}
	add_version_headers(fe, req);
	return respond_shared(req, owner, json, len);
}

static int handle_events(struct frontend *fe, h2o_req_t *req, const struct reqpath *rp)
{
	return subscribers_start(fe->subs, req, rp->query, rp->query_len);
}

static bool seg_is(const struct reqpath_seg *s, const char *name)
{
	return s->present && s->len == strlen(name) && memcmp(s->p, name, s->len) == 0;
}

/* Bytes of the request's header fields as sent ("name: value\r\n"),
 * Host included (h2o keeps it as the authority). */
static size_t header_bytes(const h2o_req_t *req)
{
	size_t n = req->input.authority.len ? req->input.authority.len + 8 : 0;
	for (size_t i = 0; i < req->headers.size; i++)
		n += req->headers.entries[i].name->len + req->headers.entries[i].value.len + 4;
	return n;
}

/* The --max-url-bytes and --max-header-bytes limits: 414 / 431 with a
 * short body and the connection closed; 0 when within them. */
static int check_limits(struct frontend *fe, h2o_req_t *req)
{
	if (req->input.path.len > fe->max_url_bytes) {
		req->http1_is_persistent = 0;
		return respond(req, 414, "URI Too Long", H2O_STRLIT("{\"error\":\"request target too long\"}")) + 1;
	}
	if (header_bytes(req) > fe->max_header_bytes) {
		req->http1_is_persistent = 0;
		return respond(req, 431, "Request Header Fields Too Large",
			       H2O_STRLIT("{\"error\":\"request header fields too large\"}")) + 1;
	}
	return 0;
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
	struct frontend *fe = ((struct fe_handler *)self)->fe;
	log_request(fe, req);
	if (check_limits(fe, req))
		return 0;
	if (!h2o_memis(req->input.method.base, req->input.method.len, H2O_STRLIT("GET")))
		return respond(req, 400, "Bad Request", "", 0);

	const h2o_iovec_t target = req->input.path;
	size_t worklen = reqpath_work_size(target.len);
	char *work = h2o_mem_alloc_pool(&req->pool, worklen);
	struct reqpath rp;
	if (reqpath_parse(target.base, target.len, work, worklen, &rp) < 0)
		return respond(req, 404, "Not Found", H2O_STRLIT("Unsupported URL Path"));

	const struct reqpath_seg *s0 = &rp.seg[0];
	if (seg_is(s0, "ping"))
		return respond(req, 200, "OK", H2O_STRLIT("{\"ping\":\"pong\"}"));
	if (seg_is(s0, "status"))
		return handle_status(fe, req, &rp);
	if (seg_is(s0, "vms")) {
		if (!rp.seg[1].present || rp.seg[1].len == 0)
			return handle_vms(fe, req);
		return handle_vm(fe, req, &rp.seg[1]);
	}
	if (seg_is(s0, "events"))
		return handle_events(fe, req, &rp);
	if (seg_is(s0, "metrics") && !rp.seg[1].present)
		return metrics_handle(fe, req);
	/* Exactly "/": the live page; any other unknown path stays 404. */
	if (h2o_memis(target.base, target.len, H2O_STRLIT("/")))
		return livepage_handle(req);
	return respond(req, 404, "Not Found", H2O_STRLIT("Unsupported URL Path"));
}

/* Connections past the limit: answer and close. */
static int on_req_busy(h2o_handler_t *self, h2o_req_t *req)
{
	struct frontend *fe = ((struct fe_handler *)self)->fe;
	log_request(fe, req);
	req->http1_is_persistent = 0;
	return respond(req, 503, "Service Unavailable", H2O_STRLIT("{\"error\":\"too many connections\"}"));
}

static int register_handler(struct frontend *fe, h2o_globalconf_t *config, int (*cb)(h2o_handler_t *, h2o_req_t *))
{
	h2o_hostconf_t *host = h2o_config_register_host(config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
	if (!host)
		return -ENOMEM;
	h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
	if (!path)
		return -ENOMEM;
	struct fe_handler *h = (struct fe_handler *)h2o_create_handler(path, sizeof(*h));
	if (!h)
		return -ENOMEM;
	h->super.on_req = cb;
	h->fe = fe;
	return 0;
}

int routes_register(struct frontend *fe, h2o_globalconf_t *config)
{
	return register_handler(fe, config, on_req);
}

int routes_register_busy(struct frontend *fe, h2o_globalconf_t *config)
{
	return register_handler(fe, config, on_req_busy);
}
