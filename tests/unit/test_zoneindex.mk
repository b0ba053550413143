test_zoneindex_SRCS := supervisor/zoneindex.c
