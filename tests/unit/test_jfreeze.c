/*
 * test_jfreeze.c - frozen jansson trees: the round trip is exact (member
 * order, integers against reals, -0, the "undefined" node, NUL bytes in
 * strings and keys), members can be read without a thaw, and a thaw
 * against a new build shares exactly the unchanged members.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "jfreeze.h"
#include "json.h"

/* Same structure, same types, same member order, same undefined nodes. */
static int identical(const json_t *a, const json_t *b)
{
	if (js_is_undefined(a) || js_is_undefined(b))
		return a == b;
	if (json_typeof(a) != json_typeof(b))
		return 0;
	switch (json_typeof(a)) {
	case JSON_REAL: {
		double x = json_real_value(a), y = json_real_value(b);
		return memcmp(&x, &y, sizeof(x)) == 0;
	}
	case JSON_INTEGER:
		return json_integer_value(a) == json_integer_value(b);
	case JSON_STRING:
		return json_string_length(a) == json_string_length(b) &&
		       memcmp(json_string_value(a), json_string_value(b), json_string_length(a)) == 0;
	case JSON_ARRAY:
		if (json_array_size(a) != json_array_size(b))
			return 0;
		for (size_t i = 0; i < json_array_size(a); i++)
			if (!identical(json_array_get(a, i), json_array_get(b, i)))
				return 0;
		return 1;
	case JSON_OBJECT: {
		if (json_object_size(a) != json_object_size(b))
			return 0;
		void *ia = json_object_iter((json_t *)a), *ib = json_object_iter((json_t *)b);
		for (; ia && ib; ia = json_object_iter_next((json_t *)a, ia),
		                 ib = json_object_iter_next((json_t *)b, ib)) {
			size_t la = json_object_iter_key_len(ia), lb = json_object_iter_key_len(ib);
			if (la != lb || memcmp(json_object_iter_key(ia), json_object_iter_key(ib), la) != 0)
				return 0;
			if (!identical(json_object_iter_value(ia), json_object_iter_value(ib)))
				return 0;
		}
		return ia == NULL && ib == NULL;
	}
	default:
		return 1;
	}
}

static json_t *sample(void)
{
	char err[128];
	const char *text = "{\"zonename\":\"z\",\"10\":1,\"2\":\"two\",\"ram\":1024,"
		"\"cpu_cap\":1.5,\"big\":123456789012345678901234,\"neg\":-7,\"tiny\":1e-300,"
		"\"nics\":[{\"mac\":\"aa\",\"ips\":[\"1.2.3.4/24\"],\"primary\":true}],"
		"\"nothing\":null,\"no\":false,\"nul\":\"a\\u0000b\",\"empty\":{},\"list\":[],"
		"\"uni\":\"\\u00e9\\ud83d\\ude00\",\"customer_metadata\":{\"k\":\"v\"}}";
	json_t *v = js_parse(text, strlen(text), err, sizeof(err));
	assert_non_null(v);
	assert_int_equal(js_set(v, "undef", js_undefined()), 0);
	assert_int_equal(js_set(v, "int", json_integer(-42)), 0);
	assert_int_equal(js_set(v, "minus_zero", json_real(-0.0)), 0);
	assert_int_equal(js_set(v, "max", json_real(9007199254740992.0)), 0);
	json_t *arr = json_array();
	assert_int_equal(json_array_append_new(arr, js_undefined()), 0);
	assert_int_equal(json_array_append_new(arr, json_real(-1e21)), 0);
	assert_int_equal(js_set(v, "arr", arr), 0);
	return v;
}

static void test_round_trip(void **state)
{
	json_t *v = sample();
	struct jfreeze *f = jfreeze_new(v);
	assert_non_null(f);
	json_t *t = jfreeze_thaw(f);
	assert_non_null(t);
	assert_true(identical(v, t));
	assert_true(js_is_undefined(json_object_get(t, "undef")));
	assert_true(json_is_integer(json_object_get(t, "int")));
	assert_true(signbit(json_real_value(json_object_get(t, "minus_zero"))));
	/* The same text as the original, index-like keys first included. */
	char *a = js_dumps(v, NULL), *b = js_dumps(t, NULL);
	assert_string_equal(a, b);
	free(a);
	free(b);
	/* Frozen, a tree takes about its text's size. */
	assert_true(jfreeze_size(f) < 600);
	json_decref(t);
	jfreeze_unref(f);
	/* Keys holding NUL bytes (js_dumps cannot write them). */
	assert_int_equal(json_object_setn_new(v, "k\0ey", 4, json_string("nul key")), 0);
	f = jfreeze_new(v);
	t = jfreeze_thaw(f);
	assert_true(identical(v, t));
	assert_string_equal(json_string_value(json_object_getn(t, "k\0ey", 4)), "nul key");
	json_decref(t);
	jfreeze_unref(f);
	json_decref(v);
}

static void test_scalars_and_refs(void **state)
{
	json_t *vals[] = { json_null(), json_true(), json_string(""), json_real(0.1),
	                   json_array(), json_object() };
	for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
		struct jfreeze *f = jfreeze_new(vals[i]);
		assert_non_null(f);
		struct jfreeze *g = jfreeze_ref(f);
		assert_ptr_equal(f, g);
		jfreeze_unref(g);
		json_t *t = jfreeze_thaw(f);
		assert_true(identical(vals[i], t));
		json_decref(t);
		jfreeze_unref(f);
		json_decref(vals[i]);
	}
	assert_null(jfreeze_new(NULL));
	assert_null(jfreeze_thaw(NULL));
	jfreeze_unref(NULL);
}

static void test_equal_and_member(void **state)
{
	json_t *v = sample();
	struct jfreeze *a = jfreeze_new(v), *b = jfreeze_new(v);
	assert_true(jfreeze_equal(a, b));
	assert_true(jfreeze_equal(NULL, NULL));
	assert_false(jfreeze_equal(a, NULL));
	json_t *m = jfreeze_member(a, "nics");
	assert_true(identical(m, json_object_get(v, "nics")));
	json_decref(m);
	m = jfreeze_member(a, "arr");
	assert_true(identical(m, json_object_get(v, "arr")));
	json_decref(m);
	assert_null(jfreeze_member(a, "absent"));
	assert_true(js_is_undefined(jfreeze_member(a, "undef")));
	assert_int_equal(js_set(v, "ram", json_real(2048)), 0);
	struct jfreeze *c = jfreeze_new(v);
	assert_false(jfreeze_equal(a, c));
	json_t *s = json_string("x");
	struct jfreeze *fs = jfreeze_new(s);
	assert_null(jfreeze_member(fs, "x"));
	jfreeze_unref(fs);
	json_decref(s);
	jfreeze_unref(a);
	jfreeze_unref(b);
	jfreeze_unref(c);
	json_decref(v);
}

static void test_thaw_reusing(void **state)
{
	json_t *old = sample();
	struct jfreeze *fold = jfreeze_new(old);
	/* A new build: one member changed, one gone, one added, order moved. */
	json_t *nu = jfreeze_thaw(fold);
	assert_int_equal(js_set(json_object_get(nu, "customer_metadata"), "k", json_string("w")), 0);
	assert_int_equal(json_object_del(nu, "neg"), 0);
	assert_int_equal(js_set(nu, "added", json_true()), 0);
	assert_int_equal(json_object_del(nu, "zonename"), 0);
	assert_int_equal(js_set(nu, "zonename", json_string("z")), 0);
	struct jfreeze *fnu = jfreeze_new(nu);
	json_t *t = jfreeze_thaw_reusing(fold, fnu, nu);
	assert_non_null(t);
	assert_true(identical(old, t));
	/* Unchanged members are the new tree's nodes, changed ones are not. */
	assert_ptr_equal(json_object_get(t, "nics"), json_object_get(nu, "nics"));
	assert_ptr_equal(json_object_get(t, "zonename"), json_object_get(nu, "zonename"));
	assert_ptr_not_equal(json_object_get(t, "customer_metadata"),
	                     json_object_get(nu, "customer_metadata"));
	json_decref(t);
	/* Nothing to share with a non-object: a plain thaw. */
	json_t *s = json_string("x");
	t = jfreeze_thaw_reusing(fold, NULL, s);
	assert_true(identical(old, t));
	json_decref(t);
	json_decref(s);
	jfreeze_unref(fnu);
	jfreeze_unref(fold);
	json_decref(nu);
	json_decref(old);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_scalars_and_refs),
		cmocka_unit_test(test_equal_and_member),
		cmocka_unit_test(test_thaw_reusing),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
