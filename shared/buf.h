/*
 * buf.h - a growable byte buffer (append-only, NUL-terminated).
 *
 * Used wherever output is assembled before it is written once: JSON
 * serialisation, log lines, protocol messages.  A buffer owns its memory;
 * buf_done() releases it and leaves an empty buffer behind.
 */
#ifndef VMINFOD_BUF_H
#define VMINFOD_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
	char *data;   /* NUL-terminated once anything was appended */
	size_t len;   /* bytes used, excluding the terminating NUL */
	size_t cap;   /* bytes allocated */
};

#define BUF_INIT { NULL, 0, 0 }

/* Make room for at least `extra` more bytes (plus the NUL); 0 or -ENOMEM. */
int buf_reserve(struct buf *b, size_t extra);
/* Append `n` bytes; 0 or -ENOMEM. */
int buf_add(struct buf *b, const void *data, size_t n);
/* Append a NUL-terminated string; 0 or -ENOMEM. */
int buf_adds(struct buf *b, const char *s);
/* Append one byte; 0 or -ENOMEM. */
int buf_addc(struct buf *b, char c);
/* Append printf-formatted text; 0 or -ENOMEM. */
int buf_printf(struct buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
int buf_vprintf(struct buf *b, const char *fmt, va_list ap);
/* Write all the bytes to fd (retrying short writes and EINTR); 0 or
 * -errno.  Can block on a blocking fd. */
int buf_write(const struct buf *b, int fd);
/* Forget the contents, keep the allocation. */
void buf_reset(struct buf *b);
/* Hand the bytes to the caller (who frees them) and empty the buffer.
 * Returns "" allocated on the heap when nothing was appended; NULL on ENOMEM. */
char *buf_steal(struct buf *b, size_t *ret_len);
/* Release the memory. */
void buf_done(struct buf *b);

#endif
