/*
 * fuzz_ring.c - the ring file as any reader or a restarting writer finds
 * it, whatever its bytes.
 *
 * At start a valid ring (RING_MIN_SIZE bytes: a wrapped data area, PAD
 * records, several snapshots, a status text) is built with the real
 * writer and kept in memory as a template.  Each input then makes a file:
 *
 *   byte 0 % 4 == 0   the rest of the input is the whole file
 *   otherwise         the template with patches applied: records of
 *                     { u8 where, u16 offset (little-endian), u8 n, n bytes };
 *                     `where` picks the area the offset is relative to
 *                     (header, index, status, data, anywhere); with
 *                     byte 0 % 4 == 3 the file is also truncated to the
 *                     size given by the next two bytes (x 8)
 *
 * and the file goes through everything a reader does (open, epoch,
 * writer facts, head/oldest versions, snapshot, each event from
 * oldest - 1 to head + 1, status, replaced) and what a restarting writer
 * does (open: keep or start a new epoch; last state; one more event).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "fuzz_common.h"
#include "ring.h"

static char dir[PATH_MAX], path[PATH_MAX], tmppath[PATH_MAX];
static uint8_t *tmpl;
static size_t tmpl_size;
static uint8_t *file;

static const char *const VMS[][2] = {
	{ "web1", "{\"zonename\":\"web1\",\"ram\":1024}" },
	{ "db2", "{\"zonename\":\"db2\",\"ram\":2048,\"tags\":{}}" },
	{ "x", "{}" },
};

static int snap_cb(struct ring_writer *w, void *arg)
{
	struct ring_snap_vm vms[3];
	for (size_t i = 0; i < 3; i++)
		vms[i] = (struct ring_snap_vm){ VMS[i][0], strlen(VMS[i][0]), VMS[i][1], strlen(VMS[i][1]) };
	return ring_writer_snapshot(w, vms, 3);
}

static int append_event(struct ring_writer *w, unsigned i)
{
	char line[512];
	const char *z = VMS[i % 3][0];
	uint64_t v = ring_writer_version(w) + 1;
	int pre = snprintf(line, sizeof(line), "{\"type\":\"modify\",\"zonename\":\"%s\",\"vm\":", z);
	int n = snprintf(line + pre, sizeof(line) - (size_t)pre, "{\"zonename\":\"%s\",\"ram\":%u}", z, i);
	int total = pre + n;
	total += snprintf(line + total, sizeof(line) - (size_t)total, ",\"version\":%llu,\"pad\":\"%*s\"}\n",
			  (unsigned long long)v, (int)(i % 97), "");
	return ring_writer_event(w, i % 7 == 6 ? RING_EV_DELETE : RING_EV_MODIFY, z, strlen(z), line,
				 (size_t)total, i % 7 == 6 ? 0 : (size_t)pre, i % 7 == 6 ? 0 : (size_t)n);
}

static void cleanup(void)
{
	(void)unlink(path);
	(void)unlink(tmppath);
	(void)rmdir(dir);
}

static void write_file(const uint8_t *data, size_t len)
{
	/* A new inode each time: the previous writer may have renamed one
	 * over the path, and readers must not see the old mapping change. */
	(void)unlink(path);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	size_t off = 0;
	while (fd >= 0 && off < len) {
		ssize_t n = write(fd, data + off, len - off);
		if (n <= 0)
			break;
		off += (size_t)n;
	}
	if (fd < 0 || off != len || close(fd) < 0) {
		perror(path);
		abort();
	}
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_log_init();
	const char *tmp = getenv("TMPDIR");
	if ((size_t)snprintf(dir, sizeof(dir), "%s/fuzz_ring.XXXXXX", tmp && *tmp ? tmp : "/tmp") >= sizeof(dir))
		abort();
	if (!mkdtemp(dir)) {
		perror(dir);
		abort();
	}
	if ((size_t)snprintf(path, sizeof(path), "%s/vminfod.ring", dir) >= sizeof(path))
		abort();
	if ((size_t)snprintf(tmppath, sizeof(tmppath), "%s/vminfod.ring.tmp", dir) >= sizeof(tmppath))
		abort();
	atexit(cleanup);

	struct ring_writer *w;
	bool kept;
	if (ring_writer_open(path, RING_MIN_SIZE, &w, &kept, NULL, 0) < 0)
		abort();
	ring_writer_set_snapshot_cb(w, snap_cb, NULL);
	if (snap_cb(w, NULL) < 0)
		abort();
	for (unsigned i = 0; i < 400; i++)
		if (append_event(w, i) < 0)
			abort();
	static const char status[] = "{\"state\":\"running\",\"pid\":42,\"queue\":[]}";
	if (ring_writer_status(w, status, sizeof(status) - 1) < 0)
		abort();
	ring_writer_heartbeat(w, 123456789);
	ring_writer_close(w);

	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0)
		abort();
	tmpl_size = (size_t)st.st_size;
	tmpl = malloc(tmpl_size);
	file = malloc(tmpl_size);
	if (!tmpl || !file || read(fd, tmpl, tmpl_size) != (ssize_t)tmpl_size)
		abort();
	close(fd);
	return 0;
}

static void on_vm(void *arg, const char *z, size_t zl, const char *j, size_t jl)
{
	size_t *sum = arg;
	/* The first and last bytes and the terminating NULs: ASan reports a
	 * pointer or length past the copy. */
	*sum += (unsigned char)z[0] + (unsigned char)z[zl] + (unsigned char)j[0] + (unsigned char)j[jl];
	if (zl)
		*sum += (unsigned char)z[zl - 1];
	if (jl)
		*sum += (unsigned char)j[jl - 1];
}

static void read_all(void)
{
	struct ring_reader *r;
	if (ring_reader_open(path, &r) < 0)
		return;
	char epoch[RING_EPOCH_LEN + 1];
	(void)ring_reader_epoch(r, epoch);
	pid_t pid;
	uint64_t gen, hb;
	ring_reader_writer(r, &pid, &gen, &hb);
	uint64_t head = ring_reader_head_version(r);
	uint64_t oldest = ring_reader_oldest_version(r);
	struct ring_rec rec = RING_REC_INIT;
	if (ring_reader_snapshot(r, &rec) == 0) {
		size_t sum = 0;
		for (size_t i = 0; i < rec.nvms; i++)
			on_vm(&sum, rec.vms[i].zonename, rec.vms[i].zonename_len, rec.vms[i].json,
			      rec.vms[i].json_len);
	}
	/* Bounded whatever the header claims. */
	uint64_t from = oldest ? oldest - 1 : 0;
	for (uint64_t v = from, k = 0; k < 600 && v <= head + 1; v++, k++) {
		if (ring_reader_event(r, v, &rec) == 0) {
			size_t sum = 0;
			on_vm(&sum, rec.zonename, rec.zonename_len, rec.line, rec.line_len);
			if (rec.vm_off > rec.line_len || rec.vm_len > rec.line_len - rec.vm_off)
				abort();
		}
	}
	(void)ring_reader_event(r, UINT64_MAX, &rec);
	ring_rec_done(&rec);
	struct buf st = BUF_INIT;
	(void)ring_reader_status(r, &st);
	buf_done(&st);
	(void)ring_reader_replaced(r);
	ring_reader_close(r);
}

static void write_all(void)
{
	struct ring_writer *w;
	bool kept;
	char why[64];
	if (ring_writer_open(path, RING_MIN_SIZE, &w, &kept, why, sizeof(why)) < 0)
		return;
	ring_writer_set_snapshot_cb(w, snap_cb, NULL);
	size_t sum = 0;
	if (kept)
		(void)ring_writer_last_state(w, on_vm, &sum);
	for (unsigned i = 0; i < 3; i++)
		(void)append_event(w, i);
	(void)ring_writer_status(w, "{}", 2);
	ring_writer_close(w);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	unsigned mode = data[0] % 4;
	size_t len = tmpl_size;
	if (mode == 0) {
		write_file(data + 1, size - 1);
	} else {
		memcpy(file, tmpl, tmpl_size);
		size_t i = 1;
		if (mode == 3 && size >= 3) {
			len = ((size_t)data[1] | (size_t)data[2] << 8) * 8;
			if (len > tmpl_size)
				len = tmpl_size;
			i = 3;
		}
		/* Area bases from the template's own header (offsets 24..56). */
		static const size_t hdr_field[] = { 0, 24, 40, 56, 0 };
		while (i + 4 <= size) {
			unsigned where = data[i] % 5;
			size_t off = (size_t)data[i + 1] | (size_t)data[i + 2] << 8;
			size_t n = data[i + 3] % 33;
			i += 4;
			uint64_t base = 0;
			if (where >= 1 && where <= 3)
				memcpy(&base, tmpl + hdr_field[where], sizeof(base));
			if (where == 4)
				off *= 2;
			off = (size_t)((base + off) % tmpl_size);
			if (n > size - i)
				n = size - i;
			if (n > tmpl_size - off)
				n = tmpl_size - off;
			memcpy(file + off, data + i, n);
			i += n;
		}
		write_file(file, len);
	}
	read_all();
	write_all();
	read_all();
	return 0;
}
