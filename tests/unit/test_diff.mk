test_diff_SRCS := supervisor/diff.c
