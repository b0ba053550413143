"""Restart tolerance (issue 7): supervisor restart keeping the epoch, the
orphaned frontend handing over, SSE, filters, slow subscribers and the
crash-loop guard.

Every wait is on a condition with a deadline; processes are stopped by
pid; the network is 127.0.0.1 only."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

import helpers
from helpers import (Daemon, EventStream, free_port, frontend_pid,
                     kill_sessions, pid_alive, read_index, wait_for)


# ---------------------------------------------------------------------------
# helpers


def vms_version(d):
    _, hdrs, body = d.get("/vms")
    return hdrs["x-vminfod-epoch"], int(hdrs["x-vminfod-version"]), \
        json.loads(body)


def apply(state, ev):
    if ev["type"] == "delete":
        state.pop(ev["zonename"], None)
    else:
        state[ev["zonename"]] = ev["vm"]


def read_until_end(s, timeout):
    """Every event of s until the server ends the stream."""
    out = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, "stream did not end; got %d events" % len(out)
        try:
            ev = s.next_event(left)
        except TimeoutError:
            continue
        if ev is None:
            return out
        out.append(ev)


@pytest.fixture
def restartable(tmp_path):
    """Factory: start(root, port=None, *extra) -> Daemon on a shared work
    dir, so that successive daemons share the ring file.  Everything is
    stopped (and leftovers of killed ones killed) at the end."""
    started = []
    work = tmp_path / "work"

    def start(root, port=None, extra=()):
        d = Daemon(root, work, port=port, extra=extra)
        started.append(d)
        return d.start()
    yield start
    for d in reversed(started):
        if d.alive():
            try:
                d.stop()
            except AssertionError:
                d.kill()
    kill_sessions({d.proc.pid for d in started if d.proc is not None})


# ---------------------------------------------------------------------------
# 1. supervisor kill -9 and restart: same epoch, exactly the missed changes


def test_supervisor_restart_resume_exact(mkhost, restartable):
    root = mkhost(12, seed=71)
    zones = [z["zonename"] for z in read_index(root)]
    d1 = restartable(root)
    port = d1.port
    s = d1.stream()
    ready = s.next_event(10)
    epoch, v0 = ready["epoch"], ready["version"]
    state = {vm["zonename"]: vm for vm in json.loads(ready["vms"])}
    helpers.mkhost_change(root, "--set-ram", zones[0], "2048")
    ev = s.wait_event(lambda e: e.get("zonename") == zones[0], 15)
    apply(state, ev)
    v_before = ev["version"]
    fe1 = wait_for(lambda: frontend_pid(d1.pid), 10, "the first frontend")

    # The supervisor dies; its frontend is orphaned and keeps serving.
    os.kill(d1.pid, signal.SIGKILL)
    d1.proc.wait(10)
    d1.returncode = d1.proc.returncode
    assert pid_alive(fe1)
    d1.wait_log(lambda r: "is gone: serving the last published state" in
                r.get("msg", ""), 10, "the orphan noticing")
    for _ in range(20):
        status, _, body = helpers.http_get(port, "/ping")
        assert (status, json.loads(body)) == (200, {"ping": "pong"})
    e, v, vms = vms_version(d1)
    assert (e, v) == (epoch, v_before)

    # Changes while no supervisor watches.
    helpers.mkhost_change(root, "--set-ram", zones[1], "3072")
    helpers.mkhost_change(root, "--set-metadata", zones[2], "k", "v")
    deleted = helpers.mkhost_change(root, "--change", "--kind", "delete",
                                    "--seed", "3")[0]["zonename"]
    created = helpers.mkhost_change(root, "--change", "--kind", "create",
                                    "--seed", "4")[0]["zonename"]

    # A new supervisor on the same ring: same epoch, the differences as
    # events with the next versions, forwarded by the orphan too, which
    # then ends its streams and exits.
    d2 = restartable(root, port=port)
    missed = read_until_end(s, 20)
    s.close()
    wait_for(lambda: not pid_alive(fe1), 10, "the orphan to exit")
    d2.wait_log(lambda r: "handing over" in r.get("msg", ""), 5)
    assert [m["version"] for m in missed] == \
        list(range(v_before + 1, v_before + 1 + len(missed)))
    got = {(m["type"], m["zonename"]) for m in missed}
    assert got == {("modify", zones[1]), ("modify", zones[2]),
                   ("delete", deleted), ("create", created)}, missed
    for m in missed:
        apply(state, m)

    # A client resuming from before the kill gets exactly those events.
    with d2.stream("/events?since=%s:%d" % (epoch, v_before)) as r:
        rd = r.next_event(10)
        assert rd["resumed"] is True and rd["epoch"] == epoch
        again = [r.next_event(10) for _ in missed]
        assert again == missed
        with pytest.raises(TimeoutError):
            r.next_line(0.3)
    e, v, vms = vms_version(d2)
    assert e == epoch and v == missed[-1]["version"]
    assert {vm["zonename"]: vm for vm in vms} == state
    assert v0 <= v_before


def test_sigterm_ends_streams_cleanly_and_sighup_reopens_log(mkhost, daemon):
    root = mkhost(4, seed=72)
    d = daemon(root)
    s = d.stream()
    s.next_event(10)
    # SIGHUP: the log file is reopened (a rotated file gets a new one).
    rotated = d.log_path.with_suffix(".1")
    os.rename(d.log_path, rotated)
    d.signal(signal.SIGHUP)
    wait_for(lambda: d.log_path.exists(), 10, "a new log file after SIGHUP")
    # SIGTERM: the stream ends with the terminating chunk, exit status 0.
    d.stop()
    assert s.next_line(10) is None and s.chunked is not None and \
        s.chunked.done
    s.close()


def test_orphan_with_foreign_ring_gets_new_epoch(mkhost, restartable):
    """The ring is corrupted while no supervisor runs: the next one starts a
    new epoch; the orphan ends its streams, clients get a full ready."""
    root = mkhost(6, seed=73)
    d1 = restartable(root)
    s = d1.stream()
    r1 = s.next_event(10)
    fe1 = wait_for(lambda: frontend_pid(d1.pid), 10, "the first frontend")
    os.kill(d1.pid, signal.SIGKILL)
    d1.proc.wait(10)
    d1.returncode = d1.proc.returncode
    ring = d1.rundir / "vminfod.ring"
    ring.write_bytes(b"not a ring" * 1000)
    d2 = restartable(root, port=d1.port)
    tail = read_until_end(s, 20)
    s.close()
    # The orphan reloaded nothing from the foreign file (it keeps the old
    # mapping until a valid one appears) and ended the stream; whatever
    # it sent last is a lagged error or nothing.
    assert all(e["type"] == "error" for e in tail), tail
    wait_for(lambda: not pid_alive(fe1), 10, "the orphan to exit")
    with d2.stream("/events?since=%s:%d" % (r1["epoch"], r1["version"])) as r:
        ready = r.next_event(10)
    assert ready["resumed"] is False and ready["epoch"] != r1["epoch"]
    assert json.loads(ready["vms"]) == vms_version(d2)[2]
    d2.wait_log(lambda r: "new epoch" in r.get("msg", "") and
                r.get("why") == "foreign magic", 5)


# ---------------------------------------------------------------------------
# 2. crash storm of the frontend: maintenance, then recovery


def test_frontend_crash_storm_maintenance_and_recovery(mkhost, daemon):
    root = mkhost(4, seed=74)
    d = daemon(root)
    pid = wait_for(lambda: frontend_pid(d.pid), 10, "the frontend")
    for i in range(6):
        os.kill(pid, signal.SIGKILL)
        if i < 5:
            old = pid
            pid = wait_for(lambda: (lambda p: p if p and p != old else None)(
                frontend_pid(d.pid)), 10, "frontend restart %d" % (i + 1))
    rec = d.wait_log(lambda r: "maintenance" in r.get("msg", ""), 10,
                     "the maintenance log line")
    assert rec["child"] == "vminfod-frontend"
    t0 = time.monotonic()
    # No frontend now: a request waits in the backlog (never refused)
    # and is answered once the retry (1 s later) brought one back.
    status, _, body = helpers.http_get(d.port, "/ping", timeout=15)
    assert status == 200 and json.loads(body) == {"ping": "pong"}
    assert time.monotonic() - t0 > 0.3, "answered during maintenance?"
    st = wait_for(lambda: (lambda j: j if j["children"]["frontend"]["ready"]
                           else None)(d.get_json("/status?full=true")),
                  10, "the frontend ready again")
    fe = st["children"]["frontend"]
    assert fe["state"] == "up" and fe["maintenances"] == 1, fe
    assert fe["restarts"] >= 6, fe
    assert "children" not in d.get_json("/status")
    assert list(st)[-1] == "children"


# ---------------------------------------------------------------------------
# 3. Server-Sent Events


class SSEReader:
    """A small SSE parser over an EventStream: next() -> (id, data) with
    data parsed as JSON; None at the end of the stream."""

    def __init__(self, stream):
        self.s = stream

    def next(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        ev_id, data = None, []
        while True:
            line = self.s.next_line(max(0.01, deadline - time.monotonic()))
            if line is None:
                return None
            if line == "":
                if data:
                    return ev_id, json.loads("\n".join(data))
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "id":
                ev_id = value
            elif field == "data":
                data.append(value)


def test_sse_with_curl(mkhost, daemon):
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    root = mkhost(5, seed=75)
    d = daemon(root)
    zone = read_index(root)[1]["zonename"]
    proc = subprocess.Popen(
        [curl, "-sN", "-D", "-", "--max-time", "20", "-H",
         "Accept: text/event-stream", "127.0.0.1:%d/events" % d.port],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL)
    try:
        out = b""
        helpers.mkhost_change(root, "--set-ram", zone, "5120")

        def have_modify():
            nonlocal out
            import select
            r, _, _ = select.select([proc.stdout], [], [], 0.05)
            if r:
                out += os.read(proc.stdout.fileno(), 65536)
            return b'"type":"modify"' in out and out.endswith(b"\n\n")
        wait_for(have_modify, 15, "curl to print the modify event")
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()
    head, _, body = out.partition(b"\r\n\r\n")
    assert b"content-type: text/event-stream" in head.lower()
    events = [e for e in body.decode().split("\n\n") if e]
    ready_id, ready_data = events[0].split("\n")
    ready = json.loads(ready_data[len("data: "):])
    assert ready["type"] == "ready"
    assert ready_id == "id: %s:%d" % (ready["epoch"], ready["version"])
    ev_id, ev_data = events[1].split("\n")
    ev = json.loads(ev_data[len("data: "):])
    assert ev["type"] == "modify" and ev["zonename"] == zone
    assert ev_id == "id: %s:%d" % (ready["epoch"], ev["version"])


def test_sse_last_event_id_resumes_across_frontend_kill(mkhost, daemon):
    root = mkhost(8, seed=76)
    d = daemon(root)
    zones = [z["zonename"] for z in read_index(root)]
    hdr = {"Accept": "text/event-stream"}
    sse = SSEReader(d.stream(headers=hdr))
    assert sse.s.headers["content-type"] == "text/event-stream"
    ready_id, ready = sse.next()
    assert ready["type"] == "ready" and ready["resumed"] is False
    state = {vm["zonename"]: vm for vm in json.loads(ready["vms"])}
    helpers.mkhost_change(root, "--set-ram", zones[0], "1536")
    last_id, ev = sse.next(15)
    apply(state, ev)
    assert last_id == "%s:%d" % (ready["epoch"], ev["version"])
    pid = wait_for(lambda: frontend_pid(d.pid), 10, "the frontend")
    os.kill(pid, signal.SIGKILL)
    # The stream drops; meanwhile changes go on.
    with pytest.raises((OSError, AssertionError)):
        while sse.next(10) is not None:
            pass
        raise AssertionError("stream ended")
    sse.s.close()
    for z in zones[1:4]:
        helpers.mkhost_change(root, "--set-ram", z, "2560")
    wait_for(lambda: vms_version(d)[1] >= ev["version"] + 3, 15,
             "the changes published")
    # Reconnect as EventSource does: Last-Event-ID, the URL unchanged.
    sse = SSEReader(d.stream(headers=dict(hdr, **{"Last-Event-ID": last_id})))
    rid, rready = sse.next()
    assert rready["resumed"] is True and rid == last_id
    got = []
    for _ in range(3):
        i, e = sse.next(10)
        assert i == "%s:%d" % (ready["epoch"], e["version"])
        got.append(e)
        apply(state, e)
    assert [e["version"] for e in got] == [ev["version"] + k
                                           for k in (1, 2, 3)]
    assert {e["zonename"] for e in got} == set(zones[1:4])
    assert {vm["zonename"]: vm for vm in vms_version(d)[2]} == state
    sse.s.close()


# ---------------------------------------------------------------------------
# 4. filters


def test_filters_with_resume(mkhost, daemon):
    root = mkhost(8, seed=77)
    d = daemon(root)
    zones = [z["zonename"] for z in read_index(root)]
    a, b, c = zones[0], zones[1], zones[2]
    status, _, body = d.get("/events?type=bogus")
    assert status == 400 and "type" in json.loads(body)["error"]
    path = "/events?zonename=%s&zonename=%s&type=modify,delete" % (a, b)
    s = d.stream(path)
    ready = s.next_event(10)
    assert ready["type"] == "ready" and "vms" in ready
    for i, z in enumerate((c, a, c, b)):
        helpers.mkhost_change(root, "--set-ram", z, str(1100 + 100 * i))
        wait_for(lambda: vms_version(d)[1] >= ready["version"] + i + 1, 10,
                 "change %d published" % i)
    helpers.mkhost_change(root, "--change", "--kind", "create", "--seed", "8")
    wait_for(lambda: vms_version(d)[1] >= ready["version"] + 5, 15,
             "every change published")
    got = [s.next_event(10) for _ in range(2)]
    assert [(e["type"], e["zonename"]) for e in got] == \
        [("modify", a), ("modify", b)]
    with pytest.raises(TimeoutError):
        s.next_line(0.5)
    s.close()
    # Resume with the same filters from the first event: the ready line
    # tells the version asked for, then only b's modify follows even
    # though other events came in between.
    with d.stream(path + "&since=%s:%d" % (ready["epoch"],
                                          got[0]["version"])) as r:
        rr = r.next_event(10)
        assert rr["resumed"] is True and rr["version"] == got[0]["version"]
        assert r.next_event(10) == got[1]
        with pytest.raises(TimeoutError):
            r.next_line(0.3)


# ---------------------------------------------------------------------------
# 5. slow subscribers


def test_stalled_reader_lagged_while_fast_reader_gets_everything(mkhost,
                                                                 daemon):
    root = mkhost(6, seed=78)
    d = daemon(root, "--ring-size", "1M")
    zone = read_index(root)[0]["zonename"]
    fast = d.stream()
    ready = fast.next_event(10)
    # The stalled reader: a tiny receive buffer, never read.
    slow = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(("127.0.0.1", d.port))
    slow.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
    wait_for(lambda: len(d.get_json("/status")["eventsListeners"]) == 2, 10,
             "both listeners")
    version = ready["version"]
    state = {vm["zonename"]: vm for vm in json.loads(ready["vms"])}
    big = "x" * 20000
    closed = None
    for i in range(400):
        helpers.mkhost_change(root, "--set-metadata", zone, "blob",
                              "%d%s" % (i, big))
        ev = fast.next_event(10)
        assert ev["version"] == version + 1, (ev["version"], version)
        version = ev["version"]
        apply(state, ev)
        if len(d.get_json("/status")["eventsListeners"]) == 1:
            closed = i
            break
    assert closed is not None, "the stalled reader was never closed"
    d.wait_log(lambda r: "fell behind the ring" in r.get("msg", ""), 5)
    # The fast reader kept receiving everything, in order.
    e, v, vms = vms_version(d)
    assert v == version and {vm["zonename"]: vm for vm in vms} == state
    # The stalled socket holds a prefix of the stream, then the end.
    slow.settimeout(10)
    data = b""
    while True:
        try:
            chunk = slow.recv(1 << 20)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    slow.close()
    fast.close()
    assert data.startswith(b"HTTP/1.1 200")
    assert len(data) < 1 << 20, len(data)

