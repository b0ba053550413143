/*
 * vmload.h - a zone's raw sources and the VM object built from them
 * (spec/vmload.md §2, §4).
 *
 * Owns every read of the host tree under --root: the zone index, zone
 * XML, <zonepath>/config/{metadata,tags,routes}.json, <zonepath>/lastexited,
 * the five files' mtimes and tmp/.sysinfo.json.  The raw data of one zone
 * lives in a `struct vm_raw`, section by section, so that the daemon can
 * re-read only what a file event touched and rebuild the object.
 *
 * File access: every path (host paths such as /zones/<name>/lastexited)
 * is resolved under the root directory with openat2(RESOLVE_IN_ROOT |
 * RESOLVE_NO_MAGICLINKS): a symlink can never lead outside the root, an
 * absolute link resolves inside it.  Kernels without openat2 fall back to
 * open(root + path, O_NOFOLLOW) followed by a check that the opened fd's
 * real path (/proc/self/fd) is inside the root's real path.  Files are
 * opened O_RDONLY|O_NONBLOCK|O_CLOEXEC and fstat'ed: anything but a
 * regular file (FIFO, device, socket) is refused, logged and treated as
 * missing, so no read can block; a directory is a read error (EISDIR).
 * Files larger than VMLOAD_MAX_FILE_BYTES are a read error (EFBIG).
 *
 * Reads are synchronous; the daemon bounds them with its task timeout.
 */
#ifndef VMINFOD_VMLOAD_H
#define VMINFOD_VMLOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <jansson.h>

#include "zoneindex.h"

#define VMLOAD_MAX_FILE_BYTES (16u * 1024 * 1024)

/* The raw-cache sections of one zone (spec/daemon.md §3). */
enum vm_section {
	VMS_ZONEADM = 1 << 0,     /* the zone record (from the index) */
	VMS_XML = 1 << 1,         /* etc/zones/<zonename>.xml */
	VMS_LASTEXITED = 1 << 2,  /* <zonepath>/lastexited */
	VMS_LASTMOD = 1 << 3,     /* mtimes of the five files */
	VMS_JSON = 1 << 4,        /* the three config JSON files */
	VMS_ALL = (1 << 5) - 1,
};
#define VMS_COUNT 5

/* Root-confined file access; embed it in the program's context. */
struct vmload_ctx {
	char *root;          /* as given, e.g. "/" or "/tmp/host" */
	char *root_real;     /* realpath(root), for the fallback check */
	int root_fd;         /* O_PATH directory fd of root; -1 = closed */
	bool have_openat2;   /* probed once at init */
};

/* One zone's raw data; opaque. */
struct vm_raw;

/* Open `root`.  0 or -errno with err filled. */
int vmload_ctx_init(struct vmload_ctx *ctx, const char *root, char *err, size_t errlen);
/* Close it (fds closed, memory released). */
void vmload_ctx_done(struct vmload_ctx *ctx);

/* Read and parse etc/zones/index; bad lines are logged at warn (fields
 * lineno, line, reason) and skipped.  0, or -errno (index unreadable) with
 * err filled. */
int vmload_index(struct vmload_ctx *ctx, struct zoneindex *ret, char *err, size_t errlen);

/* Parse tmp/.sysinfo.json: new reference, or NULL with err filled
 * (missing file, read error or invalid JSON). */
json_t *vmload_sysinfo(struct vmload_ctx *ctx, char *err, size_t errlen);

/* Read a whole regular file under the root (`hostpath` absolute, e.g.
 * "/etc/zones/web1.xml").  The bytes (NUL-terminated, caller frees) in
 * *ret and their count in *ret_len.  0, -ENOENT (missing, or refused
 * because not a regular file), or another -errno. */
int vmload_read(struct vmload_ctx *ctx, const char *hostpath, char **ret, size_t *ret_len);
/* The same for a path outside any root (command-line arguments). */
int vmload_read_path(const char *path, char **ret, size_t *ret_len);

/* An empty raw record (no section loaded); NULL on ENOMEM. */
struct vm_raw *vm_raw_new(void);
/* An independent copy (reload into the copy, keep the original if the
 * reload fails); NULL on ENOMEM. */
struct vm_raw *vm_raw_dup(const struct vm_raw *raw);
void vm_raw_free(struct vm_raw *raw);
/* True when `a` and `b` certainly hold the same data: equal scalars and
 * equal parsed XML and JSON values (kept frozen, see jfreeze.h; a reload
 * of unchanged files reuses them, see vmload_zone).  False says nothing:
 * compare then. */
bool vm_raw_same(const struct vm_raw *a, const struct vm_raw *b);
/* Sections currently holding data (a bit set of enum vm_section). */
unsigned vm_raw_sections(const struct vm_raw *raw);
/* The error text of the last failed load of `section` (one bit), or NULL. */
const char *vm_raw_error(const struct vm_raw *raw, unsigned section);
/* The zonename the record was loaded for, or NULL. */
const char *vm_raw_zonename(const struct vm_raw *raw);

/*
 * (Re)load the listed sections of zone `rec` into `raw`.  Every listed
 * section is attempted; a section that fails is left empty and its error
 * kept (vm_raw_error).  Logs the §9 messages (unable to load XML, JSON
 * load failures, timestamps).  Returns 0, or the first failure as -errno
 * with err filled ("unable to load /etc/zones/x.xml: PARSE_ERROR: syntax
 * error").  Failures: the XML (missing: -ENOENT, unparsable: -EINVAL) and
 * a config JSON file that exists but cannot be read (unless the zone is
 * `incomplete`).  Missing or malformed lastexited and missing files are
 * not failures.  A reload of the XML or config JSON whose files hold the
 * same bytes as at the previous load into `raw` (same length and hash)
 * keeps the values parsed then; load into a vm_raw_dup of the live record
 * to benefit.
 */
int vmload_zone(struct vmload_ctx *ctx, const struct zone_record *rec,
	struct vm_raw *raw, unsigned sections, char *err, size_t errlen);

/* The VM object (spec/vmload.md §4) from `raw` and `sysinfo` (may be
 * NULL): a new reference, or NULL with err filled ("VM <uuid> XML data
 * missing from cache", "VM <zonename> not found in zoneadm", ENOMEM).
 * Logs the "requested, but not found" warnings. */
json_t *vmload_build(const struct vm_raw *raw, const json_t *sysinfo,
	char *err, size_t errlen);

/* Does `vm` (built by vmload_build) hold the values vmload_build would
 * take from `sysinfo` now?  With vm_raw_same inputs, a rebuild would then
 * give an equal object. */
bool vmload_sysinfo_current(const json_t *vm, const json_t *sysinfo);
/* The same test on a frozen VM object (jfreeze.h), without thawing it. */
struct jfreeze;
bool vmload_sysinfo_current_frozen(const struct jfreeze *vm, const json_t *sysinfo);

/* The zone's raw sections as JSON, for comparing two loads:
 * {"zoneadm_objects":{…},"zonexml_objects":{…},"last_exited":{…},
 *  "last_modified":"…","json_objects":{…}}, members present only for
 * sections holding data.  New reference, NULL on ENOMEM. */
json_t *vmload_raw_json(const struct vm_raw *raw);

/* The lastexited rules (spec/vmload.md §2.4) on file text: 0 with
 * *ret_status and the exit timestamp in milliseconds, or -EINVAL with err
 * filled ("wrong number of fields in [...]", "Invalid time value"). */
int vmload_parse_lastexited(const char *text, size_t len, int *ret_status,
	double *ret_ms, char *err, size_t errlen);

#endif
