test_counters_SRCS := supervisor/counters.c
