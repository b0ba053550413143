/* test_timeutil.c - hrtime strings, pretty deltas (spec/daemon.md §10.2
 * vectors, from the original function) and ISO dates. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "timeutil.h"

static void check_delta(uint64_t s, uint64_t ns, const char *want)
{
	char out[80];
	tu_pretty_delta(s * TU_NS_PER_SEC + ns, out);
	assert_string_equal(out, want);
}

static void test_pretty_delta_matches_original_vectors(void **state)
{
	(void)state;
	check_delta(0, 0, "0.000000000s (0ns)");
	check_delta(0, 999, "0.000000999s (999ns)");
	check_delta(0, 1000, "0.000001000s (1us)");
	check_delta(0, 1500, "0.000001500s (1.5us)");
	check_delta(0, 82484118, "0.082484118s (82.48ms)");
	check_delta(0, 1125000, "0.001125000s (1.13ms)");
	check_delta(0, 999999999, "0.999999999s (1000ms)");
	check_delta(1, 0, "1.000000000s (1s)");
	check_delta(5, 125000000, "5.125000000s (5.13s)");
	check_delta(12, 345678901, "12.345678901s (12.35s)");
	check_delta(59, 999999999, "59.999999999s (60s)");
	check_delta(60, 0, "60.000000000s (1m)");
	check_delta(90, 0, "90.000000000s (1.5m)");
	check_delta(300, 500000000, "300.500000000s (5m)");
	check_delta(3599, 0, "3599.000000000s (59.98m)");
	check_delta(3600, 0, "3600.000000000s (1h)");
	check_delta(4050, 0, "4050.000000000s (1.13h)");
	check_delta(5000, 0, "5000.000000000s (1.39h)");
	check_delta(86400, 0, "86400.000000000s (1d)");
	check_delta(91234, 500000000, "91234.500000000s (1.06d)");
	check_delta(97200, 0, "97200.000000000s (1.13d)");
}

static void test_hrtime_string_pads_nanoseconds(void **state)
{
	(void)state;
	char out[32];
	tu_hrtime_str(12 * TU_NS_PER_SEC + 5, out);
	assert_string_equal(out, "12.000000005");
	tu_hrtime_str(0, out);
	assert_string_equal(out, "0.000000000");
}

static void test_iso_date_has_milliseconds(void **state)
{
	(void)state;
	char out[32];
	assert_true(tu_iso_date(1560919088000LL, out) > 0);
	assert_string_equal(out, "2019-06-19T04:38:08.000Z");
	assert_true(tu_iso_date(1560919088243LL, out) > 0);
	assert_string_equal(out, "2019-06-19T04:38:08.243Z");
	assert_true(tu_iso_date(0, out) > 0);
	assert_string_equal(out, "1970-01-01T00:00:00.000Z");
	assert_true(tu_iso_date(-1, out) > 0);
	assert_string_equal(out, "1969-12-31T23:59:59.999Z");
}

static void test_clocks_move_forward(void **state)
{
	(void)state;
	uint64_t a = tu_mono_ns(), b = tu_mono_ns();
	assert_true(b >= a);
	assert_true(tu_wall_ms() > 1500000000000LL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pretty_delta_matches_original_vectors),
		cmocka_unit_test(test_hrtime_string_pads_nanoseconds),
		cmocka_unit_test(test_iso_date_has_milliseconds),
		cmocka_unit_test(test_clocks_move_forward),
	};
	return cmocka_run_group_tests_name("timeutil", tests, NULL, NULL);
}
