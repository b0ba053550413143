test_fswproto_SRCS := fswatcher/proto.c
