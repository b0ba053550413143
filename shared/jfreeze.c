/*
 * jfreeze.c - jansson trees frozen into compact byte strings (jfreeze.h).
 *
 * Encoding, one tag byte per value, then:
 *   NULL, TRUE, FALSE, UNDEF   nothing
 *   INT                        zigzag varint of the json_int_t
 *   REAL                       the 8 bytes of the double (host order:
 *                              frozen values never leave the process)
 *   REALINT                    zigzag varint: a real holding an integer
 *                              below 2^53 in magnitude, not -0 (most
 *                              numbers of a VM: sizes, counts, ids)
 *   STRING                     varint length, bytes
 *   ARRAY                      varint count, values
 *   OBJECT                     varint count, then per member in insertion
 *                              order: varint key length, key bytes, value
 */
#include "jfreeze.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

enum {
	T_NULL, T_TRUE, T_FALSE, T_UNDEF, T_INT, T_REAL, T_REALINT,
	T_STRING, T_ARRAY, T_OBJECT,
};

struct jfreeze {
	unsigned refs;
	size_t len;
	unsigned char bytes[];
};

/* ---- encoding ---- */

/* Two passes over the tree: one counts the bytes (out == NULL), one
 * writes them into an allocation of exactly that size. */
struct writer {
	unsigned char *out;
	size_t len;
};

static void
put(struct writer *w, const void *p, size_t n)
{
	if (w->out != NULL && n > 0)
		memcpy(w->out + w->len, p, n);
	w->len += n;
}

static void
put_tag(struct writer *w, int tag)
{
	unsigned char c = (unsigned char)tag;

	put(w, &c, 1);
}

static void
put_uvarint(struct writer *w, uint64_t u)
{
	unsigned char tmp[10];
	size_t n = 0;

	do {
		unsigned char c = u & 0x7f;

		u >>= 7;
		tmp[n++] = u != 0 ? (unsigned char)(c | 0x80) : c;
	} while (u != 0);
	put(w, tmp, n);
}

static void
put_svarint(struct writer *w, int64_t v)
{
	put_uvarint(w, ((uint64_t)v << 1) ^ (uint64_t)(v >> 63));
}

static void
put_bytes(struct writer *w, const char *s, size_t n)
{
	put_uvarint(w, n);
	put(w, s, n);
}

static void
encode(struct writer *w, const json_t *v)
{
	if (js_is_undefined(v)) {
		put_tag(w, T_UNDEF);
		return;
	}
	switch (json_typeof(v)) {
	case JSON_NULL:
		put_tag(w, T_NULL);
		break;
	case JSON_TRUE:
		put_tag(w, T_TRUE);
		break;
	case JSON_FALSE:
		put_tag(w, T_FALSE);
		break;
	case JSON_INTEGER:
		put_tag(w, T_INT);
		put_svarint(w, json_integer_value(v));
		break;
	case JSON_REAL: {
		double d = json_real_value(v);

		if (d == floor(d) && fabs(d) < 9007199254740992.0 && !(d == 0 && signbit(d))) {
			put_tag(w, T_REALINT);
			put_svarint(w, (int64_t)d);
		} else {
			put_tag(w, T_REAL);
			put(w, &d, sizeof(d));
		}
		break;
	}
	case JSON_STRING:
		put_tag(w, T_STRING);
		put_bytes(w, json_string_value(v), json_string_length(v));
		break;
	case JSON_ARRAY: {
		size_t n = json_array_size(v);

		put_tag(w, T_ARRAY);
		put_uvarint(w, n);
		for (size_t i = 0; i < n; i++)
			encode(w, json_array_get(v, i));
		break;
	}
	case JSON_OBJECT: {
		const char *key;
		size_t klen;
		json_t *m;

		put_tag(w, T_OBJECT);
		put_uvarint(w, json_object_size(v));
		/* The foreach macros take a non-const object; nothing is changed. */
		json_object_keylen_foreach((json_t *)v, key, klen, m) {
			put_bytes(w, key, klen);
			encode(w, m);
		}
		break;
	}
	}
}

struct jfreeze *
jfreeze_new(const json_t *v)
{
	struct writer w = { NULL, 0 };
	struct jfreeze *f;

	if (v == NULL)
		return NULL;
	encode(&w, v);
	f = malloc(sizeof(*f) + w.len);
	if (f == NULL)
		return NULL;
	f->refs = 1;
	f->len = w.len;
	w.out = f->bytes;
	w.len = 0;
	encode(&w, v);
	return f;
}

/* ---- decoding ---- */

struct reader {
	const unsigned char *p, *end;
};

static int
get_uvarint(struct reader *r, uint64_t *ret)
{
	uint64_t u = 0;

	for (unsigned shift = 0; shift < 64 && r->p < r->end; shift += 7) {
		unsigned char c = *r->p++;

		u |= (uint64_t)(c & 0x7f) << shift;
		if (!(c & 0x80)) {
			*ret = u;
			return 0;
		}
	}
	return -1;
}

static int
get_svarint(struct reader *r, int64_t *ret)
{
	uint64_t u;

	if (get_uvarint(r, &u) < 0)
		return -1;
	*ret = (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
	return 0;
}

static int
get_bytes(struct reader *r, const char **ret, size_t *ret_len)
{
	uint64_t n;

	if (get_uvarint(r, &n) < 0 || n > (uint64_t)(r->end - r->p))
		return -1;
	*ret = (const char *)r->p;
	*ret_len = (size_t)n;
	r->p += n;
	return 0;
}

static json_t *
decode(struct reader *r)
{
	int64_t iv;
	uint64_t n;
	const char *s;
	size_t slen;
	json_t *v;

	if (r->p >= r->end)
		return NULL;
	switch (*r->p++) {
	case T_NULL:
		return json_null();
	case T_TRUE:
		return json_true();
	case T_FALSE:
		return json_false();
	case T_UNDEF:
		return js_undefined();
	case T_INT:
		return get_svarint(r, &iv) < 0 ? NULL : json_integer((json_int_t)iv);
	case T_REALINT:
		return get_svarint(r, &iv) < 0 ? NULL : json_real((double)iv);
	case T_REAL: {
		double d;

		if (r->end - r->p < (ptrdiff_t)sizeof(d))
			return NULL;
		memcpy(&d, r->p, sizeof(d));
		r->p += sizeof(d);
		return json_real(d);
	}
	case T_STRING:
		return get_bytes(r, &s, &slen) < 0 ? NULL : json_stringn_nocheck(s, slen);
	case T_ARRAY:
		if (get_uvarint(r, &n) < 0 || n > (uint64_t)(r->end - r->p))
			return NULL;
		v = json_array();
		for (uint64_t i = 0; v != NULL && i < n; i++) {
			json_t *item = decode(r);

			if (item == NULL || json_array_append_new(v, item) < 0) {
				json_decref(v);
				v = NULL;
			}
		}
		return v;
	case T_OBJECT:
		if (get_uvarint(r, &n) < 0 || n > (uint64_t)(r->end - r->p))
			return NULL;
		v = json_object();
		for (uint64_t i = 0; v != NULL && i < n; i++) {
			json_t *item = NULL;

			if (get_bytes(r, &s, &slen) < 0 || (item = decode(r)) == NULL ||
			    json_object_setn_new_nocheck(v, s, slen, item) < 0) {
				json_decref(v);
				v = NULL;
			}
		}
		return v;
	default:
		return NULL;
	}
}

json_t *
jfreeze_thaw(const struct jfreeze *f)
{
	struct reader r;
	json_t *v;

	if (f == NULL)
		return NULL;
	r.p = f->bytes;
	r.end = f->bytes + f->len;
	v = decode(&r);
	if (v != NULL && r.p != r.end) {
		json_decref(v);
		v = NULL;
	}
	return v;
}

/* Step over one value; 0, or -1 when the bytes end early. */
static int
skip(struct reader *r)
{
	uint64_t n, u;
	const char *s;
	size_t slen;

	if (r->p >= r->end)
		return -1;
	switch (*r->p++) {
	case T_NULL:
	case T_TRUE:
	case T_FALSE:
	case T_UNDEF:
		return 0;
	case T_INT:
	case T_REALINT:
		return get_uvarint(r, &u);
	case T_REAL:
		if (r->end - r->p < (ptrdiff_t)sizeof(double))
			return -1;
		r->p += sizeof(double);
		return 0;
	case T_STRING:
		return get_bytes(r, &s, &slen);
	case T_ARRAY:
		if (get_uvarint(r, &n) < 0)
			return -1;
		for (uint64_t i = 0; i < n; i++)
			if (skip(r) < 0)
				return -1;
		return 0;
	case T_OBJECT:
		if (get_uvarint(r, &n) < 0)
			return -1;
		for (uint64_t i = 0; i < n; i++)
			if (get_bytes(r, &s, &slen) < 0 || skip(r) < 0)
				return -1;
		return 0;
	default:
		return -1;
	}
}

json_t *
jfreeze_member(const struct jfreeze *f, const char *key)
{
	struct reader r;
	uint64_t n;
	size_t klen = strlen(key);

	if (f == NULL || f->len == 0 || f->bytes[0] != T_OBJECT)
		return NULL;
	r.p = f->bytes + 1;
	r.end = f->bytes + f->len;
	if (get_uvarint(&r, &n) < 0)
		return NULL;
	for (uint64_t i = 0; i < n; i++) {
		const char *s;
		size_t slen;

		if (get_bytes(&r, &s, &slen) < 0)
			return NULL;
		if (slen == klen && memcmp(s, key, klen) == 0)
			return decode(&r);
		if (skip(&r) < 0)
			return NULL;
	}
	return NULL;
}

/* One member of a frozen object: its key and the bytes of its value. */
struct member {
	const char *key;
	size_t klen;
	const unsigned char *val, *val_end;
};

/* The members of the object `f` in a new array (*ret_n of them); NULL
 * with *ret_n = 0 when f is not an object, NULL on ENOMEM. */
static struct member *
members(const struct jfreeze *f, size_t *ret_n)
{
	struct reader r;
	uint64_t n;
	struct member *m;

	*ret_n = 0;
	if (f == NULL || f->len == 0 || f->bytes[0] != T_OBJECT)
		return NULL;
	r.p = f->bytes + 1;
	r.end = f->bytes + f->len;
	if (get_uvarint(&r, &n) < 0 || n > (uint64_t)(r.end - r.p))
		return NULL;
	m = malloc((n ? n : 1) * sizeof(*m));
	if (m == NULL)
		return NULL;
	for (uint64_t i = 0; i < n; i++) {
		if (get_bytes(&r, &m[i].key, &m[i].klen) < 0)
			goto bad;
		m[i].val = r.p;
		if (skip(&r) < 0)
			goto bad;
		m[i].val_end = r.p;
	}
	*ret_n = (size_t)n;
	return m;
bad:
	free(m);
	return NULL;
}

json_t *
jfreeze_thaw_reusing(const struct jfreeze *f, const struct jfreeze *like, json_t *like_tree)
{
	size_t nf, nl, hint = 0;
	struct member *mf, *ml;
	json_t *v;

	if (!json_is_object(like_tree))
		return jfreeze_thaw(f);
	mf = members(f, &nf);
	if (mf == NULL)
		return jfreeze_thaw(f);
	/* NULL (not an object, ENOMEM): nothing is reused, still correct. */
	ml = members(like, &nl);
	v = json_object();
	for (size_t i = 0; v != NULL && i < nf; i++) {
		json_t *item = NULL;
		size_t vlen = (size_t)(mf[i].val_end - mf[i].val);

		/* Members mostly come in the same order: try the next one
		 * first, then look through all. */
		for (size_t k = 0; k < nl && item == NULL; k++) {
			size_t j = (hint + k) % nl;

			if (ml[j].klen != mf[i].klen || memcmp(ml[j].key, mf[i].key, mf[i].klen) != 0)
				continue;
			if ((size_t)(ml[j].val_end - ml[j].val) == vlen &&
			    memcmp(ml[j].val, mf[i].val, vlen) == 0)
				item = json_incref(json_object_getn(like_tree, mf[i].key, mf[i].klen));
			hint = j + 1;
			break;
		}
		if (item == NULL) {
			struct reader r = { mf[i].val, mf[i].val_end };

			item = decode(&r);
		}
		if (item == NULL || json_object_setn_new_nocheck(v, mf[i].key, mf[i].klen, item) < 0) {
			json_decref(v);
			v = NULL;
		}
	}
	free(mf);
	free(ml);
	return v;
}

struct jfreeze *
jfreeze_ref(struct jfreeze *f)
{
	if (f != NULL)
		f->refs++;
	return f;
}

void
jfreeze_unref(struct jfreeze *f)
{
	if (f != NULL && --f->refs == 0)
		free(f);
}

bool
jfreeze_equal(const struct jfreeze *a, const struct jfreeze *b)
{
	if (a == b)
		return true;
	if (a == NULL || b == NULL)
		return false;
	return a->len == b->len && memcmp(a->bytes, b->bytes, a->len) == 0;
}

size_t
jfreeze_size(const struct jfreeze *f)
{
	return f != NULL ? f->len : 0;
}
