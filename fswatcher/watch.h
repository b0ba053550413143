/*
 * watch.h - fswatcher's watch table on top of inotify, name-based.
 *
 * A watched path is followed by name: its parent directory is watched for
 * the name being deleted, renamed away or replaced by a rename, and the
 * file's own inode (through symlinks) for content and attribute changes.
 * After every batch of kernel events each touched path is stat()ed again
 * and its changes are reported in upstream's event-port terms
 * (spec/fswatcher.md §5, §6):
 *
 *   name unlinked                 FILE_DELETE                 final
 *   name renamed away             FILE_RENAME_FROM            final
 *   another file renamed onto it  FILE_RENAME_TO              not final
 *   written / mtime changed       FILE_MODIFIED               not final
 *   size went down                FILE_MODIFIED|FILE_TRUNC    not final
 *   filesystem unmounted          UNMOUNTED                   final
 *   chmod/chown/reads             nothing
 *
 * A path that cannot be stat()ed any more is always final.  Limits of the
 * name-based scheme: mounting over a path is not detected (inotify has no
 * such event), and a rename of a directory above the parent is only
 * noticed at the next event for the path (or after a queue overflow,
 * when every path is re-checked).
 *
 * Pending paths (-p): a path that does not exist is anchored at its
 * nearest existing ancestor directory, watched for the next component's
 * name; each change there re-resolves the path (descending as directories
 * appear) until it exists, which is reported once and ends the record.
 */
#ifndef FSWATCHER_WATCH_H
#define FSWATCHER_WATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct watch;

enum watch_note {
	WATCH_NOTE_EVENT,      /* path, revents, final */
	WATCH_NOTE_EXISTS,     /* path (a pending path now exists) */
	WATCH_NOTE_OVERFLOW,   /* events were lost (path NULL) */
};

/* Called for every report, in order; `path` is valid during the call. */
typedef void (*watch_emit_fn)(void *arg, enum watch_note note, const char *path,
	uint32_t revents, bool final);

enum watch_result {
	WATCH_OK,          /* message: "port_associate(3c) started watching path", ... */
	WATCH_ALREADY,     /* "already watching" (a success for the protocol) */
	WATCH_FAIL,        /* message says why */
};

/* A new table with its inotify instance (IN_CLOEXEC|IN_NONBLOCK);
 * max_paths bounds watched + pending paths.  NULL with errno set. */
struct watch *watch_new(size_t max_paths, bool pending, watch_emit_fn emit, void *arg);
/* Release every watch and the inotify fd. */
void watch_free(struct watch *w);
/* The inotify fd to poll for input. */
int watch_fd(const struct watch *w);

/* WATCH/UNWATCH as the protocol defines them; the response message is
 * written into msg (msglen bytes). */
enum watch_result watch_add(struct watch *w, const char *path, char *msg, size_t msglen);
enum watch_result watch_remove(struct watch *w, const char *path, char *msg, size_t msglen);

/* Read the kernel's queued events (never blocks) and report.  At most
 * max_bytes are read per call so commands stay responsive.  0, or -errno
 * for a read error. */
int watch_process(struct watch *w, size_t max_bytes);

/* The watched (or pending) paths as a malloc'd array of borrowed strings
 * (valid until the table changes); the caller frees the array.  Returns the
 * count or -ENOMEM. */
long watch_list(const struct watch *w, bool pending, const char ***ret_paths);

#endif
