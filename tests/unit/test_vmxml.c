/*
 * test_vmxml.c - the XML stage (spec/vmload.md §3): the upstream fixture
 * pairs compared as values with key order, the translators' edge cases,
 * the kvm autoboot swap, transition split, device and sorting rules.
 */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "../../supervisor/vmxml.h"
#include "json.h"
#include "log.h"

#define FIXTURES "tests/fixtures/vmload-xml"

static char log_path[] = "/tmp/test_vmxml_log.XXXXXX";

static char *
read_file(const char *path, size_t *ret_len)
{
	FILE *f = fopen(path, "rbe");
	char *data;
	long n;

	if (f == NULL)
		fail_msg("cannot open %s", path);
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	n = ftell(f);
	assert_true(n >= 0);
	rewind(f);
	data = malloc((size_t)n + 1);
	assert_non_null(data);
	assert_int_equal(fread(data, 1, (size_t)n, f), (size_t)n);
	data[n] = '\0';
	fclose(f);
	*ret_len = (size_t)n;
	return data;
}

/* Everything logged since the last call. */
static char *
take_log(void)
{
	size_t n;
	char *text = read_file(log_path, &n);

	assert_int_equal(truncate(log_path, 0), 0);
	return text;
}

/* Deep equality with key order and JSON types; undefined members of `got`
 * count as absent (they are never serialised). */
static void
assert_same(const json_t *got, const json_t *want, const char *where)
{
	if (json_typeof(got) != json_typeof(want) ||
	    js_is_undefined(got) != js_is_undefined(want))
		fail_msg("%s: type %d, want %d", where, json_typeof(got), json_typeof(want));
	switch (json_typeof(want)) {
	case JSON_OBJECT: {
		void *gi = json_object_iter((json_t *)got);
		void *wi = json_object_iter((json_t *)want);

		for (;;) {
			while (gi != NULL && js_is_undefined(json_object_iter_value(gi)))
				gi = json_object_iter_next((json_t *)got, gi);
			if (gi == NULL || wi == NULL)
				break;
			const char *gk = json_object_iter_key(gi), *wk = json_object_iter_key(wi);
			char sub[512];

			if (strcmp(gk, wk) != 0)
				fail_msg("%s: key \"%s\", want \"%s\"", where, gk, wk);
			snprintf(sub, sizeof(sub), "%s.%s", where, wk);
			assert_same(json_object_iter_value(gi), json_object_iter_value(wi), sub);
			gi = json_object_iter_next((json_t *)got, gi);
			wi = json_object_iter_next((json_t *)want, wi);
		}
		if (gi != NULL || wi != NULL)
			fail_msg("%s: extra key \"%s\"", where,
				gi != NULL ? json_object_iter_key(gi) : json_object_iter_key(wi));
		break;
	}
	case JSON_ARRAY:
		assert_int_equal(json_array_size(got), json_array_size(want));
		for (size_t i = 0; i < json_array_size(want); i++) {
			char sub[512];

			snprintf(sub, sizeof(sub), "%s[%zu]", where, i);
			assert_same(json_array_get(got, i), json_array_get(want, i), sub);
		}
		break;
	case JSON_STRING:
		if (strcmp(json_string_value(got), json_string_value(want)) != 0)
			fail_msg("%s: \"%s\", want \"%s\"", where, json_string_value(got),
				json_string_value(want));
		break;
	case JSON_REAL:
	case JSON_INTEGER:
		if (js_number_value(got) != js_number_value(want))
			fail_msg("%s: %.17g, want %.17g", where, js_number_value(got),
				js_number_value(want));
		break;
	default:
		break;
	}
}

static json_t *
parse_json_file(const char *path)
{
	size_t n;
	char *text = read_file(path, &n), err[256];
	json_t *v = js_parse(text, n, err, sizeof(err));

	if (v == NULL)
		fail_msg("%s: %s", path, err);
	free(text);
	return v;
}

static json_t *
xml_ok(const char *xml)
{
	struct vmxml_error err;
	json_t *vm = vmxml_parse(xml, strlen(xml), "test", NULL, &err);

	if (vm == NULL)
		fail_msg("parse failed: %s: %s", err.code, err.message);
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

/* ---- fixtures ---- */

static void
test_vmxml_fixtures(void **state)
{
	DIR *d = opendir(FIXTURES);
	struct dirent *de;
	int checked = 0, failed_ok = 0;

	assert_non_null(d);
	while ((de = readdir(d)) != NULL) {
		char base[256], path[512], other[512];
		size_t n = strlen(de->d_name), len;
		struct vmxml_error err;
		char *xml;
		json_t *got;

		if (n < 5 || strcmp(de->d_name + n - 4, ".xml") != 0)
			continue;
		snprintf(base, sizeof(base), "%.*s", (int)(n - 4), de->d_name);
		snprintf(path, sizeof(path), FIXTURES "/%s", de->d_name);
		xml = read_file(path, &len);
		got = vmxml_parse(xml, len, path, NULL, &err);
		free(xml);

		snprintf(other, sizeof(other), FIXTURES "/%s.fail", base);
		if (access(other, F_OK) == 0) {
			json_t *want = parse_json_file(other);

			if (got != NULL)
				fail_msg("%s: parsed, expected a failure", path);
			assert_string_equal(err.code,
				json_string_value(json_object_get(want, "code")));
			assert_string_equal(err.message,
				json_string_value(json_object_get(want, "message")));
			json_decref(want);
			failed_ok++;
			continue;
		}
		snprintf(other, sizeof(other), FIXTURES "/%s.json", base);
		if (access(other, F_OK) != 0) {
			json_decref(got);
			continue;
		}
		if (got == NULL)
			fail_msg("%s: %s: %s", path, err.code, err.message);
		json_t *want = parse_json_file(other);
		char *a = js_dumps(got, NULL), *b = js_dumps(want, NULL);

		assert_same(got, want, base);
		/* Same serialisation too: what /vms would show. */
		assert_string_equal(a, b);
		free(a);
		free(b);
		json_decref(want);
		json_decref(got);
		checked++;
	}
	closedir(d);
	assert_int_equal(checked, 3);
	assert_int_equal(failed_ok, 1);
}

static void
test_vmxml_garbage_fails_with_syntax_error(void **state)
{
	struct vmxml_error err;

	assert_null(vmxml_parse("GARBAGE\n", 8, "g", NULL, &err));
	assert_string_equal(err.code, "PARSE_ERROR");
	assert_string_equal(err.message, "syntax error");

	assert_null(vmxml_parse("<zone brand=\"joyent\"></zon>", 27, "g", NULL, &err));
	assert_string_equal(err.code, "PARSE_ERROR");
	assert_string_equal(err.message, "mismatched tag");
}

static void
test_vmxml_missing_brand_is_an_error(void **state)
{
	struct vmxml_error err;

	/* Empty document: not a parse error (non-final), but no brand. */
	assert_null(vmxml_parse("", 0, "e", NULL, &err));
	assert_string_equal(err.code, "ERR_ASSERTION");
	assert_string_equal(err.message, "VM missing brand: {}");

	assert_null(vmxml_parse("<zone name=\"z\"/>", 16, "e", NULL, &err));
	assert_string_equal(err.message, "VM missing brand: {\"zonename\":\"z\"}");
}

static void
test_vmxml_truncated_document_is_partial(void **state)
{
	json_t *vm = xml_ok("<?xml version=\"1.0\"?><zone name=\"t\" brand=\"joyent\">"
		"<attr name=\"hostname\" value=\"h\"/><attr name=\"ram\" va");

	assert_dump(vm, "{\"zonename\":\"t\",\"brand\":\"joyent\",\"hostname\":\"h\",\"nics\":[]}");
	json_decref(vm);
}

static void
test_vmxml_meta(void **state)
{
	struct vmxml_meta meta;
	struct vmxml_error err;
	const char *xml = "<zone name=\"m\" brand=\"lx\" ip-type=\"exclusive\" debugid=\"42\"/>";
	json_t *vm = vmxml_parse(xml, strlen(xml), "m", &meta, &err);

	assert_non_null(vm);
	assert_string_equal(meta.ip_type, "exclusive");
	assert_true(meta.debugid == 42);
	json_decref(vm);
}

/* ---- translators ---- */

static void
test_vmxml_num(void **state)
{
	assert_true(vmxml_js_number("100") == 100);
	assert_true(vmxml_js_number(" 12 ") == 12);
	assert_true(vmxml_js_number("") == 0);
	assert_true(vmxml_js_number("  \t\n") == 0);
	assert_true(vmxml_js_number("0x10") == 16);
	assert_true(vmxml_js_number("0XfF") == 255);
	assert_true(vmxml_js_number("1e3") == 1000);
	assert_true(vmxml_js_number("-1.5e-1") == -0.15);
	assert_true(vmxml_js_number(".5") == 0.5);
	assert_true(vmxml_js_number("5.") == 5);
	assert_true(vmxml_js_number("+7") == 7);
	assert_true(vmxml_js_number("\xc2\xa0" "8\xe2\x80\xa8") == 8);
	assert_true(isinf(vmxml_js_number("-Infinity")));
	assert_true(isnan(vmxml_js_number("abc")));
	assert_true(isnan(vmxml_js_number("-0x10")));
	assert_true(isnan(vmxml_js_number("0x")));
	assert_true(isnan(vmxml_js_number("1e")));
	assert_true(isnan(vmxml_js_number("12px")));
	assert_true(isnan(vmxml_js_number(".")));
	assert_true(isnan(vmxml_js_number("inf")));
	assert_true(isnan(vmxml_js_number("nan")));
	assert_true(isnan(vmxml_js_number("0b1")));

	json_t *v = vmxml_translate(VMXML_TR_NUM, "abc");
	assert_dump(v, "null");
	json_decref(v);
	v = vmxml_translate(VMXML_TR_NUM, NULL);
	assert_dump(v, "null");
	json_decref(v);
}

static void
test_vmxml_mem(void **state)
{
	json_t *v = vmxml_translate(VMXML_TR_MEM, "268435457");

	assert_dump(v, "256.0000009536743");
	json_decref(v);
	v = vmxml_translate(VMXML_TR_MEM, "2147483648");
	assert_dump(v, "2048");
	json_decref(v);
}

static void
expect_b64(const char *in, const char *want, size_t want_len)
{
	size_t n;
	char *got = vmxml_b64_decode(in, &n);

	assert_non_null(got);
	assert_int_equal(n, want_len);
	assert_memory_equal(got, want, want_len);
	free(got);
}

static void
test_vmxml_b64(void **state)
{
	json_t *v;

	expect_b64("a3ZtNw==", "kvm7", 4);
	expect_b64("dGhlIHdvcmtz", "the works", 9);
	/* URL-safe alphabet: "-_8=" is "+/8=" */
	expect_b64("-_8=", "\xfb\xff", 2);
	expect_b64("+/8=", "\xfb\xff", 2);
	/* characters outside the alphabet are skipped */
	expect_b64("a3Z*tN w==", "kvm7", 4);
	expect_b64("!!!", "", 0);
	expect_b64("", "", 0);
	/* a '=' where a character is expected ends the data */
	expect_b64("YQ==YQ==", "a", 1);
	/* unpadded input decodes its partial group */
	expect_b64("YWJjZA", "abcd", 4);

	v = vmxml_translate(VMXML_TR_B64, "a3ZtNw==");
	assert_dump(v, "\"kvm7\"");
	json_decref(v);
	/* invalid UTF-8 becomes U+FFFD */
	v = vmxml_translate(VMXML_TR_B64, "-_8=");
	assert_dump(v, "\"\xef\xbf\xbd\xef\xbf\xbd\"");
	json_decref(v);
}

static void
test_vmxml_list_bool(void **state)
{
	json_t *v = vmxml_translate(VMXML_TR_LIST, "");

	assert_dump(v, "[\"\"]");
	json_decref(v);
	v = vmxml_translate(VMXML_TR_LIST, "a, b,,c");
	assert_dump(v, "[\"a\",\" b\",\"\",\"c\"]");
	json_decref(v);
	v = vmxml_translate(VMXML_TR_NUMLIST, "22, 25,x");
	assert_dump(v, "[22,25,null]");
	json_decref(v);
	v = vmxml_translate(VMXML_TR_BOOL, "yes");
	assert_dump(v, "\"yes\"");
	json_decref(v);
	v = vmxml_translate(VMXML_TR_BOOL, "true");
	assert_true(json_is_true(v));
	v = vmxml_translate(VMXML_TR_BOOL, "false");
	assert_true(json_is_false(v));
	v = vmxml_translate(VMXML_TR_BOOL, "TRUE");
	assert_dump(v, "\"TRUE\"");
	json_decref(v);
	assert_true(js_is_undefined(vmxml_translate(VMXML_TR_BOOL, NULL)));
	assert_true(js_is_undefined(vmxml_translate(VMXML_TR_NONE, NULL)));
}

/* ---- element walk and post-processing ---- */

static void
test_vmxml_kvm_without_vm_autoboot_is_undefined(void **state)
{
	json_t *vm = xml_ok("<zone name=\"k\" autoboot=\"true\" brand=\"kvm\">"
		"<attr name=\"ram\" value=\"512\"/></zone>");
	json_t *ab = json_object_get(vm, "autoboot");

	assert_non_null(ab);
	assert_true(js_is_undefined(ab));
	/* present for the diff, absent from the JSON; disks default added */
	assert_dump(vm, "{\"zonename\":\"k\",\"brand\":\"kvm\",\"ram\":512,\"nics\":[],\"disks\":[]}");
	json_decref(vm);
}

static void
test_vmxml_bhyve_keeps_both_autoboots(void **state)
{
	json_t *vm = xml_ok("<zone name=\"b\" autoboot=\"true\" brand=\"bhyve\">"
		"<attr name=\"vm-autoboot\" value=\"false\"/></zone>");

	assert_dump(vm, "{\"zonename\":\"b\",\"autoboot\":true,\"brand\":\"bhyve\","
		"\"vm_autoboot\":false,\"nics\":[],\"disks\":[]}");
	json_decref(vm);
}

static void
test_vmxml_transition_split(void **state)
{
	json_t *vm = xml_ok("<zone name=\"t\" brand=\"joyent\">"
		"<attr name=\"transition\" value=\"stopping:stopped:1560919088000 \n\"/>"
		"<attr name=\"hostname\" value=\"h\"/></zone>");

	assert_dump(vm, "{\"zonename\":\"t\",\"brand\":\"joyent\",\"hostname\":\"h\",\"nics\":[],"
		"\"state\":\"stopping\",\"transition_to\":\"stopped\","
		"\"transition_expire\":1560919088000}");
	json_decref(vm);

	vm = xml_ok("<zone name=\"t\" brand=\"joyent\">"
		"<attr name=\"transition\" value=\"a:b\"/></zone>");
	assert_dump(vm, "{\"zonename\":\"t\",\"brand\":\"joyent\",\"transition\":\"a:b\",\"nics\":[]}");
	json_decref(vm);

	vm = xml_ok("<zone name=\"t\" brand=\"joyent\">"
		"<attr name=\"transition\" value=\"a:b:c:d\"/></zone>");
	assert_dump(vm, "{\"zonename\":\"t\",\"brand\":\"joyent\",\"transition\":\"a:b:c:d\",\"nics\":[]}");
	json_decref(vm);
}

static void
test_vmxml_disk_sort_is_stable(void **state)
{
	/* 12 devices (more than upstream's insertion-sort threshold): equal
	 * keys must keep document order. */
	static const char *paths[] = {
		"/d/a-disk3", "/d/x", "/d/b-disk0", "/d/y", "/d/c-disk1", "/d/disk2",
		"/d/e-disk10", "/d/f-disk1", "/d/z", "/d/g-disk0", "/d/hdisk5", "/d/i-disk2",
	};
	static const char *want[] = {
		"/d/x", "/d/b-disk0", "/d/y", "/d/z", "/d/g-disk0", "/d/hdisk5",
		"/d/c-disk1", "/d/f-disk1", "/d/disk2", "/d/i-disk2", "/d/a-disk3", "/d/e-disk10",
	};
	char xml[4096];
	size_t off = 0;
	json_t *vm, *disks;

	off += (size_t)snprintf(xml + off, sizeof(xml) - off, "<zone name=\"k\" brand=\"kvm\">");
	for (size_t i = 0; i < 12; i++)
		off += (size_t)snprintf(xml + off, sizeof(xml) - off,
			"<device match=\"%s\"><net-attr name=\"media\" value=\"disk\"/></device>",
			paths[i]);
	snprintf(xml + off, sizeof(xml) - off, "</zone>");
	vm = xml_ok(xml);
	disks = json_object_get(vm, "disks");
	assert_int_equal(json_array_size(disks), 12);
	for (size_t i = 0; i < 12; i++)
		assert_string_equal(json_string_value(json_object_get(
			json_array_get(disks, i), "path")), want[i]);
	assert_true(json_is_null(json_object_get(vm, "device")));
	json_decref(vm);
}

static void
test_vmxml_nic_sort(void **state)
{
	json_t *vm = xml_ok("<zone name=\"n\" brand=\"joyent\">"
		"<network physical=\"net10\"/><network physical=\"eth0\"/>"
		"<network physical=\"net1\"/><network physical=\"net0\"/>"
		"<network physical=\"net2\" vlan-id=\"12\"><net-attr name=\"mtu\" value=\"1500\"/>"
		"<net-attr name=\"blocked_outgoing_ports\" value=\"22,25\"/></network></zone>");

	assert_dump(json_object_get(vm, "nics"),
		"[{\"interface\":\"eth0\"},{\"interface\":\"net0\"},{\"interface\":\"net1\"},"
		"{\"interface\":\"net2\",\"vlan_id\":12,\"mtu\":1500,\"blocked_outgoing_ports\":[22,25]},"
		"{\"interface\":\"net10\"}]");
	json_decref(vm);
}

static void
test_vmxml_devices_filesystems_datasets(void **state)
{
	json_t *vm = xml_ok("<zone name=\"p\" brand=\"bhyve\">"
		"<attr name=\"hostname\" value=\"h\"/>"
		"<device match=\"/dev/ppt0\"><net-attr name=\"model\" value=\"passthru\"/>"
		"<net-attr name=\"pci-slot\" value=\"0:8:0\"/></device>"
		"<dataset name=\"zones/p/data\"/>"
		"<filesystem special=\"/src\" directory=\"/dst\" type=\"lofs\">"
		"<fsoption name=\"ro\"/><fsoption name=\"nodevices\"/></filesystem>"
		"<device match=\"/dev/zvol/rdsk/zones/p/disk0\"><net-attr name=\"boot\" value=\"true\"/>"
		"<net-attr name=\"size\" value=\"100\"/></device>"
		"</zone>");

	assert_dump(vm, "{\"zonename\":\"p\",\"brand\":\"bhyve\",\"hostname\":\"h\",\"device\":null,"
		"\"pci_devices\":[{\"path\":\"/dev/ppt0\",\"model\":\"passthru\",\"pci_slot\":\"0:8:0\"}],"
		"\"datasets\":[\"zones/p/data\"],"
		"\"filesystems\":[{\"source\":\"/src\",\"target\":\"/dst\",\"type\":\"lofs\","
		"\"options\":[\"ro\",\"nodevices\"]}],"
		"\"disks\":[{\"path\":\"/dev/zvol/rdsk/zones/p/disk0\",\"boot\":true}],"
		"\"nics\":[]}");
	json_decref(vm);
}

static void
test_vmxml_unknown_things_are_logged_and_ignored(void **state)
{
	char *log;
	json_t *vm;

	free(take_log());
	vm = xml_ok("<zone name=\"u\" brand=\"joyent\" color=\"red\">"
		"<attr name=\"no-such-attr\" value=\"1\"/>"
		"<mystery a=\"1\"><attr name=\"hostname\" value=\"hidden\"/></mystery>"
		"<rctl name=\"zone.cpu-cap\"><rctl-value priv=\"privileged\" limit=\"100\" action=\"deny\"/></rctl>"
		"<rctl name=\"zone.cpu-cap\"><rctl-value priv=\"basic\" limit=\"5\" action=\"deny\"/></rctl>"
		"<attr name=\"package-name\"/>"
		"</zone>");
	assert_dump(vm, "{\"zonename\":\"u\",\"brand\":\"joyent\",\"cpu_cap\":100,\"nics\":[]}");
	/* the valueless package-name is present but undefined */
	assert_true(js_is_undefined(json_object_get(vm, "package_name")));
	json_decref(vm);
	log = take_log();
	assert_non_null(strstr(log, "\\\"zone.color\\\" not found in XML_PROPERTIES"));
	assert_non_null(strstr(log, "\\\"zone.attr.no-such-attr\\\" not found in XML_PROPERTIES"));
	assert_non_null(strstr(log, "\\\"zone.rctl.zone.cpu-cap.basic.deny\\\" not found"));
	assert_non_null(strstr(log, "\"where\":\"zone.mystery\",\"attrs\":{\"a\":\"1\"}"));
	assert_non_null(strstr(log, "unhandled zone XML property"));
	free(log);
}

static void
test_vmxml_unsupported_brand_warns(void **state)
{
	char *log;
	json_t *vm;

	free(take_log());
	vm = xml_ok("<zone name=\"s\" brand=\"sngl\"/>");
	assert_dump(vm, "{\"zonename\":\"s\",\"brand\":\"sngl\",\"nics\":[]}");
	json_decref(vm);
	log = take_log();
	assert_non_null(strstr(log, "VM has unsupported brand: {\\\"zonename\\\":\\\"s\\\","
		"\\\"brand\\\":\\\"sngl\\\"} treating as \\\"joyent\\\""));
	free(log);
}

static void
test_vmxml_repeated_key_keeps_position(void **state)
{
	json_t *vm = xml_ok("<zone name=\"r\" brand=\"joyent\">"
		"<attr name=\"hostname\" value=\"one\"/><attr name=\"ram\" value=\"1\"/>"
		"<attr name=\"hostname\" value=\"two\"/></zone>");

	assert_dump(vm, "{\"zonename\":\"r\",\"brand\":\"joyent\",\"hostname\":\"two\",\"ram\":1,\"nics\":[]}");
	json_decref(vm);
}

static int
setup(void **state)
{
	int fd = mkstemp(log_path);

	assert_true(fd >= 0);
	close(fd);
	return log_init("test_vmxml", log_path, LOG_TRACE);
}

static int
teardown(void **state)
{
	log_done();
	unlink(log_path);
	return 0;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_vmxml_fixtures),
		cmocka_unit_test(test_vmxml_garbage_fails_with_syntax_error),
		cmocka_unit_test(test_vmxml_missing_brand_is_an_error),
		cmocka_unit_test(test_vmxml_truncated_document_is_partial),
		cmocka_unit_test(test_vmxml_meta),
		cmocka_unit_test(test_vmxml_num),
		cmocka_unit_test(test_vmxml_mem),
		cmocka_unit_test(test_vmxml_b64),
		cmocka_unit_test(test_vmxml_list_bool),
		cmocka_unit_test(test_vmxml_kvm_without_vm_autoboot_is_undefined),
		cmocka_unit_test(test_vmxml_bhyve_keeps_both_autoboots),
		cmocka_unit_test(test_vmxml_transition_split),
		cmocka_unit_test(test_vmxml_disk_sort_is_stable),
		cmocka_unit_test(test_vmxml_nic_sort),
		cmocka_unit_test(test_vmxml_devices_filesystems_datasets),
		cmocka_unit_test(test_vmxml_unknown_things_are_logged_and_ignored),
		cmocka_unit_test(test_vmxml_unsupported_brand_warns),
		cmocka_unit_test(test_vmxml_repeated_key_keeps_position),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
