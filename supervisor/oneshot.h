/*
 * oneshot.h - the one-shot entry points of vminfod (no daemon, no
 * children): `vminfod --root DIR --dump` and `vminfod --load-xml FILE`.
 * Both use the same loaders as the daemon, so their output is what the
 * daemon would publish.
 */
#ifndef VMINFOD_ONESHOT_H
#define VMINFOD_ONESHOT_H

/* Load every zone of the host under `root` and print the JSON array of
 * all VM objects (the bytes of GET /vms: compact, index order) and a
 * newline to stdout.  Zones that cannot be loaded or built are logged and
 * left out.  Returns the process exit code: 0, or 1 when the root or its
 * zone index cannot be read or stdout cannot be written. */
int oneshot_dump(const char *root);

/* Print the XML-stage object of zone XML file `path` (compact JSON and a
 * newline).  On a read or parse error print one line to stderr,
 * "vminfod: cannot load <path>: <code>: <message>", and return 1; else 0. */
int oneshot_load_xml(const char *path);

#endif
