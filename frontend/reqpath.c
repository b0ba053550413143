/*
 * reqpath.c - request target parsing.  See reqpath.h.
 */
#include "reqpath.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

/* Characters Node 0.10's url.parse() escapes before routing (its
 * "autoEscape" set: ' plus the unwise and delimiter characters). */
static bool auto_escaped(unsigned char c)
{
	return c && strchr("'{}|\\^`<>\" \r\n\t", c) != NULL;
}

/* Resolve "." and ".." over the segments of `path` (POSIX path.normalize
 * of Node: absolute paths cannot go above the root; relative ones keep
 * leading ".."), writing the result to out.  Returns its length. */
static size_t normalize(const char *path, size_t len, char *out, size_t *segstart, size_t maxsegs)
{
	bool absolute = len > 0 && path[0] == '/';
	bool trailing = len > 0 && path[len - 1] == '/';
	size_t nseg = 0, o = 0;
	/* segstart[i] is the offset in out where segment i begins; out holds
	 * the kept segments joined by '/', without the leading slash. */
	for (size_t i = 0; i < len;) {
		while (i < len && path[i] == '/')
			i++;
		size_t b = i;
		while (i < len && path[i] != '/')
			i++;
		size_t n = i - b;
		if (n == 0 || (n == 1 && path[b] == '.'))
			continue;
		if (n == 2 && path[b] == '.' && path[b + 1] == '.') {
			bool top_is_dotdot = nseg > 0 && o - segstart[nseg - 1] == 2 &&
					     out[segstart[nseg - 1]] == '.' && out[segstart[nseg - 1] + 1] == '.';
			if (nseg > 0 && !top_is_dotdot) {
				nseg--;
				o = segstart[nseg] ? segstart[nseg] - 1 : 0;
				continue;
			}
			if (absolute)
				continue;
		}
		if (nseg == maxsegs)
			continue;   /* cannot happen: maxsegs >= number of segments */
		if (nseg > 0)
			out[o++] = '/';
		segstart[nseg++] = o;
		memcpy(out + o, path + b, n);
		o += n;
	}
	if (o == 0 && !absolute)
		out[o++] = '.';
	else if (o > 0 && trailing)
		out[o++] = '/';
	if (absolute) {
		memmove(out + 1, out, o);
		out[0] = '/';
		o++;
	}
	return o;
}

int reqpath_parse(const char *target, size_t len, char *work, size_t worklen, struct reqpath *ret)
{
	memset(ret, 0, sizeof(*ret));
	if (worklen < reqpath_work_size(len))
		return -ENOBUFS;
	const char *hash = memchr(target, '#', len);
	if (hash)
		len = (size_t)(hash - target);
	const char *q = memchr(target, '?', len);
	size_t plen = len;
	if (q) {
		plen = (size_t)(q - target);
		ret->query = q + 1;
		ret->query_len = len - plen - 1;
	}

	/* work = [escaped path: 3*plen][normalised: 3*plen+2][segment starts] */
	char *esc = work;
	size_t elen = 0;
	static const char hex[] = "0123456789ABCDEF";
	for (size_t i = 0; i < plen; i++) {
		unsigned char c = (unsigned char)target[i];
		if (auto_escaped(c)) {
			esc[elen++] = '%';
			esc[elen++] = hex[c >> 4];
			esc[elen++] = hex[c & 15];
		} else {
			esc[elen++] = (char)c;
		}
	}
	char *norm = esc + 3 * plen;
	/* Segment offsets (at most one segment per path byte) go after the
	 * normalised text, aligned. */
	uintptr_t a = (uintptr_t)(norm + 3 * plen + 2);
	a = (a + sizeof(size_t) - 1) & ~(uintptr_t)(sizeof(size_t) - 1);
	size_t *segstart = (size_t *)a;
	size_t maxsegs = plen + 1;
	size_t nlen = normalize(esc, elen, norm, segstart, maxsegs);

	/* Split on '/' and drop the first piece. */
	const char *p = norm, *end = norm + nlen;
	const char *slash = memchr(p, '/', nlen);
	if (!slash)
		return 0;   /* relative path: a single piece, nothing left */
	p = slash + 1;
	for (int i = 0; i < 2; i++) {
		const char *s = memchr(p, '/', (size_t)(end - p));
		const char *e = s ? s : end;
		ret->seg[i].p = p;
		ret->seg[i].len = (size_t)(e - p);
		ret->seg[i].present = true;
		if (!s)
			break;
		p = s + 1;
	}
	return 0;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

size_t reqpath_decode(const char *s, size_t n, char *out, size_t cap)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (c == '+') {
			c = ' ';
		} else if (c == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
			c = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
			i += 2;
		}
		if (out && o < cap)
			out[o] = c;
		o++;
	}
	return o;
}

/* Decode [s, s+n) into out (at most cap-1 bytes + NUL when cap > 0);
 * returns the full decoded length. */
static size_t decode(const char *s, size_t n, char *out, size_t cap)
{
	size_t o = reqpath_decode(s, n, out, cap ? cap - 1 : 0);
	if (out && cap)
		out[o < cap ? o : cap - 1] = '\0';
	return o;
}

size_t reqpath_query(const char *query, size_t qlen, const char *key,
		     char *val, size_t valcap, size_t *ret_vlen)
{
	size_t count = 0, klen = strlen(key);
	char kbuf[64];
	if (ret_vlen)
		*ret_vlen = 0;
	if (val && valcap)
		val[0] = '\0';
	for (size_t i = 0; query && i <= qlen;) {
		const char *amp = memchr(query + i, '&', qlen - i);
		size_t end = amp ? (size_t)(amp - query) : qlen;
		const char *piece = query + i;
		size_t plen = end - i;
		i = end + 1;
		if (plen == 0)
			continue;
		const char *eq = memchr(piece, '=', plen);
		size_t kl = eq ? (size_t)(eq - piece) : plen;
		size_t dl = decode(piece, kl, kbuf, sizeof(kbuf));
		if (dl != klen || memcmp(kbuf, key, klen) != 0)
			continue;
		if (count++ == 0) {
			const char *v = eq ? eq + 1 : piece + plen;
			size_t vl = eq ? plen - kl - 1 : 0;
			size_t n = decode(v, vl, val, val ? valcap : 0);
			if (ret_vlen)
				*ret_vlen = n;
		}
		if (!amp)
			break;
	}
	return count;
}

bool reqpath_query_flag(const char *query, size_t qlen, const char *key)
{
	size_t vlen = 0;
	size_t n = reqpath_query(query, qlen, key, NULL, 0, &vlen);
	return n >= 2 || (n == 1 && vlen > 0);
}
