/*
 * rcbuf.h - reference-counted byte blocks.
 *
 * The frontend copies every ring record out once and shares the copy:
 * the event window, the VM set and every subscriber's in-flight send hold
 * references to the same block, which is freed when the last one lets go.
 * Single-threaded (the frontend has one loop), so the count is a plain
 * integer.  The bytes are followed by a NUL for convenience.
 */
#ifndef VMINFOD_FE_RCBUF_H
#define VMINFOD_FE_RCBUF_H

#include <stddef.h>

struct rcbuf {
	size_t refcnt;
	size_t len;
	char data[];  /* len bytes + NUL */
};

/* A block of `len` uninitialised bytes with one reference; NULL on ENOMEM. */
struct rcbuf *rcbuf_new(size_t len);
/* A block holding a copy of `len` bytes at `p`; NULL on ENOMEM. */
struct rcbuf *rcbuf_dup(const void *p, size_t len);
/* Drop one reference (NULL is ignored); frees the block at zero. */
void rcbuf_unref(struct rcbuf *b);

/* Take one more reference; returns b. */
static inline struct rcbuf *rcbuf_ref(struct rcbuf *b)
{
	b->refcnt++;
	return b;
}

#endif
