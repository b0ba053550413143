/*
 * test_diff.c - the diff algorithm against the worked vectors of
 * spec/daemon.md §8, prettyPath, "undefined", identifier pairing, sets
 * and the cases where the original threw.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "diff.h"
#include "json.h"

static json_t *
parse(const char *text)
{
	char err[256];
	json_t *v = js_parse(text, strlen(text), err, sizeof(err));

	if (v == NULL)
		fail_msg("cannot parse %s: %s", text, err);
	return v;
}

/* Diff two values and compare the compact JSON of the result. */
static void
expect_diff_values(json_t *a, json_t *b, bool use_map, const char *want)
{
	char err[256];
	json_t *changes = diff_values(a, b, use_map, err, sizeof(err));
	char *got;

	if (changes == NULL)
		fail_msg("diff failed: %s", err);
	got = js_dumps(changes, NULL);
	assert_non_null(got);
	assert_string_equal(got, want);
	free(got);
	json_decref(changes);
}

static void
expect_diff(const char *a, const char *b, bool use_map, const char *want)
{
	json_t *ja = parse(a), *jb = parse(b);

	expect_diff_values(ja, jb, use_map, want);
	json_decref(ja);
	json_decref(jb);
}

static void
expect_diff_fails(const char *a, const char *b, bool use_map,
    const char *err_part)
{
	json_t *ja = parse(a), *jb = parse(b);
	char err[256];
	json_t *changes = diff_values(ja, jb, use_map, err, sizeof(err));

	assert_null(changes);
	if (strstr(err, err_part) == NULL)
		fail_msg("error \"%s\" lacks \"%s\"", err, err_part);
	json_decref(ja);
	json_decref(jb);
}

static void
test_diff_worked_vector_mixed_members(void **state)
{
	expect_diff("{\"a\":1,\"b\":{\"c\":2},\"d\":[1,2]}",
	    "{\"b\":{\"c\":3},\"d\":[2,1,3],\"e\":\"x\"}", true,
	    "[{\"prettyPath\":\"a\",\"path\":[\"a\"],\"action\":\"removed\",\"oldValue\":1},"
	    "{\"prettyPath\":\"b.c\",\"path\":[\"b\",\"c\"],\"action\":\"changed\",\"oldValue\":2,\"newValue\":3},"
	    "{\"prettyPath\":\"d.*\",\"path\":[\"d\",null],\"action\":\"added\",\"newValue\":3},"
	    "{\"prettyPath\":\"e\",\"path\":[\"e\"],\"action\":\"added\",\"newValue\":\"x\"}]");
}

static void
test_diff_worked_vector_nics_paired_by_mac(void **state)
{
	expect_diff("{\"nics\":[{\"mac\":\"aa\",\"ip\":\"1\"},{\"mac\":\"bb\"}]}",
	    "{\"nics\":[{\"mac\":\"bb\"},{\"mac\":\"aa\",\"ip\":\"2\",\"mtu\":1500}]}", true,
	    "[{\"prettyPath\":\"nics.*.ip\",\"path\":[\"nics\",null,\"ip\"],\"action\":\"changed\",\"oldValue\":\"1\",\"newValue\":\"2\",\"ident\":\"aa\"},"
	    "{\"prettyPath\":\"nics.*.mtu\",\"path\":[\"nics\",null,\"mtu\"],\"action\":\"added\",\"newValue\":1500,\"ident\":\"aa\"}]");
}

static void
test_diff_worked_vector_disks_with_new_path_are_removed_and_added(void **state)
{
	expect_diff("{\"disks\":[{\"path\":\"/a\",\"size\":1}]}",
	    "{\"disks\":[{\"path\":\"/b\",\"size\":1}]}", true,
	    "[{\"prettyPath\":\"disks.*\",\"path\":[\"disks\",null],\"action\":\"removed\",\"oldValue\":{\"path\":\"/a\",\"size\":1}},"
	    "{\"prettyPath\":\"disks.*\",\"path\":[\"disks\",null],\"action\":\"added\",\"newValue\":{\"path\":\"/b\",\"size\":1}}]");
}

static void
test_diff_worked_vector_map_applies_only_at_top_level(void **state)
{
	expect_diff("{\"x\":{\"disks\":[{\"path\":\"/a\",\"size\":1}]}}",
	    "{\"x\":{\"disks\":[{\"path\":\"/a\",\"size\":2}]}}", true,
	    "[{\"prettyPath\":\"x.disks.*\",\"path\":[\"x\",\"disks\",null],\"action\":\"removed\",\"oldValue\":{\"path\":\"/a\",\"size\":1}},"
	    "{\"prettyPath\":\"x.disks.*\",\"path\":[\"x\",\"disks\",null],\"action\":\"added\",\"newValue\":{\"path\":\"/a\",\"size\":2}}]");
}

static void
test_diff_worked_vector_missing_idents_pair_with_missing(void **state)
{
	expect_diff("{\"disks\":[{\"size\":1},{\"size\":2}]}",
	    "{\"disks\":[{\"size\":3}]}", true,
	    "[{\"prettyPath\":\"disks.*\",\"path\":[\"disks\",null],\"action\":\"removed\",\"oldValue\":{\"size\":2}},"
	    "{\"prettyPath\":\"disks.*.size\",\"path\":[\"disks\",null,\"size\"],\"action\":\"changed\",\"oldValue\":1,\"newValue\":3}]");
}

static void
test_diff_worked_vector_arrays_are_sets(void **state)
{
	expect_diff("{\"a\":[[1],[2]]}", "{\"a\":[[2],[1],[1]]}", true, "[]");
	expect_diff("{\"a\":[1,2,3]}", "{\"a\":[3,2,1]}", true, "[]");
	expect_diff("{\"a\":[1,1,2]}", "{\"a\":[2,1]}", false, "[]");
	/* serialisation key order matters */
	expect_diff("{\"a\":[{\"x\":1,\"y\":2}]}", "{\"a\":[{\"y\":2,\"x\":1}]}",
	    false,
	    "[{\"prettyPath\":\"a.*\",\"path\":[\"a\",null],\"action\":\"removed\",\"oldValue\":{\"x\":1,\"y\":2}},"
	    "{\"prettyPath\":\"a.*\",\"path\":[\"a\",null],\"action\":\"added\",\"newValue\":{\"y\":2,\"x\":1}}]");
}

static void
test_diff_worked_vector_null_to_string_is_changed(void **state)
{
	expect_diff("{\"a\":null}", "{\"a\":\"x\"}", true,
	    "[{\"prettyPath\":\"a\",\"path\":[\"a\"],\"action\":\"changed\",\"oldValue\":null,\"newValue\":\"x\"}]");
}

static void
test_diff_worked_vector_string_to_object_is_changed(void **state)
{
	expect_diff("{\"a\":\"x\"}", "{\"a\":{}}", true,
	    "[{\"prettyPath\":\"a\",\"path\":[\"a\"],\"action\":\"changed\",\"oldValue\":\"x\",\"newValue\":{}}]");
}

static void
test_diff_null_against_object_fails(void **state)
{
	expect_diff_fails("{\"a\":null}", "{\"a\":{}}", true, "\"a\"");
	expect_diff_fails("{\"a\":{}}", "{\"a\":null}", true, "null");
	expect_diff_fails("{\"a\":[]}", "{\"a\":null}", true, "null");
	expect_diff_fails("{\"b\":{\"a\":null}}", "{\"b\":{\"a\":[1]}}", true,
	    "\"b.a\"");
}

static void
test_diff_top_level_non_object_fails(void **state)
{
	expect_diff_fails("\"x\"", "\"y\"", false, "string");
	expect_diff_fails("null", "{}", false, "null");
}

static void
test_diff_non_object_element_in_mapped_array_fails(void **state)
{
	expect_diff_fails("{\"nics\":[\"aa\"]}", "{\"nics\":[{\"mac\":\"aa\"}]}",
	    true, "nics");
	/* without the map the same input is a plain set difference */
	expect_diff("{\"nics\":[\"aa\"]}", "{\"nics\":[{\"mac\":\"aa\"}]}", false,
	    "[{\"prettyPath\":\"nics.*\",\"path\":[\"nics\",null],\"action\":\"removed\",\"oldValue\":\"aa\"},"
	    "{\"prettyPath\":\"nics.*\",\"path\":[\"nics\",null],\"action\":\"added\",\"newValue\":{\"mac\":\"aa\"}}]");
	/* a null on the new side cannot be asked for its mac */
	expect_diff_fails("{\"nics\":[{\"mac\":\"aa\"}]}", "{\"nics\":[null]}",
	    true, "null");
}

static void
test_diff_undefined_key_removed_has_no_old_value(void **state)
{
	json_t *a = json_object(), *b = json_object();

	assert_int_equal(json_object_set_new(a, "a", js_undefined()), 0);
	expect_diff_values(a, b, true,
	    "[{\"prettyPath\":\"a\",\"path\":[\"a\"],\"action\":\"removed\"}]");
	json_decref(a);
	json_decref(b);
}

static void
test_diff_undefined_to_value_is_changed_without_old_value(void **state)
{
	json_t *a = parse("{\"x\":1,\"autoboot\":null}");
	json_t *b = parse("{\"x\":1,\"autoboot\":true}");

	assert_int_equal(json_object_set_new(a, "autoboot", js_undefined()), 0);
	expect_diff_values(a, b, true,
	    "[{\"prettyPath\":\"autoboot\",\"path\":[\"autoboot\"],\"action\":\"changed\",\"newValue\":true}]");
	/* and back: changed without newValue */
	expect_diff_values(b, a, true,
	    "[{\"prettyPath\":\"autoboot\",\"path\":[\"autoboot\"],\"action\":\"changed\",\"oldValue\":true}]");
	json_decref(a);
	json_decref(b);
}

static void
test_diff_undefined_and_null_differ(void **state)
{
	json_t *a = json_object(), *b = parse("{\"a\":null}");

	assert_int_equal(json_object_set_new(a, "a", js_undefined()), 0);
	expect_diff_values(a, b, true,
	    "[{\"prettyPath\":\"a\",\"path\":[\"a\"],\"action\":\"changed\",\"newValue\":null}]");
	/* undefined on both sides is the same value */
	expect_diff_values(a, a, true, "[]");
	json_decref(b);
	b = json_object();
	assert_int_equal(json_object_set_new(b, "a", js_undefined()), 0);
	expect_diff_values(a, b, true, "[]");
	/* an undefined key added: added without newValue */
	json_decref(a);
	a = json_object();
	expect_diff_values(a, b, true,
	    "[{\"prettyPath\":\"a\",\"path\":[\"a\"],\"action\":\"added\"}]");
	json_decref(a);
	json_decref(b);
}

static void
test_diff_ident_pairs_first_unpaired_match(void **state)
{
	/* two old "aa" elements: the first pairs with the first new "aa",
	 * the second with the second */
	expect_diff("{\"nics\":[{\"mac\":\"aa\",\"i\":1},{\"mac\":\"aa\",\"i\":2}]}",
	    "{\"nics\":[{\"mac\":\"aa\",\"i\":3},{\"mac\":\"aa\",\"i\":4}]}", true,
	    "[{\"prettyPath\":\"nics.*.i\",\"path\":[\"nics\",null,\"i\"],\"action\":\"changed\",\"oldValue\":1,\"newValue\":3,\"ident\":\"aa\"},"
	    "{\"prettyPath\":\"nics.*.i\",\"path\":[\"nics\",null,\"i\"],\"action\":\"changed\",\"oldValue\":2,\"newValue\":4,\"ident\":\"aa\"}]");
	/* order of output: removed, pairs, added */
	expect_diff("{\"disks\":[{\"path\":\"/a\",\"s\":1},{\"path\":\"/r\"}]}",
	    "{\"disks\":[{\"path\":\"/n\"},{\"path\":\"/a\",\"s\":2}]}", true,
	    "[{\"prettyPath\":\"disks.*\",\"path\":[\"disks\",null],\"action\":\"removed\",\"oldValue\":{\"path\":\"/r\"}},"
	    "{\"prettyPath\":\"disks.*.s\",\"path\":[\"disks\",null,\"s\"],\"action\":\"changed\",\"oldValue\":1,\"newValue\":2,\"ident\":\"/a\"},"
	    "{\"prettyPath\":\"disks.*\",\"path\":[\"disks\",null],\"action\":\"added\",\"newValue\":{\"path\":\"/n\"}}]");
}

static void
test_diff_ident_compares_numbers_by_value(void **state)
{
	expect_diff("{\"nics\":[{\"mac\":1,\"v\":1}]}",
	    "{\"nics\":[{\"mac\":1.0,\"v\":2}]}", true,
	    "[{\"prettyPath\":\"nics.*.v\",\"path\":[\"nics\",null,\"v\"],\"action\":\"changed\",\"oldValue\":1,\"newValue\":2,\"ident\":1}]");
	/* an object ident is only equal to itself: distinct objects don't pair */
	expect_diff("{\"nics\":[{\"mac\":{},\"v\":1}]}",
	    "{\"nics\":[{\"mac\":{},\"v\":2}]}", true,
	    "[{\"prettyPath\":\"nics.*\",\"path\":[\"nics\",null],\"action\":\"removed\",\"oldValue\":{\"mac\":{},\"v\":1}},"
	    "{\"prettyPath\":\"nics.*\",\"path\":[\"nics\",null],\"action\":\"added\",\"newValue\":{\"mac\":{},\"v\":2}}]");
}

static void
test_diff_nested_arrays_inside_pair_use_sets_with_ident(void **state)
{
	expect_diff("{\"nics\":[{\"mac\":\"aa\",\"ips\":[\"1\",\"2\"]}]}",
	    "{\"nics\":[{\"mac\":\"aa\",\"ips\":[\"2\",\"3\"]}]}", true,
	    "[{\"prettyPath\":\"nics.*.ips.*\",\"path\":[\"nics\",null,\"ips\",null],\"action\":\"removed\",\"oldValue\":\"1\",\"ident\":\"aa\"},"
	    "{\"prettyPath\":\"nics.*.ips.*\",\"path\":[\"nics\",null,\"ips\",null],\"action\":\"added\",\"newValue\":\"3\",\"ident\":\"aa\"}]");
}

static void
test_diff_object_keys_follow_javascript_order(void **state)
{
	expect_diff("{\"b\":1,\"10\":1,\"a\":1,\"2\":1}",
	    "{\"b\":2,\"10\":2,\"a\":2,\"2\":2}", false,
	    "[{\"prettyPath\":\"2\",\"path\":[\"2\"],\"action\":\"changed\",\"oldValue\":1,\"newValue\":2},"
	    "{\"prettyPath\":\"10\",\"path\":[\"10\"],\"action\":\"changed\",\"oldValue\":1,\"newValue\":2},"
	    "{\"prettyPath\":\"b\",\"path\":[\"b\"],\"action\":\"changed\",\"oldValue\":1,\"newValue\":2},"
	    "{\"prettyPath\":\"a\",\"path\":[\"a\"],\"action\":\"changed\",\"oldValue\":1,\"newValue\":2}]");
}

static void
test_diff_same_values_give_no_changes(void **state)
{
	json_t *a = parse("{\"a\":{\"b\":[1,{\"c\":\"d\"}]},\"n\":1.5,\"t\":true,\"z\":null}");
	json_t *b = parse("{\"a\":{\"b\":[1,{\"c\":\"d\"}]},\"n\":1.5,\"t\":true,\"z\":null}");

	expect_diff_values(a, b, true, "[]");
	expect_diff_values(a, a, true, "[]");
	json_decref(a);
	json_decref(b);
	expect_diff("[1,2]", "[2,1]", false, "[]");
}

static void
test_diff_top_level_arrays_use_array_rule(void **state)
{
	expect_diff("[1,2]", "[2,3]", true,
	    "[{\"prettyPath\":\"*\",\"path\":[null],\"action\":\"removed\",\"oldValue\":1},"
	    "{\"prettyPath\":\"*\",\"path\":[null],\"action\":\"added\",\"newValue\":3}]");
}

static void
test_diff_array_against_object_uses_index_keys(void **state)
{
	expect_diff("{\"a\":[5,6]}", "{\"a\":{\"0\":5,\"x\":1}}", false,
	    "[{\"prettyPath\":\"a.1\",\"path\":[\"a\",\"1\"],\"action\":\"removed\",\"oldValue\":6},"
	    "{\"prettyPath\":\"a.x\",\"path\":[\"a\",\"x\"],\"action\":\"added\",\"newValue\":1}]");
}

static void
test_diff_type_change_is_changed(void **state)
{
	expect_diff("{\"a\":1,\"b\":\"1\",\"c\":true,\"d\":[1]}",
	    "{\"a\":\"1\",\"b\":1,\"c\":false,\"d\":\"x\"}", false,
	    "[{\"prettyPath\":\"a\",\"path\":[\"a\"],\"action\":\"changed\",\"oldValue\":1,\"newValue\":\"1\"},"
	    "{\"prettyPath\":\"b\",\"path\":[\"b\"],\"action\":\"changed\",\"oldValue\":\"1\",\"newValue\":1},"
	    "{\"prettyPath\":\"c\",\"path\":[\"c\"],\"action\":\"changed\",\"oldValue\":true,\"newValue\":false},"
	    "{\"prettyPath\":\"d\",\"path\":[\"d\"],\"action\":\"changed\",\"oldValue\":[1],\"newValue\":\"x\"}]");
}

static void
test_diff_pretty_path_escapes_brackets_and_dots(void **state)
{
	struct {
		const char *path, *want;
	} cases[] = {
		{ "[\"state\"]", "state" },
		{ "[\"nics\",null,\"ip\"]", "nics.*.ip" },
		{ "[\"tags\",\"a.b\"]", "tags[a.b]" },
		{ "[\"tags\",\"x[1]\"]", "tags[x\\[1\\]]" },
		{ "[\"tags\",\"\"]", "tags." },
		{ "[\"tags\",\"a.b\",\"c\"]", "tags[a.b].c" },
		{ "[]", "" },
		{ "[\"\",\"x\"]", "x" },
		{ "[null]", "*" },
		{ "[\"a]\"]", "[a\\]]" },
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct buf out = BUF_INIT;
		json_t *p = parse(cases[i].path);

		assert_int_equal(buf_adds(&out, "prefix:"), 0);
		assert_int_equal(diff_pretty_path(p, &out), 0);
		assert_string_equal(out.data + strlen("prefix:"), cases[i].want);
		buf_done(&out);
		json_decref(p);
	}
}

static void
test_diff_pretty_path_rejects_numbers(void **state)
{
	struct buf out = BUF_INIT;
	json_t *p = parse("[\"a\",1]");

	assert_int_equal(diff_pretty_path(p, &out), -EINVAL);
	buf_done(&out);
	json_decref(p);
}

static void
test_diff_entries_use_pretty_path_with_special_keys(void **state)
{
	expect_diff("{\"tags\":{\"a.b\":1,\"x[1]\":1}}",
	    "{\"tags\":{\"a.b\":2}}", true,
	    "[{\"prettyPath\":\"tags[a.b]\",\"path\":[\"tags\",\"a.b\"],\"action\":\"changed\",\"oldValue\":1,\"newValue\":2},"
	    "{\"prettyPath\":\"tags[x\\\\[1\\\\]]\",\"path\":[\"tags\",\"x[1]\"],\"action\":\"removed\",\"oldValue\":1}]");
}

static void
test_diff_large_arrays_are_compared_as_sets(void **state)
{
	json_t *a = json_array(), *b = json_array(), *changes;
	char err[128];
	int i;

	for (i = 0; i < 20000; i++) {
		assert_int_equal(json_array_append_new(a, js_number(i)), 0);
		assert_int_equal(json_array_append_new(b,
		    js_number(19999 - i + (i == 0 ? 1 : 0))), 0);
	}
	/* b = 20000, 19998 .. 0: 19999 removed, 20000 added */
	changes = diff_values(a, b, false, err, sizeof(err));
	assert_non_null(changes);
	assert_int_equal(json_array_size(changes), 2);
	json_decref(changes);
	json_decref(a);
	json_decref(b);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_diff_worked_vector_mixed_members),
		cmocka_unit_test(test_diff_worked_vector_nics_paired_by_mac),
		cmocka_unit_test(test_diff_worked_vector_disks_with_new_path_are_removed_and_added),
		cmocka_unit_test(test_diff_worked_vector_map_applies_only_at_top_level),
		cmocka_unit_test(test_diff_worked_vector_missing_idents_pair_with_missing),
		cmocka_unit_test(test_diff_worked_vector_arrays_are_sets),
		cmocka_unit_test(test_diff_worked_vector_null_to_string_is_changed),
		cmocka_unit_test(test_diff_worked_vector_string_to_object_is_changed),
		cmocka_unit_test(test_diff_null_against_object_fails),
		cmocka_unit_test(test_diff_top_level_non_object_fails),
		cmocka_unit_test(test_diff_non_object_element_in_mapped_array_fails),
		cmocka_unit_test(test_diff_undefined_key_removed_has_no_old_value),
		cmocka_unit_test(test_diff_undefined_to_value_is_changed_without_old_value),
		cmocka_unit_test(test_diff_undefined_and_null_differ),
		cmocka_unit_test(test_diff_ident_pairs_first_unpaired_match),
		cmocka_unit_test(test_diff_ident_compares_numbers_by_value),
		cmocka_unit_test(test_diff_nested_arrays_inside_pair_use_sets_with_ident),
		cmocka_unit_test(test_diff_object_keys_follow_javascript_order),
		cmocka_unit_test(test_diff_same_values_give_no_changes),
		cmocka_unit_test(test_diff_top_level_arrays_use_array_rule),
		cmocka_unit_test(test_diff_array_against_object_uses_index_keys),
		cmocka_unit_test(test_diff_type_change_is_changed),
		cmocka_unit_test(test_diff_pretty_path_escapes_brackets_and_dots),
		cmocka_unit_test(test_diff_pretty_path_rejects_numbers),
		cmocka_unit_test(test_diff_entries_use_pretty_path_with_special_keys),
		cmocka_unit_test(test_diff_large_arrays_are_compared_as_sets),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
