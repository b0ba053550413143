/*
 * test_statusfmt.c - /status and its queue object from raw facts,
 * byte for byte (spec/http-api.md §3.2, §3.2.1, §3.2.6).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "json.h"
#include "statusfmt.h"

#define S(x) ((uint64_t)(x) * 1000000000ULL)

static json_t *
parse(const char *text)
{
	char err[256];
	json_t *v = js_parse(text, strlen(text), err, sizeof(err));

	if (v == NULL)
		fail_msg("cannot parse %s: %s", text, err);
	return v;
}

static void
assert_json(json_t *v, const char *want)
{
	char *got;

	assert_non_null(v);
	got = js_dumps(v, NULL);
	assert_non_null(got);
	assert_string_equal(got, want);
	free(got);
	json_decref(v);
}

/* The example of http-api.md §3.2.6 (queue "now" sampled at curTime). */
static void
test_statusfmt_status_matches_spec_example(void **state)
{
	uint64_t now = S(91234) + 500000000ULL;
	char text[2048];
	json_t *facts, *listeners;

	snprintf(text, sizeof(text),
	    "{\"pid\":4242,\"start_ns\":%llu,\"rss\":47710208,"
	    "\"heapTotal\":30000000,\"heapUsed\":20000000,\"state\":\"running\","
	    "\"status\":\"working\",\"numVms\":2,"
	    "\"queue\":{\"paused\":false,\"idle\":true,\"paused_at_ns\":null,"
	    "\"pending\":[],\"queued\":[],\"paused_queue\":[]},"
	    "\"last_refresh_ns\":%llu,\"refresh_errors\":[],\"refresh_log\":[],"
	    "\"fswatcher\":{\"running\":true},\"children\":{},"
	    "\"heartbeat_ns\":9}",
	    (unsigned long long)(now - S(3600) - 250000000ULL),
	    (unsigned long long)(now - S(12) - 345678901ULL));
	facts = parse(text);
	listeners = parse("{\"0d9f1c7e-1111-4222-8333-944445555666\":{"
	    "\"userAgent\":\"Vminfod CLI - headnode/5000 (/usr/vm/sbin/vminfo)\","
	    "\"createdTime\":\"91229.500000000\","
	    "\"createdDate\":\"2019-06-19T05:39:56.123Z\","
	    "\"createdAgo\":\"5.000000000s (5s)\"}}");
	assert_json(statusfmt_status(facts, now, 1560922801123LL, listeners,
	    false),
	    "{\"pid\":4242,\"uptime\":\"3600.250000000s (1h)\","
	    "\"memory\":{\"rss\":47710208,\"heapTotal\":30000000,\"heapUsed\":20000000},"
	    "\"state\":\"running\",\"status\":\"working\",\"numVms\":2,"
	    "\"curDate\":\"2019-06-19T05:40:01.123Z\",\"curTime\":\"91234.500000000\","
	    "\"queue\":{\"now\":\"91234.500000000\",\"paused\":false,\"idle\":true,"
	    "\"vasync_queue\":{\"concurrency\":1,\"npending\":0,\"nqueued\":0,"
	    "\"pending\":{},\"queued\":[]}},"
	    "\"lastRefresh\":\"12.345678901s (12.35s)\",\"refreshErrors\":[],"
	    "\"eventsListeners\":{\"0d9f1c7e-1111-4222-8333-944445555666\":{"
	    "\"userAgent\":\"Vminfod CLI - headnode/5000 (/usr/vm/sbin/vminfo)\","
	    "\"createdTime\":\"91229.500000000\","
	    "\"createdDate\":\"2019-06-19T05:39:56.123Z\","
	    "\"createdAgo\":\"5.000000000s (5s)\"}}}");
	json_decref(facts);
	json_decref(listeners);
}

static void
test_statusfmt_full_status_adds_refresh_log_and_fswatcher(void **state)
{
	/* integer timestamps (as jansson reads them) work as well as reals */
	json_t *facts = json_loads("{\"pid\":1,\"start_ns\":1000000000,"
	    "\"rss\":1,\"heapTotal\":0,\"heapUsed\":0,\"state\":\"running\","
	    "\"status\":\"working\",\"numVms\":0,\"queue\":{},"
	    "\"last_refresh_ns\":null,"
	    "\"refresh_errors\":[{\"err\":\"syntax error\",\"time_ns\":5000000000}],"
	    "\"refresh_log\":[{\"cacheChanges\":[{\"prettyPath\":\"x\"}],"
	    "\"vmChanges\":[{\"zonename\":\"z\",\"action\":\"create\"}],"
	    "\"started_ns\":6000000000,\"ended_ns\":6082484118}],"
	    "\"fswatcher\":{\"watching\":[\"/a\"],\"watcher_pid\":null,"
	    "\"running\":true}}", 0, NULL);

	assert_non_null(facts);
	assert_json(statusfmt_status(facts, S(10), 0, NULL, true),
	    "{\"pid\":1,\"uptime\":\"9.000000000s (9s)\","
	    "\"memory\":{\"rss\":1,\"heapTotal\":0,\"heapUsed\":0},"
	    "\"state\":\"running\",\"status\":\"working\",\"numVms\":0,"
	    "\"curDate\":\"1970-01-01T00:00:00.000Z\",\"curTime\":\"10.000000000\","
	    "\"queue\":{\"now\":\"10.000000000\",\"paused\":false,\"idle\":false,"
	    "\"vasync_queue\":{\"concurrency\":1,\"npending\":0,\"nqueued\":0,"
	    "\"pending\":{},\"queued\":[]}},"
	    "\"lastRefresh\":null,"
	    "\"refreshErrors\":[{\"err\":\"syntax error\",\"time\":\"5.000000000\","
	    "\"ago\":\"5.000000000s (5s)\"}],"
	    "\"eventsListeners\":{},"
	    "\"refreshLog\":[{\"cacheChanges\":[{\"prettyPath\":\"x\"}],"
	    "\"vmChanges\":[{\"zonename\":\"z\",\"action\":\"create\"}],"
	    "\"started\":\"6.000000000\",\"ended\":\"6.082484118\","
	    "\"took\":\"0.082484118s (82.48ms)\","
	    "\"endedAgo\":\"3.917515882s (3.92s)\"}],"
	    "\"fswatcher\":{\"watching\":[\"/a\"],\"watcher_pid\":null,"
	    "\"running\":true}}");
	json_decref(facts);
}

static void
test_statusfmt_queue_lists_pending_queued_and_paused(void **state)
{
	json_t *facts = parse("{\"paused\":true,\"idle\":false,"
	    "\"paused_at_ns\":8000000000,"
	    "\"pending\":[{\"id\":\"11111111-2222-4333-8444-555555555555\","
	    "\"description\":\"handle zone event - zonename: z1\","
	    "\"created_ns\":5000000000,\"started_ns\":5001125000}],"
	    "\"queued\":[{\"description\":\"q1\",\"created_ns\":6000000000}],"
	    "\"paused_queue\":[{\"id\":\"aaaaaaaa-2222-4333-8444-555555555555\","
	    "\"description\":\"p1\",\"created_ns\":9000000000}]}");

	assert_json(statusfmt_queue(facts, S(10)),
	    "{\"now\":\"10.000000000\",\"paused\":true,\"idle\":false,"
	    "\"vasync_queue\":{\"concurrency\":1,\"npending\":1,\"nqueued\":1,"
	    "\"pending\":{\"11111111-2222-4333-8444-555555555555\":{"
	    "\"description\":\"handle zone event - zonename: z1\","
	    "\"created_at\":\"5.000000000\",\"started_at\":\"5.001125000\","
	    "\"created_ago\":\"5.000000000s (5s)\","
	    "\"started_ago\":\"4.998875000s (5s)\","
	    "\"start_latency\":\"0.001125000s (1.13ms)\"}},"
	    "\"queued\":[{\"description\":\"q1\",\"created_at\":\"6.000000000\","
	    "\"created_ago\":\"4.000000000s (4s)\"}]},"
	    "\"paused_at\":\"8.000000000\",\"paused_ago\":\"2.000000000s (2s)\","
	    "\"paused_nqueued\":1,"
	    "\"paused_queue\":[{\"id\":\"aaaaaaaa-2222-4333-8444-555555555555\","
	    "\"description\":\"p1\",\"created_at\":\"9.000000000\","
	    "\"created_ago\":\"1.000000000s (1s)\"}]}");
	json_decref(facts);
}

static void
test_statusfmt_queue_omits_start_of_task_not_yet_started(void **state)
{
	json_t *facts = parse("{\"paused\":false,\"idle\":false,"
	    "\"paused_at_ns\":null,\"pending\":[{\"id\":\"x\","
	    "\"description\":\"d\",\"created_ns\":12000000000,"
	    "\"started_ns\":null}],\"queued\":[],\"paused_queue\":[]}");

	/* a timestamp after "now" counts as no time at all */
	assert_json(statusfmt_queue(facts, S(10)),
	    "{\"now\":\"10.000000000\",\"paused\":false,\"idle\":false,"
	    "\"vasync_queue\":{\"concurrency\":1,\"npending\":1,\"nqueued\":0,"
	    "\"pending\":{\"x\":{\"description\":\"d\","
	    "\"created_at\":\"12.000000000\","
	    "\"created_ago\":\"0.000000000s (0ns)\"}},\"queued\":[]}}");
	json_decref(facts);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_statusfmt_status_matches_spec_example),
		cmocka_unit_test(test_statusfmt_full_status_adds_refresh_log_and_fswatcher),
		cmocka_unit_test(test_statusfmt_queue_lists_pending_queued_and_paused),
		cmocka_unit_test(test_statusfmt_queue_omits_start_of_task_not_yet_started),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
