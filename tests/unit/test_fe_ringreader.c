/* test_fe_ringreader.c - following the ring: load, poll, falling behind,
 * replaced file.  Uses the real ring writer on a temporary file. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "ring.h"
#include "../../frontend/ringreader.h"

#define NZONES 4

/* The writer side's model: what /vms should be. */
struct model {
	struct ring_writer *w;
	char json[NZONES][64];
	bool present[NZONES];
	unsigned counter;   /* makes every published VM differ */
};

static int snapshot_cb(struct ring_writer *w, void *arg)
{
	struct model *m = arg;
	struct ring_snap_vm vms[NZONES];
	static const char *names[NZONES] = { "z0", "z1", "z2", "z3" };
	size_t n = 0;
	for (int i = 0; i < NZONES; i++) {
		if (!m->present[i])
			continue;
		vms[n++] = (struct ring_snap_vm){ names[i], 2, m->json[i], strlen(m->json[i]) };
	}
	return ring_writer_snapshot(w, vms, n);
}

static void expected_array(const struct model *m, char *out, size_t cap)
{
	/* Zones are created in order z0..z3 and never deleted here, so /vms
	 * order is zone order. */
	size_t o = (size_t)snprintf(out, cap, "[");
	bool first = true;
	for (int i = 0; i < NZONES; i++) {
		if (!m->present[i])
			continue;
		o += (size_t)snprintf(out + o, cap - o, "%s%s", first ? "" : ",", m->json[i]);
		first = false;
	}
	snprintf(out + o, cap - o, "]");
}

/* Publish one create/modify of zone i with a payload of `pad` bytes. */
static void publish(struct model *m, int i, size_t pad)
{
	char z[3] = { 'z', (char)('0' + i), 0 };
	char *vm = malloc(pad + 64);
	snprintf(vm, pad + 64, "{\"zonename\":\"%s\",\"n\":%u,\"p\":\"%*s\"}", z, ++m->counter, (int)pad, "");
	enum ring_ev_type t = m->present[i] ? RING_EV_MODIFY : RING_EV_CREATE;
	uint64_t v = ring_writer_version(m->w) + 1;
	size_t cap = strlen(vm) + 256;
	char *line = malloc(cap);
	int pre = snprintf(line, cap, "{\"type\":\"%s\",\"zonename\":\"%s\",\"vm\":", t == RING_EV_CREATE ? "create" : "modify", z);
	int n = pre + snprintf(line + pre, cap - (size_t)pre, "%s,\"version\":%llu}\n", vm, (unsigned long long)v);
	m->present[i] = true;
	snprintf(m->json[i], sizeof(m->json[i]), "%.63s", vm);
	assert_true(strlen(vm) < sizeof(m->json[i]));
	assert_int_equal(ring_writer_event(m->w, t, z, 2, line, (size_t)n, (size_t)pre, strlen(vm)), 0);
	free(vm);
	free(line);
}

static void open_writer(struct model *m, const char *path, size_t size)
{
	bool kept;
	assert_int_equal(ring_writer_open(path, size, &m->w, &kept, NULL, 0), 0);
	ring_writer_set_snapshot_cb(m->w, snapshot_cb, m);
}

static void assert_same(struct ringreader *rr, const struct model *m)
{
	char want[512];
	expected_array(m, want, sizeof(want));
	struct rcbuf *a = vmset_array(ringreader_vms(rr));
	assert_string_equal(a->data, want);
	assert_int_equal(ringreader_version(rr), ring_writer_version(m->w));
	assert_string_equal(ringreader_epoch(rr), ring_writer_epoch(m->w));
}

static char *tmp_ring(void)
{
	char *p = strdup("/tmp/test_fe_ringreader.XXXXXX");
	int fd = mkstemp(p);
	assert_true(fd >= 0);
	close(fd);
	unlink(p);
	return p;
}

static void test_fe_ringreader_loads_snapshot_and_events(void **state)
{
	(void)state;
	char *path = tmp_ring();
	struct model m = { 0 };
	open_writer(&m, path, RING_MIN_SIZE);
	assert_int_equal(snapshot_cb(m.w, &m), 0);
	struct ringreader *rr;
	assert_int_equal(ringreader_open(path, &rr), 0);
	assert_same(rr, &m);
	assert_int_equal(ringreader_oldest(rr), 1);

	publish(&m, 0, 0);
	publish(&m, 1, 0);
	bool reset;
	assert_int_equal(ringreader_poll(rr, &reset), 2);
	assert_false(reset);
	assert_same(rr, &m);
	struct rcbuf *ev = ringreader_event(rr, 2);
	assert_non_null(ev);
	assert_non_null(strstr(ev->data, "\"version\":2}\n"));
	assert_null(ringreader_event(rr, 3));
	assert_int_equal(ringreader_poll(rr, &reset), 0);

	/* A second reader started later replays the same events. */
	publish(&m, 0, 0);
	struct ringreader *rr2;
	assert_int_equal(ringreader_open(path, &rr2), 0);
	assert_same(rr2, &m);
	assert_int_equal(ringreader_oldest(rr2), 1);
	ringreader_free(rr2);
	ringreader_free(rr);
	ring_writer_close(m.w);
	unlink(path);
	free(path);
}

static void test_fe_ringreader_recovers_after_falling_behind(void **state)
{
	(void)state;
	char *path = tmp_ring();
	struct model m = { 0 };
	open_writer(&m, path, RING_MIN_SIZE);
	assert_int_equal(snapshot_cb(m.w, &m), 0);
	struct ringreader *rr;
	assert_int_equal(ringreader_open(path, &rr), 0);
	/* Far more than the ring holds: our cursor is overwritten. */
	for (int i = 0; i < 2000; i++)
		publish(&m, i % NZONES, 0);
	bool reset;
	assert_int_equal(ringreader_poll(rr, &reset), 0);
	assert_true(reset);
	assert_same(rr, &m);
	/* The window holds no more than the ring does. */
	assert_true(ringreader_oldest(rr) > 1);
	assert_non_null(ringreader_event(rr, ringreader_version(rr)));
	assert_null(ringreader_event(rr, ringreader_oldest(rr) - 1));

	/* Keeping up: the window follows the ring's oldest event. */
	for (int round = 0; round < 50; round++) {
		for (int i = 0; i < 40; i++)
			publish(&m, i % NZONES, 0);
		int n = ringreader_poll(rr, &reset);
		assert_false(reset);
		assert_int_equal(n, 40);
		assert_same(rr, &m);
	}
	ringreader_free(rr);
	ring_writer_close(m.w);
	unlink(path);
	free(path);
}

static void test_fe_ringreader_follows_a_replaced_file(void **state)
{
	(void)state;
	char *path = tmp_ring();
	struct model m = { 0 };
	open_writer(&m, path, RING_MIN_SIZE);
	assert_int_equal(snapshot_cb(m.w, &m), 0);
	publish(&m, 0, 0);
	struct ringreader *rr;
	assert_int_equal(ringreader_open(path, &rr), 0);
	char old_epoch[RING_EPOCH_LEN + 1];
	strcpy(old_epoch, ringreader_epoch(rr));
	ring_writer_close(m.w);

	/* Another size: the writer starts a new epoch in a new file. */
	struct model m2 = { 0 };
	open_writer(&m2, path, 2 * RING_MIN_SIZE);
	assert_int_equal(snapshot_cb(m2.w, &m2), 0);
	publish(&m2, 2, 0);
	bool reset;
	assert_true(ringreader_poll(rr, &reset) >= 0);
	assert_true(reset);
	assert_string_not_equal(ringreader_epoch(rr), old_epoch);
	assert_same(rr, &m2);
	ringreader_free(rr);
	ring_writer_close(m2.w);
	unlink(path);
	free(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fe_ringreader_loads_snapshot_and_events),
		cmocka_unit_test(test_fe_ringreader_recovers_after_falling_behind),
		cmocka_unit_test(test_fe_ringreader_follows_a_replaced_file),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
