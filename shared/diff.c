/*
 * diff.c - the original's object diff (spec/daemon.md §8).
 *
 * Owns the comparison of two VM objects (or two raw caches) and the shape
 * of change entries; it does not decide what to do with them (refresh.c
 * and publish.c do).  The algorithm is reproduced with its quirks: arrays
 * are sets of serialisations, `null` against an object is an error, and
 * "sameness" of two containers is pointer identity, so equal-looking
 * containers are recursed into rather than skipped.
 *
 * The path of the value being compared is kept as a stack of segments
 * (a key, or NULL for "an array element") and turned into the entry's
 * `path` and `prettyPath` only when an entry is produced.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "diff.h"
#include "json.h"

/* The VM-object map: top-level array member → identifier key of its
 * elements (DESIGN.md §4: disks by path, nics by mac). */
static const struct {
	const char *member;
	const char *ident;
} diff_vm_map[] = {
	{ "disks", "path" },
	{ "nics", "mac" },
};

struct diff {
	json_t *out;          /* the result array */
	bool use_map;
	const char **segs;    /* path stack; NULL = array element */
	size_t depth, cap;
	char *err;
	size_t errlen;
};

/* The segments a container enumerates, in JavaScript order.  Arrays count
 * as objects whose keys are their indices; their key strings live in
 * `storage`. */
struct keys {
	const char **k;
	size_t n;
	char *storage;
};

static int diff_fail(struct diff *d, int ret, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int
diff_fail(struct diff *d, int ret, const char *fmt, ...)
{
	va_list ap;

	if (d->err != NULL && d->errlen > 0) {
		va_start(ap, fmt);
		(void)vsnprintf(d->err, d->errlen, fmt, ap);
		va_end(ap);
	}
	return ret;
}

static bool
is_container(const json_t *v)
{
	return v != NULL && (json_is_object(v) || json_is_array(v));
}

/* JavaScript `typeof v === "object"`: containers and null, not undefined. */
static bool
is_js_object(const json_t *v)
{
	if (v == NULL || js_is_undefined(v))
		return false;
	return is_container(v) || json_is_null(v);
}

/* Strict equality (===) of two values, also the "sameness" test: equal
 * primitives, or the very same container. */
static bool
strict_equal(const json_t *a, const json_t *b)
{
	if (a == b)
		return true;
	/* undefined is a JSON_NULL node: rule it out before json_is_null */
	if (js_is_undefined(a) || js_is_undefined(b))
		return false;
	if (json_is_string(a) && json_is_string(b))
		return json_string_length(a) == json_string_length(b) &&
		    memcmp(json_string_value(a), json_string_value(b),
		    json_string_length(a)) == 0;
	if (json_is_number(a) && json_is_number(b))
		return js_number_value(a) == js_number_value(b);
	if (json_is_boolean(a) && json_is_boolean(b))
		return json_is_true(a) == json_is_true(b);
	if (json_is_null(a) && json_is_null(b))
		return true;
	return false;
}

static const char *
type_name(const json_t *v)
{
	if (v == NULL || js_is_undefined(v))
		return "undefined";
	switch (json_typeof(v)) {
	case JSON_OBJECT: return "object";
	case JSON_ARRAY: return "array";
	case JSON_STRING: return "string";
	case JSON_INTEGER:
	case JSON_REAL: return "number";
	case JSON_TRUE:
	case JSON_FALSE: return "boolean";
	case JSON_NULL: return "null";
	}
	return "unknown";
}

/* Member `key` of a container; NULL when absent (undefined members are
 * present). */
static const json_t *
member(const json_t *c, const char *key)
{
	unsigned long idx;

	if (json_is_object(c))
		return json_object_get(c, key);
	if (json_is_array(c) && js_is_index_key(key)) {
		idx = strtoul(key, NULL, 10);
		if (idx < json_array_size(c))
			return json_array_get(c, idx);
	}
	return NULL;
}

static int
keys_init(struct keys *ks, const json_t *c)
{
	const char **k = NULL;
	long n;
	size_t i, size;

	memset(ks, 0, sizeof(*ks));
	if (json_is_object(c)) {
		n = js_object_keys(c, &k);
		if (n < 0)
			return (int)n;
		ks->k = k;
		ks->n = (size_t)n;
		return 0;
	}
	size = json_array_size(c);
	if (size == 0)
		return 0;
	ks->k = calloc(size, sizeof(*ks->k));
	ks->storage = malloc(size * 24);
	if (ks->k == NULL || ks->storage == NULL) {
		free(ks->k);
		free(ks->storage);
		return -ENOMEM;
	}
	for (i = 0; i < size; i++) {
		(void)snprintf(ks->storage + i * 24, 24, "%zu", i);
		ks->k[i] = ks->storage + i * 24;
	}
	ks->n = size;
	return 0;
}

static void
keys_done(struct keys *ks)
{
	free(ks->k);
	free(ks->storage);
	memset(ks, 0, sizeof(*ks));
}

static int
path_push(struct diff *d, const char *seg)
{
	const char **n;
	size_t cap;

	if (d->depth == d->cap) {
		cap = d->cap ? d->cap * 2 : 16;
		n = realloc(d->segs, cap * sizeof(*n));
		if (n == NULL)
			return -ENOMEM;
		d->segs = n;
		d->cap = cap;
	}
	d->segs[d->depth++] = seg;
	return 0;
}

/* Append one prettyPath segment; `start` is where this prettyPath began
 * in out (the "still empty" test is relative to it). */
static int
pretty_seg(struct buf *out, size_t start, const char *seg)
{
	const char *s = seg != NULL ? seg : "*";
	int ret = 0;

	if (strpbrk(s, ".[]") != NULL) {
		ret = buf_addc(out, '[');
		for (; ret == 0 && *s != '\0'; s++) {
			if (*s == '[' || *s == ']')
				ret = buf_addc(out, '\\');
			if (ret == 0)
				ret = buf_addc(out, *s);
		}
		return ret == 0 ? buf_addc(out, ']') : ret;
	}
	if (out->len > start)
		ret = buf_addc(out, '.');
	return ret == 0 ? buf_adds(out, s) : ret;
}

int
diff_pretty_path(const json_t *path, struct buf *out)
{
	size_t i, start = out->len;
	const json_t *seg;
	int ret;

	if (!json_is_array(path))
		return -EINVAL;
	json_array_foreach(path, i, seg) {
		if (json_is_string(seg))
			ret = pretty_seg(out, start, json_string_value(seg));
		else if (json_is_null(seg) && !js_is_undefined(seg))
			ret = pretty_seg(out, start, NULL);
		else
			return -EINVAL;
		if (ret < 0)
			return ret;
	}
	/* an empty path gives "": make sure the buffer holds a string */
	return buf_add(out, "", 0);
}

static int
current_pretty(const struct diff *d, struct buf *out)
{
	size_t i;
	int ret;

	for (i = 0; i < d->depth; i++)
		if ((ret = pretty_seg(out, 0, d->segs[i])) < 0)
			return ret;
	return buf_add(out, "", 0);
}

/* Append {prettyPath, path, action[, oldValue][, newValue]} for the
 * current path; NULL or undefined values are left out. */
static int
add_entry(struct diff *d, const char *action, const json_t *old_value,
    const json_t *new_value)
{
	struct buf pretty = BUF_INIT;
	json_t *e = NULL, *path = NULL, *seg;
	size_t i;

	if (current_pretty(d, &pretty) < 0 || (path = json_array()) == NULL)
		goto nomem;
	for (i = 0; i < d->depth; i++) {
		seg = d->segs[i] != NULL ? json_string(d->segs[i]) :
		    json_null();
		if (seg == NULL || json_array_append_new(path, seg) < 0)
			goto nomem;
	}
	e = json_pack("{s:s%,s:O,s:s}", "prettyPath", pretty.data, pretty.len,
	    "path", path, "action", action);
	if (e == NULL)
		goto nomem;
	if (old_value != NULL && !js_is_undefined(old_value) &&
	    json_object_set(e, "oldValue", (json_t *)old_value) < 0)
		goto nomem;
	if (new_value != NULL && !js_is_undefined(new_value) &&
	    json_object_set(e, "newValue", (json_t *)new_value) < 0)
		goto nomem;
	if (json_array_append_new(d->out, e) < 0) {
		e = NULL;   /* already released by jansson */
		goto nomem;
	}
	json_decref(path);
	buf_done(&pretty);
	return 0;
nomem:
	json_decref(e);
	json_decref(path);
	buf_done(&pretty);
	return diff_fail(d, -ENOMEM, "out of memory");
}

/*
 * A set of strings: open addressing over pointers into a serialisation
 * buffer, so the set tests of the array rule are O(n) overall.
 */
struct strset {
	const char **slots;
	size_t *lens;
	size_t mask;
};

static uint64_t
str_hash(const char *s, size_t n)
{
	uint64_t h = 1469598103934665603ULL;   /* FNV-1a */
	size_t i;

	for (i = 0; i < n; i++) {
		h ^= (unsigned char)s[i];
		h *= 1099511628211ULL;
	}
	return h;
}

static int
strset_init(struct strset *set, size_t n)
{
	size_t cap = 8;

	while (cap < n * 2)
		cap *= 2;
	set->slots = calloc(cap, sizeof(*set->slots));
	set->lens = calloc(cap, sizeof(*set->lens));
	set->mask = cap - 1;
	if (set->slots == NULL || set->lens == NULL) {
		free(set->slots);
		free(set->lens);
		return -ENOMEM;
	}
	return 0;
}

static void
strset_done(struct strset *set)
{
	free(set->slots);
	free(set->lens);
}

/* Find s; with add, insert it when absent.  True when it was present. */
static bool
strset_find(struct strset *set, const char *s, size_t n, bool add)
{
	size_t i = (size_t)str_hash(s, n) & set->mask;

	for (; set->slots[i] != NULL; i = (i + 1) & set->mask)
		if (set->lens[i] == n && memcmp(set->slots[i], s, n) == 0)
			return true;
	if (add) {
		set->slots[i] = s;
		set->lens[i] = n;
	}
	return false;
}

/* Compact serialisations of every element of an array, one buffer:
 * element i is data + off[i], off[i+1] - off[i] - 1 bytes (NUL after). */
struct serials {
	struct buf buf;
	size_t *off;
	size_t n;
};

static void serials_done(struct serials *s);

static int
serials_init(struct serials *s, const json_t *arr)
{
	const json_t *v;
	size_t i;
	int ret;

	s->buf = (struct buf)BUF_INIT;
	s->n = json_array_size(arr);
	s->off = calloc(s->n + 1, sizeof(*s->off));
	if (s->off == NULL)
		return -ENOMEM;
	json_array_foreach(arr, i, v) {
		s->off[i] = s->buf.len;
		ret = js_dump(v, &s->buf);
		/* undefined serialises to nothing; keep it distinct from "" */
		if (ret == 1)
			ret = buf_adds(&s->buf, "undefined");
		if (ret < 0 || buf_addc(&s->buf, '\0') < 0) {
			serials_done(s);
			return -ENOMEM;
		}
	}
	s->off[s->n] = s->buf.len;
	return 0;
}

static void
serials_done(struct serials *s)
{
	buf_done(&s->buf);
	free(s->off);
	s->off = NULL;
	s->n = 0;
}

static const char *
serial_at(const struct serials *s, size_t i, size_t *ret_len)
{
	*ret_len = s->off[i + 1] - s->off[i] - 1;
	return s->buf.data + s->off[i];
}

/* Indices of `from` whose serialisation is not in `other`'s. */
static int
missing_from(const struct serials *from, const struct serials *other,
    size_t *ret_idx, size_t *ret_n)
{
	struct strset set;
	const char *str;
	size_t i, len;

	if (strset_init(&set, other->n) < 0)
		return -ENOMEM;
	for (i = 0; i < other->n; i++) {
		str = serial_at(other, i, &len);
		(void)strset_find(&set, str, len, true);
	}
	*ret_n = 0;
	for (i = 0; i < from->n; i++) {
		str = serial_at(from, i, &len);
		if (!strset_find(&set, str, len, false))
			ret_idx[(*ret_n)++] = i;
	}
	strset_done(&set);
	return 0;
}

static int object_rule(struct diff *d, const json_t *a, const json_t *b);
static int array_rule(struct diff *d, const json_t *a, const json_t *b,
    const char *key);

/* The identifier key for an array found under member `key` at the current
 * depth (the array's own segment not pushed yet), or NULL. */
static const char *
map_ident(const struct diff *d, const char *key)
{
	size_t i;

	/* the array must be a direct member of the top-level object */
	if (!d->use_map || key == NULL || d->depth != 1)
		return NULL;
	for (i = 0; i < sizeof(diff_vm_map) / sizeof(diff_vm_map[0]); i++)
		if (strcmp(diff_vm_map[i].member, key) == 0)
			return diff_vm_map[i].ident;
	return NULL;
}

/* Where the original threw: the message, then ` at "<prettyPath>"`. */
static int diff_throw(struct diff *d, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int
diff_throw(struct diff *d, const char *fmt, ...)
{
	struct buf pretty = BUF_INIT;
	size_t n;
	va_list ap;

	if (d->err == NULL || d->errlen == 0)
		return -EINVAL;
	va_start(ap, fmt);
	(void)vsnprintf(d->err, d->errlen, fmt, ap);
	va_end(ap);
	n = strlen(d->err);
	if (current_pretty(d, &pretty) == 0)
		(void)snprintf(d->err + n, d->errlen - n, " at \"%s\"",
		    pretty.data);
	buf_done(&pretty);
	return -EINVAL;
}

/* Element ident lookup as `x[k]` in JavaScript: undefined (NULL) for a
 * primitive or a missing member; an error for null/undefined elements. */
static int
ident_of(struct diff *d, const json_t *elem, const char *k,
    const json_t **ret)
{
	*ret = NULL;
	if (js_is_undefined(elem) || json_is_null(elem))
		return diff_throw(d, "cannot read property \"%s\" of %s", k,
		    type_name(elem));
	if (is_container(elem))
		*ret = member(elem, k);
	return 0;
}

/* Array rule: sets of serialisations, optional pairing by identifier. */
static int
array_rule(struct diff *d, const json_t *a, const json_t *b, const char *key)
{
	struct serials sa = { BUF_INIT, NULL, 0 }, sb = { BUF_INIT, NULL, 0 };
	size_t *removed = NULL, *added = NULL, *pair_a = NULL, *pair_b = NULL;
	size_t nrem = 0, nadd = 0, npairs = 0, i, j, w, start;
	const char *idkey = map_ident(d, key);
	const json_t *ida, *idb;
	int ret;

	if ((ret = path_push(d, NULL)) < 0)
		return diff_fail(d, ret, "out of memory");
	ret = -ENOMEM;
	if (serials_init(&sa, a) < 0)
		goto nomem;
	if (serials_init(&sb, b) < 0)
		goto nomem;
	removed = calloc(sa.n + 1, sizeof(*removed));
	added = calloc(sb.n + 1, sizeof(*added));
	pair_a = calloc(sa.n + 1, sizeof(*pair_a));
	pair_b = calloc(sa.n + 1, sizeof(*pair_b));
	if (removed == NULL || added == NULL || pair_a == NULL ||
	    pair_b == NULL)
		goto nomem;
	if (missing_from(&sa, &sb, removed, &nrem) < 0 ||
	    missing_from(&sb, &sa, added, &nadd) < 0)
		goto nomem;

	if (idkey != NULL) {
		/* pair each removed element with the first unpaired added one
		 * carrying the same identifier; paired ones leave both lists */
		for (i = 0, w = 0; i < nrem; i++) {
			const json_t *ea = json_array_get(a, removed[i]);
			bool paired = false;

			if (!is_container(ea)) {
				ret = diff_throw(d, "element of mapped array "
				    "\"%s\" is %s, not an object", key,
				    type_name(ea));
				goto out;
			}
			ida = member(ea, idkey);
			for (j = 0; j < nadd && !paired; j++) {
				ret = ident_of(d, json_array_get(b, added[j]),
				    idkey, &idb);
				if (ret < 0)
					goto out;
				if (strict_equal(ida ? ida : js_undefined(),
				    idb ? idb : js_undefined())) {
					pair_a[npairs] = removed[i];
					pair_b[npairs++] = added[j];
					memmove(&added[j], &added[j + 1],
					    (nadd - j - 1) * sizeof(*added));
					nadd--;
					paired = true;
				}
			}
			if (!paired)
				removed[w++] = removed[i];
		}
		nrem = w;
	}

	for (i = 0; i < nrem; i++)
		if ((ret = add_entry(d, "removed",
		    json_array_get(a, removed[i]), NULL)) < 0)
			goto out;
	for (i = 0; i < npairs; i++) {
		const json_t *ea = json_array_get(a, pair_a[i]);
		const json_t *eb = json_array_get(b, pair_b[i]);
		const json_t *ident = member(ea, idkey);

		start = json_array_size(d->out);
		/* the pair is diffed without the map: map_ident() only
		 * matches at depth 1, and a pair is at depth 2 */
		ret = object_rule(d, ea, eb);
		if (ret < 0)
			goto out;
		if (ident == NULL || js_is_undefined(ident))
			continue;
		for (j = start; j < json_array_size(d->out); j++)
			if (json_object_set(json_array_get(d->out, j), "ident",
			    (json_t *)ident) < 0) {
				ret = diff_fail(d, -ENOMEM, "out of memory");
				goto out;
			}
	}
	for (i = 0; i < nadd; i++)
		if ((ret = add_entry(d, "added", NULL,
		    json_array_get(b, added[i]))) < 0)
			goto out;
	ret = 0;
	goto out;
nomem:
	ret = diff_fail(d, -ENOMEM, "out of memory");
out:
	serials_done(&sa);
	serials_done(&sb);
	free(removed);
	free(added);
	free(pair_a);
	free(pair_b);
	d->depth--;
	return ret;
}

/* Object rule: a's keys in order (removed / changed / recurse), then b's
 * keys absent from a (added). */
static int
object_rule(struct diff *d, const json_t *a, const json_t *b)
{
	struct keys ka, kb;
	const json_t *av, *bv;
	size_t i;
	int ret;

	if (!is_container(a) || !is_container(b))
		return diff_throw(d, "cannot diff %s against %s",
		    type_name(a), type_name(b));
	if (keys_init(&ka, a) < 0)
		return diff_fail(d, -ENOMEM, "out of memory");
	if (keys_init(&kb, b) < 0) {
		keys_done(&ka);
		return diff_fail(d, -ENOMEM, "out of memory");
	}
	for (i = 0; i < ka.n; i++) {
		if ((ret = path_push(d, ka.k[i])) < 0) {
			ret = diff_fail(d, ret, "out of memory");
			goto out;
		}
		av = member(a, ka.k[i]);
		bv = member(b, ka.k[i]);
		if (bv == NULL)
			ret = add_entry(d, "removed", av, NULL);
		else if (strict_equal(av, bv))
			ret = 0;
		else if (!is_js_object(av) || !is_js_object(bv))
			ret = add_entry(d, "changed", av, bv);
		else if (json_is_array(av) && json_is_array(bv))
			ret = array_rule(d, av, bv, ka.k[i]);
		else
			ret = object_rule(d, av, bv);
		d->depth--;
		if (ret < 0)
			goto out;
	}
	for (i = 0; i < kb.n; i++) {
		if (member(a, kb.k[i]) != NULL)
			continue;
		if ((ret = path_push(d, kb.k[i])) < 0) {
			ret = diff_fail(d, ret, "out of memory");
			goto out;
		}
		ret = add_entry(d, "added", NULL, member(b, kb.k[i]));
		d->depth--;
		if (ret < 0)
			goto out;
	}
	ret = 0;
out:
	keys_done(&ka);
	keys_done(&kb);
	return ret;
}

json_t *
diff_values(const json_t *a, const json_t *b, bool use_map, char *err,
    size_t errlen)
{
	struct diff d = { .use_map = use_map, .err = err, .errlen = errlen };
	int ret;

	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (a == NULL)
		a = js_undefined();
	if (b == NULL)
		b = js_undefined();
	if ((d.out = json_array()) == NULL) {
		(void)diff_fail(&d, -ENOMEM, "out of memory");
		return NULL;
	}
	if (strict_equal(a, b))
		return d.out;
	if (json_is_array(a) && json_is_array(b))
		ret = array_rule(&d, a, b, NULL);
	else
		ret = object_rule(&d, a, b);
	free(d.segs);
	if (ret < 0) {
		json_decref(d.out);
		return NULL;
	}
	return d.out;
}
