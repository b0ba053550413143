/*
 * vmset.c - zonename -> VM JSON in /vms order.  See vmset.h.
 *
 * A chained hash table finds entries; a doubly linked list keeps the
 * order.  Index-like zonenames (never seen in practice: zonenames are
 * UUIDs) are placed by a linear walk over the leading index keys.
 */
#include "vmset.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "json.h"

struct vm_entry {
	struct vm_entry *hnext;            /* hash chain */
	struct vm_entry *prev, *next;      /* /vms order */
	struct rcbuf *owner;
	const char *json;
	size_t json_len;
	uint64_t hash;
	bool is_index;
	uint64_t index;
	size_t zlen;
	char zonename[];                   /* zlen bytes + NUL */
};

struct vmset {
	struct vm_entry **buckets;
	size_t nbuckets;                   /* power of two */
	size_t count;
	struct vm_entry *head, *tail;
	struct rcbuf *array;               /* cached /vms body, or NULL */
	struct rcbuf *array_string;        /* cached JSON string of it, or NULL */
};

static uint64_t hash_bytes(const char *p, size_t n)
{
	uint64_t h = 1469598103934665603ULL;  /* FNV-1a */
	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)p[i];
		h *= 1099511628211ULL;
	}
	return h;
}

struct vmset *vmset_new(void)
{
	struct vmset *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->nbuckets = 64;
	s->buckets = calloc(s->nbuckets, sizeof(*s->buckets));
	if (!s->buckets) {
		free(s);
		return NULL;
	}
	return s;
}

static void invalidate(struct vmset *s)
{
	rcbuf_unref(s->array);
	rcbuf_unref(s->array_string);
	s->array = s->array_string = NULL;
}

void vmset_free(struct vmset *s)
{
	if (!s)
		return;
	struct vm_entry *e = s->head;
	while (e) {
		struct vm_entry *next = e->next;
		rcbuf_unref(e->owner);
		free(e);
		e = next;
	}
	invalidate(s);
	free(s->buckets);
	free(s);
}

static struct vm_entry *find(const struct vmset *s, const char *z, size_t zlen, uint64_t h)
{
	for (struct vm_entry *e = s->buckets[h & (s->nbuckets - 1)]; e; e = e->hnext)
		if (e->hash == h && e->zlen == zlen && memcmp(e->zonename, z, zlen) == 0)
			return e;
	return NULL;
}

/* Double the table when it is more than full on average; failure to grow
 * only costs speed. */
static void maybe_grow(struct vmset *s)
{
	if (s->count < s->nbuckets)
		return;
	size_t n = s->nbuckets * 2;
	struct vm_entry **b = calloc(n, sizeof(*b));
	if (!b)
		return;
	for (struct vm_entry *e = s->head; e; e = e->next) {
		e->hnext = b[e->hash & (n - 1)];
		b[e->hash & (n - 1)] = e;
	}
	free(s->buckets);
	s->buckets = b;
	s->nbuckets = n;
}

static void list_insert_before(struct vmset *s, struct vm_entry *e, struct vm_entry *before)
{
	e->next = before;
	e->prev = before ? before->prev : s->tail;
	if (e->prev)
		e->prev->next = e;
	else
		s->head = e;
	if (before)
		before->prev = e;
	else
		s->tail = e;
}

int vmset_put(struct vmset *s, const char *z, size_t zlen, struct rcbuf *owner,
	      const char *json, size_t len)
{
	uint64_t h = hash_bytes(z, zlen);
	struct vm_entry *e = find(s, z, zlen, h);
	if (e) {
		/* Take the new reference before dropping the old: both may be
		 * the same block. */
		rcbuf_ref(owner);
		rcbuf_unref(e->owner);
		e->owner = owner;
		e->json = json;
		e->json_len = len;
		invalidate(s);
		return 0;
	}
	e = malloc(sizeof(*e) + zlen + 1);
	if (!e)
		return -ENOMEM;
	memcpy(e->zonename, z, zlen);
	e->zonename[zlen] = '\0';
	e->zlen = zlen;
	e->hash = h;
	e->owner = rcbuf_ref(owner);
	e->json = json;
	e->json_len = len;
	e->is_index = strlen(e->zonename) == zlen && js_is_index_key(e->zonename);
	e->index = e->is_index ? strtoull(e->zonename, NULL, 10) : 0;

	struct vm_entry *before = NULL;
	if (e->is_index) {
		before = s->head;
		while (before && before->is_index && before->index < e->index)
			before = before->next;
	}
	list_insert_before(s, e, before);
	e->hnext = s->buckets[h & (s->nbuckets - 1)];
	s->buckets[h & (s->nbuckets - 1)] = e;
	s->count++;
	invalidate(s);
	maybe_grow(s);
	return 0;
}

int vmset_del(struct vmset *s, const char *z, size_t zlen)
{
	uint64_t h = hash_bytes(z, zlen);
	struct vm_entry **pp = &s->buckets[h & (s->nbuckets - 1)];
	while (*pp && !((*pp)->hash == h && (*pp)->zlen == zlen && memcmp((*pp)->zonename, z, zlen) == 0))
		pp = &(*pp)->hnext;
	struct vm_entry *e = *pp;
	if (!e)
		return -ENOENT;
	*pp = e->hnext;
	if (e->prev)
		e->prev->next = e->next;
	else
		s->head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		s->tail = e->prev;
	s->count--;
	rcbuf_unref(e->owner);
	free(e);
	invalidate(s);
	return 0;
}

bool vmset_get(const struct vmset *s, const char *z, size_t zlen,
	       struct rcbuf **ret_owner, const char **ret_json, size_t *ret_len)
{
	struct vm_entry *e = find(s, z, zlen, hash_bytes(z, zlen));
	if (!e)
		return false;
	if (ret_owner)
		*ret_owner = e->owner;
	if (ret_json)
		*ret_json = e->json;
	if (ret_len)
		*ret_len = e->json_len;
	return true;
}

size_t vmset_count(const struct vmset *s)
{
	return s->count;
}

struct rcbuf *vmset_array(struct vmset *s)
{
	if (s->array)
		return s->array;
	size_t total = 2 + (s->count ? s->count - 1 : 0);
	for (struct vm_entry *e = s->head; e; e = e->next)
		total += e->json_len;
	struct rcbuf *b = rcbuf_new(total);
	if (!b)
		return NULL;
	char *p = b->data;
	*p++ = '[';
	for (struct vm_entry *e = s->head; e; e = e->next) {
		if (e != s->head)
			*p++ = ',';
		memcpy(p, e->json, e->json_len);
		p += e->json_len;
	}
	*p++ = ']';
	s->array = b;
	return b;
}

struct rcbuf *vmset_array_string(struct vmset *s)
{
	if (s->array_string)
		return s->array_string;
	struct rcbuf *arr = vmset_array(s);
	if (!arr)
		return NULL;
	struct buf out = BUF_INIT;
	if (js_dump_string(arr->data, arr->len, &out) < 0) {
		buf_done(&out);
		return NULL;
	}
	s->array_string = rcbuf_dup(out.data, out.len);
	buf_done(&out);
	return s->array_string;
}
