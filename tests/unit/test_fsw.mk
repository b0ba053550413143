test_fsw_SRCS := supervisor/fsw.c supervisor/child.c
