/* test_strmap.c - the insertion-ordered string map. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "strmap.h"

static void test_strmap_keeps_insertion_order(void **state)
{
	(void)state;
	struct strmap m = STRMAP_INIT;
	int a = 1, b = 2, c = 3;
	void *old;
	assert_int_equal(strmap_set(&m, "b", 1, &b, NULL), 0);
	assert_int_equal(strmap_set(&m, "a", 1, &a, NULL), 0);
	assert_int_equal(strmap_set(&m, "c", 1, &c, NULL), 0);
	assert_int_equal(strmap_set(&m, "b", 1, &c, &old), 0);
	assert_ptr_equal(old, &b);
	const char *want[] = { "b", "a", "c" };
	size_t i = 0;
	for (struct strmap_entry *e = m.head; e; e = e->next)
		assert_string_equal(e->key, want[i++]);
	assert_int_equal(i, 3);
	assert_ptr_equal(strmap_del(&m, "a", 1), &a);
	assert_null(strmap_get(&m, "a", 1));
	assert_int_equal(strmap_count(&m), 2);
	assert_int_equal(strmap_set(&m, "a", 1, &a, NULL), 0);
	assert_string_equal(m.tail->key, "a");
	strmap_done(&m);
}

static void test_strmap_survives_many_inserts_and_deletes(void **state)
{
	(void)state;
	struct strmap m = STRMAP_INIT;
	char key[32];
	static int vals[20000];
	for (int i = 0; i < 20000; i++) {
		int n = snprintf(key, sizeof(key), "zone-%d", i);
		vals[i] = i;
		assert_int_equal(strmap_set(&m, key, (size_t)n, &vals[i], NULL), 0);
	}
	for (int i = 0; i < 20000; i += 2) {
		int n = snprintf(key, sizeof(key), "zone-%d", i);
		assert_ptr_equal(strmap_del(&m, key, (size_t)n), &vals[i]);
	}
	assert_int_equal(strmap_count(&m), 10000);
	for (int i = 0; i < 20000; i++) {
		int n = snprintf(key, sizeof(key), "zone-%d", i);
		int *v = strmap_get(&m, key, (size_t)n);
		if (i % 2)
			assert_int_equal(*v, i);
		else
			assert_null(v);
	}
	strmap_done(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_strmap_keeps_insertion_order),
		cmocka_unit_test(test_strmap_survives_many_inserts_and_deletes),
	};
	return cmocka_run_group_tests_name("strmap", tests, NULL, NULL);
}
