/*
 * oneshot.c - `--dump` and `--load-xml`: load, build, print, exit.
 *
 * Owns nothing long-lived; everything is released before returning.
 */
#include "oneshot.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "json.h"
#include "log.h"
#include "vmload.h"
#include "vmxml.h"
#include "zoneindex.h"

/* Load and build one zone; appends its JSON to out (with a leading comma
 * unless first).  Returns 1 if appended, 0 if skipped, -ENOMEM. */
static int
dump_zone(struct vmload_ctx *ctx, const struct zone_record *rec, const json_t *sysinfo,
	struct buf *out, bool first)
{
	char err[1024];
	struct vm_raw *raw = vm_raw_new();
	json_t *vm;
	int rc;

	if (raw == NULL)
		return -ENOMEM;
	rc = vmload_zone(ctx, rec, raw, VMS_ALL, err, sizeof(err));
	if (rc < 0) {
		/* vmload_zone logged the cause at its level (a missing XML is a
		 * warning). */
		log_debug(json_pack("{s:s,s:s}", "zonename", rec->zonename, "err", err),
			"skipping VM %s: cannot load its data", rec->zonename);
		vm_raw_free(raw);
		return rc == -ENOMEM ? rc : 0;
	}
	vm = vmload_build(raw, sysinfo, err, sizeof(err));
	vm_raw_free(raw);
	if (vm == NULL) {
		log_error(json_pack("{s:s,s:o}", "zonename", rec->zonename,
			"err", log_err_obj(err, NULL)),
			"cannot build VM %s, skipping", rec->zonename);
		return 0;
	}
	rc = first ? 0 : buf_addc(out, ',');
	if (rc == 0)
		rc = js_dump(vm, out) < 0 ? -ENOMEM : 0;
	json_decref(vm);
	return rc < 0 ? rc : 1;
}

int
oneshot_dump(const char *root)
{
	struct vmload_ctx ctx;
	struct zoneindex idx = ZONEINDEX_INIT;
	struct buf out = BUF_INIT;
	json_t *sysinfo;
	char err[1024];
	bool first = true;
	int rc, code = 1;

	if (vmload_ctx_init(&ctx, root, err, sizeof(err)) < 0) {
		log_error(log_err_fields(err, NULL), "cannot dump VMs: %s", err);
		return 1;
	}
	if (vmload_index(&ctx, &idx, err, sizeof(err)) < 0) {
		log_error(log_err_fields(err, NULL), "cannot dump VMs: %s", err);
		goto out;
	}
	sysinfo = vmload_sysinfo(&ctx, err, sizeof(err));
	if (sysinfo == NULL)
		log_error(log_err_fields(err, NULL),
			"%s, building VMs without sysinfo keys", err);
	rc = buf_addc(&out, '[');
	for (size_t i = 0; rc >= 0 && i < idx.n; i++) {
		rc = dump_zone(&ctx, &idx.recs[i], sysinfo, &out, first);
		if (rc > 0)
			first = false;
	}
	json_decref(sysinfo);
	if (rc >= 0)
		rc = buf_adds(&out, "]\n");
	if (rc < 0) {
		log_error(NULL, "cannot dump VMs: %s", strerror(-rc));
		goto out;
	}
	rc = buf_write(&out, STDOUT_FILENO);
	if (rc < 0) {
		log_error(NULL, "cannot write to stdout: %s", strerror(-rc));
		goto out;
	}
	code = 0;
out:
	buf_done(&out);
	zoneindex_done(&idx);
	vmload_ctx_done(&ctx);
	return code;
}

int
oneshot_load_xml(const char *path)
{
	char *data;
	size_t len;
	struct vmxml_error xerr;
	struct buf out = BUF_INIT;
	json_t *vm;
	int rc = vmload_read_path(path, &data, &len);

	if (rc < 0) {
		const char *code = strerrorname_np(-rc);

		fprintf(stderr, "vminfod: cannot load %s: %s: %s\n", path,
			code != NULL ? code : "READ_FILE", strerror(-rc));
		return 1;
	}
	vm = vmxml_parse(data, len, path, NULL, &xerr);
	free(data);
	if (vm == NULL) {
		fprintf(stderr, "vminfod: cannot load %s: %s: %s\n", path, xerr.code,
			xerr.message);
		return 1;
	}
	rc = js_dump(vm, &out);
	json_decref(vm);
	if (rc >= 0)
		rc = buf_addc(&out, '\n');
	if (rc >= 0)
		rc = buf_write(&out, STDOUT_FILENO);
	buf_done(&out);
	if (rc < 0) {
		fprintf(stderr, "vminfod: cannot write the result: %s\n", strerror(-rc));
		return 1;
	}
	return 0;
}
