/*
 * privdrop.c - switch to an unprivileged user for good.  See privdrop.h.
 *
 * Order matters: the capability bounding set and ambient set are cleared
 * while we still hold CAP_SETPCAP; groups before gid before uid (each
 * later step removes the right to do the earlier ones); then we check
 * that it worked rather than trusting the return codes alone.
 */
#include "privdrop.h"

#include <errno.h>
#include <grp.h>
#include <linux/capability.h>
#include <pwd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

/* Every capability bit the kernel may know (it ignores EINVAL past the
 * last one it has). */
#define CAP_BITS_MAX 64

static int fail(char *err, size_t errlen, int r, const char *what)
{
	snprintf(err, errlen, "%s: %s", what, strerror(-r));
	return r;
}

/* Permitted | effective | inheritable capabilities, as bits. */
static int caps_left(uint64_t *ret)
{
	struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
	struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
	memset(data, 0, sizeof(data));
	if (syscall(SYS_capget, &hdr, data) < 0)
		return -errno;
	uint64_t bits = 0;
	for (int i = 0; i < 2; i++)
		bits |= ((uint64_t)(data[i].permitted | data[i].effective | data[i].inheritable)) << (32 * i);
	*ret = bits;
	return 0;
}

static int lookup(const char *user, uid_t *ret_uid, gid_t *ret_gid, char *err, size_t errlen)
{
	long bufsz = sysconf(_SC_GETPW_R_SIZE_MAX);
	if (bufsz < 1024)
		bufsz = 16384;
	char *buf = malloc((size_t)bufsz);
	if (!buf)
		return fail(err, errlen, -ENOMEM, "user lookup");
	struct passwd pw, *res = NULL;
	int e = getpwnam_r(user, &pw, buf, (size_t)bufsz, &res);
	if (!res) {
		/* A number names a uid even without a passwd entry. */
		char *end;
		errno = 0;
		unsigned long v = strtoul(user, &end, 10);
		if (e == 0 && user[0] && !*end && errno == 0 && v < (uid_t)-1) {
			e = getpwuid_r((uid_t)v, &pw, buf, (size_t)bufsz, &res);
			if (!res) {
				*ret_uid = (uid_t)v;
				*ret_gid = (gid_t)v;
				free(buf);
				return 0;
			}
		}
	}
	if (!res) {
		free(buf);
		if (e)
			return fail(err, errlen, -e, "user lookup");
		snprintf(err, errlen, "no such user: %s", user);
		return -ENOENT;
	}
	*ret_uid = pw.pw_uid;
	*ret_gid = pw.pw_gid;
	free(buf);
	return 0;
}

const char *privdrop_enter_dir(const char *path)
{
	const char *slash = strrchr(path, '/');
	if (!slash)
		return path;
	size_t n = slash == path ? 1 : (size_t)(slash - path);
	char *dir = strndup(path, n);
	if (!dir)
		return NULL;
	int r = chdir(dir);
	free(dir);
	return r < 0 ? NULL : slash + 1;
}

int privdrop_to(const char *user, char *err, size_t errlen)
{
	uid_t uid = 0;
	gid_t gid = 0;
	int r = lookup(user, &uid, &gid, err, errlen);
	if (r < 0)
		return r;
	if (geteuid() != 0) {
		if (geteuid() == uid && getuid() == uid)
			return 0;
		snprintf(err, errlen, "cannot become %s (uid %u) without being root", user, (unsigned)uid);
		return -EPERM;
	}
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
		return fail(err, errlen, -errno, "clear ambient capabilities");
	for (int cap = 0; cap < CAP_BITS_MAX; cap++) {
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0) {
			/* EINVAL: past the last capability the kernel knows.
			 * EPERM: no CAP_SETPCAP (a service manager took it);
			 * then the bounding set only limits exec of file
			 * capabilities, which no_new_privs below forbids. */
			if (errno == EINVAL || errno == EPERM)
				break;
			return fail(err, errlen, -errno, "drop the capability bounding set");
		}
	}
	if (setgroups(0, NULL) < 0)
		return fail(err, errlen, -errno, "setgroups");
	if (setresgid(gid, gid, gid) < 0)
		return fail(err, errlen, -errno, "setresgid");
	if (setresuid(uid, uid, uid) < 0)
		return fail(err, errlen, -errno, "setresuid");
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return fail(err, errlen, -errno, "set no_new_privs");

	/* Trust but verify. */
	if (uid != 0 && (setresuid(0, 0, 0) == 0 || setresgid(0, 0, 0) == 0)) {
		snprintf(err, errlen, "root could be regained after switching to %s", user);
		return -EPERM;
	}
	uint64_t caps = 0;
	r = caps_left(&caps);
	if (r < 0)
		return fail(err, errlen, r, "capget");
	if (uid != 0 && caps != 0) {
		snprintf(err, errlen, "capabilities left after switching to %s: %#llx", user,
		         (unsigned long long)caps);
		return -EPERM;
	}
	return 0;
}
