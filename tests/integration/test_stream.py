"""The ring and the frontend end to end, through the real daemon.

vminfod (supervisor) binds the socket, publishes into the ring and runs
vminfod-frontend as a child; these tests talk to it over HTTP only:

  * exact bytes and shapes of every endpoint (spec/http-api.md §2-§4 and
    the design's additions: version, epoch, resumed, X-Vminfod-* headers);
  * a client mirroring the stream stays equal to GET /vms at the same
    version while scripts/activity makes >= 1,000 changes;
  * the frontend killed with SIGKILL 20 times while clients connect in a
    loop (no connection is ever refused) and a subscriber resumes with
    ?since=<epoch>:<version> (no gap, no repeat);
  * curl and `python3 -m json.tool` as a person would use them;
  * a foreign or truncated ring file at start gets a new epoch.

Run as root, the daemon starts its frontend as `nobody` (the default), so
the run directory must be searchable by that user: pytest's tmp_path is
not (0700), and each daemon here gets a 0755 directory under /tmp as its
--rundir instead, as /run/vminfod is in production.
"""

import json
import os
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path

import pytest

import helpers
from helpers import (Daemon, EventStream, frontend_pid, read_index, script,
                     wait_for)

STATUS_KEYS = ["pid", "uptime", "memory", "state", "status", "numVms",
               "curDate", "curTime", "queue", "lastRefresh", "refreshErrors",
               "eventsListeners"]
FULL_KEYS = STATUS_KEYS + ["refreshLog", "fswatcher", "children"]
READY_KEYS = ["type", "date", "uuid", "vms", "epoch", "version", "resumed"]
RESUMED_READY_KEYS = ["type", "date", "uuid", "epoch", "version", "resumed"]
EVENT_KEYS = {
    "create": ["type", "date", "zonename", "uuid", "vm", "version"],
    "modify": ["type", "date", "zonename", "uuid", "vm", "changes",
               "version"],
    "delete": ["type", "date", "zonename", "uuid", "version"],
}
ISO_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
UUID4_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}"
                      r"-[0-9a-f]{12}$")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}"
                     r"-[0-9a-f]{12}$")
PRETTY_RE = re.compile(r"^\d+\.\d{9}s \(.+\)$")
HRTIME_RE = re.compile(r"^\d+\.\d{9}$")


def ordered(text):
    """Parse JSON keeping key order (objects become lists of pairs' dict)."""
    return json.loads(text, object_pairs_hook=OrderedDict)


def keys(text):
    """The top-level keys of a JSON object text, in order."""
    return list(ordered(text).keys())


def vms_version(hdrs):
    """(epoch, version) from the X-Vminfod-* headers of a /vms answer."""
    assert "x-vminfod-version" in hdrs and "x-vminfod-epoch" in hdrs, hdrs
    return hdrs["x-vminfod-epoch"], int(hdrs["x-vminfod-version"])


def raw_request(port, data, timeout=5.0):
    """Send raw request bytes, read until the server closes; the reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
        return out


def split_reply(reply):
    """(status, headers with lowercase names, body) of a raw HTTP reply."""
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    hdrs = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        hdrs[name.strip().lower()] = value.strip()
    return int(lines[0].split(" ")[1]), hdrs, body


def dump(root):
    """`vminfod --root ROOT --dump` parsed."""
    proc = subprocess.run([str(helpers.build_dir() / "vminfod"), "--root",
                           str(root), "--dump"], stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def wait_quiet(d, timeout=30.0):
    """Wait until the daemon's queue is idle (empty for 1 s, nothing
    running): every change made so far has been published."""
    def quiet():
        st = d.get_json("/status")
        q = st["queue"]
        vq = q["vasync_queue"]
        return (q["idle"] and not q["paused"] and vq["npending"] == 0
                and vq["nqueued"] == 0)
    wait_for(quiet, timeout, "an idle queue", interval=0.05, max_interval=0.2)


def diff_states(mine, theirs):
    """A short description of how two VM lists differ (for messages)."""
    a = OrderedDict((vm["zonename"], vm) for vm in mine)
    b = OrderedDict((vm["zonename"], vm) for vm in theirs)
    out = []
    for z in a:
        if z not in b:
            out.append("only in stream state: %s" % z)
        elif a[z] != b[z]:
            ka = [k for k in set(a[z]) | set(b[z])
                  if a[z].get(k) != b[z].get(k)]
            out.append("%s differs in %s" % (z, sorted(ka)))
    for z in b:
        if z not in a:
            out.append("only in /vms: %s" % z)
    if not out and list(a) != list(b):
        out.append("same VMs, different order")
    return "; ".join(out[:10]) + (" ..." if len(out) > 10 else "")


def public_dir():
    """A new directory every user can search (the ring's directory)."""
    d = Path(tempfile.mkdtemp(prefix="vminfod-stream-", dir="/tmp"))
    os.chmod(d, 0o755)
    return d


def new_daemon(root, work, extra=(), rundir=None):
    """A Daemon (not started) whose --rundir the frontend's user can
    reach; returns (daemon, directory to remove afterwards or None)."""
    d = Daemon(root, work, extra=extra)
    pub = None
    if rundir is None:
        pub = public_dir()
        rundir = pub / "run"
    d.rundir = Path(rundir)
    return d, pub


@pytest.fixture
def daemon(tmp_path):
    """Like conftest's daemon factory, with a reachable --rundir: every
    daemon still running at teardown must stop cleanly (exit 0)."""
    started = []
    dirs = []

    def start(root, *extra):
        d, pub = new_daemon(root, tmp_path / ("daemon%d" % len(started)),
                            extra)
        started.append(d)
        dirs.append(pub)
        return d.start()
    yield start
    errors = []
    for d in started:
        try:
            d.stop()
        except AssertionError as e:
            errors.append(str(e))
    for pub in dirs:
        shutil.rmtree(pub, ignore_errors=True)
    if errors:
        pytest.fail("\n".join(errors), pytrace=False)


# ---------------------------------------------------------------------------
# 1. Exact bytes and shapes through the daemon


@pytest.fixture(scope="module")
def quiet_daemon(tmp_path_factory):
    """A daemon on a 30-zone host nothing changes during these tests."""
    base = tmp_path_factory.mktemp("stream-shapes")
    root = helpers.run_mkhost(base / "host", 30, seed=7)
    d, pub = new_daemon(root, base / "daemon")
    try:
        d.start()
        yield d
        d.stop()
    finally:
        d.kill()
        shutil.rmtree(pub, ignore_errors=True)


def test_ping_exact(quiet_daemon):
    d = quiet_daemon
    for path in ("/ping", "/ping/x", "//ping", "/ping?x=1", "/foo/../ping"):
        status, hdrs, body = d.get(path)
        assert status == 200, path
        assert body == b'{"ping":"pong"}', (path, body)
        assert hdrs["content-type"] == "application/json", path


@pytest.mark.parametrize("method", ["POST", "HEAD", "OPTIONS", "PUT",
                                    "DELETE"])
def test_other_methods_are_400_empty(quiet_daemon, method):
    for path in ("/ping", "/vms", "/events", "/nope"):
        req = ("%s %s HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
               "Connection: close\r\n\r\n" % (method, path)).encode()
        status, hdrs, body = split_reply(raw_request(quiet_daemon.port, req))
        assert status == 400, (method, path)
        assert hdrs.get("content-type") == "application/json", (method, hdrs)
        assert body == b"", (method, path, body)
        if "content-length" in hdrs:
            assert hdrs["content-length"] == "0", (method, hdrs)


def test_unknown_paths(quiet_daemon):
    d = quiet_daemon
    # (Exactly "/" is left out: the frontend serves its live page there.)
    for path in ("/nope", "//", "/Ping", "/vmsx", "/events-x", "/x/ping"):
        status, hdrs, body = d.get(path)
        assert (status, body) == (404, b"Unsupported URL Path"), path
        assert hdrs["content-type"] == "application/json"
    status, hdrs, body = d.get("/vms/nope")
    assert (status, body) == (404, b"VM Not Found: nope")
    assert hdrs["content-type"] == "application/json"
    # The raw, undecoded segment is what is looked up and echoed.
    status, _, body = d.get("/vms/abc%2Ddef")
    assert (status, body) == (404, b"VM Not Found: abc%2Ddef")


def test_status_keys_and_full(quiet_daemon):
    d = quiet_daemon
    for query, want in (("", STATUS_KEYS), ("?full=", STATUS_KEYS),
                        ("?full", STATUS_KEYS), ("?full=true", FULL_KEYS),
                        ("?full=false", FULL_KEYS), ("?full=0", FULL_KEYS)):
        status, hdrs, body = d.get("/status" + query)
        assert status == 200, query
        assert hdrs["content-type"] == "application/json"
        outside = re.sub(rb'"(?:[^"\\]|\\.)*"', b'""', body)
        assert not re.search(rb"\s", outside), \
            "status body not compact: %r" % body[:200]
        st = ordered(body)
        assert list(st) == want, query
        assert list(st["memory"]) == ["rss", "heapTotal", "heapUsed"]
        assert st["pid"] == d.pid
        assert st["memory"]["rss"] > 0
        assert st["state"] == "running"
        assert st["numVms"] == 30
        assert PRETTY_RE.match(st["uptime"]), st["uptime"]
        assert ISO_RE.match(st["curDate"]), st["curDate"]
        assert HRTIME_RE.match(st["curTime"]), st["curTime"]
        assert PRETTY_RE.match(st["lastRefresh"]), st["lastRefresh"]
        assert st["refreshErrors"] == []
        assert list(st["queue"])[:4] == ["now", "paused", "idle",
                                         "vasync_queue"]
        if "fswatcher" in st:
            assert isinstance(st["fswatcher"]["watching"], list)
            assert st["fswatcher"]["running"] is True
            assert isinstance(st["refreshLog"], list)


def test_vms_equals_dump_and_index(quiet_daemon):
    d = quiet_daemon
    status, hdrs, body = d.get("/vms")
    assert status == 200
    assert hdrs["content-type"] == "application/json"
    epoch, version = vms_version(hdrs)
    assert UUID_RE.match(epoch), epoch
    assert version == 0  # nothing changed since the start
    vms = json.loads(body)
    assert vms == dump(d.root)
    index = read_index(d.root)
    assert len(vms) == len(index) == 30
    assert [vm["zonename"] for vm in vms] == [z["zonename"] for z in index]
    # Each element is also what /vms/<zonename> answers, same bytes.
    first = vms[0]["zonename"]
    status, hdrs, one = d.get("/vms/" + first)
    assert status == 200 and hdrs["content-type"] == "application/json"
    assert json.loads(one) == vms[0]
    assert one in body


def test_ready_line_shape(quiet_daemon):
    d = quiet_daemon
    _, hdrs, body = d.get("/vms")
    epoch, version = vms_version(hdrs)
    with d.stream("/events", headers={"User-Agent": "systest/1"}) as s:
        assert s.status == 200
        assert s.headers["content-type"] == "application/json"
        line = s.next_line(10)
        assert line.startswith('{"type":"ready","date":"'), line[:80]
        assert keys(line) == READY_KEYS
        ready = json.loads(line)
        assert ISO_RE.match(ready["date"]), ready["date"]
        assert UUID4_RE.match(ready["uuid"]), ready["uuid"]
        assert isinstance(ready["vms"], str)
        # The quirk: a string holding exactly the /vms body.
        assert ready["vms"].encode("utf-8") == body
        assert json.loads(ready["vms"]) == json.loads(body)
        assert ready["epoch"] == epoch
        assert ready["version"] == version
        assert ready["resumed"] is False
        # The stream is listed in /status under its id.
        lst = d.get_json("/status")["eventsListeners"]
        assert ready["uuid"] in lst, lst
        entry = lst[ready["uuid"]]
        assert list(entry) == ["userAgent", "createdTime", "createdDate",
                               "createdAgo"]
        assert entry["userAgent"] == "systest/1"
        assert entry["createdDate"] == ready["date"]
    # Closed streams leave the list.
    wait_for(lambda: ready["uuid"] not in
             d.get_json("/status")["eventsListeners"], 10,
             "the closed stream to leave eventsListeners")


def test_event_line_shapes(mkhost, daemon):
    """create / modify / delete lines: key order, values, versions."""
    root = mkhost(5, seed=11)
    d = daemon(root)
    with d.stream() as s:
        ready = json.loads(s.next_line(10))
        v = ready["version"]
        created = helpers.mkhost_change(root, "--change", "--kind", "create",
                                        "--seed", "3")[0]["zonename"]
        lines = []

        def read_until(pred, what):
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                line = s.next_line(deadline - time.monotonic())
                assert line is not None, "stream ended"
                lines.append(line)
                if pred(json.loads(line)):
                    return json.loads(line)
            raise AssertionError("timed out waiting for " + what)
        ev = read_until(lambda e: e["type"] == "create"
                        and e["zonename"] == created, "the create event")
        zone = read_index(root)[0]["zonename"]
        helpers.mkhost_change(root, "--set-ram", zone, "2048")
        ev = read_until(lambda e: e["type"] == "modify"
                        and e["zonename"] == zone
                        and e["vm"]["ram"] == 2048, "the modify event")
        assert any(c["path"] == ["ram"] and c["newValue"] == 2048
                   for c in ev["changes"]), ev["changes"]
        status, _, one = d.get("/vms/" + zone)
        assert status == 200 and json.loads(one) == ev["vm"]
        helpers.mkhost_change(root, "--change", "--kind", "delete",
                              "--seed", "4")
        ev = read_until(lambda e: e["type"] == "delete", "a delete event")
        seen = set()
        for i, line in enumerate(lines):
            e = json.loads(line)
            assert keys(line) == EVENT_KEYS[e["type"]], line[:200]
            assert line.startswith('{"type":"%s","date":"' % e["type"])
            assert ISO_RE.match(e["date"])
            assert e["uuid"] == e["zonename"]  # mkhost zones are UUID-named
            assert e["version"] == v + 1 + i
            if e["type"] == "modify":
                assert e["changes"], line[:200]
                for c in e["changes"]:
                    assert list(c)[:3] == ["prettyPath", "path", "action"]
            seen.add(e["type"])
        assert seen == {"create", "modify", "delete"}
        status, _, body = d.get("/vms/" + ev["zonename"])
        assert (status, body) == (404, ("VM Not Found: %s"
                                        % ev["zonename"]).encode())


# ---------------------------------------------------------------------------
# 2. Consistency under load


class Mirror(threading.Thread):
    """A subscriber that keeps every event it reads, so the state at any
    version since its ready line can be rebuilt (state_at)."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.stream = EventStream(port, "/events", timeout=10)
        line = self.stream.next_line(10)
        assert keys(line) == READY_KEYS
        self.ready = json.loads(line)
        self.base = OrderedDict((vm["zonename"], vm)
                                for vm in json.loads(self.ready["vms"]))
        self.events = []
        self.bad_keys = []
        self.last_version = self.ready["version"]
        self.stop = threading.Event()
        self.error = None
        self.ended = False

    def run(self):
        try:
            while not self.stop.is_set():
                try:
                    line = self.stream.next_line(0.2)
                except TimeoutError:
                    continue
                if line is None:
                    self.ended = True
                    return
                ev = json.loads(line)
                if keys(line) != EVENT_KEYS.get(ev["type"]):
                    self.bad_keys.append(line[:300])
                self.events.append(ev)
                self.last_version = ev["version"]
        except Exception as e:  # reported by the test thread
            self.error = e

    def state_at(self, version):
        state = OrderedDict(self.base)
        for ev in self.events:
            if ev["version"] > version:
                break
            if ev["type"] == "delete":
                state.pop(ev["zonename"], None)
            else:
                state[ev["zonename"]] = ev["vm"]
        return list(state.values())

    def close(self):
        self.stop.set()
        self.join(5)
        self.stream.close()


def checkpoint(d, mirror, timeout=20.0):
    """GET /vms and compare it with the mirror's state at the same
    version; returns that version."""
    status, hdrs, body = d.get("/vms")
    assert status == 200
    epoch, version = vms_version(hdrs)
    assert epoch == mirror.ready["epoch"]
    wait_for(lambda: mirror.error or mirror.ended or
             mirror.last_version >= version, timeout,
             "the stream to reach version %d (at %d)"
             % (version, mirror.last_version))
    assert mirror.error is None, mirror.error
    assert mirror.last_version >= version, "stream ended at %d" \
        % mirror.last_version
    vms = json.loads(body)
    mine = mirror.state_at(version)
    assert mine == vms, "stream state != /vms at version %d: %s" % (
        version, diff_states(mine, vms))
    return version


def test_consistency_under_load(mkhost, daemon):
    root = mkhost(50, seed=21)
    d = daemon(root)
    mirror = Mirror(d.port)
    mirror.start()
    try:
        act_out = open(root.parent / "activity.out", "w+")
        act = subprocess.Popen(
            [sys.executable, str(script("activity")), str(root), "--rate",
             "500", "--count", "1000", "--seed", "5", "--duration", "30"],
            stdin=subprocess.DEVNULL, stdout=act_out,
            stderr=subprocess.PIPE)
        checked = []
        deadline = time.monotonic() + 40
        while act.poll() is None and time.monotonic() < deadline:
            checked.append(checkpoint(d, mirror))
            time.sleep(0.15)  # spacing between checkpoints, not a settle
        _, err = act.communicate(timeout=30)
        assert act.returncode == 0, err
        act_out.seek(0)
        changes = [json.loads(l) for l in act_out if l.strip()]
        act_out.close()
        assert len(changes) == 1000
        assert len(checked) >= 3, "only %d checkpoints during the load" \
            % len(checked)
        wait_quiet(d)
        final = checkpoint(d, mirror)
        # Nothing more arrives once the daemon is idle.
        assert mirror.last_version == final
        versions = [e["version"] for e in mirror.events]
        v0 = mirror.ready["version"]
        assert versions == list(range(v0 + 1, v0 + 1 + len(versions))), \
            "versions not consecutive"
        assert mirror.bad_keys == [], mirror.bad_keys[:3]
        types = {e["type"] for e in mirror.events}
        assert types == {"create", "modify", "delete"}, types
        # What was published is what the host now holds.
        assert d.get_json("/vms") == dump(root)
        print("load: %d changes, %d events, %d checkpoints (versions %s)"
              % (len(changes), len(versions), len(checked),
                 checked[:3] + ["..."] + checked[-2:]))
    finally:
        mirror.close()


# ---------------------------------------------------------------------------
# 3. Frontend killed with SIGKILL 20 times


class PingLoop(threading.Thread):
    """Connect and GET /ping in a tight bounded loop, classifying every
    failure: refused (must never happen), reset or closed early (a request
    in flight on a killed frontend), timeout, wrong answer."""

    REQ = b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"

    def __init__(self, port, max_requests=400000, max_seconds=90):
        super().__init__(daemon=True)
        self.port = port
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.stop = threading.Event()
        self.counts = {"ok": 0, "refused": 0, "reset": 0, "timeout": 0,
                       "bad": 0}
        self.bad = []

    def run(self):
        deadline = time.monotonic() + self.max_seconds
        for _ in range(self.max_requests):
            if self.stop.is_set() or time.monotonic() > deadline:
                break
            try:
                reply = raw_request(self.port, self.REQ, timeout=5)
            except ConnectionRefusedError:
                self.counts["refused"] += 1
                continue
            except (ConnectionResetError, BrokenPipeError):
                self.counts["reset"] += 1
                continue
            except socket.timeout:
                self.counts["timeout"] += 1
                continue
            if not reply:
                self.counts["reset"] += 1   # closed before any answer
            elif reply.startswith(b"HTTP/1.1 200 ") and \
                    reply.endswith(b'{"ping":"pong"}'):
                self.counts["ok"] += 1
            else:
                self.counts["bad"] += 1
                self.bad.append(reply[:200])


class ResumingSubscriber(threading.Thread):
    """An /events client that reconnects with ?since=<epoch>:<version>
    each time its stream drops and checks it gets exactly the events it
    missed."""

    def __init__(self, port, max_seconds=120):
        super().__init__(daemon=True)
        self.port = port
        self.max_seconds = max_seconds
        self.stop = threading.Event()
        self.epoch = None
        self.version = None
        self.first_version = None
        self.state = OrderedDict()
        self.versions = []
        self.errors = []
        self.counts = {"connects": 0, "resumed": 0, "drops": 0,
                       "refused": 0, "failed_before_ready": 0}

    def _connect(self):
        path = "/events" if self.epoch is None else \
            "/events?since=%s:%d" % (self.epoch, self.version)
        self.counts["connects"] += 1
        try:
            s = EventStream(self.port, path, timeout=5)
        except ConnectionRefusedError:
            self.counts["refused"] += 1
            return None
        except (OSError, AssertionError, TimeoutError):
            self.counts["failed_before_ready"] += 1
            return None
        try:
            line = s.next_line(5)
        except (OSError, TimeoutError):
            line = None
        if line is None:
            s.close()
            self.counts["failed_before_ready"] += 1
            return None
        if s.status != 200:
            self.errors.append("status %d on %s" % (s.status, path))
            s.close()
            return None
        ready = json.loads(line)
        if self.epoch is None:
            assert keys(line) == READY_KEYS
            self.epoch = ready["epoch"]
            self.version = self.first_version = ready["version"]
            for vm in json.loads(ready["vms"]):
                self.state[vm["zonename"]] = vm
        elif not ready.get("resumed"):
            self.errors.append("not resumed at %s:%d: %s" % (
                self.epoch, self.version, line[:200]))
            # Start over from the snapshot so the run can go on.
            self.epoch = ready["epoch"]
            self.version = ready["version"]
            self.state = OrderedDict((vm["zonename"], vm)
                                     for vm in json.loads(ready["vms"]))
        else:
            self.counts["resumed"] += 1
            if keys(line) != RESUMED_READY_KEYS:
                self.errors.append("resumed ready keys: %s" % line)
            if ready["epoch"] != self.epoch or \
                    ready["version"] != self.version:
                self.errors.append("resumed ready at %s:%s, asked %s:%d" % (
                    ready["epoch"], ready["version"], self.epoch,
                    self.version))
        return s

    def run(self):
        deadline = time.monotonic() + self.max_seconds
        s = None
        try:
            while not self.stop.is_set() and time.monotonic() < deadline:
                if s is None:
                    s = self._connect()
                    continue
                try:
                    line = s.next_line(0.2)
                except TimeoutError:
                    continue
                except OSError:
                    line = None
                if line is None:
                    self.counts["drops"] += 1
                    s.close()
                    s = None
                    continue
                ev = json.loads(line)
                if ev["version"] != self.version + 1:
                    self.errors.append("after version %d got %d" % (
                        self.version, ev["version"]))
                self.version = ev["version"]
                self.versions.append(ev["version"])
                if ev["type"] == "delete":
                    self.state.pop(ev["zonename"], None)
                else:
                    self.state[ev["zonename"]] = ev["vm"]
        except Exception as e:
            self.errors.append("subscriber thread: %r" % e)
        finally:
            if s is not None:
                s.close()


def test_frontend_kill9_x20(mkhost, daemon, record_property):
    root = mkhost(40, seed=31)
    d = daemon(root)
    rng = random.Random(1234)
    sub = ResumingSubscriber(d.port)
    sub.start()
    wait_for(lambda: sub.epoch is not None or sub.errors, 10,
             "the subscriber's first ready")
    pings = PingLoop(d.port)
    pings.start()
    act = subprocess.Popen(
        [sys.executable, str(script("activity")), str(root), "--rate", "40",
         "--seed", "9", "--duration", "60", "--count", "3000"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE)
    kills = []
    try:
        # The supervisor puts a child that exits more than 5 times in
        # 10 s into maintenance (restart after 1 s, then doubling), so the
        # kills come in bursts of at most 5 per 10.3 s.  Within a burst the
        # moment varies: as soon as the new pid exists (still starting
        # up), right after the subscriber resumed on it, or after a random
        # delay while requests are in flight.
        modes = ["immediate", "after-resume", "random", "random",
                 "after-resume"]
        pid = wait_for(lambda: frontend_pid(d.pid), 10, "the frontend pid")
        for i in range(20):
            if i >= 5:
                start_ok = kills[i - 5][0] + 10.3
                while time.monotonic() < start_ok:
                    time.sleep(min(0.1, start_ok - time.monotonic()))
            mode = modes[i % 5]
            if mode == "after-resume":
                # A resume counted after the previous kill happened on
                # the frontend now running.
                wait_for(lambda: sub.counts["resumed"] > resumed_at_kill,
                         10, "the subscriber to resume on the new frontend")
                # Let a few events flow through the resumed stream.
                time.sleep(rng.uniform(0.05, 0.3))
            elif mode == "random":
                time.sleep(rng.uniform(0.0, 0.25))
            assert d.alive(), d.output_tail()
            os.kill(pid, signal.SIGKILL)
            resumed_at_kill = sub.counts["resumed"]
            kills.append((time.monotonic(), pid, mode))
            old = pid
            pid = wait_for(lambda: (lambda p: p if p and p != old else None)(
                frontend_pid(d.pid)), 10, "a new frontend after kill %d"
                % (i + 1))
        # After the last kill: the frontend serves again.
        wait_for(lambda: pings.counts["ok"] > 0 and
                 d.get("/ping")[0] == 200, 10, "/ping after the kills")
    finally:
        if act.poll() is None:
            act.send_signal(signal.SIGTERM)
        _, err = act.communicate(timeout=30)
        pings.stop.set()
        pings.join(15)
    assert act.returncode == 0, err
    try:
        wait_quiet(d)
        status, hdrs, body = d.get("/vms")
        epoch, version = vms_version(hdrs)
        assert epoch == sub.epoch
        wait_for(lambda: sub.version >= version or sub.errors, 20,
                 "the subscriber to reach version %d" % version)
    finally:
        sub.stop.set()
        sub.join(10)
    final_status = d.get_json("/status")
    summary = ("kills=%d pings=%s subscriber=%s versions=%d"
               % (len(kills), pings.counts, sub.counts, len(sub.versions)))
    print(summary)
    record_property("pings", pings.counts)
    record_property("subscriber", sub.counts)
    assert pings.counts["refused"] == 0, summary
    assert sub.counts["refused"] == 0, summary
    assert pings.counts["timeout"] == 0, summary
    assert pings.counts["bad"] == 0, (summary, pings.bad[:3])
    assert pings.counts["ok"] > 100, summary
    assert sub.errors == [], (summary, sub.errors[:5])
    assert sub.first_version == 0
    assert sub.versions == list(range(1, len(sub.versions) + 1))
    assert sub.version == version
    assert list(sub.state.values()) == json.loads(body), diff_states(
        list(sub.state.values()), json.loads(body))
    # The stream dropped with (almost) every kill and always resumed.
    assert sub.counts["drops"] >= 10, summary
    assert sub.counts["resumed"] >= sub.counts["drops"] - \
        sub.counts["failed_before_ready"], summary
    assert final_status["state"] == "running"
    # No maintenance: the schedule stayed under the crash-loop limit.
    maint = [r for r in d.log_lines() if "maintenance" in r.get("msg", "")]
    assert maint == [], maint[:2]


# ---------------------------------------------------------------------------
# 4. As a person would: curl


def test_curl_events_and_status(mkhost, daemon):
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    root = mkhost(5, seed=41)
    d = daemon(root)
    proc = subprocess.Popen([curl, "-sN", "--max-time", "20",
                             "127.0.0.1:%d/events" % d.port],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        buf = b""

        def line(timeout):
            nonlocal buf
            deadline = time.monotonic() + timeout
            while b"\n" not in buf:
                left = deadline - time.monotonic()
                assert left > 0, "curl printed no line in %ss: %r" % (
                    timeout, buf[:200])
                r, _, _ = select.select([proc.stdout], [], [], left)
                if r:
                    data = os.read(proc.stdout.fileno(), 65536)
                    assert data, "curl exited: %s" % proc.stderr.read()
                    buf += data
            out, _, buf = buf.partition(b"\n")
            return json.loads(out)
        ready = line(10)
        assert ready["type"] == "ready" and ready["resumed"] is False
        assert len(json.loads(ready["vms"])) == 5
        zone = read_index(root)[2]["zonename"]
        helpers.mkhost_change(root, "--set-ram", zone, "4096")
        deadline = time.monotonic() + 15
        while True:
            ev = line(max(0.1, deadline - time.monotonic()))
            if ev["type"] == "modify" and ev["zonename"] == zone and \
                    ev["vm"]["ram"] == 4096:
                break
        assert ev["version"] > ready["version"]
        assert list(ev)[-1] == "version"
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()
    py = shutil.which("python3") or sys.executable
    out = subprocess.run(["bash", "-c", "set -o pipefail; curl -s "
                          "127.0.0.1:%d/status | %s -m json.tool"
                          % (d.port, py)], capture_output=True, text=True,
                         timeout=20)
    assert out.returncode == 0, out.stderr
    st = json.loads(out.stdout)
    assert list(st) == STATUS_KEYS and st["numVms"] == 5
    assert out.stdout.startswith('{\n    "pid": ')


# ---------------------------------------------------------------------------
# 5. A foreign or corrupt ring file at start


def start_on(root, work, rundir, ring_size="1M"):
    d, _ = new_daemon(root, work, ["--ring-size", ring_size], rundir)
    return d.start()


def ready_of(d, path="/events"):
    with d.stream(path) as s:
        return json.loads(s.next_line(10))


def test_foreign_ring_gets_new_epoch(mkhost, tmp_path):
    pub = public_dir()
    try:
        foreign_ring(mkhost, tmp_path, pub / "run")
    finally:
        shutil.rmtree(pub, ignore_errors=True)


def foreign_ring(mkhost, tmp_path, rundir):
    root = mkhost(8, seed=51)
    work = tmp_path / "daemon"
    ring = rundir / "vminfod.ring"
    d = start_on(root, work, rundir)
    try:
        r1 = ready_of(d)
        helpers.mkhost_change(root, "--set-ram", read_index(root)[0]
                              ["zonename"], "3072")
        wait_for(lambda: vms_version(d.get("/vms")[1])[1] >= 1, 15,
                 "the change to be published")
        _, hdrs, _ = d.get("/vms")
        epoch1, version1 = vms_version(hdrs)
        assert epoch1 == r1["epoch"]
    finally:
        d.stop()

    # A valid ring file is kept: same epoch, resume across the restart.
    d = start_on(root, work, rundir)
    try:
        r2 = ready_of(d, "/events?since=%s:%d" % (epoch1, version1))
        assert r2["epoch"] == epoch1 and r2["resumed"] is True, r2
        assert d.wait_log(lambda r: r.get("msg", "").endswith(
            "kept: epoch %s, version %d" % (epoch1, version1)), 5)
    finally:
        d.stop()

    epochs = {epoch1}
    for what, why, make in (
            ("garbage", "foreign magic",
             lambda old: bytes(random.Random(5).getrandbits(8)
                               for _ in range(1 << 16))),
            ("truncated copy", "truncated", lambda old: old[:4096])):
        old = ring.read_bytes()
        ring.write_bytes(make(old))
        d = start_on(root, work, rundir)
        try:
            ready = ready_of(d, "/events?since=%s:%d" % (epoch1, version1))
            assert ready["resumed"] is False, (what, ready)
            assert "vms" in ready
            new = ready["epoch"]
            assert UUID_RE.match(new)
            assert new not in epochs, "%s: epoch %s reused" % (what, new)
            epochs.add(new)
            rec = d.wait_log(lambda r: r.get("epoch") == new and
                             "new epoch" in r.get("msg", ""), 5,
                             "the new epoch logged")
            assert rec["why"] == why, (what, rec)
            _, hdrs, body = d.get("/vms")
            assert vms_version(hdrs)[0] == new
            assert json.loads(ready["vms"]) == json.loads(body) == dump(root)
            # The state is whole: the earlier change is in the snapshot.
            assert json.loads(body)[0]["ram"] == 3072
        finally:
            d.stop()


# ---------------------------------------------------------------------------
# A run directory the frontend's user cannot search


@pytest.mark.skipif(os.geteuid() != 0,
                    reason="the frontend changes user only under root")
def test_unreachable_rundir_is_not_silently_stale(mkhost, tmp_path):
    """With the default frontend user and a --rundir under pytest's 0700
    tmp_path, the daemon must either refuse to start or publish events;
    answering /ping while never delivering an event is the failure."""
    root = mkhost(3, seed=61)
    d = Daemon(root, tmp_path / "daemon")   # rundir under tmp_path (0700)
    try:
        d.start()
    except AssertionError:
        return  # refusing to start (with a log message) is acceptable
    try:
        with d.stream() as s:
            ready = json.loads(s.next_line(10))
            zone = read_index(root)[0]["zonename"]
            helpers.mkhost_change(root, "--set-ram", zone, "2048")
            ev = s.wait_event(lambda e: e.get("zonename") == zone, 5,
                              "the modify event")
            assert ev["version"] == ready["version"] + 1
    finally:
        d.kill()


# ---------------------------------------------------------------------------
# A stream far behind: more than one turn of direct writes (1,024 events)


@pytest.mark.parametrize("sse", [False, True])
def test_long_backlog_resume_complete_in_order(mkhost, daemon, sse):
    """A stream resumed from far back receives the whole backlog in order,
    in valid chunks (the direct-write path takes several turns for it,
    and a small receive buffer makes its writes partial)."""
    root = mkhost(40, seed=91)
    d = daemon(root)
    _, hdrs, _ = d.get("/vms")
    epoch, v0 = hdrs["x-vminfod-epoch"], int(hdrs["x-vminfod-version"])
    target = v0 + 1300
    for _ in range(10):
        helpers.mkhost_change(root, "--change", "--kind", "metadata",
                              "--count", "800", "--seed", str(v0 + _))
        wait_for(lambda: int(d.get("/vms")[1]["x-vminfod-version"]) > v0, 10,
                 "events from the changes")
        if int(d.get("/vms")[1]["x-vminfod-version"]) >= target:
            break
    _, hdrs, _ = d.get("/vms")
    last = int(hdrs["x-vminfod-version"])
    assert last >= target, "only %d events" % (last - v0)
    headers = {"Accept": "text/event-stream"} if sse else None
    s = d.stream("/events?since=%s:%d" % (epoch, v0), headers=headers)
    try:
        events = []   # (SSE id or None, event)
        while not events or events[-1][1]["version"] < last:
            if sse:
                idline = s.next_line(30)
                data = s.next_line(30)
                assert s.next_line(30) == "", "an SSE event ends with a blank line"
                assert data.startswith("data: "), data[:40]
                events.append((idline, json.loads(data[6:])))
            else:
                ev = s.next_event(30)
                assert ev is not None, "stream ended"
                events.append((None, ev))
        ready = events[0][1]
        assert ready["resumed"] is True and ready["version"] == v0
        assert [ev["version"] for _, ev in events[1:]] == \
            list(range(v0 + 1, last + 1))
        if sse:
            for idline, ev in events:
                assert idline == "id: %s:%d" % (epoch, ev["version"])
    finally:
        s.close()


# ---------------------------------------------------------------------------
# A fan-out longer than one slice (1,024 streams per turn of the loop)


def test_fanout_over_many_slices_every_stream_every_event(mkhost, daemon):
    """2,500 streams (three slices of the fan-out) each receive every one
    of a burst of events exactly once and in order, including events that
    arrive while a round is in progress."""
    import resource
    import selectors
    n = 2500
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < n + 200:
        pytest.skip("RLIMIT_NOFILE hard limit %d is too low" % hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, n + 200), hard))
    root = mkhost(10, seed=93)
    d = daemon(root)
    zones = [z["zonename"] for z in read_index(root)]
    _, hdrs, _ = d.get("/vms")
    epoch, v0 = hdrs["x-vminfod-epoch"], int(hdrs["x-vminfod-version"])
    req = ("GET /events?since=%s:%d HTTP/1.1\r\nHost: x\r\n\r\n"
           % (epoch, v0)).encode()
    sel = selectors.DefaultSelector()
    conns = []
    try:
        for i in range(n):
            c = socket.create_connection(("127.0.0.1", d.port), timeout=10)
            c.sendall(req)
            c.setblocking(False)
            st = {"sock": c, "raw": b"", "dec": None, "lines": b"",
                  "versions": []}
            conns.append(st)
            sel.register(c, selectors.EVENT_READ, st)

        def pump_reads(until, want):
            while time.monotonic() < until:
                if all(want(st) for st in conns):
                    return True
                for key, _ in sel.select(0.2):
                    st = key.data
                    data = key.fileobj.recv(1 << 16)
                    assert data, "a stream ended"
                    if st["dec"] is None:
                        st["raw"] += data
                        head, sep, rest = st["raw"].partition(b"\r\n\r\n")
                        if not sep:
                            continue
                        assert head.startswith(b"HTTP/1.1 200"), head[:80]
                        st["dec"] = helpers.ChunkedDecoder()
                        data = rest
                    st["lines"] += st["dec"].feed(data)
                    *full, st["lines"] = st["lines"].split(b"\n")
                    for line in full:
                        st["versions"].append(json.loads(line)["version"])
            return all(want(st) for st in conns)

        assert pump_reads(time.monotonic() + 60,
                          lambda st: st["versions"][:1] == [v0]), \
            "not every stream got its ready line"
        # A burst from one process (events may come while a round is
        # still going), then one last change whose arrival in /vms marks
        # the end of the burst.
        helpers.mkhost_change(root, "--change", "--kind", "ram", "--count",
                              "40", "--seed", "7")
        helpers.mkhost_change(root, "--set-ram", zones[0], "77777")
        wait_for(lambda: d.get_json("/vms/" + zones[0])["ram"] == 77777, 20,
                 "the last change")
        last = int(d.get("/vms")[1]["x-vminfod-version"])
        assert last > v0 + 5, last - v0
        want = list(range(v0, last + 1))
        assert pump_reads(time.monotonic() + 60,
                          lambda st: st["versions"][-1:] == [last]), \
            "not every stream got every event: %s" % sorted(
                {len(st["versions"]) for st in conns})
        for st in conns:
            assert st["versions"] == want, st["versions"]
    finally:
        for st in conns:
            st["sock"].close()
        sel.close()
