test_queue_SRCS := supervisor/queue.c
