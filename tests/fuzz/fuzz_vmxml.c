/*
 * fuzz_vmxml.c - zonecfg XML bytes -> VM-object fragment (vmxml_parse),
 * then serialised the way events are (js_dump), so every value the XML
 * stage can produce goes through the JSON writer too.
 */
#include <jansson.h>

#include "buf.h"
#include "fuzz_common.h"
#include "json.h"
#include "vmxml.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_log_init();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vmxml_meta meta;
	struct vmxml_error err;
	json_t *o = vmxml_parse((const char *)data, size, "/etc/zones/fuzz.xml", &meta, &err);
	if (!o)
		return 0;
	struct buf out = BUF_INIT;
	(void)js_dump(o, &out);
	buf_done(&out);
	(void)js_dump_pretty(o, 2, &out);
	buf_done(&out);
	json_decref(o);
	return 0;
}
