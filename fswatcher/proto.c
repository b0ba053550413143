/*
 * proto.c - fswatcher command parsing and message formatting.
 *
 * The parser reproduces upstream's sscanf("%llu %s %s")-like scan,
 * quirks included (sign accepted, overflow saturates, no blank needed
 * between key and command, anything after the path ignored).  Messages
 * are assembled by hand so member order is exactly the upstream one.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "proto.h"

size_t proto_piece_len(const char *data, size_t len)
{
	size_t max = len < PROTO_MAX_CMD_LEN ? len : PROTO_MAX_CMD_LEN;
	const char *nl = memchr(data, '\n', max);
	if (nl != NULL)
		return (size_t)(nl - data) + 1;
	if (len >= PROTO_MAX_CMD_LEN)
		return PROTO_MAX_CMD_LEN;
	return 0;
}

static char *skip_space(char *p)
{
	while (*p != '\0' && isspace((unsigned char)*p))
		p++;
	return p;
}

/* Find the whitespace-delimited word at *pp (NULL if there is none) and
 * its length; *pp moves past it.  The word is not terminated here. */
static char *take_word(char **pp, size_t *ret_len)
{
	char *p = skip_space(*pp);
	char *start = p;
	while (*p != '\0' && !isspace((unsigned char)*p))
		p++;
	*ret_len = (size_t)(p - start);
	*pp = p;
	return *ret_len > 0 ? start : NULL;
}

static void set_error(struct proto_cmd *cmd, uint64_t key, int code, const char *msg)
{
	cmd->kind = PROTO_CMD_ERROR;
	cmd->key = key;
	cmd->code = code;
	snprintf(cmd->message, sizeof(cmd->message), "%s", msg);
}

void proto_parse(char *piece, struct proto_cmd *cmd)
{
	memset(cmd, 0, sizeof(*cmd));

	/* KEY: strtoull semantics (blanks, sign, wrap, saturation), but at
	 * least one digit must follow the optional sign, as for %llu. */
	char *p = skip_space(piece);
	char *q = p;
	if (*q == '+' || *q == '-')
		q++;
	if (!isdigit((unsigned char)*q)) {
		set_error(cmd, 0, PROTO_ERR_INVALID_COMMAND, "invalid command line");
		return;
	}
	char *end;
	errno = 0;
	unsigned long long key = strtoull(p, &end, 10);
	p = end;

	size_t wlen;
	char *word = take_word(&p, &wlen);
	if (word == NULL) {
		set_error(cmd, 0, PROTO_ERR_INVALID_COMMAND, "invalid command line");
		return;
	}
	size_t plen;
	char *path = take_word(&p, &plen);
	word[wlen] = '\0';   /* safe: the path scan already moved past it */
	if (path != NULL)
		path[plen] = '\0';

	if (key == 0) {
		set_error(cmd, 0, PROTO_ERR_INVALID_KEY, "invalid key: 0");
		return;
	}
	if (strcmp(word, "UNWATCH") == 0 || strcmp(word, "WATCH") == 0) {
		bool watch = word[0] == 'W';
		if (path == NULL) {
			set_error(cmd, 0, PROTO_ERR_INVALID_COMMAND, watch ?
				"invalid command line - WATCH requires pathname" :
				"invalid command line - UNWATCH requires pathname");
			return;
		}
		cmd->kind = watch ? PROTO_CMD_WATCH : PROTO_CMD_UNWATCH;
		cmd->key = key;
		cmd->path = path;
		return;
	}
	if (strcmp(word, "STATUS") == 0) {
		if (path != NULL) {
			set_error(cmd, 0, PROTO_ERR_INVALID_COMMAND,
				"invalid command line - STATUS takes no arguments");
			return;
		}
		cmd->kind = PROTO_CMD_STATUS;
		cmd->key = key;
		return;
	}
	cmd->kind = PROTO_CMD_ERROR;
	cmd->key = key;
	cmd->code = PROTO_ERR_UNKNOWN_COMMAND;
	snprintf(cmd->message, sizeof(cmd->message), "unknown command '%s'", word);
}

/* Flag names in upstream's fixed output order. */
static const struct {
	uint32_t bits;
	const char *name;
} flag_names[] = {
	{ FILE_ACCESS, "FILE_ACCESS" },
	{ FILE_ATTRIB, "FILE_ATTRIB" },
	{ FILE_DELETE, "FILE_DELETE" },
	{ FILE_EXCEPTION, "FILE_EXCEPTION" },
	{ FILE_MODIFIED, "FILE_MODIFIED" },
	{ FILE_RENAME_FROM, "FILE_RENAME_FROM" },
	{ FILE_RENAME_TO, "FILE_RENAME_TO" },
	{ FILE_TRUNC, "FILE_TRUNC" },
	{ FILE_NOFOLLOW, "FILE_NOFOLLOW" },
	{ MOUNTEDOVER, "MOUNTEDOVER" },
	{ UNMOUNTED, "UNMOUNTED" },
};

int proto_fmt_changes(uint32_t revents, struct buf *out)
{
	int r = buf_addc(out, '[');
	bool first = true;
	for (size_t i = 0; r == 0 && i < sizeof(flag_names) / sizeof(flag_names[0]); i++) {
		if ((revents & flag_names[i].bits) == 0)
			continue;
		r = buf_printf(out, "%s\"%s\"", first ? "" : ",", flag_names[i].name);
		first = false;
	}
	return r == 0 ? buf_addc(out, ']') : r;
}

/*
 * Building blocks.  JSON: '{"type":"<type>","time":[s,ns]' opens every
 * message.  Text (no -j): an nvlist_print()-like dump, one member per
 * line; nothing parses it.
 */
static int open_msg(struct buf *out, bool json, const char *type, struct proto_time t)
{
	if (json)
		return buf_printf(out, "{\"type\":\"%s\",\"time\":[%" PRIu64 ",%" PRIu64 "]",
			type, t.sec, t.nsec);
	return buf_printf(out, "nvlist version: 0\n\ttype = %s\n\ttime = %" PRIu64
		" %" PRIu64 "\n", type, t.sec, t.nsec);
}

static int close_msg(struct buf *out, bool json)
{
	return json ? buf_adds(out, "}\n") : 0;
}

static int add_str(struct buf *out, bool json, const char *name, const char *s)
{
	if (!json)
		return buf_printf(out, "\t%s = %s\n", name, s);
	int r = buf_printf(out, ",\"%s\":", name);
	return r == 0 ? js_dump_string(s, strlen(s), out) : r;
}

static int add_u64(struct buf *out, bool json, const char *name, uint64_t v)
{
	return buf_printf(out, json ? ",\"%s\":%" PRIu64 : "\t%s = %" PRIu64 "\n", name, v);
}

static int add_i64(struct buf *out, bool json, const char *name, int64_t v)
{
	return buf_printf(out, json ? ",\"%s\":%" PRId64 : "\t%s = %" PRId64 "\n", name, v);
}

int proto_fmt_ready(struct buf *out, bool json, struct proto_time t, int version)
{
	int r = open_msg(out, json, "ready", t);
	if (r == 0 && version > 0)
		r = add_i64(out, json, "version", version);
	return r == 0 ? close_msg(out, json) : r;
}

int proto_fmt_event(struct buf *out, bool json, struct proto_time t,
	const char *path, uint32_t revents, bool final)
{
	int r = open_msg(out, json, "event", t);
	if (r == 0)
		r = buf_adds(out, json ? ",\"changes\":" : "\tchanges = ");
	if (r == 0)
		r = proto_fmt_changes(revents, out);
	if (r == 0 && !json)
		r = buf_addc(out, '\n');
	if (r == 0)
		r = add_str(out, json, "pathname", path);
	if (r == 0)
		r = add_i64(out, json, "revents", (int32_t)revents);
	if (r == 0)
		r = buf_printf(out, json ? ",\"final\":%s" : "\tfinal = %s\n",
			final ? "true" : "false");
	return r == 0 ? close_msg(out, json) : r;
}

int proto_fmt_response(struct buf *out, bool json, struct proto_time t,
	uint64_t key, bool ok, const char *path, const char *message)
{
	int r = open_msg(out, json, "response", t);
	if (r == 0)
		r = add_u64(out, json, "key", key);
	if (r == 0)
		r = add_u64(out, json, "code", ok ? 0 : 1);
	if (r == 0)
		r = add_str(out, json, "pathname", path);
	if (r == 0)
		r = add_str(out, json, "message", message);
	if (r == 0)
		r = add_str(out, json, "result", ok ? "SUCCESS" : "FAIL");
	return r == 0 ? close_msg(out, json) : r;
}

int proto_fmt_error(struct buf *out, bool json, struct proto_time t,
	uint64_t key, int code, const char *message)
{
	int r = open_msg(out, json, "error", t);
	if (r == 0)
		r = add_u64(out, json, "key", key);
	if (r == 0)
		r = add_u64(out, json, "code", (uint64_t)code);
	if (r == 0)
		r = add_str(out, json, "message", message);
	return r == 0 ? close_msg(out, json) : r;
}

static int add_str_array(struct buf *out, bool json, bool first, const char *name,
	const char *const *v, size_t n)
{
	int r = buf_printf(out, json ? "%s\"%s\":[" : "%s\t%s =", json && !first ? "," : "", name);
	for (size_t i = 0; r == 0 && i < n; i++) {
		if (json) {
			if (i > 0)
				r = buf_addc(out, ',');
			if (r == 0)
				r = js_dump_string(v[i], strlen(v[i]), out);
		} else {
			r = buf_printf(out, " %s", v[i]);
		}
	}
	return r == 0 ? buf_adds(out, json ? "]" : "\n") : r;
}

int proto_fmt_status(struct buf *out, bool json, struct proto_time t,
	uint64_t key, const char *const *files, size_t nfiles, pid_t pid,
	const char *const *pending, size_t npending)
{
	int r = open_msg(out, json, "response", t);
	if (r == 0)
		r = add_u64(out, json, "key", key);
	if (r == 0)
		r = add_u64(out, json, "code", 0);
	if (r == 0)
		r = add_str(out, json, "result", "SUCCESS");
	if (r == 0)
		r = buf_adds(out, json ? ",\"data\":{" : "\tdata = (embedded nvlist)\n");
	if (r == 0)
		r = add_str_array(out, json, true, "files", files, nfiles);
	if (r == 0)
		r = add_u64(out, json, "files_count", nfiles);
	if (r == 0)
		r = add_i64(out, json, "pid", pid);
	if (r == 0 && pending != NULL) {
		r = add_str_array(out, json, false, "pending", pending, npending);
		if (r == 0)
			r = add_u64(out, json, "pending_count", npending);
	}
	if (r == 0 && json)
		r = buf_addc(out, '}');
	return r == 0 ? close_msg(out, json) : r;
}

int proto_fmt_overflow(struct buf *out, bool json, struct proto_time t)
{
	int r = open_msg(out, json, "overflow", t);
	return r == 0 ? close_msg(out, json) : r;
}

int proto_fmt_exists(struct buf *out, bool json, struct proto_time t,
	const char *path)
{
	int r = open_msg(out, json, "exists", t);
	if (r == 0)
		r = add_str(out, json, "pathname", path);
	return r == 0 ? close_msg(out, json) : r;
}

uint64_t proto_path_hash(const char *path)
{
	uint64_t h = 5381;
	for (const char *p = path; *p != '\0'; p++)
		h = h * 33 + (uint64_t)(int64_t)(signed char)*p;
	return h;
}

static int status_cmp(const void *a, const void *b)
{
	const char *pa = *(const char *const *)a;
	const char *pb = *(const char *const *)b;
	uint64_t ha = proto_path_hash(pa);
	uint64_t hb = proto_path_hash(pb);
	if (ha != hb)
		return ha < hb ? -1 : 1;
	return strcmp(pa, pb);
}

void proto_status_sort(const char **paths, size_t n)
{
	if (n > 1)
		qsort(paths, n, sizeof(*paths), status_cmp);
}
