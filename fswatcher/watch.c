/*
 * watch.c - the watch table: paths, inotify descriptors and the
 * translation of inotify events into upstream's FILE_* events.
 *
 * Structures:
 *
 *   entry  one WATCHed (or pending) path.  Hashed by path, and by
 *          (directory wd, name) so a named directory event finds the
 *          entries it concerns in O(1).
 *   iw     one inotify watch descriptor (one inode).  Lists the entries
 *          anchored on it as a directory ("dir role": events carrying a
 *          name) and those whose own inode it is ("self role").  The
 *          kernel hands out one wd per inode, so two spellings of a
 *          directory, or two links to a file, share an iw.  An iw with no
 *          entries is removed from the kernel at once.
 *
 * Every inode is watched with the same mask; events that concern nobody
 * are dropped.  Events only set hint bits on entries and queue them as
 * dirty; after the batch, each dirty entry is stat()ed and judged once
 * (entry_judge), so several kernel events for one change give one report.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proto.h"
#include "watch.h"

#define WATCH_MASK (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_CREATE | \
	IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF)
#define NAME_EVENTS (IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO)

/* Hint bits collected between two judgements of an entry. */
enum {
	H_DELETE = 1 << 0,      /* its name was unlinked */
	H_MOVED_FROM = 1 << 1,  /* its name was renamed away */
	H_MOVED_TO = 1 << 2,    /* something was renamed onto its name */
	H_CREATE = 1 << 3,      /* its name was created */
	H_MODIFY = 1 << 4,      /* its inode's contents were written */
	H_ATTRIB = 1 << 5,      /* its inode's times may have changed */
	H_SELF_MOVED = 1 << 6,  /* its inode (or directory) moved elsewhere */
	H_GONE = 1 << 7,        /* a watch it relied on disappeared */
	H_UNMOUNT = 1 << 8,     /* its filesystem was unmounted */
	H_CHECK = 1 << 9,       /* events were lost: compare everything */
};

struct hnode {
	struct hnode *next;
	uint64_t hash;
};

struct htab {
	struct hnode **b;
	size_t nb;   /* power of two, or 0 */
	size_t n;
};

struct link {
	struct link *prev, *next;
};

struct iw {
	struct hnode h;             /* by wd */
	int wd;
	struct link dir_entries;    /* entry.dir_link */
	struct link self_entries;   /* entry.self_link */
};

struct entry {
	struct hnode by_path;
	struct hnode by_name;       /* hashed on (dir_iw->wd, name) while dir_iw */
	char *path;
	char *name;                 /* component watched in dir_iw (own copy) */
	bool pending;
	struct iw *dir_iw;
	struct iw *self_iw;
	struct link dir_link;
	struct link self_link;
	/* recorded stat of the watched inode */
	bool have_stat;
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtim;
	/* between batches */
	uint32_t hints;
	bool dirty;
	struct entry *dirty_next;
};

struct watch {
	int inotify_fd;
	size_t max_paths;
	bool pending_enabled;
	watch_emit_fn emit;
	void *emit_arg;
	struct htab paths;      /* entry.by_path */
	struct htab names;      /* entry.by_name */
	struct htab iws;        /* iw.h */
	size_t npaths;
	struct entry *dirty_head, *dirty_tail;
};

#define container_of(p, type, member) ((type *)((char *)(p) - offsetof(type, member)))

/* ---- small containers ---- */

static void link_init(struct link *l)
{
	l->prev = l->next = l;
}

static bool link_empty(const struct link *l)
{
	return l->next == l;
}

static void link_add(struct link *head, struct link *l)
{
	l->prev = head->prev;
	l->next = head;
	head->prev->next = l;
	head->prev = l;
}

static void link_del(struct link *l)
{
	l->prev->next = l->next;
	l->next->prev = l->prev;
	link_init(l);
}

static uint64_t hash_bytes(uint64_t h, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		h = h * 33 + (unsigned char)s[i];
	return h;
}

static int htab_add(struct htab *t, struct hnode *n, uint64_t hash)
{
	if (t->n >= t->nb) {
		size_t nb = t->nb ? t->nb * 2 : 64;
		struct hnode **b = calloc(nb, sizeof(*b));
		if (b == NULL)
			return -ENOMEM;
		for (size_t i = 0; i < t->nb; i++) {
			struct hnode *x = t->b[i];
			while (x != NULL) {
				struct hnode *next = x->next;
				x->next = b[x->hash & (nb - 1)];
				b[x->hash & (nb - 1)] = x;
				x = next;
			}
		}
		free(t->b);
		t->b = b;
		t->nb = nb;
	}
	n->hash = hash;
	n->next = t->b[hash & (t->nb - 1)];
	t->b[hash & (t->nb - 1)] = n;
	t->n++;
	return 0;
}

static void htab_del(struct htab *t, struct hnode *n)
{
	struct hnode **pp = &t->b[n->hash & (t->nb - 1)];
	while (*pp != NULL && *pp != n)
		pp = &(*pp)->next;
	if (*pp == n) {
		*pp = n->next;
		t->n--;
	}
}

static struct hnode *htab_first(const struct htab *t, uint64_t hash)
{
	return t->nb ? t->b[hash & (t->nb - 1)] : NULL;
}

/* ---- lookups ---- */

static uint64_t path_hash(const char *path)
{
	return hash_bytes(5381, path, strlen(path));
}

static uint64_t name_hash(int wd, const char *name, size_t len)
{
	return hash_bytes(5381 + (uint64_t)(unsigned)wd * 1000003u, name, len);
}

static struct entry *find_path(const struct watch *w, const char *path)
{
	uint64_t h = path_hash(path);
	for (struct hnode *n = htab_first(&w->paths, h); n != NULL; n = n->next) {
		struct entry *e = container_of(n, struct entry, by_path);
		if (n->hash == h && strcmp(e->path, path) == 0)
			return e;
	}
	return NULL;
}

static struct iw *find_iw(const struct watch *w, int wd)
{
	for (struct hnode *n = htab_first(&w->iws, (uint64_t)wd); n != NULL; n = n->next) {
		struct iw *iw = container_of(n, struct iw, h);
		if (iw->wd == wd)
			return iw;
	}
	return NULL;
}

/* ---- inotify descriptors ---- */

/* The iw of `path`'s inode (adding the kernel watch if needed); NULL with
 * *ret_errno set on failure. */
static struct iw *iw_get(struct watch *w, const char *path, int *ret_errno)
{
	int wd = inotify_add_watch(w->inotify_fd, path, WATCH_MASK);
	if (wd < 0) {
		*ret_errno = errno;
		return NULL;
	}
	struct iw *iw = find_iw(w, wd);
	if (iw != NULL)
		return iw;
	iw = calloc(1, sizeof(*iw));
	if (iw == NULL || htab_add(&w->iws, &iw->h, (uint64_t)wd) < 0) {
		free(iw);
		(void)inotify_rm_watch(w->inotify_fd, wd);
		*ret_errno = ENOMEM;
		return NULL;
	}
	iw->wd = wd;
	link_init(&iw->dir_entries);
	link_init(&iw->self_entries);
	return iw;
}

/* Drop an iw nobody uses; `kernel_gone` when the kernel already removed
 * the watch (IN_IGNORED). */
static void iw_put(struct watch *w, struct iw *iw, bool kernel_gone)
{
	if (!link_empty(&iw->dir_entries) || !link_empty(&iw->self_entries))
		return;
	if (!kernel_gone)
		(void)inotify_rm_watch(w->inotify_fd, iw->wd);
	htab_del(&w->iws, &iw->h);
	free(iw);
}

static void entry_detach_dir(struct watch *w, struct entry *e, bool kernel_gone)
{
	struct iw *iw = e->dir_iw;
	if (iw == NULL)
		return;
	htab_del(&w->names, &e->by_name);
	link_del(&e->dir_link);
	e->dir_iw = NULL;
	free(e->name);
	e->name = NULL;
	iw_put(w, iw, kernel_gone);
}

static void entry_detach_self(struct watch *w, struct entry *e, bool kernel_gone)
{
	struct iw *iw = e->self_iw;
	if (iw == NULL)
		return;
	link_del(&e->self_link);
	e->self_iw = NULL;
	iw_put(w, iw, kernel_gone);
}

/* Anchor e on directory `dir` for component name[0..len).  0 or -errno. */
static int entry_attach_dir(struct watch *w, struct entry *e, const char *dir,
	const char *name, size_t len)
{
	int err = 0;
	struct iw *iw = iw_get(w, dir, &err);
	if (iw == NULL)
		return -err;
	if (e->dir_iw == iw && strlen(e->name) == len && memcmp(e->name, name, len) == 0)
		return 0;
	char *copy = strndup(name, len);
	if (copy == NULL) {
		iw_put(w, iw, false);
		return -ENOMEM;
	}
	/* Attach first so that detaching the old anchor cannot free `iw`. */
	struct iw *old = e->dir_iw;
	if (old != NULL) {
		htab_del(&w->names, &e->by_name);
		link_del(&e->dir_link);
		free(e->name);
	}
	e->dir_iw = iw;
	e->name = copy;
	link_add(&iw->dir_entries, &e->dir_link);
	if (htab_add(&w->names, &e->by_name, name_hash(iw->wd, name, len)) < 0) {
		link_del(&e->dir_link);
		e->dir_iw = NULL;
		free(e->name);
		e->name = NULL;
		iw_put(w, iw, false);
		if (old != NULL)
			iw_put(w, old, false);
		return -ENOMEM;
	}
	if (old != NULL && old != iw)
		iw_put(w, old, false);
	return 0;
}

/* Split `path` into parent directory and last component (trailing slashes
 * ignored).  *ret_dir is malloc'd; NULL when the path has no parent ("/").
 * Returns 0 or -ENOMEM. */
static int split_path(const char *path, char **ret_dir, const char **ret_name, size_t *ret_len)
{
	size_t end = strlen(path);
	while (end > 1 && path[end - 1] == '/')
		end--;
	size_t start = end;
	while (start > 0 && path[start - 1] != '/')
		start--;
	*ret_name = path + start;
	*ret_len = end - start;
	*ret_dir = NULL;
	if (*ret_len == 0 || (*ret_len == 1 && path[start] == '/'))
		return 0;   /* "/" */
	size_t dend = start;
	while (dend > 1 && path[dend - 1] == '/')
		dend--;
	if (dend == 0)
		*ret_dir = strdup(".");
	else
		*ret_dir = strndup(path, dend);
	return *ret_dir == NULL ? -ENOMEM : 0;
}

static void record_stat(struct entry *e, const struct stat *st)
{
	e->have_stat = true;
	e->dev = st->st_dev;
	e->ino = st->st_ino;
	e->size = st->st_size;
	e->mtim = st->st_mtim;
}

/*
 * (Re-)arm a watched entry: parent directory watch for its name, then the
 * watch on its own inode, then the stat that later changes are compared
 * with.  Watches come before the stat, so nothing between the two goes
 * unseen.  0 or -errno (ENOENT when the path vanished meanwhile).
 */
static int entry_arm(struct watch *w, struct entry *e)
{
	char *dir;
	const char *name;
	size_t len;
	int r = split_path(e->path, &dir, &name, &len);
	if (r < 0)
		return r;
	if (dir != NULL) {
		r = entry_attach_dir(w, e, dir, name, len);
		free(dir);
		if (r < 0)
			return r;
	}
	int err = 0;
	struct iw *iw = iw_get(w, e->path, &err);
	if (iw == NULL)
		return -err;
	if (iw != e->self_iw) {
		struct iw *old = e->self_iw;
		if (old != NULL)
			link_del(&e->self_link);
		e->self_iw = iw;
		link_add(&iw->self_entries, &e->self_link);
		if (old != NULL)
			iw_put(w, old, false);
	}
	struct stat st;
	if (stat(e->path, &st) < 0)
		return -errno;
	record_stat(e, &st);
	return 0;
}

/*
 * The deepest existing directory among the ancestors of `path`, written
 * into `prefix` (strlen(path) + 2 bytes), and the component that follows
 * it: path[*ret_cstart .. *ret_cend).  False when no ancestor exists.
 */
static bool find_anchor(const char *path, char *prefix, size_t *ret_cstart, size_t *ret_cend)
{
	size_t end = strlen(path);
	while (end > 1 && path[end - 1] == '/')
		end--;
	while (end > 0) {
		size_t cstart = end;
		while (cstart > 0 && path[cstart - 1] != '/')
			cstart--;
		if (cstart == end)
			return false;   /* only "/" is left */
		size_t dend = cstart;
		while (dend > 1 && path[dend - 1] == '/')
			dend--;
		if (dend == 0) {
			strcpy(prefix, ".");
		} else {
			memcpy(prefix, path, dend);
			prefix[dend] = '\0';
		}
		struct stat st;
		if (stat(prefix, &st) == 0 && S_ISDIR(st.st_mode)) {
			*ret_cstart = cstart;
			*ret_cend = end;
			return true;
		}
		if (dend == 0)
			return false;
		end = dend;
	}
	return false;
}

/*
 * Anchor a pending entry on the nearest existing ancestor directory of
 * its path, watching it for the next component.  Returns 1 when the path
 * exists (the caller reports it), 0 when anchored or when nothing can be
 * watched, -ENOMEM.  After each new watch the component is looked up
 * again, so a directory created between the lookup and the watch makes
 * the loop descend instead of being missed.
 */
static int pending_arm(struct watch *w, struct entry *e)
{
	size_t plen = strlen(e->path);
	char *prefix = malloc(plen + 2);
	if (prefix == NULL)
		return -ENOMEM;
	int ret = 0;
	size_t last_cend = SIZE_MAX;
	/* Each turn anchors strictly deeper than the one before, so the
	 * number of components bounds the loop. */
	for (size_t turn = 0; turn <= plen + 1; turn++) {
		struct stat st;
		if (stat(e->path, &st) == 0) {
			ret = 1;
			break;
		}
		size_t cstart, cend;
		if (!find_anchor(e->path, prefix, &cstart, &cend)) {
			entry_detach_dir(w, e, false);
			break;
		}
		if (cend == last_cend)
			break;   /* the component exists but is no directory: its
				  * name events will wake us when that changes */
		last_cend = cend;
		int r = entry_attach_dir(w, e, prefix, e->path + cstart, cend - cstart);
		if (r < 0) {
			if (r == -ENOMEM)
				ret = r;
			break;   /* unwatchable ancestor: nothing more to do */
		}
		memcpy(prefix, e->path, cend);
		prefix[cend] = '\0';
		if (lstat(prefix, &st) < 0)
			break;   /* anchored before the component exists */
	}
	free(prefix);
	return ret;
}

/* ---- entries ---- */

static struct entry *entry_new(struct watch *w, const char *path)
{
	struct entry *e = calloc(1, sizeof(*e));
	if (e == NULL)
		return NULL;
	e->path = strdup(path);
	if (e->path == NULL || htab_add(&w->paths, &e->by_path, path_hash(path)) < 0) {
		free(e->path);
		free(e);
		return NULL;
	}
	link_init(&e->dir_link);
	link_init(&e->self_link);
	w->npaths++;
	return e;
}

static void entry_free(struct watch *w, struct entry *e)
{
	entry_detach_dir(w, e, false);
	entry_detach_self(w, e, false);
	htab_del(&w->paths, &e->by_path);
	w->npaths--;
	if (e->dirty) {
		struct entry **pp = &w->dirty_head;
		struct entry *prev = NULL;
		while (*pp != NULL && *pp != e) {
			prev = *pp;
			pp = &(*pp)->dirty_next;
		}
		if (*pp == e) {
			*pp = e->dirty_next;
			if (w->dirty_tail == e)
				w->dirty_tail = prev;
		}
	}
	free(e->path);
	free(e);
}

static void mark_dirty(struct watch *w, struct entry *e, uint32_t hints)
{
	e->hints |= hints;
	if (e->dirty)
		return;
	e->dirty = true;
	e->dirty_next = NULL;
	if (w->dirty_tail != NULL)
		w->dirty_tail->dirty_next = e;
	else
		w->dirty_head = e;
	w->dirty_tail = e;
}

/* ---- public: table ---- */

struct watch *watch_new(size_t max_paths, bool pending, watch_emit_fn emit, void *arg)
{
	struct watch *w = calloc(1, sizeof(*w));
	if (w == NULL)
		return NULL;
	w->inotify_fd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
	if (w->inotify_fd < 0) {
		int err = errno;
		free(w);
		errno = err;
		return NULL;
	}
	w->max_paths = max_paths;
	w->pending_enabled = pending;
	w->emit = emit;
	w->emit_arg = arg;
	return w;
}

void watch_free(struct watch *w)
{
	if (w == NULL)
		return;
	for (size_t i = 0; i < w->paths.nb; i++) {
		while (w->paths.b[i] != NULL)
			entry_free(w, container_of(w->paths.b[i], struct entry, by_path));
	}
	for (size_t i = 0; i < w->iws.nb; i++) {
		while (w->iws.b[i] != NULL) {
			struct iw *iw = container_of(w->iws.b[i], struct iw, h);
			htab_del(&w->iws, &iw->h);
			free(iw);
		}
	}
	free(w->paths.b);
	free(w->names.b);
	free(w->iws.b);
	if (w->inotify_fd >= 0)
		close(w->inotify_fd);
	free(w);
}

int watch_fd(const struct watch *w)
{
	return w->inotify_fd;
}

/* Keep (or make) `path` pending after a failed WATCH; the FAIL response
 * already went out, so failures here only lose the notification. */
static void keep_pending(struct watch *w, struct entry *e, const char *path)
{
	if (e == NULL) {
		e = entry_new(w, path);
		if (e == NULL)
			return;
	}
	e->pending = true;
	e->have_stat = false;
	entry_detach_self(w, e, false);
	int r = pending_arm(w, e);
	if (r == 1) {
		/* Appeared already: let the next batch report it. */
		mark_dirty(w, e, H_CHECK);
	} else if (r < 0) {
		entry_free(w, e);
	}
}

enum watch_result watch_add(struct watch *w, const char *path, char *msg, size_t msglen)
{
	struct entry *e = find_path(w, path);
	if (e != NULL && !e->pending) {
		snprintf(msg, msglen, "already watching");
		return WATCH_ALREADY;
	}
	if (e == NULL && w->npaths >= w->max_paths) {
		snprintf(msg, msglen, "too many watches (limit %zu)", w->max_paths);
		return WATCH_FAIL;
	}
	struct stat st;
	if (stat(path, &st) < 0) {
		int err = errno;
		snprintf(msg, msglen, "stat(2) failed with errno %d: %s", err, strerror(err));
		if (w->pending_enabled && (err == ENOENT || err == ENOTDIR))
			keep_pending(w, e, path);
		else if (e != NULL)
			entry_free(w, e);
		return WATCH_FAIL;
	}
	if (e == NULL) {
		e = entry_new(w, path);
		if (e == NULL) {
			snprintf(msg, msglen, "port_associate(3c) failed with errno %d: %s",
				ENOMEM, strerror(ENOMEM));
			return WATCH_FAIL;
		}
	} else {
		/* A pending path that exists now: drop its ancestor anchor. */
		entry_detach_dir(w, e, false);
		e->pending = false;
	}
	int r = entry_arm(w, e);
	if (r < 0) {
		snprintf(msg, msglen, "port_associate(3c) failed with errno %d: %s", -r, strerror(-r));
		if (w->pending_enabled && (r == -ENOENT || r == -ENOTDIR))
			keep_pending(w, e, path);
		else
			entry_free(w, e);
		return WATCH_FAIL;
	}
	snprintf(msg, msglen, "port_associate(3c) started watching path");
	return WATCH_OK;
}

enum watch_result watch_remove(struct watch *w, const char *path, char *msg, size_t msglen)
{
	struct entry *e = find_path(w, path);
	if (e == NULL) {
		snprintf(msg, msglen, "not watching '%s', cannot unwatch", path);
		return WATCH_FAIL;
	}
	bool pending = e->pending;
	entry_free(w, e);
	if (pending)
		snprintf(msg, msglen, "no longer waiting for '%s'", path);
	else
		snprintf(msg, msglen, "no longer watching '%s'", path);
	return WATCH_OK;
}

long watch_list(const struct watch *w, bool pending, const char ***ret_paths)
{
	const char **v = malloc((w->npaths + 1) * sizeof(*v));
	if (v == NULL)
		return -ENOMEM;
	size_t n = 0;
	for (size_t i = 0; i < w->paths.nb; i++) {
		for (struct hnode *h = w->paths.b[i]; h != NULL; h = h->next) {
			struct entry *e = container_of(h, struct entry, by_path);
			if (e->pending == pending)
				v[n++] = e->path;
		}
	}
	*ret_paths = v;
	return (long)n;
}

/* ---- events ---- */

static void on_named_event(struct watch *w, struct iw *iw, const struct inotify_event *ev)
{
	size_t len = strnlen(ev->name, ev->len);
	/* A watched directory's own listing changed: its mtime may have. */
	if ((ev->mask & NAME_EVENTS) != 0) {
		for (struct link *l = iw->self_entries.next; l != &iw->self_entries; l = l->next)
			mark_dirty(w, container_of(l, struct entry, self_link), H_ATTRIB);
	}
	uint32_t hints = 0;
	if (ev->mask & IN_DELETE)
		hints |= H_DELETE;
	if (ev->mask & IN_MOVED_FROM)
		hints |= H_MOVED_FROM;
	if (ev->mask & IN_MOVED_TO)
		hints |= H_MOVED_TO;
	if (ev->mask & IN_CREATE)
		hints |= H_CREATE;
	if (hints == 0)
		return;   /* contents of a child: its own watch reports them */
	uint64_t h = name_hash(iw->wd, ev->name, len);
	for (struct hnode *n = htab_first(&w->names, h); n != NULL; n = n->next) {
		struct entry *e = container_of(n, struct entry, by_name);
		if (n->hash == h && e->dir_iw == iw && strlen(e->name) == len &&
		    memcmp(e->name, ev->name, len) == 0)
			mark_dirty(w, e, hints);
	}
}

static void on_self_event(struct watch *w, struct iw *iw, uint32_t mask)
{
	uint32_t self = 0, dir = 0;
	if (mask & IN_MODIFY)
		self |= H_MODIFY;
	if (mask & (IN_ATTRIB | IN_CLOSE_WRITE))
		self |= H_ATTRIB;
	if (mask & IN_DELETE_SELF)
		self |= H_GONE, dir |= H_GONE;
	if (mask & IN_MOVE_SELF)
		self |= H_SELF_MOVED, dir |= H_SELF_MOVED;
	if (mask & IN_UNMOUNT)
		self |= H_UNMOUNT, dir |= H_UNMOUNT;
	if (mask & IN_IGNORED)
		self |= H_GONE, dir |= H_GONE;
	if (self != 0) {
		for (struct link *l = iw->self_entries.next; l != &iw->self_entries; l = l->next)
			mark_dirty(w, container_of(l, struct entry, self_link), self);
	}
	if (dir != 0) {
		for (struct link *l = iw->dir_entries.next; l != &iw->dir_entries; l = l->next)
			mark_dirty(w, container_of(l, struct entry, dir_link), dir);
	}
	if (mask & IN_IGNORED) {
		/* The kernel dropped the watch: forget it everywhere. */
		while (!link_empty(&iw->self_entries)) {
			struct entry *e = container_of(iw->self_entries.next, struct entry, self_link);
			link_del(&e->self_link);
			e->self_iw = NULL;
		}
		while (!link_empty(&iw->dir_entries)) {
			struct entry *e = container_of(iw->dir_entries.next, struct entry, dir_link);
			htab_del(&w->names, &e->by_name);
			link_del(&e->dir_link);
			e->dir_iw = NULL;
			free(e->name);
			e->name = NULL;
		}
		iw_put(w, iw, true);
	}
}

/* Decide what happened to a watched entry since it was last judged, report
 * it, and re-arm or drop it. */
static void entry_judge(struct watch *w, struct entry *e, uint32_t hints)
{
	struct stat st;
	bool exists = stat(e->path, &st) == 0;
	bool same = exists && e->have_stat && st.st_dev == e->dev && st.st_ino == e->ino;
	uint32_t rev = 0;
	if (hints & H_DELETE)
		rev |= FILE_DELETE;
	if (hints & H_MOVED_FROM)
		rev |= FILE_RENAME_FROM;
	if (hints & H_MOVED_TO)
		rev |= FILE_RENAME_TO;
	if (hints & H_UNMOUNT)
		rev |= UNMOUNTED;
	if (!exists && (rev & (FILE_DELETE | FILE_RENAME_FROM | UNMOUNTED)) == 0)
		rev |= (hints & H_SELF_MOVED) ? FILE_RENAME_FROM : FILE_DELETE;
	if (exists && !same && (rev & FILE_EXCEPTION) == 0)
		rev |= FILE_RENAME_TO;
	if (same) {
		if (st.st_size < e->size)
			rev |= FILE_TRUNC | FILE_MODIFIED;
		if ((hints & H_MODIFY) || st.st_size != e->size ||
		    st.st_mtim.tv_sec != e->mtim.tv_sec || st.st_mtim.tv_nsec != e->mtim.tv_nsec)
			rev |= FILE_MODIFIED;
	}
	bool final = !exists || (rev & (FILE_DELETE | FILE_RENAME_FROM | UNMOUNTED | MOUNTEDOVER));
	if (!final) {
		/* Follow the name to its (possibly new) inode.  A failure means
		 * it cannot be followed any more, so this is the last report. */
		if (entry_arm(w, e) < 0) {
			final = true;
			if ((rev & FILE_EXCEPTION) == 0)
				rev |= FILE_DELETE;
		}
	}
	if (rev != 0)
		w->emit(w->emit_arg, WATCH_NOTE_EVENT, e->path, rev, final);
	if (final)
		entry_free(w, e);
}

static void pending_judge(struct watch *w, struct entry *e)
{
	int r = pending_arm(w, e);
	if (r == 1) {
		w->emit(w->emit_arg, WATCH_NOTE_EXISTS, e->path, 0, false);
		entry_free(w, e);
	}
}

static void judge_dirty(struct watch *w)
{
	while (w->dirty_head != NULL) {
		struct entry *e = w->dirty_head;
		w->dirty_head = e->dirty_next;
		if (w->dirty_head == NULL)
			w->dirty_tail = NULL;
		uint32_t hints = e->hints;
		e->dirty = false;
		e->hints = 0;
		if (e->pending)
			pending_judge(w, e);
		else
			entry_judge(w, e, hints);
	}
}

static void on_overflow(struct watch *w)
{
	w->emit(w->emit_arg, WATCH_NOTE_OVERFLOW, NULL, 0, false);
	for (size_t i = 0; i < w->paths.nb; i++) {
		for (struct hnode *h = w->paths.b[i]; h != NULL; h = h->next)
			mark_dirty(w, container_of(h, struct entry, by_path), H_CHECK);
	}
}

int watch_process(struct watch *w, size_t max_bytes)
{
	/* Aligned for struct inotify_event; large enough for any one event. */
	char buf[16384] __attribute__((aligned(__alignof__(struct inotify_event))));
	size_t total = 0;
	int ret = 0;
	while (total < max_bytes) {
		ssize_t n = read(w->inotify_fd, buf, sizeof(buf));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				ret = -errno;
			break;
		}
		if (n == 0)
			break;
		total += (size_t)n;
		for (char *p = buf; p < buf + n;) {
			const struct inotify_event *ev = (const struct inotify_event *)p;
			p += sizeof(*ev) + ev->len;
			if (ev->mask & IN_Q_OVERFLOW) {
				on_overflow(w);
				continue;
			}
			struct iw *iw = find_iw(w, ev->wd);
			if (iw == NULL)
				continue;   /* a watch removed meanwhile */
			if (ev->len > 0)
				on_named_event(w, iw, ev);
			else
				on_self_event(w, iw, ev->mask);
		}
	}
	judge_dirty(w);
	return ret;
}
