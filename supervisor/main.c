/*
 * main.c - vminfod entry point: options, then one of
 *   vminfod [options]                 the daemon (supervisor.c)
 *   vminfod --root DIR --dump         print the JSON array of all VM objects
 *   vminfod --load-xml FILE           print the XML-stage object of one file
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/close_range.h>
#include <unistd.h>

#include "log.h"
#include "oneshot.h"
#include "queue.h"
#include "ring.h"
#include "supervisor.h"

static const char usage_text[] =
	"Usage: vminfod [options]\n"
	"       vminfod [--root DIR] --dump\n"
	"       vminfod --load-xml FILE\n"
	"\n"
	"Keeps an always-current picture of every VM (zone) on this host and\n"
	"serves it over HTTP (GET /ping, /status, /vms, /vms/<zonename>, /events).\n"
	"\n"
	"Options\n"
	"  --root DIR              host tree to observe (default /)\n"
	"  --listen HOST:PORT      address to serve on, repeatable (default 127.0.0.1:9090)\n"
	"  --rundir DIR            where the ring file lives (default /run/vminfod)\n"
	"  --ring-size BYTES       ring file size, K/M/G suffixes allowed (default 64M)\n"
	"  --log-file PATH         log here instead of stderr (reopened on SIGHUP)\n"
	"  --log-level LEVEL       trace, debug, info, warn, error, fatal (default debug)\n"
	"  --task-timeout MS       abandon a task running longer (default 60000)\n"
	"  --refresh-interval MS   full refresh period (default 300000)\n"
	"  --refresh-max-wait MS   longest wait for an idle queue before a full\n"
	"                          refresh goes anyway (default 300000)\n"
	"  --fswatcher PATH        fswatcher program (default: next to vminfod,\n"
	"                          or $FSWATCHER_CMD)\n"
	"  --frontend PATH         frontend program (default: next to vminfod)\n"
	"  --no-frontend           do not start the HTTP frontend\n"
	"  --frontend-user USER    user the frontend runs as (default: nobody when\n"
	"                          started as root; \"\" keeps our own user)\n"
	"  --events-file PATH      also append every event line to PATH\n"
	"  --max-connections N     frontend: answer 503 past N open connections\n"
	"                          (default: open-file limit - 64)\n"
	"  --sndbuf BYTES          frontend: SO_SNDBUF of client sockets, the send\n"
	"                          buffer cap of each subscriber (default 65536)\n"
	"  --max-header-bytes N    frontend: 431 past N bytes of headers (default 16384)\n"
	"  --max-url-bytes N       frontend: 414 past N bytes of path+query (default 8192)\n"
	"  --request-timeout MS    frontend: close idle non-stream connections (default 10000)\n"
	"  --dump                  print all VM objects as JSON and exit\n"
	"  --load-xml FILE         print the VM object of one zone XML file and exit\n"
	"  -h, --help              this text\n";

static int parse_ms(const char *s, uint64_t *ret)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-')
		return -EINVAL;
	*ret = v;
	return 0;
}

/* A helper program next to our own executable, else in ../libexec/vminfod. */
static char *sibling(const char *name)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n <= 0)
		return NULL;
	self[n] = '\0';
	char *slash = strrchr(self, '/');
	if (!slash)
		return NULL;
	*slash = '\0';
	char path[PATH_MAX + 64];
	snprintf(path, sizeof(path), "%s/%s", self, name);
	if (access(path, X_OK) == 0)
		return strdup(path);
	snprintf(path, sizeof(path), "%s/../libexec/vminfod/%s", self, name);
	if (access(path, X_OK) == 0)
		return strdup(path);
	return NULL;
}

int main(int argc, char **argv)
{
	enum { O_ROOT = 256, O_LISTEN, O_RUNDIR, O_RING_SIZE, O_LOG_FILE, O_LOG_LEVEL,
	       O_TASK_TIMEOUT, O_REFRESH, O_REFRESH_WAIT, O_FSWATCHER, O_FRONTEND, O_NO_FRONTEND,
	       O_EVENTS_FILE, O_DUMP, O_LOAD_XML, O_FRONTEND_USER, O_FE_PASS };
	static const struct option longopts[] = {
		{ "root", required_argument, NULL, O_ROOT },
		{ "listen", required_argument, NULL, O_LISTEN },
		{ "rundir", required_argument, NULL, O_RUNDIR },
		{ "ring-size", required_argument, NULL, O_RING_SIZE },
		{ "log-file", required_argument, NULL, O_LOG_FILE },
		{ "log-level", required_argument, NULL, O_LOG_LEVEL },
		{ "task-timeout", required_argument, NULL, O_TASK_TIMEOUT },
		{ "refresh-interval", required_argument, NULL, O_REFRESH },
		{ "refresh-max-wait", required_argument, NULL, O_REFRESH_WAIT },
		{ "fswatcher", required_argument, NULL, O_FSWATCHER },
		{ "frontend", required_argument, NULL, O_FRONTEND },
		{ "no-frontend", no_argument, NULL, O_NO_FRONTEND },
		{ "events-file", required_argument, NULL, O_EVENTS_FILE },
		{ "dump", no_argument, NULL, O_DUMP },
		{ "load-xml", required_argument, NULL, O_LOAD_XML },
		{ "frontend-user", required_argument, NULL, O_FRONTEND_USER },
		/* the frontend's limits, handed to it as they are */
		{ "max-connections", required_argument, NULL, O_FE_PASS },
		{ "sndbuf", required_argument, NULL, O_FE_PASS + 1 },
		{ "max-header-bytes", required_argument, NULL, O_FE_PASS + 2 },
		{ "max-url-bytes", required_argument, NULL, O_FE_PASS + 3 },
		{ "request-timeout", required_argument, NULL, O_FE_PASS + 4 },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct options opt = {
		.root = "/",
		.rundir = "/run/vminfod",
		.ring_size = 64u << 20,
		.log_level = LOG_DEBUG,
		.task_timeout_ms = QUEUE_DEFAULT_TIMEOUT_MS,
		.refresh_interval_ms = 300000,
		.refresh_idle_max_ms = 300000,
	};
	const char *load_xml = NULL;
	bool dump = false;
	int c;
	int idx = 0;
	while ((c = getopt_long(argc, argv, "h", longopts, &idx)) != -1) {
		int bad = 0;
		switch (c) {
		case O_ROOT: opt.root = optarg; break;
		case O_LISTEN:
			if (opt.nlisten >= LISTEN_MAX)
				bad = 1;
			else
				opt.listen[opt.nlisten++] = optarg;
			break;
		case O_RUNDIR: opt.rundir = optarg; break;
		case O_RING_SIZE: bad = ring_size_parse(optarg, &opt.ring_size); break;
		case O_LOG_FILE: opt.log_file = optarg; break;
		case O_LOG_LEVEL:
			opt.log_level = log_level_parse(optarg);
			bad = opt.log_level < 0;
			break;
		case O_TASK_TIMEOUT: bad = parse_ms(optarg, &opt.task_timeout_ms); break;
		case O_REFRESH: bad = parse_ms(optarg, &opt.refresh_interval_ms); break;
		case O_REFRESH_WAIT: bad = parse_ms(optarg, &opt.refresh_idle_max_ms); break;
		case O_FSWATCHER: opt.fswatcher_cmd = optarg; break;
		case O_FRONTEND: opt.frontend_cmd = optarg; break;
		case O_NO_FRONTEND: opt.no_frontend = true; break;
		case O_EVENTS_FILE: opt.events_file = optarg; break;
		case O_DUMP: dump = true; break;
		case O_LOAD_XML: load_xml = optarg; break;
		case O_FRONTEND_USER: opt.frontend_user = optarg; break;
		case O_FE_PASS:
		case O_FE_PASS + 1:
		case O_FE_PASS + 2:
		case O_FE_PASS + 3:
		case O_FE_PASS + 4: {
			uint64_t v;
			bad = parse_ms(optarg, &v) < 0 ||
			      opt.nfe_args + 2 > sizeof(opt.fe_args) / sizeof(opt.fe_args[0]);
			if (!bad) {
				opt.fe_args[opt.nfe_args++] = longopts[idx].name;
				opt.fe_args[opt.nfe_args++] = optarg;
			}
			break;
		}
		case 'h': fputs(usage_text, stdout); return 0;
		default: fputs(usage_text, stderr); return 2;
		}
		if (bad) {
			fprintf(stderr, "vminfod: bad value for --%s: %s\n", longopts[idx].name, optarg);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "vminfod: unexpected argument: %s\n", argv[optind]);
		fputs(usage_text, stderr);
		return 2;
	}
	if (load_xml || dump) {
		/* One-shot output is for people and scripts: only errors on
		 * stderr, not the per-VM warnings the daemon logs. */
		if (log_init("vminfod", NULL, LOG_ERROR) < 0)
			return 1;
		return load_xml ? oneshot_load_xml(load_xml) : oneshot_dump(opt.root);
	}
	/* Descriptors inherited from whoever started us are not ours to
	 * hand on: mark them close-on-exec so no child gets them.  The
	 * systemd sockets among them are passed on explicitly
	 * (spawn_frontend in supervisor.c). */
	if (close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
		fprintf(stderr, "vminfod: close_range: %s, ignoring\n", strerror(errno));
	int r = log_init("vminfod", opt.log_file, opt.log_level);
	if (r < 0) {
		fprintf(stderr, "vminfod: cannot open log file %s: %s\n", opt.log_file, strerror(-r));
		return 1;
	}
	if (opt.nlisten == 0)
		opt.listen[opt.nlisten++] = "127.0.0.1:9090";
	/* Privilege separation: the part that talks to clients runs as
	 * nobody unless told otherwise (DESIGN.md §2). */
	if (!opt.frontend_user && geteuid() == 0)
		opt.frontend_user = "nobody";
	else if (opt.frontend_user && !opt.frontend_user[0])
		opt.frontend_user = NULL;
	char *fsw_default = NULL, *fe_default = NULL;
	if (!opt.fswatcher_cmd)
		opt.fswatcher_cmd = getenv("FSWATCHER_CMD");
	if (!opt.fswatcher_cmd)
		opt.fswatcher_cmd = fsw_default = sibling("fswatcher");
	if (!opt.frontend_cmd && !opt.no_frontend)
		opt.frontend_cmd = fe_default = sibling("vminfod-frontend");
	if (!opt.fswatcher_cmd || (!opt.no_frontend && !opt.frontend_cmd)) {
		fprintf(stderr, "vminfod: cannot find the %s program; use --%s\n",
		        opt.fswatcher_cmd ? "vminfod-frontend" : "fswatcher",
		        opt.fswatcher_cmd ? "frontend" : "fswatcher");
		return 1;
	}
	log_info(NULL, "Starting vminfod");
	r = supervisor_run(&opt);
	free(fsw_default);
	free(fe_default);
	log_done();
	return r;
}
