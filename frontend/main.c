/*
 * main.c - vminfod-frontend: options, sockets, the h2o event loop.
 *
 * Started by the supervisor with the listening sockets at fd 3.. (the
 * systemd LISTEN_FDS convention), the ring file path and the doorbell
 * eventfd.  For tests without a supervisor it can bind --listen itself
 * and, without a doorbell, look at the ring every few milliseconds.
 *
 * Everything runs on one h2o evloop: accepts (with a connection count and
 * a 503 past the limit), requests (routes.c), the doorbell (read the ring,
 * feed the streams) and a signalfd (SIGTERM/SIGINT: stop; SIGHUP: reopen
 * the log file).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "frontend.h"
#include "handover.h"
#include "log.h"
#include "metrics.h"
#include "privdrop.h"
#include "ring.h"
#include "ringreader.h"
#include "routes.h"
#include "subscribers.h"
#include "timeutil.h"

#define DEFAULT_SNDBUF (64 * 1024)
#define DEFAULT_POLL_MS 10
#define ACCEPT_PAUSE_MS 100
#define SHUTDOWN_GRACE_MS 2000
#define RING_WAIT_MS 10000 /* at start-up, for a ring file or snapshot to appear */
#define RING_RECHECK_MS 5   /* meanwhile, how often an existing file is looked at again */
#define FD_RESERVE 64   /* fds kept for the ring, logs, the doorbell and a margin */
#define DEFAULT_MAX_HEADER_BYTES (16 * 1024)
#define DEFAULT_MAX_URL_BYTES (8 * 1024)
#define DEFAULT_REQUEST_TIMEOUT_MS 10000
#define BUSY_REQUEST_TIMEOUT_MS 1000  /* connections past the limit wait less */
#define MAX_BODY_BYTES 4096           /* the API takes no request bodies */

static const char USAGE[] =
	"Usage: vminfod-frontend --ring PATH [options]\n"
	"\n"
	"Serves the vminfod HTTP API from the ring file published by the vminfod\n"
	"supervisor.  Listening sockets are inherited as fds 3.. (LISTEN_FDS, and\n"
	"LISTEN_PID if set); --listen binds one more itself.\n"
	"\n"
	"  --ring PATH              ring file to follow (required)\n"
	"  --doorbell-fd N          eventfd the supervisor rings after publishing;\n"
	"                           without it (test mode) the ring is checked every\n"
	"                           --poll-ms milliseconds instead\n"
	"  --poll-ms N              ring check interval in test mode (default 10)\n"
	"  --ready-fd N             write one byte there (and close it) once accepting\n"
	"  --listen HOST:PORT       bind and listen on this address too (tests)\n"
	"  --max-connections N      answer 503 past N open connections\n"
	"                           (default: open-file limit - 64)\n"
	"  --sndbuf BYTES           SO_SNDBUF of accepted sockets (default 65536;\n"
	"                           0 keeps the kernel's autotuning)\n"
	"  --max-header-bytes N     answer 431 to a request whose header fields\n"
	"                           exceed N bytes (default 16384; h2o itself\n"
	"                           answers 400 past about 400 KiB)\n"
	"  --max-url-bytes N        answer 414 to a request target (path and\n"
	"                           query) longer than N bytes (default 8192)\n"
	"  --request-timeout MS     close a connection that has not sent a complete\n"
	"                           request within MS of connecting or of its last\n"
	"                           answer (idle keep-alive, slow or partial\n"
	"                           headers); /events streams are not affected\n"
	"                           (default 10000)\n"
	"  --log-level LEVEL        trace|debug|info|warn|error|fatal (default info)\n"
	"  --request-log-level LEVEL  level of the per-request \"HTTP request\" line\n"
	"                           (default info, as the original)\n"
	"  --log-file PATH          log there instead of stderr (reopened on SIGHUP)\n"
	"  --user USER              switch to USER once the sockets and the ring\n"
	"                           are open (root only; no capabilities are kept)\n"
	"  -h, --help               this text\n";

struct options {
	const char *ring;
	const char *listen[FE_MAX_LISTENERS];
	size_t nlisten;
	const char *log_file;
	const char *user;
	int doorbell_fd;
	int ready_fd;
	long max_conns;
	long sndbuf;
	long max_header_bytes;
	long max_url_bytes;
	long request_timeout_ms;
	long poll_ms;
	int log_level;
	int request_log_level;
};

static void die(const char *what, int err)
{
	log_emit(LOG_FATAL, NULL, err ? log_err_fields(strerror(err), NULL) : NULL, "%s, exiting", what);
	exit(1);
}

static bool parse_long(const char *s, long min, long max, long *ret)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max)
		return false;
	*ret = v;
	return true;
}

static void parse_options(int argc, char **argv, struct options *o)
{
	enum { O_RING = 256, O_DOORBELL, O_POLL, O_READY, O_LISTEN, O_MAXCONN, O_SNDBUF, O_LOGLEVEL, O_REQLEVEL, O_LOGFILE, O_USER,
	       O_MAXHDR, O_MAXURL, O_REQTIMEOUT };
	static const struct option longopts[] = {
		{ "ring", required_argument, NULL, O_RING },
		{ "doorbell-fd", required_argument, NULL, O_DOORBELL },
		{ "poll-ms", required_argument, NULL, O_POLL },
		{ "ready-fd", required_argument, NULL, O_READY },
		{ "listen", required_argument, NULL, O_LISTEN },
		{ "max-connections", required_argument, NULL, O_MAXCONN },
		{ "sndbuf", required_argument, NULL, O_SNDBUF },
		{ "log-level", required_argument, NULL, O_LOGLEVEL },
		{ "request-log-level", required_argument, NULL, O_REQLEVEL },
		{ "log-file", required_argument, NULL, O_LOGFILE },
		{ "user", required_argument, NULL, O_USER },
		/* In enum order: the error message indexes this table. */
		{ "max-header-bytes", required_argument, NULL, O_MAXHDR },
		{ "max-url-bytes", required_argument, NULL, O_MAXURL },
		{ "request-timeout", required_argument, NULL, O_REQTIMEOUT },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	*o = (struct options){ .doorbell_fd = -1, .ready_fd = -1, .max_conns = -1, .sndbuf = DEFAULT_SNDBUF,
			       .poll_ms = DEFAULT_POLL_MS, .log_level = LOG_INFO, .request_log_level = LOG_INFO,
			       .max_header_bytes = DEFAULT_MAX_HEADER_BYTES, .max_url_bytes = DEFAULT_MAX_URL_BYTES,
			       .request_timeout_ms = DEFAULT_REQUEST_TIMEOUT_MS };
	int c;
	long v;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case O_RING:
			o->ring = optarg;
			break;
		case O_DOORBELL:
			if (!parse_long(optarg, 0, INT_MAX, &v))
				goto bad;
			o->doorbell_fd = (int)v;
			break;
		case O_READY:
			if (!parse_long(optarg, 0, INT_MAX, &v))
				goto bad;
			o->ready_fd = (int)v;
			break;
		case O_POLL:
			if (!parse_long(optarg, 1, 60000, &o->poll_ms))
				goto bad;
			break;
		case O_LISTEN:
			if (o->nlisten == FE_MAX_LISTENERS)
				goto bad;
			o->listen[o->nlisten++] = optarg;
			break;
		case O_MAXCONN:
			if (!parse_long(optarg, 1, INT_MAX, &o->max_conns))
				goto bad;
			break;
		case O_SNDBUF:
			if (!parse_long(optarg, 0, INT_MAX / 2, &o->sndbuf))
				goto bad;
			break;
		case O_LOGLEVEL:
			if ((o->log_level = log_level_parse(optarg)) < 0)
				goto bad;
			break;
		case O_REQLEVEL:
			if ((o->request_log_level = log_level_parse(optarg)) < 0)
				goto bad;
			break;
		case O_LOGFILE:
			o->log_file = optarg;
			break;
		case O_MAXHDR:
			if (!parse_long(optarg, 256, 1 << 20, &o->max_header_bytes))
				goto bad;
			break;
		case O_MAXURL:
			if (!parse_long(optarg, 64, 1 << 20, &o->max_url_bytes))
				goto bad;
			break;
		case O_REQTIMEOUT:
			if (!parse_long(optarg, 1, 3600 * 1000, &o->request_timeout_ms))
				goto bad;
			break;
		case O_USER:
			o->user = optarg;
			break;
		case 'h':
			fputs(USAGE, stdout);
			exit(0);
		default:
			fputs(USAGE, stderr);
			exit(2);
		}
	}
	if (!o->ring || optind != argc) {
		fputs(USAGE, stderr);
		exit(2);
	}
	return;
bad:
	fprintf(stderr, "vminfod-frontend: bad value for --%s: %s\n", longopts[c - O_RING].name, optarg);
	exit(2);
}

/* Bind HOST:PORT ("[v6]:port" for IPv6); the listening fd or -errno. */
static int listen_on(const char *spec)
{
	char host[256];
	const char *colon = strrchr(spec, ':');
	if (!colon || (size_t)(colon - spec) >= sizeof(host))
		return -EINVAL;
	const char *h = spec;
	size_t hl = (size_t)(colon - spec);
	if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
		h++;
		hl -= 2;
	}
	memcpy(host, h, hl);
	host[hl] = '\0';
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
	struct addrinfo *ai;
	if (getaddrinfo(hl ? host : NULL, colon + 1, &hints, &ai) != 0)
		return -EINVAL;
	int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
	int one = 1, r = 0;
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, SOMAXCONN) < 0)
		r = -errno;
	freeaddrinfo(ai);
	if (r < 0) {
		if (fd >= 0)
			close(fd);
		return r;
	}
	return fd;
}

/* The listening fds passed by the supervisor or systemd, made
 * non-blocking and close-on-exec; how many were added. */
static size_t inherited_listeners(int *fds, size_t max)
{
	const char *pid = getenv("LISTEN_PID");
	const char *nfds = getenv("LISTEN_FDS");
	long n = 0, p = 0;
	if (!nfds || !parse_long(nfds, 0, (long)max, &n))
		return 0;
	if (pid && (!parse_long(pid, 1, LONG_MAX, &p) || p != (long)getpid()))
		return 0;
	(void)unsetenv("LISTEN_FDS");
	(void)unsetenv("LISTEN_PID");
	(void)unsetenv("LISTEN_FDNAMES");
	size_t k = 0;
	for (long i = 0; i < n; i++) {
		int fd = 3 + (int)i;
		int fl = fcntl(fd, F_GETFL);
		int acc = 0;
		socklen_t al = sizeof(acc);
		if (fl < 0 || getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &al) < 0 || !acc ||
		    fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
			log_emit(LOG_WARN, NULL, log_err_fields(acc || errno ? strerror(errno) : "not listening", NULL),
				 "inherited fd %d is not a listening socket, skipping", fd);
			continue;
		}
		fds[k++] = fd;
	}
	return k;
}

static rlim_t raise_nofile(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return 1024;
	if (rl.rlim_cur < rl.rlim_max) {
		rlim_t want = rl.rlim_max;
		rl.rlim_cur = want;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			(void)getrlimit(RLIMIT_NOFILE, &rl);
	}
	return rl.rlim_cur == RLIM_INFINITY ? (rlim_t)1 << 20 : rl.rlim_cur;
}

/* ---- the ring ---- */

static void poll_ring(struct frontend *fe)
{
	bool reset = false;
	int n = ringreader_poll(fe->rr, &reset);
	if (n < 0) {
		/* Once per distinct error: in test mode this runs every few ms. */
		if (n != fe->ring_err)
			log_emit(LOG_WARN, fe->log_child, log_err_fields(strerror(-n), NULL),
				 "cannot read new records from the ring, serving the last state and retrying at the next doorbell");
		fe->ring_err = n;
		return;
	}
	if (fe->ring_err)
		log_emit(LOG_INFO, fe->log_child, NULL, "reading the ring again");
	fe->ring_err = 0;
	metrics_count_events(fe->metrics, fe->rr);
	if (reset) {
		char why[160];
		snprintf(why, sizeof(why), "event history was reloaded (epoch %s, version %" PRIu64 "); reconnect to resume",
			 ringreader_epoch(fe->rr), ringreader_version(fe->rr));
		log_emit(LOG_INFO, fe->log_child,
			 json_pack("{s:s, s:I}", "epoch", ringreader_epoch(fe->rr), "version",
				   (json_int_t)ringreader_version(fe->rr)),
			 "reloaded the ring from its newest snapshot, ending %zu streams", subscribers_count(fe->subs));
		subscribers_lag_all(fe->subs, why);
		return;
	}
	if (n > 0)
		subscribers_notify(fe->subs);
}

static void on_doorbell(h2o_socket_t *sock, const char *err)
{
	struct frontend *fe = sock->data;
	int r = ring_doorbell_drain(fe->doorbell_fd);
	if (r < 0 && r != -EAGAIN)
		log_emit(LOG_WARN, fe->log_child, log_err_fields(strerror(-r), NULL), "cannot read the doorbell, ignoring");
	poll_ring(fe);
}

static void on_poll_timer(h2o_timeout_entry_t *entry)
{
	struct frontend *fe = (struct frontend *)((char *)entry - offsetof(struct frontend, ring_poll_entry));
	poll_ring(fe);
	if (!fe->stopping)
		h2o_timeout_link(fe->loop, &fe->ring_poll, &fe->ring_poll_entry);
}

/* ---- connections ---- */

static void on_conn_close(void *data)
{
	struct frontend *fe = data;
	fe->nconns--;
}

static void on_accept(h2o_socket_t *listener, const char *err);

static void resume_accepting(h2o_timeout_entry_t *entry)
{
	struct frontend *fe = (struct frontend *)((char *)entry - offsetof(struct frontend, accept_pause_entry));
	if (fe->stopping)
		return;
	for (size_t i = 0; i < fe->nlisteners; i++)
		h2o_socket_read_start(fe->listeners[i], on_accept);
}

/* Out of file descriptors: the pending connection stays in the backlog
 * and would wake us at once again, so stop listening for a moment. */
static void pause_accepting(struct frontend *fe)
{
	if (h2o_timeout_is_linked(&fe->accept_pause_entry))
		return;
	log_emit(LOG_WARN, fe->log_child, log_err_fields(strerror(errno), NULL),
		 "cannot accept connections (%zu open), retrying in %d ms", fe->nconns, ACCEPT_PAUSE_MS);
	for (size_t i = 0; i < fe->nlisteners; i++)
		h2o_socket_read_stop(fe->listeners[i]);
	h2o_timeout_link(fe->loop, &fe->accept_pause, &fe->accept_pause_entry);
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
	struct frontend *fe = listener->data;
	if (err)
		return;
	/* A bounded batch per wakeup keeps one busy listener from starving
	 * the streams. */
	for (int i = 0; i < 64; i++) {
		errno = 0;
		h2o_socket_t *sock = h2o_evloop_socket_accept(listener);
		if (!sock) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
				pause_accepting(fe);
			return;
		}
		fe->nconns++;
		sock->on_close.cb = on_conn_close;
		sock->on_close.data = fe;
		int fd = h2o_socket_get_fd(sock);
		if (fe->sndbuf > 0)
			(void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &fe->sndbuf, sizeof(fe->sndbuf));  /* best effort */
		h2o_accept(fe->nconns > fe->max_conns ? &fe->busy_accept_ctx : &fe->accept_ctx, sock);
	}
}

/* ---- signals ---- */

static void begin_shutdown(struct frontend *fe)
{
	if (fe->stopping)
		return;
	fe->stopping = true;
	log_emit(LOG_INFO, fe->log_child, NULL, "stopping: closing listeners and ending %zu streams",
		 subscribers_count(fe->subs));
	/* Handing over: nothing new may land in our listen queues, and what
	 * is there already is served rather than reset by the close. */
	if (handover_in_progress(fe->handover))
		for (size_t i = 0; i < fe->nlisteners; i++) {
			handover_steer_away(h2o_socket_get_fd(fe->listeners[i]));
			for (int k = 0; k < 64; k++)
				on_accept(fe->listeners[i], NULL);
		}
	for (size_t i = 0; i < fe->nlisteners; i++) {
		h2o_socket_read_stop(fe->listeners[i]);
		h2o_socket_close(fe->listeners[i]);
	}
	fe->nlisteners = 0;
	if (h2o_timeout_is_linked(&fe->accept_pause_entry))
		h2o_timeout_unlink(&fe->accept_pause_entry);
	if (h2o_timeout_is_linked(&fe->ring_poll_entry))
		h2o_timeout_unlink(&fe->ring_poll_entry);
	subscribers_end_all(fe->subs);
}

static void on_signal(h2o_socket_t *sock, const char *err)
{
	struct frontend *fe = sock->data;
	struct signalfd_siginfo si;
	/* Bounded: the signalfd holds at most one entry per pending signal. */
	for (int i = 0; i < 64 && read(fe->signal_fd, &si, sizeof(si)) == (ssize_t)sizeof(si); i++) {
		if (si.ssi_signo == SIGHUP) {
			int r = log_reopen();
			if (r < 0)
				log_emit(LOG_ERROR, fe->log_child, log_err_fields(strerror(-r), NULL),
					 "cannot reopen the log file, keeping the old one");
		} else {
			begin_shutdown(fe);
		}
	}
}

/* Load the ring.  The supervisor publishes the first snapshot right
 * after creating the ring; when there is none yet, wait for it (up to
 * RING_WAIT_MS) rather than die into a restart loop.  The file appearing
 * in its directory wakes the wait at once; the first snapshot, written
 * through the writer's mapping, makes no inotify event, so an existing
 * file is re-checked every RING_RECHECK_MS.  A restart finds the ring
 * complete and does not wait at all. */
static int open_ring(const char *path, struct ringreader **ret)
{
	int r = ringreader_open(path, ret);
	if (r != -ENOENT)
		return r;
	char dir[PATH_MAX] = ".";
	const char *slash = strrchr(path, '/');
	if (slash == path)
		strcpy(dir, "/");
	else if (slash && (size_t)(slash - path) < sizeof(dir)) {
		memcpy(dir, path, (size_t)(slash - path));
		dir[slash - path] = '\0';
	}
	/* Without inotify the re-check interval alone bounds the wait. */
	int ifd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
	if (ifd >= 0 && inotify_add_watch(ifd, dir, IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE) < 0) {
		close(ifd);
		ifd = -1;
	}
	uint64_t give_up_ns = tu_mono_ns() + RING_WAIT_MS * TU_NS_PER_MS;
	while ((r = ringreader_open(path, ret)) == -ENOENT && tu_mono_ns() < give_up_ns) {
		struct pollfd pfd = { .fd = ifd, .events = POLLIN };
		(void)poll(&pfd, 1, RING_RECHECK_MS);   /* ifd -1: a plain sleep */
		if (ifd >= 0 && (pfd.revents & POLLIN)) {
			char evs[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
			while (read(ifd, evs, sizeof(evs)) > 0)
				;   /* only the wakeup matters; bounded: the queue empties */
		}
	}
	if (ifd >= 0)
		close(ifd);
	return r;
}

static h2o_socket_t *watch_fd(struct frontend *fe, int fd, h2o_socket_cb cb)
{
	h2o_socket_t *sock = h2o_evloop_socket_create(fe->loop, fd, H2O_SOCKET_FLAG_DONT_READ);
	if (!sock)
		die("cannot watch a file descriptor", ENOMEM);
	sock->data = fe;
	h2o_socket_read_start(sock, cb);
	return sock;
}

int main(int argc, char **argv)
{
	struct options opt;
	parse_options(argc, argv, &opt);
	int r = log_init("vminfod", opt.log_file, opt.log_level);
	if (r < 0) {
		fprintf(stderr, "vminfod-frontend: cannot open log file %s: %s\n", opt.log_file, strerror(-r));
		return 1;
	}

	struct frontend fe_storage = { 0 };
	struct frontend *fe = &fe_storage;
	fe->doorbell_fd = opt.doorbell_fd;
	fe->signal_fd = -1;
	fe->sndbuf = (int)opt.sndbuf;
	fe->max_header_bytes = (size_t)opt.max_header_bytes;
	fe->max_url_bytes = (size_t)opt.max_url_bytes;
	fe->request_log_level = opt.request_log_level;
	fe->log_child = json_pack("{s:s}", "component", "frontend");
	if (!fe->log_child)
		die("out of memory", ENOMEM);

	/* Signals arrive as events; SIGPIPE would kill us on a closed peer. */
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
		die("cannot ignore SIGPIPE", errno);
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0 ||
	    (fe->signal_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC)) < 0)
		die("cannot set up signal handling", errno);

	rlim_t nofile = raise_nofile();
	fe->max_conns = opt.max_conns > 0 ? (size_t)opt.max_conns
					  : (nofile > FD_RESERVE * 2 ? (size_t)(nofile - FD_RESERVE) : FD_RESERVE);

	int fds[FE_MAX_LISTENERS];
	size_t nfds = inherited_listeners(fds, FE_MAX_LISTENERS);
	for (size_t i = 0; i < opt.nlisten && nfds < FE_MAX_LISTENERS; i++) {
		int fd = listen_on(opt.listen[i]);
		if (fd < 0) {
			log_emit(LOG_FATAL, fe->log_child, log_err_fields(strerror(-fd), NULL),
				 "cannot listen on %s, exiting", opt.listen[i]);
			return 1;
		}
		fds[nfds++] = fd;
	}
	if (nfds == 0) {
		log_emit(LOG_FATAL, fe->log_child, NULL, "no listening socket (LISTEN_FDS or --listen), exiting");
		return 1;
	}
	if (fe->doorbell_fd >= 0) {
		int fl = fcntl(fe->doorbell_fd, F_GETFL);
		if (fl < 0 || fcntl(fe->doorbell_fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
		    fcntl(fe->doorbell_fd, F_SETFD, FD_CLOEXEC) < 0)
			die("bad --doorbell-fd", errno);
	}

	/* The ring is re-opened by name when the supervisor replaces it:
	 * keep that possible after the switch of user. */
	if (opt.user) {
		const char *name = privdrop_enter_dir(opt.ring);
		if (!name)
			die("cannot enter the ring's directory", errno);
		opt.ring = name;
	}
	r = open_ring(opt.ring, &fe->rr);
	if (r < 0) {
		log_emit(LOG_FATAL, fe->log_child, json_pack("{s:s, s:o}", "path", opt.ring, "err",
							     log_err_obj(strerror(-r), NULL)),
			 "cannot load the ring file %s, exiting", opt.ring);
		return 1;
	}
	/* Everything that needs privileges is open: sockets, doorbell, ring,
	 * log.  From here on we can only read the ring. */
	if (opt.user) {
		char err[256];
		r = privdrop_to(opt.user, err, sizeof(err));
		if (r < 0) {
			log_emit(LOG_FATAL, fe->log_child, log_err_fields(err, NULL), "cannot switch to user %s, exiting",
				 opt.user);
			ringreader_free(fe->rr);
			json_decref(fe->log_child);
			return 1;
		}
		log_emit(LOG_INFO, fe->log_child, json_pack("{s:s, s:i}", "user", opt.user, "uid", (int)getuid()),
			 "running as user %s", opt.user);
	}
	fe->metrics = metrics_new(opt.ring);
	if (!fe->metrics)
		die("out of memory", ENOMEM);
	fe->loop = h2o_evloop_create();
	fe->subs = subscribers_new(fe);
	if (!fe->subs)
		die("cannot set up the stream list", errno);
	h2o_config_init(&fe->config);
	h2o_config_init(&fe->busy_config);
	/* No Server header: the original sends none. */
	fe->config.server_name = h2o_iovec_init(H2O_STRLIT(""));
	fe->busy_config.server_name = h2o_iovec_init(H2O_STRLIT(""));
	/* Limits (DESIGN.md §11): a connection holds at most one request of
	 * bounded size, waits a bounded time for it, and sends no body worth
	 * buffering. */
	fe->config.http1.req_timeout = (uint64_t)opt.request_timeout_ms;
	fe->busy_config.http1.req_timeout = (uint64_t)(opt.request_timeout_ms < BUSY_REQUEST_TIMEOUT_MS
							       ? opt.request_timeout_ms : BUSY_REQUEST_TIMEOUT_MS);
	fe->config.max_request_entity_size = MAX_BODY_BYTES;
	fe->busy_config.max_request_entity_size = MAX_BODY_BYTES;
	if (routes_register(fe, &fe->config) < 0 || routes_register_busy(fe, &fe->busy_config) < 0)
		die("out of memory", ENOMEM);
	h2o_context_init(&fe->ctx, fe->loop, &fe->config);
	h2o_context_init(&fe->busy_ctx, fe->loop, &fe->busy_config);
	fe->accept_ctx.ctx = &fe->ctx;
	fe->accept_ctx.hosts = fe->config.hosts;
	fe->busy_accept_ctx.ctx = &fe->busy_ctx;
	fe->busy_accept_ctx.hosts = fe->busy_config.hosts;

	h2o_timeout_init(fe->loop, &fe->accept_pause, ACCEPT_PAUSE_MS);
	fe->accept_pause_entry.cb = resume_accepting;
	h2o_timeout_init(fe->loop, &fe->ring_poll, (uint64_t)opt.poll_ms);
	fe->ring_poll_entry.cb = on_poll_timer;

	for (size_t i = 0; i < nfds; i++)
		fe->listeners[fe->nlisteners++] = watch_fd(fe, fds[i], on_accept);
	fe->signal_sock = watch_fd(fe, fe->signal_fd, on_signal);
	if (fe->doorbell_fd >= 0) {
		fe->doorbell_sock = watch_fd(fe, fe->doorbell_fd, on_doorbell);
		/* Anything published between our load and now. */
		poll_ring(fe);
		/* Only a frontend its supervisor started (it passes --ready-fd)
		 * can be orphaned and hand over. */
		if (opt.ready_fd >= 0)
			fe->handover = handover_new(fe, poll_ring, begin_shutdown);
	} else {
		h2o_timeout_link(fe->loop, &fe->ring_poll, &fe->ring_poll_entry);
	}

	log_emit(LOG_INFO, fe->log_child,
		 json_pack("{s:s, s:I, s:I, s:I}", "epoch", ringreader_epoch(fe->rr), "version",
			   (json_int_t)ringreader_version(fe->rr), "listeners", (json_int_t)nfds, "maxConnections",
			   (json_int_t)fe->max_conns),
		 "frontend serving (%s)", fe->doorbell_fd >= 0 ? "doorbell" : "test mode: polling the ring");
	handover_ready(opt.ready_fd);

	uint64_t deadline_ns = 0;
	for (;;) {
		if (h2o_evloop_run(fe->loop, fe->stopping ? 50 : INT32_MAX) != 0 && errno != EINTR) {
			log_emit(LOG_ERROR, fe->log_child, log_err_fields(strerror(errno), NULL),
				 "event loop failed, exiting");
			return 1;
		}
		if (fe->stopping) {
			uint64_t now = tu_mono_ns();
			if (!deadline_ns)
				deadline_ns = now + SHUTDOWN_GRACE_MS * TU_NS_PER_MS;
			/* A handover also lets the requests it accepted last finish. */
			if ((subscribers_count(fe->subs) == 0 &&
			     (!handover_in_progress(fe->handover) || fe->nconns == 0)) ||
			    now >= deadline_ns)
				break;
		}
	}
	log_emit(LOG_INFO, fe->log_child, NULL, "frontend stopped");
	/* exit() rather than return: the context on this stack stays
	 * reachable, so leak checkers do not report what the kernel frees. */
	exit(0);
}
