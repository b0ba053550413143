test_fe_ringreader_SRCS := frontend/ringreader.c frontend/vmset.c frontend/rcbuf.c
