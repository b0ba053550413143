/*
 * log.c - bunyan-format JSON log lines.  See log.h.
 *
 * The configuration below is the one piece of mutable file-scope state
 * STYLE.md allows: set once by log_init(), changed by log_reopen().
 */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "json.h"
#include "timeutil.h"

static struct {
	char name[64];
	char hostname[256];
	char *path;  /* NULL: stderr */
	int fd;
	int level;
} log_conf = { "vminfod", "", NULL, 2, LOG_INFO };

static int open_log(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
	return fd < 0 ? -errno : fd;
}

int log_init(const char *name, const char *path, int level)
{
	snprintf(log_conf.name, sizeof(log_conf.name), "%s", name);
	if (gethostname(log_conf.hostname, sizeof(log_conf.hostname) - 1) < 0)
		snprintf(log_conf.hostname, sizeof(log_conf.hostname), "localhost");
	log_conf.level = level;
	log_done();
	if (path) {
		int fd = open_log(path);
		if (fd < 0)
			return fd;
		log_conf.path = strdup(path);
		if (!log_conf.path) {
			close(fd);
			return -ENOMEM;
		}
		log_conf.fd = fd;
	}
	return 0;
}

int log_reopen(void)
{
	if (!log_conf.path)
		return 0;
	int fd = open_log(log_conf.path);
	if (fd < 0)
		return fd;
	int old = log_conf.fd;
	log_conf.fd = fd;
	if (old > 2)
		close(old);
	return 0;
}

void log_done(void)
{
	if (log_conf.path) {
		if (log_conf.fd > 2)
			close(log_conf.fd);
		free(log_conf.path);
		log_conf.path = NULL;
	}
	log_conf.fd = 2;
}

int log_level_parse(const char *s)
{
	static const struct { const char *name; int level; } names[] = {
		{ "trace", LOG_TRACE }, { "debug", LOG_DEBUG }, { "info", LOG_INFO },
		{ "warn", LOG_WARN },   { "error", LOG_ERROR }, { "fatal", LOG_FATAL },
	};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcmp(s, names[i].name) == 0)
			return names[i].level;
	char *end;
	long v = strtol(s, &end, 10);
	if (*s && !*end && v >= 0 && v <= 100)
		return (int)v;
	return -1;
}

int log_enabled(int level)
{
	return level >= log_conf.level;
}

/* Core members a record's fields may redefine: as in bunyan, the field's
 * value takes the core member's place instead of appearing twice. */
static bool is_core(const char *key)
{
	return strcmp(key, "name") == 0 || strcmp(key, "hostname") == 0 ||
	       strcmp(key, "pid") == 0;
}

/* Append the members of obj (without braces), each preceded by a comma. */
static int add_members(struct buf *b, json_t *obj)
{
	if (!json_is_object(obj))
		return 0;
	const char **keys;
	long n = js_object_keys(obj, &keys);
	if (n < 0)
		return (int)n;
	int r = 0;
	for (long i = 0; i < n && r == 0; i++) {
		json_t *v = json_object_get(obj, keys[i]);
		if (js_is_undefined(v) || is_core(keys[i]))
			continue;
		r = buf_addc(b, ',');
		if (r == 0)
			r = js_dump_string(keys[i], strlen(keys[i]), b);
		if (r == 0)
			r = buf_addc(b, ':');
		if (r == 0)
			r = js_dump(v, b) < 0 ? -ENOMEM : 0;
	}
	free(keys);
	return r;
}

void log_emit(int level, json_t *child, json_t *fields, const char *fmt, ...)
{
	if (level < log_conf.level) {
		json_decref(fields);
		return;
	}
	struct buf msg = BUF_INIT, b = BUF_INIT;
	va_list ap;
	va_start(ap, fmt);
	int r = buf_vprintf(&msg, fmt, ap);
	va_end(ap);

	char date[32];
	if (tu_iso_date(tu_wall_ms(), date) < 0)
		snprintf(date, sizeof(date), "1970-01-01T00:00:00.000Z");
	json_t *core[3] = { NULL, NULL, NULL };
	static const char *const core_keys[3] = { "name", "hostname", "pid" };
	for (int i = 0; i < 3; i++) {
		core[i] = json_object_get(fields, core_keys[i]);
		if (!core[i])
			core[i] = json_object_get(child, core_keys[i]);
	}
	if (r == 0)
		r = buf_adds(&b, "{\"name\":");
	if (r == 0)
		r = core[0] ? (js_dump(core[0], &b) < 0 ? -ENOMEM : 0)
		            : js_dump_string(log_conf.name, strlen(log_conf.name), &b);
	if (r == 0)
		r = buf_adds(&b, ",\"hostname\":");
	if (r == 0)
		r = core[1] ? (js_dump(core[1], &b) < 0 ? -ENOMEM : 0)
		            : js_dump_string(log_conf.hostname, strlen(log_conf.hostname), &b);
	if (r == 0)
		r = core[2] ? (buf_adds(&b, ",\"pid\":") || js_dump(core[2], &b) < 0 ? -ENOMEM : 0)
		            : buf_printf(&b, ",\"pid\":%d", (int)getpid());
	if (r == 0)
		r = add_members(&b, child);
	if (r == 0)
		r = buf_printf(&b, ",\"level\":%d", level);
	if (r == 0)
		r = add_members(&b, fields);
	if (r == 0)
		r = buf_adds(&b, ",\"msg\":");
	if (r == 0) {
		/* Messages may quote file contents: keep the record valid JSON. */
		size_t n;
		char *clean = js_utf8_sanitize(msg.data ? msg.data : "", msg.len, &n);
		r = clean ? js_dump_string(clean, n, &b) : -ENOMEM;
		free(clean);
	}
	if (r == 0)
		r = buf_printf(&b, ",\"time\":\"%s\",\"v\":0}\n", date);
	if (r == 0) {
		/* One write per record; a short write to a full disk loses the
		 * rest of the line, which is all a logger can do. */
		ssize_t w = write(log_conf.fd, b.data, b.len);
		(void)w;
	}
	buf_done(&msg);
	buf_done(&b);
	json_decref(fields);
}

json_t *log_err_obj(const char *message, const char *code)
{
	json_t *e = json_object();
	if (!e)
		return NULL;
	size_t n;
	char *clean = js_utf8_sanitize(message, strlen(message), &n);
	json_object_set_new(e, "message", clean ? json_stringn_nocheck(clean, n) : json_string(""));
	json_object_set_new(e, "name", json_string("Error"));
	struct buf st = BUF_INIT;
	if (buf_printf(&st, "Error: %s", clean ? clean : "") == 0)
		json_object_set_new(e, "stack", json_stringn_nocheck(st.data, st.len));
	buf_done(&st);
	free(clean);
	if (code)
		json_object_set_new(e, "code", json_string(code));
	return e;
}

json_t *log_err_fields(const char *message, const char *code)
{
	json_t *f = json_object();
	if (f)
		json_object_set_new(f, "err", log_err_obj(message, code));
	return f;
}
