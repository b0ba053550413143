/*
 * zoneindex.c - parse and compare <root>/etc/zones/index.
 *
 * Owns: line splitting, zonename validation, duplicate handling, the
 * per-zonename diff.  Does not read files or log: rejected lines go to the
 * caller's callback, which logs them.
 */
#include "zoneindex.h"

#include "strmap.h"

#include <errno.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Record index + 1 stored as a map value (NULL = absent). */
static size_t
map_get(const struct strmap *m, const char *key)
{
	return (size_t)(uintptr_t)strmap_get(m, key, strlen(key));
}

static int
map_put(struct strmap *m, const char *key, size_t i)
{
	return strmap_set(m, key, strlen(key), (void *)(uintptr_t)(i + 1), NULL);
}

bool
zoneindex_name_ok(const char *name)
{
	size_t n = 0;

	if (name == NULL || name[0] == '\0' || name[0] == '.')
		return false;
	for (const char *p = name; *p != '\0'; p++, n++) {
		char c = *p;

		if (n >= ZONEINDEX_NAME_MAX)
			return false;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.'))
			return false;
	}
	return true;
}

bool
zoneindex_is_uuid(const char *s)
{
	static const char pattern[] = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx";
	size_t i;

	for (i = 0; pattern[i] != '\0'; i++) {
		char c = s[i];

		if (pattern[i] == '-') {
			if (c != '-')
				return false;
		} else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
		    (c >= 'A' && c <= 'F'))) {
			return false;
		}
	}
	return s[i] == '\0';
}

static void
record_free(struct zone_record *r)
{
	free(r->zonename);
	free(r->state);
	free(r->zonepath);
	free(r->uuid);
	memset(r, 0, sizeof(*r));
}

void
zoneindex_done(struct zoneindex *idx)
{
	for (size_t i = 0; i < idx->n; i++)
		record_free(&idx->recs[i]);
	free(idx->recs);
	idx->recs = NULL;
	idx->n = idx->cap = 0;
}

/*
 * Check one line (already without its newline and trailing whitespace) and
 * split it into its four fields, in place.  Returns NULL and the fields, or
 * the reason it is rejected.  *ret_global is set for the global zone.
 */

/* True when a "/"-separated path has a ".." segment. */
static bool has_dotdot_segment(const char *path)
{
	for (const char *p = path; (p = strstr(p, "..")) != NULL; p += 2) {
		bool starts = p == path || p[-1] == '/';
		bool ends = p[2] == '\0' || p[2] == '/';
		if (starts && ends)
			return true;
	}
	return false;
}

static const char *
check_line(char *line, char *fields[4], bool *ret_global)
{
	size_t nf = 0;
	char *p = line;

	*ret_global = false;
	for (;;) {
		char *colon = strchr(p, ':');

		if (nf == 4)
			return "wrong number of fields";
		fields[nf++] = p;
		if (colon == NULL)
			break;
		*colon = '\0';
		p = colon + 1;
	}
	if (nf != 4) {
		/* The global zone's line often has only three fields. */
		if (strcmp(fields[0], "global") == 0) {
			*ret_global = true;
			return NULL;
		}
		return "wrong number of fields";
	}
	if (strcmp(fields[0], "global") == 0) {
		*ret_global = true;
		return NULL;
	}
	if (!zoneindex_name_ok(fields[0]))
		return "unsafe zonename";
	if (fields[1][0] == '\0')
		return "empty state";
	if (fields[2][0] != '/')
		return "zonepath is not absolute";
	/* The zonepath is joined to --root for watches and reads: a ".."
	 * segment could lead out of it. */
	if (has_dotdot_segment(fields[2]))
		return "unsafe zonepath";
	/* The record is keyed by uuid; a zone named by its uuid may leave the
	 * column empty (spec/vmload.md §2.1). */
	if (!zoneindex_is_uuid(fields[3])) {
		if (fields[3][0] != '\0')
			return "bad uuid";
		if (!zoneindex_is_uuid(fields[0]))
			return "missing uuid";
		fields[3] = fields[0];
	}
	return NULL;
}

static int
record_fill(struct zone_record *r, char *fields[4], unsigned lineno)
{
	r->zonename = strdup(fields[0]);
	r->state = strdup(fields[1]);
	r->zonepath = strdup(fields[2]);
	r->uuid = strdup(fields[3]);
	r->lineno = lineno;
	if (r->zonename == NULL || r->state == NULL || r->zonepath == NULL ||
	    r->uuid == NULL) {
		record_free(r);
		return -ENOMEM;
	}
	return 0;
}

/* Lines longer than this are rejected without copying them whole. */
#define LINE_MAX_BYTES 4096

int
zoneindex_parse(const char *text, size_t len, struct zoneindex *ret,
	zoneindex_skip_fn skip, void *skip_arg)
{
	struct strmap by_name = STRMAP_INIT, by_uuid = STRMAP_INIT;
	const char *p = text, *end = text + len;
	unsigned lineno = 0;
	char line[LINE_MAX_BYTES + 1], copy[LINE_MAX_BYTES + 1];
	int rc = -ENOMEM;

	zoneindex_done(ret);
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *le = nl != NULL ? nl : end;
		size_t n = (size_t)(le - p);
		char *fields[4];
		const char *why;
		bool global;
		size_t ns, us;

		lineno++;
		/* Trailing whitespace removed, as upstream does per line. */
		while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t' ||
		    p[n - 1] == '\r' || p[n - 1] == '\v' || p[n - 1] == '\f'))
			n--;
		if (n > LINE_MAX_BYTES) {
			memcpy(line, p, 64);
			memcpy(line + 64, "...", 4);
			if (skip != NULL)
				skip(skip_arg, lineno, line, "line too long");
			p = le + 1;
			continue;
		}
		memcpy(line, p, n);
		line[n] = '\0';
		p = le + 1;
		if (n == 0 || line[0] == '#')
			continue;
		if (memchr(line, '\0', n) != NULL) {
			if (skip != NULL)
				skip(skip_arg, lineno, line, "NUL byte in line");
			continue;
		}

		memcpy(copy, line, n + 1);
		why = check_line(copy, fields, &global);
		if (global)
			continue;
		if (why != NULL) {
			if (skip != NULL)
				skip(skip_arg, lineno, line, why);
			continue;
		}

		ns = map_get(&by_name, fields[0]);
		us = map_get(&by_uuid, fields[3]);
		if (ns != 0 && us != 0 && ns != us) {
			if (skip != NULL)
				skip(skip_arg, lineno, line,
					"zonename and uuid belong to two earlier lines");
			continue;
		}
		if (ns != 0 || us != 0) {
			/* A later duplicate replaces the earlier record in place
			 * (JavaScript object assignment). */
			size_t target = (ns != 0 ? ns : us) - 1;
			struct zone_record *old = &ret->recs[target];
			struct zone_record nr;

			if (record_fill(&nr, fields, lineno) < 0)
				goto out;
			(void)strmap_del(&by_name, old->zonename, strlen(old->zonename));
			(void)strmap_del(&by_uuid, old->uuid, strlen(old->uuid));
			record_free(old);
			*old = nr;
			if (map_put(&by_name, old->zonename, target) < 0 ||
			    map_put(&by_uuid, old->uuid, target) < 0)
				goto out;
			if (skip != NULL)
				skip(skip_arg, lineno, line,
					"duplicate zonename or uuid, replaces the earlier line");
			continue;
		}
		if (ret->n == ret->cap) {
			size_t ncap = ret->cap != 0 ? ret->cap * 2 : 64;
			struct zone_record *nrecs = realloc(ret->recs, ncap * sizeof(*nrecs));

			if (nrecs == NULL)
				goto out;
			ret->recs = nrecs;
			ret->cap = ncap;
		}
		if (record_fill(&ret->recs[ret->n], fields, lineno) < 0)
			goto out;
		ret->n++;
		if (map_put(&by_name, fields[0], ret->n - 1) < 0 ||
		    map_put(&by_uuid, fields[3], ret->n - 1) < 0)
			goto out;
	}
	rc = 0;
out:
	strmap_done(&by_name);
	strmap_done(&by_uuid);
	if (rc < 0)
		zoneindex_done(ret);
	return rc;
}

const struct zone_record *
zoneindex_find(const struct zoneindex *idx, const char *zonename)
{
	for (size_t i = 0; i < idx->n; i++)
		if (strcmp(idx->recs[i].zonename, zonename) == 0)
			return &idx->recs[i];
	return NULL;
}

int
zoneindex_diff(const struct zoneindex *old, const struct zoneindex *new_,
	struct zone_change **ret_changes, size_t *ret_n)
{
	struct strmap old_map = STRMAP_INIT, new_map = STRMAP_INIT;
	struct zone_change *out;
	size_t n = 0;
	int rc = -ENOMEM;

	*ret_changes = NULL;
	*ret_n = 0;
	out = malloc((old->n + new_->n + 1) * sizeof(*out));
	if (out == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < old->n; i++)
		if (map_put(&old_map, old->recs[i].zonename, i) < 0)
			goto out;
	for (size_t i = 0; i < new_->n; i++)
		if (map_put(&new_map, new_->recs[i].zonename, i) < 0)
			goto out;

	for (size_t i = 0; i < new_->n; i++) {
		const struct zone_record *r = &new_->recs[i];
		size_t slot = map_get(&old_map, r->zonename);

		if (slot == 0) {
			out[n++] = (struct zone_change){ r->zonename, r->state, ZONE_APPEARED };
		} else {
			const struct zone_record *o = &old->recs[slot - 1];

			if (strcmp(o->state, r->state) != 0 ||
			    strcmp(o->zonepath, r->zonepath) != 0 ||
			    strcmp(o->uuid, r->uuid) != 0)
				out[n++] = (struct zone_change){ r->zonename, r->state,
					ZONE_CHANGED };
		}
	}
	for (size_t i = 0; i < old->n; i++) {
		const struct zone_record *o = &old->recs[i];

		if (map_get(&new_map, o->zonename) == 0)
			out[n++] = (struct zone_change){ o->zonename, "", ZONE_DISAPPEARED };
	}
	rc = 0;
out:
	strmap_done(&old_map);
	strmap_done(&new_map);
	if (rc < 0) {
		free(out);
		return rc;
	}
	*ret_changes = out;
	*ret_n = n;
	return 0;
}
