test_vmxml_SRCS := supervisor/vmxml.c
