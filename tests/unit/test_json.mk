test_json_SRCS :=
