/*
 * ringtool - create, fill and inspect a vminfod ring file without the
 * supervisor (for tests and operators).
 *
 *   ringtool create PATH [SIZE]
 *       Open PATH as the ring writer (SIZE in bytes, K/M/G suffixes;
 *       default: the existing file's size, else 64M).  A new epoch gets an
 *       empty snapshot so readers can start.  Prints the open line (below).
 *
 *   ringtool publish [--doorbell FD] PATH [SIZE]
 *       Open PATH as the writer (a valid file keeps its epoch; the VMs
 *       last published are loaded back) and read commands from stdin, one
 *       per line.  After each command one JSON line is printed (and
 *       flushed) on stdout, {"ok":true,"version":N} or
 *       {"ok":false,"error":"..."}, and the doorbell eventfd FD (inherited)
 *       is rung.  The first line printed is the open line:
 *         {"ok":true,"epoch":"<uuid>","kept":false,"why":"missing","version":0}
 *       Commands (words separated by one space; JSON runs to end of line):
 *         snapshot [JSON]        append a snapshot; JSON is an array of
 *                                {"zonename":Z,"vm":{...}} and replaces the
 *                                tool's VM set; without it, the current set
 *         vm TYPE ZONENAME [VM]  build and append an event line like the
 *                                supervisor's: {"type":..,"date":..,
 *                                "zonename":..,"uuid":..,"vm":VM[,"changes":[]],
 *                                "version":N}; TYPE is create|modify|delete
 *                                (delete takes no VM)
 *         event TYPE ZONENAME LINE   append LINE verbatim (+ "\n") as the
 *                                next event; the VM object is located at the
 *                                top-level "vm": member (none: 0/0).  LINE
 *                                should end with "version":N for N = the
 *                                next version (the reply says which it got)
 *         status JSON            replace the status text
 *         heartbeat              store CLOCK_MONOTONIC now as the heartbeat
 *       Lines that are empty or start with '#' are ignored.  When the ring
 *       needs a fresh snapshot, the tool's current VM set is written.
 *
 *   ringtool dump PATH
 *       Print JSON lines: {"kind":"header",...} (epoch, versions, writer),
 *       {"kind":"snapshot","version":S,"vms":[{"zonename":..,"vm":<raw>}]},
 *       one {"kind":"event","version":v,"type":..,"zonename":..,"vm_off":..,
 *       "vm_len":..,"line":"<the line as a JSON string>"} per event still
 *       in the ring, and {"kind":"status","status":<raw text or null>}.
 *
 *   ringtool status PATH [JSON]
 *       With JSON: write it as the status (opens as the writer, so not
 *       while a `publish` runs).  Without: print the status text.
 *
 * Exit status: 0, 1 on an error (message on stderr), 2 on bad usage.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "json.h"
#include "ring.h"
#include "timeutil.h"

/* Input lines longer than this are refused. */
#define MAX_LINE (16u * 1024 * 1024)

struct vm {
	char *zone;
	char *json;
	size_t jlen;
};

struct tool {
	struct ring_writer *w;
	struct vm *vms;
	size_t n, cap;
	int doorbell_fd;
	struct buf out;
};

static void usage(void)
{
	fprintf(stderr, "usage: ringtool create PATH [SIZE]\n"
			"       ringtool publish [--doorbell FD] PATH [SIZE]\n"
			"       ringtool dump PATH\n"
			"       ringtool status PATH [JSON]\n");
	exit(2);
}

/* The size to open PATH with: given, else the file's, else the default. */
static size_t ring_size(const char *path, const char *arg)
{
	size_t size;
	if (arg) {
		if (ring_size_parse(arg, &size) < 0) {
			fprintf(stderr, "ringtool: bad size '%s'\n", arg);
			exit(2);
		}
		return size;
	}
	struct stat st;
	if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && st.st_size >= RING_MIN_SIZE)
		return (size_t)st.st_size;
	return RING_DEFAULT_SIZE;
}

/* ---- the tool's VM set ---- */

static struct vm *vm_find(struct tool *t, const char *zone, size_t zl)
{
	for (size_t i = 0; i < t->n; i++)
		if (strlen(t->vms[i].zone) == zl && memcmp(t->vms[i].zone, zone, zl) == 0)
			return &t->vms[i];
	return NULL;
}

static int vm_put(struct tool *t, const char *zone, size_t zl, const char *json, size_t jl)
{
	char *j = strndup(json, jl);
	if (!j)
		return -ENOMEM;
	struct vm *v = vm_find(t, zone, zl);
	if (v) {
		free(v->json);
		v->json = j;
		v->jlen = jl;
		return 0;
	}
	if (t->n == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 16;
		struct vm *nv = realloc(t->vms, cap * sizeof *nv);
		if (!nv) {
			free(j);
			return -ENOMEM;
		}
		t->vms = nv;
		t->cap = cap;
	}
	char *z = strndup(zone, zl);
	if (!z) {
		free(j);
		return -ENOMEM;
	}
	t->vms[t->n++] = (struct vm){ z, j, jl };
	return 0;
}

static void vm_del(struct tool *t, const char *zone, size_t zl)
{
	struct vm *v = vm_find(t, zone, zl);
	if (!v)
		return;
	free(v->zone);
	free(v->json);
	size_t i = (size_t)(v - t->vms);
	memmove(&t->vms[i], &t->vms[i + 1], (t->n - i - 1) * sizeof *v);
	t->n--;
}

static void vm_clear(struct tool *t)
{
	for (size_t i = 0; i < t->n; i++) {
		free(t->vms[i].zone);
		free(t->vms[i].json);
	}
	t->n = 0;
}

static void collect_vm(void *arg, const char *z, size_t zl, const char *j, size_t jl)
{
	if (vm_put(arg, z, zl, j, jl) < 0) {
		fprintf(stderr, "ringtool: out of memory\n");
		exit(1);
	}
}

static int snapshot_current(struct ring_writer *w, void *arg)
{
	struct tool *t = arg;
	struct ring_snap_vm *s = calloc(t->n ? t->n : 1, sizeof *s);
	if (!s)
		return -ENOMEM;
	for (size_t i = 0; i < t->n; i++)
		s[i] = (struct ring_snap_vm){ t->vms[i].zone, strlen(t->vms[i].zone), t->vms[i].json, t->vms[i].jlen };
	int r = ring_writer_snapshot(w, s, t->n);
	free(s);
	return r;
}

/* ---- commands ---- */

static enum ring_ev_type ev_type_parse(const char *s, size_t n)
{
	if (n == 6 && memcmp(s, "create", 6) == 0)
		return RING_EV_CREATE;
	if (n == 6 && memcmp(s, "modify", 6) == 0)
		return RING_EV_MODIFY;
	if (n == 6 && memcmp(s, "delete", 6) == 0)
		return RING_EV_DELETE;
	return 0;
}

static const char *ev_type_name(enum ring_ev_type t)
{
	return t == RING_EV_CREATE ? "create" : t == RING_EV_MODIFY ? "modify" : t == RING_EV_DELETE ? "delete" : "?";
}

/* The extent of the top-level "vm" member's value in a JSON object line
 * (strings and nesting are skipped); false if there is none. */
static bool find_vm(const char *s, size_t n, size_t *ret_off, size_t *ret_len)
{
	int depth = 0;
	size_t vstart = 0;
	bool want_value = false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (c == '"') {
			size_t start = i;
			for (i++; i < n && s[i] != '"'; i++)
				if (s[i] == '\\')
					i++;
			if (depth == 1 && !want_value && i - start == 3 && memcmp(s + start, "\"vm", 3) == 0) {
				size_t k = i + 1;
				while (k < n && (s[k] == ' ' || s[k] == '\t'))
					k++;
				if (k < n && s[k] == ':') {
					for (k++; k < n && (s[k] == ' ' || s[k] == '\t'); k++)
						;
					if (k >= n || (s[k] != '{' && s[k] != '['))
						return false;
					vstart = k;
					want_value = true;
					i = k - 1;
				}
			}
			continue;
		}
		if (c == '{' || c == '[') {
			depth++;
		} else if (c == '}' || c == ']') {
			depth--;
			if (want_value && depth == 1) {
				*ret_off = vstart;
				*ret_len = i + 1 - vstart;
				return true;
			}
		}
	}
	return false;
}

/* Next space-separated word of *p (advanced past it and one space). */
static bool word(const char **p, const char *end, const char **ret, size_t *ret_len)
{
	const char *s = *p;
	if (s >= end)
		return false;
	const char *e = memchr(s, ' ', (size_t)(end - s));
	if (!e)
		e = end;
	*ret = s;
	*ret_len = (size_t)(e - s);
	*p = e < end ? e + 1 : end;
	return *ret_len > 0;
}

static int cmd_snapshot(struct tool *t, const char *arg, size_t n, const char **err)
{
	if (n == 0)
		return snapshot_current(t->w, t);
	char perr[160];
	json_t *a = js_parse(arg, n, perr, sizeof perr);
	if (!a || !json_is_array(a)) {
		json_decref(a);
		*err = "snapshot: want an array of {\"zonename\":..,\"vm\":{..}}";
		return -EINVAL;
	}
	vm_clear(t);
	size_t i;
	json_t *el;
	int r = 0;
	json_array_foreach(a, i, el) {
		json_t *z = json_object_get(el, "zonename"), *vm = json_object_get(el, "vm");
		if (!json_is_string(z) || !vm) {
			*err = "snapshot: each element needs \"zonename\" and \"vm\"";
			r = -EINVAL;
			break;
		}
		size_t jl;
		char *j = js_dumps(vm, &jl);
		if (!j) {
			r = -ENOMEM;
			break;
		}
		r = vm_put(t, json_string_value(z), json_string_length(z), j, jl);
		free(j);
		if (r < 0)
			break;
	}
	json_decref(a);
	return r < 0 ? r : snapshot_current(t->w, t);
}

static int append_event(struct tool *t, enum ring_ev_type type, const char *zone, size_t zl, const char *line,
			size_t ll, size_t vm_off, size_t vm_len)
{
	int r = ring_writer_event(t->w, type, zone, zl, line, ll, vm_off, vm_len);
	if (r < 0)
		return r;
	if (type == RING_EV_DELETE)
		vm_del(t, zone, zl);
	else if (vm_len)
		r = vm_put(t, zone, zl, line + vm_off, vm_len);
	return r;
}

static int cmd_vm(struct tool *t, const char *p, const char *end, const char **err)
{
	const char *ts, *zs;
	size_t tl, zl;
	enum ring_ev_type type;
	if (!word(&p, end, &ts, &tl) || !(type = ev_type_parse(ts, tl)) || !word(&p, end, &zs, &zl)) {
		*err = "usage: vm create|modify|delete ZONENAME [VM]";
		return -EINVAL;
	}
	json_t *vm = NULL;
	if (type != RING_EV_DELETE) {
		char perr[160];
		vm = js_parse(p, (size_t)(end - p), perr, sizeof perr);
		if (!json_is_object(vm)) {
			json_decref(vm);
			*err = "vm: want a VM object";
			return -EINVAL;
		}
	}
	struct buf b = BUF_INIT;
	char date[32];
	tu_iso_date(tu_wall_ms(), date);
	const char *uuid = "";
	if (vm && json_is_string(json_object_get(vm, "uuid")))
		uuid = json_string_value(json_object_get(vm, "uuid"));
	else if (!vm) {
		struct vm *old = vm_find(t, zs, zl);
		json_t *o = old ? js_parse(old->json, old->jlen, NULL, 0) : NULL;
		if (json_is_string(json_object_get(o, "uuid")))
			uuid = json_string_value(json_object_get(o, "uuid"));
		vm = o; /* only for its uuid; not written */
	}
	int r = 0;
	size_t vm_off = 0, vm_len = 0;
	r |= buf_printf(&b, "{\"type\":\"%s\",\"date\":\"%s\",\"zonename\":", ev_type_name(type), date);
	r |= js_dump_string(zs, zl, &b);
	r |= buf_adds(&b, ",\"uuid\":");
	r |= js_dump_string(uuid, strlen(uuid), &b);
	if (type != RING_EV_DELETE) {
		r |= buf_adds(&b, ",\"vm\":");
		vm_off = b.len;
		r |= js_dump(vm, &b);
		vm_len = b.len - vm_off;
	}
	if (type == RING_EV_MODIFY)
		r |= buf_adds(&b, ",\"changes\":[]");
	r |= buf_printf(&b, ",\"version\":%llu}\n", (unsigned long long)ring_writer_version(t->w) + 1);
	json_decref(vm);
	if (r)
		r = -ENOMEM;
	else
		r = append_event(t, type, zs, zl, b.data, b.len, vm_off, vm_len);
	buf_done(&b);
	return r;
}

static int cmd_event(struct tool *t, const char *p, const char *end, const char **err)
{
	const char *ts, *zs;
	size_t tl, zl;
	enum ring_ev_type type;
	if (!word(&p, end, &ts, &tl) || !(type = ev_type_parse(ts, tl)) || !word(&p, end, &zs, &zl) || p >= end) {
		*err = "usage: event create|modify|delete ZONENAME LINE";
		return -EINVAL;
	}
	struct buf b = BUF_INIT;
	if (buf_add(&b, p, (size_t)(end - p)) < 0 || buf_addc(&b, '\n') < 0) {
		buf_done(&b);
		return -ENOMEM;
	}
	size_t vm_off = 0, vm_len = 0;
	if (!find_vm(b.data, b.len, &vm_off, &vm_len))
		vm_off = vm_len = 0;
	int r = append_event(t, type, zs, zl, b.data, b.len, vm_off, vm_len);
	buf_done(&b);
	return r;
}

static int run_command(struct tool *t, const char *line, size_t n, const char **err)
{
	const char *end = line + n, *p = line, *c;
	size_t cl;
	if (!word(&p, end, &c, &cl)) {
		*err = "empty command";
		return -EINVAL;
	}
	if (cl == 8 && memcmp(c, "snapshot", 8) == 0)
		return cmd_snapshot(t, p, (size_t)(end - p), err);
	if (cl == 2 && memcmp(c, "vm", 2) == 0)
		return cmd_vm(t, p, end, err);
	if (cl == 5 && memcmp(c, "event", 5) == 0)
		return cmd_event(t, p, end, err);
	if (cl == 6 && memcmp(c, "status", 6) == 0)
		return ring_writer_status(t->w, p, (size_t)(end - p));
	if (cl == 9 && memcmp(c, "heartbeat", 9) == 0) {
		ring_writer_heartbeat(t->w, tu_mono_ns());
		return 0;
	}
	*err = "unknown command (snapshot, vm, event, status, heartbeat)";
	return -EINVAL;
}

static void print_open(struct ring_writer *w, bool kept, const char *why)
{
	printf("{\"ok\":true,\"epoch\":\"%s\",\"kept\":%s,\"why\":\"%s\",\"version\":%llu}\n", ring_writer_epoch(w),
	       kept ? "true" : "false", why, (unsigned long long)ring_writer_version(w));
	fflush(stdout);
}

static struct ring_writer *open_writer(const char *path, const char *size_arg, bool *kept, char *why, size_t whylen)
{
	struct ring_writer *w;
	int r = ring_writer_open(path, ring_size(path, size_arg), &w, kept, why, whylen);
	if (r < 0) {
		fprintf(stderr, "ringtool: cannot open %s as the ring writer: %s\n", path, strerror(-r));
		exit(1);
	}
	return w;
}

static int main_create(int argc, char **argv)
{
	if (argc < 1 || argc > 2)
		usage();
	bool kept;
	char why[64];
	struct ring_writer *w = open_writer(argv[0], argc > 1 ? argv[1] : NULL, &kept, why, sizeof why);
	if (!kept) {
		int r = ring_writer_snapshot(w, NULL, 0);
		if (r < 0) {
			fprintf(stderr, "ringtool: cannot write the first snapshot: %s\n", strerror(-r));
			return 1;
		}
	}
	print_open(w, kept, why);
	ring_writer_close(w);
	return 0;
}

static int main_publish(int argc, char **argv)
{
	struct tool t = { .doorbell_fd = -1 };
	if (argc >= 2 && strcmp(argv[0], "--doorbell") == 0) {
		t.doorbell_fd = atoi(argv[1]);
		argc -= 2;
		argv += 2;
	}
	if (argc < 1 || argc > 2)
		usage();
	bool kept;
	char why[64];
	t.w = open_writer(argv[0], argc > 1 ? argv[1] : NULL, &kept, why, sizeof why);
	if (kept) {
		int r = ring_writer_last_state(t.w, collect_vm, &t);
		if (r < 0 && r != -ENOENT) {
			fprintf(stderr, "ringtool: cannot load the last state: %s\n", strerror(-r));
			return 1;
		}
	}
	ring_writer_set_snapshot_cb(t.w, snapshot_current, &t);
	print_open(t.w, kept, why);

	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	while ((n = getline(&line, &cap, stdin)) >= 0) {
		while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
			line[--n] = '\0';
		if (n == 0 || line[0] == '#')
			continue;
		const char *err = NULL;
		int r = (size_t)n > MAX_LINE ? -E2BIG : run_command(&t, line, (size_t)n, &err);
		if (r < 0) {
			struct buf b = BUF_INIT;
			const char *msg = err ? err : strerror(-r);
			if (js_dump_string(msg, strlen(msg), &b) == 0)
				printf("{\"ok\":false,\"error\":%s,\"version\":%llu}\n", b.data,
				       (unsigned long long)ring_writer_version(t.w));
			buf_done(&b);
		} else {
			printf("{\"ok\":true,\"version\":%llu}\n", (unsigned long long)ring_writer_version(t.w));
			if (t.doorbell_fd >= 0 && (r = ring_doorbell_ring(t.doorbell_fd)) < 0)
				fprintf(stderr, "ringtool: doorbell: %s, ignoring\n", strerror(-r));
		}
		fflush(stdout);
	}
	free(line);
	vm_clear(&t);
	free(t.vms);
	ring_writer_close(t.w);
	return 0;
}

static int main_dump(int argc, char **argv)
{
	if (argc != 1)
		usage();
	struct ring_reader *r;
	int e = ring_reader_open(argv[0], &r);
	if (e < 0) {
		fprintf(stderr, "ringtool: cannot read %s: %s\n", argv[0], strerror(-e));
		return 1;
	}
	char epoch[RING_EPOCH_LEN + 1];
	(void)ring_reader_epoch(r, epoch);
	pid_t pid;
	uint64_t gen, hb;
	ring_reader_writer(r, &pid, &gen, &hb);
	struct ring_rec rec = RING_REC_INIT;
	struct buf b = BUF_INIT;
	/* The snapshot first, so the events listed cover what follows it. */
	int se = -EAGAIN;
	for (int i = 0; i < 100 && se == -EAGAIN; i++)
		se = ring_reader_snapshot(r, &rec);
	uint64_t head = ring_reader_head_version(r), oldest = ring_reader_oldest_version(r);
	printf("{\"kind\":\"header\",\"epoch\":\"%s\",\"head_version\":%llu,\"oldest_version\":%llu,"
	       "\"snapshot_version\":%lld,\"writer_pid\":%d,\"generation\":%llu,\"heartbeat_ns\":%llu,"
	       "\"replaced\":%s}\n",
	       epoch, (unsigned long long)head, (unsigned long long)oldest, se == 0 ? (long long)rec.version : -1LL,
	       (int)pid, (unsigned long long)gen, (unsigned long long)hb, ring_reader_replaced(r) ? "true" : "false");
	if (se == 0) {
		printf("{\"kind\":\"snapshot\",\"version\":%llu,\"vms\":[", (unsigned long long)rec.version);
		for (size_t i = 0; i < rec.nvms; i++) {
			buf_reset(&b);
			if (js_dump_string(rec.vms[i].zonename, rec.vms[i].zonename_len, &b) < 0)
				return 1;
			printf("%s{\"zonename\":%s,\"vm\":%.*s}", i ? "," : "", b.data, (int)rec.vms[i].json_len,
			       rec.vms[i].json);
		}
		printf("]}\n");
	}
	for (uint64_t v = oldest; v <= head; v++) {
		e = ring_reader_event(r, v, &rec);
		if (e == -ESTALE)
			continue; /* overwritten while we were printing */
		if (e < 0)
			break;
		buf_reset(&b);
		if (buf_printf(&b, "{\"kind\":\"event\",\"version\":%llu,\"type\":\"%s\",\"zonename\":",
			       (unsigned long long)v, ev_type_name(rec.ev_type)) < 0 ||
		    js_dump_string(rec.zonename, rec.zonename_len, &b) < 0 ||
		    buf_printf(&b, ",\"vm_off\":%zu,\"vm_len\":%zu,\"line\":", rec.vm_off, rec.vm_len) < 0 ||
		    js_dump_string(rec.line, rec.line_len, &b) < 0 || buf_adds(&b, "}\n") < 0)
			return 1;
		fwrite(b.data, 1, b.len, stdout);
	}
	e = ring_reader_status(r, &b);
	printf("{\"kind\":\"status\",\"status\":%s}\n", e == 0 && b.len ? b.data : "null");
	buf_done(&b);
	ring_rec_done(&rec);
	ring_reader_close(r);
	return fflush(stdout) == 0 ? 0 : 1;
}

static int main_status(int argc, char **argv)
{
	if (argc == 2) {
		bool kept;
		char why[64];
		struct ring_writer *w = open_writer(argv[0], NULL, &kept, why, sizeof why);
		int r = ring_writer_status(w, argv[1], strlen(argv[1]));
		ring_writer_close(w);
		if (r < 0) {
			fprintf(stderr, "ringtool: cannot write the status: %s\n", strerror(-r));
			return 1;
		}
		return 0;
	}
	if (argc != 1)
		usage();
	struct ring_reader *r;
	int e = ring_reader_open(argv[0], &r);
	if (e < 0) {
		fprintf(stderr, "ringtool: cannot read %s: %s\n", argv[0], strerror(-e));
		return 1;
	}
	struct buf b = BUF_INIT;
	e = ring_reader_status(r, &b);
	ring_reader_close(r);
	if (e < 0) {
		fprintf(stderr, "ringtool: cannot read the status: %s\n", strerror(-e));
		return 1;
	}
	printf("%s\n", b.len ? b.data : "");
	buf_done(&b);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		usage();
	const char *cmd = argv[1];
	if (strcmp(cmd, "create") == 0)
		return main_create(argc - 2, argv + 2);
	if (strcmp(cmd, "publish") == 0)
		return main_publish(argc - 2, argv + 2);
	if (strcmp(cmd, "dump") == 0)
		return main_dump(argc - 2, argv + 2);
	if (strcmp(cmd, "status") == 0)
		return main_status(argc - 2, argv + 2);
	usage();
}
