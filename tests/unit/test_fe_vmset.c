/* test_fe_vmset.c - the frontend's VM set and its /vms texts. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "../../frontend/vmset.h"

static void put(struct vmset *s, const char *z, const char *json)
{
	struct rcbuf *b = rcbuf_dup(json, strlen(json));
	assert_non_null(b);
	assert_int_equal(vmset_put(s, z, strlen(z), b, b->data, b->len), 0);
	rcbuf_unref(b);
}

static void assert_array(struct vmset *s, const char *want)
{
	struct rcbuf *a = vmset_array(s);
	assert_non_null(a);
	assert_int_equal(a->len, strlen(want));
	assert_memory_equal(a->data, want, a->len);
}

static void test_fe_vmset_empty_is_empty_array(void **state)
{
	(void)state;
	struct vmset *s = vmset_new();
	assert_array(s, "[]");
	struct rcbuf *str = vmset_array_string(s);
	assert_string_equal(str->data, "\"[]\"");
	vmset_free(s);
}

static void test_fe_vmset_keeps_insertion_order_on_replace(void **state)
{
	(void)state;
	struct vmset *s = vmset_new();
	put(s, "b", "{\"b\":1}");
	put(s, "a", "{\"a\":1}");
	put(s, "c", "{\"c\":1}");
	assert_array(s, "[{\"b\":1},{\"a\":1},{\"c\":1}]");
	put(s, "b", "{\"b\":2}");
	assert_array(s, "[{\"b\":2},{\"a\":1},{\"c\":1}]");
	assert_int_equal(vmset_del(s, "a", 1), 0);
	assert_int_equal(vmset_del(s, "a", 1), -ENOENT);
	assert_array(s, "[{\"b\":2},{\"c\":1}]");
	put(s, "a", "{\"a\":3}");
	assert_array(s, "[{\"b\":2},{\"c\":1},{\"a\":3}]");
	assert_int_equal(vmset_count(s), 3);
	const char *json;
	size_t len;
	assert_true(vmset_get(s, "c", 1, NULL, &json, &len));
	assert_int_equal(len, 7);
	assert_memory_equal(json, "{\"c\":1}", 7);
	assert_false(vmset_get(s, "d", 1, NULL, NULL, NULL));
	vmset_free(s);
}

static void test_fe_vmset_index_keys_sort_first(void **state)
{
	(void)state;
	struct vmset *s = vmset_new();
	put(s, "z", "1");
	put(s, "17", "2");
	put(s, "3", "3");
	put(s, "03", "4");   /* leading zero: not an index */
	assert_array(s, "[3,2,1,4]");
	vmset_free(s);
}

static void test_fe_vmset_array_string_escapes_quotes(void **state)
{
	(void)state;
	struct vmset *s = vmset_new();
	put(s, "z1", "{\"a\":\"x\\\"y\"}");
	struct rcbuf *str = vmset_array_string(s);
	assert_string_equal(str->data, "\"[{\\\"a\\\":\\\"x\\\\\\\"y\\\"}]\"");
	vmset_free(s);
}

static void test_fe_vmset_shares_owner_blocks(void **state)
{
	(void)state;
	struct vmset *s = vmset_new();
	struct rcbuf *line = rcbuf_dup("xx{\"v\":1}yy", 11);
	assert_int_equal(vmset_put(s, "z", 1, line, line->data + 2, 7), 0);
	assert_int_equal(line->refcnt, 2);
	assert_array(s, "[{\"v\":1}]");
	/* A cached array survives (by reference) a change that drops it. */
	struct rcbuf *arr = rcbuf_ref(vmset_array(s));
	assert_int_equal(vmset_del(s, "z", 1), 0);
	assert_int_equal(line->refcnt, 1);
	assert_string_equal(arr->data, "[{\"v\":1}]");
	assert_array(s, "[]");
	rcbuf_unref(arr);
	rcbuf_unref(line);
	vmset_free(s);
}

static void test_fe_vmset_many(void **state)
{
	(void)state;
	struct vmset *s = vmset_new();
	char z[32];
	for (int i = 0; i < 5000; i++) {
		snprintf(z, sizeof(z), "vm-%d", i);
		put(s, z, "{}");
	}
	for (int i = 0; i < 5000; i += 2) {
		snprintf(z, sizeof(z), "vm-%d", i);
		assert_int_equal(vmset_del(s, z, strlen(z)), 0);
	}
	assert_int_equal(vmset_count(s), 2500);
	assert_true(vmset_get(s, "vm-4999", 7, NULL, NULL, NULL));
	assert_false(vmset_get(s, "vm-4998", 7, NULL, NULL, NULL));
	vmset_free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fe_vmset_empty_is_empty_array),
		cmocka_unit_test(test_fe_vmset_keeps_insertion_order_on_replace),
		cmocka_unit_test(test_fe_vmset_index_keys_sort_first),
		cmocka_unit_test(test_fe_vmset_array_string_escapes_quotes),
		cmocka_unit_test(test_fe_vmset_shares_owner_blocks),
		cmocka_unit_test(test_fe_vmset_many),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
