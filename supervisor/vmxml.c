/*
 * vmxml.c - zonecfg XML -> VM-object fragment (spec/vmload.md §3).
 *
 * Owns the expat walk, the translation tables and the post-processing.
 * Does not read files (vmload.c does, confined to --root) and knows
 * nothing of zone records, JSON config files or sysinfo.
 */
#include "vmxml.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <expat.h>

#include "json.h"
#include "log.h"

/* ---- translation tables (spec/vmload.md §3.3) ---- */

struct prop {
	const char *xml;   /* key suffix after the category prefix */
	const char *key;   /* VM / nic / disk key; NULL = ignored silently */
	enum vmxml_tr tr;
};

static const struct prop root_props[] = {
	{ "name", "zonename", VMXML_TR_NONE },
	{ "zonepath", NULL, VMXML_TR_NONE },
	{ "autoboot", "autoboot", VMXML_TR_BOOL },
	{ "brand", "brand", VMXML_TR_NONE },
	{ "ip-type", NULL, VMXML_TR_NONE },
	{ "limitpriv", "limit_priv", VMXML_TR_NONE },
	{ "debugid", NULL, VMXML_TR_NONE },
	{ "fs-allowed", "fs_allowed", VMXML_TR_NONE },
};

static const struct prop attr_props[] = {
	{ "alias", "alias", VMXML_TR_B64 },
	{ "app-svc-dependent", "app_svc_dependent", VMXML_TR_BOOL },
	{ "archive-on-delete", "archive_on_delete", VMXML_TR_BOOL },
	{ "bhyve-extra-opts", "bhyve_extra_opts", VMXML_TR_NONE },
	{ "billing-id", "billing_id", VMXML_TR_NONE },
	{ "boot", "boot", VMXML_TR_NONE },
	{ "bootrom", "bootrom", VMXML_TR_NONE },
	{ "com1", "com1", VMXML_TR_NONE },
	{ "com2", "com2", VMXML_TR_NONE },
	{ "cpu-type", "cpu_type", VMXML_TR_NONE },
	{ "create-timestamp", "create_timestamp", VMXML_TR_NONE },
	{ "dataset-uuid", "image_uuid", VMXML_TR_NONE },
	{ "default-gateway", "default_gateway", VMXML_TR_NONE },
	{ "disk-driver", "disk_driver", VMXML_TR_NONE },
	{ "dns-domain", "dns_domain", VMXML_TR_NONE },
	{ "do-not-inventory", "do_not_inventory", VMXML_TR_BOOL },
	{ "docker", "docker", VMXML_TR_BOOL },
	{ "failed", "failed", VMXML_TR_NONE },
	{ "firewall-enabled", "firewall_enabled", VMXML_TR_BOOL },
	{ "flexible-disk-size", "flexible_disk_size", VMXML_TR_NUM },
	{ "hostname", "hostname", VMXML_TR_NONE },
	{ "init-name", "init_name", VMXML_TR_NONE },
	{ "internal-metadata-namespaces", "internal_metadata_namespaces", VMXML_TR_LIST },
	{ "kernel-version", "kernel_version", VMXML_TR_NONE },
	{ "maintain-resolvers", "maintain_resolvers", VMXML_TR_BOOL },
	{ "nic-driver", "nic_driver", VMXML_TR_NONE },
	{ "owner-uuid", "owner_uuid", VMXML_TR_NONE },
	{ "package-name", "package_name", VMXML_TR_NONE },
	{ "package-version", "package_version", VMXML_TR_NONE },
	{ "provisioning", "provisioning", VMXML_TR_BOOL },
	{ "qemu-extra-opts", "qemu_extra_opts", VMXML_TR_B64 },
	{ "qemu-opts", "qemu_opts", VMXML_TR_B64 },
	{ "ram", "ram", VMXML_TR_NUM },
	{ "resolvers", "resolvers", VMXML_TR_LIST },
	{ "restart-init", "restart_init", VMXML_TR_BOOL },
	{ "spice-opts", "spice_opts", VMXML_TR_B64 },
	{ "spice-password", "spice_password", VMXML_TR_B64 },
	{ "spice-port", "spice_port", VMXML_TR_NUM },
	{ "tmpfs", "tmpfs", VMXML_TR_NUM },
	{ "transition", "transition", VMXML_TR_NONE },
	{ "vcpus", "vcpus", VMXML_TR_NUM },
	{ "vga", "vga", VMXML_TR_NONE },
	{ "virtio-txburst", "virtio_txburst", VMXML_TR_NUM },
	{ "virtio-txtimer", "virtio_txtimer", VMXML_TR_NUM },
	{ "vm-autoboot", "vm_autoboot", VMXML_TR_BOOL },
	{ "vm-version", "v", VMXML_TR_NUM },
	{ "vnc-password", "vnc_password", VMXML_TR_B64 },
	{ "vnc-port", "vnc_port", VMXML_TR_NUM },
	{ "zlog-max-size", "zlog_max_size", VMXML_TR_NUM },
	{ "zlog-mode", "zlog_mode", VMXML_TR_NONE },
	{ "zlog-name", "zlog_name", VMXML_TR_NONE },
};

static const struct prop rctl_props[] = {
	{ "zone.cpu-cap.privileged.deny", "cpu_cap", VMXML_TR_NUM },
	{ "zone.cpu-shares.privileged.none", "cpu_shares", VMXML_TR_NUM },
	{ "zone.zfs-io-priority.privileged.none", "zfs_io_priority", VMXML_TR_NUM },
	{ "zone.max-lwps.privileged.deny", "max_lwps", VMXML_TR_NUM },
	{ "zone.max-msg-ids.privileged.deny", "max_msg_ids", VMXML_TR_NUM },
	{ "zone.max-sem-ids.privileged.deny", "max_sem_ids", VMXML_TR_NUM },
	{ "zone.max-shm-ids.privileged.deny", "max_shm_ids", VMXML_TR_NUM },
	{ "zone.max-shm-memory.privileged.deny", "max_shm_memory", VMXML_TR_MEM },
	{ "zone.max-physical-memory.privileged.deny", "max_physical_memory", VMXML_TR_MEM },
	{ "zone.max-locked-memory.privileged.deny", "max_locked_memory", VMXML_TR_MEM },
	{ "zone.max-swap.privileged.deny", "max_swap", VMXML_TR_MEM },
};

static const struct prop network_props[] = {
	{ "physical", "interface", VMXML_TR_NONE },
	{ "mac-addr", "mac", VMXML_TR_NONE },
	{ "global-nic", "nic_tag", VMXML_TR_NONE },
	{ "vlan-id", "vlan_id", VMXML_TR_NUM },
	{ "allowed-address", NULL, VMXML_TR_NONE },
	{ "net-attr.ip", "ip", VMXML_TR_NONE },
	{ "net-attr.netmask", "netmask", VMXML_TR_NONE },
	{ "net-attr.gateway", "gateway", VMXML_TR_NONE },
	{ "net-attr.network_uuid", "network_uuid", VMXML_TR_NONE },
	{ "net-attr.model", "model", VMXML_TR_NONE },
	{ "net-attr.vrrp_primary_ip", "vrrp_primary_ip", VMXML_TR_NONE },
	{ "net-attr.ips", "ips", VMXML_TR_LIST },
	{ "net-attr.gateways", "gateways", VMXML_TR_LIST },
	{ "net-attr.allowed_ips", "allowed_ips", VMXML_TR_LIST },
	{ "net-attr.allowed_dhcp_cids", "allowed_dhcp_cids", VMXML_TR_LIST },
	{ "net-attr.blocked_outgoing_ports", "blocked_outgoing_ports", VMXML_TR_NUMLIST },
	{ "net-attr.mtu", "mtu", VMXML_TR_NUM },
	{ "net-attr.vrrp_vrid", "vrrp_vrid", VMXML_TR_NUM },
	{ "net-attr.primary", "primary", VMXML_TR_BOOL },
	{ "net-attr.dhcp_server", "dhcp_server", VMXML_TR_BOOL },
	{ "net-attr.allow_dhcp_spoofing", "allow_dhcp_spoofing", VMXML_TR_BOOL },
	{ "net-attr.allow_ip_spoofing", "allow_ip_spoofing", VMXML_TR_BOOL },
	{ "net-attr.allow_mac_spoofing", "allow_mac_spoofing", VMXML_TR_BOOL },
	{ "net-attr.allow_restricted_traffic", "allow_restricted_traffic", VMXML_TR_BOOL },
	{ "net-attr.allow_unfiltered_promisc", "allow_unfiltered_promisc", VMXML_TR_BOOL },
};

static const struct prop device_props[] = {
	{ "match", "path", VMXML_TR_NONE },
	{ "net-attr.boot", "boot", VMXML_TR_BOOL },
	{ "net-attr.notrim", "notrim", VMXML_TR_BOOL },
	{ "net-attr.image-size", "image_size", VMXML_TR_NUM },
	{ "net-attr.image-uuid", "image_uuid", VMXML_TR_NONE },
	{ "net-attr.media", "media", VMXML_TR_NONE },
	{ "net-attr.model", "model", VMXML_TR_NONE },
	{ "net-attr.pci-slot", "pci_slot", VMXML_TR_NONE },
	{ "net-attr.uuid", "uuid", VMXML_TR_NONE },
	{ "net-attr.guest-block-size", "guest_block_size", VMXML_TR_NONE },
	{ "net-attr.size", NULL, VMXML_TR_NONE },
	{ "net-attr.image-name", NULL, VMXML_TR_NONE },
};

static const struct prop filesystem_props[] = {
	{ "special", "source", VMXML_TR_NONE },
	{ "raw", "raw", VMXML_TR_NONE },
	{ "directory", "target", VMXML_TR_NONE },
	{ "type", "type", VMXML_TR_NONE },
};

struct category {
	const char *prefix;   /* for the "not found" warning */
	const struct prop *props;
	size_t n;
};

#define CATEGORY(pfx, t) { pfx, t, sizeof(t) / sizeof((t)[0]) }
static const struct category cat_root = CATEGORY("zone.", root_props);
static const struct category cat_attr = CATEGORY("zone.attr.", attr_props);
static const struct category cat_rctl = CATEGORY("zone.rctl.", rctl_props);
static const struct category cat_network = CATEGORY("zone.network.", network_props);
static const struct category cat_device = CATEGORY("zone.device.", device_props);
static const struct category cat_filesystem = CATEGORY("zone.filesystem.", filesystem_props);

/* Brands whose post-processing rules exist; others are treated as joyent. */
static const char *const known_brands[] = {
	"joyent", "joyent-minimal", "lx", "kvm", "bhyve",
};

/* ---- translators ---- */

/* Byte length of the JavaScript whitespace character (ES5 WhiteSpace and
 * LineTerminator, V8 of Node 0.10) starting at p, or 0. */
static size_t
js_ws_at(const unsigned char *p, const unsigned char *end)
{
	size_t left = (size_t)(end - p);

	if (left == 0)
		return 0;
	if (p[0] == ' ' || (p[0] >= '\t' && p[0] <= '\r'))
		return 1;
	if (left >= 2 && p[0] == 0xc2 && p[1] == 0xa0)          /* U+00A0 */
		return 2;
	if (left < 3)
		return 0;
	if (p[0] == 0xe1 && p[1] == 0x9a && p[2] == 0x80)       /* U+1680 */
		return 3;
	if (p[0] == 0xe1 && p[1] == 0xa0 && p[2] == 0x8e)       /* U+180E */
		return 3;
	if (p[0] == 0xe2 && p[1] == 0x80 &&
	    ((p[2] >= 0x80 && p[2] <= 0x8a) ||                   /* U+2000-200A */
	    p[2] == 0xa8 || p[2] == 0xa9 || p[2] == 0xaf))       /* 2028 2029 202F */
		return 3;
	if (p[0] == 0xe2 && p[1] == 0x81 && p[2] == 0x9f)       /* U+205F */
		return 3;
	if (p[0] == 0xe3 && p[1] == 0x80 && p[2] == 0x80)       /* U+3000 */
		return 3;
	if (p[0] == 0xef && p[1] == 0xbb && p[2] == 0xbf)       /* U+FEFF */
		return 3;
	return 0;
}

static size_t js_trim_right_len(const char *s, size_t len);

size_t
vmxml_js_space_len(const char *p, const char *end)
{
	return js_ws_at((const unsigned char *)p, (const unsigned char *)end);
}

void
vmxml_js_trim(const char *s, size_t len, const char **ret_start, const char **ret_end)
{
	const unsigned char *p = (const unsigned char *)s;
	const unsigned char *end = p + len;
	size_t n;

	while ((n = js_ws_at(p, end)) != 0)
		p += n;
	end = p + js_trim_right_len((const char *)p, (size_t)(end - p));
	*ret_start = (const char *)p;
	*ret_end = (const char *)end;
}

static bool
is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool
is_xdigit(char c)
{
	return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

double
vmxml_js_number(const char *text)
{
	const char *s, *e, *p;
	char tmp[128];
	char *heap = NULL, *num;
	size_t n;
	double d;
	bool neg = false, digits = false;

	vmxml_js_trim(text, strlen(text), &s, &e);
	if (s == e)
		return 0;
	n = (size_t)(e - s);

	if (n > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		for (p = s + 2; p < e; p++)
			if (!is_xdigit(*p))
				return NAN;
	} else {
		p = s;
		if (*p == '+' || *p == '-')
			neg = *p++ == '-';
		if ((size_t)(e - p) == 8 && memcmp(p, "Infinity", 8) == 0)
			return neg ? -INFINITY : INFINITY;
		while (p < e && is_digit(*p)) {
			p++;
			digits = true;
		}
		if (p < e && *p == '.') {
			p++;
			while (p < e && is_digit(*p)) {
				p++;
				digits = true;
			}
		}
		if (!digits)
			return NAN;
		if (p < e && (*p == 'e' || *p == 'E')) {
			p++;
			if (p < e && (*p == '+' || *p == '-'))
				p++;
			if (p == e || !is_digit(*p))
				return NAN;
			while (p < e && is_digit(*p))
				p++;
		}
		if (p != e)
			return NAN;
	}
	/* Validated: hand the exact literal to strtod for correct rounding. */
	if (n < sizeof(tmp)) {
		num = tmp;
	} else {
		heap = malloc(n + 1);
		if (heap == NULL)
			return NAN;
		num = heap;
	}
	memcpy(num, s, n);
	num[n] = '\0';
	d = strtod(num, NULL);
	free(heap);
	return d;
}

static int
b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+' || c == '-')
		return 62;
	if (c == '/' || c == '_')
		return 63;
	return -1;
}

/*
 * Node 0.10's base64 decoder: the output is capped at the size computed
 * from the raw length (minus up to two trailing '='), characters outside
 * the alphabet are skipped, a '=' where a character is expected ends it.
 */
char *
vmxml_b64_decode(const char *text, size_t *ret_len)
{
	const unsigned char *src = (const unsigned char *)text;
	size_t len = strlen(text), size = 0, rem;
	const unsigned char *end = src + len;
	unsigned char *out, *dst, *dst_end;
	int q[4];

	if (len >= 2) {
		size_t n = len;

		if (src[n - 1] == '=') {
			n--;
			if (src[n - 1] == '=')
				n--;
		}
		rem = n % 4;
		size = n / 4 * 3;
		if (rem != 0 && !(size == 0 && rem == 1))
			size += 1 + (rem == 3);
	}
	out = malloc(size + 1);
	if (out == NULL)
		return NULL;
	dst = out;
	dst_end = out + size;
	while (src < end && dst < dst_end) {
		int i;

		for (i = 0; i < 4; i++) {
			while (src < end && b64_value(*src) < 0 && *src != '=')
				src++;
			if (src == end || *src == '=')
				break;
			q[i] = b64_value(*src++);
		}
		if (i >= 2)
			*dst++ = (unsigned char)((q[0] << 2) | ((q[1] & 0x30) >> 4));
		if (i >= 3 && dst < dst_end)
			*dst++ = (unsigned char)(((q[1] & 0x0f) << 4) | ((q[2] & 0x3c) >> 2));
		if (i >= 4 && dst < dst_end)
			*dst++ = (unsigned char)(((q[2] & 0x03) << 6) | (q[3] & 0x3f));
		if (i < 4)
			break;
	}
	*dst = '\0';
	*ret_len = (size_t)(dst - out);
	return (char *)out;
}

static json_t *
tr_list(const char *text, bool numbers)
{
	json_t *arr = json_array();
	const char *p = text;

	if (arr == NULL)
		return NULL;
	for (;;) {
		const char *comma = strchr(p, ',');
		size_t n = comma != NULL ? (size_t)(comma - p) : strlen(p);
		json_t *v;

		if (numbers) {
			char *piece = strndup(p, n);

			v = piece != NULL ? js_number(vmxml_js_number(piece)) : NULL;
			free(piece);
		} else {
			v = json_stringn(p, n);
		}
		if (v == NULL || json_array_append_new(arr, v) < 0) {
			json_decref(arr);
			return NULL;
		}
		if (comma == NULL)
			break;
		p = comma + 1;
	}
	return arr;
}

json_t *
vmxml_translate(enum vmxml_tr tr, const char *text)
{
	if (text == NULL) {
		/* A property without its value attribute: numbers become NaN
		 * (null); upstream leaves the rest undefined (or crashes, for
		 * b64 and lists: here they are undefined too). */
		if (tr == VMXML_TR_NUM || tr == VMXML_TR_MEM)
			return js_number(NAN);
		return js_undefined();
	}
	switch (tr) {
	case VMXML_TR_NONE:
		return json_string(text);
	case VMXML_TR_BOOL:
		if (strcmp(text, "true") == 0)
			return json_true();
		if (strcmp(text, "false") == 0)
			return json_false();
		return json_string(text);
	case VMXML_TR_NUM:
		return js_number(vmxml_js_number(text));
	case VMXML_TR_MEM:
		return js_number(vmxml_js_number(text) / 1048576.0);
	case VMXML_TR_B64: {
		size_t n, clean_len;
		char *bytes = vmxml_b64_decode(text, &n);
		char *clean;
		json_t *v;

		if (bytes == NULL)
			return NULL;
		clean = js_utf8_sanitize(bytes, n, &clean_len);
		free(bytes);
		if (clean == NULL)
			return NULL;
		v = json_stringn(clean, clean_len);
		free(clean);
		return v;
	}
	case VMXML_TR_LIST:
		return tr_list(text, false);
	case VMXML_TR_NUMLIST:
		return tr_list(text, true);
	}
	return NULL;
}

/* ---- the element walk ---- */

enum section {
	SEC_NONE,
	SEC_RCTL,
	SEC_NETWORK,
	SEC_FILESYSTEM,
	SEC_DEVICE,
};

struct walk {
	XML_Parser parser;
	json_t *vm;
	const char *where;
	struct vmxml_meta *meta;
	int depth;            /* depth of the current element, root = 1 */
	int skip_depth;       /* inside an unhandled element opened at this depth */
	enum section section; /* the depth-2 element we are in */
	char *rctl_name;      /* name of the current <rctl> ("undefined" if none) */
	json_t *nic;          /* borrowed: last nic */
	json_t *fs;           /* borrowed: last filesystem */
	json_t *dev_pairs;    /* device being collected: [[suffix, value|null], …] */
	char *dev_model;      /* its model net-attr, NULL if none */
	bool nomem;
	char path[512];        /* element path joined with '.', up to depth 4 */
	size_t path_len[5];    /* its length at each depth */
};

static const char *
attr_get(const XML_Char **atts, const char *name)
{
	for (size_t i = 0; atts[i] != NULL; i += 2)
		if (strcmp(atts[i], name) == 0)
			return atts[i + 1];
	return NULL;
}

static const struct prop *
prop_find(const struct category *cat, const char *suffix)
{
	for (size_t i = 0; i < cat->n; i++)
		if (strcmp(cat->props[i].xml, suffix) == 0)
			return &cat->props[i];
	return NULL;
}

static void
walk_nomem(struct walk *w)
{
	if (!w->nomem) {
		w->nomem = true;
		XML_StopParser(w->parser, XML_FALSE);
	}
}

/* Translate `suffix` (in `cat`) with `value` (NULL: missing) onto target. */
static void
walk_set(struct walk *w, json_t *target, const struct category *cat,
	const char *suffix, const char *value)
{
	const struct prop *p = prop_find(cat, suffix);
	json_t *v;

	if (p == NULL) {
		log_warn(NULL, "\"%s%s\" not found in XML_PROPERTIES", cat->prefix, suffix);
		return;
	}
	if (p->key == NULL)
		return;
	v = vmxml_translate(p->tr, value);
	if (v == NULL || js_set(target, p->key, v) < 0)
		walk_nomem(w);
}

/* a + b + c into out (size n), truncated; no printf on the hot path. */
static void
concat3(char *out, size_t n, const char *a, const char *b, const char *c)
{
	const char *parts[3] = { a, b, c };
	size_t off = 0;

	for (int i = 0; i < 3; i++) {
		size_t l = strlen(parts[i]);

		if (l > n - 1 - off)
			l = n - 1 - off;
		memcpy(out + off, parts[i], l);
		off += l;
	}
	out[off] = '\0';
}

/* Same with the suffix built from two parts ("net-attr." + name). */
static void
walk_set2(struct walk *w, json_t *target, const struct category *cat,
	const char *a, const char *b, const char *value)
{
	char suffix[512];

	if (strlen(a) + strlen(b) >= sizeof(suffix)) {
		log_warn(NULL, "\"%s%s%.64s...\" not found in XML_PROPERTIES",
			cat->prefix, a, b);
		return;
	}
	concat3(suffix, sizeof(suffix), a, b, "");
	walk_set(w, target, cat, suffix, value);
}

static json_t *
array_member(struct walk *w, const char *key)
{
	json_t *arr = json_object_get(w->vm, key);

	if (json_is_array(arr))
		return arr;
	arr = json_array();
	if (arr == NULL || js_set(w->vm, key, arr) < 0) {
		walk_nomem(w);
		return NULL;
	}
	return arr;
}

static void
append_string_or_null(struct walk *w, json_t *arr, const char *s)
{
	json_t *v = s != NULL ? json_string(s) : json_null();

	if (v == NULL || json_array_append_new(arr, v) < 0)
		walk_nomem(w);
}

static void
log_unhandled(const char *where, const XML_Char **atts)
{
	json_t *attrs = json_object();
	json_t *fields = json_object();

	if (attrs != NULL)
		for (size_t i = 0; atts[i] != NULL; i += 2)
			(void)js_set(attrs, atts[i], json_string(atts[i + 1]));
	if (fields != NULL) {
		(void)json_object_set_new(fields, "where", json_string(where));
		if (attrs != NULL)
			(void)json_object_set_new(fields, "attrs", attrs);
		attrs = NULL;
	}
	json_decref(attrs);
	log_error(fields, "unhandled zone XML property");
}

static void
unhandled(struct walk *w, const XML_Char **atts)
{
	log_unhandled(w->path, atts);
	w->skip_depth = w->depth;
}

static void
root_start(struct walk *w, const XML_Char **atts)
{
	for (size_t i = 0; atts[i] != NULL; i += 2) {
		const char *name = atts[i], *value = atts[i + 1];

		if (w->meta != NULL) {
			if (strcmp(name, "ip-type") == 0)
				(void)snprintf(w->meta->ip_type, sizeof(w->meta->ip_type), "%s", value);
			else if (strcmp(name, "debugid") == 0)
				w->meta->debugid = vmxml_js_number(value);
		}
		walk_set(w, w->vm, &cat_root, name, value);
	}
}

static void
level2_start(struct walk *w, const char *name, const XML_Char **atts)
{
	if (strcmp(name, "attr") == 0) {
		const char *an = attr_get(atts, "name");

		walk_set(w, w->vm, &cat_attr, an != NULL ? an : "undefined",
			attr_get(atts, "value"));
	} else if (strcmp(name, "rctl") == 0) {
		const char *rn = attr_get(atts, "name");

		free(w->rctl_name);
		w->rctl_name = strdup(rn != NULL ? rn : "undefined");
		if (w->rctl_name == NULL)
			walk_nomem(w);
		w->section = SEC_RCTL;
	} else if (strcmp(name, "dataset") == 0) {
		json_t *arr = array_member(w, "datasets");

		if (arr != NULL)
			append_string_or_null(w, arr, attr_get(atts, "name"));
	} else if (strcmp(name, "network") == 0) {
		json_t *arr = array_member(w, "nics");
		json_t *nic = json_object();

		if (arr == NULL || nic == NULL || json_array_append_new(arr, nic) < 0) {
			walk_nomem(w);
			return;
		}
		w->nic = nic;
		for (size_t i = 0; atts[i] != NULL; i += 2)
			walk_set(w, nic, &cat_network, atts[i], atts[i + 1]);
		w->section = SEC_NETWORK;
	} else if (strcmp(name, "filesystem") == 0) {
		json_t *arr = array_member(w, "filesystems");
		json_t *fs = json_object();

		if (arr == NULL || fs == NULL || json_array_append_new(arr, fs) < 0) {
			walk_nomem(w);
			return;
		}
		w->fs = fs;
		for (size_t i = 0; atts[i] != NULL; i += 2)
			walk_set(w, fs, &cat_filesystem, atts[i], atts[i + 1]);
		w->section = SEC_FILESYSTEM;
	} else if (strcmp(name, "device") == 0) {
		const char *match = attr_get(atts, "match");
		json_t *pair = json_pack("[s,o]", "match",
			match != NULL ? json_string(match) : json_null());

		json_decref(w->dev_pairs);
		free(w->dev_model);
		w->dev_model = NULL;
		w->dev_pairs = json_array();
		if (w->dev_pairs == NULL || pair == NULL ||
		    json_array_append_new(w->dev_pairs, pair) < 0 ||
		    js_set(w->vm, "device", json_object()) < 0) {
			walk_nomem(w);
			return;
		}
		w->section = SEC_DEVICE;
	} else {
		unhandled(w, atts);
	}
}

static void
level3_start(struct walk *w, const char *name, const XML_Char **atts)
{
	switch (w->section) {
	case SEC_RCTL:
		if (strcmp(name, "rctl-value") == 0) {
			const char *priv = attr_get(atts, "priv");
			const char *action = attr_get(atts, "action");
			char suffix[512];

			concat3(suffix, sizeof(suffix), w->rctl_name, ".",
				priv != NULL ? priv : "undefined");
			concat3(suffix + strlen(suffix), sizeof(suffix) - strlen(suffix), ".",
				action != NULL ? action : "undefined", "");
			walk_set(w, w->vm, &cat_rctl, suffix, attr_get(atts, "limit"));
			return;
		}
		unhandled(w, atts);
		return;
	case SEC_NETWORK:
		if (strcmp(name, "net-attr") == 0) {
			const char *an = attr_get(atts, "name");

			walk_set2(w, w->nic, &cat_network, "net-attr.",
				an != NULL ? an : "undefined", attr_get(atts, "value"));
			return;
		}
		unhandled(w, atts);
		return;
	case SEC_FILESYSTEM:
		if (strcmp(name, "fsoption") == 0) {
			json_t *opts = json_object_get(w->fs, "options");

			if (!json_is_array(opts)) {
				opts = json_array();
				if (opts == NULL || js_set(w->fs, "options", opts) < 0) {
					walk_nomem(w);
					return;
				}
			}
			append_string_or_null(w, opts, attr_get(atts, "name"));
			return;
		}
		unhandled(w, atts);
		return;
	case SEC_DEVICE:
		if (strcmp(name, "net-attr") == 0) {
			const char *an = attr_get(atts, "name");
			const char *value = attr_get(atts, "value");
			char suffix[512];
			json_t *pair;

			concat3(suffix, sizeof(suffix), "net-attr.",
				an != NULL ? an : "undefined", "");
			pair = json_pack("[s,o]", suffix,
				value != NULL ? json_string(value) : json_null());
			if (pair == NULL || json_array_append_new(w->dev_pairs, pair) < 0) {
				walk_nomem(w);
				return;
			}
			if (an != NULL && strcmp(an, "model") == 0) {
				free(w->dev_model);
				w->dev_model = value != NULL ? strdup(value) : NULL;
			}
			return;
		}
		unhandled(w, atts);
		return;
	case SEC_NONE:
		break;
	}
	unhandled(w, atts);
}

static void
device_end(struct walk *w)
{
	json_t *dev = json_object();
	json_t *arr;
	size_t i;
	json_t *pair;

	if (dev == NULL) {
		walk_nomem(w);
		return;
	}
	json_array_foreach(w->dev_pairs, i, pair) {
		json_t *v = json_array_get(pair, 1);

		walk_set(w, dev, &cat_device, json_string_value(json_array_get(pair, 0)),
			json_is_string(v) ? json_string_value(v) : NULL);
	}
	arr = array_member(w, w->dev_model != NULL &&
		strcmp(w->dev_model, "passthru") == 0 ? "pci_devices" : "disks");
	if (arr == NULL || json_array_append_new(arr, dev) < 0) {
		walk_nomem(w);
		return;
	}
	if (js_set(w->vm, "device", json_null()) < 0)
		walk_nomem(w);
}

static void XMLCALL
on_start(void *data, const XML_Char *name, const XML_Char **atts)
{
	struct walk *w = data;

	w->depth++;
	if (w->nomem || w->skip_depth != 0)
		return;
	/* Not skipping means every ancestor was handled: depth <= 4 here. */
	if (w->depth <= 4) {
		size_t base = w->depth > 1 ? w->path_len[w->depth - 1] : 0;
		size_t n = strlen(name), room = sizeof(w->path) - 1 - base;
		char *p = w->path + base;

		if (w->depth > 1 && room > 0) {
			*p++ = '.';
			room--;
		}
		if (n > room)
			n = room;
		memcpy(p, name, n);
		p[n] = '\0';
		w->path_len[w->depth] = (size_t)(p + n - w->path);
	}
	switch (w->depth) {
	case 1:
		if (strcmp(name, "zone") == 0)
			root_start(w, atts);
		else
			unhandled(w, atts);
		break;
	case 2:
		w->section = SEC_NONE;
		level2_start(w, name, atts);
		break;
	case 3:
		level3_start(w, name, atts);
		break;
	default:
		/* Only reachable below a handled level-3 element. */
		unhandled(w, atts);
		break;
	}
}

static void XMLCALL
on_end(void *data, const XML_Char *name)
{
	struct walk *w = data;

	if (w->skip_depth != 0) {
		if (w->skip_depth == w->depth)
			w->skip_depth = 0;
	} else if (!w->nomem && w->depth == 2) {
		if (w->section == SEC_DEVICE)
			device_end(w);
		w->section = SEC_NONE;
	}
	w->depth--;
}

/* ---- post-processing (spec/vmload.md §3.4) ---- */

struct keyed {
	double key;
	json_t *v;
};

/* NaN compares equal to everything (a JavaScript comparator returning NaN). */
static int
key_cmp(double a, double b)
{
	if (a < b)
		return -1;
	if (a > b)
		return 1;
	return 0;
}

/* Stable merge sort of n items using tmp (n items). */
static void
merge_sort(struct keyed *a, struct keyed *tmp, size_t n)
{
	size_t mid, i, j, k;

	if (n < 2)
		return;
	mid = n / 2;
	merge_sort(a, tmp, mid);
	merge_sort(a + mid, tmp, n - mid);
	for (i = 0, j = mid, k = 0; i < mid && j < n;)
		tmp[k++] = key_cmp(a[j].key, a[i].key) < 0 ? a[j++] : a[i++];
	while (i < mid)
		tmp[k++] = a[i++];
	while (j < n)
		tmp[k++] = a[j++];
	memcpy(a, tmp, n * sizeof(*a));
}

/* N of `^.*[-/]disk(\d+)$`, 0 when the path does not match. */
static double
disk_number(const json_t *disk)
{
	const char *s = json_string_value(json_object_get(disk, "path"));
	size_t len, d = 0;

	if (s == NULL)
		return 0;
	len = strlen(s);
	while (d < len && is_digit(s[len - 1 - d]))
		d++;
	if (d == 0 || len < d + 5 || memcmp(s + len - d - 4, "disk", 4) != 0 ||
	    (s[len - d - 5] != '-' && s[len - d - 5] != '/'))
		return 0;
	return strtod(s + len - d, NULL);
}

/* N of `^net(\d+)$`, 0 otherwise. */
static double
nic_number(const json_t *nic)
{
	const char *s = json_string_value(json_object_get(nic, "interface"));

	if (s == NULL || strncmp(s, "net", 3) != 0 || s[3] == '\0')
		return 0;
	for (const char *p = s + 3; *p != '\0'; p++)
		if (!is_digit(*p))
			return 0;
	return strtod(s + 3, NULL);
}

static double
fs_number(const json_t *fs)
{
	const char *s = json_string_value(json_object_get(fs, "target"));

	return s != NULL ? vmxml_js_number(s) : NAN;
}

static int
sort_member(json_t *vm, const char *key, double (*keyfn)(const json_t *))
{
	json_t *arr = json_object_get(vm, key);
	size_t n = json_array_size(arr);
	struct keyed *items, *tmp;

	if (!json_is_array(arr) || n < 2)
		return 0;
	items = calloc(2 * n, sizeof(*items));
	if (items == NULL)
		return -ENOMEM;
	tmp = items + n;
	for (size_t i = 0; i < n; i++) {
		items[i].v = json_incref(json_array_get(arr, i));
		items[i].key = keyfn(items[i].v);
	}
	merge_sort(items, tmp, n);
	for (size_t i = 0; i < n; i++)
		(void)json_array_set_new(arr, i, items[i].v);
	free(items);
	return 0;
}

/* Length of s without trailing JavaScript whitespace (trimRight). */
static size_t
js_trim_right_len(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	const unsigned char *end = p + len;

	for (;;) {
		size_t k;

		for (k = 1; k <= 3 && (size_t)(end - p) >= k; k++)
			if (js_ws_at(end - k, end) == k)
				break;
		if (k > 3 || (size_t)(end - p) < k)
			break;
		end -= k;
	}
	return (size_t)(end - p);
}

static int
split_transition(json_t *vm)
{
	json_t *t = json_object_get(vm, "transition");
	const char *s = json_string_value(t);
	size_t len;
	const char *c1, *c2;
	char *copy;

	if (s == NULL)
		return 0;
	len = js_trim_right_len(s, json_string_length(t));
	copy = strndup(s, len);
	if (copy == NULL)
		return -ENOMEM;
	c1 = strchr(copy, ':');
	c2 = c1 != NULL ? strchr(c1 + 1, ':') : NULL;
	if (c1 == NULL || c2 == NULL || strchr(c2 + 1, ':') != NULL) {
		log_debug(NULL, "getVmobj() ignoring bad value for transition \"%s\"", s);
		free(copy);
		return 0;
	}
	copy[c1 - copy] = '\0';
	copy[c2 - copy] = '\0';
	if (json_object_del(vm, "transition") < 0 ||
	    js_set(vm, "state", json_string(copy)) < 0 ||
	    js_set(vm, "transition_to", json_string(c1 + 1)) < 0 ||
	    js_set(vm, "transition_expire", js_number(vmxml_js_number(c2 + 1))) < 0) {
		free(copy);
		return -ENOMEM;
	}
	free(copy);
	return 0;
}

static int
postprocess(json_t *vm, const char *brand)
{
	bool kvm = strcmp(brand, "kvm") == 0;

	if (json_object_get(vm, "nics") == NULL && js_set(vm, "nics", json_array()) < 0)
		return -ENOMEM;
	if ((kvm || strcmp(brand, "bhyve") == 0) && json_object_get(vm, "disks") == NULL &&
	    js_set(vm, "disks", json_array()) < 0)
		return -ENOMEM;
	if (kvm) {
		json_t *va = json_object_get(vm, "vm_autoboot");

		if (va != NULL) {
			if (js_set(vm, "autoboot", json_incref(va)) < 0)
				return -ENOMEM;
			(void)json_object_del(vm, "vm_autoboot");
		} else if (js_set(vm, "autoboot", js_undefined()) < 0) {
			return -ENOMEM;
		}
	}
	if (split_transition(vm) < 0)
		return -ENOMEM;
	if (sort_member(vm, "disks", disk_number) < 0 ||
	    sort_member(vm, "nics", nic_number) < 0 ||
	    sort_member(vm, "filesystems", fs_number) < 0)
		return -ENOMEM;
	return 0;
}

/* Is s[0..n) valid UTF-8 (no overlongs, no surrogates, <= U+10FFFF)?
 * Zone XML is nearly always ASCII, so the common path is a word scan and
 * the (copying) replacement of bad sequences is only done when needed. */
static bool
utf8_valid(const unsigned char *s, size_t n)
{
	size_t i = 0;

	while (i < n) {
		unsigned char c = s[i];
		size_t len;
		uint32_t cp;

		if (c < 0x80) {
			uint64_t w;

			while (i + 8 <= n) {
				memcpy(&w, s + i, 8);
				if (w & 0x8080808080808080ULL)
					break;
				i += 8;
			}
			if (i < n && s[i] < 0x80)
				i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			len = 2;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			len = 3;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			len = 4;
			cp = c & 0x07;
		} else {
			return false;
		}
		if (i + len > n)
			return false;
		for (size_t k = 1; k < len; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
		    (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
			return false;
		i += len;
	}
	return true;
}

static void
set_err(struct vmxml_error *err, const char *code, const char *fmt, const char *arg)
{
	(void)snprintf(err->code, sizeof(err->code), "%s", code);
	(void)snprintf(err->message, sizeof(err->message), fmt, arg);
}

json_t *
vmxml_parse(const char *data, size_t len, const char *where,
	struct vmxml_meta *meta, struct vmxml_error *err)
{
	struct walk w;
	char *text;
	size_t text_len;
	enum XML_Status st;
	const char *brand;
	json_t *vm = NULL;

	memset(&w, 0, sizeof(w));
	if (meta != NULL) {
		meta->ip_type[0] = '\0';
		meta->debugid = NAN;
	}
	if (len > INT_MAX / 2) {
		set_err(err, "EFBIG", "%s", strerror(EFBIG));
		return NULL;
	}
	if (utf8_valid((const unsigned char *)data, len)) {
		text = NULL;
		text_len = len;
	} else if ((text = js_utf8_sanitize(data, len, &text_len)) == NULL) {
		set_err(err, "ENOMEM", "%s", strerror(ENOMEM));
		return NULL;
	}
	/* The encoding given here overrides the document's declaration. */
	w.parser = XML_ParserCreate("UTF-8");
	w.vm = json_object();
	if (w.parser == NULL || w.vm == NULL) {
		set_err(err, "ENOMEM", "%s", strerror(ENOMEM));
		goto out;
	}
	w.where = where;
	w.meta = meta;
	XML_SetUserData(w.parser, &w);
	XML_SetElementHandler(w.parser, on_start, on_end);

	/* Non-final: errors that need the end of input (no root, unclosed
	 * elements) are not errors; whatever was complete is used. */
	st = XML_Parse(w.parser, text != NULL ? text : data, (int)text_len, XML_FALSE);
	if (w.nomem) {
		set_err(err, "ENOMEM", "%s", strerror(ENOMEM));
		goto out;
	}
	if (st == XML_STATUS_ERROR) {
		set_err(err, "PARSE_ERROR", "%s",
			XML_ErrorString(XML_GetErrorCode(w.parser)));
		goto out;
	}

	brand = json_string_value(json_object_get(w.vm, "brand"));
	if (brand == NULL || brand[0] == '\0') {
		char *js = js_dumps(w.vm, NULL);

		set_err(err, "ERR_ASSERTION", "VM missing brand: %s", js != NULL ? js : "?");
		free(js);
		goto out;
	}
	{
		bool known = false;

		for (size_t i = 0; i < sizeof(known_brands) / sizeof(known_brands[0]); i++)
			known = known || strcmp(brand, known_brands[i]) == 0;
		if (!known) {
			char *js = js_dumps(w.vm, NULL);

			log_warn(NULL, "VM has unsupported brand: %s treating as \"joyent\"",
				js != NULL ? js : "?");
			free(js);
			brand = "joyent";
		}
	}
	if (postprocess(w.vm, brand) < 0) {
		set_err(err, "ENOMEM", "%s", strerror(ENOMEM));
		goto out;
	}
	vm = w.vm;
	w.vm = NULL;
out:
	if (w.parser != NULL)
		XML_ParserFree(w.parser);
	json_decref(w.vm);
	json_decref(w.dev_pairs);
	free(w.dev_model);
	free(w.rctl_name);
	free(text);
	return vm;
}
