/* test_log.c - bunyan record layout (DESIGN.md §9). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "json.h"
#include "log.h"

static char *read_all(const char *path)
{
	FILE *f = fopen(path, "re");
	assert_non_null(f);
	static char data[65536];
	size_t n = fread(data, 1, sizeof(data) - 1, f);
	data[n] = '\0';
	fclose(f);
	return data;
}

static void test_log_record_has_bunyan_layout(void **state)
{
	(void)state;
	char path[] = "/tmp/test_log.XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(log_init("vminfod", path, LOG_DEBUG), 0);
	json_t *child = json_pack("{s:{s:s}}", "task", "description", "d");
	log_emit(LOG_DEBUG, child, json_pack("{s:i}", "n", 3), "finished task in %s", "x");
	log_trace(NULL, "not written");
	log_info(log_err_fields("boom", "ENOENT"), "failed");
	log_debug(json_pack("{s:i,s:s}", "pid", 4242, "x", "y"), "child exited");
	json_decref(child);
	char *text = read_all(path);
	char *nl = strchr(text, '\n');
	assert_non_null(nl);
	*nl = '\0';
	char err[128];
	json_t *rec = js_parse(text, strlen(text), err, sizeof(err));
	assert_non_null(rec);
	const char **keys;
	long n = js_object_keys(rec, &keys);
	const char *want[] = { "name", "hostname", "pid", "task", "level", "n", "msg", "time", "v" };
	assert_int_equal(n, 9);
	for (long i = 0; i < n; i++)
		assert_string_equal(keys[i], want[i]);
	free(keys);
	assert_string_equal(json_string_value(json_object_get(rec, "name")), "vminfod");
	assert_int_equal((int)js_number_value(json_object_get(rec, "level")), 20);
	assert_int_equal((int)js_number_value(json_object_get(rec, "pid")), getpid());
	assert_string_equal(json_string_value(json_object_get(rec, "msg")), "finished task in x");
	const char *t = json_string_value(json_object_get(rec, "time"));
	assert_int_equal(strlen(t), 24);
	assert_int_equal(t[23], 'Z');
	assert_int_equal((int)js_number_value(json_object_get(rec, "v")), 0);
	json_decref(rec);
	/* second record: the trace line was not written, the info one was */
	char *second = nl + 1;
	assert_non_null(strstr(second, "\"level\":30"));
	assert_non_null(strstr(second, "\"err\":{\"message\":\"boom\",\"name\":\"Error\",\"stack\":\"Error: boom\",\"code\":\"ENOENT\"}"));
	assert_null(strstr(second, "not written"));
	assert_null(strstr(text, "not written"));
	/* third record: a field named like a core member takes its place */
	char *third = strchr(second, '\n');
	assert_non_null(third);
	third++;
	assert_non_null(strstr(third, ",\"pid\":4242,\"level\":20,\"x\":\"y\","));
	assert_null(strstr(strstr(third, "\"level\""), "\"pid\""));
	log_done();
	unlink(path);
}

static void test_log_level_names_parse(void **state)
{
	(void)state;
	assert_int_equal(log_level_parse("debug"), LOG_DEBUG);
	assert_int_equal(log_level_parse("fatal"), LOG_FATAL);
	assert_int_equal(log_level_parse("35"), 35);
	assert_int_equal(log_level_parse("loud"), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_log_record_has_bunyan_layout),
		cmocka_unit_test(test_log_level_names_parse),
	};
	return cmocka_run_group_tests_name("log", tests, NULL, NULL);
}
