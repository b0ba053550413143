test_log_SRCS :=
