/*
 * log.h - bunyan-format JSON log lines (DESIGN.md §9).
 *
 *   {"name":"vminfod","hostname":"h","pid":1,<child fields>,"level":20,
 *    <fields>,"msg":"text","time":"2019-06-19T04:34:48.243Z","v":0}
 *
 * One configuration per process (the only mutable state at file scope
 * besides a program's context struct): a name, an output (stderr or a
 * file reopened on SIGHUP) and a minimum level.  Each record is written
 * with one write(2) so concurrent writers never interleave lines.
 * shared/ code never logs above debug; decision points log.
 */
#ifndef VMINFOD_LOG_H
#define VMINFOD_LOG_H

#include <jansson.h>

enum log_level {
	LOG_TRACE = 10,
	LOG_DEBUG = 20,
	LOG_INFO = 30,
	LOG_WARN = 40,
	LOG_ERROR = 50,
	LOG_FATAL = 60,
};

/* Configure logging: bunyan `name`, output path (NULL: stderr) and the
 * minimum level written.  0 or a negative errno (file cannot be opened). */
int log_init(const char *name, const char *path, int level);
/* Reopen the log file (SIGHUP); a no-op for stderr.  0 or -errno. */
int log_reopen(void);
/* Close the log file. */
void log_done(void);
/* Parse "trace".."fatal" or a number; -1 if unknown. */
int log_level_parse(const char *s);
/* True when records of `level` are written. */
int log_enabled(int level);

/* Write one record.  `child` (borrowed, may be NULL): object whose members
 * go before "level" (a child logger's fields, e.g. {"task":…}); `fields`
 * (stolen, may be NULL): object whose members go after it.  Members with
 * an undefined value are left out. */
void log_emit(int level, json_t *child, json_t *fields, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* The levels that are usually off do not even build their fields (often
 * a json_pack per call on a busy path): pass the fields as an expression
 * made for the call, never an object that must be freed regardless. */
#define log_trace(fields, ...) \
	(log_enabled(LOG_TRACE) ? log_emit(LOG_TRACE, NULL, (fields), __VA_ARGS__) : (void)0)
#define log_debug(fields, ...) \
	(log_enabled(LOG_DEBUG) ? log_emit(LOG_DEBUG, NULL, (fields), __VA_ARGS__) : (void)0)
#define log_info(fields, ...) \
	(log_enabled(LOG_INFO) ? log_emit(LOG_INFO, NULL, (fields), __VA_ARGS__) : (void)0)
#define log_warn(fields, ...) log_emit(LOG_WARN, NULL, (fields), __VA_ARGS__)
#define log_error(fields, ...) log_emit(LOG_ERROR, NULL, (fields), __VA_ARGS__)
#define log_fatal(fields, ...) log_emit(LOG_FATAL, NULL, (fields), __VA_ARGS__)

/* A bunyan `err` object {"message","name","stack"[,"code"]}; `code` may be
 * NULL.  New reference. */
json_t *log_err_obj(const char *message, const char *code);
/* {"err": log_err_obj(message, code)} as a new fields object. */
json_t *log_err_fields(const char *message, const char *code);

#endif
