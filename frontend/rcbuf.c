/*
 * rcbuf.c - reference-counted byte blocks.  See rcbuf.h.
 */
#include "rcbuf.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct rcbuf *rcbuf_new(size_t len)
{
	if (len > SIZE_MAX - sizeof(struct rcbuf) - 1)
		return NULL;
	struct rcbuf *b = malloc(sizeof(*b) + len + 1);
	if (!b)
		return NULL;
	b->refcnt = 1;
	b->len = len;
	b->data[len] = '\0';
	return b;
}

struct rcbuf *rcbuf_dup(const void *p, size_t len)
{
	struct rcbuf *b = rcbuf_new(len);
	if (b && len)
		memcpy(b->data, p, len);
	return b;
}

void rcbuf_unref(struct rcbuf *b)
{
	if (b && --b->refcnt == 0)
		free(b);
}
