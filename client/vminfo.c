/*
 * vminfo - command-line client of vminfod (spec/http-api.md §7).
 *
 *   vminfo [--host H] [--port P] [-h|--help] <command> [command options]
 *
 * Output formats, usage text, messages and exit codes are the original's.
 * Additions (DESIGN.md §7): the address comes from --host/--port, else
 * VMINFOD_HOST/VMINFOD_PORT, else 127.0.0.1:9090; `events` takes an
 * optional zonename filter and reconnects (resuming where it left off)
 * when the connection is lost after it was established.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "json.h"
#include "vminfod.h"

static const char usage_text[] =
    "Usage: vminfo [command] [args]\n"
    "\n"
    "Commands\n"
    "  ping               get vminfod ping     (GET /ping)\n"
    "  status [-jf]       get vminfod status   (GET /status)\n"
    "  vms                get all vms          (GET /vms)\n"
    "  vm <uuid>          get vm info          (GET /vms/:uuid)\n"
    "  events [-jfr]      trace vminfod events (GET /events)\n";

/* The one context of the program (STYLE §3). */
struct vminfo {
	struct vminfod_client *client;
	const char *host;
	unsigned port;
	/* command options */
	bool json, full, ready;
	const char *zonename;      /* events filter */
	bool printed_ready;
	struct buf out;            /* the output of one event, written at once */
};

static void
usage(FILE *f)
{
	fputs(usage_text, f);
}

/* A JavaScript long option or a cluster of short ones, getopt style:
 * returns the index of the first operand.  `flags` maps letters to the
 * bools; an unknown option prints "illegal option -- x" and exits 1. */
struct flag {
	char letter;
	const char *name;
	bool *value;
};

static int
parse_flags(int argc, char **argv, int i, const struct flag *flags, size_t n)
{
	for (; i < argc; i++) {
		const char *a = argv[i];
		size_t k;

		if (strcmp(a, "--") == 0)
			return i + 1;
		if (a[0] != '-' || a[1] == '\0')
			return i;
		if (a[1] == '-') {
			for (k = 0; k < n && strcmp(flags[k].name, a + 2) != 0; k++)
				;
			if (k == n) {
				fprintf(stderr, "illegal option -- %s\n", a + 2);
				usage(stdout);
				exit(1);
			}
			*flags[k].value = true;
			continue;
		}
		for (const char *c = a + 1; *c; c++) {
			for (k = 0; k < n && flags[k].letter != *c; k++)
				;
			if (k == n) {
				fprintf(stderr, "illegal option -- %c\n", *c);
				usage(stdout);
				exit(1);
			}
			*flags[k].value = true;
		}
	}
	return i;
}

static unsigned
parse_port(const char *s)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v <= 0 || v > 65535) {
		fprintf(stderr, "invalid port: %s\n", s);
		exit(1);
	}
	return (unsigned)v;
}

/* Global options; returns the index of the command. */
static int
parse_global(struct vminfo *v, int argc, char **argv)
{
	int i;

	for (i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (strcmp(a, "--") == 0)
			return i + 1;
		if (a[0] != '-' || a[1] == '\0')
			return i;
		if (strcmp(a, "--help") == 0) {
			usage(stdout);
			exit(0);
		}
		if (strcmp(a, "--host") == 0 || strcmp(a, "--port") == 0) {
			if (i + 1 >= argc) {
				fprintf(stderr, "option requires an argument -- %s\n", a + 2);
				usage(stdout);
				exit(1);
			}
			if (a[2] == 'h')
				v->host = argv[++i];
			else
				v->port = parse_port(argv[++i]);
			continue;
		}
		if (strncmp(a, "--host=", 7) == 0) {
			v->host = a + 7;
			continue;
		}
		if (strncmp(a, "--port=", 7) == 0) {
			v->port = parse_port(a + 7);
			continue;
		}
		if (a[1] == '-') {
			fprintf(stderr, "illegal option -- %s\n", a + 2);
			usage(stdout);
			exit(1);
		}
		for (const char *c = a + 1; *c; c++) {
			if (*c == 'h') {
				usage(stdout);
				exit(0);
			}
			fprintf(stderr, "illegal option -- %c\n", *c);
			usage(stdout);
			exit(1);
		}
	}
	return i;
}

static int
request_failed(const struct vminfod_error *err)
{
	fprintf(stderr, "%s\n", err->message);
	return 1;
}

/* Write the buffer to stdout and empty it; a failed write ends the
 * program (nobody is listening any more). */
static void
flush_out(struct buf *b)
{
	if (b->len && fwrite(b->data, 1, b->len, stdout) != b->len) {
		fprintf(stderr, "vminfo: cannot write output\n");
		exit(1);
	}
	if (fflush(stdout) != 0) {
		fprintf(stderr, "vminfo: cannot write output\n");
		exit(1);
	}
	buf_reset(b);
}

static void
oom(void)
{
	fprintf(stderr, "vminfo: out of memory\n");
	exit(1);
}

static void
print_pretty(struct vminfo *v, const json_t *obj)
{
	if (js_dump_pretty(obj, 2, &v->out) < 0 || buf_addc(&v->out, '\n') < 0)
		oom();
	flush_out(&v->out);
}

/* util.format("%s", x) of a JSON value: strings raw, numbers as
 * JavaScript writes them, absent as "undefined". */
static void
add_value(struct buf *b, const json_t *x)
{
	char num[32];
	int r;

	if (!x)
		r = buf_adds(b, "undefined");
	else if (json_is_string(x))
		r = buf_add(b, json_string_value(x), json_string_length(x));
	else if (json_is_number(x)) {
		js_format_number(js_number_value(x), num);
		r = buf_adds(b, num);
	} else if (json_is_true(x))
		r = buf_adds(b, "true");
	else if (json_is_false(x))
		r = buf_adds(b, "false");
	else if (json_is_null(x))
		r = buf_adds(b, "null");
	else if (json_is_array(x)) {
		/* String(array): the elements joined with commas. */
		size_t i;

		r = 0;
		for (i = 0; i < json_array_size(x) && r == 0; i++) {
			if (i)
				r = buf_addc(b, ',');
			if (r == 0 && !json_is_null(json_array_get(x, i)))
				add_value(b, json_array_get(x, i));
		}
	} else
		r = buf_adds(b, "[object Object]");
	if (r < 0)
		oom();
}

static size_t
count_of(const json_t *x)
{
	return json_is_array(x) ? json_array_size(x) :
	    json_is_object(x) ? json_object_size(x) : 0;
}

/* The size of an fswatcher list: vminfod cuts long lists in /status and
 * gives their full size as "<name>_count". */
static size_t
list_count(const json_t *fsw, const char *name)
{
	char key[64];

	snprintf(key, sizeof(key), "%s_count", name);
	const json_t *n = json_object_get(fsw, key);
	if (json_is_number(n))
		return (size_t)json_number_value(n);
	return count_of(json_object_get(fsw, name));
}

static void
addf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
addf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = buf_vprintf(b, fmt, ap);
	va_end(ap);
	if (r < 0)
		oom();
}

static void
addv(struct buf *b, const char *before, const json_t *x, const char *after)
{
	addf(b, "%s", before);
	add_value(b, x);
	addf(b, "%s", after);
}

/* The listener's User-Agent JSON-escaped without the quotes, with \"
 * turned back into ". */
static void
add_escaped(struct buf *b, const json_t *ua)
{
	struct buf tmp = BUF_INIT;
	size_t i;

	if (!json_is_string(ua)) {
		addf(b, "undefined");
		return;
	}
	if (js_dump_string(json_string_value(ua), json_string_length(ua), &tmp) < 0)
		oom();
	/* Escapes are two-byte pairs ("\\u00xx" continues with plain hex
	 * digits), so walking pair by pair never splits one. */
	for (i = 1; i + 1 < tmp.len; i++) {
		int r;

		if (tmp.data[i] == '\\' && tmp.data[i + 1] == '"')
			r = buf_addc(b, '"');
		else if (tmp.data[i] == '\\')
			r = buf_add(b, tmp.data + i, 2);
		else
			r = buf_addc(b, tmp.data[i]);
		if (r < 0)
			oom();
		if (tmp.data[i] == '\\')
			i++;
	}
	buf_done(&tmp);
}

static void
format_status(struct vminfo *v, const json_t *s)
{
	struct buf *b = &v->out;
	const json_t *mem = json_object_get(s, "memory");
	const json_t *queue = json_object_get(s, "queue");
	const json_t *vq = json_object_get(queue, "vasync_queue");
	const json_t *errs = json_object_get(s, "refreshErrors");
	const json_t *rlog = json_object_get(s, "refreshLog");
	const json_t *fsw = json_object_get(s, "fswatcher");
	const json_t *listeners = json_object_get(s, "eventsListeners");
	const json_t *x;
	const char *key;
	char fixed[340];
	size_t i;

	addv(b, "state: ", json_object_get(s, "state"), "");
	addv(b, " (", json_object_get(s, "status"), ")\n");
	addv(b, "pid: ", json_object_get(s, "pid"), "\n");
	addv(b, "uptime: ", json_object_get(s, "uptime"), "\n");
	js_tofixed2(js_number_value(json_object_get(mem, "rss")) / 1024 / 1024,
	    fixed, sizeof(fixed));
	addf(b, "rss: %smb\n", fixed);
	addv(b, "numVms: ", json_object_get(s, "numVms"), "\n");
	addf(b, "queue\n");
	addv(b, "  paused: ", json_object_get(queue, "paused"), "\n");
	addv(b, "  idle: ", json_object_get(queue, "idle"), "\n");
	addv(b, "  npending: ", json_object_get(vq, "npending"), "\n");
	addv(b, "  nqueued: ", json_object_get(vq, "nqueued"), "\n");
	addf(b, "fullRefresh\n");
	addv(b, "  lastRefresh: ", json_object_get(s, "lastRefresh"), "\n");
	if (count_of(errs) > 0) {
		/* The original prints the format string unformatted and the
		 * count on its own line. */
		addf(b, "  refreshErrors: (%%d items)\n%zu\n", count_of(errs));
		for (i = 0; i < json_array_size(errs); i++) {
			x = json_array_get(errs, i);
			addv(b, "    - ", json_object_get(x, "err"), "");
			addv(b, " (", json_object_get(x, "ago"), ")\n");
		}
	}
	if (count_of(rlog) > 0) {
		addf(b, "  refreshLog: (%zu items)\n", count_of(rlog));
		for (i = 0; i < json_array_size(rlog); i++) {
			x = json_array_get(rlog, i);
			addf(b, "    - %zu cacheChanges / %zu vmChanges - ",
			    count_of(json_object_get(x, "cacheChanges")),
			    count_of(json_object_get(x, "vmChanges")));
			addv(b, "", json_object_get(x, "endedAgo"), " ago\n");
		}
	}
	if (fsw) {
		const json_t *pid = json_object_get(fsw, "watcher_pid");

		addf(b, "fswatcher\n");
		addv(b, "  running: ", json_object_get(fsw, "running"), "\n");
		if (!pid || json_is_null(pid))
			addf(b, "  pid: 0\n");
		else
			addv(b, "  pid: ", pid, "\n");
		addf(b, "  watching: %zu\n", list_count(fsw, "watching"));
		addf(b, "  tryingToWatch: %zu\n", list_count(fsw, "not_yet_watching"));
		addf(b, "  pendingActions: %zu\n", list_count(fsw, "pending_actions"));
	}
	addf(b, "eventsListeners: (%zu listeners)\n", count_of(listeners));
	json_object_foreach((json_t *)listeners, key, x) {
		addf(b, "  - ");
		add_escaped(b, json_object_get(x, "userAgent"));
		addf(b, "\n    %s created ", key);
		addv(b, "", json_object_get(x, "createdAgo"), " ago\n\n");
	}
	flush_out(b);
}

/* Alias as printed: at most 30 UTF-16 code units, else the first 27 and
 * "...".  A surrogate pair cut in half prints as U+FFFD, as Node writes a
 * lone surrogate. */
static void
add_alias(struct buf *b, const json_t *alias)
{
	const unsigned char *s;
	size_t n, i, units = 0, cut = 0;
	bool cut_half = false;

	if (!json_is_string(alias) || json_string_length(alias) == 0) {
		addf(b, "-");
		return;
	}
	s = (const unsigned char *)json_string_value(alias);
	n = json_string_length(alias);
	for (i = 0; i < n; ) {
		size_t len = s[i] >= 0xf0 ? 4 : s[i] >= 0xe0 ? 3 : s[i] >= 0xc0 ? 2 : 1;
		size_t w = len == 4 ? 2 : 1;

		if (i + len > n)
			len = n - i;
		if (units + w <= 27)
			cut = i + len;
		else if (units < 27)
			cut_half = true;  /* 27 falls inside a surrogate pair */
		units += w;
		i += len;
	}
	if (units <= 30) {
		if (buf_add(b, s, n) < 0)
			oom();
		return;
	}
	if (buf_add(b, s, cut) < 0 || (cut_half && buf_adds(b, "\xef\xbf\xbd") < 0) ||
	    buf_adds(b, "...") < 0)
		oom();
}

static void
add_date(struct vminfo *v, const json_t *date)
{
	const char *d = json_string_value(date);
	const char *t;

	if (!d)
		d = "";
	t = strchr(d, 'T');
	addf(&v->out, "[%s]", v->full || !t ? d : t + 1);
}

static void
add_json_or_undefined(struct buf *b, const json_t *x)
{
	if (!x || js_is_undefined(x)) {
		addf(b, "undefined");
		return;
	}
	if (js_dump(x, b) < 0)
		oom();
}

static void
print_event(struct vminfo *v, const json_t *ev)
{
	struct buf *b = &v->out;
	const char *z = json_string_value(json_object_get(ev, "zonename"));
	const json_t *vm = json_object_get(ev, "vm");
	const json_t *changes = json_object_get(ev, "changes");
	struct buf prefix = BUF_INIT;
	size_t i;

	if (v->zonename && (!z || strcmp(z, v->zonename) != 0))
		return;
	if (v->json) {
		if (js_dump(ev, b) < 0 || buf_addc(b, '\n') < 0)
			oom();
		flush_out(b);
		return;
	}
	if (!z)
		z = "undefined";
	add_date(v, json_object_get(ev, "date"));
	if (buf_addc(b, ' ') < 0 ||
	    buf_add(b, z, v->full || !strchr(z, '-') ? strlen(z) :
	        (size_t)(strchr(z, '-') - z)) < 0 || buf_addc(b, ' ') < 0)
		oom();
	add_alias(b, json_object_get(vm, "alias"));
	addv(b, " ", json_object_get(ev, "type"), "");
	if (!json_is_array(changes)) {
		addf(b, "\n");
		flush_out(b);
		return;
	}
	if (buf_add(&prefix, b->data, b->len) < 0)
		oom();
	buf_reset(b);
	for (i = 0; i < json_array_size(changes); i++) {
		const json_t *c = json_array_get(changes, i);

		if (buf_add(b, prefix.data, prefix.len) < 0)
			oom();
		addv(b, ": ", json_object_get(c, "prettyPath"), "");
		addv(b, " ", json_object_get(c, "action"), " :: ");
		add_json_or_undefined(b, json_object_get(c, "oldValue"));
		addf(b, " -> ");
		add_json_or_undefined(b, json_object_get(c, "newValue"));
		addf(b, "\n");
	}
	buf_done(&prefix);
	flush_out(b);
}

static void
print_ready(struct vminfo *v, const json_t *ready)
{
	if (v->json) {
		if (js_dump(ready, &v->out) < 0 || buf_addc(&v->out, '\n') < 0)
			oom();
	} else {
		add_date(v, json_object_get(ready, "date"));
		if (v->full)
			addv(&v->out, " ready (uuid ", json_object_get(ready, "uuid"), ")");
		else
			addf(&v->out, " ready");
		addf(&v->out, "\n");
	}
	flush_out(&v->out);
}

static int
events_cb(void *arg, const struct vminfod_msg *msg)
{
	struct vminfo *v = arg;

	switch (msg->type) {
	case VMINFOD_MSG_READY:
		if (msg->resumed)
			return 0;  /* seamless: the missed events follow */
		if (msg->reconnected)
			fprintf(stderr, "vminfo: reconnected without resume; "
			    "events may have been missed\n");
		/* The first ready, and a fresh snapshot after a reconnect. */
		if (v->ready)
			print_ready(v, msg->obj);
		return 0;
	case VMINFOD_MSG_EVENT:
		print_event(v, msg->obj);
		return 0;
	case VMINFOD_MSG_DISCONNECTED:
		return 0;
	}
	return 0;
}

static int
cmd_events(struct vminfo *v)
{
	struct vminfod_stream_opts opts = {
		.ready_timeout_ms = VMINFOD_DEFAULT_READY_TIMEOUT_MS,
		.reconnect = true,
		.reconnect_max_ms = VMINFOD_DEFAULT_RECONNECT_MAX_MS,
	};
	struct vminfod_error err = { 0 };
	struct vminfod_stream *s;
	int r;

	if (!(s = vminfod_stream_new(v->client, &opts, events_cb, v)))
		oom();
	r = vminfod_stream_run(s, -1, &err);
	vminfod_stream_free(s);
	/* A run without a time limit only returns when the stream failed
	 * for good (the daemon down at start, or gone for too long). */
	if (r < 0) {
		request_failed(&err);
		vminfod_error_clear(&err);
	}
	return 1;
}

static int
cmd_simple(struct vminfo *v, const char *cmd, const char *zonename)
{
	struct vminfod_error err = { 0 };
	json_t *obj = NULL;
	int r;

	if (strcmp(cmd, "ping") == 0)
		r = vminfod_ping(v->client, &obj, &err);
	else if (strcmp(cmd, "status") == 0)
		r = vminfod_status(v->client, v->full, &obj, &err);
	else if (strcmp(cmd, "vms") == 0)
		r = vminfod_vms(v->client, &obj, &err);
	else
		r = vminfod_vm(v->client, zonename, &obj, &err);
	if (r < 0) {
		request_failed(&err);
		vminfod_error_clear(&err);
		return 1;
	}
	if (strcmp(cmd, "ping") == 0) {
		add_value(&v->out, json_object_get(obj, "ping"));
		addf(&v->out, "\n");
		flush_out(&v->out);
	} else if (strcmp(cmd, "status") == 0 && !v->json) {
		format_status(v, obj);
	} else {
		print_pretty(v, obj);
	}
	json_decref(obj);
	return 0;
}

static int
run(struct vminfo *v, int argc, char **argv)
{
	const char *env_name = getenv("VMINFOD_NAME");
	const char *cmd;
	int i = parse_global(v, argc, argv);
	int r;

	if (i >= argc) {
		printf("Command must be specified as the first argument\n\n");
		usage(stdout);
		return 1;
	}
	cmd = argv[i++];
	if (strcmp(cmd, "help") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(cmd, "ping") && strcmp(cmd, "status") && strcmp(cmd, "vms") &&
	    strcmp(cmd, "vm") && strcmp(cmd, "events")) {
		printf("Unknown command: %s\n\n", cmd);
		usage(stdout);
		return 1;
	}
	if (strcmp(cmd, "status") == 0) {
		const struct flag f[] = { { 'j', "json", &v->json },
		    { 'f', "full", &v->full } };
		i = parse_flags(argc, argv, i, f, 2);
	} else if (strcmp(cmd, "events") == 0) {
		const struct flag f[] = { { 'j', "json", &v->json },
		    { 'f', "full", &v->full }, { 'r', "ready", &v->ready } };
		i = parse_flags(argc, argv, i, f, 3);
		if (i < argc)
			v->zonename = argv[i];
	} else if (strcmp(cmd, "vm") == 0 && i >= argc) {
		printf("vm zonename must be specified\n\n");
		usage(stdout);
		return 1;
	}

	if (!(v->client = vminfod_client_new(v->host, v->port)))
		oom();
	if (env_name && *env_name) {
		struct buf name = BUF_INIT;

		addf(&name, "%s (Vminfod CLI)", env_name);
		r = vminfod_client_set_name(v->client, name.data);
		buf_done(&name);
	} else {
		r = vminfod_client_set_name(v->client, "Vminfod CLI");
	}
	if (r < 0)
		oom();
	if (strcmp(cmd, "events") == 0)
		return cmd_events(v);
	return cmd_simple(v, cmd, i < argc ? argv[i] : NULL);
}

int
main(int argc, char **argv)
{
	struct vminfo v = { .out = BUF_INIT };
	const char *env_port = getenv("VMINFOD_PORT");
	const char *env_host = getenv("VMINFOD_HOST");
	int r;

	v.host = env_host && *env_host ? env_host : VMINFOD_DEFAULT_HOST;
	v.port = env_port && *env_port ? parse_port(env_port) : VMINFOD_DEFAULT_PORT;
	r = run(&v, argc, argv);
	vminfod_client_free(v.client);
	buf_done(&v.out);
	return r;
}
