/*
 * vmxml.h - the XML stage of VM-object assembly (spec/vmload.md §3):
 * zonecfg XML bytes -> the VM-object fragment the XML describes.
 *
 * Parsing is expat in non-final mode (an empty or truncated document is
 * not an error), the element walk and translation tables are upstream's,
 * then post-processing (defaults, kvm autoboot, transition, sorting).
 * Numbers are jansson reals (js_number), NaN becomes null, a property
 * without a value may be the "undefined" node (js_undefined).
 *
 * Logs the per-property messages of spec/vmload.md §9 (unknown property,
 * unhandled element, unsupported brand, bad transition) itself; a failure
 * to produce an object is returned, not logged.
 */
#ifndef VMINFOD_VMXML_H
#define VMINFOD_VMXML_H

#include <stddef.h>
#include <jansson.h>

/* Why a document produced no object: `code` PARSE_ERROR (message = expat's
 * XML_ErrorString), ERR_ASSERTION (no brand), ENOMEM. */
struct vmxml_error {
	char code[32];
	char message[256];
};

/* Facts from the root element that are not VM-object keys but belong to
 * the zone record (spec/vmload.md §2.1 port note). */
struct vmxml_meta {
	char ip_type[32];   /* "" when absent */
	double debugid;     /* NaN when absent or not numeric */
};

/* Translators of table 3.3. */
enum vmxml_tr {
	VMXML_TR_NONE,
	VMXML_TR_BOOL,
	VMXML_TR_NUM,
	VMXML_TR_MEM,
	VMXML_TR_B64,
	VMXML_TR_LIST,
	VMXML_TR_NUMLIST,
};

/* Build the XML-stage object from `len` bytes of zone XML (invalid UTF-8
 * is replaced first).  Returns a new object, or NULL with `err` filled.
 * `meta` may be NULL.  `where` names the file in log lines (may be NULL). */
json_t *vmxml_parse(const char *data, size_t len, const char *where,
	struct vmxml_meta *meta, struct vmxml_error *err);

/* JavaScript (ES5) Number(text): whitespace trimmed, "" -> 0, decimal,
 * Infinity, 0x hex; NaN otherwise. */
double vmxml_js_number(const char *text);
/* Apply translator `tr` to `text` (NULL = the attribute is missing).
 * New reference, or NULL on ENOMEM. */
json_t *vmxml_translate(enum vmxml_tr tr, const char *text);
/* JavaScript String.prototype.trim() of s[0..len): the trimmed range in
 * [*ret_start, *ret_end). */
void vmxml_js_trim(const char *s, size_t len, const char **ret_start,
	const char **ret_end);
/* Byte length of the JavaScript whitespace character at p (before end),
 * 0 if p does not start one. */
size_t vmxml_js_space_len(const char *p, const char *end);
/* Node's lenient base64 decode of `text`; the bytes in a new heap buffer
 * (caller frees, NUL-terminated), their count in *ret_len.  NULL on ENOMEM. */
char *vmxml_b64_decode(const char *text, size_t *ret_len);

#endif
