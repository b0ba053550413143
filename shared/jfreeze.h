/*
 * jfreeze.h - a jansson tree frozen into one compact, immutable byte
 * string, and thawed back into an identical tree.
 *
 * A jansson tree costs five to ten times the bytes of its JSON text (a
 * hash table per object, a node and a separate string per value, malloc
 * overhead on each); the supervisor keeps several per VM.  Frozen, the
 * same data takes about the size of its compact JSON text in a single
 * allocation.
 *
 * The round trip is exact, unlike JSON text: object members keep their
 * insertion order (index-like keys included), integers stay integers and
 * reals stay reals bit for bit (-0 included), the "undefined" node of
 * json.h comes back as that node, strings may hold NUL bytes.
 *
 * A frozen value is reference-counted (not thread-safe): copies of a
 * record share it, and equal pointers mean equal trees.
 */
#ifndef VMINFOD_JFREEZE_H
#define VMINFOD_JFREEZE_H

#include <stdbool.h>
#include <stddef.h>
#include <jansson.h>

struct jfreeze;

/* Freeze `v` (borrowed; any value, nesting bounded by the tree itself).
 * A new frozen value with one reference, or NULL on ENOMEM. */
struct jfreeze *jfreeze_new(const json_t *v);
/* A new tree equal to the one frozen (new reference), or NULL on ENOMEM. */
json_t *jfreeze_thaw(const struct jfreeze *f);
/* jfreeze_thaw(f), except that top-level members equal to the same
 * member of `like_tree` (byte-equal in `like`, which must be
 * jfreeze_new(like_tree)) are that tree's nodes, shared (new references),
 * not thawed copies.  For comparing a kept object with a new build of it:
 * only what changed is thawed.  Do not change the result in place. */
json_t *jfreeze_thaw_reusing(const struct jfreeze *f, const struct jfreeze *like,
	json_t *like_tree);
/* The member `key` of a frozen object as a new tree, without thawing
 * the rest; NULL when absent, when `f` is not an object, or on ENOMEM. */
json_t *jfreeze_member(const struct jfreeze *f, const char *key);
/* Another reference to `f` (may be NULL); returns `f`. */
struct jfreeze *jfreeze_ref(struct jfreeze *f);
/* Drop a reference (NULL is fine); the last one frees. */
void jfreeze_unref(struct jfreeze *f);
/* True when both hold the same bytes (so thaw to equal trees); two NULLs
 * are equal. */
bool jfreeze_equal(const struct jfreeze *a, const struct jfreeze *b);
/* Bytes of the encoding (for statistics). */
size_t jfreeze_size(const struct jfreeze *f);

#endif
