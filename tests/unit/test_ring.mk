test_ring_SRCS :=
