/*
 * fuzz_reqpath.c - the frontend's request-target parsing: reqpath_parse
 * into exactly reqpath_work_size() bytes (ASan catches any write past
 * it), then the query lookups the routes make (since, full, zonename,
 * type) with a small and a large value buffer.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "reqpath.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_log_init();
	return 0;
}

static void check_seg(const struct reqpath_seg *s, const char *work, size_t worklen)
{
	if (!s->present)
		return;
	if (s->len && (s->p < work || s->p + s->len > work + worklen))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* A copy of exactly `size` bytes: reads past the target are caught. */
	char *target = malloc(size ? size : 1);
	if (!target)
		return 0;
	memcpy(target, data, size);
	size_t worklen = reqpath_work_size(size);
	char *work = malloc(worklen);
	if (!work) {
		free(target);
		return 0;
	}
	struct reqpath rp;
	if (reqpath_parse(target, size, work, worklen, &rp) == 0) {
		check_seg(&rp.seg[0], work, worklen);
		check_seg(&rp.seg[1], work, worklen);
		if (rp.query && (rp.query < target || rp.query + rp.query_len > target + size))
			abort();
		static const char *const keys[] = { "since", "full", "zonename", "type", "" };
		for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
			char small[8], big[256];
			size_t vlen = 0;
			(void)reqpath_query(rp.query, rp.query_len, keys[i], small, sizeof(small), &vlen);
			(void)reqpath_query(rp.query, rp.query_len, keys[i], big, sizeof(big), &vlen);
			(void)reqpath_query(rp.query, rp.query_len, keys[i], NULL, 0, &vlen);
			(void)reqpath_query_flag(rp.query, rp.query_len, keys[i]);
		}
	}
	/* Too small a work area must be refused, never overrun. */
	free(work);
	worklen /= 2;
	if (worklen && (work = malloc(worklen)) != NULL) {
		(void)reqpath_parse(target, size, work, worklen, &rp);
		free(work);
	}
	free(target);
	return 0;
}
