"""vminfod-frontend on its own: a ring file published with ringtool, the
frontend started with --listen and --ring (test mode: it checks the ring
every few ms, or follows an eventfd doorbell we pass it), and the HTTP API
of spec/http-api.md §2-§4 plus the design's resume additions.
"""

import json
import os
import select
import signal
import socket
import subprocess
import threading
import time

import pytest

import helpers
from helpers import EventStream, free_port, http_get, http_request, wait_for

STATUS_KEYS = ["pid", "uptime", "memory", "state", "status", "numVms",
               "curDate", "curTime", "queue", "lastRefresh", "refreshErrors",
               "eventsListeners"]

FACTS = {"pid": 4242, "start_ns": 1, "rss": 47710208, "heapTotal": 0,
         "heapUsed": 0, "state": "running", "status": "working", "numVms": 2,
         "queue": {"paused": False, "idle": True, "paused_at_ns": None,
                   "pending": [], "queued": [], "paused_queue": []},
         "last_refresh_ns": 1, "refresh_errors": [], "refresh_log": [],
         "fswatcher": {"message_delays": {}, "watching": [],
                       "not_yet_watching": [], "pending_actions": {},
                       "watcher_pid": 99, "running": True},
         "children": {}, "heartbeat_ns": 1}

Z1 = "5a02245a-422c-4e0a-c5f8-fd6fac1ac04e"
Z2 = "0d9f1c7e-1111-4222-8333-944445555666"


def vm(zonename, **extra):
    obj = {"zonename": zonename, "uuid": zonename, "alias": "a\"b"}
    obj.update(extra)
    return json.dumps(obj, separators=(",", ":"))


def ringtool_path():
    return helpers.build_dir() / "tools" / "ringtool"


class Ring:
    """A `ringtool publish` process writing the ring file, plus the
    expected /vms state (zonename -> VM JSON text, in /vms order).

    Event lines are built here and appended verbatim (`event` command), so
    tests know the exact bytes subscribers must receive."""

    def __init__(self, path, size="1M", doorbell_fd=None):
        self.path = str(path)
        self.vms = {}
        self.proc = None
        self.open(size, doorbell_fd)

    def open(self, size, doorbell_fd=None):
        """(Re)start the publisher; a different size means a new epoch."""
        self.close()
        cmd = [str(ringtool_path()), "publish"]
        pass_fds = []
        if doorbell_fd is not None:
            cmd += ["--doorbell", str(doorbell_fd)]
            pass_fds.append(doorbell_fd)
        cmd += [self.path, str(size)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True,
                                     pass_fds=pass_fds)
        hello = self._reply()
        self.epoch = hello["epoch"]
        self.version = hello["version"]
        if not hello["kept"]:
            self.vms = {}

    def _reply(self, timeout=20):
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise AssertionError("ringtool did not answer in %ss" % timeout)
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError("ringtool exited (%s)" % self.proc.poll())
        reply = json.loads(line)
        if not reply.get("ok"):
            raise AssertionError("ringtool: %s" % reply)
        return reply

    def cmd(self, text):
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        return self._reply()

    def snapshot(self):
        arr = [{"zonename": z, "vm": json.loads(j)} for z, j in self.vms.items()]
        self.cmd("snapshot " + json.dumps(arr, separators=(",", ":")))

    def status(self, facts):
        self.cmd("status " + json.dumps(facts, separators=(",", ":")))

    def event(self, kind, zonename, vm_json=None):
        """Publish one event; returns its exact line (without newline)."""
        version = self.version + 1
        line = '{"type":"%s","date":"2019-06-19T04:40:01.123Z","zonename":"%s","uuid":"%s"' % (
            kind, zonename, zonename)
        if vm_json is not None:
            line += ',"vm":' + vm_json
        if kind == "modify":
            line += ',"changes":[]'
        line += ',"version":%d}' % version
        reply = self.cmd("event %s %s %s" % (kind, zonename, line))
        assert reply["version"] == version
        self.version = version
        if kind == "delete":
            self.vms.pop(zonename, None)
        else:
            self.vms[zonename] = vm_json
        return line

    def array(self):
        return "[" + ",".join(self.vms.values()) + "]"

    def close(self):
        if self.proc is not None:
            self.proc.stdin.close()
            rc = self.proc.wait(20)
            self.proc.stdout.close()
            self.proc = None
            assert rc == 0, "ringtool exited with %d" % rc


class Frontend:
    def __init__(self, ring, tmp_path, extra=(), doorbell=False,
                 listen_fd=None, pass_fds=()):
        self.port = free_port()
        self.ring = ring
        self.log_path = tmp_path / ("frontend-%d.log" % self.port)
        self.doorbell_fd = None
        cmd = [str(helpers.build_dir() / "vminfod-frontend"),
               "--ring", ring.path, "--log-level", "debug",
               "--log-file", str(self.log_path)] + list(extra)
        pass_fds = list(pass_fds)
        env = dict(os.environ)
        preexec = None
        if doorbell:
            self.doorbell_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            pass_fds.append(self.doorbell_fd)
            cmd += ["--doorbell-fd", str(self.doorbell_fd)]
        if listen_fd is not None:
            # The supervisor's way: the socket at fd 3, LISTEN_FDS=1.
            self.port = listen_fd.getsockname()[1]
            fd = listen_fd.fileno()
            pass_fds += [fd, 3]   # 3 too: close_fds runs after preexec_fn
            env["LISTEN_FDS"] = "1"
            env.pop("LISTEN_PID", None)

            def preexec():
                os.dup2(fd, 3)
        else:
            cmd += ["--listen", "127.0.0.1:%d" % self.port]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                     pass_fds=pass_fds, env=env,
                                     preexec_fn=preexec)
        wait_for(self._pings, 10, "the frontend to answer /ping")

    def _pings(self):
        if self.proc.poll() is not None:
            raise AssertionError("frontend exited with %d" % self.proc.returncode)
        try:
            return http_get(self.port, "/ping", timeout=2)[0] == 200
        except OSError:
            return False

    def ring_doorbell(self):
        os.eventfd_write(self.doorbell_fd, 1)

    def get(self, path, headers=None):
        return http_get(self.port, path, headers=headers)

    def stream(self, path="/events", headers=None):
        return EventStream(self.port, path, headers=headers)

    def log_lines(self):
        return [json.loads(l) for l in self.log_path.read_text().splitlines() if l]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("frontend did not stop on SIGTERM")
        if self.doorbell_fd is not None:
            os.close(self.doorbell_fd)
            self.doorbell_fd = None
        assert rc == 0, "frontend exited with %d" % rc


@pytest.fixture
def ring(tmp_path):
    if not ringtool_path().exists():
        pytest.fail("%s is missing (make tools)" % ringtool_path())
    r = Ring(tmp_path / "vminfod.ring")
    r.vms[Z1] = vm(Z1, state="running")
    r.vms[Z2] = vm(Z2, state="stopped")
    r.snapshot()
    r.status(FACTS)
    yield r
    r.close()


@pytest.fixture
def frontend(ring, tmp_path):
    started = []

    def start(**kw):
        fe = Frontend(kw.pop("ring", ring), tmp_path, **kw)
        started.append(fe)
        return fe
    yield start
    errors = []
    for fe in started:
        try:
            fe.stop()
        except AssertionError as e:
            errors.append(str(e))
    if errors:
        pytest.fail("\n".join(errors), pytrace=False)


# ---- routing (http-api.md §2) ----

def test_ping_exact_bytes_and_path_normalisation(frontend):
    fe = frontend()
    for path in ["/ping", "/ping/x", "//ping", "/foo/../ping", "/ping?x=1"]:
        status, hdrs, body = fe.get(path)
        assert (status, body) == (200, b'{"ping":"pong"}'), path
        assert hdrs["content-type"] == "application/json"
        assert "server" not in hdrs


@pytest.mark.parametrize("method", ["POST", "HEAD", "OPTIONS", "PUT", "DELETE"])
def test_non_get_is_400_with_empty_json_body(frontend, method):
    fe = frontend()
    status, hdrs, body = http_request(fe.port, method, "/ping")
    assert status == 400
    assert hdrs["content-type"] == "application/json"
    assert body == b""


# "/" serves the live status page (an addition of this port), so it is not
# among the unknown paths.
@pytest.mark.parametrize("path", ["//", "/foo", "/PING", "/vmsx", "/ping/../x"])
def test_unknown_path_is_404_unsupported(frontend, path):
    fe = frontend()
    status, hdrs, body = fe.get(path)
    assert (status, body) == (404, b"Unsupported URL Path")
    assert hdrs["content-type"] == "application/json"


# ---- /vms (http-api.md §3.3, §3.4) ----

def test_vms_lists_the_snapshot_in_order(frontend, ring):
    fe = frontend()
    for path in ["/vms", "/vms/", "/foo/../vms"]:
        status, hdrs, body = fe.get(path)
        assert status == 200
        assert hdrs["content-type"] == "application/json"
        assert body.decode() == ring.array()
        assert hdrs["x-vminfod-version"] == "0"
        assert hdrs["x-vminfod-epoch"] == ring.epoch


def test_vm_by_zonename_and_not_found(frontend, ring):
    fe = frontend()
    status, hdrs, body = fe.get("/vms/" + Z2)
    assert (status, body.decode()) == (200, ring.vms[Z2])
    assert hdrs["content-type"] == "application/json"
    status, _, body = fe.get("/vms/%s/extra" % Z1)
    assert (status, body.decode()) == (200, ring.vms[Z1])
    for seg in ["nope", "abc%2Ddef", Z1.upper()]:
        status, hdrs, body = fe.get("/vms/" + seg)
        assert (status, body.decode()) == (404, "VM Not Found: " + seg)
        assert hdrs["content-type"] == "application/json"


# ---- /status (http-api.md §3.2) ----

def test_status_keys_order_and_full(frontend):
    fe = frontend()
    status, hdrs, body = fe.get("/status")
    assert status == 200 and hdrs["content-type"] == "application/json"
    st = json.loads(body)
    assert list(st) == STATUS_KEYS
    assert st["pid"] == FACTS["pid"]
    assert st["numVms"] == 2
    assert st["eventsListeners"] == {}
    for q in ["?full=true", "?full=0", "?full=false", "?full&full", "?full=1&x"]:
        st = json.loads(fe.get("/status" + q)[2])
        # "children" (supervision facts) is this port's addition, after
        # the original's keys.
        assert list(st) == STATUS_KEYS + ["refreshLog", "fswatcher", "children"], q
    for q in ["?full", "?full=", "?fully=1", ""]:
        st = json.loads(fe.get("/status" + q)[2])
        assert list(st) == STATUS_KEYS, q


def test_status_lists_event_listeners(frontend):
    fe = frontend()
    s1 = fe.stream(headers={"User-Agent": "Vminfod CLI - h/1 (/x)"})
    r1 = s1.next_event()
    s2 = fe.stream()   # no User-Agent header at all
    r2 = s2.next_event()
    st = json.loads(fe.get("/status")[2])
    listeners = st["eventsListeners"]
    assert list(listeners) == [r1["uuid"], r2["uuid"]]
    l1 = listeners[r1["uuid"]]
    assert list(l1) == ["userAgent", "createdTime", "createdDate", "createdAgo"]
    assert l1["userAgent"] == "Vminfod CLI - h/1 (/x)"
    assert l1["createdDate"] == r1["date"]
    assert list(listeners[r2["uuid"]]) == ["createdTime", "createdDate", "createdAgo"]
    # A client that hangs up leaves the list without any event being sent.
    s1.close()
    wait_for(lambda: list(json.loads(fe.get("/status")[2])["eventsListeners"]) == [r2["uuid"]],
             10, "the closed stream to leave eventsListeners")
    s2.close()
    logs = fe.log_lines()
    created = [l for l in logs if l["msg"] == "new /events listener created"]
    assert [l["uuid"] for l in created] == [r1["uuid"], r2["uuid"]]
    assert all(l["component"] == "frontend" and l["name"] == "vminfod" for l in created)
    reqs = [l for l in logs if l["msg"] == "HTTP request"]
    assert reqs and reqs[0]["level"] == 30
    assert set(reqs[0]["req"]) == {"method", "url", "headers", "remoteAddress", "remotePort"}


# ---- /events (http-api.md §4, DESIGN.md §6) ----

def test_ready_line_then_events_in_order(frontend, ring):
    fe = frontend()
    s = fe.stream(headers={"User-Agent": "t"})
    assert s.status == 200
    assert s.headers["content-type"] == "application/json"
    line = s.next_line()
    ready = json.loads(line)
    assert list(ready) == ["type", "date", "uuid", "vms", "epoch", "version", "resumed"]
    assert ready["type"] == "ready"
    assert isinstance(ready["vms"], str)
    assert ready["vms"] == ring.array()
    assert json.loads(ready["vms"]) == json.loads(fe.get("/vms")[2])
    assert (ready["epoch"], ready["version"], ready["resumed"]) == (ring.epoch, 0, False)

    z3 = "1b7c4e2a-0000-4000-8000-000000000003"
    lines = [ring.event("create", z3, vm(z3, state="running")),
             ring.event("modify", Z1, vm(Z1, state="stopped")),
             ring.event("delete", Z2)]
    got = [s.next_line() for _ in lines]
    assert got == lines   # the published bytes, unchanged
    assert [json.loads(l)["version"] for l in got] == [1, 2, 3]
    status, hdrs, body = fe.get("/vms")
    assert body.decode() == ring.array()
    assert hdrs["x-vminfod-version"] == "3"
    s.close()


def test_ready_snapshot_matches_its_version(frontend, ring):
    """A ready at version V holds the state after events 1..V and the
    stream continues with V+1."""
    fe = frontend()
    ring.event("modify", Z1, vm(Z1, n=1))
    wait_for(lambda: fe.get("/vms")[1]["x-vminfod-version"] == "1", 10, "version 1")
    s = fe.stream()
    ready = s.next_event()
    assert ready["version"] == 1
    assert ready["vms"] == ring.array()
    nxt = ring.event("modify", Z2, vm(Z2, n=2))
    assert s.next_line() == nxt
    s.close()


def test_resume_since_gives_exactly_the_missed_events(frontend, ring):
    fe = frontend()
    lines = [ring.event("modify", Z1, vm(Z1, n=i)) for i in range(5)]
    wait_for(lambda: fe.get("/vms")[1]["x-vminfod-version"] == "5", 10, "version 5")
    epoch = ring.epoch
    s = fe.stream("/events?since=%s:2" % epoch)
    ready = s.next_event()
    assert list(ready) == ["type", "date", "uuid", "epoch", "version", "resumed"]
    assert (ready["epoch"], ready["version"], ready["resumed"]) == (epoch, 2, True)
    assert [s.next_line() for _ in range(3)] == lines[2:]
    more = ring.event("delete", Z2)
    assert s.next_line() == more
    s.close()

    # Up to date: nothing replayed, the next event follows.
    s = fe.stream("/events?since=%s%%3A6" % epoch)
    ready = s.next_event()
    assert (ready["version"], ready["resumed"]) == (6, True)
    nxt = ring.event("modify", Z1, vm(Z1, n=99))
    assert s.next_line() == nxt
    s.close()


@pytest.mark.parametrize("since", ["00000000-0000-4000-8000-000000000000:1",
                                   "garbage", "EPOCH:999", "EPOCH:-1", "EPOCH:"])
def test_resume_from_elsewhere_gets_a_full_ready(frontend, ring, since):
    fe = frontend()
    ring.event("modify", Z1, vm(Z1, n=1))
    wait_for(lambda: fe.get("/vms")[1]["x-vminfod-version"] == "1", 10, "version 1")
    s = fe.stream("/events?since=" + since.replace("EPOCH", ring.epoch))
    ready = s.next_event()
    assert ready["resumed"] is False
    assert ready["version"] == 1
    assert ready["vms"] == ring.array()
    s.close()


def test_doorbell_wakes_the_frontend(frontend, ring):
    fe = frontend(doorbell=True)
    s = fe.stream()
    s.next_event()
    line = ring.event("modify", Z1, vm(Z1, n=7))
    # Without the doorbell (and without test-mode polling) nothing moves.
    with pytest.raises(TimeoutError):
        s.next_line(timeout=0.3)
    fe.ring_doorbell()
    assert s.next_line() == line
    s.close()


def test_inherited_listening_socket(frontend, ring):
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(16)
    try:
        fe = frontend(listen_fd=lsock)
        assert fe.get("/ping")[2] == b'{"ping":"pong"}'
    finally:
        lsock.close()


def test_slow_subscriber_is_closed_once_lagged(frontend, tmp_path, request):
    doorbell = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    request.addfinalizer(lambda: os.close(doorbell))
    small = Ring(tmp_path / "small.ring", size="64K", doorbell_fd=doorbell)
    small.vms[Z1] = vm(Z1)
    small.snapshot()
    small.status(FACTS)
    request.addfinalizer(small.close)
    fe = frontend(ring=small, extra=["--sndbuf", "4096", "--doorbell-fd", str(doorbell)],
                  pass_fds=[doorbell])
    # A client that does not read: tiny receive buffer, set before connect.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", fe.port))
    sock.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
    other = fe.stream()
    other.next_event()
    pad = "x" * 2000
    for i in range(200):   # ~400 KB through a 64 KiB ring
        line = small.event("modify", Z1, vm(Z1, n=i, pad=pad))
        # A reading subscriber keeps up (paced: the frontend itself must
        # not fall behind the writer, or it would end every stream).
        assert other.next_line() == line
    other.close()
    # The stalled one: ready, some events, then the end of the stream.  The
    # final lagged line is sent only when its socket can take it; a socket
    # that is still full is closed without it.
    data = b""
    ended = False
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            ended = True
            break
        if not chunk:
            ended = True
            break
        data += chunk
        if b"0\r\n\r\n" in data[-16:] and b'"lagged"' in data:
            ended = True
            break
    sock.close()
    assert ended, "the stalled subscriber was never closed"
    assert data.startswith(b"HTTP/1.1 200"), data[:100]
    assert line.encode() not in data


def test_new_epoch_ends_streams_with_lagged(frontend, ring, tmp_path):
    fe = frontend()
    s = fe.stream()
    s.next_event()
    old = ring.epoch
    # Another size makes the writer start a new file with a new epoch.
    ring.open("2M")
    assert ring.epoch != old and ring.version == 0
    # The supervisor's first act on a new ring: a snapshot.  Until then
    # the frontend keeps serving the old state.
    ring.snapshot()
    ring.status(FACTS)
    err = s.wait_event(lambda e: e["type"] == "error", timeout=10, what="the lagged line")
    assert err["code"] == "lagged"
    assert s.next_line() is None
    s.close()
    s = fe.stream()
    ready = s.next_event()
    assert (ready["epoch"], ready["version"]) == (ring.epoch, 0)
    s.close()


def test_sigterm_ends_streams_and_exits_0(frontend):
    fe = frontend()
    s = fe.stream()
    s.next_event()
    fe.proc.send_signal(signal.SIGTERM)
    assert s.next_line() is None   # the final chunk, then the end
    assert fe.proc.wait(10) == 0
    s.close()


def test_connections_past_the_limit_get_503(frontend):
    fe = frontend(extra=["--max-connections", "2"])
    s1 = fe.stream()
    s1.next_event()
    s2 = fe.stream()
    s2.next_event()
    status, hdrs, body = fe.get("/ping")
    assert status == 503
    s1.close()
    wait_for(lambda: fe.get("/ping")[0] == 200, 10, "a free connection slot")
    s2.close()


def test_waits_for_the_ring_to_appear(frontend, tmp_path, request):
    """Started before the supervisor published anything, the frontend
    waits for the ring (bounded) instead of exiting."""
    class Late:
        path = str(tmp_path / "late.ring")
    made = []

    def publish_later():
        r = Ring(Late.path)
        made.append(r)
        r.status(FACTS)
        # An event, not a second snapshot at version 0: the frontend may
        # already have loaded the tool's initial empty one.
        r.event("create", Z1, vm(Z1))
    timer = threading.Timer(0.3, publish_later)
    timer.start()
    try:
        fe = frontend(ring=Late)
        wait_for(lambda: fe.get("/vms")[2].decode() == "[%s]" % vm(Z1), 10, "the snapshot")
    finally:
        timer.join()
        for r in made:
            r.close()
