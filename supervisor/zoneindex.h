/*
 * zoneindex.h - the zone list: <root>/etc/zones/index.
 *
 *   # comment
 *   global:installed:/
 *   web1:running:/zones/web1:4f3c0f6e-4e3b-11e9-8d8c-3f8f4b6b7b5a
 *
 * One zone per line, `zonename:state:zonepath:uuid`; the state column
 * carries the live zone state on this port.  This module only parses text
 * and compares two parsed indexes; reading the file is vmload's job (it
 * owns the root-confined file access).  A zone name is validated here
 * before anything can turn it into a path: letters, digits, `-_.`, at most
 * 64 bytes, no leading dot.  Lines that fail are reported to the caller
 * (a callback) and skipped; the `global` line is skipped silently.
 */
#ifndef VMINFOD_ZONEINDEX_H
#define VMINFOD_ZONEINDEX_H

#include <stdbool.h>
#include <stddef.h>

#define ZONEINDEX_NAME_MAX 64

/* One zone line.  Strings are owned by the index. */
struct zone_record {
	char *zonename;
	char *state;
	char *zonepath;   /* host path, e.g. /zones/<name>; resolved under --root */
	char *uuid;       /* 36 characters */
	unsigned lineno;  /* 1-based line number in the index */
};

/* Records in line order. */
struct zoneindex {
	struct zone_record *recs;
	size_t n;
	size_t cap;
};

#define ZONEINDEX_INIT { NULL, 0, 0 }

/* Called once per rejected line: 1-based number, the line text (without
 * its newline, NUL-terminated) and a short reason ("unsafe zonename"). */
typedef void (*zoneindex_skip_fn)(void *arg, unsigned lineno,
	const char *line, const char *reason);

enum zone_change_kind {
	ZONE_APPEARED,
	ZONE_DISAPPEARED,
	ZONE_CHANGED,      /* state, zonepath or uuid differ */
};

/* One per-zonename difference between two indexes. */
struct zone_change {
	const char *zonename;  /* points into the old or new index */
	const char *newstate;  /* new state; "" when the zone disappeared */
	enum zone_change_kind kind;
};

/* Parse index text (need not be NUL-terminated) into `ret` (initialised
 * with ZONEINDEX_INIT; replaced entirely).  Bad lines go to `skip` (may be
 * NULL).  A later line with the zonename or uuid of an earlier record
 * replaces that record in place.  0 or -ENOMEM (ret then empty). */
int zoneindex_parse(const char *text, size_t len, struct zoneindex *ret,
	zoneindex_skip_fn skip, void *skip_arg);
/* Release the records; leaves an empty index. */
void zoneindex_done(struct zoneindex *idx);
/* True when `name` is a zonename that is safe to put into a path. */
bool zoneindex_name_ok(const char *name);
/* True when `s` looks like a UUID (8-4-4-4-12 hex digits). */
bool zoneindex_is_uuid(const char *s);
/* The record of `zonename`, or NULL.  Linear; for repeated lookups build
 * your own map. */
const struct zone_record *zoneindex_find(const struct zoneindex *idx,
	const char *zonename);
/* Per-zonename differences old -> new: appeared and changed zones in new
 * line order, then disappeared zones in old line order.  *ret_changes is a
 * malloc'd array (caller frees; the strings point into the indexes, so keep
 * both alive while using it), *ret_n its length.  0 or -ENOMEM. */
int zoneindex_diff(const struct zoneindex *old, const struct zoneindex *new_,
	struct zone_change **ret_changes, size_t *ret_n);

#endif
