/*
 * proto.h - fswatcher's line protocol: command parsing (stdin) and message
 * formatting (stdout).  Pure functions: no I/O, no clock reads (callers
 * pass the time), so the unit tests cover the whole protocol.
 *
 * Upstream protocol (spec/fswatcher.md §3, §4), unchanged by default:
 *
 *   stdin   <KEY> WATCH <path>\n | <KEY> UNWATCH <path>\n | <KEY> STATUS\n
 *   stdout  {"type":"ready","time":[s,ns]}
 *           {"type":"event","time":[s,ns],"changes":[...],"pathname":P,
 *            "revents":N,"final":B}
 *           {"type":"response","time":[s,ns],"key":K,"code":C,"pathname":P,
 *            "message":M,"result":"SUCCESS"|"FAIL"}
 *           {"type":"response","time":[s,ns],"key":K,"code":0,
 *            "result":"SUCCESS","data":{"files":[...],"files_count":N,"pid":N}}
 *           {"type":"error","time":[s,ns],"key":K,"code":C,"message":M}
 *
 * Input is consumed in pieces of at most PROTO_MAX_CMD_LEN bytes (a newline
 * ends a piece and belongs to it), exactly like upstream's fgets() into a
 * MAX_CMD_LEN + 1 buffer: each piece is one command, so a longer line turns
 * into several commands (usually an "invalid command line" error for the
 * tail).
 *
 * Port extensions:
 *
 *   overflow (always)  {"type":"overflow","time":[s,ns]}
 *       The kernel's event queue overflowed: events were lost.  Every
 *       watched path is re-checked right after it (changes found are
 *       reported as ordinary events); the consumer should also re-read
 *       everything it derives from the watched files.
 *
 *   -p (pending paths, used by vminfod)
 *       A WATCH that fails because the path does not exist (ENOENT or
 *       ENOTDIR) still gets upstream's FAIL response, byte for byte, but the
 *       path is remembered as "pending": the program watches the nearest
 *       existing ancestor directory (descending as directories appear) and
 *       prints, once, when the path comes into existence:
 *
 *           {"type":"exists","time":[s,ns],"pathname":P}
 *
 *       after which the path is no longer pending; the consumer sends WATCH
 *       again (which may FAIL again and re-arm the pending record if the
 *       path vanished meanwhile).  No polling is involved anywhere.
 *       Under -p also:
 *         - the ready message carries the protocol version:
 *             {"type":"ready","time":[s,ns],"version":1}
 *         - UNWATCH of a pending path forgets it and answers SUCCESS with
 *           the message "no longer waiting for '<path>'";
 *         - STATUS data gains "pending":[...] and "pending_count":N after
 *           "pid".
 *
 *   -m <max> (limit of watched + pending paths, default PROTO_DEFAULT_MAX)
 *       A WATCH over the limit answers FAIL "too many watches (limit <max>)".
 */
#ifndef FSWATCHER_PROTO_H
#define FSWATCHER_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "buf.h"

/* 20 key digits + blank + "UNWATCH" + blank + PATH_MAX + newline. */
#define PROTO_MAX_CMD_LEN (20 + 1 + 7 + 1 + 4096 + 1)
#define PROTO_VERSION 1
#define PROTO_DEFAULT_MAX 1000000

/* Event bits (illumos port_source FILE_* values). */
#define FILE_ACCESS 0x00000001
#define FILE_MODIFIED 0x00000002
#define FILE_ATTRIB 0x00000004
#define FILE_DELETE 0x00000010
#define FILE_RENAME_TO 0x00000020
#define FILE_RENAME_FROM 0x00000040
#define FILE_TRUNC 0x00100000
#define FILE_NOFOLLOW 0x10000000
#define UNMOUNTED 0x20000000
#define MOUNTEDOVER 0x40000000
#define FILE_EXCEPTION (UNMOUNTED | FILE_DELETE | FILE_RENAME_TO | \
	FILE_RENAME_FROM | MOUNTEDOVER)

/* Error codes of "error" messages. */
enum proto_err {
	PROTO_ERR_INVALID_COMMAND = 1,
	PROTO_ERR_INVALID_KEY = 2,
	PROTO_ERR_UNKNOWN_COMMAND = 3,
	PROTO_ERR_CANT_ASSOCIATE = 4,
};

enum proto_cmd_kind {
	PROTO_CMD_ERROR,    /* answer with proto_fmt_error(key, code, message) */
	PROTO_CMD_WATCH,
	PROTO_CMD_UNWATCH,
	PROTO_CMD_STATUS,
};

/* One parsed command.  `path` points into the parsed piece (which the
 * parser modifies: the path word is NUL-terminated in place). */
struct proto_cmd {
	enum proto_cmd_kind kind;
	uint64_t key;          /* request key; 0 for errors not tied to one */
	int code;              /* PROTO_CMD_ERROR: enum proto_err */
	char message[PROTO_MAX_CMD_LEN + 32]; /* PROTO_CMD_ERROR: the error text */
	const char *path;      /* WATCH/UNWATCH */
};

/* The monotonic time carried by a message. */
struct proto_time {
	uint64_t sec;
	uint64_t nsec;
};

/* Split input into pieces the way fgets(buf, PROTO_MAX_CMD_LEN + 1) would.
 * Returns the length of the first piece of data[0..len) (ending after a
 * newline, or PROTO_MAX_CMD_LEN bytes), or 0 when more input is needed
 * (no newline yet and fewer than PROTO_MAX_CMD_LEN bytes; at EOF the
 * caller takes what is left as a last piece). */
size_t proto_piece_len(const char *data, size_t len);

/* Parse one piece (NUL-terminated, modified in place; bytes after an
 * embedded NUL are ignored as by C string functions).  Fills *cmd. */
void proto_parse(char *piece, struct proto_cmd *cmd);

/* Changes array of `revents`, in the fixed upstream order, appended as
 * JSON to out.  0 or -ENOMEM. */
int proto_fmt_changes(uint32_t revents, struct buf *out);

/* Whole messages, each appended to out with its terminating newline.  With
 * json == false the human-readable nvlist-like dump is written instead.
 * All return 0 or -ENOMEM. */
int proto_fmt_ready(struct buf *out, bool json, struct proto_time t, int version);
int proto_fmt_event(struct buf *out, bool json, struct proto_time t,
	const char *path, uint32_t revents, bool final);
int proto_fmt_response(struct buf *out, bool json, struct proto_time t,
	uint64_t key, bool ok, const char *path, const char *message);
int proto_fmt_error(struct buf *out, bool json, struct proto_time t,
	uint64_t key, int code, const char *message);
/* STATUS response; `files` are listed as given (see proto_status_sort);
 * pending == NULL leaves the -p members out. */
int proto_fmt_status(struct buf *out, bool json, struct proto_time t,
	uint64_t key, const char *const *files, size_t nfiles, pid_t pid,
	const char *const *pending, size_t npending);
int proto_fmt_overflow(struct buf *out, bool json, struct proto_time t);
int proto_fmt_exists(struct buf *out, bool json, struct proto_time t,
	const char *path);

/* Upstream's path hash: 64-bit djb2 over signed chars. */
uint64_t proto_path_hash(const char *path);
/* Sort paths in upstream's STATUS order (hash, then bytes). */
void proto_status_sort(const char **paths, size_t n);

#endif
