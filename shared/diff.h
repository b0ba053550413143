/*
 * diff.h - the original's object diff (spec/daemon.md §8).
 *
 * Compares two JSON values (jansson trees with JavaScript semantics: every
 * number a double, js_undefined() for "undefined") and lists what changed
 * as change entries (spec/http-api.md §4.1):
 *
 *   {"prettyPath":"nics.*.ip","path":["nics",null,"ip"],"action":"changed",
 *    "oldValue":"1","newValue":"2","ident":"aa"}
 *
 * Arrays are compared as sets of their compact serialisations; with the VM
 * map, elements of the top-level `disks` / `nics` arrays are paired by
 * `path` / `mac` and diffed member by member.
 */
#ifndef VMINFOD_DIFF_H
#define VMINFOD_DIFF_H

#include <stdbool.h>
#include <stddef.h>
#include <jansson.h>

#include "buf.h"

/* Diff a → b.  use_map selects the VM-object map {disks: "path",
 * nics: "mac"} (off for the raw-cache diff of a full refresh).
 * Returns a new JSON array of change entries, keys in the order prettyPath,
 * path, action, oldValue, newValue, ident (the last three omitted when
 * undefined).  Values in the entries are references to nodes of a and b
 * (shared, not copied): do not modify a or b while the result is in use.
 * NULL with a message in err where the original threw (null against an
 * object, an array against a non-object, a non-object element in a mapped
 * array) or on ENOMEM. */
json_t *diff_values(const json_t *a, const json_t *b, bool use_map,
    char *err, size_t errlen);

/* Append the prettyPath of a path array (strings, and null for "an array
 * element") to out: 0, -EINVAL for any other element, or -ENOMEM. */
int diff_pretty_path(const json_t *path, struct buf *out);

#endif
