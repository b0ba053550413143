/*
 * mirror - run a libvminfod mirror and report what it sees, for the
 * integration tests.
 *
 *   mirror --port P [--host H] [--reconciles N] [--timeout MS]
 *
 * Prints one JSON line per occurrence, flushed at once:
 *   {"type":"ready","vms":<count>}                   after the first ready
 *   {"synthetic":<bool>,"event":<event>}             every applied event
 *   {"type":"state","reconciliations":N,"epoch":…,"version":…,
 *    "vms":{zonename: vm,…}}                         after each reconcile
 * and exits 0 once N reconciliations were done (default 1), 1 when the
 * stream fails for good or the timeout (default 120000 ms) passes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../client/vminfod.h"
#include "buf.h"
#include "json.h"

/* How long one mirror run lasts before the tool looks at the count. */
#define SLICE_MS 20

static void
emit(json_t *obj)
{
	struct buf b = BUF_INIT;

	if (obj && js_dump(obj, &b) == 0) {
		fwrite(b.data, 1, b.len, stdout);
		fputc('\n', stdout);
		fflush(stdout);
	}
	buf_done(&b);
	json_decref(obj);
}

static int
on_event(void *arg, const json_t *event, bool synthetic)
{
	emit(json_pack("{s:b,s:O}", "synthetic", synthetic, "event",
	    (json_t *)event));
	return 0;
}

int
main(int argc, char **argv)
{
	const char *host = NULL;
	unsigned port = 0, want = 1, seen = 0;
	long timeout_ms = 120000, waited = 0;
	struct vminfod_stream_opts opts = { .reconnect_max_ms = 100000 };
	struct vminfod_error err = { 0 };
	struct vminfod_client *c;
	struct vminfod_mirror *m;
	int i, r = 0;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--host") && i + 1 < argc)
			host = argv[++i];
		else if (!strcmp(argv[i], "--port") && i + 1 < argc)
			port = (unsigned)atoi(argv[++i]);
		else if (!strcmp(argv[i], "--reconciles") && i + 1 < argc)
			want = (unsigned)atoi(argv[++i]);
		else if (!strcmp(argv[i], "--timeout") && i + 1 < argc)
			timeout_ms = atol(argv[++i]);
		else {
			fprintf(stderr, "usage: mirror --port P [--host H] "
			    "[--reconciles N] [--timeout MS]\n");
			return 2;
		}
	}
	if (!(c = vminfod_client_new(host, port)) ||
	    vminfod_client_set_name(c, "mirror test") < 0) {
		fprintf(stderr, "mirror: out of memory\n");
		return 2;
	}
	if (!(m = vminfod_mirror_new(c, &opts, on_event, NULL, &err))) {
		fprintf(stderr, "%s\n", err.message);
		vminfod_error_clear(&err);
		vminfod_client_free(c);
		return 1;
	}
	emit(json_pack("{s:s,s:I}", "type", "ready", "vms",
	    (json_int_t)json_object_size(vminfod_mirror_vms(m))));
	while (seen < want && waited < timeout_ms) {
		r = vminfod_mirror_run(m, SLICE_MS, &err);
		if (r < 0)
			break;
		waited += SLICE_MS;
		if (vminfod_mirror_reconciliations(m) != seen) {
			struct vminfod_stream *s = vminfod_mirror_stream(m);
			const char *epoch = vminfod_stream_epoch(s);

			seen = vminfod_mirror_reconciliations(m);
			emit(json_pack("{s:s,s:I,s:s?,s:I,s:O}", "type", "state",
			    "reconciliations", (json_int_t)seen, "epoch", epoch,
			    "version", (json_int_t)vminfod_stream_version(s),
			    "vms", (json_t *)vminfod_mirror_vms(m)));
		}
	}
	if (r < 0)
		fprintf(stderr, "%s\n", err.message);
	else if (seen < want)
		fprintf(stderr, "mirror: timeout\n");
	vminfod_error_clear(&err);
	vminfod_mirror_free(m);
	vminfod_client_free(c);
	return seen >= want ? 0 : 1;
}
