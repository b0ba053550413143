/*
 * test_vmload.c - the build stage on a temporary --root: the worked
 * example of spec/vmload.md §4.1 byte for byte, the config JSON rules,
 * lastexited and last-modified, per-VM isolation, refused files (FIFO,
 * symlinks out of the root), per-section reloads and --dump.
 */
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "../../supervisor/oneshot.h"
#include "../../supervisor/vmload.h"
#include "jfreeze.h"
#include "json.h"
#include "log.h"

#define U1 "073ae53b-c444-4e23-866b-10f99f276242"
#define U2 "5a02245a-422c-4e0a-c5f8-fd6fac1ac04e"
#define FIXTURES "tests/fixtures/vmload-xml"
#define SYSINFO "{\"UUID\":\"44454c4c-3200-1038-8050-b5c04f383432\"," \
	"\"Live Image\":\"20190101T000000Z\",\"Datacenter Name\":\"dc1\"}"

/* The worked example's expected object (spec/vmload.md §4.1). */
#define WORKED "{\"zonename\":\"" U1 "\",\"autoboot\":true,\"brand\":\"joyent\"," \
	"\"limit_priv\":\"default\",\"nics\":[],\"uuid\":\"" U1 "\"," \
	"\"zone_state\":\"installed\",\"zonepath\":\"/zones/" U1 "\"," \
	"\"hvm\":false,\"zoneid\":null,\"zonedid\":169,\"last_modified\":\"2019-06-19T04:34:48.000Z\"," \
	"\"resolvers\":[],\"firewall_enabled\":false,\"server_uuid\":\"44454c4c-3200-1038-8050-b5c04f383432\"," \
	"\"datacenter_name\":\"dc1\",\"platform_buildstamp\":\"20190101T000000Z\",\"state\":\"stopped\"," \
	"\"customer_metadata\":{},\"internal_metadata\":{},\"routes\":{},\"tags\":{}}"

struct fx {
	char root[64];
	char log_path[80];
	struct vmload_ctx ctx;
};

static void
pathf(char *out, size_t n, const struct fx *f, const char *rel)
{
	snprintf(out, n, "%s%s", f->root, rel);
}

static void
mkdirs(const struct fx *f, const char *rel)
{
	char path[1024];

	pathf(path, sizeof(path), f, rel);
	for (char *p = path + strlen(f->root) + 1; *p != '\0'; p++) {
		if (*p == '/') {
			*p = '\0';
			(void)mkdir(path, 0755);
			*p = '/';
		}
	}
	(void)mkdir(path, 0755);
}

static void
put(const struct fx *f, const char *rel, const char *data, size_t len)
{
	char path[1024], tmp[1100];
	int fd;

	pathf(path, sizeof(path), f, rel);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	close(fd);
	assert_int_equal(rename(tmp, path), 0);
}

static void
puts_(const struct fx *f, const char *rel, const char *text)
{
	put(f, rel, text, strlen(text));
}

static void
set_mtime(const struct fx *f, const char *rel, time_t sec, long nsec)
{
	char path[1024];
	struct timespec ts[2] = { { sec, nsec }, { sec, nsec } };

	pathf(path, sizeof(path), f, rel);
	assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
}

static char *
slurp(const char *path)
{
	FILE *fp = fopen(path, "rbe");
	char *data;
	long n;

	assert_non_null(fp);
	fseek(fp, 0, SEEK_END);
	n = ftell(fp);
	rewind(fp);
	data = calloc(1, (size_t)n + 1);
	assert_non_null(data);
	assert_int_equal(fread(data, 1, (size_t)n, fp), (size_t)n);
	fclose(fp);
	return data;
}

static char *
take_log(struct fx *f)
{
	char *text = slurp(f->log_path);

	assert_int_equal(truncate(f->log_path, 0), 0);
	return text;
}

static void
copy_fixture(const struct fx *f, const char *name, const char *rel)
{
	char path[512], *data;

	snprintf(path, sizeof(path), FIXTURES "/%s", name);
	data = slurp(path);
	puts_(f, rel, data);
	free(data);
}

/* The worked example's host: one zone, sysinfo, no config files. */
static void
make_worked_host(struct fx *f)
{
	mkdirs(f, "/etc/zones");
	mkdirs(f, "/tmp");
	mkdirs(f, "/zones/" U1 "/config");
	puts_(f, "/etc/zones/index", "# index\nglobal:installed:/\n"
		U1 ":installed:/zones/" U1 ":" U1 "\n");
	copy_fixture(f, "minimal-joyent.xml", "/etc/zones/" U1 ".xml");
	/* 2019-06-19T04:34:48.243Z */
	set_mtime(f, "/etc/zones/" U1 ".xml", 1560918888, 243000000);
	puts_(f, "/tmp/.sysinfo.json", SYSINFO);
}

static const struct zone_record *
record_of(const struct zoneindex *idx, const char *zonename)
{
	const struct zone_record *r = zoneindex_find(idx, zonename);

	assert_non_null(r);
	return r;
}

/* Load all sections of a zone of the host's index and build it. */
static json_t *
load_and_build(struct fx *f, const char *zonename, int *ret_rc, char *err, size_t errlen)
{
	struct zoneindex idx = ZONEINDEX_INIT;
	struct vm_raw *raw = vm_raw_new();
	json_t *sysinfo, *vm = NULL;
	char e2[512];

	assert_non_null(raw);
	assert_int_equal(vmload_index(&f->ctx, &idx, e2, sizeof(e2)), 0);
	sysinfo = vmload_sysinfo(&f->ctx, e2, sizeof(e2));
	*ret_rc = vmload_zone(&f->ctx, record_of(&idx, zonename), raw, VMS_ALL, err, errlen);
	if (*ret_rc == 0)
		vm = vmload_build(raw, sysinfo, err, errlen);
	json_decref(sysinfo);
	vm_raw_free(raw);
	zoneindex_done(&idx);
	return vm;
}

static void
assert_dump(const json_t *v, const char *want)
{
	char *got = js_dumps(v, NULL);

	assert_non_null(got);
	assert_string_equal(got, want);
	free(got);
}

static void
test_vmload_worked_example(void **state)
{
	struct fx *f = *state;
	char err[512], *log;
	int rc;
	json_t *vm;

	make_worked_host(f);
	free(take_log(f));
	vm = load_and_build(f, U1, &rc, err, sizeof(err));
	assert_int_equal(rc, 0);
	assert_non_null(vm);
	assert_dump(vm, WORKED);
	json_decref(vm);
	log = take_log(f);
	assert_non_null(strstr(log, "\"exit_status\\\" requested, but not found incache for VM " U1));
	assert_non_null(strstr(log, "\"exit_timestamp\\\" requested, but not found in cache for VM " U1));
	free(log);
}

static void
test_vmload_invalid_config_json_is_empty(void **state)
{
	static const char *files[] = { "metadata", "tags", "routes" };
	struct fx *f = *state;

	make_worked_host(f);
	for (int i = 0; i < 3; i++) {
		char rel[256], err[512];
		int rc;
		json_t *vm;

		/* valid content in all three, then break one */
		puts_(f, "/zones/" U1 "/config/metadata.json",
			"{\"customer_metadata\":{\"b\":1,\"10\":2,\"a\":3,\"2\":4},"
			"\"internal_metadata\":{\"k\":\"v\"}}");
		puts_(f, "/zones/" U1 "/config/tags.json", "{\"role\":\"db\"}");
		puts_(f, "/zones/" U1 "/config/routes.json", "{\"10.0.0.0/8\":\"10.1.1.1\"}");
		snprintf(rel, sizeof(rel), "/zones/" U1 "/config/%s.json", files[i]);
		puts_(f, rel, "{not json");
		vm = load_and_build(f, U1, &rc, err, sizeof(err));
		assert_int_equal(rc, 0);
		assert_non_null(vm);
		assert_dump(json_object_get(vm, "customer_metadata"),
			i == 0 ? "{}" : "{\"2\":4,\"10\":2,\"b\":1,\"a\":3}");
		assert_dump(json_object_get(vm, "internal_metadata"),
			i == 0 ? "{}" : "{\"k\":\"v\"}");
		assert_dump(json_object_get(vm, "tags"), i == 1 ? "{}" : "{\"role\":\"db\"}");
		assert_dump(json_object_get(vm, "routes"),
			i == 2 ? "{}" : "{\"10.0.0.0/8\":\"10.1.1.1\"}");
		json_decref(vm);
	}
}

static void
test_vmload_odd_config_values(void **state)
{
	struct fx *f = *state;
	char err[512];
	int rc;
	json_t *vm;

	make_worked_host(f);
	/* tags/routes taken as is, whatever their type; metadata null -> {} */
	puts_(f, "/zones/" U1 "/config/metadata.json", "null");
	puts_(f, "/zones/" U1 "/config/tags.json", "[1,2]");
	puts_(f, "/zones/" U1 "/config/routes.json", "null");
	vm = load_and_build(f, U1, &rc, err, sizeof(err));
	assert_non_null(vm);
	assert_dump(json_object_get(vm, "customer_metadata"), "{}");
	assert_dump(json_object_get(vm, "tags"), "[1,2]");
	assert_dump(json_object_get(vm, "routes"), "null");
	json_decref(vm);
}

static void
test_vmload_zone_without_xml_is_skipped(void **state)
{
	struct fx *f = *state;
	char err[512], out_path[128], *out, *log;
	int rc, saved, fd;
	json_t *vm;

	make_worked_host(f);
	mkdirs(f, "/zones/noxml");
	puts_(f, "/etc/zones/index", "noxml:installed:/zones/noxml:" U2 "\n"
		U1 ":installed:/zones/" U1 ":" U1 "\n");
	free(take_log(f));
	vm = load_and_build(f, "noxml", &rc, err, sizeof(err));
	assert_null(vm);
	assert_int_equal(rc, -ENOENT);
	assert_string_equal(err, "unable to load /etc/zones/noxml.xml: ENOENT: No such file or directory");
	log = take_log(f);
	assert_non_null(strstr(log, "\"level\":40"));
	assert_non_null(strstr(log, "unable to load /etc/zones/noxml.xml"));
	free(log);

	/* --dump: the other zone is there, the broken one is not */
	snprintf(out_path, sizeof(out_path), "%s/dump.out", f->root);
	fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	fflush(stdout);
	saved = dup(STDOUT_FILENO);
	assert_true(saved >= 0);
	assert_int_equal(dup2(fd, STDOUT_FILENO), STDOUT_FILENO);
	rc = oneshot_dump(f->root);
	assert_int_equal(dup2(saved, STDOUT_FILENO), STDOUT_FILENO);
	close(saved);
	close(fd);
	assert_int_equal(rc, 0);
	out = slurp(out_path);
	assert_string_equal(out, "[" WORKED "]\n");
	free(out);
}

static void
test_vmload_garbage_xml_is_isolated(void **state)
{
	struct fx *f = *state;
	struct zoneindex idx = ZONEINDEX_INIT;
	struct vm_raw *raw = vm_raw_new();
	char err[512], *log;

	make_worked_host(f);
	mkdirs(f, "/zones/bad");
	copy_fixture(f, "garbage.xml", "/etc/zones/bad.xml");
	puts_(f, "/etc/zones/index", "bad:installed:/zones/bad:" U2 "\n");
	assert_int_equal(vmload_index(&f->ctx, &idx, err, sizeof(err)), 0);
	free(take_log(f));
	assert_int_equal(vmload_zone(&f->ctx, &idx.recs[0], raw, VMS_ALL, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "unable to load /etc/zones/bad.xml: PARSE_ERROR: syntax error");
	assert_string_equal(vm_raw_error(raw, VMS_XML), err);
	assert_null(vm_raw_error(raw, VMS_JSON));
	/* the other sections loaded anyway */
	assert_int_equal(vm_raw_sections(raw), VMS_ALL & ~VMS_XML);
	log = take_log(f);
	assert_non_null(strstr(log, "\"level\":50"));
	assert_non_null(strstr(log, "\"message\":\"syntax error\""));
	assert_non_null(strstr(log, "\"code\":\"PARSE_ERROR\""));
	free(log);
	assert_null(vmload_build(raw, NULL, err, sizeof(err)));
	assert_string_equal(err, "VM " U2 " XML data missing from cache");
	vm_raw_free(raw);
	zoneindex_done(&idx);
}

static void
test_vmload_fifo_metadata_is_refused(void **state)
{
	struct fx *f = *state;
	char path[512], err[512], *log;
	int rc;
	json_t *vm;

	make_worked_host(f);
	pathf(path, sizeof(path), f, "/zones/" U1 "/config/metadata.json");
	assert_int_equal(mkfifo(path, 0644), 0);
	free(take_log(f));
	/* would block forever on a plain open(O_RDONLY) */
	vm = load_and_build(f, U1, &rc, err, sizeof(err));
	assert_int_equal(rc, 0);
	assert_non_null(vm);
	assert_dump(vm, WORKED);
	json_decref(vm);
	log = take_log(f);
	assert_non_null(strstr(log, "not a regular file, treating as missing"));
	free(log);
}

static void
test_vmload_directory_config_is_an_error(void **state)
{
	struct fx *f = *state;
	char err[512];
	int rc;
	json_t *vm;

	make_worked_host(f);
	mkdirs(f, "/zones/" U1 "/config/tags.json");
	vm = load_and_build(f, U1, &rc, err, sizeof(err));
	assert_null(vm);
	assert_int_equal(rc, -EISDIR);
	assert_non_null(strstr(err, "loadJsonConfig() failed to load /zones/" U1 "/config/tags.json"));

	/* an incomplete zone shrugs it off and simply has no JSON keys */
	puts_(f, "/etc/zones/index", U1 ":incomplete:/zones/" U1 ":" U1 "\n");
	vm = load_and_build(f, U1, &rc, err, sizeof(err));
	assert_int_equal(rc, 0);
	assert_non_null(vm);
	assert_null(json_object_get(vm, "tags"));
	assert_null(json_object_get(vm, "customer_metadata"));
	assert_string_equal(json_string_value(json_object_get(vm, "state")), "incomplete");
	json_decref(vm);
}

/* Links that try to leave the root read as missing files; a link that
 * stays inside works (openat2 only: the fallback refuses every final
 * symlink). */
static void
check_symlinks(struct fx *f, bool use_openat2)
{
	char path[512], err[512], outside[128], outdir[128], rel[256];
	int rc;
	json_t *vm;

	make_worked_host(f);
	/* real files outside the root that links try to reach */
	snprintf(outside, sizeof(outside), "%s.outside.json", f->root);
	snprintf(outdir, sizeof(outdir), "%s.outdir", f->root);
	(void)mkdir(outdir, 0755);
	{
		FILE *fp = fopen(outside, "we");
		char p2[256];

		assert_non_null(fp);
		fputs("{\"role\":\"escaped\"}", fp);
		fclose(fp);
		snprintf(p2, sizeof(p2), "%s/tags.json", outdir);
		fp = fopen(p2, "we");
		assert_non_null(fp);
		fputs("{\"role\":\"escaped\"}", fp);
		fclose(fp);
	}
	pathf(path, sizeof(path), f, "/zones/" U1 "/config/tags.json");
	assert_int_equal(symlink(outside, path), 0);
	pathf(path, sizeof(path), f, "/zones/" U1 "/config/routes.json");
	snprintf(rel, sizeof(rel), "../../../../%s", strrchr(outside, '/') + 1);
	assert_int_equal(symlink(rel, path), 0);
	puts_(f, "/zones/shared-meta.json", "{\"customer_metadata\":{\"x\":\"y\"}}");
	pathf(path, sizeof(path), f, "/zones/" U1 "/config/metadata.json");
	assert_int_equal(symlink("/zones/shared-meta.json", path), 0);
	/* a second zone whose config directory is a link out of the root */
	mkdirs(f, "/zones/z2");
	pathf(path, sizeof(path), f, "/zones/z2/config");
	assert_int_equal(symlink(outdir, path), 0);
	puts_(f, "/etc/zones/z2.xml", "<zone name=\"z2\" brand=\"joyent\"/>");
	puts_(f, "/etc/zones/index", U1 ":installed:/zones/" U1 ":" U1 "\n"
		"z2:installed:/zones/z2:" U2 "\n");

	f->ctx.have_openat2 = use_openat2;
	vm = load_and_build(f, U1, &rc, err, sizeof(err));
	assert_int_equal(rc, 0);
	assert_non_null(vm);
	assert_dump(json_object_get(vm, "tags"), "{}");
	assert_dump(json_object_get(vm, "routes"), "{}");
	assert_dump(json_object_get(vm, "customer_metadata"),
		use_openat2 ? "{\"x\":\"y\"}" : "{}");
	json_decref(vm);
	vm = load_and_build(f, "z2", &rc, err, sizeof(err));
	assert_int_equal(rc, 0);
	assert_dump(json_object_get(vm, "tags"), "{}");
	json_decref(vm);
	unlink(outside);
	snprintf(path, sizeof(path), "%s/tags.json", outdir);
	unlink(path);
	rmdir(outdir);
}

static void
test_vmload_symlinks_stay_in_root(void **state)
{
	struct fx *f = *state;

	if (!f->ctx.have_openat2)
		skip();
	check_symlinks(f, true);
}

static void
test_vmload_symlinks_stay_in_root_fallback(void **state)
{
	check_symlinks(*state, false);
}

static void
test_vmload_lastexited_parsing(void **state)
{
	char err[256];
	int st;
	double ms;

	assert_int_equal(vmload_parse_lastexited("1560919088 0\n", 13, &st, &ms, err, sizeof(err)), 0);
	assert_int_equal(st, 0);
	assert_true(ms == 1560919088000.0);
	assert_int_equal(vmload_parse_lastexited("1560919088 -1", 13, &st, &ms, err, sizeof(err)), 0);
	assert_int_equal(st, 0);
	/* exit(3) is status 3 << 8; killed by signal 9 */
	assert_int_equal(vmload_parse_lastexited("1 768", 5, &st, &ms, err, sizeof(err)), 0);
	assert_int_equal(st, 3);
	assert_int_equal(vmload_parse_lastexited("1 9", 3, &st, &ms, err, sizeof(err)), 0);
	assert_int_equal(st, -9);
	assert_int_equal(vmload_parse_lastexited("1 x", 3, &st, &ms, err, sizeof(err)), 0);
	assert_int_equal(st, 0);
	/* fractional seconds: milliseconds truncated */
	assert_int_equal(vmload_parse_lastexited(" 1.2345\t1 ", 10, &st, &ms, err, sizeof(err)), 0);
	assert_true(ms == 1234.0);

	assert_int_equal(vmload_parse_lastexited("123  0", 6, &st, &ms, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "wrong number of fields in [123  0]");
	assert_int_equal(vmload_parse_lastexited("123", 3, &st, &ms, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "wrong number of fields in [123]");
	assert_int_equal(vmload_parse_lastexited("", 0, &st, &ms, err, sizeof(err)), -EINVAL);
	assert_int_equal(vmload_parse_lastexited("1 2 3", 5, &st, &ms, err, sizeof(err)), -EINVAL);
	assert_int_equal(vmload_parse_lastexited("abc 0", 5, &st, &ms, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "Invalid time value");
}

static void
test_vmload_lastexited_and_last_modified(void **state)
{
	struct fx *f = *state;
	char err[512];
	int rc;
	json_t *vm;

	make_worked_host(f);
	puts_(f, "/zones/" U1 "/lastexited", "1560919088 9\n");
	set_mtime(f, "/zones/" U1 "/lastexited", 1560919000, 999999999);
	vm = load_and_build(f, U1, &rc, err, sizeof(err));
	assert_non_null(vm);
	assert_dump(json_object_get(vm, "exit_status"), "-9");
	assert_dump(json_object_get(vm, "exit_timestamp"), "\"2019-06-19T04:38:08.000Z\"");
	/* newest of the files, truncated to whole seconds */
	assert_dump(json_object_get(vm, "last_modified"), "\"2019-06-19T04:36:40.000Z\"");
	json_decref(vm);

	/* a running zone carries no exit keys */
	puts_(f, "/etc/zones/index", U1 ":running:/zones/" U1 ":" U1 "\n");
	vm = load_and_build(f, U1, &rc, err, sizeof(err));
	assert_null(json_object_get(vm, "exit_status"));
	assert_string_equal(json_string_value(json_object_get(vm, "state")), "running");
	json_decref(vm);

	/* malformed lastexited: no keys, no failure */
	puts_(f, "/etc/zones/index", U1 ":installed:/zones/" U1 ":" U1 "\n");
	puts_(f, "/zones/" U1 "/lastexited", "garbage");
	vm = load_and_build(f, U1, &rc, err, sizeof(err));
	assert_int_equal(rc, 0);
	assert_null(json_object_get(vm, "exit_status"));
	assert_null(json_object_get(vm, "exit_timestamp"));
	json_decref(vm);
}

static void
test_vmload_per_section_reload_and_raw_json(void **state)
{
	struct fx *f = *state;
	struct zoneindex idx = ZONEINDEX_INIT;
	struct vm_raw *raw = vm_raw_new(), *copy;
	char err[512];
	json_t *vm, *rj;

	make_worked_host(f);
	assert_int_equal(vmload_index(&f->ctx, &idx, err, sizeof(err)), 0);
	assert_int_equal(vmload_zone(&f->ctx, &idx.recs[0], raw, VMS_ALL, err, sizeof(err)), 0);
	assert_int_equal(vm_raw_sections(raw), VMS_ALL);
	assert_string_equal(vm_raw_zonename(raw), U1);
	rj = vmload_raw_json(raw);
	assert_dump(rj, "{\"zoneadm_objects\":{\"zoneid\":null,\"zonename\":\"" U1 "\","
		"\"state\":\"installed\",\"zonepath\":\"/zones/" U1 "\",\"uuid\":\"" U1 "\","
		"\"brand\":\"joyent\",\"ip_type\":\"exclusive\",\"zonedid\":169},"
		"\"zonexml_objects\":{\"zonename\":\"" U1 "\",\"autoboot\":true,\"brand\":\"joyent\","
		"\"limit_priv\":\"default\",\"nics\":[]},"
		"\"last_modified\":\"2019-06-19T04:34:48.000Z\","
		"\"json_objects\":{\"customer_metadata\":{},\"internal_metadata\":{},\"routes\":{},\"tags\":{}}}");
	json_decref(rj);

	/* change tags and the XML on disk; reload only JSON in a copy */
	puts_(f, "/zones/" U1 "/config/tags.json", "{\"t\":1}");
	puts_(f, "/etc/zones/" U1 ".xml", "<zone name=\"" U1 "\" brand=\"lx\"/>");
	copy = vm_raw_dup(raw);
	assert_non_null(copy);
	assert_int_equal(vmload_zone(&f->ctx, &idx.recs[0], copy, VMS_JSON, err, sizeof(err)), 0);
	vm = vmload_build(copy, NULL, err, sizeof(err));
	assert_non_null(vm);
	assert_dump(json_object_get(vm, "tags"), "{\"t\":1}");
	assert_string_equal(json_string_value(json_object_get(vm, "brand")), "joyent");
	json_decref(vm);
	/* the original is untouched */
	vm = vmload_build(raw, NULL, err, sizeof(err));
	assert_dump(json_object_get(vm, "tags"), "{}");
	json_decref(vm);

	/* now the XML section only */
	assert_int_equal(vmload_zone(&f->ctx, &idx.recs[0], copy, VMS_XML, err, sizeof(err)), 0);
	vm = vmload_build(copy, NULL, err, sizeof(err));
	assert_string_equal(json_string_value(json_object_get(vm, "brand")), "lx");
	assert_dump(json_object_get(vm, "tags"), "{\"t\":1}");
	json_decref(vm);

	/* without a zone record section: not found */
	vm_raw_free(raw);
	raw = vm_raw_new();
	assert_int_equal(vmload_zone(&f->ctx, &idx.recs[0], raw, VMS_XML, err, sizeof(err)), 0);
	assert_null(vmload_build(raw, NULL, err, sizeof(err)));
	assert_string_equal(err, "VM " U1 " not found in zoneadm");
	vm_raw_free(raw);
	vm_raw_free(copy);
	zoneindex_done(&idx);
}

/* A reload of unchanged files reuses the parsed values; any change in
 * the bytes (even at the same length) is parsed again. */
static void
test_vmload_reload_reuses_unchanged_files(void **state)
{
	struct fx *f = *state;
	struct zoneindex idx = ZONEINDEX_INIT;
	struct vm_raw *raw = vm_raw_new(), *copy, *copy2;
	char err[512];
	json_t *sysinfo, *vm;

	make_worked_host(f);
	puts_(f, "/zones/" U1 "/config/metadata.json", "{\"customer_metadata\":{\"a\":\"1\"}}");
	assert_int_equal(vmload_index(&f->ctx, &idx, err, sizeof(err)), 0);
	sysinfo = vmload_sysinfo(&f->ctx, err, sizeof(err));
	assert_non_null(sysinfo);
	assert_int_equal(vmload_zone(&f->ctx, &idx.recs[0], raw, VMS_ALL, err, sizeof(err)), 0);
	vm = vmload_build(raw, sysinfo, err, sizeof(err));
	assert_non_null(vm);
	assert_true(vmload_sysinfo_current(vm, sysinfo));
	assert_false(vmload_sysinfo_current(vm, NULL));
	struct jfreeze *frozen = jfreeze_new(vm);
	assert_non_null(frozen);
	assert_true(vmload_sysinfo_current_frozen(frozen, sysinfo));
	assert_false(vmload_sysinfo_current_frozen(frozen, NULL));
	jfreeze_unref(frozen);

	copy = vm_raw_dup(raw);
	assert_int_equal(vmload_zone(&f->ctx, &idx.recs[0], copy, VMS_ALL, err, sizeof(err)), 0);
	assert_true(vm_raw_same(raw, copy));

	/* same length, other bytes */
	puts_(f, "/zones/" U1 "/config/metadata.json", "{\"customer_metadata\":{\"a\":\"2\"}}");
	copy2 = vm_raw_dup(copy);
	assert_int_equal(vmload_zone(&f->ctx, &idx.recs[0], copy2, VMS_ALL, err, sizeof(err)), 0);
	assert_false(vm_raw_same(copy, copy2));
	json_decref(vm);
	vm = vmload_build(copy2, sysinfo, err, sizeof(err));
	assert_dump(json_object_get(vm, "customer_metadata"), "{\"a\":\"2\"}");
	json_decref(vm);
	vm_raw_free(copy2);

	/* invalid JSON is parsed (and warned about) at every load; what it
	 * parses to ({}) is the same each time */
	puts_(f, "/zones/" U1 "/config/tags.json", "{bad");
	vm_raw_free(copy);
	copy = vm_raw_dup(raw);
	free(take_log(f));
	assert_int_equal(vmload_zone(&f->ctx, &idx.recs[0], copy, VMS_ALL, err, sizeof(err)), 0);
	char *log = take_log(f);
	assert_non_null(strstr(log, "invalid JSON in /zones/" U1 "/config/tags.json"));
	free(log);
	copy2 = vm_raw_dup(copy);
	assert_int_equal(vmload_zone(&f->ctx, &idx.recs[0], copy2, VMS_ALL, err, sizeof(err)), 0);
	log = take_log(f);
	assert_non_null(strstr(log, "invalid JSON in /zones/" U1 "/config/tags.json"));
	free(log);
	assert_true(vm_raw_same(copy, copy2));

	/* XML changed: parsed again */
	vm_raw_free(copy2);
	puts_(f, "/etc/zones/" U1 ".xml", "<zone name=\"" U1 "\" brand=\"lx\"/>");
	copy2 = vm_raw_dup(copy);
	assert_int_equal(vmload_zone(&f->ctx, &idx.recs[0], copy2, VMS_XML, err, sizeof(err)), 0);
	vm = vmload_build(copy2, sysinfo, err, sizeof(err));
	assert_string_equal(json_string_value(json_object_get(vm, "brand")), "lx");
	json_decref(vm);

	vm_raw_free(copy2);
	vm_raw_free(copy);
	vm_raw_free(raw);
	json_decref(sysinfo);
	zoneindex_done(&idx);
}

static void
test_vmload_state_rules(void **state)
{
	struct fx *f = *state;
	char err[512];
	int rc;
	json_t *vm;

	make_worked_host(f);
	puts_(f, "/etc/zones/" U1 ".xml", "<zone name=\"" U1 "\" brand=\"joyent\">"
		"<attr name=\"provisioning\" value=\"true\"/>"
		"<attr name=\"resolvers\" value=\"8.8.8.8,8.8.4.4\"/></zone>");
	vm = load_and_build(f, U1, &rc, err, sizeof(err));
	assert_string_equal(json_string_value(json_object_get(vm, "state")), "provisioning");
	assert_dump(json_object_get(vm, "resolvers"), "[\"8.8.8.8\",\"8.8.4.4\"]");
	json_decref(vm);

	puts_(f, "/etc/zones/" U1 ".xml", "<zone name=\"" U1 "\" brand=\"kvm\">"
		"<attr name=\"failed\" value=\"false\"/>"
		"<attr name=\"transition\" value=\"stopping:stopped:5\"/></zone>");
	vm = load_and_build(f, U1, &rc, err, sizeof(err));
	assert_string_equal(json_string_value(json_object_get(vm, "state")), "failed");
	assert_true(json_is_true(json_object_get(vm, "hvm")));
	json_decref(vm);
}

static void
test_vmload_sysinfo_errors(void **state)
{
	struct fx *f = *state;
	char err[512];

	make_worked_host(f);
	puts_(f, "/tmp/.sysinfo.json", "{oops");
	assert_null(vmload_sysinfo(&f->ctx, err, sizeof(err)));
	assert_non_null(strstr(err, "invalid JSON in /tmp/.sysinfo.json"));
	{
		char path[512];

		pathf(path, sizeof(path), f, "/tmp/.sysinfo.json");
		unlink(path);
	}
	assert_null(vmload_sysinfo(&f->ctx, err, sizeof(err)));
	assert_non_null(strstr(err, "cannot read /tmp/.sysinfo.json"));
}

static int
rm_tree(const char *root)
{
	char cmd[256];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	return system(cmd);
}

static int
setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	char err[256];
	int fd;

	if (f == NULL)
		return -1;
	strcpy(f->root, "/tmp/test_vmload.XXXXXX");
	if (mkdtemp(f->root) == NULL)
		return -1;
	snprintf(f->log_path, sizeof(f->log_path), "%s.log", f->root);
	fd = open(f->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -1;
	close(fd);
	if (log_init("test_vmload", f->log_path, LOG_TRACE) < 0)
		return -1;
	if (vmload_ctx_init(&f->ctx, f->root, err, sizeof(err)) < 0)
		return -1;
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fx *f = *state;

	vmload_ctx_done(&f->ctx);
	log_done();
	(void)rm_tree(f->root);
	unlink(f->log_path);
	free(f);
	return 0;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_vmload_worked_example, setup, teardown),
		cmocka_unit_test_setup_teardown(test_vmload_invalid_config_json_is_empty, setup, teardown),
		cmocka_unit_test_setup_teardown(test_vmload_odd_config_values, setup, teardown),
		cmocka_unit_test_setup_teardown(test_vmload_zone_without_xml_is_skipped, setup, teardown),
		cmocka_unit_test_setup_teardown(test_vmload_garbage_xml_is_isolated, setup, teardown),
		cmocka_unit_test_setup_teardown(test_vmload_fifo_metadata_is_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_vmload_directory_config_is_an_error, setup, teardown),
		cmocka_unit_test_setup_teardown(test_vmload_symlinks_stay_in_root, setup, teardown),
		cmocka_unit_test_setup_teardown(test_vmload_symlinks_stay_in_root_fallback, setup, teardown),
		cmocka_unit_test(test_vmload_lastexited_parsing),
		cmocka_unit_test_setup_teardown(test_vmload_lastexited_and_last_modified, setup, teardown),
		cmocka_unit_test_setup_teardown(test_vmload_per_section_reload_and_raw_json, setup, teardown),
		cmocka_unit_test_setup_teardown(test_vmload_reload_reuses_unchanged_files, setup, teardown),
		cmocka_unit_test_setup_teardown(test_vmload_state_rules, setup, teardown),
		cmocka_unit_test_setup_teardown(test_vmload_sysinfo_errors, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
