/*
 * timeutil.h - clocks and the original's time strings.
 *
 * Durations and timestamps for queues and timeouts are CLOCK_MONOTONIC
 * nanoseconds (uint64_t, `_ns`); wall-clock time is only used for dates
 * (milliseconds since the epoch, `_ms`).
 *
 *   hrtime string   "<secs>.<9-digit nanos>"          12.000000005
 *   pretty delta    "<hrtime string>s (<relative>)"   0.082484118s (82.48ms)
 *   ISO date        "YYYY-MM-DDTHH:MM:SS.mmmZ"        2019-06-19T04:34:48.243Z
 */
#ifndef VMINFOD_TIMEUTIL_H
#define VMINFOD_TIMEUTIL_H

#include <stdint.h>

#define TU_NS_PER_SEC 1000000000ULL
#define TU_NS_PER_MS 1000000ULL

/* CLOCK_MONOTONIC now, in nanoseconds. */
uint64_t tu_mono_ns(void);
/* CLOCK_REALTIME now, in milliseconds since the epoch. */
int64_t tu_wall_ms(void);
/* CLOCK_REALTIME now, in nanoseconds since the epoch. */
int64_t tu_wall_ns(void);

/* "<secs>.<nanos>" of `ns` into out (at least 32 bytes); returns length. */
int tu_hrtime_str(uint64_t ns, char *out);
/* The pretty delta of `ns` (spec/daemon.md §10.2) into out (at least 80
 * bytes); returns length. */
int tu_pretty_delta(uint64_t ns, char *out);
/* Only the relative part ("82.48ms") of the pretty delta. */
int tu_pretty_relative(uint64_t ns, char *out);
/* ISO-8601 UTC date with milliseconds of `ms` since the epoch into out (at
 * least 32 bytes); returns length, or -1 outside years 0..9999. */
int tu_iso_date(int64_t ms, char *out);

#endif
