/*
 * watchchanges - wait for a set of changes with libvminfod's
 * vminfod_watch_for_changes(), for the integration tests.
 *
 *   watchchanges --port P [--host H] [--zonename Z] [--timeout MS]
 *                [--ready-timeout MS] CHANGES_JSON [-- COMMAND ARGS...]
 *
 * Opens the event stream, waits for ready, prints "ready", runs COMMAND
 * (the change to watch for, so it cannot happen before the watch), then
 * waits.  Success: prints "matched", exit 0.  Timeout: prints the error
 * message, then the JSON detail ({"wanted":…,"unmatched":…,"events":…})
 * on the next line, exit 1.  Any other error: message, exit 2.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../client/vminfod.h"
#include "buf.h"
#include "json.h"

static int
run_command(char **argv)
{
	int status;
	pid_t pid = fork();

	if (pid < 0)
		return -errno;
	if (pid == 0) {
		/* Its output is not ours: keep stdout for the result. */
		if (dup2(STDERR_FILENO, STDOUT_FILENO) < 0)
			_exit(127);
		execvp(argv[0], argv);
		_exit(127);
	}
	if (waitpid(pid, &status, 0) < 0)
		return -errno;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -ECHILD;
}

int
main(int argc, char **argv)
{
	const char *host = NULL, *zonename = NULL, *changes = NULL;
	unsigned port = 0;
	long timeout_ms = 10000;
	struct vminfod_stream_opts opts = { 0 };
	char **command = NULL;
	struct vminfod_error err = { 0 };
	struct vminfod_client *c;
	struct vminfod_watch *w;
	int i, r;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--") ) {
			command = argv + i + 1;
			break;
		} else if (!strcmp(argv[i], "--host") && i + 1 < argc)
			host = argv[++i];
		else if (!strcmp(argv[i], "--port") && i + 1 < argc)
			port = (unsigned)atoi(argv[++i]);
		else if (!strcmp(argv[i], "--zonename") && i + 1 < argc)
			zonename = argv[++i];
		else if (!strcmp(argv[i], "--ready-timeout") && i + 1 < argc)
			opts.ready_timeout_ms = atol(argv[++i]);
		else if (!strcmp(argv[i], "--timeout") && i + 1 < argc)
			timeout_ms = atol(argv[++i]);
		else if (!changes && argv[i][0] != '-')
			changes = argv[i];
		else {
			fprintf(stderr, "usage: watchchanges --port P [--host H] "
			    "[--zonename Z] [--timeout MS] [--ready-timeout MS] CHANGES [-- CMD...]\n");
			return 2;
		}
	}
	if (!changes) {
		fprintf(stderr, "watchchanges: CHANGES_JSON missing\n");
		return 2;
	}
	if (!(c = vminfod_client_new(host, port)) ||
	    vminfod_client_set_name(c, "watchchanges") < 0) {
		fprintf(stderr, "watchchanges: out of memory\n");
		return 2;
	}
	if (!(w = vminfod_watch_new(c, &opts, &err))) {
		printf("%s\n", err.message);
		vminfod_error_clear(&err);
		vminfod_client_free(c);
		return 2;
	}
	printf("ready\n");
	fflush(stdout);
	if (command && *command && (r = run_command(command)) < 0) {
		printf("command failed: %s\n", strerror(-r));
		vminfod_watch_free(w);
		vminfod_client_free(c);
		return 2;
	}
	r = vminfod_watch_for_zone_changes(w, zonename, changes, timeout_ms, &err);
	if (r == 0) {
		printf("matched\n");
	} else {
		struct buf b = BUF_INIT;

		printf("%s\n", err.message);
		if (err.detail && js_dump(err.detail, &b) == 0)
			printf("%s\n", b.data);
		buf_done(&b);
	}
	vminfod_error_clear(&err);
	vminfod_watch_free(w);
	vminfod_client_free(c);
	return r == 0 ? 0 : r == -ETIMEDOUT ? 1 : 2;
}
