/*
 * json.h - JSON the way the original daemon (Node.js 0.10) writes it,
 * on top of jansson trees.
 *
 * Rules (spec/daemon.md §10.3): compact output; JavaScript number
 * formatting (shortest round-trip digits, exponent form only below 1e-6
 * or from 1e21); NaN/Infinity as null; strings escaped with the short
 * escapes and lowercase \u00xx for other control characters, everything
 * else raw UTF-8; object keys in insertion order except canonical array
 * index keys ("0" .. "4294967294"), which come first in numeric order;
 * members whose value is "undefined" are omitted.
 *
 * Numbers: every number is a jansson real (a double), as in JavaScript;
 * js_parse() decodes integers as reals and js_number() builds them.
 *
 * "undefined" (spec/vmload.md §6) is one immutable jansson node of type
 * JSON_NULL with a distinct address: json_is_null() is true for it, so
 * code that needs the difference must test js_is_undefined() first.
 * json_incref/json_decref/json_deep_copy leave it untouched.
 */
#ifndef VMINFOD_JSON_H
#define VMINFOD_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <jansson.h>

#include "buf.h"

/* The "undefined" node (never freed; a new reference costs nothing). */
json_t *js_undefined(void);
bool js_is_undefined(const json_t *v);

/* A number node; NaN and infinities give json_null() like JSON.stringify. */
json_t *js_number(double d);
/* The value of a number node (real or integer) as a double; NaN otherwise. */
double js_number_value(const json_t *v);

/* Set obj[key] = value, stealing the reference; an existing key keeps its
 * position (JavaScript assignment).  0 or -ENOMEM. */
int js_set(json_t *obj, const char *key, json_t *value);

/* True when `key` is a canonical array index ("0", "17", at most
 * 4294967294, no sign, no leading zero). */
bool js_is_index_key(const char *key);

/* The keys of `obj` in JavaScript enumeration order (index keys first,
 * ascending, then insertion order).  Returns the count; *ret_keys is a
 * malloc'd array of pointers into the object (valid while the object is
 * unchanged), which the caller frees.  -ENOMEM on failure. */
long js_object_keys(const json_t *obj, const char ***ret_keys);

/* Append the compact serialisation of `v` to `out`.  An undefined `v`
 * appends nothing and returns 1; otherwise 0, or -ENOMEM. */
int js_dump(const json_t *v, struct buf *out);
/* Compact serialisation in a new heap string (caller frees); NULL on
 * ENOMEM.  An undefined value gives "undefined" (util.format's %j). */
char *js_dumps(const json_t *v, size_t *ret_len);
/* JSON.stringify(v, null, indent) layout: one member per line,
 * ": " separator, empty containers as {} and []. */
int js_dump_pretty(const json_t *v, int indent, struct buf *out);
/* Append `s` (length `n`) as a JSON string literal, quotes included. */
int js_dump_string(const char *s, size_t n, struct buf *out);

/* JavaScript Number.prototype.toString() of `d` ("NaN", "Infinity" as JS
 * writes them).  `out` must hold 32 bytes.  Returns the length. */
int js_format_number(double d, char *out);
/* JavaScript x.toFixed(2): exact binary value rounded, ties away from
 * zero.  `out` must hold 340 bytes for any finite double.  Returns the length. */
int js_tofixed2(double x, char *out, size_t outlen);

/* Parse JSON text as JavaScript's JSON.parse would: integers become
 * doubles, "\u0000" is allowed.  NULL on a syntax error, with the message
 * in err. */
json_t *js_parse(const char *text, size_t len, char *err, size_t errlen);

/* Replace invalid UTF-8 sequences by U+FFFD (as Node decodes bytes).
 * Returns a new heap string (caller frees) and its length in *ret_len;
 * NULL on ENOMEM. */
char *js_utf8_sanitize(const char *s, size_t n, size_t *ret_len);

#endif
