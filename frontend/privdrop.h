/*
 * privdrop.h - the frontend gives up every privilege it was started with.
 *
 * The frontend is the process that parses what strangers send, so once it
 * holds what it needs (the inherited listening sockets, the doorbell, the
 * ring file mapped read-only, its log file) it switches for good to an
 * unprivileged user: no supplementary groups, real/effective/saved ids of
 * that user, an empty capability bounding set and no_new_privs.  After
 * that it can still serve everything (it only reads the ring, which is
 * 0644 in a searchable directory) but can write nothing of ours: the ring
 * stays the supervisor's alone.
 */
#ifndef VMINFOD_FE_PRIVDROP_H
#define VMINFOD_FE_PRIVDROP_H

#include <stddef.h>

/* Make the directory of `path` the working directory and return the
 * file name part (a pointer into path; path itself when it has no '/').
 * Called before privdrop_to(): relative lookups from there need only
 * that directory to be searchable, not its ancestors, so the ring can
 * still be re-opened after a switch to a user who cannot walk the whole
 * path (a test's private temporary directory, say).  NULL with errno set
 * when chdir fails. */
const char *privdrop_enter_dir(const char *path);
/* Become `user` (a name, or a numeric uid).  When we are not root and
 * already are that user, nothing changes (0).  0, or -errno with the
 * reason in err: -ENOENT unknown user, -EPERM not root, -errno of the
 * failing call; and -EPERM if, after the switch, root could be regained
 * or a capability is left (a broken invariant: the caller must exit). */
int privdrop_to(const char *user, char *err, size_t errlen);

#endif
