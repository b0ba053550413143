/*
 * reqpath.h - request target parsing the way the original's router sees
 * it (spec/http-api.md §2): fragment and query split off, the few
 * characters Node's URL parser escapes escaped, the path normalised
 * POSIX-style (trailing slash kept) and cut into segments.  The path is
 * never percent-decoded; query values are (Node's querystring).
 *
 * Pure functions, no allocation: the caller provides the output space.
 */
#ifndef VMINFOD_FE_REQPATH_H
#define VMINFOD_FE_REQPATH_H

#include <stdbool.h>
#include <stddef.h>

struct reqpath_seg {
	const char *p;   /* points into the caller's work buffer */
	size_t len;
	bool present;    /* false when the path has fewer segments */
};

struct reqpath {
	struct reqpath_seg seg[2];   /* seg[0] dispatches; seg[1] is the zonename for /vms */
	const char *query;           /* after '?' (points into the target), or NULL */
	size_t query_len;
};

/* Room reqpath_parse() needs in `work` for a target of `len` bytes. */
static inline size_t reqpath_work_size(size_t len)
{
	return 6 * len + 4 + sizeof(size_t) + (len + 1) * sizeof(size_t);
}

/* Parse the request target [target, target+len) into *ret, using `work`
 * (at least reqpath_work_size(len) bytes) for the escaped and normalised
 * path.  Returns 0, or -ENOBUFS if work is too small. */
int reqpath_parse(const char *target, size_t len, char *work, size_t worklen, struct reqpath *ret);

/* Look `key` up in the query string: returns how many times it occurs;
 * the first occurrence's value, percent- and '+'-decoded, is written to
 * val (truncated to valcap-1 bytes, NUL-terminated) with its full decoded
 * length in *ret_vlen.  val may be NULL when only the count matters. */
size_t reqpath_query(const char *query, size_t qlen, const char *key,
		     char *val, size_t valcap, size_t *ret_vlen);

/* Decode a query component as Node's querystring does ('+' is a space,
 * %XX a byte, a bad escape stays as is): at most cap bytes into out (no
 * NUL added; out may be NULL); returns the full decoded length. */
size_t reqpath_decode(const char *s, size_t n, char *out, size_t cap);

/* The /status "full" rule: on when the key is repeated or has a non-empty
 * value. */
bool reqpath_query_flag(const char *query, size_t qlen, const char *key);

#endif
