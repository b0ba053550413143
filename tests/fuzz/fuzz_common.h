/*
 * fuzz_common.h - what every fuzz harness of tests/fuzz/ shares.
 *
 * A harness defines LLVMFuzzerTestOneInput() (libFuzzer's entry point);
 * scripts/fuzz links it with -fsanitize=fuzzer, or with replay.c for a
 * plain program that runs saved inputs (seeds and regressions) once each.
 *
 * Logging goes to /dev/null at trace level, so the code that formats log
 * records from input-derived strings is exercised too.
 */
#ifndef VMINFOD_FUZZ_COMMON_H
#define VMINFOD_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static inline void fuzz_log_init(void)
{
	if (log_init("fuzz", "/dev/null", LOG_TRACE) < 0)
		abort();
}

#endif
