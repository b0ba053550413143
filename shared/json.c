/*
 * json.c - JavaScript-compatible JSON over jansson.  See json.h for the
 * rules; spec/daemon.md §10.3 is the contract.
 *
 * jansson is the tree and the parser; the serialiser is ours because the
 * original's bytes differ from jansson's in number formatting (shortest
 * round-trip digits), control-character escapes (lowercase hex) and key
 * order (array-index keys first).
 */
#include "json.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * The "undefined" node.  jansson treats a refcount of (size_t)-1 as
 * "static, never counted or freed" (that is how json_null() works), so
 * this node is never written to after initialisation: it is mutable only
 * in the C type system because jansson's API takes non-const pointers.
 * json_deep_copy() returns null-typed nodes as they are, keeping identity.
 */
static json_t js_undefined_node = { JSON_NULL, (size_t)-1 };

json_t *js_undefined(void)
{
	return &js_undefined_node;
}

bool js_is_undefined(const json_t *v)
{
	return v == &js_undefined_node;
}

json_t *js_number(double d)
{
	if (!isfinite(d))
		return json_null();
	if (d == 0)
		d = 0; /* -0 prints as 0 and compares equal anyway */
	return json_real(d);
}

double js_number_value(const json_t *v)
{
	if (json_is_real(v))
		return json_real_value(v);
	if (json_is_integer(v))
		return (double)json_integer_value(v);
	return NAN;
}

int js_set(json_t *obj, const char *key, json_t *value)
{
	if (!value)
		return -ENOMEM;
	/* jansson replaces an existing pair's value in place, so the key
	 * keeps its position, as a JavaScript assignment does. */
	return json_object_set_new(obj, key, value) == 0 ? 0 : -ENOMEM;
}

bool js_is_index_key(const char *key)
{
	if (key[0] == '0')
		return key[1] == '\0';
	uint64_t v = 0;
	size_t i;
	for (i = 0; key[i]; i++) {
		if (key[i] < '0' || key[i] > '9' || i >= 10)
			return false;
		v = v * 10 + (uint64_t)(key[i] - '0');
	}
	return i > 0 && v <= 4294967294ULL;
}

static uint64_t index_value(const char *key)
{
	return strtoull(key, NULL, 10);
}

static int cmp_index_keys(const void *a, const void *b)
{
	uint64_t x = index_value(*(const char *const *)a);
	uint64_t y = index_value(*(const char *const *)b);
	return x < y ? -1 : x > y;
}

static bool has_index_key(const json_t *obj)
{
	const char *key;
	json_t *v;
	json_object_foreach((json_t *)obj, key, v) {
		if (js_is_index_key(key))
			return true;
	}
	return false;
}

long js_object_keys(const json_t *obj, const char ***ret_keys)
{
	size_t n = json_object_size(obj);
	const char **keys = malloc((n ? n : 1) * sizeof(*keys));
	if (!keys)
		return -ENOMEM;
	size_t ni = 0, i = 0;
	const char *key;
	json_t *v;
	json_object_foreach((json_t *)obj, key, v) {
		if (js_is_index_key(key))
			keys[ni++] = key;
	}
	if (ni > 1)
		qsort(keys, ni, sizeof(*keys), cmp_index_keys);
	i = ni;
	json_object_foreach((json_t *)obj, key, v) {
		if (!js_is_index_key(key))
			keys[i++] = key;
	}
	*ret_keys = keys;
	return (long)i;
}

/* ---- numbers ---- */

/* Shortest decimal digits that read back as d (d finite, > 0): digits in
 * `digits` (no dot, NUL-terminated), *ret_exp10 such that
 * d = 0.DIGITS × 10^(*ret_exp10) (JavaScript's n). */
static void shortest_digits(double d, char *digits, int *ret_n)
{
	char tmp[40];
	for (int prec = 1; prec <= 17; prec++) {
		snprintf(tmp, sizeof(tmp), "%.*e", prec - 1, d);
		if (strtod(tmp, NULL) == d || prec == 17)
			break;
	}
	/* tmp is "D.DDDDe±XX" or "De±XX" */
	size_t k = 0;
	const char *p = tmp;
	for (; *p && *p != 'e'; p++)
		if (*p != '.')
			digits[k++] = *p;
	/* strip trailing zeros of the mantissa (they are not significant) */
	while (k > 1 && digits[k - 1] == '0')
		k--;
	digits[k] = '\0';
	int e = atoi(p + 1);
	*ret_n = e + 1;
}

int js_format_number(double d, char *out)
{
	if (isnan(d))
		return sprintf(out, "NaN");
	if (isinf(d))
		return sprintf(out, d < 0 ? "-Infinity" : "Infinity");
	if (d == 0)
		return sprintf(out, "0");
	/* Fast path: integers below 2^53 print as their digits. */
	if (fabs(d) < 9007199254740992.0 && d == (double)(long long)d)
		return sprintf(out, "%lld", (long long)d);
	char *o = out;
	if (d < 0) {
		*o++ = '-';
		d = -d;
	}
	char digits[24];
	int n;
	shortest_digits(d, digits, &n);
	int k = (int)strlen(digits);
	if (k <= n && n <= 21) {
		memcpy(o, digits, (size_t)k);
		o += k;
		for (int i = 0; i < n - k; i++)
			*o++ = '0';
	} else if (0 < n && n <= 21) {
		memcpy(o, digits, (size_t)n);
		o += n;
		*o++ = '.';
		memcpy(o, digits + n, (size_t)(k - n));
		o += k - n;
	} else if (-6 < n && n <= 0) {
		*o++ = '0';
		*o++ = '.';
		for (int i = 0; i < -n; i++)
			*o++ = '0';
		memcpy(o, digits, (size_t)k);
		o += k;
	} else {
		*o++ = digits[0];
		if (k > 1) {
			*o++ = '.';
			memcpy(o, digits + 1, (size_t)(k - 1));
			o += k - 1;
		}
		o += sprintf(o, "e%c%d", n - 1 >= 0 ? '+' : '-', abs(n - 1));
	}
	*o = '\0';
	return (int)(o - out);
}

int js_tofixed2(double x, char *out, size_t outlen)
{
	if (!isfinite(x) || fabs(x) >= 1e21) {
		char tmp[32];
		js_format_number(x, tmp);
		return snprintf(out, outlen, "%s", tmp);
	}
	double ax = fabs(x);
	double x8 = ax * 8; /* exact: multiplying by a power of two */
	if (x8 == floor(x8) && fmod(x8, 2) == 1 && ax < 1e15) {
		/* Exact tie (fraction .125/.375/.625/.875): toFixed picks the
		 * larger n; glibc would round to even.  ax*100 is exact here. */
		double n = floor(ax * 100) + 1;
		unsigned long long nn = (unsigned long long)n;
		return snprintf(out, outlen, "%s%llu.%02llu", x < 0 ? "-" : "",
		                nn / 100, nn % 100);
	}
	int len = snprintf(out, outlen, "%.2f", ax);
	if (x < 0) { /* (-0.001).toFixed(2) is "-0.00" in JavaScript too */
		if ((size_t)len + 2 > outlen)
			return len;
		memmove(out + 1, out, (size_t)len + 1);
		out[0] = '-';
		len++;
	}
	return len;
}

/* ---- serialisation ---- */

static const char hexdigits[] = "0123456789abcdef";

int js_dump_string(const char *s, size_t n, struct buf *out)
{
	/* Worst case 6 bytes per input byte, plus quotes. */
	if (n > (SIZE_MAX - 2) / 6)
		return -ENOMEM;
	int r = buf_reserve(out, n * 6 + 2);
	if (r < 0)
		return r;
	char *o = out->data + out->len;
	*o++ = '"';
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x20 && c != '"' && c != '\\') {
			*o++ = (char)c;
			continue;
		}
		*o++ = '\\';
		switch (c) {
		case '"': *o++ = '"'; break;
		case '\\': *o++ = '\\'; break;
		case '\b': *o++ = 'b'; break;
		case '\f': *o++ = 'f'; break;
		case '\n': *o++ = 'n'; break;
		case '\r': *o++ = 'r'; break;
		case '\t': *o++ = 't'; break;
		default:
			*o++ = 'u';
			*o++ = '0';
			*o++ = '0';
			*o++ = hexdigits[c >> 4];
			*o++ = hexdigits[c & 15];
		}
	}
	*o++ = '"';
	out->len = (size_t)(o - out->data);
	*o = '\0';
	return 0;
}

static int dump_number(double d, struct buf *out)
{
	char tmp[32];
	if (!isfinite(d))
		return buf_add(out, "null", 4);
	int n = js_format_number(d, tmp);
	return buf_add(out, tmp, (size_t)n);
}

/* Serialise; `indent` < 0 for compact output, else JSON.stringify's
 * pretty layout with `indent` spaces per level at depth `depth`. */
static int dump_value(const json_t *v, int indent, int depth, struct buf *out);

static int newline_indent(int indent, int depth, struct buf *out)
{
	int r = buf_addc(out, '\n');
	for (int i = 0; r == 0 && i < indent * depth; i++)
		r = buf_addc(out, ' ');
	return r;
}

static int dump_member(const char *key, const json_t *val, int indent, int depth,
                       bool *first, struct buf *out)
{
	if (js_is_undefined(val))
		return 0;
	int r = 0;
	if (!*first)
		r = buf_addc(out, ',');
	*first = false;
	if (r == 0 && indent >= 0)
		r = newline_indent(indent, depth + 1, out);
	if (r == 0)
		r = js_dump_string(key, strlen(key), out);
	if (r == 0)
		r = indent >= 0 ? buf_add(out, ": ", 2) : buf_addc(out, ':');
	if (r == 0)
		r = dump_value(val, indent, depth + 1, out);
	return r;
}

static int dump_object(const json_t *v, int indent, int depth, struct buf *out)
{
	int r = buf_addc(out, '{');
	bool first = true;
	if (r < 0)
		return r;
	if (!has_index_key(v)) {
		const char *key;
		json_t *val;
		json_object_foreach((json_t *)v, key, val) {
			r = dump_member(key, val, indent, depth, &first, out);
			if (r < 0)
				return r;
		}
	} else {
		const char **keys;
		long n = js_object_keys(v, &keys);
		if (n < 0)
			return (int)n;
		for (long i = 0; i < n && r == 0; i++)
			r = dump_member(keys[i], json_object_get(v, keys[i]), indent,
			                depth, &first, out);
		free(keys);
		if (r < 0)
			return r;
	}
	if (!first && indent >= 0) {
		r = newline_indent(indent, depth, out);
		if (r < 0)
			return r;
	}
	return buf_addc(out, '}');
}

static int dump_array(const json_t *v, int indent, int depth, struct buf *out)
{
	int r = buf_addc(out, '[');
	size_t n = json_array_size(v);
	for (size_t i = 0; i < n && r == 0; i++) {
		if (i)
			r = buf_addc(out, ',');
		if (r == 0 && indent >= 0)
			r = newline_indent(indent, depth + 1, out);
		const json_t *e = json_array_get(v, i);
		if (r == 0)
			r = js_is_undefined(e) ? buf_add(out, "null", 4)
			                       : dump_value(e, indent, depth + 1, out);
	}
	if (r == 0 && n && indent >= 0)
		r = newline_indent(indent, depth, out);
	return r < 0 ? r : buf_addc(out, ']');
}

static int dump_value(const json_t *v, int indent, int depth, struct buf *out)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT: return dump_object(v, indent, depth, out);
	case JSON_ARRAY: return dump_array(v, indent, depth, out);
	case JSON_STRING:
		return js_dump_string(json_string_value(v), json_string_length(v), out);
	case JSON_INTEGER: return dump_number((double)json_integer_value(v), out);
	case JSON_REAL: return dump_number(json_real_value(v), out);
	case JSON_TRUE: return buf_add(out, "true", 4);
	case JSON_FALSE: return buf_add(out, "false", 5);
	case JSON_NULL: return buf_add(out, "null", 4);
	}
	return -EINVAL;
}

int js_dump(const json_t *v, struct buf *out)
{
	if (!v || js_is_undefined(v))
		return 1;
	return dump_value(v, -1, 0, out);
}

int js_dump_pretty(const json_t *v, int indent, struct buf *out)
{
	if (!v || js_is_undefined(v))
		return 1;
	return dump_value(v, indent < 0 ? 0 : indent, 0, out);
}

char *js_dumps(const json_t *v, size_t *ret_len)
{
	struct buf b = BUF_INIT;
	int r = js_dump(v, &b);
	if (r == 1)
		r = buf_add(&b, "undefined", 9);
	if (r < 0) {
		buf_done(&b);
		return NULL;
	}
	return buf_steal(&b, ret_len);
}

/* ---- parsing and text ---- */

/* Length of the valid UTF-8 sequence at s (n bytes left), or 0. */
static size_t utf8_seq_len(const unsigned char *s, size_t n)
{
	unsigned char c = s[0];
	if (c < 0x80)
		return 1;
	size_t len;
	unsigned char lo = 0x80, hi = 0xBF;
	if (c >= 0xC2 && c <= 0xDF)
		len = 2;
	else if (c >= 0xE0 && c <= 0xEF) {
		len = 3;
		if (c == 0xE0)
			lo = 0xA0;
		else if (c == 0xED)
			hi = 0x9F;
	} else if (c >= 0xF0 && c <= 0xF4) {
		len = 4;
		if (c == 0xF0)
			lo = 0x90;
		else if (c == 0xF4)
			hi = 0x8F;
	} else
		return 0;
	if (n < 2 || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if (i >= n || s[i] < 0x80 || s[i] > 0xBF)
			return 0;
	return len;
}

/* Bytes of the maximal invalid prefix to replace by one U+FFFD. */
static size_t utf8_bad_len(const unsigned char *s, size_t n)
{
	unsigned char c = s[0];
	size_t want;
	unsigned char lo = 0x80, hi = 0xBF;
	if (c >= 0xC2 && c <= 0xDF)
		want = 2;
	else if (c >= 0xE0 && c <= 0xEF) {
		want = 3;
		if (c == 0xE0)
			lo = 0xA0;
		else if (c == 0xED)
			hi = 0x9F;
	} else if (c >= 0xF0 && c <= 0xF4) {
		want = 4;
		if (c == 0xF0)
			lo = 0x90;
		else if (c == 0xF4)
			hi = 0x8F;
	} else
		return 1;
	size_t i = 1;
	if (i < n && s[i] >= lo && s[i] <= hi) {
		i++;
		while (i < want && i < n && s[i] >= 0x80 && s[i] <= 0xBF)
			i++;
	}
	return i;
}

static bool utf8_valid(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	for (size_t i = 0; i < n;) {
		if (p[i] < 0x80) {
			i++;
			continue;
		}
		size_t l = utf8_seq_len(p + i, n - i);
		if (!l)
			return false;
		i += l;
	}
	return true;
}

char *js_utf8_sanitize(const char *s, size_t n, size_t *ret_len)
{
	struct buf b = BUF_INIT;
	const unsigned char *p = (const unsigned char *)s;
	if (buf_reserve(&b, n) < 0)
		return NULL;
	for (size_t i = 0; i < n;) {
		size_t l = utf8_seq_len(p + i, n - i);
		int r;
		if (l) {
			r = buf_add(&b, p + i, l);
			i += l;
		} else {
			r = buf_add(&b, "\xEF\xBF\xBD", 3);
			i += utf8_bad_len(p + i, n - i);
		}
		if (r < 0) {
			buf_done(&b);
			return NULL;
		}
	}
	return buf_steal(&b, ret_len);
}

/* jansson reads integers as int64 by default; JavaScript reads every
 * number as a double, so ask for reals. */
#define JS_PARSE_FLAGS (JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL)

json_t *js_parse(const char *text, size_t len, char *err, size_t errlen)
{
	json_error_t jerr;
	json_t *v;
	if (utf8_valid(text, len)) {
		v = json_loadb(text, len, JS_PARSE_FLAGS, &jerr);
	} else {
		/* Node decodes file bytes as UTF-8 with U+FFFD replacement
		 * before JSON.parse sees them. */
		size_t n;
		char *clean = js_utf8_sanitize(text, len, &n);
		if (!clean) {
			if (err && errlen)
				snprintf(err, errlen, "out of memory");
			return NULL;
		}
		v = json_loadb(clean, n, JS_PARSE_FLAGS, &jerr);
		free(clean);
	}
	if (!v && err && errlen)
		snprintf(err, errlen, "%s (line %d, column %d)", jerr.text, jerr.line,
		         jerr.column);
	return v;
}
