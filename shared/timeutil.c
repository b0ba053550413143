/*
 * timeutil.c - clocks and the original's time strings.  See timeutil.h;
 * spec/daemon.md §10.1–10.2 is the contract for the formats.
 */
#include "timeutil.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "json.h"

uint64_t tu_mono_ns(void)
{
	struct timespec ts;
	/* CLOCK_MONOTONIC cannot fail with a valid pointer. */
	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * TU_NS_PER_SEC + (uint64_t)ts.tv_nsec;
}

int64_t tu_wall_ns(void)
{
	struct timespec ts;
	(void)clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * (int64_t)TU_NS_PER_SEC + ts.tv_nsec;
}

int64_t tu_wall_ms(void)
{
	return tu_wall_ns() / (int64_t)TU_NS_PER_MS;
}

int tu_hrtime_str(uint64_t ns, char *out)
{
	return sprintf(out, "%llu.%09llu", (unsigned long long)(ns / TU_NS_PER_SEC),
	               (unsigned long long)(ns % TU_NS_PER_SEC));
}

int tu_pretty_relative(uint64_t ns, char *out)
{
	/* The order of operations matters: it is the original's, in
	 * doubles, and minutes/hours/days ignore the nanoseconds. */
	double s = (double)(ns / TU_NS_PER_SEC);
	double nsec = (double)(ns % TU_NS_PER_SEC);
	double minutes = s / 60;
	double hours = minutes / 60;
	double days = hours / 24;
	double ms = (nsec / 1000) / 1000;
	double us = nsec / 1000;
	double secs = s + ms / 1000;
	const double vals[] = { days, hours, minutes, secs, ms, us, nsec };
	static const char *const units[] = { "d", "h", "m", "s", "ms", "us", "ns" };
	for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
		if (floor(vals[i]) > 0) {
			char num[64];
			js_tofixed2(vals[i], num, sizeof(num));
			/* remove trailing zeros, then a trailing dot */
			size_t len = strlen(num);
			if (strchr(num, '.')) {
				while (len && num[len - 1] == '0')
					num[--len] = '\0';
				if (len && num[len - 1] == '.')
					num[--len] = '\0';
			}
			return sprintf(out, "%s%s", num, units[i]);
		}
	}
	return sprintf(out, "0ns");
}

int tu_pretty_delta(uint64_t ns, char *out)
{
	char rel[48];
	int n = tu_hrtime_str(ns, out);
	tu_pretty_relative(ns, rel);
	return n + sprintf(out + n, "s (%s)", rel);
}

int tu_iso_date(int64_t ms, char *out)
{
	int64_t secs = ms / 1000;
	int64_t msec = ms % 1000;
	if (msec < 0) {
		msec += 1000;
		secs--;
	}
	time_t t = (time_t)secs;
	struct tm tm;
	if (!gmtime_r(&t, &tm) || tm.tm_year + 1900 < 0 || tm.tm_year + 1900 > 9999)
		return -1;
	return sprintf(out, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
	               tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
	               (int)msec);
}
