/* test_fswproto.c - fswatcher's command parser and message formatting
 * (spec/fswatcher.md §3, §4 and the port extensions of proto.h). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../../fswatcher/proto.h"

static const struct proto_time T = { 91234, 500000000 };

static void parse(const char *line, struct proto_cmd *cmd)
{
	static char piece[PROTO_MAX_CMD_LEN + 1];
	snprintf(piece, sizeof(piece), "%s", line);
	proto_parse(piece, cmd);
}

static void expect_error(const char *line, uint64_t key, int code, const char *msg)
{
	struct proto_cmd cmd;
	parse(line, &cmd);
	assert_int_equal(cmd.kind, PROTO_CMD_ERROR);
	assert_true(cmd.key == key);
	assert_int_equal(cmd.code, code);
	assert_string_equal(cmd.message, msg);
}

static void test_parse_valid_commands(void **state)
{
	(void)state;
	struct proto_cmd cmd;
	parse("1 WATCH /tmp/.sysinfo.json\n", &cmd);
	assert_int_equal(cmd.kind, PROTO_CMD_WATCH);
	assert_true(cmd.key == 1);
	assert_string_equal(cmd.path, "/tmp/.sysinfo.json");

	parse("  0042\tUNWATCH   /a   trailing junk\n", &cmd);
	assert_int_equal(cmd.kind, PROTO_CMD_UNWATCH);
	assert_true(cmd.key == 42);
	assert_string_equal(cmd.path, "/a");

	parse("7 STATUS\n", &cmd);
	assert_int_equal(cmd.kind, PROTO_CMD_STATUS);
	assert_true(cmd.key == 7);

	/* No blank needed between key and command, as with sscanf. */
	parse("9WATCH /x", &cmd);
	assert_int_equal(cmd.kind, PROTO_CMD_WATCH);
	assert_true(cmd.key == 9);

	/* A path cannot contain blanks: "/a b" watches "/a". */
	parse("3 WATCH /a b\n", &cmd);
	assert_string_equal(cmd.path, "/a");
}

static void test_parse_key_quirks(void **state)
{
	(void)state;
	struct proto_cmd cmd;
	parse("-1 STATUS\n", &cmd);
	assert_int_equal(cmd.kind, PROTO_CMD_STATUS);
	assert_true(cmd.key == UINT64_MAX);
	parse("99999999999999999999999 STATUS\n", &cmd);
	assert_true(cmd.key == UINT64_MAX);
	parse("+5 STATUS\n", &cmd);
	assert_true(cmd.key == 5);
	/* Unknown command keeps the key, even a trailing-letter one. */
	expect_error("12abc /x\n", 12, PROTO_ERR_UNKNOWN_COMMAND, "unknown command 'abc'");
}

static void test_parse_errors(void **state)
{
	(void)state;
	expect_error("\n", 0, 1, "invalid command line");
	expect_error("", 0, 1, "invalid command line");
	expect_error("abc WATCH /x\n", 0, 1, "invalid command line");
	expect_error("5\n", 0, 1, "invalid command line");
	expect_error("- WATCH /x\n", 0, 1, "invalid command line");
	expect_error("0 WATCH /x\n", 0, 2, "invalid key: 0");
	expect_error("0 FOO\n", 0, 2, "invalid key: 0");
	expect_error("3 WATCH\n", 0, 1, "invalid command line - WATCH requires pathname");
	expect_error("3 UNWATCH \n", 0, 1, "invalid command line - UNWATCH requires pathname");
	expect_error("3 STATUS now\n", 0, 1, "invalid command line - STATUS takes no arguments");
	expect_error("8 watch /x\n", 8, 3, "unknown command 'watch'");
}

static void test_piece_len_is_fgets(void **state)
{
	(void)state;
	assert_int_equal(proto_piece_len("1 STATUS\n2", 10), 9);
	assert_int_equal(proto_piece_len("1 STATUS", 8), 0);
	size_t n = PROTO_MAX_CMD_LEN + 10;
	char *big = malloc(n);
	memset(big, 'a', n);
	big[n - 1] = '\n';
	/* A long line is consumed in pieces of at most MAX_CMD_LEN bytes. */
	assert_int_equal(proto_piece_len(big, n), PROTO_MAX_CMD_LEN);
	assert_int_equal(proto_piece_len(big + PROTO_MAX_CMD_LEN, 10), 10);
	/* Exactly MAX_CMD_LEN bytes plus newline: the newline is a piece. */
	assert_int_equal(proto_piece_len(big, PROTO_MAX_CMD_LEN), PROTO_MAX_CMD_LEN);
	assert_int_equal(PROTO_MAX_CMD_LEN, 4126);
	free(big);
}

static void check(int r, struct buf *b, const char *want)
{
	assert_int_equal(r, 0);
	assert_string_equal(b->data, want);
	buf_reset(b);
}

static void test_format_messages(void **state)
{
	(void)state;
	struct buf b = BUF_INIT;
	check(proto_fmt_ready(&b, true, T, 0), &b,
		"{\"type\":\"ready\",\"time\":[91234,500000000]}\n");
	check(proto_fmt_ready(&b, true, T, 1), &b,
		"{\"type\":\"ready\",\"time\":[91234,500000000],\"version\":1}\n");
	check(proto_fmt_response(&b, true, T, 1, true, "/tmp/.sysinfo.json",
		"port_associate(3c) started watching path"), &b,
		"{\"type\":\"response\",\"time\":[91234,500000000],\"key\":1,\"code\":0,"
		"\"pathname\":\"/tmp/.sysinfo.json\",\"message\":\"port_associate(3c) started watching path\","
		"\"result\":\"SUCCESS\"}\n");
	check(proto_fmt_response(&b, true, T, 2, false, "/z/x",
		"stat(2) failed with errno 2: No such file or directory"), &b,
		"{\"type\":\"response\",\"time\":[91234,500000000],\"key\":2,\"code\":1,"
		"\"pathname\":\"/z/x\",\"message\":\"stat(2) failed with errno 2: No such file or directory\","
		"\"result\":\"FAIL\"}\n");
	check(proto_fmt_event(&b, true, T, "/etc/zones/x.xml", FILE_MODIFIED, false), &b,
		"{\"type\":\"event\",\"time\":[91234,500000000],\"changes\":[\"FILE_MODIFIED\"],"
		"\"pathname\":\"/etc/zones/x.xml\",\"revents\":2,\"final\":false}\n");
	check(proto_fmt_event(&b, true, T, "/a", FILE_DELETE, true), &b,
		"{\"type\":\"event\",\"time\":[91234,500000000],\"changes\":[\"FILE_DELETE\",\"FILE_EXCEPTION\"],"
		"\"pathname\":\"/a\",\"revents\":16,\"final\":true}\n");
	check(proto_fmt_error(&b, true, T, 0, 1, "invalid command line"), &b,
		"{\"type\":\"error\",\"time\":[91234,500000000],\"key\":0,\"code\":1,"
		"\"message\":\"invalid command line\"}\n");
	check(proto_fmt_overflow(&b, true, T), &b,
		"{\"type\":\"overflow\",\"time\":[91234,500000000]}\n");
	check(proto_fmt_exists(&b, true, T, "/p"), &b,
		"{\"type\":\"exists\",\"time\":[91234,500000000],\"pathname\":\"/p\"}\n");
	/* Raw UTF-8, short escapes, / not escaped. */
	check(proto_fmt_exists(&b, true, T, "/t\xc3\xa9/\"q\"\t\x01"), &b,
		"{\"type\":\"exists\",\"time\":[91234,500000000],\"pathname\":\"/t\xc3\xa9/\\\"q\\\"\\t\\u0001\"}\n");
	buf_done(&b);
}

static void test_format_changes_order(void **state)
{
	(void)state;
	struct buf b = BUF_INIT;
	check(proto_fmt_changes(FILE_TRUNC | FILE_MODIFIED, &b), &b,
		"[\"FILE_MODIFIED\",\"FILE_TRUNC\"]");
	check(proto_fmt_changes(FILE_RENAME_TO, &b), &b, "[\"FILE_EXCEPTION\",\"FILE_RENAME_TO\"]");
	check(proto_fmt_changes(FILE_RENAME_FROM, &b), &b, "[\"FILE_EXCEPTION\",\"FILE_RENAME_FROM\"]");
	check(proto_fmt_changes(0xffffffffu, &b), &b,
		"[\"FILE_ACCESS\",\"FILE_ATTRIB\",\"FILE_DELETE\",\"FILE_EXCEPTION\",\"FILE_MODIFIED\","
		"\"FILE_RENAME_FROM\",\"FILE_RENAME_TO\",\"FILE_TRUNC\",\"FILE_NOFOLLOW\",\"MOUNTEDOVER\","
		"\"UNMOUNTED\"]");
	check(proto_fmt_changes(0, &b), &b, "[]");
	/* revents is printed as a signed 32-bit number. */
	check(proto_fmt_event(&b, true, T, "/m", MOUNTEDOVER | UNMOUNTED, true), &b,
		"{\"type\":\"event\",\"time\":[91234,500000000],\"changes\":[\"FILE_EXCEPTION\","
		"\"MOUNTEDOVER\",\"UNMOUNTED\"],\"pathname\":\"/m\",\"revents\":1610612736,\"final\":true}\n");
	buf_done(&b);
}

static void test_status_and_order(void **state)
{
	(void)state;
	struct buf b = BUF_INIT;
	const char *files[] = { "/b", "/a", "/\xc3\xa9" };
	proto_status_sort(files, 3);
	/* djb2 over signed chars (the bytes of é count as negative). */
	assert_true(proto_path_hash("/a") == (5381ULL * 33 + '/') * 33 + 'a');
	assert_true(proto_path_hash("/\xc3\xa9") ==
		((5381ULL * 33 + '/') * 33 + (uint64_t)(int64_t)-61) * 33 + (uint64_t)(int64_t)-87);
	assert_string_equal(files[0], "/a");
	assert_string_equal(files[1], "/b");
	assert_string_equal(files[2], "/\xc3\xa9");
	check(proto_fmt_status(&b, true, T, 9, files, 1, 4250, NULL, 0), &b,
		"{\"type\":\"response\",\"time\":[91234,500000000],\"key\":9,\"code\":0,\"result\":\"SUCCESS\","
		"\"data\":{\"files\":[\"/a\"],\"files_count\":1,\"pid\":4250}}\n");
	const char *pend[] = { "/p" };
	check(proto_fmt_status(&b, true, T, 9, files, 0, 1, pend, 1), &b,
		"{\"type\":\"response\",\"time\":[91234,500000000],\"key\":9,\"code\":0,\"result\":\"SUCCESS\","
		"\"data\":{\"files\":[],\"files_count\":0,\"pid\":1,\"pending\":[\"/p\"],\"pending_count\":1}}\n");
	buf_done(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_valid_commands),
		cmocka_unit_test(test_parse_key_quirks),
		cmocka_unit_test(test_parse_errors),
		cmocka_unit_test(test_piece_len_is_fgets),
		cmocka_unit_test(test_format_messages),
		cmocka_unit_test(test_format_changes_order),
		cmocka_unit_test(test_status_and_order),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
