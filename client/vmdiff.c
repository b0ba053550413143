/*
 * vmdiff.c - the daemon's object diff (supervisor/diff.c), compiled into
 * libvminfod as well.
 *
 * The client needs the very same algorithm twice: watch.c matches
 * patterns against events as the original client does (a diff that may
 * only hold "added" entries), and mirror.c lists the changes of a
 * synthetic modify event exactly as the daemon would have.  One source,
 * two builds, so the two can never drift apart.
 */
#include "../supervisor/diff.c"
