test_diff_SRCS :=
