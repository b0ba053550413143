"""The test harness itself: stream framing, NDJSON tailing, wait_for.

These run against tiny in-process servers, so a harness bug shows up
here rather than as a mysterious daemon test failure."""

import json
import socket
import threading

import pytest

import helpers


class OneShotServer:
    """Accepts one connection on 127.0.0.1, reads the request head, then
    sends the given byte pieces (one send each) and optionally closes."""

    def __init__(self, pieces, close=True):
        self.pieces = pieces
        self.close = close
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.release = threading.Event()
        self.request = b""
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        """Serve the single connection."""
        conn, _ = self.sock.accept()
        with conn:
            while b"\r\n\r\n" not in self.request:
                data = conn.recv(4096)
                if not data:
                    return
                self.request += data
            for piece in self.pieces:
                conn.sendall(piece)
            if not self.close:
                self.release.wait(10)

    def stop(self):
        """Let the server thread finish and close the listener."""
        self.release.set()
        self.thread.join(10)
        self.sock.close()


def chunk(data):
    """One HTTP chunk."""
    return b"%x\r\n%s\r\n" % (len(data), data)


HEAD_CHUNKED = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n")


def test_chunked_stream_split_anywhere():
    body = chunk(b'{"type":"ready"}\n{"a"') + chunk(b':1}\n') + \
        chunk(b'{"b":2}\r\n') + b"0\r\n\r\n"
    raw = HEAD_CHUNKED + body
    # Send byte by byte: every parser state sees a split.
    srv = OneShotServer([raw[i:i + 1] for i in range(len(raw))])
    try:
        with helpers.EventStream(srv.port, "/events",
                                 headers={"User-Agent": "t"}) as s:
            assert s.status == 200
            assert s.headers["content-type"] == "application/json"
            assert s.next_event(5) == {"type": "ready"}
            assert s.next_event(5) == {"a": 1}
            assert s.next_line(5) == '{"b":2}'
            assert s.next_line(5) is None
        assert srv.request.startswith(b"GET /events HTTP/1.1\r\n")
        assert b"User-Agent: t\r\n" in srv.request
    finally:
        srv.stop()


def test_close_delimited_stream():
    srv = OneShotServer([b"HTTP/1.0 200 OK\r\n\r\nline1\nline2\npartial"])
    try:
        s = helpers.EventStream(srv.port, "/events")
        assert [s.next_line(5), s.next_line(5), s.next_line(5),
                s.next_line(5)] == ["line1", "line2", "partial", None]
        s.close()
    finally:
        srv.stop()


def test_next_line_times_out_on_a_silent_stream():
    srv = OneShotServer([HEAD_CHUNKED + chunk(b"one\n")], close=False)
    try:
        with helpers.EventStream(srv.port, "/events") as s:
            assert s.next_line(5) == "one"
            with pytest.raises(TimeoutError):
                s.next_line(0.2)
    finally:
        srv.stop()


def test_wait_event_skips_unmatched():
    lines = b"".join(chunk(json.dumps({"n": i}).encode() + b"\n")
                     for i in range(5))
    srv = OneShotServer([HEAD_CHUNKED + lines])
    try:
        with helpers.EventStream(srv.port, "/events") as s:
            ev = s.wait_event(lambda e: e["n"] == 3, 5, "n=3")
            assert ev == {"n": 3}
            assert [e["n"] for e in s.skipped] == [0, 1, 2]
    finally:
        srv.stop()


def test_ndjson_tail_handles_partial_lines(tmp_path):
    path = tmp_path / "events.ndjson"
    tail = helpers.NdjsonEvents(path)
    assert tail.poll() == []  # missing file: nothing yet
    with open(path, "wb") as f:
        f.write(b'{"type":"create","n":1}\n{"type":"mod')
        f.flush()
        assert [e["n"] for e in tail.poll()] == [1]
        f.write(b'ify","n":2}\n{"type":"delete","n":3}\n')
        f.flush()
    got = tail.wait_events(lambda e: e["type"] == "modify", 5)
    assert [e["n"] for e in got] == [1, 2]
    assert tail.wait_event(lambda e: e["type"] == "delete", 5)["n"] == 3
    with pytest.raises(AssertionError, match="timed out"):
        tail.wait_event(lambda e: True, 0.1)


def test_wait_for():
    calls = []

    def pred():
        calls.append(1)
        return len(calls) >= 3 and "done"
    assert helpers.wait_for(pred, 5, "three calls") == "done"
    with pytest.raises(AssertionError, match="waiting for never"):
        helpers.wait_for(lambda: False, 0.05, "never")


def test_free_port_is_bindable():
    port = helpers.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_bunyan_parser(tmp_path):
    log = tmp_path / "log"
    rec = {"name": "vminfod", "hostname": "h", "pid": 1, "level": 30,
           "msg": "hi", "time": "2019-06-19T04:34:48.243Z", "v": 0}
    log.write_text(json.dumps(rec) + "\n" + '{"partial')
    assert helpers.parse_bunyan(log) == [rec]
    log.write_text("not json\n")
    with pytest.raises(AssertionError):
        helpers.parse_bunyan(log)
