"""Helpers for vminfod integration tests: paths, host trees, the daemon.

Everything here waits on conditions with deadlines (never a bare sleep),
talks only to 127.0.0.1 and stops only the processes it started.

    build_dir(), repo_dir()            where binaries and scripts are
    run_mkhost(root, n, seed)          generate a host tree
    mkhost_change(root, *args)         run `mkhost ROOT <args>`, parsed lines
    free_port()                        an unused 127.0.0.1 TCP port
    wait_for(predicate, timeout, what) poll until truthy, else fail
    write_atomic(path, data)           replace a file by temp file + rename
    config_path(root, zone, name)      a zone's config/<name> file
    xml_path(root, zonename)           a zone's etc/zones/<zonename>.xml
    proc_stat(pid) -> ProcStat|None    comm, state, ppid, pgrp, session
    processes()                        (pid, ProcStat) of live processes
    pid_alive(pid)                     running and not a zombie
    cmdline(pid)                       argv of a process, [] if gone
    children_of(pid, comm=None)        live child pids (by command name)
    child_pid(pid, comm)               the first such child, or None
    wait_child(pid, comm, other_than)  wait for such a child
    frontend_pid(pid)                  the one vminfod-frontend child
    kill_sessions(sids)                SIGKILL what is left of sessions
    http_get(port, path, ...)          one GET -> (status, headers, body)
    EventStream                        raw-socket reader of a streaming GET
    NdjsonEvents                       tail of the --events-file NDJSON file
    Daemon                             start/stop vminfod, a context manager
"""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
CHILD_TIMEOUT_S = 10.0
# What the kernel keeps of a command name (TASK_COMM_LEN - 1).
COMM_LEN = 15


def repo_dir():
    """The repository root (this file is tests/integration/helpers.py)."""
    return Path(__file__).resolve().parents[2]


def build_dir():
    """The build directory: $VMINFOD_BUILD, else <repo>/build."""
    env = os.environ.get("VMINFOD_BUILD")
    return Path(env) if env else repo_dir() / "build"


def script(name):
    """Path of a script in <repo>/scripts."""
    return repo_dir() / "scripts" / name


def run_script(name, *args, timeout=120, check=True):
    """Run a Python script of scripts/ with this interpreter.

    Returns the CompletedProcess (text mode); with check, a non-zero exit
    fails with the script's stderr."""
    cmd = [sys.executable, str(script(name))] + [str(a) for a in args]
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError("%s exited %d: %s" % (
            " ".join(cmd), proc.returncode, proc.stderr.strip()))
    return proc


def run_mkhost(root, n, seed=1):
    """Generate a host tree with n zones under root; returns root (Path)."""
    run_script("mkhost", root, "--vms", n, "--seed", seed, timeout=300)
    return Path(root)


def mkhost_change(root, *args):
    """Run `mkhost ROOT ARGS...` (a change mode); returns the change dicts."""
    proc = run_script("mkhost", root, *args)
    return [json.loads(line) for line in proc.stdout.splitlines() if line]


def read_index(root):
    """Zone lines of root/etc/zones/index as dicts, in file order."""
    zones = []
    text = (Path(root) / "etc" / "zones" / "index").read_text("utf-8")
    for line in text.splitlines():
        fields = line.split(":")
        if line.startswith("#") or len(fields) < 4 or fields[0] == "global":
            continue
        zones.append({"zonename": fields[0], "state": fields[1],
                      "zonepath": fields[2], "uuid": fields[3]})
    return zones


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout, what, interval=0.005, max_interval=0.1):
    """Call predicate until it returns something truthy; return that.

    Polls with a growing interval (capped at max_interval) and fails with
    "timed out after Ns waiting for <what>" at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        now = time.monotonic()
        if now >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s"
                                 % (timeout, what))
        time.sleep(min(interval, deadline - now))
        interval = min(interval * 2, max_interval)


_tmp_counter = [0]


def write_atomic(path, data):
    """Replace path by a dot-named temporary file renamed onto it, the way
    the real tools change a zone's files (str data is written as UTF-8)."""
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    _tmp_counter[0] += 1
    tmp = path.parent / (".%s.tmp.%d.%d" % (path.name, os.getpid(),
                                            _tmp_counter[0]))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    os.rename(tmp, path)


def config_path(root, zone, name):
    """root/<zonepath>/config/<name> of an index record (read_index)."""
    return Path(root) / zone["zonepath"].lstrip("/") / "config" / name


def xml_path(root, zonename):
    """root/etc/zones/<zonename>.xml."""
    return Path(root) / "etc" / "zones" / (zonename + ".xml")


# ---------------------------------------------------------------------------
# processes, from /proc/<pid>/stat

ProcStat = namedtuple("ProcStat", "comm state ppid pgrp session")


def proc_stat(pid):
    """The parsed /proc/<pid>/stat of pid, or None if it is gone.

    comm (the command name, at most COMM_LEN characters) is what stands
    between the first "(" and the LAST ")": it may itself hold spaces and
    parentheses.  state is one letter ("Z" for a zombie)."""
    try:
        with open("/proc/%s/stat" % pid, "rb") as f:
            stat = f.read()
    except OSError:
        return None
    start, end = stat.find(b"("), stat.rfind(b")")
    fields = stat[end + 1:].split()
    if start < 0 or end < start or len(fields) < 4:
        return None
    return ProcStat(stat[start + 1:end].decode("utf-8", "replace"),
                    fields[0].decode("ascii", "replace"), int(fields[1]),
                    int(fields[2]), int(fields[3]))


def processes():
    """Yield (pid, ProcStat) of every live process; zombies are skipped."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        st = proc_stat(entry)
        if st is not None and st.state != "Z":
            yield int(entry), st


def pid_alive(pid):
    """True while pid runs (a zombie counts as gone)."""
    st = proc_stat(pid)
    return st is not None and st.state != "Z"


def cmdline(pid):
    """The argv of pid as str (empty arguments dropped); [] if it is gone."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            data = f.read()
    except OSError:
        return []
    return [a.decode("utf-8", "replace") for a in data.split(b"\0") if a]


def children_of(pid, comm=None):
    """Live (non-zombie) child pids of pid.

    With comm, only children whose command name starts with comm cut to
    COMM_LEN characters, so the full program name may be given:
    "vminfod-frontend" matches the kernel's "vminfod-fronten"."""
    prefix = None if comm is None else comm[:COMM_LEN]
    return [p for p, st in processes() if st.ppid == pid and
            (prefix is None or st.comm.startswith(prefix))]


def child_pid(pid, comm):
    """The first live child of pid with that command name, or None."""
    pids = children_of(pid, comm)
    return pids[0] if pids else None


def wait_child(pid, comm, other_than=None, timeout=CHILD_TIMEOUT_S):
    """Wait for a live child of pid with that command name and a pid other
    than other_than (a restarted one); return its pid."""
    def found():
        for child in children_of(pid, comm):
            if child != other_than:
                return child
        return None
    return wait_for(found, timeout, "a %s child of pid %d" % (comm, pid))


def frontend_pid(pid):
    """The pid of pid's vminfod-frontend child; None while it has none (or,
    mid-restart, more than one)."""
    pids = children_of(pid, "vminfod-frontend")
    return pids[0] if len(pids) == 1 else None


def kill_sessions(sessions):
    """SIGKILL (by pid) every live process whose session id is in
    sessions: what is left of daemons started with start_new_session."""
    for pid, st in processes():
        if st.session in sessions:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def http_get(port, path, headers=None, timeout=10.0, host="127.0.0.1"):
    """One GET request -> (status, headers dict with lowercase names, body).

    A fresh connection per call: tests must not depend on keep-alive."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        hdrs = {k.lower(): v for k, v in resp.getheaders()}
        return resp.status, hdrs, body
    finally:
        conn.close()


def http_request(port, method, path, headers=None, timeout=10.0):
    """Any method -> (status, headers dict, body); for 400 checks."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        conn.close()


class ChunkedDecoder:
    """Incremental decoder of an HTTP/1.1 chunked body."""

    def __init__(self):
        self.raw = b""
        self.need = None  # bytes left in the current chunk, None: size line
        self.done = False

    def feed(self, data):
        """Add raw bytes; return the decoded payload bytes now available."""
        self.raw += data
        out = []
        while not self.done:
            if self.need is None:
                eol = self.raw.find(b"\r\n")
                if eol < 0:
                    break
                size = int(self.raw[:eol].split(b";")[0].strip(), 16)
                self.raw = self.raw[eol + 2:]
                if size == 0:
                    self.done = True
                    break
                self.need = size
            if len(self.raw) < self.need + 2:
                take = min(len(self.raw), self.need)
                out.append(self.raw[:take])
                self.raw = self.raw[take:]
                self.need -= take
                if self.need == 0:
                    # Payload complete, CRLF still to come: wait for it.
                    if len(self.raw) >= 2:
                        self.raw = self.raw[2:]
                        self.need = None
                        continue
                    self.need = 0
                break
            out.append(self.raw[:self.need])
            self.raw = self.raw[self.need + 2:]
            self.need = None
        return b"".join(out)


class EventStream:
    """A streaming GET (e.g. /events) read from a raw socket.

    The status line and headers are read at construction (with a
    deadline); the body is decoded as chunked, Content-Length or
    close-delimited, and split into lines on "\\n" (a trailing "\\r" is
    stripped).  Call next_line(timeout) / next_event(timeout); close()."""

    def __init__(self, port, path, headers=None, timeout=10.0,
                 host="127.0.0.1"):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        req = ["GET %s HTTP/1.1" % path, "Host: %s:%d" % (host, port)]
        for k, v in (headers or {}).items():
            req.append("%s: %s" % (k, v))
        self.sock.sendall(("\r\n".join(req) + "\r\n\r\n").encode("latin-1"))
        self.buf = b""      # raw bytes not yet decoded
        self.lines = b""    # decoded body bytes not yet returned as lines
        self.eof = False
        self.skipped = []   # events wait_event passed over
        self.status, self.reason, self.headers = self._read_head(timeout)
        te = self.headers.get("transfer-encoding", "").lower()
        self.chunked = ChunkedDecoder() if "chunked" in te else None
        length = self.headers.get("content-length")
        self.remaining = int(length) if length is not None and \
            self.chunked is None else None
        self._decode(self.buf)
        self.buf = b""

    def _recv(self, deadline):
        """Receive some bytes before the deadline; b"" at EOF.

        Raises TimeoutError when the deadline passes first."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no data before the deadline")
        self.sock.settimeout(left)
        try:
            return self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("no data before the deadline") from None
        except ConnectionResetError:
            return b""

    def _read_head(self, timeout):
        """Read the status line and headers; keep what follows in buf."""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            data = self._recv(deadline)
            if not data:
                raise AssertionError("connection closed before headers: %r"
                                     % self.buf)
            self.buf += data
            if len(self.buf) > 1 << 20:
                raise AssertionError("response headers too large")
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(parts[1]), parts[2] if len(parts) > 2 else "", headers

    def _decode(self, data):
        """Turn raw body bytes into payload bytes appended to lines."""
        if self.chunked is not None:
            self.lines += self.chunked.feed(data)
            if self.chunked.done:
                self.eof = True
        elif self.remaining is not None:
            take = data[:self.remaining]
            self.remaining -= len(take)
            self.lines += take
            if self.remaining == 0:
                self.eof = True
        else:
            self.lines += data

    def next_line(self, timeout=10.0):
        """The next body line (str, without the newline).

        Returns None at the end of the stream (after any final partial
        line); raises TimeoutError if no full line arrives in time."""
        deadline = time.monotonic() + timeout
        while True:
            nl = self.lines.find(b"\n")
            if nl >= 0:
                line, self.lines = self.lines[:nl], self.lines[nl + 1:]
                return line.rstrip(b"\r").decode("utf-8")
            if self.eof:
                if self.lines:
                    line, self.lines = self.lines, b""
                    return line.rstrip(b"\r").decode("utf-8")
                return None
            data = self._recv(deadline)
            if not data:
                self.eof = True
                continue
            self._decode(data)

    def next_event(self, timeout=10.0):
        """The next line parsed as JSON (None at the end of the stream)."""
        line = self.next_line(timeout)
        return None if line is None else json.loads(line)

    def wait_event(self, predicate, timeout=10.0, what="an event"):
        """Read events until predicate(event) is true; return that event.

        Events read on the way are kept in self.skipped for inspection."""
        deadline = time.monotonic() + timeout
        self.skipped = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("timed out after %.1fs waiting for %s "
                                     "(skipped %d events)"
                                     % (timeout, what, len(self.skipped)))
            try:
                ev = self.next_event(left)
            except TimeoutError:
                continue
            if ev is None:
                raise AssertionError("stream ended while waiting for %s"
                                     % what)
            if predicate(ev):
                return ev
            self.skipped.append(ev)

    def close(self):
        """Close the connection."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class NdjsonEvents:
    """Tail of an NDJSON file the daemon appends every emitted event to.

    Only complete lines are consumed; `events` keeps every event read so
    far, in order."""

    def __init__(self, path):
        self.path = Path(path)
        self.offset = 0
        self.partial = b""
        self.events = []
        self.cursor = 0  # index in events of the next unconsumed one

    def poll(self):
        """Read whatever was appended; return the newly parsed events."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()
        new = [json.loads(line) for line in lines if line.strip()]
        self.events += new
        return new

    def wait_events(self, predicate, timeout=10.0, what=None):
        """Wait for the first not-yet-consumed event with predicate(ev) true.

        Returns the list of events consumed by this call, ending with the
        matching one; the next call starts after it."""
        def found():
            self.poll()
            for i in range(self.cursor, len(self.events)):
                if predicate(self.events[i]):
                    return i + 1
            return None
        end = wait_for(found, timeout, what or "a matching event in %s"
                       % self.path)
        consumed = self.events[self.cursor:end]
        self.cursor = end
        return consumed

    def wait_event(self, predicate, timeout=10.0, what=None):
        """Like wait_events, returning only the matching event."""
        return self.wait_events(predicate, timeout, what)[-1]


def parse_bunyan(path):
    """Complete lines of a bunyan log file, parsed; fails on a bad line."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    records = []
    for line in data.split(b"\n")[:-1]:  # the last piece may be partial
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            raise AssertionError("log line is not JSON: %r" % line[:200])
        for key in ("name", "hostname", "pid", "level", "msg", "time", "v"):
            if key not in rec:
                raise AssertionError("log record without %r: %r"
                                     % (key, line[:200]))
        records.append(rec)
    return records


class Daemon:
    """vminfod started on a host tree, stopped with SIGTERM at the end.

    Runs `vminfod --root ROOT --listen 127.0.0.1:PORT --rundir WORK/run
    --log-file WORK/vminfod.log [--events-file WORK/events.ndjson] *extra`
    in its own process group, with stdout/stderr to WORK/vminfod.out.
    start() waits for GET /ping to answer pong; stop() sends SIGTERM and
    requires exit status 0 within STOP_TIMEOUT_S, so a crash or a hang
    fails the test."""

    def __init__(self, root, workdir, extra=(), port=None, events_file=False,
                 ready_timeout=READY_TIMEOUT_S, env=None, binary=None):
        self.root = Path(root)
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.rundir = self.workdir / "run"
        self.log_path = self.workdir / "vminfod.log"
        self.out_path = self.workdir / "vminfod.out"
        self.events_path = self.workdir / "events.ndjson" \
            if events_file else None
        self.events = NdjsonEvents(self.events_path) \
            if events_file else None
        self.extra = [str(a) for a in extra]
        self.ready_timeout = ready_timeout
        self.env = env
        self.binary = Path(binary) if binary else build_dir() / "vminfod"
        self.proc = None
        self.returncode = None

    def argv(self):
        """The command line the daemon is started with."""
        argv = [str(self.binary), "--root", str(self.root), "--listen",
                "127.0.0.1:%d" % self.port, "--rundir", str(self.rundir),
                "--log-file", str(self.log_path)]
        if self.events_path is not None:
            argv += ["--events-file", str(self.events_path)]
        return argv + self.extra

    @property
    def pid(self):
        """The daemon's pid (None before start)."""
        return self.proc.pid if self.proc else None

    def start(self):
        """Start the daemon and wait until it answers /ping."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.rundir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(self.env or {})
        with open(self.out_path, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv(), stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            self.wait_ready(self.ready_timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def _ping(self):
        """True once /ping answers pong; fails if the daemon died."""
        if self.proc.poll() is not None:
            raise AssertionError("vminfod exited with %s before it was ready"
                                 "\n%s" % (self.proc.returncode,
                                           self.output_tail()))
        try:
            status, _, body = http_get(self.port, "/ping", timeout=2.0)
        except (ConnectionRefusedError, ConnectionResetError,
                http.client.HTTPException, socket.timeout, OSError):
            return False
        return status == 200 and json.loads(body) == {"ping": "pong"}

    def wait_ready(self, timeout):
        """Poll /ping (backing off from 5 ms to 100 ms) until the deadline."""
        wait_for(self._ping, timeout, "vminfod on port %d to answer /ping"
                 % self.port)

    def get(self, path, headers=None, timeout=10.0):
        """GET path -> (status, headers dict, body bytes)."""
        return http_get(self.port, path, headers=headers, timeout=timeout)

    def get_json(self, path, timeout=10.0):
        """GET path, require 200, return the parsed body."""
        status, _, body = self.get(path, timeout=timeout)
        assert status == 200, "GET %s: %d %r" % (path, status, body[:200])
        return json.loads(body)

    def stream(self, path="/events", headers=None, timeout=10.0):
        """Open a streaming GET; returns an EventStream (close it)."""
        return EventStream(self.port, path, headers=headers, timeout=timeout)

    def log_lines(self):
        """Every complete bunyan record of the log file so far."""
        return parse_bunyan(self.log_path)

    def wait_log(self, predicate, timeout=10.0, what="a log record"):
        """Wait until some log record satisfies predicate; return it."""
        def found():
            for rec in self.log_lines():
                if predicate(rec):
                    return rec
            return None
        return wait_for(found, timeout, what)

    def output_tail(self, nbytes=4000):
        """The end of the daemon's stdout/stderr and log, for messages."""
        parts = []
        for p in (self.out_path, self.log_path):
            try:
                data = p.read_bytes()[-nbytes:]
            except FileNotFoundError:
                continue
            parts.append("--- %s:\n%s" % (p.name, data.decode("utf-8",
                                                              "replace")))
        return "\n".join(parts)

    def alive(self):
        """True while the daemon process runs."""
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        """SIGKILL the daemon's process group (it only holds our children)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=STOP_TIMEOUT_S)
        self.returncode = self.proc.returncode  # killed on purpose
        self._reap_group(require_empty=False)

    def signal(self, signum):
        """Send a signal to the daemon (supervisor) process only."""
        self.proc.send_signal(signum)

    def stop(self, timeout=STOP_TIMEOUT_S):
        """SIGTERM, then require exit status 0 within timeout.

        A daemon that already exited (crash) or does not exit in time
        fails the test; a hung one is killed first."""
        if self.proc is None:
            return None
        if self.returncode is not None:
            return self.returncode
        if self.proc.poll() is not None:
            self.returncode = self.proc.returncode
            self._reap_group(require_empty=False)
            raise AssertionError("vminfod died during the test with status "
                                 "%s\n%s" % (self.returncode,
                                             self.output_tail()))
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.returncode = self.proc.returncode
            raise AssertionError("vminfod did not exit within %.0fs of "
                                 "SIGTERM\n%s" % (timeout,
                                                  self.output_tail()))
        self._reap_group()
        if self.returncode != 0:
            raise AssertionError("vminfod exited with status %s after "
                                 "SIGTERM\n%s" % (self.returncode,
                                                  self.output_tail()))
        return self.returncode

    def _group_members(self):
        """Pids still in the daemon's process group (its leftover children)."""
        return [pid for pid, st in processes() if st.pgrp == self.proc.pid]

    def _reap_group(self, require_empty=True):
        """Check that no child outlived the supervisor; kill any that did.

        A clean shutdown stops every child before exiting; leftovers are
        given a short grace period, then killed by pid and reported."""
        deadline = time.monotonic() + 2.0
        left = self._group_members()
        while left and time.monotonic() < deadline:
            time.sleep(0.02)
            left = self._group_members()
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if left and require_empty:
            raise AssertionError("vminfod exited but left processes %s "
                                 "running\n%s" % (left, self.output_tail()))

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            # The test already failed: stop without masking its error.
            if self.alive():
                try:
                    self.stop()
                except AssertionError:
                    pass
            self.kill()
            return False
        self.stop()
        return False
