/*
 * child.c - spawn, reap and restart a child with a crash-loop guard.
 * See child.h.
 */
#include "child.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "timeutil.h"

static void on_exit_cb(struct ev_loop *loop, ev_child *w, int revents);
static void on_retry(struct ev_loop *loop, ev_timer *w, int revents);

void child_init(struct child *c, struct ev_loop *loop, const char *name,
	child_spawn_fn spawn, child_event_fn event, void *arg)
{
	memset(c, 0, sizeof(*c));
	c->name = name;
	c->loop = loop;
	c->spawn = spawn;
	c->event = event;
	c->arg = arg;
	c->pid = -1;
	c->state = CHILD_STOPPED;
	c->backoff_ms = CHILD_BACKOFF_MIN_MS;
	ev_timer_init(&c->retry, on_retry, 0., 0.);
	c->retry.data = c;
	ev_io_init(&c->ready_io, NULL, -1, EV_READ);
}

static void stop_ready_watch(struct child *c)
{
	if (c->ready_io.fd < 0)
		return;
	ev_io_stop(c->loop, &c->ready_io);
	close(c->ready_io.fd);
	ev_io_set(&c->ready_io, -1, EV_READ);
}

static void on_ready(struct ev_loop *loop, ev_io *w, int revents)
{
	struct child *c = w->data;
	char b;
	ssize_t n = read(w->fd, &b, 1);
	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return;
	/* One byte: ready; EOF or an error: it will never say so. */
	stop_ready_watch(c);
	if (n == 1 && c->pid > 0) {
		c->ready = true;
		log_info(json_pack("{s:s,s:i}", "child", c->name, "pid", (int)c->pid), "%s is ready", c->name);
		if (c->event)
			c->event(c, c->arg, true, 0);
	}
}

void child_watch_ready(struct child *c, int fd)
{
	stop_ready_watch(c);
	ev_io_init(&c->ready_io, on_ready, fd, EV_READ);
	c->ready_io.data = c;
	ev_io_start(c->loop, &c->ready_io);
}

const char *child_state_name(enum child_state s)
{
	switch (s) {
	case CHILD_STOPPED: return "stopped";
	case CHILD_UP: return "up";
	case CHILD_BACKOFF: return "backoff";
	case CHILD_MAINTENANCE: return "maintenance";
	}
	return "unknown";
}

static void schedule_retry(struct child *c, unsigned ms)
{
	ev_timer_stop(c->loop, &c->retry);
	ev_timer_set(&c->retry, ms / 1000.0, 0.);
	ev_timer_start(c->loop, &c->retry);
}

int child_start(struct child *c)
{
	c->stopping = false;
	pid_t pid = c->spawn(c, c->arg);
	if (pid < 0) {
		log_error(json_pack("{s:s,s:o}", "child", c->name, "err",
		                    log_err_obj(strerror((int)-pid), NULL)),
		          "cannot spawn %s, retrying in %u s", c->name, c->backoff_ms / 1000);
		c->state = CHILD_BACKOFF;
		schedule_retry(c, c->backoff_ms);
		return (int)pid;
	}
	if (c->pid != -1 || c->nexit)
		c->restarts++;
	c->pid = pid;
	c->state = CHILD_UP;
	ev_child_init(&c->reaper, on_exit_cb, pid, 0);
	c->reaper.data = c;
	ev_child_start(c->loop, &c->reaper);
	if (c->event)
		c->event(c, c->arg, true, 0);
	return 0;
}

static void on_retry(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct child *c = w->data;
	if (c->stopping)
		return;
	(void)child_start(c);
}

/* Exits within the window, counting this one. */
static unsigned recent_exits(struct child *c, uint64_t now)
{
	c->exit_ns[c->nexit++ % (CHILD_WINDOW_EXITS + 1)] = now;
	unsigned n = 0;
	for (unsigned i = 0; i < CHILD_WINDOW_EXITS + 1 && i < c->nexit; i++)
		if (now - c->exit_ns[i] <= CHILD_WINDOW_NS)
			n++;
	return n;
}

static void on_exit_cb(struct ev_loop *loop, ev_child *w, int revents)
{
	struct child *c = w->data;
	int status = w->rstatus;
	ev_child_stop(loop, w);
	pid_t pid = c->pid;
	c->pid = -1;
	c->ready = false;
	stop_ready_watch(c);
	if (c->event)
		c->event(c, c->arg, false, status);
	json_t *f = json_pack("{s:s,s:i}", "child", c->name, "pid", (int)pid);
	if (WIFSIGNALED(status))
		json_object_set_new(f, "signal", json_integer(WTERMSIG(status)));
	else
		json_object_set_new(f, "code", json_integer(WEXITSTATUS(status)));
	if (c->stopping) {
		c->state = CHILD_STOPPED;
		log_emit(LOG_INFO, NULL, f, "%s exited", c->name);   /* f is freed either way */
		return;
	}
	uint64_t now = tu_mono_ns();
	unsigned n = recent_exits(c, now);
	char how[48];
	if (WIFSIGNALED(status))
		snprintf(how, sizeof(how), "on signal %d", WTERMSIG(status));
	else
		snprintf(how, sizeof(how), "with status %d", WEXITSTATUS(status));
	if (n > CHILD_WINDOW_EXITS) {
		/* Still crash-looping after a maintenance wait: wait longer. */
		if (c->storm) {
			c->backoff_ms *= 2;
			if (c->backoff_ms > CHILD_BACKOFF_MAX_MS)
				c->backoff_ms = CHILD_BACKOFF_MAX_MS;
		} else {
			c->backoff_ms = CHILD_BACKOFF_MIN_MS;
		}
		c->storm = true;
		c->state = CHILD_MAINTENANCE;
		c->maintenances++;
		log_error(f, "%s exited %s, %u exits in %llu s: maintenance, retrying in %.1f s",
		          c->name, how, n, CHILD_WINDOW_NS / 1000000000ULL, c->backoff_ms / 1000.0);
		schedule_retry(c, c->backoff_ms);
		return;
	}
	c->storm = false;
	c->backoff_ms = CHILD_BACKOFF_MIN_MS;
	log_error(f, "%s exited %s, restarting", c->name, how);
	(void)child_start(c);
}

void child_stop(struct child *c)
{
	c->stopping = true;
	ev_timer_stop(c->loop, &c->retry);
	if (c->pid > 0)
		(void)kill(c->pid, SIGTERM);
	else
		c->state = CHILD_STOPPED;
}

int child_kill(struct child *c, int sig)
{
	if (c->pid <= 0)
		return -ESRCH;
	return kill(c->pid, sig) < 0 ? -errno : 0;
}

json_t *child_facts(const struct child *c)
{
	return json_pack("{s:o,s:i,s:s,s:b,s:i}", "pid", c->pid > 0 ? json_integer(c->pid) : json_null(),
	                 "restarts", (int)c->restarts, "state", child_state_name(c->state),
	                 "ready", c->ready, "maintenances", (int)c->maintenances);
}
