/*
 * bench-touch.c - the publisher behind `make bench`'s fan-out runs: makes
 * vminfod emit exactly one "modify" event per request, stamped with the
 * referee publisher's clock so that the referee can time it end to end.
 *
 * usage: bench-touch ROOT ZONENAME [ZONENAME...]
 *            one event: BENCH_SEQ and BENCH_TS_NS from the environment
 *        bench-touch --serve FIFO ROOT ZONENAME [ZONENAME...]
 *            one event per line "<BENCH_SEQ> <BENCH_TS_NS>" read from FIFO,
 *            until SIGTERM
 *
 * An event writes {"customer_metadata":{"bench_ts_ns":"<BENCH_TS_NS>"},
 * "internal_metadata":{}} to <ROOT>/zones/<zone>/config/metadata.json the
 * way the real tools do: a temporary file in the same directory, then a
 * rename.  Event BENCH_SEQ (1, 2, ...) goes to zone number
 * (BENCH_SEQ - 1) mod count + 1, so that consecutive changes never name
 * the same file: the supervisor's queue drops a task identical to one
 * still waiting, and two changes of one file in a burst would make a
 * single event.  BENCH_TS_NS (CLOCK_REALTIME ns, taken by the referee's
 * publisher just before it starts the publish command) must differ from
 * the zone's previous value, or no event comes out.
 *
 * The referee runs its publish command through sh once per event and
 * times from before that, so the command's own start-up is part of every
 * figure.  With --serve, the command is a shell builtin writing one line
 * to the FIFO (`printf ... >FIFO`) and this resident process does the
 * file work: no second program is started per event.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int fail(const char *what, const char *path)
{
	fprintf(stderr, "bench-touch: %s %s: %s\n", what, path, strerror(errno));
	return 1;
}

static int touch(const char *root, char **zones, int nzones, long long seq, const char *ts)
{
	if (!*ts || strspn(ts, "0123456789") != strlen(ts) || strlen(ts) > 30) {
		fprintf(stderr, "bench-touch: BENCH_TS_NS is not a number\n");
		return 2;
	}
	if (seq < 1)
		seq = 1;
	const char *zone = zones[(seq - 1) % nzones];
	char dir[4096], tmp[4096 + 64], dst[4096 + 64], body[256];
	int n = snprintf(dir, sizeof(dir), "%s/zones/%s/config", root, zone);
	if (n < 0 || (size_t)n >= sizeof(dir)) {
		fprintf(stderr, "bench-touch: path too long\n");
		return 2;
	}
	snprintf(tmp, sizeof(tmp), "%s/.metadata.json.bench.%ld", dir, (long)getpid());
	snprintf(dst, sizeof(dst), "%s/metadata.json", dir);
	int blen = snprintf(body, sizeof(body), "{\"customer_metadata\":{\"bench_ts_ns\":\"%s\"},\"internal_metadata\":{}}\n",
			    ts);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return fail("cannot create", tmp);
	if (write(fd, body, (size_t)blen) != blen) {
		int e = errno;
		close(fd);
		unlink(tmp);
		errno = e;
		return fail("cannot write", tmp);
	}
	if (close(fd) < 0) {
		unlink(tmp);
		return fail("cannot close", tmp);
	}
	if (rename(tmp, dst) < 0) {
		int e = errno;
		unlink(tmp);
		errno = e;
		return fail("cannot rename to", dst);
	}
	return 0;
}

/* One event per line of the FIFO.  It is opened read-write so that it
 * never reads end-of-file between two writers. */
static int serve(const char *fifo, const char *root, char **zones, int nzones)
{
	int fd = open(fifo, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return fail("cannot open", fifo);
	char buf[4096];
	size_t have = 0;
	for (;;) {
		ssize_t r = read(fd, buf + have, sizeof(buf) - 1 - have);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return r < 0 ? fail("cannot read", fifo) : 0;
		have += (size_t)r;
		buf[have] = '\0';
		char *line = buf, *nl;
		while ((nl = strchr(line, '\n'))) {
			*nl = '\0';
			char *sp = strchr(line, ' ');
			if (sp) {
				*sp = '\0';
				(void)touch(root, zones, nzones, strtoll(line, NULL, 10), sp + 1);
			} else {
				fprintf(stderr, "bench-touch: bad request line \"%s\"\n", line);
			}
			line = nl + 1;
		}
		have = (size_t)(buf + have - line);
		memmove(buf, line, have);
		if (have == sizeof(buf) - 1)
			have = 0;   /* a line longer than the buffer: drop it */
	}
}

int main(int argc, char **argv)
{
	if (argc >= 5 && strcmp(argv[1], "--serve") == 0)
		return serve(argv[2], argv[3], argv + 4, argc - 4);
	if (argc < 3) {
		fprintf(stderr, "usage: bench-touch ROOT ZONENAME [ZONENAME...]\n"
				"       bench-touch --serve FIFO ROOT ZONENAME [ZONENAME...]\n");
		return 2;
	}
	const char *ts = getenv("BENCH_TS_NS");
	const char *seq = getenv("BENCH_SEQ");
	if (!ts) {
		fprintf(stderr, "bench-touch: BENCH_TS_NS is not set\n");
		return 2;
	}
	return touch(argv[1], argv + 2, argc - 2, seq ? strtoll(seq, NULL, 10) : 1, ts);
}
