/*
 * vmset.h - the frontend's current VM set: zonename -> VM JSON text, in
 * the order GET /vms lists them.
 *
 * Order is JavaScript object order, as the original's VM map
 * (spec/http-api.md §3.3): zonenames that are canonical array indexes
 * ("0", "17") first in numeric order, then insertion order; a replaced VM
 * keeps its place, a deleted one disappears.  The VM JSON bytes are not
 * copied: each entry holds a reference to the block they live in (an
 * event line or a snapshot copy) and points into it.
 *
 * The /vms body and its JSON-string form (for the ready line) are built
 * on demand and cached until the next change.
 */
#ifndef VMINFOD_FE_VMSET_H
#define VMINFOD_FE_VMSET_H

#include <stdbool.h>
#include <stddef.h>

#include "rcbuf.h"

struct vmset;

/* An empty set; NULL on ENOMEM. */
struct vmset *vmset_new(void);
/* Free the set and drop its references. */
void vmset_free(struct vmset *s);
/* Insert or replace zonename -> json ([json, json+len) inside `owner`, of
 * which a reference is taken).  0 or -ENOMEM (the set is unchanged). */
int vmset_put(struct vmset *s, const char *zonename, size_t zlen,
	      struct rcbuf *owner, const char *json, size_t len);
/* Remove zonename; 0 or -ENOENT. */
int vmset_del(struct vmset *s, const char *zonename, size_t zlen);
/* Look zonename up: true and the entry's block/bytes (borrowed: valid
 * until the next change of the set), or false. */
bool vmset_get(const struct vmset *s, const char *zonename, size_t zlen,
	       struct rcbuf **ret_owner, const char **ret_json, size_t *ret_len);
/* Number of VMs. */
size_t vmset_count(const struct vmset *s);
/* The /vms body "[vm1,vm2]" (borrowed reference, valid until the next
 * change: rcbuf_ref() it to keep it); NULL on ENOMEM. */
struct rcbuf *vmset_array(struct vmset *s);
/* The /vms body as a JSON string literal, quotes included (the ready
 * line's "vms" member); borrowed as above; NULL on ENOMEM. */
struct rcbuf *vmset_array_string(struct vmset *s);

#endif
