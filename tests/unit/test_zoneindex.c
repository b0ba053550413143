/*
 * test_zoneindex.c - parsing <root>/etc/zones/index (good lines, comments,
 * the global zone, unsafe names, field counts, duplicates) and the
 * per-zonename diff that turns an index change into zone events.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../../supervisor/zoneindex.h"

#define U1 "073ae53b-c444-4e23-866b-10f99f276242"
#define U2 "5a02245a-422c-4e0a-c5f8-fd6fac1ac04e"
#define U3 "11111111-2222-3333-4444-555555555555"

struct skips {
	char text[4096];
	int n;
};

static void
on_skip(void *arg, unsigned lineno, const char *line, const char *reason)
{
	struct skips *s = arg;
	size_t off = strlen(s->text);

	snprintf(s->text + off, sizeof(s->text) - off, "%u|%s|%s\n", lineno, line, reason);
	s->n++;
}

static void
parse(const char *text, struct zoneindex *idx, struct skips *sk)
{
	memset(sk, 0, sizeof(*sk));
	assert_int_equal(zoneindex_parse(text, strlen(text), idx, on_skip, sk), 0);
}

static void
test_zoneindex_good_lines_comments_global(void **state)
{
	struct zoneindex idx = ZONEINDEX_INIT;
	struct skips sk;

	parse("# DO NOT EDIT\n"
		"global:installed:/\n"
		"\n"
		"web1:running:/zones/web1:" U1 "  \r\n"
		U2 ":installed:/zones/" U2 ":\n"
		"   \n"
		"db_2.x:configured:/zones/db:" U3, &idx, &sk);
	assert_int_equal(sk.n, 0);
	assert_int_equal(idx.n, 3);
	assert_string_equal(idx.recs[0].zonename, "web1");
	assert_string_equal(idx.recs[0].state, "running");
	assert_string_equal(idx.recs[0].zonepath, "/zones/web1");
	assert_string_equal(idx.recs[0].uuid, U1);
	assert_int_equal(idx.recs[0].lineno, 4);
	/* empty uuid column: the uuid-shaped zonename is the uuid */
	assert_string_equal(idx.recs[1].zonename, U2);
	assert_string_equal(idx.recs[1].uuid, U2);
	/* last line without a newline */
	assert_string_equal(idx.recs[2].zonename, "db_2.x");
	assert_int_equal(idx.recs[2].lineno, 7);
	assert_non_null(zoneindex_find(&idx, "db_2.x"));
	assert_null(zoneindex_find(&idx, "nope"));
	zoneindex_done(&idx);
	assert_int_equal(idx.n, 0);
}

static void
test_zoneindex_unsafe_names_are_skipped(void **state)
{
	struct zoneindex idx = ZONEINDEX_INIT;
	struct skips sk;
	char text[2048], longname[80];

	memset(longname, 'a', 65);
	longname[65] = '\0';
	snprintf(text, sizeof(text),
		"../x:installed:/zones/x:" U1 "\n"
		".hidden:installed:/zones/h:" U1 "\n"
		"%s:installed:/zones/l:" U1 "\n"
		"a/b:installed:/zones/ab:" U1 "\n"
		":installed:/zones/e:" U1 "\n"
		"sp ace:installed:/zones/s:" U1 "\n"
		"ok:installed:/zones/ok:" U2 "\n"
		"up:installed:/zones/../../etc:" U1 "\n"
		"up2:installed:/..:" U1 "\n"
		"dots:installed:/zones/a..b/...:" "33333333-3333-4333-8333-333333333333" "\n", longname);
	parse(text, &idx, &sk);
	assert_int_equal(idx.n, 2);
	assert_string_equal(idx.recs[0].zonename, "ok");
	assert_string_equal(idx.recs[1].zonename, "dots");
	assert_int_equal(sk.n, 8);
	assert_non_null(strstr(sk.text, "8|up:installed:/zones/../../etc:" U1 "|unsafe zonepath\n"));
	assert_non_null(strstr(sk.text, "9|up2:installed:/..:" U1 "|unsafe zonepath\n"));
	assert_non_null(strstr(sk.text, "1|../x:installed:/zones/x:" U1 "|unsafe zonename\n"));
	assert_non_null(strstr(sk.text, "2|.hidden:"));
	assert_non_null(strstr(sk.text, "3|aaaa"));
	assert_non_null(strstr(sk.text, "4|a/b:"));
	assert_non_null(strstr(sk.text, "5|:installed"));
	assert_non_null(strstr(sk.text, "6|sp ace"));

	assert_true(zoneindex_name_ok("a"));
	memset(longname, 'b', 64);
	longname[64] = '\0';
	assert_true(zoneindex_name_ok(longname));
	longname[63] = '/';
	assert_false(zoneindex_name_ok(longname));
	assert_false(zoneindex_name_ok(".."));
	assert_false(zoneindex_name_ok(""));
	assert_true(zoneindex_name_ok("a..b"));
	zoneindex_done(&idx);
}

static void
test_zoneindex_wrong_fields_are_skipped(void **state)
{
	struct zoneindex idx = ZONEINDEX_INIT;
	struct skips sk;

	parse("three:installed:/zones/three\n"
		"five:installed:/zones/five:" U1 ":extra\n"
		"noname\n"
		"nostate::/zones/ns:" U1 "\n"
		"relpath:installed:zones/r:" U1 "\n"
		"nouuid:installed:/zones/nouuid:\n"
		"shortuuid:installed:/zones/s:1234\n"
		"good:installed:/zones/good:" U3 "\n", &idx, &sk);
	assert_int_equal(idx.n, 1);
	assert_string_equal(idx.recs[0].zonename, "good");
	assert_int_equal(sk.n, 7);
	assert_non_null(strstr(sk.text, "1|three:installed:/zones/three|wrong number of fields\n"));
	assert_non_null(strstr(sk.text, "2|five:installed:/zones/five:" U1 ":extra|wrong number of fields\n"));
	assert_non_null(strstr(sk.text, "3|noname|wrong number of fields\n"));
	assert_non_null(strstr(sk.text, "4|nostate::/zones/ns:" U1 "|empty state\n"));
	assert_non_null(strstr(sk.text, "5|relpath:installed:zones/r:" U1 "|zonepath is not absolute\n"));
	assert_non_null(strstr(sk.text, "6|nouuid:installed:/zones/nouuid:|missing uuid\n"));
	assert_non_null(strstr(sk.text, "7|shortuuid:installed:/zones/s:1234|bad uuid\n"));
	zoneindex_done(&idx);
}

static void
test_zoneindex_duplicates_replace_in_place(void **state)
{
	struct zoneindex idx = ZONEINDEX_INIT;
	struct skips sk;

	parse("a:installed:/zones/a:" U1 "\n"
		"b:installed:/zones/b:" U2 "\n"
		"a:running:/zones/a:" U1 "\n"
		"c:installed:/zones/c:" U2 "\n"
		"a:installed:/zones/a:" U2 "\n", &idx, &sk);
	/* line 3 replaces a (same position); line 4 replaces b by uuid;
	 * line 5 names a and c's uuid: two different records, skipped. */
	assert_int_equal(idx.n, 2);
	assert_string_equal(idx.recs[0].zonename, "a");
	assert_string_equal(idx.recs[0].state, "running");
	assert_string_equal(idx.recs[1].zonename, "c");
	assert_string_equal(idx.recs[1].uuid, U2);
	assert_int_equal(sk.n, 3);
	assert_non_null(strstr(sk.text, "5|a:installed:/zones/a:" U2 "|zonename and uuid belong"));
	zoneindex_done(&idx);
}

static void
test_zoneindex_long_line_and_nul(void **state)
{
	struct zoneindex idx = ZONEINDEX_INIT;
	struct skips sk;
	size_t n = 10000;
	char *text = malloc(n + 64);

	assert_non_null(text);
	memset(text, 'x', n);
	memcpy(text + n, "\nok:installed:/zones/ok:" U1 "\n", 62);
	memset(&sk, 0, sizeof(sk));
	assert_int_equal(zoneindex_parse(text, n + 61, &idx, on_skip, &sk), 0);
	assert_int_equal(idx.n, 1);
	assert_int_equal(sk.n, 1);
	assert_non_null(strstr(sk.text, "|line too long\n"));
	free(text);

	memset(&sk, 0, sizeof(sk));
	assert_int_equal(zoneindex_parse("a\0b:installed:/zones/a:" U1 "\n", 41, &idx,
		on_skip, &sk), 0);
	assert_int_equal(idx.n, 0);
	assert_int_equal(sk.n, 1);
	zoneindex_done(&idx);
}

static void
test_zoneindex_diff(void **state)
{
	struct zoneindex a = ZONEINDEX_INIT, b = ZONEINDEX_INIT;
	struct zone_change *ch;
	struct skips sk;
	size_t n;

	parse("keep:running:/zones/keep:" U1 "\n"
		"gone:installed:/zones/gone:" U2 "\n"
		"stops:running:/zones/stops:" U3 "\n", &a, &sk);
	parse("new:configured:/zones/new:22222222-2222-3333-4444-555555555555\n"
		"stops:installed:/zones/stops:" U3 "\n"
		"keep:running:/zones/keep:" U1 "\n", &b, &sk);
	assert_int_equal(zoneindex_diff(&a, &b, &ch, &n), 0);
	assert_int_equal(n, 3);
	assert_string_equal(ch[0].zonename, "new");
	assert_int_equal(ch[0].kind, ZONE_APPEARED);
	assert_string_equal(ch[0].newstate, "configured");
	assert_string_equal(ch[1].zonename, "stops");
	assert_int_equal(ch[1].kind, ZONE_CHANGED);
	assert_string_equal(ch[1].newstate, "installed");
	assert_string_equal(ch[2].zonename, "gone");
	assert_int_equal(ch[2].kind, ZONE_DISAPPEARED);
	assert_string_equal(ch[2].newstate, "");
	free(ch);

	/* identical: nothing; from empty: everything appears */
	assert_int_equal(zoneindex_diff(&a, &a, &ch, &n), 0);
	assert_int_equal(n, 0);
	free(ch);
	zoneindex_done(&b);
	assert_int_equal(zoneindex_diff(&b, &a, &ch, &n), 0);
	assert_int_equal(n, 3);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(ch[i].kind, ZONE_APPEARED);
	free(ch);
	zoneindex_done(&a);
}

static void
test_zoneindex_diff_large(void **state)
{
	/* 10,000 zones: linear, and every state change is found. */
	size_t nz = 10000, cap = nz * 80;
	char *t1 = malloc(cap), *t2 = malloc(cap);
	size_t o1 = 0, o2 = 0, n;
	struct zoneindex a = ZONEINDEX_INIT, b = ZONEINDEX_INIT;
	struct zone_change *ch;

	assert_non_null(t1);
	assert_non_null(t2);
	for (size_t i = 0; i < nz; i++) {
		o1 += (size_t)snprintf(t1 + o1, cap - o1,
			"z%zu:running:/zones/z%zu:%08zx-0000-0000-0000-000000000000\n", i, i, i);
		o2 += (size_t)snprintf(t2 + o2, cap - o2,
			"z%zu:%s:/zones/z%zu:%08zx-0000-0000-0000-000000000000\n", i,
			i % 100 == 0 ? "installed" : "running", i, i);
	}
	assert_int_equal(zoneindex_parse(t1, o1, &a, NULL, NULL), 0);
	assert_int_equal(zoneindex_parse(t2, o2, &b, NULL, NULL), 0);
	assert_int_equal(a.n, nz);
	assert_int_equal(zoneindex_diff(&a, &b, &ch, &n), 0);
	assert_int_equal(n, nz / 100);
	free(ch);
	zoneindex_done(&a);
	zoneindex_done(&b);
	free(t1);
	free(t2);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_zoneindex_good_lines_comments_global),
		cmocka_unit_test(test_zoneindex_unsafe_names_are_skipped),
		cmocka_unit_test(test_zoneindex_wrong_fields_are_skipped),
		cmocka_unit_test(test_zoneindex_duplicates_replace_in_place),
		cmocka_unit_test(test_zoneindex_long_line_and_nul),
		cmocka_unit_test(test_zoneindex_diff),
		cmocka_unit_test(test_zoneindex_diff_large),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
