/*
 * fsw.h - the supervisor's side of the fswatcher child (spec/fswatcher.md
 * §7, §8, §9): spawns `<cmd> -r -j -p`, keeps the table of watched paths,
 * matches responses to requests and turns the child's messages into
 * callbacks on the libev loop.
 *
 * Paths:
 *   watching          the child reported SUCCESS for it; events flow.
 *   not_yet_watching  WATCH not answered yet, or the path does not exist:
 *                     the child (-p) tells when it appears ("exists"), the
 *                     wrapper sends WATCH again and, on success, emits a
 *                     synthetic "create" event.  No polling: the only timer
 *                     retries paths whose WATCH failed for another reason
 *                     than "does not exist" (EACCES, ENOSPC...), every 10 s.
 *
 * Events (struct fsw_event, spec §7.6): type "change", "delete", "event"
 * from the child, "create" from the wrapper.  A `final` event means the
 * child stopped watching the path; the wrapper has already moved it back
 * to not_yet_watching and re-sent WATCH when the callback runs.
 *
 * Child failures are not fatal: an exit (logged "fswatcher exited"), an
 * unparsable line, an "error" message or a response to an unknown key
 * gets the child killed and restarted through supervisor/child.c (at once;
 * more than 5 exits in 10 s: backoff 1 s doubling to 30 s).  Every path
 * is then re-registered and `restarted` is called on the new child's ready
 * line: events may have been lost, so the daemon queues a full refresh.
 *
 * Requirements: `loop` must be libev's default loop (children are reaped
 * with ev_child).  Callbacks run from the loop; they may call
 * fsw_watch/fsw_unwatch/fsw_is_watching/fsw_dump, not fsw_stop/fsw_free.
 */
#ifndef VMINFOD_FSW_H
#define VMINFOD_FSW_H

#include <stdbool.h>
#include <sys/types.h>
#include <ev.h>
#include <jansson.h>

struct fsw;

/* What the daemon's file-event handler receives (spec/fswatcher.md §7.6). */
struct fsw_event {
	const char *pathname;
	const char *type;     /* "change", "delete", "create" (synthetic: the
	                       * file appeared), or "event" */
	json_t *changes;      /* borrowed: array of flag names, or NULL for
	                       * the synthetic create */
	bool final;
};

struct fsw_callbacks {
	void (*event)(void *arg, const struct fsw_event *ev);
	/* The child's event queue overflowed: events were lost, the daemon
	 * queues a full refresh. */
	void (*overflow)(void *arg);
	/* The child died and was restarted, every watch re-registered: the
	 * daemon queues a full refresh. */
	void (*restarted)(void *arg);
	/* First ready line after fsw_start(). */
	void (*ready)(void *arg);
	void *arg;
};

/* A wrapper for the fswatcher binary at `cmd` (the caller resolves
 * FSWATCHER_CMD).  Strings and callbacks are copied.  NULL with errno set
 * (EINVAL: `loop` is not the default loop; ENOMEM). */
struct fsw *fsw_new(struct ev_loop *loop, const char *cmd, const struct fsw_callbacks *cbs);
/* Spawn the child (stdin a socketpair, stdout/stderr pipes; every other fd
 * stays close-on-exec) and send WATCH for paths added before.  0, -EALREADY
 * when running, or -errno of the spawn (logged "fswatcher error"; a retry
 * is scheduled anyway). */
int fsw_start(struct fsw *w);
/* Start watching `path` (may be called before fsw_start or while the child
 * is being restarted: it is sent when a child is up).  0; -EINVAL for an
 * empty path, one longer than PATH_MAX, or containing whitespace, control
 * bytes or invalid UTF-8 (the line protocol cannot carry it); -EEXIST if
 * already watching or waiting for it; -ENOMEM. */
int fsw_watch(struct fsw *w, const char *path);
/* Stop watching `path` (no event for it is delivered afterwards).  0 or
 * -ENOENT if it was neither watched nor waited for. */
int fsw_unwatch(struct fsw *w, const char *path);
/* True if `path` is in watching or not_yet_watching. */
bool fsw_is_watching(const struct fsw *w, const char *path);
/* The spec §8 dump: {"message_delays","watching","not_yet_watching",
 * "pending_actions","watcher_pid","running"}.  New reference. */
json_t *fsw_dump(struct fsw *w);
/* The same with at most max_paths entries per path list and in
 * pending_actions; when a list was cut, "watching_count",
 * "not_yet_watching_count" (and "pending_actions_count") give the sizes.
 * Costs O(max_paths), not O(watches). */
json_t *fsw_dump_bounded(struct fsw *w, size_t max_paths);
/* The child's pid, or -1 when none is running. */
pid_t fsw_pid(const struct fsw *w);
/* How many times the child was restarted. */
unsigned fsw_restarts(const struct fsw *w);
/* Commands sent to the child and not answered yet, plus WATCHes waiting
 * to be sent (at most 128 are in flight at once); 0 while no child is up:
 * its requests die with it.  O(1). */
size_t fsw_in_flight(const struct fsw *w);
/* SIGTERM the child and reap it (SIGKILL after 2 s); forget every path
 * and pending request; no callback runs afterwards. */
void fsw_stop(struct fsw *w);
/* Stop (if needed) and free.  NULL is allowed. */
void fsw_free(struct fsw *w);

#endif
