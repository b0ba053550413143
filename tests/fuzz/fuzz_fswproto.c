/*
 * fuzz_fswproto.c - fswatcher's stdin command protocol: the input is cut
 * into pieces exactly as fswatcher's read loop does (proto_piece_len, the
 * rest at EOF), each piece parsed (proto_parse) and answered with the
 * message fswatcher would write (JSON and the human-readable form).
 */
#include <string.h>

#include "buf.h"
#include "fuzz_common.h"
#include "proto.h"

static char piece[PROTO_MAX_CMD_LEN + 1];

static void run_piece(const char *p, size_t len, struct buf *out, bool json)
{
	struct proto_cmd cmd;
	struct proto_time t = { 12, 345 };
	memcpy(piece, p, len);
	piece[len] = '\0';
	proto_parse(piece, &cmd);
	switch (cmd.kind) {
	case PROTO_CMD_ERROR:
		(void)proto_fmt_error(out, json, t, cmd.key, cmd.code, cmd.message);
		break;
	case PROTO_CMD_WATCH:
	case PROTO_CMD_UNWATCH:
		(void)proto_fmt_response(out, json, t, cmd.key, cmd.kind == PROTO_CMD_WATCH, cmd.path, cmd.path);
		(void)proto_fmt_event(out, json, t, cmd.path, (uint32_t)cmd.key, cmd.key & 1);
		(void)proto_fmt_exists(out, json, t, cmd.path);
		break;
	case PROTO_CMD_STATUS: {
		const char *files[2] = { "/etc/zones/index", piece };
		proto_status_sort(files, 2);
		(void)proto_fmt_status(out, json, t, cmd.key, files, 2, 1, files, 1);
		break;
	}
	}
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_log_init();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *in = (const char *)data;
	struct buf out = BUF_INIT;
	bool json = size == 0 || (data[0] & 1) == 0;
	size_t pos = 0, len;
	while ((len = proto_piece_len(in + pos, size - pos)) > 0) {
		if (len > PROTO_MAX_CMD_LEN || len > size - pos)
			__builtin_trap();
		run_piece(in + pos, len, &out, json);
		pos += len;
		buf_done(&out);
	}
	if (pos < size)
		run_piece(in + pos, size - pos, &out, json);
	buf_done(&out);
	return 0;
}
