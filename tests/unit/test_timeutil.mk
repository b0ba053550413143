test_timeutil_SRCS :=
