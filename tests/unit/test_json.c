/* test_json.c - the JavaScript-compatible serialiser and parser
 * (spec/daemon.md §10.3). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "json.h"

static void check_number(double d, const char *want)
{
	char out[32];
	js_format_number(d, out);
	assert_string_equal(out, want);
}

static void test_numbers_format_like_javascript(void **state)
{
	(void)state;
	check_number(0, "0");
	check_number(-0.0, "0");
	check_number(1, "1");
	check_number(-42, "-42");
	check_number(0.1, "0.1");
	check_number(0.1 + 0.2, "0.30000000000000004");
	check_number(256.0000009536743, "256.0000009536743");
	check_number(268435457.0 / 1048576, "256.0000009536743");
	check_number(18446744073709551615.0, "18446744073709552000");
	check_number(1e21, "1e+21");
	check_number(1.5e21, "1.5e+21");
	check_number(123456789012345680000.0, "123456789012345680000");
	check_number(1e-6, "0.000001");
	check_number(1e-7, "1e-7");
	check_number(1.25e-7, "1.25e-7");
	check_number(5e-324, "5e-324");
	check_number(1.7976931348623157e308, "1.7976931348623157e+308");
	check_number(2048, "2048");
	check_number(NAN, "NaN");
	check_number(INFINITY, "Infinity");
}

static void check_fixed(double d, const char *want)
{
	char out[340];
	js_tofixed2(d, out, sizeof(out));
	assert_string_equal(out, want);
}

static void test_tofixed_rounds_ties_up(void **state)
{
	(void)state;
	check_fixed(1.125, "1.13");
	check_fixed(1.375, "1.38");
	check_fixed(2.5, "2.50");
	check_fixed(45.5, "45.50");
	check_fixed(1.005, "1.00"); /* 1.005 is below the tie in binary */
	check_fixed(0.125, "0.13");
	check_fixed(-1.125, "-1.13");
	check_fixed(59.99999999, "60.00");
	check_fixed(1e21, "1e+21");
}

static char *dump(json_t *v)
{
	char *s = js_dumps(v, NULL);
	json_decref(v);
	return s;
}

static void check_dump(json_t *v, const char *want)
{
	char *s = dump(v);
	assert_non_null(s);
	assert_string_equal(s, want);
	free(s);
}

static void test_strings_escape_like_javascript(void **state)
{
	(void)state;
	check_dump(json_stringn("a\"b\\c\b\f\n\r\t\x01\x1f/\x7f\xe2\x80\xa8", 17),
	           "\"a\\\"b\\\\c\\b\\f\\n\\r\\t\\u0001\\u001f/\x7f\xe2\x80\xa8\"");
	check_dump(json_stringn("a\0b", 3), "\"a\\u0000b\"");
}

static void test_index_keys_come_first(void **state)
{
	(void)state;
	char err[128];
	const char *in = "{\"b\":1,\"10\":2,\"a\":3,\"2\":4,\"01\":5,\"4294967295\":6,\"4294967294\":7}";
	json_t *v = js_parse(in, strlen(in), err, sizeof(err));
	assert_non_null(v);
	check_dump(v, "{\"2\":4,\"10\":2,\"4294967294\":7,\"b\":1,\"a\":3,\"01\":5,\"4294967295\":6}");
	assert_true(js_is_index_key("0"));
	assert_false(js_is_index_key("00"));
	assert_false(js_is_index_key("-1"));
	assert_false(js_is_index_key(""));
	assert_true(js_is_index_key("4294967294"));
	assert_false(js_is_index_key("4294967295"));
}

static void test_undefined_members_are_omitted(void **state)
{
	(void)state;
	json_t *o = json_object();
	assert_int_equal(js_set(o, "a", js_undefined()), 0);
	assert_int_equal(js_set(o, "b", js_number(1)), 0);
	json_t *arr = json_array();
	json_array_append_new(arr, js_undefined());
	js_set(o, "c", arr);
	assert_true(js_is_undefined(json_object_get(o, "a")));
	json_t *copy = json_deep_copy(o);
	assert_true(js_is_undefined(json_object_get(copy, "a")));
	json_decref(copy);
	check_dump(o, "{\"b\":1,\"c\":[null]}");
	char *s = js_dumps(js_undefined(), NULL);
	assert_string_equal(s, "undefined");
	free(s);
	assert_false(json_equal(js_undefined(), json_null()));
}

static void test_set_keeps_position_of_existing_key(void **state)
{
	(void)state;
	json_t *o = json_object();
	js_set(o, "a", js_number(1));
	js_set(o, "b", js_number(2));
	js_set(o, "a", json_string("x"));
	check_dump(o, "{\"a\":\"x\",\"b\":2}");
	assert_int_equal(js_set(o, "c", NULL), -ENOMEM);
}

static void test_parse_reads_numbers_as_doubles(void **state)
{
	(void)state;
	char err[128];
	const char *in = "[1, 18446744073709551615, 1.50, -0, \"a\\u0000\"]";
	json_t *v = js_parse(in, strlen(in), err, sizeof(err));
	assert_non_null(v);
	assert_true(json_is_real(json_array_get(v, 0)));
	check_dump(v, "[1,18446744073709552000,1.5,0,\"a\\u0000\"]");
	assert_null(js_parse("{bad", 4, err, sizeof(err)));
	assert_true(strlen(err) > 0);
	/* invalid UTF-8 is replaced, not rejected */
	v = js_parse("\"a\xff" "b\"", 5, err, sizeof(err));
	assert_non_null(v);
	check_dump(v, "\"a\xef\xbf\xbd" "b\"");
	/* NaN cannot be a jansson real: js_number gives null */
	check_dump(js_number(NAN), "null");
}

static void test_pretty_layout_matches_json_stringify(void **state)
{
	(void)state;
	char err[128];
	const char *in = "{\"a\":1,\"b\":[1,{\"c\":[]}],\"d\":{},\"e\":\"x\"}";
	json_t *v = js_parse(in, strlen(in), err, sizeof(err));
	struct buf b = BUF_INIT;
	assert_int_equal(js_dump_pretty(v, 2, &b), 0);
	assert_string_equal(b.data,
	                    "{\n  \"a\": 1,\n  \"b\": [\n    1,\n    {\n      \"c\": []\n    }\n  ],\n"
	                    "  \"d\": {},\n  \"e\": \"x\"\n}");
	buf_done(&b);
	json_decref(v);
}

static void test_utf8_sanitize_replaces_maximal_subparts(void **state)
{
	(void)state;
	size_t n;
	char *s = js_utf8_sanitize("a\xe2\x82" "b\xc0\xaf" "c", 7, &n);
	assert_string_equal(s, "a\xef\xbf\xbd" "b\xef\xbf\xbd\xef\xbf\xbd" "c");
	free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_numbers_format_like_javascript),
		cmocka_unit_test(test_tofixed_rounds_ties_up),
		cmocka_unit_test(test_strings_escape_like_javascript),
		cmocka_unit_test(test_index_keys_come_first),
		cmocka_unit_test(test_undefined_members_are_omitted),
		cmocka_unit_test(test_set_keeps_position_of_existing_key),
		cmocka_unit_test(test_parse_reads_numbers_as_doubles),
		cmocka_unit_test(test_pretty_layout_matches_json_stringify),
		cmocka_unit_test(test_utf8_sanitize_replaces_maximal_subparts),
	};
	return cmocka_run_group_tests_name("json", tests, NULL, NULL);
}
