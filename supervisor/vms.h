/*
 * vms.h - how a VM entry (struct vm_entry, supervisor.h) holds its
 * object.
 *
 * A VM object is kept frozen (jfreeze.h) next to its compact JSON text:
 * a jansson tree per VM was most of the supervisor's memory.  Code that
 * needs the tree (a diff against a new build, a log record) thaws a
 * private copy with vms_object().
 */
#ifndef VMINFOD_VMS_H
#define VMINFOD_VMS_H

#include <jansson.h>

struct supervisor;
struct vm_entry;
struct jfreeze;
struct vm_raw;

/* The VM object of `e` as a new tree (new reference; the caller may
 * change it), or NULL on ENOMEM. */
json_t *vms_object(const struct vm_entry *e);
/* The frozen VM object of `e` (borrowed). */
const struct jfreeze *vms_frozen(const struct vm_entry *e);
/* For a diff of e's object against `vm`, a new build of it: e's object
 * as a tree whose unchanged top-level members are vm's own nodes (so
 * only what changed is thawed; change neither tree afterwards), and vm
 * frozen in *ret_frozen, for vms_replace_frozen (or jfreeze_unref).
 * NULL on ENOMEM (*ret_frozen then NULL too). */
json_t *vms_old_object(const struct vm_entry *e, json_t *vm, struct jfreeze **ret_frozen);
/* vms_replace() with `vm` already frozen: takes vm and frozen. */
int vms_replace_frozen(struct vm_entry *e, json_t *vm, struct jfreeze *frozen,
	struct vm_raw *raw);

#endif
