/* test_fe_reqpath.c - request target parsing (spec/http-api.md §2). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../../frontend/reqpath.h"

/* Parse target; check seg[0] and seg[1] ("-" = absent). */
static void check(const char *target, const char *s0, const char *s1)
{
	size_t len = strlen(target);
	size_t wl = reqpath_work_size(len);
	char *work = malloc(wl);
	struct reqpath rp;
	assert_int_equal(reqpath_parse(target, len, work, wl, &rp), 0);
	const char *want[2] = { s0, s1 };
	for (int i = 0; i < 2; i++) {
		if (strcmp(want[i], "-") == 0) {
			assert_false(rp.seg[i].present);
			continue;
		}
		assert_true(rp.seg[i].present);
		if (rp.seg[i].len != strlen(want[i]) || memcmp(rp.seg[i].p, want[i], rp.seg[i].len) != 0)
			fail_msg("%s: seg[%d] is '%.*s', want '%s'", target, i, (int)rp.seg[i].len, rp.seg[i].p, want[i]);
	}
	free(work);
}

static void test_fe_reqpath_normalises_like_node(void **state)
{
	(void)state;
	check("/ping", "ping", "-");
	check("/ping/x", "ping", "x");
	check("//ping", "ping", "-");
	check("/foo/../status", "status", "-");
	check("/", "", "-");
	check("/vms/", "vms", "");
	check("/vms", "vms", "-");
	check("/vms/abc", "vms", "abc");
	check("/vms/abc/def", "vms", "abc");
	check("/vms/./abc/", "vms", "abc");
	check("/vms/abc%2Ddef", "vms", "abc%2Ddef");
	check("/../../ping", "ping", "-");
	check("/vms/..", "", "-");
	check("/vms/.", "vms", "-");
	check("/vms/x?full=1#frag", "vms", "x");
	check("/vms/x#frag?y", "vms", "x");
	check("/vms/a\"b", "vms", "a%22b");
	check("ping", "-", "-");
}

static void test_fe_reqpath_splits_query(void **state)
{
	(void)state;
	const char *t = "/status?full=true&x=1";
	char work[512];
	struct reqpath rp;
	assert_int_equal(reqpath_parse(t, strlen(t), work, sizeof(work), &rp), 0);
	assert_int_equal(rp.query_len, strlen("full=true&x=1"));
	assert_memory_equal(rp.query, "full=true&x=1", rp.query_len);
	assert_int_equal(reqpath_parse(t, strlen(t), work, 3, &rp), -ENOBUFS);
}

static bool full(const char *q)
{
	return reqpath_query_flag(q, strlen(q), "full");
}

static void test_fe_reqpath_full_flag_rules(void **state)
{
	(void)state;
	assert_true(full("full=true"));
	assert_true(full("full=1"));
	assert_true(full("full=false"));
	assert_true(full("full=0"));
	assert_true(full("full&full"));
	assert_true(full("full=&full="));
	assert_true(full("x=1&full=+"));
	assert_false(full("full"));
	assert_false(full("full="));
	assert_false(full(""));
	assert_false(full("fully=1"));
	assert_true(full("%66ull=1"));
	assert_false(reqpath_query_flag(NULL, 0, "full"));
}

static void test_fe_reqpath_query_value_is_decoded(void **state)
{
	(void)state;
	const char *q = "a=1&since=abc%3A12&since=zz";
	char v[64];
	size_t vl;
	assert_int_equal(reqpath_query(q, strlen(q), "since", v, sizeof(v), &vl), 2);
	assert_string_equal(v, "abc:12");
	assert_int_equal(vl, 6);
	char small[4];
	assert_int_equal(reqpath_query(q, strlen(q), "since", small, sizeof(small), &vl), 2);
	assert_string_equal(small, "abc");
	assert_int_equal(vl, 6);
	assert_int_equal(reqpath_query(q, strlen(q), "b", v, sizeof(v), &vl), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fe_reqpath_normalises_like_node),
		cmocka_unit_test(test_fe_reqpath_splits_query),
		cmocka_unit_test(test_fe_reqpath_full_flag_rules),
		cmocka_unit_test(test_fe_reqpath_query_value_is_decoded),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
