/*
 * fuzz_json.c - JSON text as vminfod reads it.
 *
 * Every input goes through js_parse (JSON.parse rules) and, when it
 * parses, the three writers.  The first byte then picks one of the host
 * files whose rules vmload applies - metadata.json, tags.json,
 * routes.json, tmp/.sysinfo.json or lastexited - and the rest of the
 * input becomes that file in a small host tree (made once, under
 * $TMPDIR); the zone is loaded with vmload_zone and its VM object built
 * with vmload_build, exactly as the supervisor does, and serialised.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "fuzz_common.h"
#include "json.h"
#include "vmload.h"
#include "zoneindex.h"

#define ZONE "073ae53b-c444-4e23-866b-10f99f276242"

static const char XML[] =
	"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
	"<zone name=\"" ZONE "\" zonepath=\"/zones/" ZONE "\" autoboot=\"true\" brand=\"joyent\" "
	"ip-type=\"exclusive\" limitpriv=\"default\" debugid=\"169\">\n"
	"<attr name=\"owner-uuid\" type=\"string\" value=\"930896af-bf8c-48d4-885c-6573a94b1853\"/>\n"
	"</zone>\n";

static const char *const FILES[] = {
	"zones/" ZONE "/config/metadata.json",
	"zones/" ZONE "/config/tags.json",
	"zones/" ZONE "/config/routes.json",
	"tmp/.sysinfo.json",
	"zones/" ZONE "/lastexited",
};
#define NFILES (sizeof(FILES) / sizeof(FILES[0]))

static char root[PATH_MAX];
static struct vmload_ctx ctx;
static struct zone_record rec = {
	.zonename = (char *)ZONE,
	.state = (char *)"installed",
	.zonepath = (char *)"/zones/" ZONE,
	.uuid = (char *)ZONE,
	.lineno = 1,
};

static void put(const char *rel, const void *data, size_t len)
{
	char path[PATH_MAX];
	if ((size_t)snprintf(path, sizeof(path), "%s/%s", root, rel) >= sizeof(path))
		abort();
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, data, len) != (ssize_t)len || close(fd) < 0) {
		perror(path);
		abort();
	}
}

static void mkdirs(const char *rel)
{
	char path[PATH_MAX];
	if ((size_t)snprintf(path, sizeof(path), "%s/%s", root, rel) >= sizeof(path))
		abort();
	for (char *p = path + strlen(root) + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		(void)mkdir(path, 0755);
		*p = '/';
	}
	(void)mkdir(path, 0755);
}

static void cleanup(void)
{
	for (size_t i = 0; i < NFILES; i++) {
		char path[PATH_MAX];
		if ((size_t)snprintf(path, sizeof(path), "%s/%s", root, FILES[i]) >= sizeof(path))
			abort();
		(void)unlink(path);
	}
	static const char *const rest[] = {
		"etc/zones/" ZONE ".xml", "etc/zones/index", "zones/" ZONE "/config",
		("zones/" ZONE), "zones", "etc/zones", "etc", "tmp", "",
	};
	for (size_t i = 0; i < sizeof(rest) / sizeof(rest[0]); i++) {
		char path[PATH_MAX];
		if ((size_t)snprintf(path, sizeof(path), "%s/%s", root, rest[i]) >= sizeof(path))
			abort();
		if (unlink(path) < 0)
			(void)rmdir(path);
	}
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_log_init();
	const char *tmp = getenv("TMPDIR");
	if ((size_t)snprintf(root, sizeof(root), "%s/fuzz_json.XXXXXX", tmp && *tmp ? tmp : "/tmp") >= sizeof(root))
		abort();
	if (!mkdtemp(root)) {
		perror(root);
		abort();
	}
	atexit(cleanup);
	mkdirs("etc/zones");
	mkdirs("zones/" ZONE "/config");
	mkdirs("tmp");
	put("etc/zones/" ZONE ".xml", XML, sizeof(XML) - 1);
	put("etc/zones/index", "global:installed:/\n" ZONE ":installed:/zones/" ZONE ":" ZONE "\n",
	    sizeof("global:installed:/\n" ZONE ":installed:/zones/" ZONE ":" ZONE "\n") - 1);
	for (size_t i = 0; i < NFILES; i++)
		put(FILES[i], "{}", 2);
	put(FILES[NFILES - 1], "1 1558042380000", 15);
	char err[256];
	if (vmload_ctx_init(&ctx, root, err, sizeof(err)) < 0) {
		fprintf(stderr, "vmload_ctx_init: %s\n", err);
		abort();
	}
	return 0;
}

static void dump_all(const json_t *v)
{
	struct buf out = BUF_INIT;
	(void)js_dump(v, &out);
	buf_done(&out);
	(void)js_dump_pretty(v, 2, &out);
	buf_done(&out);
	char *s = js_dumps(v, NULL);
	free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[256];
	json_t *v = js_parse((const char *)data, size, err, sizeof(err));
	if (v) {
		dump_all(v);
		if (json_is_object(v)) {
			const char **keys = NULL;
			long n = js_object_keys(v, &keys);
			if (n >= 0)
				free(keys);
		}
		json_decref(v);
	}
	if (size == 0)
		return 0;

	size_t which = data[0] % NFILES;
	const char *text = (const char *)data + 1;
	size_t len = size - 1;
	if (which == NFILES - 1) {
		int status;
		double ms;
		(void)vmload_parse_lastexited(text, len, &status, &ms, err, sizeof(err));
	}
	put(FILES[which], text, len);

	struct vm_raw *raw = vm_raw_new();
	if (!raw)
		return 0;
	json_t *sysinfo = vmload_sysinfo(&ctx, err, sizeof(err));
	if (vmload_zone(&ctx, &rec, raw, VMS_ALL, err, sizeof(err)) == 0 || vm_raw_sections(raw)) {
		json_t *vm = vmload_build(raw, sysinfo, err, sizeof(err));
		if (vm) {
			struct buf out = BUF_INIT;
			(void)js_dump(vm, &out);
			buf_done(&out);
			json_decref(vm);
		}
		json_t *rj = vmload_raw_json(raw);
		if (rj) {
			char *s = js_dumps(rj, NULL);
			free(s);
			json_decref(rj);
		}
		struct vm_raw *copy = vm_raw_dup(raw);
		vm_raw_free(copy);
	}
	json_decref(sysinfo);
	vm_raw_free(raw);
	put(FILES[which], which == NFILES - 1 ? "1 1558042380000" : "{}", which == NFILES - 1 ? 15 : 2);
	return 0;
}
