/*
 * queue.h - the supervisor's serial task queue (spec/daemon.md §6).
 *
 * One task runs at a time; tasks pushed meanwhile wait in a FIFO, and a
 * task whose description equals a *waiting* one is dropped (the running
 * task is never compared).  While paused, new tasks go to a separate
 * paused list (deduplicated against it) and only tasks already waiting
 * still run.  The queue is "idle" once it has been empty for idle_ms.
 *
 * A task that runs longer than its timeout is abandoned: logged, counted
 * as finished so the next task runs, and its late queue_task_done() only
 * frees it.
 *
 * All callbacks run on the libev loop given to queue_new().  Work
 * functions and callbacks may call back into the queue (push, done,
 * pause, resume).
 */
#ifndef VMINFOD_QUEUE_H
#define VMINFOD_QUEUE_H

#include <stdbool.h>
#include <stdint.h>
#include <ev.h>
#include <jansson.h>

struct queue;
struct queue_task;

/* The work of a task.  It must eventually call queue_task_done(t, …),
 * synchronously or later from the loop; `arg` stays valid until then. */
typedef void (*queue_work_fn)(struct queue_task *t, void *arg);
/* Completion of queue_pause() / queue_fast_forward(): err is NULL on
 * success, else a message ("pause timeout exceeded", …). */
typedef void (*queue_wait_cb)(void *arg, const char *err);

#define QUEUE_DEFAULT_TIMEOUT_MS 60000
#define QUEUE_DEFAULT_IDLE_MS 1000

/* A new, running (not paused, not yet idle) queue.  default_timeout_ms is
 * each task's timeout (0: none); idle_ms the emptiness that makes it idle.
 * NULL on ENOMEM. */
struct queue *queue_new(struct ev_loop *loop, uint64_t default_timeout_ms,
    uint64_t idle_ms);
/* Stop the queue's watchers and free it with its waiting and paused tasks
 * (their arg_free is called; their work never runs).  A task whose work is
 * still out (running or abandoned) is freed by its queue_task_done(). */
void queue_free(struct queue *q);

/* Enqueue a task.  The queue owns arg from now on: arg_free(arg) (if not
 * NULL) is called once the task is finished, discarded or on error.
 * Returns 1 if queued, 0 if discarded as a duplicate of a waiting (or, when
 * paused, paused) task, -ENOMEM. */
int queue_push(struct queue *q, const char *description, queue_work_fn work,
    void *arg, void (*arg_free)(void *));
/* Report the end of a task's work (errmsg NULL on success) and free the
 * task; t is invalid afterwards.  For an abandoned task it only frees. */
void queue_task_done(struct queue_task *t, const char *errmsg);
/* The task's child-logger fields {"task":{description,timeout,id,
 * created_at,started_at[,finished_at]}} for log_emit(); borrowed, valid
 * until queue_task_done().  May be NULL (ENOMEM), which log_emit accepts. */
json_t *queue_task_logger(struct queue_task *t);
/* The task's description (borrowed). */
const char *queue_task_description(const struct queue_task *t);

/* Pause: new tasks go to the paused list; tasks already waiting still run.
 * cb runs once nothing runs - possibly before queue_pause returns - or,
 * after timeout_ms (0: never), with an error after the queue was resumed.
 * 0, or -EALREADY when already paused. */
int queue_pause(struct queue *q, uint64_t timeout_ms, queue_wait_cb cb,
    void *arg);
/* Resume: move every paused task, in order, to the waiting list.  A pause
 * or fast-forward still waiting gets the error "queue resumed".
 * 0, or -EINVAL when not paused. */
int queue_resume(struct queue *q);
/* While paused, move the paused tasks created at or before until_ns
 * (tu_mono_ns clock) to the waiting list; cb runs once they have all run
 * (at once if none moved), or with an error after timeout_ms (0: never).
 * 0, -EINVAL when not paused, -EBUSY when a fast-forward is in progress. */
int queue_fast_forward(struct queue *q, uint64_t until_ns,
    uint64_t timeout_ms, queue_wait_cb cb, void *arg);

bool queue_is_idle(const struct queue *q);
bool queue_is_paused(const struct queue *q);
/* cb(arg) each time the queue becomes idle after idle_ms of emptiness
 * (not when a resume finds nothing to run).  cb NULL: none. */
void queue_on_idle(struct queue *q, void (*cb)(void *arg), void *arg);

/* cb(arg, duration_ns, errmsg != NULL, timed_out) each time a task ends:
 * done (duration from its start) or abandoned at its timeout.  For
 * /metrics.  cb NULL: none. */
typedef void (*queue_end_fn)(void *arg, uint64_t duration_ns, bool failed, bool timed_out);
void queue_on_task_end(struct queue *q, queue_end_fn cb, void *arg);

/* Raw facts for the ring's status area (new reference, NULL on ENOMEM):
 * {"paused","idle","paused_at_ns",
 *  "pending":[{id,description,created_ns,started_ns}],
 *  "queued":[{description,created_ns}],
 *  "paused_queue":[{id,description,created_ns}]}
 * Times are tu_mono_ns() integers; paused_at_ns / started_ns may be null. */
json_t *queue_status_facts(const struct queue *q);
/* The /status "queue" object (spec/http-api.md §3.2.1) at now_ns; new
 * reference, NULL on ENOMEM. */
json_t *queue_dump(const struct queue *q, uint64_t now_ns);

#endif
