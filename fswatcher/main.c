/*
 * main.c - fswatcher: watch files with commands read from stdin and
 * notifications written to stdout (spec/fswatcher.md; protocol and port
 * extensions in proto.h).
 *
 * One thread, one poll() loop over stdin and the inotify fd.  stdin is
 * read by hand into a buffer and cut into upstream's fgets-sized pieces,
 * so a partial line never blocks event delivery.  Every message is
 * formatted completely into one output buffer, written with one write(2)
 * loop at the end of each turn of the loop (or once OUT_FLUSH bytes are
 * waiting), so lines are never interleaved or split, and a burst of
 * commands (thousands of WATCHes at the daemon's boot) costs one write
 * per batch rather than one per response.
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "proto.h"
#include "watch.h"

/* Bytes of inotify events handled before stdin gets a turn. */
#define EVENT_BUDGET (256 * 1024)
/* stdin buffer: one whole piece plus a read's worth. */
#define IN_CAP (PROTO_MAX_CMD_LEN + 8192)
/* Output waiting beyond this is written at once (a STATUS reply can be
 * larger: it is written whole). */
#define OUT_FLUSH (32 * 1024)

static const char usage_text[] =
	"Usage: fswatcher [-hrj]\n"
	"\n"
	"Watch files using event ports with commands sent to\n"
	"stdin and event notifications sent to stdout.\n"
	"\n"
	"Options\n"
	"  -h             print this message and exit\n"
	"  -j             JSON output\n"
	"  -r             print 'ready' event at start\n";

/* Shown after the usage text when -p is given too (port extensions). */
static const char usage_ext_text[] =
	"  -p             remember paths that do not exist yet and print an\n"
	"                 'exists' message when they appear (protocol version 1)\n"
	"  -m <max>       watch at most <max> paths, pending ones included\n";

struct fswatcher {
	bool json;
	bool pending;
	struct watch *watch;
	struct buf out;
	char in[IN_CAP];
	size_t in_start;   /* unconsumed input is in[in_start .. in_len) */
	size_t in_len;
	char piece[PROTO_MAX_CMD_LEN + 1];
	char msg[PROTO_MAX_CMD_LEN + 128];
};

static void die(const char *what, int err)
{
	fprintf(stderr, "fswatcher: %s: %s\n", what, strerror(err));
	exit(1);
}

static struct proto_time now(void)
{
	struct timespec ts;
	if (clock_gettime(CLOCK_MONOTONIC, &ts) < 0)
		die("clock_gettime", errno);
	return (struct proto_time){ (uint64_t)ts.tv_sec, (uint64_t)ts.tv_nsec };
}

/* Write every message waiting in fs->out. */
static void flush_out(struct fswatcher *fs)
{
	const char *p = fs->out.data;
	size_t left = fs->out.len;
	while (left > 0) {
		ssize_t n = write(STDOUT_FILENO, p, left);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("write stdout", errno);
		}
		p += n;
		left -= (size_t)n;
	}
	buf_reset(&fs->out);
}

/* A message was appended to fs->out (r: the formatter's result). */
static void flush_msg(struct fswatcher *fs, int r)
{
	if (r < 0)
		die("out of memory", -r);
	if (fs->out.len >= OUT_FLUSH)
		flush_out(fs);
}

static void on_note(void *arg, enum watch_note note, const char *path,
	uint32_t revents, bool final)
{
	struct fswatcher *fs = arg;
	int r = 0;
	switch (note) {
	case WATCH_NOTE_EVENT:
		r = proto_fmt_event(&fs->out, fs->json, now(), path, revents, final);
		break;
	case WATCH_NOTE_EXISTS:
		r = proto_fmt_exists(&fs->out, fs->json, now(), path);
		break;
	case WATCH_NOTE_OVERFLOW:
		r = proto_fmt_overflow(&fs->out, fs->json, now());
		break;
	}
	flush_msg(fs, r);
}

static int fmt_status(struct fswatcher *fs, uint64_t key)
{
	const char **files = NULL, **pending = NULL;
	long nfiles = watch_list(fs->watch, false, &files);
	long npending = 0;
	if (nfiles < 0)
		return (int)nfiles;
	if (fs->pending) {
		npending = watch_list(fs->watch, true, &pending);
		if (npending < 0) {
			free(files);
			return (int)npending;
		}
		proto_status_sort(pending, (size_t)npending);
	}
	proto_status_sort(files, (size_t)nfiles);
	int r = proto_fmt_status(&fs->out, fs->json, now(), key, files, (size_t)nfiles,
		getpid(), pending, (size_t)npending);
	free(files);
	free(pending);
	return r;
}

static void run_command(struct fswatcher *fs, char *piece)
{
	struct proto_cmd cmd;
	proto_parse(piece, &cmd);
	enum watch_result res;
	int r;
	switch (cmd.kind) {
	case PROTO_CMD_ERROR:
		r = proto_fmt_error(&fs->out, fs->json, now(), cmd.key, cmd.code, cmd.message);
		break;
	case PROTO_CMD_WATCH:
		res = watch_add(fs->watch, cmd.path, fs->msg, sizeof(fs->msg));
		r = proto_fmt_response(&fs->out, fs->json, now(), cmd.key, res != WATCH_FAIL,
			cmd.path, fs->msg);
		break;
	case PROTO_CMD_UNWATCH:
		res = watch_remove(fs->watch, cmd.path, fs->msg, sizeof(fs->msg));
		r = proto_fmt_response(&fs->out, fs->json, now(), cmd.key, res != WATCH_FAIL,
			cmd.path, fs->msg);
		break;
	case PROTO_CMD_STATUS:
	default:
		r = fmt_status(fs, cmd.key);
		break;
	}
	flush_msg(fs, r);
}

static void run_piece(struct fswatcher *fs, const char *data, size_t len)
{
	memcpy(fs->piece, data, len);
	fs->piece[len] = '\0';
	run_command(fs, fs->piece);
}

/* Read what stdin has and run every complete piece.  False at EOF (after
 * running the last, unterminated piece as fgets would return it). */
static bool read_stdin(struct fswatcher *fs)
{
	if (fs->in_start > 0) {
		memmove(fs->in, fs->in + fs->in_start, fs->in_len - fs->in_start);
		fs->in_len -= fs->in_start;
		fs->in_start = 0;
	}
	ssize_t n;
	do {
		n = read(STDIN_FILENO, fs->in + fs->in_len, sizeof(fs->in) - fs->in_len);
	} while (n < 0 && errno == EINTR);
	if (n < 0) {
		fprintf(stderr, "stdin fgets: %s\n", strerror(errno));
		abort();
	}
	fs->in_len += (size_t)n;
	size_t len;
	while ((len = proto_piece_len(fs->in + fs->in_start, fs->in_len - fs->in_start)) > 0) {
		run_piece(fs, fs->in + fs->in_start, len);
		fs->in_start += len;
	}
	if (n == 0) {
		if (fs->in_len > fs->in_start)
			run_piece(fs, fs->in + fs->in_start, fs->in_len - fs->in_start);
		fs->in_start = fs->in_len = 0;
		return false;
	}
	return true;
}

static void usage(FILE *f, bool ext)
{
	fputs(usage_text, f);
	if (ext)
		fputs(usage_ext_text, f);
}

int main(int argc, char **argv)
{
	static struct fswatcher fs;   /* large buffers: keep them off the stack */
	bool help = false, ready = false, bad = false;
	size_t max = PROTO_DEFAULT_MAX;
	int c;
	while ((c = getopt(argc, argv, "hjrpm:")) != -1) {
		switch (c) {
		case 'h':
			help = true;
			break;
		case 'j':
			fs.json = true;
			break;
		case 'r':
			ready = true;
			break;
		case 'p':
			fs.pending = true;
			break;
		case 'm': {
			char *end;
			errno = 0;
			unsigned long long v = strtoull(optarg, &end, 10);
			if (errno != 0 || *end != '\0' || end == optarg || v == 0) {
				fprintf(stderr, "fswatcher: invalid -m value '%s'\n", optarg);
				bad = true;
			}
			max = (size_t)v;
			break;
		}
		default:
			bad = true;
			break;
		}
	}
	if (bad) {
		usage(stderr, fs.pending);
		return 1;
	}
	if (help) {
		usage(stdout, fs.pending);
		return 0;
	}

	fs.watch = watch_new(max, fs.pending, on_note, &fs);
	if (fs.watch == NULL)
		die("inotify_init1", errno);
	if (ready) {
		flush_msg(&fs, proto_fmt_ready(&fs.out, fs.json, now(),
			fs.pending ? PROTO_VERSION : 0));
		flush_out(&fs);
	}

	struct pollfd pfd[2] = {
		{ .fd = STDIN_FILENO, .events = POLLIN },
		{ .fd = watch_fd(fs.watch), .events = POLLIN },
	};
	for (;;) {
		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			die("poll", errno);
		}
		if (pfd[1].revents & POLLIN) {
			int r = watch_process(fs.watch, EVENT_BUDGET);
			if (r < 0) {
				flush_out(&fs);
				die("read inotify", -r);
			}
			flush_out(&fs);
		}
		if (pfd[0].revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL)) {
			bool open = read_stdin(&fs);
			/* Judge paths that commands left to check (a pending path
			 * that appeared while its WATCH failed). */
			int r = watch_process(fs.watch, EVENT_BUDGET);
			if (r < 0) {
				flush_out(&fs);
				die("read inotify", -r);
			}
			if (!open) {
				flush_out(&fs);
				fprintf(stderr, "fswatcher: stdin closed\n");
				watch_free(fs.watch);
				buf_done(&fs.out);
				return 0;
			}
			flush_out(&fs);
		}
	}
}
