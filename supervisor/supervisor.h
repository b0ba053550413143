/*
 * supervisor.h - the vminfod supervisor's context and the interfaces
 * between its modules (supervisor.c, vms.c, tasks.c, refresh.c, main.c).
 *
 * One `struct supervisor` per process, made in main() and passed down;
 * libev callbacks reach it through the watchers embedded in it.  It owns
 * the VM cache (the map of VM entries and the raw data behind them), the
 * task queue, the fswatcher wrapper, the ring writer and publisher, the
 * listening sockets and the frontend child.
 */
#ifndef VMINFOD_SUPERVISOR_H
#define VMINFOD_SUPERVISOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <ev.h>
#include <jansson.h>

#include "child.h"
#include "counters.h"
#include "listen.h"
#include "notify.h"
#include "strmap.h"
#include "vmload.h"
#include "zoneindex.h"

struct fsw;
struct queue;
struct publish;
struct ring_writer;

struct options {
	const char *root;
	const char *rundir;
	size_t ring_size;
	const char *listen[LISTEN_MAX];
	size_t nlisten;
	const char *log_file;
	int log_level;
	uint64_t task_timeout_ms;
	uint64_t refresh_interval_ms;
	uint64_t refresh_idle_max_ms;    /* forced refresh after this wait */
	const char *fswatcher_cmd;
	const char *frontend_cmd;
	const char *events_file;          /* NDJSON copy of every event (tests) */
	bool no_frontend;
	const char *fe_args[10];            /* limits passed to the frontend: --name value */
	size_t nfe_args;
	const char *frontend_user;          /* NULL: the frontend keeps our uid */
};

/* One VM: what the daemon publishes about a zone. */
struct vm_entry {
	char *zonename;
	char *uuid;
	struct vm_raw *raw;   /* the raw data it was built from */
	char *json;           /* its compact serialisation (/vms/<z> bytes) */
	size_t json_len;
};

/* What a watched path means (value of supervisor.watches). */
enum watch_kind { W_INDEX, W_SYSINFO, W_XML, W_CONFIG, W_LASTEXITED };
struct watch_info {
	enum watch_kind kind;
	char *zonename;       /* per-zone kinds */
};

/* The per-zone watches of a zone (value of supervisor.zone_watches). */
#define ZONE_WATCHES 5
struct zone_watch {
	char *paths[ZONE_WATCHES];
};

struct supervisor {
	struct ev_loop *loop;
	struct options opt;
	struct vmload_ctx vl;
	const char *state;        /* stopped, booting, running, paused */
	const char *status;
	uint64_t start_ns;
	uint64_t last_refresh_ns; /* 0 = never */
	bool booted;
	bool stopping;

	struct queue *queue;
	struct fsw *fsw;
	struct strmap vms;          /* zonename -> struct vm_entry* */
	struct strmap watches;      /* full path -> struct watch_info* */
	struct strmap zone_watches; /* zonename -> struct zone_watch* */
	json_t *sysinfo;            /* NULL when it could not be loaded */
	struct zoneindex index;     /* the index as last read */
	struct strmap index_map;    /* zonename -> const struct zone_record* */
	char *index_path;           /* full paths of the global files */
	char *sysinfo_path;

	struct ring_writer *ring;
	int doorbell_fd;
	struct publish *pub;
	int events_fd;
	char *ring_path;
	uint64_t rung_version;      /* version the doorbell last announced */
	bool rung_this_turn;        /* the doorbell rang in this loop iteration */
	ev_prepare prepare;         /* rings the doorbell once per iteration */

	struct listeners listeners;
	struct child frontend;
	bool frontend_seen_up;

	/* full refresh */
	ev_timer refresh_timer;     /* the period */
	ev_timer refresh_wait;      /* the longest wait for an idle queue */
	bool refresh_waiting;
	bool refresh_running;
	uint64_t refresh_wait_ns;
	json_t *refresh_errors;     /* [{err,time_ns}], at most 5 */
	json_t *refresh_log;        /* [{cacheChanges,vmChanges,started_ns,ended_ns}] */

	/* status facts publication */
	ev_timer status_timer;      /* heartbeat and coalesced updates */
	bool status_dirty;
	uint64_t heap_sampled_ns;   /* mallinfo2() figures, sampled */
	size_t heap_total, heap_used;
	uint64_t rss_sampled_ns;    /* /proc/self/statm, sampled */
	long rss;

	ev_signal sigterm, sigint, sighup;

	/* operations: service manager, readiness, /metrics totals */
	struct notify notify;
	bool ready_notified;        /* READY=1 sent */
	struct counters counters;
};

/* ---- supervisor.c ---- */
/* Run the daemon until SIGTERM; returns the exit code. */
int supervisor_run(const struct options *opt);
void supervisor_set_state(struct supervisor *s, const char *state);
void supervisor_set_status(struct supervisor *s, const char *status);
/* Mark the status facts as changed (published shortly). */
void supervisor_status_changed(struct supervisor *s);
/* An event was published: tell the frontend (now, or when the loop
 * iteration ends if it was told already in this one). */
void supervisor_published(struct supervisor *s);
/* "<root><hostpath>" in a new heap string; NULL on ENOMEM. */
char *supervisor_path(const struct supervisor *s, const char *hostpath);

/* ---- vms.c: the VM map and per-VM operations (spec/daemon.md §7) ---- */
struct vm_entry *vms_get(struct supervisor *s, const char *zonename);
/* Iterate VMs in /vms order (index-like zonenames first). */
int vms_foreach(struct supervisor *s,
	int (*fn)(void *arg, struct vm_entry *e), void *arg);
/* Refresh one VM after reloading `sections` of its raw data; emits
 * modify (or delete when the zone left the index).  0, or -errno with the
 * error logged (the task's error message in err). */
int vms_refresh(struct supervisor *s, const char *zonename, unsigned sections,
	char *err, size_t errlen);
/* Create the VM of `zonename` (known from the index); emits create. */
int vms_create(struct supervisor *s, const char *zonename);
/* Delete the VM; emits delete. */
int vms_delete(struct supervisor *s, const char *zonename);
/* Insert a built VM without an event (boot). */
int vms_insert(struct supervisor *s, const char *zonename, const char *uuid,
	struct vm_raw *raw, json_t *vm);
/* Replace a VM's object (takes `vm`), re-serialising it. */
int vms_replace(struct vm_entry *e, json_t *vm, struct vm_raw *raw);
void vms_free_all(struct supervisor *s);
/* Publish an event for entry e (type create/modify) or a delete. */
void vms_emit(struct supervisor *s, int type, const char *zonename, const char *uuid,
	struct vm_entry *e, json_t *changes);

/* ---- tasks.c: watches, file and zone events, the task catalogue ---- */
/* Watch the global files. */
int tasks_watch_globals(struct supervisor *s);
/* Make sure the 5 per-zone watches of a zone exist (paths from its record). */
void tasks_watch_zone(struct supervisor *s, const struct zone_record *rec);
void tasks_unwatch_zone(struct supervisor *s, const char *zonename);
/* Re-read the index into s->index (and index_map).  0 or -errno. */
int tasks_load_index(struct supervisor *s);
/* fswatcher callbacks */
struct fsw_event;
void tasks_on_fs_event(void *arg, const struct fsw_event *ev);
void tasks_on_zone_event(struct supervisor *s, const char *zonename, const char *newstate);

/* ---- refresh.c: the periodic full refresh (spec/daemon.md §11) ---- */
void refresh_init(struct supervisor *s);
/* Arm the period timer (after boot and after each refresh). */
void refresh_arm(struct supervisor *s);
/* Start a refresh as soon as the queue is idle (fswatcher restart,
 * inotify overflow). */
void refresh_request(struct supervisor *s, const char *why);
void refresh_done(struct supervisor *s);

#endif
