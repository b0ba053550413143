test_statusfmt_SRCS :=
