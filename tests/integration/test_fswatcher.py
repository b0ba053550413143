"""fswatcher: the real program driven over its stdin/stdout protocol
(spec/fswatcher.md §1-§6 and the port extensions documented in
fswatcher/proto.h).  Every read waits on the pipe with a deadline."""

import json
import os
import select
import signal
import subprocess
import time

import pytest

from helpers import build_dir

FSW = str(build_dir() / "fswatcher")
MAX_CMD_LEN = 4126

USAGE = """Usage: fswatcher [-hrj]

Watch files using event ports with commands sent to
stdin and event notifications sent to stdout.

Options
  -h             print this message and exit
  -j             JSON output
  -r             print 'ready' event at start
"""


class Watcher:
    def __init__(self, *args):
        self.proc = subprocess.Popen(
            [FSW] + list(args), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE)
        self.buf = b""
        self.key = 0

    def send(self, raw):
        self.proc.stdin.write(raw.encode() if isinstance(raw, str) else raw)
        self.proc.stdin.flush()

    def cmd(self, text):
        """Send '<key> <text>' and return the key."""
        self.key += 1
        self.send("%d %s\n" % (self.key, text))
        return self.key

    def line(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no line from fswatcher within %.1fs (have %r)"
                                     % (timeout, self.buf))
            r, _, _ = select.select([fd], [], [], left)
            if r:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise AssertionError("fswatcher closed stdout (have %r)" % self.buf)
                self.buf += chunk
        raw, self.buf = self.buf.split(b"\n", 1)
        return raw.decode()

    def msg(self, timeout=5.0):
        return json.loads(self.line(timeout))

    def no_line(self, timeout=0.3):
        """True when nothing arrives within `timeout` (a bounded negative check)."""
        if b"\n" in self.buf:
            return False
        r, _, _ = select.select([self.proc.stdout.fileno()], [], [], timeout)
        return not r

    def request(self, text):
        key = self.cmd(text)
        m = self.msg()
        assert m["type"] in ("response", "error"), m
        if m["type"] == "response":
            assert m["key"] == key
        return m

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdout, self.proc.stderr):
            f.close()


@pytest.fixture
def fsw():
    w = Watcher("-r", "-j")
    m = w.msg()
    assert m["type"] == "ready" and list(m) == ["type", "time"]
    yield w
    w.close()
    assert w.proc.returncode == 0


@pytest.fixture
def fswp():
    w = Watcher("-r", "-j", "-p")
    m = w.msg()
    assert m == {"type": "ready", "time": m["time"], "version": 1}
    yield w
    w.close()
    assert w.proc.returncode == 0


def check_time(m):
    t = m["time"]
    assert isinstance(t, list) and len(t) == 2
    assert 0 <= t[1] < 1000000000
    now = time.monotonic()
    assert abs((t[0] + t[1] / 1e9) - now) < 60


# ---- command line ----

def test_help_prints_exact_usage_and_exits_0():
    r = subprocess.run([FSW, "-h"], capture_output=True, timeout=10)
    assert r.returncode == 0
    assert r.stdout.decode() == USAGE
    assert r.stderr == b""


def test_bad_option_prints_usage_on_stderr_and_exits_1():
    r = subprocess.run([FSW, "-x"], capture_output=True, timeout=10)
    assert r.returncode == 1
    assert r.stdout == b""
    err = r.stderr.decode()
    assert "invalid option" in err
    assert err.endswith(USAGE)


def test_help_with_p_documents_the_extension():
    r = subprocess.run([FSW, "-h", "-p"], capture_output=True, timeout=10)
    assert r.returncode == 0
    out = r.stdout.decode()
    assert out.startswith(USAGE)
    assert "-p" in out[len(USAGE):] and "exists" in out[len(USAGE):]


def test_stdin_eof_exits_0_with_message():
    w = Watcher("-j")
    w.proc.stdin.close()
    assert w.proc.wait(10) == 0
    assert w.proc.stderr.read() == b"fswatcher: stdin closed\n"
    assert w.proc.stdout.read() == b""
    w.close()


def test_unterminated_last_line_still_runs_at_eof():
    w = Watcher("-j")
    w.proc.stdin.write(b"4 STATUS")
    w.proc.stdin.close()
    m = json.loads(w.line())
    assert m["key"] == 4 and m["result"] == "SUCCESS"
    assert w.proc.wait(10) == 0
    w.close()


# ---- protocol errors ----

@pytest.mark.parametrize("line,key,code,message", [
    ("\n", 0, 1, "invalid command line"),
    ("garbage\n", 0, 1, "invalid command line"),
    ("17\n", 0, 1, "invalid command line"),
    ("0 WATCH /tmp\n", 0, 2, "invalid key: 0"),
    ("5 FROB /x\n", 5, 3, "unknown command 'FROB'"),
    ("6 watch /x\n", 6, 3, "unknown command 'watch'"),
    ("7 WATCH\n", 0, 1, "invalid command line - WATCH requires pathname"),
    ("8 UNWATCH\n", 0, 1, "invalid command line - UNWATCH requires pathname"),
    ("9 STATUS extra\n", 0, 1, "invalid command line - STATUS takes no arguments"),
])
def test_errors(fsw, line, key, code, message):
    fsw.send(line)
    m = fsw.msg()
    assert list(m) == ["type", "time", "key", "code", "message"]
    assert (m["type"], m["key"], m["code"], m["message"]) == ("error", key, code, message)
    check_time(m)
    # Still alive and answering.
    assert fsw.request("STATUS")["result"] == "SUCCESS"


def test_key_wraps_and_saturates(fsw):
    fsw.send("-1 STATUS\n")
    assert fsw.msg()["key"] == 18446744073709551615
    fsw.send("99999999999999999999999 STATUS\n")
    assert fsw.msg()["key"] == 18446744073709551615


def test_long_line_is_split_in_pieces(fsw):
    # 1 WATCH /aaaa... : the first MAX_CMD_LEN bytes are one command, the
    # rest another one.
    line = "1 WATCH /" + "a" * 5000 + "\n"
    fsw.send(line)
    m = fsw.msg()
    assert m["type"] == "response" and m["result"] == "FAIL"
    assert len(m["pathname"]) == MAX_CMD_LEN - len("1 WATCH ")
    assert m["message"] == "stat(2) failed with errno 36: File name too long"
    m = fsw.msg()
    assert (m["type"], m["key"], m["message"]) == ("error", 0, "invalid command line")
    # Exactly MAX_CMD_LEN bytes then a newline: the newline is an empty command.
    fsw.send("2 STATUS" + " " * (MAX_CMD_LEN - 8) + "\n")
    assert fsw.msg()["key"] == 2
    assert fsw.msg() == {"type": "error", "time": fsw_time_any(), "key": 0, "code": 1,
                         "message": "invalid command line"}


class fsw_time_any:
    def __eq__(self, other):
        return isinstance(other, list) and len(other) == 2


def test_partial_line_does_not_block_events(fsw, tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    assert fsw.request("WATCH %s" % f)["result"] == "SUCCESS"
    fsw.send("2 STA")      # half a command, no newline
    with open(f, "a") as fh:
        fh.write("more")
    m = fsw.msg()
    assert m["type"] == "event" and m["changes"] == ["FILE_MODIFIED"]
    fsw.send("TUS\n")
    assert fsw.msg()["key"] == 2


# ---- responses ----

def test_watch_unwatch_status_responses(fsw, tmp_path):
    a = tmp_path / "a"
    b = tmp_path / "b"
    a.write_text("1")
    b.write_text("2")
    m = fsw.request("WATCH %s" % a)
    assert list(m) == ["type", "time", "key", "code", "pathname", "message", "result"]
    assert (m["code"], m["pathname"], m["message"], m["result"]) == (
        0, str(a), "port_associate(3c) started watching path", "SUCCESS")
    check_time(m)
    m = fsw.request("WATCH %s" % a)
    assert (m["code"], m["message"], m["result"]) == (0, "already watching", "SUCCESS")
    assert fsw.request("WATCH %s" % b)["result"] == "SUCCESS"

    m = fsw.request("STATUS")
    assert list(m) == ["type", "time", "key", "code", "result", "data"]
    assert m["code"] == 0 and m["result"] == "SUCCESS"
    data = m["data"]
    assert list(data) == ["files", "files_count", "pid"]
    assert sorted(data["files"]) == sorted([str(a), str(b)])
    assert data["files_count"] == 2 and data["pid"] == fsw.proc.pid

    m = fsw.request("UNWATCH %s" % a)
    assert (m["code"], m["message"], m["result"]) == (
        0, "no longer watching '%s'" % a, "SUCCESS")
    m = fsw.request("UNWATCH %s" % a)
    assert (m["code"], m["pathname"], m["message"], m["result"]) == (
        1, str(a), "not watching '%s', cannot unwatch" % a, "FAIL")
    assert fsw.request("STATUS")["data"]["files"] == [str(b)]


def test_watch_missing_file_fails(fsw, tmp_path):
    p = tmp_path / "nope" / "file"
    m = fsw.request("WATCH %s" % p)
    assert (m["code"], m["message"], m["result"]) == (
        1, "stat(2) failed with errno 2: No such file or directory", "FAIL")
    assert fsw.request("STATUS")["data"]["files_count"] == 0


def test_utf8_path_round_trips(fsw, tmp_path):
    p = tmp_path / "z\u00e9\u4e2d.json"
    p.write_text("{}")
    m = fsw.request("WATCH %s" % p)
    assert m["result"] == "SUCCESS" and m["pathname"] == str(p)
    with open(p, "a") as fh:
        fh.write(" ")
    m = fsw.msg()
    assert m["pathname"] == str(p)


# ---- events (spec §6) ----

def watched(fsw, tmp_path, name="w", content="hello\n"):
    p = tmp_path / name
    p.write_text(content)
    assert fsw.request("WATCH %s" % p)["result"] == "SUCCESS"
    return p


def expect_event(fsw, path, changes, revents, final):
    m = fsw.msg()
    assert list(m) == ["type", "time", "changes", "pathname", "revents", "final"]
    assert m["type"] == "event"
    check_time(m)
    assert (m["pathname"], m["changes"], m["revents"], m["final"]) == (
        str(path), changes, revents, final), m
    return m


def test_write_gives_modified(fsw, tmp_path):
    p = watched(fsw, tmp_path)
    with open(p, "a") as fh:
        fh.write("more\n")
    expect_event(fsw, p, ["FILE_MODIFIED"], 2, False)


def test_touch_gives_modified_and_chmod_nothing(fsw, tmp_path):
    p = watched(fsw, tmp_path)
    os.utime(p, (1000000, 2000000))
    expect_event(fsw, p, ["FILE_MODIFIED"], 2, False)
    os.chmod(p, 0o600)
    assert fsw.no_line(0.3)
    # The next thing reported is the next write, nothing from the chmod.
    with open(p, "a") as fh:
        fh.write("x")
    expect_event(fsw, p, ["FILE_MODIFIED"], 2, False)


def test_truncate_gives_trunc(fsw, tmp_path):
    p = watched(fsw, tmp_path, content="a lot of content\n" * 10)
    os.truncate(p, 0)
    m = fsw.msg()
    assert m["pathname"] == str(p)
    assert "FILE_TRUNC" in m["changes"] and m["revents"] & 0x100000
    assert m["revents"] == 0x100002 and m["changes"] == ["FILE_MODIFIED", "FILE_TRUNC"]
    assert m["final"] is False


def test_rename_replace_gives_rename_to_and_keeps_watching(fsw, tmp_path):
    p = watched(fsw, tmp_path)
    tmp = tmp_path / "w.tmp"
    tmp.write_text("new\n")
    os.rename(tmp, p)
    expect_event(fsw, p, ["FILE_EXCEPTION", "FILE_RENAME_TO"], 32, False)
    assert fsw.request("STATUS")["data"]["files"] == [str(p)]
    with open(p, "a") as fh:
        fh.write("again\n")
    expect_event(fsw, p, ["FILE_MODIFIED"], 2, False)
    # And a second replacement is seen too (the new inode is followed).
    tmp.write_text("third\n")
    os.rename(tmp, p)
    expect_event(fsw, p, ["FILE_EXCEPTION", "FILE_RENAME_TO"], 32, False)


def test_unlink_gives_delete_final(fsw, tmp_path):
    p = watched(fsw, tmp_path)
    os.unlink(p)
    expect_event(fsw, p, ["FILE_DELETE", "FILE_EXCEPTION"], 16, True)
    assert fsw.request("STATUS")["data"]["files_count"] == 0
    # Final: no longer watched; recreating it reports nothing.
    p.write_text("back")
    assert fsw.request("WATCH %s" % p)["message"] == "port_associate(3c) started watching path"


def test_rename_away_gives_rename_from_final(fsw, tmp_path):
    p = watched(fsw, tmp_path)
    os.rename(p, tmp_path / "elsewhere")
    expect_event(fsw, p, ["FILE_EXCEPTION", "FILE_RENAME_FROM"], 64, True)
    assert fsw.request("STATUS")["data"]["files_count"] == 0


def test_symlink_is_watched_through(fsw, tmp_path):
    target = tmp_path / "target"
    target.write_text("t")
    link = tmp_path / "link"
    os.symlink(target, link)
    assert fsw.request("WATCH %s" % link)["result"] == "SUCCESS"
    with open(target, "a") as fh:
        fh.write("x")
    expect_event(fsw, link, ["FILE_MODIFIED"], 2, False)


def test_no_events_after_unwatch(fsw, tmp_path):
    a = watched(fsw, tmp_path, "a")
    b = watched(fsw, tmp_path, "b")
    assert fsw.request("UNWATCH %s" % a)["result"] == "SUCCESS"
    with open(a, "a") as fh:
        fh.write("ignored")
    os.unlink(a)
    with open(b, "a") as fh:
        fh.write("seen")
    # The first (and only) event is b's: a's changes came before it.
    expect_event(fsw, b, ["FILE_MODIFIED"], 2, False)
    assert fsw.no_line(0.2)


def test_two_names_one_inode(fsw, tmp_path):
    a = watched(fsw, tmp_path, "a")
    b = tmp_path / "b"
    os.link(a, b)
    assert fsw.request("WATCH %s" % b)["result"] == "SUCCESS"
    with open(a, "a") as fh:
        fh.write("x")
    got = {fsw.msg()["pathname"], fsw.msg()["pathname"]}
    assert got == {str(a), str(b)}
    os.unlink(a)
    expect_event(fsw, a, ["FILE_DELETE", "FILE_EXCEPTION"], 16, True)
    with open(b, "a") as fh:
        fh.write("y")
    expect_event(fsw, b, ["FILE_MODIFIED"], 2, False)


# ---- extension: pending paths (-p) ----

def test_without_p_missing_paths_are_forgotten(fsw, tmp_path):
    p = tmp_path / "later"
    assert fsw.request("WATCH %s" % p)["result"] == "FAIL"
    p.write_text("x")
    assert fsw.no_line(0.3)


def test_pending_path_exists_message_when_dirs_appear(fswp, tmp_path):
    p = tmp_path / "d1" / "d2" / "f.json"
    m = fswp.request("WATCH %s" % p)
    # Byte-compatible FAIL answer.
    assert (m["code"], m["message"], m["result"]) == (
        1, "stat(2) failed with errno 2: No such file or directory", "FAIL")
    st = fswp.request("STATUS")["data"]
    assert list(st) == ["files", "files_count", "pid", "pending", "pending_count"]
    assert st["files"] == [] and st["pending"] == [str(p)]
    os.mkdir(tmp_path / "d1")
    assert fswp.no_line(0.2)
    os.mkdir(tmp_path / "d1" / "d2")
    assert fswp.no_line(0.2)
    p.write_text("{}")
    m = fswp.msg()
    assert m == {"type": "exists", "time": m["time"], "pathname": str(p)}
    check_time(m)
    assert fswp.request("STATUS")["data"]["pending_count"] == 0
    # The consumer now watches it for real.
    assert fswp.request("WATCH %s" % p)["result"] == "SUCCESS"
    os.unlink(p)
    expect_event(fswp, p, ["FILE_DELETE", "FILE_EXCEPTION"], 16, True)


def test_pending_path_created_all_at_once(fswp, tmp_path):
    # makedirs + create faster than the watcher can descend: still found.
    paths = [tmp_path / "x" / ("d%d" % i) / "y" / "f" for i in range(20)]
    for p in paths:
        assert fswp.request("WATCH %s" % p)["result"] == "FAIL"
    for p in paths:
        os.makedirs(p.parent)
        p.write_text("x")
    got = set()
    while len(got) < len(paths):
        m = fswp.msg()
        assert m["type"] == "exists"
        got.add(m["pathname"])
    assert got == {str(p) for p in paths}


def test_pending_when_a_file_blocks_the_directory(fswp, tmp_path):
    blocker = tmp_path / "d"
    blocker.write_text("not a dir")
    p = blocker / "f"
    m = fswp.request("WATCH %s" % p)
    assert m["message"] == "stat(2) failed with errno 20: Not a directory"
    os.unlink(blocker)
    os.mkdir(blocker)
    assert fswp.no_line(0.2)
    p.write_text("x")
    assert fswp.msg()["type"] == "exists"


def test_unwatch_pending_path(fswp, tmp_path):
    p = tmp_path / "never"
    assert fswp.request("WATCH %s" % p)["result"] == "FAIL"
    m = fswp.request("UNWATCH %s" % p)
    assert (m["result"], m["message"]) == ("SUCCESS", "no longer waiting for '%s'" % p)
    p.write_text("x")
    assert fswp.no_line(0.3)


def test_pending_limit(tmp_path):
    w = Watcher("-r", "-j", "-p", "-m", "2")
    try:
        assert w.msg()["type"] == "ready"
        assert w.request("WATCH %s" % (tmp_path / "a"))["result"] == "FAIL"
        assert w.request("WATCH %s" % tmp_path)["result"] == "SUCCESS"
        m = w.request("WATCH %s" % (tmp_path / "c"))
        assert m["message"] == "too many watches (limit 2)"
    finally:
        w.close()


def test_file_deleted_then_pending_again(fswp, tmp_path):
    p = watched(fswp, tmp_path)
    os.unlink(p)
    expect_event(fswp, p, ["FILE_DELETE", "FILE_EXCEPTION"], 16, True)
    assert fswp.request("WATCH %s" % p)["result"] == "FAIL"
    p.write_text("again")
    assert fswp.msg() == {"type": "exists", "time": fsw_time_any(), "pathname": str(p)}


# ---- overflow ----

def test_queue_overflow_is_reported(fsw, tmp_path):
    with open("/proc/sys/fs/inotify/max_queued_events") as f:
        max_queued = int(f.read())
    if max_queued > 200000:
        pytest.skip("inotify queue too large (%d) to overflow quickly" % max_queued)
    a = watched(fsw, tmp_path, "a")
    b = tmp_path / "b"
    b.write_text("")
    # Freeze the watcher so nothing drains the queue, then queue more
    # distinct events (alternating names never merge) than it holds.
    os.kill(fsw.proc.pid, signal.SIGSTOP)
    try:
        fa = os.open(a, os.O_WRONLY | os.O_APPEND)
        fb = os.open(b, os.O_WRONLY | os.O_APPEND)
        for _ in range(max_queued // 2 + 100):
            os.write(fa, b"a")
            os.write(fb, b"b")
        os.close(fa)
        os.close(fb)
    finally:
        os.kill(fsw.proc.pid, signal.SIGCONT)
    seen_overflow = False
    seen_a = False
    for _ in range(1000):
        m = fsw.msg(10)
        if m["type"] == "overflow":
            assert list(m) == ["type", "time"]
            seen_overflow = True
        elif m["type"] == "event":
            assert m["pathname"] == str(a) and m["changes"] == ["FILE_MODIFIED"]
            seen_a = True
        if seen_overflow and seen_a:
            break
    assert seen_overflow and seen_a
    # Still working afterwards.
    with open(a, "a") as fh:
        fh.write("z")
    expect_event(fsw, a, ["FILE_MODIFIED"], 2, False)
