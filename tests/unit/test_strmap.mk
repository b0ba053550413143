test_strmap_SRCS :=
