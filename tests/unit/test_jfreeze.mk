test_jfreeze_SRCS :=
