/* test_counters.c - histogram buckets and the facts /metrics renders. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "../../supervisor/counters.h"
#include "timeutil.h"

static void test_counters_bucket_bounds_are_inclusive(void **state)
{
	struct histogram h = { 0 };
	counters_observe(&h, 1000000);            /* exactly 1 ms: first bucket */
	counters_observe(&h, 1000001);            /* just above: second */
	counters_observe(&h, 31ULL * TU_NS_PER_SEC); /* above the last bound */
	assert_int_equal(h.counts[0], 1);
	assert_int_equal(h.counts[1], 1);
	assert_int_equal(h.overflow, 1);
	assert_int_equal(h.count, 3);
	assert_int_equal(h.sum_ns, 1000000 + 1000001 + 31ULL * TU_NS_PER_SEC);
}

static void test_counters_tasks_by_result(void **state)
{
	struct counters c = { 0 };
	counters_task(&c, COUNTERS_TASK_OK, 5000);
	counters_task(&c, COUNTERS_TASK_OK, 5000);
	counters_task(&c, COUNTERS_TASK_TIMEOUT, 61ULL * TU_NS_PER_SEC);
	counters_refresh(&c, 20ULL * 1000000);
	json_t *f = counters_facts(&c);
	assert_non_null(f);
	json_t *tasks = json_object_get(f, "tasks");
	assert_int_equal(json_integer_value(json_object_get(tasks, "ok")), 2);
	assert_int_equal(json_integer_value(json_object_get(tasks, "error")), 0);
	assert_int_equal(json_integer_value(json_object_get(tasks, "timeout")), 1);
	json_t *td = json_object_get(f, "task_duration");
	assert_int_equal(json_integer_value(json_object_get(td, "count")), 3);
	assert_int_equal(json_integer_value(json_object_get(td, "inf")), 1);
	assert_int_equal(json_array_size(json_object_get(td, "le")), COUNTERS_BUCKETS);
	assert_int_equal(json_integer_value(json_array_get(json_object_get(td, "counts"), 0)), 2);
	json_t *rd = json_object_get(f, "refresh_duration");
	assert_int_equal(json_integer_value(json_object_get(rd, "count")), 1);
	/* 20 ms lands in the 25 ms bucket (index 4) */
	assert_int_equal(json_integer_value(json_array_get(json_object_get(rd, "counts"), 4)), 1);
	json_decref(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_counters_bucket_bounds_are_inclusive),
		cmocka_unit_test(test_counters_tasks_by_result),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
