/*
 * strmap.c - insertion-ordered string hash map.  See strmap.h.
 *
 * Open addressing with linear probing over entry pointers; entries are
 * also chained in insertion order.  The table doubles at 50 % load
 * (counting tombstones), so probes stay short.
 */
#include "strmap.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static struct strmap_entry tombstone_entry;
#define TOMBSTONE (&tombstone_entry)

/* FNV-1a, 64 bit. */
static uint64_t hash(const char *key, size_t n)
{
	uint64_t h = 14695981039346656037ULL;
	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)key[i];
		h *= 1099511628211ULL;
	}
	return h;
}

static size_t probe(const struct strmap *m, const char *key, size_t n, bool *found)
{
	size_t mask = m->nslots - 1;
	size_t i = (size_t)hash(key, n) & mask;
	size_t first_free = SIZE_MAX;
	for (;;) {
		struct strmap_entry *e = m->slots[i];
		if (!e) {
			*found = false;
			return first_free != SIZE_MAX ? first_free : i;
		}
		if (e == TOMBSTONE) {
			if (first_free == SIZE_MAX)
				first_free = i;
		} else if (e->keylen == n && memcmp(e->key, key, n) == 0) {
			*found = true;
			return i;
		}
		i = (i + 1) & mask;
	}
}

struct strmap_entry *strmap_find(const struct strmap *m, const char *key, size_t n)
{
	if (!m->count)
		return NULL;
	bool found;
	size_t i = probe(m, key, n, &found);
	return found ? m->slots[i] : NULL;
}

void *strmap_get(const struct strmap *m, const char *key, size_t n)
{
	struct strmap_entry *e = strmap_find(m, key, n);
	return e ? e->value : NULL;
}

static int grow(struct strmap *m)
{
	size_t nslots = m->nslots ? m->nslots : 16;
	while (nslots < (m->count + 1) * 2)
		nslots *= 2;
	/* Rehash also when only tombstones filled the table. */
	struct strmap_entry **slots = calloc(nslots, sizeof(*slots));
	if (!slots)
		return -ENOMEM;
	free(m->slots);
	m->slots = slots;
	m->nslots = nslots;
	m->used = m->count;
	for (struct strmap_entry *e = m->head; e; e = e->next) {
		size_t i = (size_t)hash(e->key, e->keylen) & (nslots - 1);
		while (slots[i])
			i = (i + 1) & (nslots - 1);
		slots[i] = e;
	}
	return 0;
}

int strmap_set(struct strmap *m, const char *key, size_t n, void *value, void **ret_old)
{
	if (ret_old)
		*ret_old = NULL;
	if ((m->used + 1) * 2 > m->nslots) {
		int r = grow(m);
		if (r < 0)
			return r;
	}
	bool found;
	size_t i = probe(m, key, n, &found);
	if (found) {
		if (ret_old)
			*ret_old = m->slots[i]->value;
		m->slots[i]->value = value;
		return 0;
	}
	struct strmap_entry *e = malloc(sizeof(*e));
	char *k = malloc(n + 1);
	if (!e || !k) {
		free(e);
		free(k);
		return -ENOMEM;
	}
	memcpy(k, key, n);
	k[n] = '\0';
	*e = (struct strmap_entry){ k, n, value, m->tail, NULL };
	if (m->tail)
		m->tail->next = e;
	else
		m->head = e;
	m->tail = e;
	if (!m->slots[i])
		m->used++;
	m->slots[i] = e;
	m->count++;
	m->gen++;
	return 0;
}

void *strmap_del(struct strmap *m, const char *key, size_t n)
{
	if (!m->count)
		return NULL;
	bool found;
	size_t i = probe(m, key, n, &found);
	if (!found)
		return NULL;
	struct strmap_entry *e = m->slots[i];
	m->slots[i] = TOMBSTONE;
	if (e->prev)
		e->prev->next = e->next;
	else
		m->head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		m->tail = e->prev;
	m->count--;
	m->gen++;
	void *v = e->value;
	free(e->key);
	free(e);
	return v;
}

void strmap_done(struct strmap *m)
{
	struct strmap_entry *e = m->head;
	while (e) {
		struct strmap_entry *next = e->next;
		free(e->key);
		free(e);
		e = next;
	}
	free(m->slots);
	unsigned long gen = m->gen + 1;   /* never back to a value a cache may hold */
	*m = (struct strmap)STRMAP_INIT;
	m->gen = gen;
}
