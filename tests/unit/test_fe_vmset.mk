test_fe_vmset_SRCS := frontend/vmset.c frontend/rcbuf.c
