test_vmload_SRCS := supervisor/vmload.c supervisor/vmxml.c supervisor/zoneindex.c supervisor/oneshot.c
