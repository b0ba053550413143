/*
 * child.h - a supervised child process: spawn, reap, restart, backoff.
 *
 * A child's life is a small state machine:
 *
 *   UP --exit--> (restart at once) --spawn--> UP
 *   UP --6th exit within 10 s--> MAINTENANCE --backoff timer--> spawn --> UP
 *
 * In maintenance the next attempt waits 1 s, doubling up to 30 s while the
 * exits keep coming that fast; once they slow down restarts are immediate
 * again.
 * The fds crossing exec are arranged in the child's spawn function, the
 * one place that knows them (see supervisor.c for the frontend).
 */
#ifndef VMINFOD_CHILD_H
#define VMINFOD_CHILD_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <ev.h>
#include <jansson.h>

#define CHILD_WINDOW_EXITS 5            /* more than this many exits ... */
#define CHILD_WINDOW_NS (10ULL * 1000000000ULL) /* ... within this window */
#define CHILD_BACKOFF_MIN_MS 1000
#define CHILD_BACKOFF_MAX_MS 30000

enum child_state { CHILD_STOPPED, CHILD_UP, CHILD_BACKOFF, CHILD_MAINTENANCE };

struct child;
/* Fork and exec the program; returns the pid or -errno.  Runs in the
 * parent; the fork happens inside. */
typedef pid_t (*child_spawn_fn)(struct child *c, void *arg);
/* Told after every exit (status as from waitpid) and every spawn. */
typedef void (*child_event_fn)(struct child *c, void *arg, bool spawned, int status);

struct child {
	const char *name;
	struct ev_loop *loop;
	child_spawn_fn spawn;
	child_event_fn event;   /* may be NULL */
	void *arg;
	pid_t pid;              /* -1 when not running */
	enum child_state state;
	unsigned restarts;      /* spawns after the first */
	uint64_t exit_ns[CHILD_WINDOW_EXITS + 1]; /* recent exits, ring */
	unsigned nexit;
	unsigned backoff_ms;
	bool storm;             /* the last exit put it in maintenance */
	bool stopping;
	bool ready;             /* the running child said it is ready (see child_watch_ready) */
	unsigned maintenances;  /* times it was put in maintenance */
	ev_child reaper;
	ev_timer retry;
	ev_io ready_io;         /* read end of the running child's ready pipe */
};

void child_init(struct child *c, struct ev_loop *loop, const char *name,
	child_spawn_fn spawn, child_event_fn event, void *arg);
/* Spawn now.  0 or -errno (logged; a retry is scheduled). */
int child_start(struct child *c);
/* SIGTERM the child and stop restarting it; the reaper still runs. */
void child_stop(struct child *c);
/* Called by a spawn function (in the parent) with the read end of a pipe
 * whose write end the child got: one byte on it marks the child ready
 * (`ready` in the facts) until it exits.  Takes ownership of fd. */
void child_watch_ready(struct child *c, int fd);
/* Send a signal to the running child (0 or -errno). */
int child_kill(struct child *c, int sig);
const char *child_state_name(enum child_state s);
/* {"pid":…,"restarts":…,"state":"up","ready":true,"maintenances":0} for
 * the status facts. */
json_t *child_facts(const struct child *c);

#endif
