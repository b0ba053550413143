test_fe_reqpath_SRCS := frontend/reqpath.c
