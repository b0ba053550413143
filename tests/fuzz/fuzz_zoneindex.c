/*
 * fuzz_zoneindex.c - zone index text -> records (zoneindex_parse).
 * The input is cut in two at the first form feed (or kept whole) and both
 * halves are parsed and diffed, as a reload of a changed index does; the
 * records found must all pass the name and uuid checks.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "zoneindex.h"

static void on_skip(void *arg, unsigned lineno, const char *line, const char *reason)
{
	size_t *n = arg;
	(*n)++;
	/* The callers log these: the text must be a readable C string. */
	if (strlen(line) > (1u << 24) || !reason[0])
		abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_log_init();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *)data;
	const char *ff = memchr(text, '\f', size);
	size_t n1 = ff ? (size_t)(ff - text) : size;
	struct zoneindex a = ZONEINDEX_INIT, b = ZONEINDEX_INIT;
	size_t skipped = 0;
	if (zoneindex_parse(text, n1, &a, on_skip, &skipped) < 0)
		return 0;
	if (ff && zoneindex_parse(ff + 1, size - n1 - 1, &b, on_skip, &skipped) < 0) {
		zoneindex_done(&a);
		return 0;
	}
	for (size_t i = 0; i < a.n; i++) {
		const struct zone_record *r = &a.recs[i];
		if (!zoneindex_name_ok(r->zonename) || strchr(r->zonename, '/') ||
		    strlen(r->zonename) > ZONEINDEX_NAME_MAX || strlen(r->uuid) != 36 ||
		    zoneindex_find(&a, r->zonename) == NULL)
			abort();
	}
	struct zone_change *ch = NULL;
	size_t nch = 0;
	if (zoneindex_diff(&a, &b, &ch, &nch) == 0) {
		for (size_t i = 0; i < nch; i++)
			if (!ch[i].zonename || !ch[i].newstate)
				abort();
		free(ch);
	}
	zoneindex_done(&a);
	zoneindex_done(&b);
	return 0;
}
