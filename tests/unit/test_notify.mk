test_notify_SRCS := supervisor/notify.c
