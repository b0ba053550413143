/*
 * strmap.h - a hash map from strings to pointers, keeping insertion order.
 *
 * Keys are copied; values are the caller's (the map never frees them).
 * Iteration follows insertion order (a removed key and re-inserted goes
 * to the end), which is what the VM map and the frontend's VM set need
 * (spec/http-api.md §3.3: /vms is in insertion order).  Lookups are
 * O(1) average (open addressing on a power-of-two table).
 */
#ifndef VMINFOD_STRMAP_H
#define VMINFOD_STRMAP_H

#include <stdbool.h>
#include <stddef.h>

struct strmap_entry {
	char *key;
	size_t keylen;
	void *value;
	struct strmap_entry *prev, *next;  /* insertion order */
};

struct strmap {
	struct strmap_entry **slots;  /* NULL = empty, TOMBSTONE = removed */
	size_t nslots;
	size_t count;
	size_t used;                  /* count + tombstones */
	struct strmap_entry *head, *tail;
	unsigned long gen;            /* changed by every insert and removal: caches of the map key on it */
};

#define STRMAP_INIT { NULL, 0, 0, 0, NULL, NULL, 0 }

/* The value for key (n bytes), or NULL. */
void *strmap_get(const struct strmap *m, const char *key, size_t n);
/* The entry for key, or NULL. */
struct strmap_entry *strmap_find(const struct strmap *m, const char *key, size_t n);
/* Insert or replace (a replaced key keeps its position).  The previous
 * value, if any, is returned through *ret_old (may be NULL).  0 or -ENOMEM. */
int strmap_set(struct strmap *m, const char *key, size_t n, void *value, void **ret_old);
/* Remove key; returns its value or NULL. */
void *strmap_del(struct strmap *m, const char *key, size_t n);
/* Number of keys. */
static inline size_t strmap_count(const struct strmap *m) { return m->count; }
/* Release the map (not the values). */
void strmap_done(struct strmap *m);

/* Iterate in insertion order: for (e = m->head; e; e = e->next). */

#endif
