/*
 * vmload.c - read a zone's sources under --root and build its VM object
 * (spec/vmload.md §2, §4; per-VM isolation of DESIGN.md §11).
 *
 * Owns root-confined file access (see vmload.h for the openat2 choice),
 * the raw sections of one zone and the build stage.  The XML stage itself
 * is vmxml.c; the index parser is zoneindex.c.  ZFS-derived keys and
 * runtime facts (spec/vmload.md §2.7, §5) are not produced.
 */
#include "vmload.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <limits.h>
#include <linux/openat2.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "jfreeze.h"
#include "json.h"
#include "log.h"
#include "timeutil.h"
#include "vmxml.h"

/* Length and hash of a file's bytes; missing = a missing file. */
struct file_sig {
	bool missing;
	size_t len;
	uint64_t hash;
};

struct vm_raw {
	unsigned sections;        /* sections holding data */
	char *name;               /* zonename of the last load */
	/* VMS_ZONEADM */
	char *zonename, *state, *zonepath, *uuid;
	/* VMS_XML: the XML stage's object, frozen (jfreeze.h): a VM's raw
	 * data lives as long as the VM, and as jansson trees it was most of
	 * the supervisor's memory */
	struct jfreeze *xml;
	struct vmxml_meta meta;
	/* VMS_LASTEXITED: has_exit false when the file is missing/malformed */
	bool has_exit;
	int exit_status;
	double exit_ms;
	/* VMS_LASTMOD: has_mtime false when no file counted */
	bool has_mtime;
	int64_t mtime_s;
	/* VMS_JSON: {"customer_metadata","internal_metadata","routes","tags"}
	 * frozen, NULL when the load failed for an `incomplete` zone */
	struct jfreeze *json;
	char *errors[VMS_COUNT];
	/* Signatures of the bytes the XML and JSON sections were parsed
	 * from: a reload that reads the same bytes reuses the parsed values
	 * instead of parsing again (parsing dominates a full refresh).
	 * Config JSON that was invalid is parsed (and warned about) again;
	 * the XML stage's warnings come when its bytes are parsed: at the
	 * first load and after each change. */
	bool xml_sig_ok, json_sig_ok;
	struct file_sig xml_sig, json_sig[3];
};

/* snprintf into a caller's error buffer; truncation is fine there. */
static void __attribute__((format(printf, 3, 4)))
errf(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (errlen == 0)
		return;
	va_start(ap, fmt);
	(void)vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* A 64-bit hash of the bytes, 8 at a time (multiply-xorshift mixing);
 * together with the length it tells a re-read file from a changed one. */
static uint64_t
bytes_hash(const char *p, size_t len)
{
	uint64_t h = 0x9e3779b97f4a7c15ULL ^ len;
	size_t i = 0;

	for (; i + 8 <= len; i += 8) {
		uint64_t w;

		memcpy(&w, p + i, 8);
		h = (h ^ w) * 0xff51afd7ed558ccdULL;
		h ^= h >> 32;
	}
	for (; i < len; i++)
		h = (h ^ (unsigned char)p[i]) * 0x100000001b3ULL;
	h ^= h >> 29;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 32;
	return h;
}

static struct file_sig
sig_of(const char *p, size_t len)
{
	struct file_sig sg = { false, len, bytes_hash(p, len) };

	return sg;
}

static bool
sig_eq(const struct file_sig *a, const struct file_sig *b)
{
	return a->missing == b->missing && a->len == b->len && a->hash == b->hash;
}

static const char *const json_files[] = { "metadata", "tags", "routes" };

/* The five files whose newest mtime is last_modified (spec/vmload.md §2.5). */
enum { F_METADATA, F_ROUTES, F_TAGS, F_LASTEXITED, F_XML, F_COUNT };
static const int json_file_slot[] = { F_METADATA, F_TAGS, F_ROUTES };

/* What one vmload_zone() call learned about a file while reading it, so
 * that the last-modified section does not open and stat it again (on a
 * 10,000-zone host that is 50,000 fewer opens). */
struct seen {
	enum { SEEN_NOTHING, SEEN_MISSING, SEEN_STAT } what;
	struct stat st;
};

/* ---- root-confined file access ---- */

static int
sys_openat2(int dirfd, const char *path, int flags)
{
	struct open_how how;

	memset(&how, 0, sizeof(how));
	how.flags = (uint64_t)flags;
	how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
	return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
}

int
vmload_ctx_init(struct vmload_ctx *ctx, const char *root, char *err, size_t errlen)
{
	int fd;

	memset(ctx, 0, sizeof(*ctx));
	ctx->root_fd = -1;
	ctx->root = strdup(root);
	ctx->root_real = realpath(root, NULL);
	if (ctx->root == NULL || ctx->root_real == NULL) {
		int e = ctx->root == NULL ? ENOMEM : errno;

		errf(err, errlen, "cannot resolve root %s: %s", root, strerror(e));
		vmload_ctx_done(ctx);
		return -e;
	}
	ctx->root_fd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (ctx->root_fd < 0) {
		int e = errno;

		errf(err, errlen, "cannot open root %s: %s", root, strerror(e));
		vmload_ctx_done(ctx);
		return -e;
	}
	fd = sys_openat2(ctx->root_fd, ".", O_PATH | O_CLOEXEC);
	if (fd >= 0) {
		ctx->have_openat2 = true;
		(void)close(fd);
	} else {
		log_debug(NULL, "openat2 unavailable (%s), confining paths by realpath check",
			strerror(errno));
	}
	return 0;
}

void
vmload_ctx_done(struct vmload_ctx *ctx)
{
	if (ctx->root_fd >= 0)
		(void)close(ctx->root_fd);
	ctx->root_fd = -1;
	free(ctx->root);
	free(ctx->root_real);
	ctx->root = NULL;
	ctx->root_real = NULL;
}

/* Is the opened fd's real path inside the root?  (fallback only) */
static bool
fd_inside_root(const struct vmload_ctx *ctx, int fd)
{
	char proc[64], real[PATH_MAX];
	ssize_t n;
	size_t rl = strlen(ctx->root_real);

	(void)snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	n = readlink(proc, real, sizeof(real) - 1);
	if (n < 0)
		return false;
	real[n] = '\0';
	if (strcmp(ctx->root_real, "/") == 0)
		return true;
	return strncmp(real, ctx->root_real, rl) == 0 && (real[rl] == '/' || real[rl] == '\0');
}

/* Open host path `hostpath` (absolute) under the root.  fd or -errno. */
static int
open_in_root(const struct vmload_ctx *ctx, const char *hostpath, int flags)
{
	char full[PATH_MAX];
	int fd;

	if (ctx->have_openat2) {
		/* EAGAIN: a concurrent rename raced the lookup; retry a little. */
		for (int i = 0; i < 4; i++) {
			fd = sys_openat2(ctx->root_fd, hostpath, flags);
			if (fd >= 0)
				return fd;
			if (errno != EAGAIN)
				break;
		}
		return -errno;
	}
	if ((size_t)snprintf(full, sizeof(full), "%s/%s", ctx->root, hostpath) >= sizeof(full))
		return -ENAMETOOLONG;
	fd = open(full, flags | O_NOFOLLOW);
	if (fd < 0)
		return errno == ELOOP ? -ENOENT : -errno;
	if (!fd_inside_root(ctx, fd)) {
		(void)close(fd);
		log_warn(json_pack("{s:s}", "path", hostpath),
			"refusing %s: resolves outside the root, treating as missing", hostpath);
		return -ENOENT;
	}
	return fd;
}

/* Read all of an opened fd (closed here).  `shown` names it in logs. */
static int
read_fd(int fd, const char *shown, char **ret, size_t *ret_len, struct seen *seen)
{
	struct stat st;
	char *data = NULL;
	size_t len = 0, cap;
	int rc;

	*ret = NULL;
	*ret_len = 0;
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		goto out;
	}
	if (seen != NULL) {
		seen->what = SEEN_STAT;
		seen->st = st;
	}
	if (S_ISDIR(st.st_mode)) {
		rc = -EISDIR;
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		/* A FIFO or device could block or have side effects. */
		log_warn(json_pack("{s:s}", "path", shown),
			"refusing %s: not a regular file, treating as missing", shown);
		rc = -ENOENT;
		goto out;
	}
	if ((uint64_t)st.st_size > VMLOAD_MAX_FILE_BYTES) {
		rc = -EFBIG;
		goto out;
	}
	cap = (size_t)st.st_size + 1;
	data = malloc(cap + 1);
	if (data == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	for (;;) {
		ssize_t n;

		if (len == cap) {
			/* The file grew since fstat. */
			char *nd;

			if (cap > VMLOAD_MAX_FILE_BYTES) {
				rc = -EFBIG;
				goto out;
			}
			cap *= 2;
			nd = realloc(data, cap + 1);
			if (nd == NULL) {
				rc = -ENOMEM;
				goto out;
			}
			data = nd;
		}
		n = read(fd, data + len, cap - len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			rc = -errno;
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	data[len] = '\0';
	*ret = data;
	*ret_len = len;
	data = NULL;
	rc = 0;
out:
	free(data);
	(void)close(fd);
	return rc;
}

#define READ_FLAGS (O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY)

static int
read_seen(struct vmload_ctx *ctx, const char *hostpath, char **ret, size_t *ret_len,
	struct seen *seen)
{
	int fd = open_in_root(ctx, hostpath, READ_FLAGS);

	*ret = NULL;
	*ret_len = 0;
	if (fd < 0) {
		if (seen != NULL && (fd == -ENOENT || fd == -ENOTDIR))
			seen->what = SEEN_MISSING;
		return fd;
	}
	return read_fd(fd, hostpath, ret, ret_len, seen);
}

int
vmload_read(struct vmload_ctx *ctx, const char *hostpath, char **ret, size_t *ret_len)
{
	return read_seen(ctx, hostpath, ret, ret_len, NULL);
}

int
vmload_read_path(const char *path, char **ret, size_t *ret_len)
{
	int fd = open(path, READ_FLAGS);

	*ret = NULL;
	*ret_len = 0;
	if (fd < 0)
		return -errno;
	return read_fd(fd, path, ret, ret_len, NULL);
}

/* The errno's symbolic name ("ENOENT"), or "READ_FILE". */
static const char *
errno_code(int e)
{
	const char *name = strerrorname_np(e);

	return name != NULL ? name : "READ_FILE";
}

/* ---- zone index and sysinfo ---- */

static void
index_skip(void *arg, unsigned lineno, const char *line, const char *reason)
{
	log_warn(json_pack("{s:i,s:s,s:s}", "lineno", (int)lineno, "line", line,
		"reason", reason),
		"skipping line %u of /etc/zones/index: %s", lineno, reason);
}

int
vmload_index(struct vmload_ctx *ctx, struct zoneindex *ret, char *err, size_t errlen)
{
	char *text;
	size_t len;
	int rc = vmload_read(ctx, "/etc/zones/index", &text, &len);

	if (rc < 0) {
		errf(err, errlen, "cannot read /etc/zones/index: %s", strerror(-rc));
		return rc;
	}
	rc = zoneindex_parse(text, len, ret, index_skip, NULL);
	free(text);
	if (rc < 0)
		errf(err, errlen, "cannot parse /etc/zones/index: %s", strerror(-rc));
	return rc;
}

json_t *
vmload_sysinfo(struct vmload_ctx *ctx, char *err, size_t errlen)
{
	char *text, perr[200];
	size_t len;
	json_t *v;
	int rc = vmload_read(ctx, "/tmp/.sysinfo.json", &text, &len);

	if (rc < 0) {
		errf(err, errlen, "cannot read /tmp/.sysinfo.json: %s", strerror(-rc));
		return NULL;
	}
	v = js_parse(text, len, perr, sizeof(perr));
	free(text);
	if (v == NULL)
		errf(err, errlen, "invalid JSON in /tmp/.sysinfo.json: %s", perr);
	return v;
}

/* ---- raw records ---- */

struct vm_raw *
vm_raw_new(void)
{
	return calloc(1, sizeof(struct vm_raw));
}

static void
clear_section(struct vm_raw *raw, unsigned bit)
{
	raw->sections &= ~bit;
	switch (bit) {
	case VMS_ZONEADM:
		free(raw->zonename);
		free(raw->state);
		free(raw->zonepath);
		free(raw->uuid);
		raw->zonename = raw->state = raw->zonepath = raw->uuid = NULL;
		break;
	case VMS_XML:
		jfreeze_unref(raw->xml);
		raw->xml = NULL;
		raw->xml_sig_ok = false;
		memset(&raw->meta, 0, sizeof(raw->meta));
		raw->meta.debugid = NAN;
		break;
	case VMS_LASTEXITED:
		raw->has_exit = false;
		break;
	case VMS_LASTMOD:
		raw->has_mtime = false;
		break;
	case VMS_JSON:
		jfreeze_unref(raw->json);
		raw->json = NULL;
		raw->json_sig_ok = false;
		break;
	default:
		break;
	}
}

static int
section_index(unsigned bit)
{
	return __builtin_ctz(bit);
}

void
vm_raw_free(struct vm_raw *raw)
{
	if (raw == NULL)
		return;
	for (unsigned bit = 1; bit <= VMS_JSON; bit <<= 1)
		clear_section(raw, bit);
	for (int i = 0; i < VMS_COUNT; i++)
		free(raw->errors[i]);
	free(raw->name);
	free(raw);
}

static char *
strdup_or_null(const char *s, bool *nomem)
{
	char *d;

	if (s == NULL)
		return NULL;
	d = strdup(s);
	if (d == NULL)
		*nomem = true;
	return d;
}

struct vm_raw *
vm_raw_dup(const struct vm_raw *raw)
{
	struct vm_raw *d = vm_raw_new();
	bool nomem = false;

	if (d == NULL)
		return NULL;
	*d = *raw;
	d->name = strdup_or_null(raw->name, &nomem);
	d->zonename = strdup_or_null(raw->zonename, &nomem);
	d->state = strdup_or_null(raw->state, &nomem);
	d->zonepath = strdup_or_null(raw->zonepath, &nomem);
	d->uuid = strdup_or_null(raw->uuid, &nomem);
	for (int i = 0; i < VMS_COUNT; i++)
		d->errors[i] = strdup_or_null(raw->errors[i], &nomem);
	/* XML and JSON sections are never modified in place: share them. */
	d->xml = jfreeze_ref(raw->xml);
	d->json = jfreeze_ref(raw->json);
	if (nomem) {
		vm_raw_free(d);
		return NULL;
	}
	return d;
}

static bool
str_same(const char *a, const char *b)
{
	return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

bool
vm_raw_same(const struct vm_raw *a, const struct vm_raw *b)
{
	if (a->sections != b->sections || !str_same(a->name, b->name) ||
	    !str_same(a->zonename, b->zonename) || !str_same(a->state, b->state) ||
	    !str_same(a->zonepath, b->zonepath) || !str_same(a->uuid, b->uuid) ||
	    !jfreeze_equal(a->xml, b->xml) || !jfreeze_equal(a->json, b->json) ||
	    memcmp(&a->meta, &b->meta, sizeof(a->meta)) != 0 ||
	    a->has_exit != b->has_exit || a->has_mtime != b->has_mtime)
		return false;
	if (a->has_exit && (a->exit_status != b->exit_status ||
	    memcmp(&a->exit_ms, &b->exit_ms, sizeof(a->exit_ms)) != 0))
		return false;
	if (a->has_mtime && a->mtime_s != b->mtime_s)
		return false;
	for (int i = 0; i < VMS_COUNT; i++)
		if (!str_same(a->errors[i], b->errors[i]))
			return false;
	return true;
}

unsigned
vm_raw_sections(const struct vm_raw *raw)
{
	return raw->sections;
}

const char *
vm_raw_error(const struct vm_raw *raw, unsigned section)
{
	if (section == 0 || section > VMS_JSON || (section & (section - 1)) != 0)
		return NULL;
	return raw->errors[section_index(section)];
}

const char *
vm_raw_zonename(const struct vm_raw *raw)
{
	return raw->name;
}

/* ---- section loaders ---- */

static int
load_zoneadm(struct vm_raw *raw, const struct zone_record *rec, char *err, size_t errlen)
{
	raw->zonename = strdup(rec->zonename);
	raw->state = strdup(rec->state);
	raw->zonepath = strdup(rec->zonepath);
	raw->uuid = strdup(rec->uuid);
	if (raw->zonename == NULL || raw->state == NULL || raw->zonepath == NULL ||
	    raw->uuid == NULL) {
		errf(err, errlen, "%s", strerror(ENOMEM));
		return -ENOMEM;
	}
	return 0;
}

/* What a section held before its reload, for reuse when the bytes read
 * are the same. */
struct previous {
	bool ok;
	struct jfreeze *value;       /* reference owned here */
	struct vmxml_meta meta;
	struct file_sig sig[3];
};

static int
load_xml(struct vmload_ctx *ctx, struct vm_raw *raw, const struct zone_record *rec,
	struct seen *seen, const struct previous *prev, char *err, size_t errlen)
{
	char path[PATH_MAX], *data;
	size_t len;
	struct vmxml_error xerr;
	json_t *xml;
	int rc;

	(void)snprintf(path, sizeof(path), "/etc/zones/%s.xml", rec->zonename);
	rc = read_seen(ctx, path, &data, &len, &seen[F_XML]);
	if (rc < 0) {
		const char *code = errno_code(-rc);

		/* A zone whose XML is not there yet is routine (DESIGN.md §11). */
		log_emit(rc == -ENOENT ? LOG_WARN : LOG_ERROR, NULL,
			log_err_fields(strerror(-rc), code), "unable to load %s", path);
		errf(err, errlen, "unable to load %s: %s: %s", path, code,
			strerror(-rc));
		return rc;
	}
	raw->xml_sig = sig_of(data, len);
	if (prev->ok && sig_eq(&prev->sig[0], &raw->xml_sig)) {
		free(data);
		raw->xml = jfreeze_ref(prev->value);
		raw->meta = prev->meta;
		raw->xml_sig_ok = true;
		return 0;
	}
	xml = vmxml_parse(data, len, path, &raw->meta, &xerr);
	free(data);
	if (xml == NULL) {
		log_error(log_err_fields(xerr.message, xerr.code), "unable to load %s", path);
		errf(err, errlen, "unable to load %s: %s: %s", path, xerr.code,
			xerr.message);
		return strcmp(xerr.code, "ENOMEM") == 0 ? -ENOMEM : -EINVAL;
	}
	raw->xml = jfreeze_new(xml);
	json_decref(xml);
	if (raw->xml == NULL) {
		errf(err, errlen, "unable to load %s: ENOMEM: %s", path, strerror(ENOMEM));
		return -ENOMEM;
	}
	raw->xml_sig_ok = true;
	return 0;
}

/* ES5 ToInt32. */
static int32_t
to_int32(double d)
{
	double m;

	if (!isfinite(d))
		return 0;
	m = fmod(trunc(d), 4294967296.0);
	if (m < 0)
		m += 4294967296.0;
	if (m >= 2147483648.0)
		m -= 4294967296.0;
	return (int32_t)m;
}

int
vmload_parse_lastexited(const char *text, size_t len, int *ret_status,
	double *ret_ms, char *err, size_t errlen)
{
	const char *s, *e, *p, *cut = NULL;
	size_t pieces = 1, cut_len = 0;
	char *first, *second;
	double n, ms;
	char iso[32];

	vmxml_js_trim(text, len, &s, &e);
	/* split(/\s/): every single whitespace character separates. */
	for (p = s; p < e;) {
		size_t w = vmxml_js_space_len(p, e);

		if (w == 0) {
			p++;
			continue;
		}
		if (pieces == 1) {
			cut = p;
			cut_len = w;
		}
		pieces++;
		p += w;
	}
	if (pieces != 2) {
		errf(err, errlen, "wrong number of fields in [%.*s]",
			(int)((e - s) > 200 ? 200 : (e - s)), s);
		return -EINVAL;
	}
	first = strndup(s, (size_t)(cut - s));
	second = strndup(cut + cut_len, (size_t)(e - cut - cut_len));
	if (first == NULL || second == NULL) {
		free(first);
		free(second);
		errf(err, errlen, "%s", strerror(ENOMEM));
		return -ENOMEM;
	}
	n = vmxml_js_number(second);
	if (n == -1) {
		*ret_status = 0;
	} else {
		int32_t v = to_int32(n);

		*ret_status = (v & 0xff) == 0 ? (v >> 8) : -(v & 0xff);
	}
	ms = vmxml_js_number(first) * 1000;
	free(first);
	free(second);
	/* new Date(ms): TimeClip, then the ISO string must be printable. */
	if (!isfinite(ms) || fabs(ms) > 8.64e15 || tu_iso_date((int64_t)trunc(ms), iso) < 0) {
		errf(err, errlen, "Invalid time value");
		return -EINVAL;
	}
	*ret_ms = trunc(ms);
	return 0;
}

static void
load_lastexited(struct vmload_ctx *ctx, struct vm_raw *raw, const struct zone_record *rec,
	struct seen *seen)
{
	char path[PATH_MAX], *text, perr[256];
	size_t len;
	int rc;

	if ((size_t)snprintf(path, sizeof(path), "%s/lastexited", rec->zonepath) >= sizeof(path))
		return;
	rc = read_seen(ctx, path, &text, &len, &seen[F_LASTEXITED]);
	if (rc == -ENOENT)
		return;
	if (rc < 0) {
		log_warn(log_err_fields(strerror(-rc), errno_code(-rc)),
			"cannot read %s, ignoring", path);
		return;
	}
	rc = vmload_parse_lastexited(text, len, &raw->exit_status, &raw->exit_ms,
		perr, sizeof(perr));
	free(text);
	if (rc < 0) {
		/* Upstream crashes on a bad timestamp; here the VM just has no
		 * exit keys.  The field-count case is silent upstream. */
		log_emit(strcmp(perr, "Invalid time value") == 0 ? LOG_WARN : LOG_DEBUG,
			NULL, log_err_fields(perr, NULL), "cannot parse %s, ignoring", path);
		return;
	}
	raw->has_exit = true;
	log_debug(json_pack("{s:s}", "filename", path), "found exit_status value: %d",
		raw->exit_status);
}

static void
load_lastmod(struct vmload_ctx *ctx, struct vm_raw *raw, const struct zone_record *rec,
	const struct seen *seen)
{
	char paths[F_COUNT][PATH_MAX];

	(void)snprintf(paths[F_METADATA], PATH_MAX, "%s/config/metadata.json", rec->zonepath);
	(void)snprintf(paths[F_ROUTES], PATH_MAX, "%s/config/routes.json", rec->zonepath);
	(void)snprintf(paths[F_TAGS], PATH_MAX, "%s/config/tags.json", rec->zonepath);
	(void)snprintf(paths[F_LASTEXITED], PATH_MAX, "%s/lastexited", rec->zonepath);
	(void)snprintf(paths[F_XML], PATH_MAX, "/etc/zones/%s.xml", rec->zonename);
	for (int i = 0; i < F_COUNT; i++) {
		struct stat st;
		int fd;

		if (seen[i].what == SEEN_MISSING)
			continue;
		if (seen[i].what == SEEN_STAT) {
			st = seen[i].st;
			goto have_stat;
		}
		fd = open_in_root(ctx, paths[i], O_PATH | O_CLOEXEC);

		if (fd == -ENOENT || fd == -ENOTDIR)
			continue;
		if (fd >= 0) {
			int src = fstat(fd, &st) < 0 ? -errno : 0;

			(void)close(fd);
			fd = src;
		}
		if (fd < 0) {
			log_error(log_err_fields(strerror(-fd), errno_code(-fd)),
				"Unable to get timestamp for \"%s\": %s", paths[i], strerror(-fd));
			continue;
		}
have_stat:
		if (!S_ISREG(st.st_mode))
			continue;
		if (!raw->has_mtime || st.st_mtim.tv_sec > raw->mtime_s) {
			raw->has_mtime = true;
			raw->mtime_s = st.st_mtim.tv_sec;
		}
	}
}

/* Read one config file: its bytes (NULL when missing) and signature. */
static int
read_json_text(struct vmload_ctx *ctx, const char *path, char **text, size_t *len,
	struct file_sig *sig, struct seen *seen)
{
	int rc = read_seen(ctx, path, text, len, seen);

	if (rc == -ENOENT) {
		log_debug(NULL, "Skipping nonexistent file %s", path);
		sig->missing = true;
		sig->len = 0;
		sig->hash = 0;
		return 0;
	}
	if (rc < 0)
		return rc;
	*sig = sig_of(*text, *len);
	return 0;
}

/* The parsed value of one config file's bytes; {} when missing or
 * invalid (*invalid set then). */
static int
parse_json_text(const char *path, const char *text, size_t len, json_t **ret, bool *invalid)
{
	char perr[200];

	if (text == NULL) {
		*ret = json_object();
		return *ret != NULL ? 0 : -ENOMEM;
	}
	/* js_parse replaces invalid UTF-8 itself, as Node decodes files. */
	*ret = js_parse(text, len, perr, sizeof(perr));
	if (*ret == NULL) {
		/* Upstream treats it as {} without a word; DESIGN.md §11 wants
		 * the operator told. */
		log_warn(json_pack("{s:s,s:s}", "path", path, "err", perr),
			"invalid JSON in %s, treating it as {}", path);
		*invalid = true;
		*ret = json_object();
		if (*ret == NULL)
			return -ENOMEM;
	}
	return 0;
}

/* metadata.json's member `key` if it has one, else {}.  Shared, not
 * copied: the section is frozen (copied) right after. */
static json_t *
metadata_member(const json_t *metadata, const char *key)
{
	json_t *v = json_is_object(metadata) ? json_object_get(metadata, key) : NULL;

	return v != NULL ? json_incref(v) : json_object();
}

static int
load_json(struct vmload_ctx *ctx, struct vm_raw *raw, const struct zone_record *rec,
	struct seen *seen, const struct previous *prev, char *err, size_t errlen)
{
	json_t *vals[3] = { NULL, NULL, NULL };
	char *texts[3] = { NULL, NULL, NULL };
	size_t lens[3] = { 0, 0, 0 };
	char paths[3][PATH_MAX];
	bool invalid = false, same = prev->ok;
	int rc = 0, failed = -1;

	for (int i = 0; i < 3; i++) {
		if ((size_t)snprintf(paths[i], sizeof(paths[i]), "%s/config/%s.json", rec->zonepath,
		    json_files[i]) >= sizeof(paths[i])) {
			rc = -ENAMETOOLONG;
		} else {
			rc = read_json_text(ctx, paths[i], &texts[i], &lens[i], &raw->json_sig[i],
				&seen[json_file_slot[i]]);
		}
		if (rc < 0) {
			failed = i;
			break;
		}
		same = same && sig_eq(&prev->sig[i], &raw->json_sig[i]);
	}
	if (rc == 0 && same) {
		for (int i = 0; i < 3; i++)
			free(texts[i]);
		raw->json = jfreeze_ref(prev->value);
		raw->json_sig_ok = true;
		return 0;
	}
	for (int i = 0; i < 3 && rc == 0; i++)
		rc = parse_json_text(paths[i], texts[i], lens[i], &vals[i], &invalid);
	for (int i = 0; i < 3; i++)
		free(texts[i]);
	if (rc < 0) {
		const char *path = failed >= 0 ? paths[failed] : paths[0];
		json_t *ef = log_err_fields(strerror(-rc), errno_code(-rc));

		if (failed < 0) {
			/* ENOMEM while parsing: name the first file */
			for (int i = 0; i < 3; i++)
				if (vals[i] == NULL) {
					path = paths[i];
					break;
				}
		}
		log_error(ef, "loadJsonConfig() failed to load %s", path);
		errf(err, errlen, "loadJsonConfig() failed to load %s: %s", path, strerror(-rc));
		for (int i = 0; i < 3; i++)
			json_decref(vals[i]);
		if (rc != -ENOMEM && strcmp(rec->state, "incomplete") == 0) {
			log_debug(log_err_fields(err, errno_code(-rc)),
				"zone is in state incomplete ignoring error loading JSON");
			err[0] = '\0';
			return 0;
		}
		return rc;
	}
	if (json_is_null(vals[0])) {
		log_warn(json_pack("{s:s}", "zonename", rec->zonename),
			"metadata.json of %s is null, using {} for its metadata", rec->zonename);
		invalid = true;
	}
	json_t *obj = json_object();

	if (obj == NULL ||
	    js_set(obj, "customer_metadata", metadata_member(vals[0], "customer_metadata")) < 0 ||
	    js_set(obj, "internal_metadata", metadata_member(vals[0], "internal_metadata")) < 0 ||
	    js_set(obj, "routes", json_incref(vals[2])) < 0 ||
	    js_set(obj, "tags", json_incref(vals[1])) < 0 ||
	    (raw->json = jfreeze_new(obj)) == NULL) {
		rc = -ENOMEM;
		errf(err, errlen, "%s", strerror(ENOMEM));
	}
	json_decref(obj);
	for (int i = 0; i < 3; i++)
		json_decref(vals[i]);
	raw->json_sig_ok = rc == 0 && !invalid;
	return rc;
}

int
vmload_zone(struct vmload_ctx *ctx, const struct zone_record *rec,
	struct vm_raw *raw, unsigned sections, char *err, size_t errlen)
{
	char serr[512];
	int first = 0;

	if (errlen > 0)
		err[0] = '\0';
	/* The index parser already rejects these; a name reaching a path must
	 * never contain a separator or be "." / "..". */
	if (!zoneindex_name_ok(rec->zonename) || strchr(rec->zonename, '/') != NULL ||
	    rec->zonepath[0] != '/') {
		errf(err, errlen, "unsafe zone record for %s", rec->zonename);
		return -EINVAL;
	}
	if (raw->name == NULL || strcmp(raw->name, rec->zonename) != 0) {
		char *n = strdup(rec->zonename);

		if (n == NULL) {
			errf(err, errlen, "%s", strerror(ENOMEM));
			return -ENOMEM;
		}
		free(raw->name);
		raw->name = n;
	}
	/* last-modified comes last: it reuses what the reads saw. */
	static const unsigned order[] = {
		VMS_ZONEADM, VMS_XML, VMS_LASTEXITED, VMS_JSON, VMS_LASTMOD,
	};
	struct seen seen[F_COUNT];

	memset(seen, 0, sizeof(seen));
	for (size_t k = 0; k < sizeof(order) / sizeof(order[0]); k++) {
		unsigned bit = order[k];
		int rc = 0, i = section_index(bit);

		if (!(sections & bit))
			continue;
		struct previous prev = { .ok = false };

		if (bit == VMS_XML && raw->xml_sig_ok && (raw->sections & VMS_XML)) {
			prev.ok = true;
			prev.value = jfreeze_ref(raw->xml);
			prev.meta = raw->meta;
			prev.sig[0] = raw->xml_sig;
		} else if (bit == VMS_JSON && raw->json_sig_ok && (raw->sections & VMS_JSON)) {
			prev.ok = true;
			prev.value = jfreeze_ref(raw->json);
			memcpy(prev.sig, raw->json_sig, sizeof(prev.sig));
		}
		clear_section(raw, bit);
		free(raw->errors[i]);
		raw->errors[i] = NULL;
		serr[0] = '\0';
		switch (bit) {
		case VMS_ZONEADM:
			rc = load_zoneadm(raw, rec, serr, sizeof(serr));
			break;
		case VMS_XML:
			rc = load_xml(ctx, raw, rec, seen, &prev, serr, sizeof(serr));
			break;
		case VMS_LASTEXITED:
			load_lastexited(ctx, raw, rec, seen);
			break;
		case VMS_LASTMOD:
			load_lastmod(ctx, raw, rec, seen);
			break;
		case VMS_JSON:
			rc = load_json(ctx, raw, rec, seen, &prev, serr, sizeof(serr));
			break;
		default:
			break;
		}
		jfreeze_unref(prev.value);
		if (rc < 0) {
			clear_section(raw, bit);
			raw->errors[i] = strdup(serr);
			if (first == 0) {
				first = rc;
				errf(err, errlen, "%s", serr);
			}
		} else {
			raw->sections |= bit;
		}
	}
	return first;
}

/* ---- build (spec/vmload.md §4) ---- */

static int
set_iso(json_t *obj, const char *key, double ms)
{
	char iso[32];

	if (tu_iso_date((int64_t)ms, iso) < 0)
		return js_set(obj, key, json_null());
	return js_set(obj, key, json_string(iso));
}

/* The VM keys taken from sysinfo members. */
static const char *const sysinfo_keys[][2] = {
	{ "UUID", "server_uuid" },
	{ "Datacenter Name", "datacenter_name" },
	{ "Live Image", "platform_buildstamp" },
	{ "Headnode ID", "headnode_id" },
};

bool
vmload_sysinfo_current(const json_t *vm, const json_t *sysinfo)
{
	for (size_t i = 0; i < sizeof(sysinfo_keys) / sizeof(sysinfo_keys[0]); i++) {
		json_t *want = json_is_object(sysinfo) ?
			json_object_get(sysinfo, sysinfo_keys[i][0]) : NULL;
		json_t *have = json_object_get(vm, sysinfo_keys[i][1]);

		if (want == NULL ? have != NULL : have == NULL || !json_equal(want, have))
			return false;
	}
	return true;
}

bool
vmload_sysinfo_current_frozen(const struct jfreeze *vm, const json_t *sysinfo)
{
	for (size_t i = 0; i < sizeof(sysinfo_keys) / sizeof(sysinfo_keys[0]); i++) {
		json_t *want = json_is_object(sysinfo) ?
			json_object_get(sysinfo, sysinfo_keys[i][0]) : NULL;
		/* NULL also on ENOMEM: then "not current", a rebuild decides. */
		json_t *have = jfreeze_member(vm, sysinfo_keys[i][1]);
		bool same = want == NULL ? have == NULL : have != NULL && json_equal(want, have);

		json_decref(have);
		if (!same)
			return false;
	}
	return true;
}

static int
set_from_sysinfo(json_t *vm, const json_t *sysinfo, const char *member, const char *key)
{
	json_t *v = json_is_object(sysinfo) ? json_object_get(sysinfo, member) : NULL;

	if (v == NULL)
		return 0;
	return js_set(vm, key, json_deep_copy(v));
}

json_t *
vmload_build(const struct vm_raw *raw, const json_t *sysinfo, char *err, size_t errlen)
{
	const char *uuid, *brand, *state;
	json_t *vm, *v;
	bool hvm, running;
	int rc = 0;

	if (!(raw->sections & VMS_ZONEADM)) {
		errf(err, errlen, "VM %s not found in zoneadm",
			raw->name != NULL ? raw->name : "?");
		return NULL;
	}
	uuid = raw->uuid;
	if (!(raw->sections & VMS_XML) || raw->xml == NULL) {
		errf(err, errlen, "VM %s XML data missing from cache", uuid);
		return NULL;
	}
	/* A new tree: a VM object shares nothing with the raw data, so
	 * nothing done to one can show in the other. */
	vm = jfreeze_thaw(raw->xml);
	if (vm == NULL)
		goto nomem;
	/* The record's brand is the XML root attribute on this port. */
	brand = json_string_value(json_object_get(vm, "brand"));
	if (brand == NULL || brand[0] == '\0' || raw->state[0] == '\0' ||
	    raw->zonename[0] == '\0' || raw->zonepath[0] == '\0') {
		json_decref(vm);
		errf(err, errlen, "VM %s zone record is missing brand, state, "
			"zonename or zonepath", uuid);
		return NULL;
	}
	hvm = strcmp(brand, "kvm") == 0 || strcmp(brand, "bhyve") == 0;
	running = strcmp(raw->state, "running") == 0;

	/* brand points into vm's own "brand" member: copy it first. */
	rc |= js_set(vm, "brand", json_string(brand));
	rc |= js_set(vm, "uuid", json_string(uuid));
	rc |= js_set(vm, "zone_state", json_string(raw->state));
	rc |= js_set(vm, "zonename", json_string(raw->zonename));
	rc |= js_set(vm, "zonepath", json_string(raw->zonepath));
	rc |= js_set(vm, "hvm", json_boolean(hvm));
	/* No runtime zone ids on this port (spec/vmload.md §2.1). */
	rc |= js_set(vm, "zoneid", json_null());
	rc |= js_set(vm, "zonedid", js_number(raw->meta.debugid));
	if (raw->has_mtime)
		rc |= set_iso(vm, "last_modified", (double)raw->mtime_s * 1000);
	else
		log_warn(NULL, "\"last_modified\" requested, but not found incache for VM %s", uuid);
	if (!running) {
		if (raw->has_exit) {
			rc |= js_set(vm, "exit_status", js_number(raw->exit_status));
			rc |= set_iso(vm, "exit_timestamp", raw->exit_ms);
		} else {
			log_warn(NULL, "\"exit_status\" requested, but not found incache for VM %s", uuid);
			log_warn(NULL, "\"exit_timestamp\" requested, but not found in cache for VM %s",
				uuid);
		}
	}
	if (json_object_get(vm, "resolvers") == NULL)
		rc |= js_set(vm, "resolvers", json_array());
	if (json_object_get(vm, "firewall_enabled") == NULL)
		rc |= js_set(vm, "firewall_enabled", json_false());
	for (size_t i = 0; i < sizeof(sysinfo_keys) / sizeof(sysinfo_keys[0]); i++)
		rc |= set_from_sysinfo(vm, sysinfo, sysinfo_keys[i][0], sysinfo_keys[i][1]);

	/* state: a transition's state wins, else derived from zone_state. */
	v = json_object_get(vm, "state");
	state = json_string_value(v);
	if (state == NULL)
		state = strcmp(raw->state, "installed") == 0 ? "stopped" : raw->state;
	if (strcmp(state, "stopped") == 0 && json_is_true(json_object_get(vm, "provisioning"))) {
		log_debug(NULL, "provisioning marker is set - converting stopped state to provisioning");
		state = "provisioning";
	}
	{
		const char *failed = json_string_value(json_object_get(vm, "failed"));

		if (failed != NULL && failed[0] != '\0')
			state = "failed";
	}
	rc |= js_set(vm, "state", json_string(state));

	if ((raw->sections & VMS_JSON) && raw->json != NULL) {
		static const char *const keys[] = {
			"customer_metadata", "internal_metadata", "routes", "tags",
		};
		json_t *js = jfreeze_thaw(raw->json);

		if (js == NULL)
			goto nomem;
		/* js is this build's own tree: its members move into vm. */
		for (size_t i = 0; i < 4; i++)
			rc |= js_set(vm, keys[i], json_incref(json_object_get(js, keys[i])));
		json_decref(js);
	}
	if (rc != 0)
		goto nomem;
	return vm;
nomem:
	json_decref(vm);
	errf(err, errlen, "VM %s: %s", uuid, strerror(ENOMEM));
	return NULL;
}

json_t *
vmload_raw_json(const struct vm_raw *raw)
{
	json_t *o = json_object();
	json_t *xml = jfreeze_thaw(raw->xml);
	int rc = 0;

	if (o == NULL || (raw->xml != NULL && xml == NULL)) {
		json_decref(o);
		json_decref(xml);
		return NULL;
	}
	if (raw->sections & VMS_ZONEADM) {
		json_t *z = json_object();
		const char *brand = xml != NULL ?
			json_string_value(json_object_get(xml, "brand")) : NULL;

		if (z == NULL) {
			json_decref(o);
			json_decref(xml);
			return NULL;
		}
		rc |= js_set(z, "zoneid", json_null());
		rc |= js_set(z, "zonename", json_string(raw->zonename));
		rc |= js_set(z, "state", json_string(raw->state));
		rc |= js_set(z, "zonepath", json_string(raw->zonepath));
		rc |= js_set(z, "uuid", json_string(raw->uuid));
		if (brand != NULL)
			rc |= js_set(z, "brand", json_string(brand));
		if (raw->meta.ip_type[0] != '\0')
			rc |= js_set(z, "ip_type", json_string(raw->meta.ip_type));
		rc |= js_set(z, "zonedid", js_number(raw->meta.debugid));
		rc |= js_set(o, "zoneadm_objects", z);
	}
	if ((raw->sections & VMS_XML) && xml != NULL)
		rc |= js_set(o, "zonexml_objects", json_incref(xml));
	json_decref(xml);
	if ((raw->sections & VMS_LASTEXITED) && raw->has_exit) {
		json_t *le = json_object();

		if (le != NULL) {
			rc |= js_set(le, "exit_status", js_number(raw->exit_status));
			rc |= set_iso(le, "exit_timestamp", raw->exit_ms);
		}
		rc |= js_set(o, "last_exited", le);
	}
	if ((raw->sections & VMS_LASTMOD) && raw->has_mtime) {
		char iso[32];

		if (tu_iso_date(raw->mtime_s * 1000, iso) >= 0)
			rc |= js_set(o, "last_modified", json_string(iso));
	}
	if ((raw->sections & VMS_JSON) && raw->json != NULL) {
		json_t *js = jfreeze_thaw(raw->json);

		rc |= js != NULL ? js_set(o, "json_objects", js) : -1;
	}
	if (rc != 0) {
		json_decref(o);
		return NULL;
	}
	return o;
}
