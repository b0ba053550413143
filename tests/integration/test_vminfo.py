"""The vminfo CLI and libvminfod (spec/http-api.md §5, §7; DESIGN.md §7).

Each subcommand runs against a real vminfod on a mkhost tree; exact text
formats that depend on rare daemon states (refresh errors, listeners
without a User-Agent, long aliases, line splitting) are checked against a
small fake server that serves canned bodies.  The library is driven
through two tools: tools/watchchanges (watch_for_changes) and
tools/mirror (the mirror with reconciliation)."""

import http.server
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

import helpers
from helpers import (build_dir, free_port, frontend_pid, mkhost_change,
                     wait_for)

USAGE = (
    "Usage: vminfo [command] [args]\n"
    "\n"
    "Commands\n"
    "  ping               get vminfod ping     (GET /ping)\n"
    "  status [-jf]       get vminfod status   (GET /status)\n"
    "  vms                get all vms          (GET /vms)\n"
    "  vm <uuid>          get vm info          (GET /vms/:uuid)\n"
    "  events [-jfr]      trace vminfod events (GET /events)\n")

RUN_TIMEOUT_S = 30.0


def vminfo_path():
    return str(build_dir() / "vminfo")


def tool(name):
    return str(build_dir() / "tools" / name)


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("VMINFOD_HOST", "VMINFOD_PORT", "VMINFOD_NAME")}
    env.update(extra)
    return env


def vminfo(*args, port=None, env=None):
    """Run vminfo to completion -> CompletedProcess (text)."""
    e = clean_env(**(env or {}))
    if port is not None:
        e["VMINFOD_PORT"] = str(port)
    return subprocess.run([vminfo_path()] + [str(a) for a in args],
                          stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, env=e, timeout=RUN_TIMEOUT_S)


class Lines:
    """A running program whose stdout lines are collected by a thread."""

    def __init__(self, argv, env=None):
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env)
        self.q = queue.Queue()
        self.lines = []
        self.err = []
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.q),
                         daemon=True).start()
        threading.Thread(target=self._drain, daemon=True).start()

    @staticmethod
    def _pump(f, q):
        for raw in iter(f.readline, b""):
            q.put(raw.decode("utf-8").rstrip("\n"))
        q.put(None)

    def _drain(self):
        for raw in iter(self.proc.stderr.readline, b""):
            self.err.append(raw.decode("utf-8", "replace"))

    def next(self, timeout=10.0):
        """The next line (None at EOF); fails after timeout."""
        try:
            line = self.q.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no output line within %.1fs (stderr: %r)"
                                 % (timeout, "".join(self.err)))
        if line is not None:
            self.lines.append(line)
        return line

    def take(self, n, timeout=10.0):
        """The next n lines, with one overall deadline."""
        deadline = time.monotonic() + timeout
        out = []
        for _ in range(n):
            line = self.next(max(0.0, deadline - time.monotonic()))
            assert line is not None, "EOF after %r (stderr %r)" % (
                out, "".join(self.err))
            out.append(line)
        return out

    def until(self, predicate, timeout=10.0, what="a line"):
        """Read lines until predicate(line); returns the lines read."""
        deadline = time.monotonic() + timeout
        got = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("timed out waiting for %s; got %r"
                                     % (what, got[-5:]))
            line = self.next(left)
            assert line is not None, "EOF waiting for %s (stderr %r)" % (
                what, "".join(self.err))
            got.append(line)
            if predicate(line):
                return got

    def stop(self):
        """SIGTERM (by pid) and reap; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=10)

    def wait(self, timeout=30.0):
        return self.proc.wait(timeout=timeout)


def events_proc(port, *args, env=None):
    return Lines([vminfo_path(), "--port", str(port), "events"] +
                 list(args), env=clean_env(**(env or {})))


def js(value):
    """Compact JSON as the daemon writes it (integers stay integers)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def short_alias(alias):
    """The alias as vminfo prints it: 30 UTF-16 units at most."""
    if not alias:
        return "-"
    units = alias.encode("utf-16-le")
    if len(units) // 2 <= 30:
        return alias
    return units[:54].decode("utf-16-le", "replace") + "..."


def expected_lines(ev, full=False):
    """spec §7.6 formatting of one event, written independently here."""
    date = ev["date"] if full else ev["date"].split("T", 1)[1]
    zone = ev["zonename"] if full else ev["zonename"].split("-")[0]
    alias = short_alias((ev.get("vm") or {}).get("alias"))
    prefix = "[%s] %s %s %s" % (date, zone, alias, ev["type"])
    if "changes" not in ev:
        return [prefix]
    return ["%s: %s %s :: %s -> %s" % (
        prefix, c["prettyPath"], c["action"],
        js(c["oldValue"]) if "oldValue" in c else "undefined",
        js(c["newValue"]) if "newValue" in c else "undefined")
        for c in ev["changes"]]


def first_zone(root):
    return helpers.read_index(root)[0]["zonename"]


@pytest.fixture
def host(mkhost, daemon):
    root = mkhost(20, seed=3)
    d = daemon(root)
    # The tests set the first zone's ram to these sizes and expect an
    # event each time, so it must start with none of them.
    ram = d.get_json("/vms/" + first_zone(root))["ram"]
    assert ram not in (512, 1024, 2048, 4096), ram
    return root, d


# ---------------------------------------------------------------------
# invocation

def test_usage_and_errors():
    for args in (["-h"], ["--help"], ["help"], ["-h", "ping"]):
        p = vminfo(*args)
        assert (p.returncode, p.stdout, p.stderr) == (0, USAGE, ""), args
    p = vminfo()
    assert p.returncode == 1
    assert p.stdout == "Command must be specified as the first argument\n\n" \
        + USAGE
    p = vminfo("Ping")
    assert p.returncode == 1
    assert p.stdout == "Unknown command: Ping\n\n" + USAGE
    p = vminfo("-x", "ping")
    assert (p.returncode, p.stderr, p.stdout) == (
        1, "illegal option -- x\n", USAGE)
    p = vminfo("status", "-q")
    assert (p.returncode, p.stderr, p.stdout) == (
        1, "illegal option -- q\n", USAGE)
    p = vminfo("vm")
    assert p.returncode == 1
    assert p.stdout == "vm zonename must be specified\n\n" + USAGE


def test_ping_closed_port():
    port = free_port()
    p = vminfo("ping", port=port)
    assert (p.returncode, p.stdout, p.stderr) == (
        1, "", "connect ECONNREFUSED\n")
    p = vminfo("--port", port, "events", "-r")
    assert (p.returncode, p.stdout, p.stderr) == (
        1, "", "connect ECONNREFUSED\n")


def test_ping_address_sources(host):
    root, d = host
    assert vminfo("ping", port=d.port).stdout == "pong\n"
    for args in (["--port", d.port, "ping"], ["--port=%d" % d.port, "ping"],
                 ["--host", "127.0.0.1", "--port", d.port, "ping"]):
        p = vminfo(*args)
        assert (p.returncode, p.stdout, p.stderr) == (0, "pong\n", ""), args
    p = vminfo("ping", env={"VMINFOD_HOST": "127.0.0.1",
                            "VMINFOD_PORT": str(d.port)})
    assert (p.returncode, p.stdout) == (0, "pong\n")
    # --port wins over the environment.
    p = vminfo("--port", d.port, "ping", env={"VMINFOD_PORT": "1"})
    assert p.stdout == "pong\n"


# ---------------------------------------------------------------------
# plain requests against the daemon

def test_vms_and_vm(host):
    root, d = host
    p = vminfo("vms", port=d.port)
    assert p.returncode == 0, p.stderr
    vms = d.get_json("/vms")
    assert p.stdout == json.dumps(vms, indent=2, ensure_ascii=False) + "\n"
    z = vms[3]["zonename"]
    p = vminfo("vm", z, "ignored", port=d.port)
    assert p.returncode == 0
    assert p.stdout == json.dumps(d.get_json("/vms/" + z), indent=2,
                                  ensure_ascii=False) + "\n"
    p = vminfo("vm", "nope-" + z, port=d.port)
    assert (p.returncode, p.stdout, p.stderr) == (
        1, "", "bad statusCode: 404\n")


STATUS_HEAD = re.compile(
    r"state: running \(\S+\)\n"
    r"pid: (\d+)\n"
    r"uptime: \d+\.\d{9}s \(.+\)\n"
    r"rss: \d+\.\d\dmb\n"
    r"numVms: 20\n"
    r"queue\n"
    r"  paused: (true|false)\n"
    r"  idle: (true|false)\n"
    r"  npending: \d+\n"
    r"  nqueued: \d+\n"
    r"fullRefresh\n"
    r"  lastRefresh: \d+\.\d{9}s \(.+\)\n")


def test_status_text_and_listeners(host):
    root, d = host
    p = vminfo("status", port=d.port)
    assert p.returncode == 0, p.stderr
    m = STATUS_HEAD.match(p.stdout)
    assert m, p.stdout
    assert int(m.group(1)) == d.get_json("/status")["pid"]
    assert p.stdout[m.end():] == "eventsListeners: (0 listeners)\n"

    # Two listeners: vminfo events itself, and one whose User-Agent
    # needs escaping.
    ev = events_proc(d.port, "-r")
    try:
        ev.next()
        ua = 'odd "agent" \\ tab\there'
        with d.stream("/events", headers={"User-Agent": ua}) as s:
            s.next_line(10)
            p = vminfo("status", "-f", port=d.port,
                       env={"VMINFOD_NAME": "tester"})
            assert p.returncode == 0
            out = p.stdout
            m = STATUS_HEAD.match(out)
            assert m, out
            rest = out[m.end():]
            assert re.match(
                r"fswatcher\n  running: true\n  pid: \d+\n  watching: \d+\n"
                r"  tryingToWatch: \d+\n  pendingActions: \d+\n"
                r"eventsListeners: \(2 listeners\)\n", rest), rest
            status = d.get_json("/status")
            listeners = status["eventsListeners"]
            exe = os.path.realpath(vminfo_path())
            host_name = socket.gethostname()
            want = {"Vminfod CLI - %s/%d (%s)" % (host_name, ev.proc.pid,
                                                   exe),
                    'odd "agent" \\\\ tab\\there'}
            got = set(re.findall(r"^  - (.*)$", rest, re.M))
            assert got == want
            for lid in listeners:
                assert re.search(r"^    %s created \d+\.\d{9}s \(.+\) ago$"
                                 % lid, rest, re.M)
            assert rest.endswith("ago\n\n")
    finally:
        ev.stop()


def test_status_user_agent_name(host):
    root, d = host
    ev = events_proc(d.port, "-r", env={"VMINFOD_NAME": "sdc-agent"})
    try:
        ev.next()
        uas = [v.get("userAgent") for v in
               d.get_json("/status")["eventsListeners"].values()]
        assert uas == ["sdc-agent (Vminfod CLI) - %s/%d (%s)" % (
            socket.gethostname(), ev.proc.pid,
            os.path.realpath(vminfo_path()))]
    finally:
        ev.stop()


def test_status_json(host):
    root, d = host
    for args, full in ((["-j"], False), (["--json", "--full"], True),
                       (["-jf"], True), (["-fj"], True)):
        p = vminfo("status", *args, port=d.port)
        assert p.returncode == 0, p.stderr
        obj = json.loads(p.stdout)
        assert p.stdout == json.dumps(obj, indent=2, ensure_ascii=False) \
            + "\n"
        keys = ["pid", "uptime", "memory", "state", "status", "numVms",
                "curDate", "curTime", "queue", "lastRefresh",
                "refreshErrors", "eventsListeners"]
        if full:
            keys += ["refreshLog", "fswatcher", "children"]
        assert list(obj) == keys, args


# ---------------------------------------------------------------------
# events against the daemon

def test_events_formats(host):
    root, d = host
    z = first_zone(root)
    procs = {name: events_proc(d.port, *args) for name, args in (
        ("plain", ["-r"]), ("full", ["-r", "-f"]), ("json", ["-j", "-r"]),
        ("quiet", []), ("filtered", ["-j", z]))}
    try:
        for name in ("plain", "full", "json"):
            procs[name].next()
        with d.stream("/events") as raw:
            ready = json.loads(raw.next_line(10))
            # Every vminfo stream is open once /status lists it.
            wait_for(lambda: len(d.get_json("/status")["eventsListeners"])
                     == 6, 10, "six listeners")
            mkhost_change(root, "--set-ram", z, 1024)
            mkhost_change(root, "--change", "--kind", "tags", "--seed", 5)
            mkhost_change(root, "--change", "--kind", "delete", "--seed", 6)
            mkhost_change(root, "--change", "--kind", "create", "--seed", 7)
            raws, events = [], []
            while not any(e["type"] == "create" for e in events):
                line = raw.next_line(10)
                raws.append(line)
                events.append(json.loads(line))
        assert ready["resumed"] is False
        assert [e["version"] for e in events] == list(
            range(ready["version"] + 1, ready["version"] + 1 + len(events)))
        assert {e["type"] for e in events} == {"modify", "delete", "create"}

        p = procs["plain"]
        assert re.fullmatch(r"\[\d\d:\d\d:\d\d\.\d{3}Z\] ready", p.lines[0])
        want = [l for e in events for l in expected_lines(e)]
        assert p.take(len(want)) == want
        assert any(re.search(r" max_physical_memory changed :: \d+ -> 1024$",
                             l) for l in want)
        assert any(re.search(r" - delete$", l) for l in want)

        p = procs["full"]
        assert re.fullmatch(
            r"\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\] ready "
            r"\(uuid [0-9a-f-]{36}\)", p.lines[0])
        want = [l for e in events for l in expected_lines(e, full=True)]
        assert p.take(len(want)) == want

        p = procs["json"]
        r = json.loads(p.lines[0])
        assert r["type"] == "ready" and isinstance(r["vms"], str)
        assert len(json.loads(r["vms"])) == 20
        assert list(r) == ["type", "date", "uuid", "vms", "epoch",
                           "version", "resumed"]
        # Re-serialised events are the server's bytes.
        assert p.take(len(raws)) == raws

        want = [l for e in events for l in expected_lines(e)]
        assert procs["quiet"].take(len(want)) == want

        mine = [l for l in raws if json.loads(l)["zonename"] == z]
        assert mine
        assert procs["filtered"].take(len(mine)) == mine
    finally:
        for p in procs.values():
            p.stop()


def test_events_survive_frontend_kills(host):
    """vminfo events -j -r across 10 kill -9 of the frontend: every event
    printed exactly once, in version order."""
    root, d = host
    ev = events_proc(d.port, "-j", "-r")
    try:
        ready = json.loads(ev.next())
        start = ready["version"]
        seen = []
        last_kill = 0.0
        for i in range(10):
            # The supervisor restarts a frontend at once unless it died
            # more than 5 times within 10 s; stay under that rate so
            # the test measures the client, not the maintenance delay.
            wait_for(lambda: time.monotonic() - last_kill >= 2.05, 5,
                     "the restart rate window")
            fe = wait_for(lambda: frontend_pid(d.pid), 10, "a frontend")
            os.kill(fe, signal.SIGKILL)
            last_kill = time.monotonic()
            mkhost_change(root, "--change", "--kind", "ram", "--seed",
                          100 + i)
            wait_for(lambda: frontend_pid(d.pid) not in (None, fe), 10,
                     "the frontend restart")
            got = ev.until(lambda l: json.loads(l).get("type") != "ready",
                           timeout=20, what="an event after kill %d" % i)
            seen += [json.loads(l) for l in got]
        with d.stream("/events") as raw:
            final = json.loads(raw.next_line(10))["version"]
        while not seen or seen[-1].get("version", 0) < final:
            seen.append(json.loads(ev.next(20)))
        versions = [e["version"] for e in seen if e["type"] != "ready"]
        assert versions == list(range(start + 1, final + 1))
        assert [e for e in seen if e["type"] == "ready"] == []
        assert ev.proc.poll() is None
    finally:
        ev.stop()


def test_events_daemon_restart(host, daemon):
    """The whole daemon restarts on the same port with a new ring (new
    epoch): vminfo events keeps retrying, then goes on after a fresh
    ready, with a notice on stderr that events may have been missed."""
    root, d = host
    ev = events_proc(d.port, "-r")
    try:
        ev.next()
        d.stop()
        d2 = daemon(root, port=d.port)
        z = first_zone(root)
        mkhost_change(root, "--set-ram", z, 512)
        lines = ev.until(lambda l: re.search(r" ram changed :: \d+ -> 512$",
                                             l), timeout=30,
                         what="the change after the restart")
        assert re.fullmatch(r"\[\S+\] ready", lines[0])
        assert d2.alive()
    finally:
        ev.stop()
    assert any("without resume" in l for l in ev.err)


# ---------------------------------------------------------------------
# exact formats against a fake server

class Fake:
    """A canned HTTP server on 127.0.0.1: path -> (status, body or lines).

    A list body is written line by line (bytes as given) and the
    connection is then held open until close()."""

    def __init__(self, routes):
        self.routes = routes
        self.agents = []
        self.done = threading.Event()
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *a):
                pass

            def do_GET(self):
                fake.agents.append(self.headers.get("User-Agent"))
                path = self.path.split("?")[0]
                status, body = fake.routes.get(path, (404, b"nope"))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                if isinstance(body, list):
                    for chunk in body:
                        self.wfile.write(chunk)
                        self.wfile.flush()
                    fake.done.wait(20)
                else:
                    self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                      Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever,
                         daemon=True).start()

    def close(self):
        self.done.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake():
    made = []

    def make(routes):
        f = Fake(routes)
        made.append(f)
        return f
    yield make
    for f in made:
        f.close()


SPEC_STATUS = {
    "pid": 4242, "uptime": "3600.250000000s (1h)",
    "memory": {"rss": 47710208, "heapTotal": 30000000, "heapUsed": 20000000},
    "state": "running", "status": "working", "numVms": 2,
    "curDate": "2019-06-19T05:40:01.123Z", "curTime": "91234.500000000",
    "queue": {"now": "91234.500001000", "paused": False, "idle": True,
              "vasync_queue": {"concurrency": 1, "npending": 0, "nqueued": 0,
                               "pending": {}, "queued": []}},
    "lastRefresh": "12.345678901s (12.35s)",
    "refreshErrors": [{"err": "syntax error", "time": "1.000000000",
                       "ago": "300.500000000s (5m)"}],
    "eventsListeners": {
        "0d9f1c7e-1111-4222-8333-944445555666": {
            "userAgent": "Vminfod CLI - headnode/5000 (/usr/vm/sbin/vminfo)",
            "createdTime": "91229.500000000",
            "createdDate": "2019-06-19T05:39:56.123Z",
            "createdAgo": "5.000000000s (5s)"}}}

SPEC_STATUS_TEXT = """state: running (working)
pid: 4242
uptime: 3600.250000000s (1h)
rss: 45.50mb
numVms: 2
queue
  paused: false
  idle: true
  npending: 0
  nqueued: 0
fullRefresh
  lastRefresh: 12.345678901s (12.35s)
  refreshErrors: (%d items)
1
    - syntax error (300.500000000s (5m))
eventsListeners: (1 listeners)
  - Vminfod CLI - headnode/5000 (/usr/vm/sbin/vminfo)
    0d9f1c7e-1111-4222-8333-944445555666 created 5.000000000s (5s) ago

"""


def test_status_spec_example(fake):
    f = fake({"/status": (200, json.dumps(SPEC_STATUS).encode())})
    p = vminfo("status", port=f.port)
    assert (p.returncode, p.stderr) == (0, "")
    assert p.stdout == SPEC_STATUS_TEXT
    assert re.fullmatch(r"Vminfod CLI - %s/\d+ \(%s\)" % (
        re.escape(socket.gethostname()),
        re.escape(os.path.realpath(vminfo_path()))), f.agents[0])


def test_status_full_quirks(fake):
    s = dict(SPEC_STATUS)
    s["memory"] = {"rss": 3276800, "heapTotal": 1, "heapUsed": 1}
    s["refreshErrors"] = []
    s["lastRefresh"] = None
    s["refreshLog"] = [{"cacheChanges": [1, 2, 3], "vmChanges": [1],
                        "started": "1.0", "ended": "2.0", "took": "x",
                        "endedAgo": "7.000000000s (7s)"}]
    s["fswatcher"] = {"message_delays": {}, "watching": ["/a", "/b"],
                      "not_yet_watching": ["/c"],
                      "pending_actions": {"k": {}, "l": {}, "m": {}},
                      "watcher_pid": None, "running": None}
    s["eventsListeners"] = {
        "a": {"createdAgo": "1.000000000s (1s)"},
        "b": {"userAgent": "q\"b\\s\nnl\u0001", "createdAgo": "2s"}}
    f = fake({"/status": (200, json.dumps(s).encode())})
    p = vminfo("status", "--full", port=f.port)
    assert p.returncode == 0
    assert p.stdout.split("fullRefresh\n")[1] == (
        "  lastRefresh: null\n"
        "  refreshLog: (1 items)\n"
        "    - 3 cacheChanges / 1 vmChanges - 7.000000000s (7s) ago\n"
        "fswatcher\n"
        "  running: null\n"
        "  pid: 0\n"
        "  watching: 2\n"
        "  tryingToWatch: 1\n"
        "  pendingActions: 3\n"
        "eventsListeners: (2 listeners)\n"
        "  - undefined\n"
        "    a created 1.000000000s (1s) ago\n"
        "\n"
        "  - q\"b\\\\s\\nnl\\u0001\n"
        "    b created 2s ago\n"
        "\n")
    # JavaScript toFixed(2): 3.125 is an exact tie and rounds up.
    assert "rss: 3.13mb\n" in p.stdout


def test_bad_status_and_body(fake):
    f = fake({"/ping": (200, b"not json"), "/vms": (500, b"[]"),
              "/events": (503, b"down")})
    p = vminfo("ping", port=f.port)
    assert p.returncode == 1 and p.stdout == "" and p.stderr.strip()
    p = vminfo("vms", port=f.port)
    assert (p.returncode, p.stderr) == (1, "bad statusCode: 500\n")
    p = vminfo("events", port=f.port)
    assert (p.returncode, p.stderr) == (1, "bad statusCode: 503\n")


FAKE_ZONE = "5a02245a-422c-4e0a-c5f8-fd6fac1ac04e"


def fake_event(etype, alias=None, changes=None, version=1):
    ev = {"type": etype, "date": "2019-06-19T04:40:01.123Z",
          "zonename": FAKE_ZONE, "uuid": FAKE_ZONE}
    if etype != "delete":
        ev["vm"] = {"zonename": FAKE_ZONE}
        if alias is not None:
            ev["vm"]["alias"] = alias
    if changes is not None:
        ev["changes"] = changes
    ev["version"] = version
    return ev


def test_events_exact_lines(fake):
    long_alias = "a" * 26 + "\U0001F600" + "bcdef"   # pair cut at 27
    events = [
        fake_event("modify", "kvm7", [
            {"prettyPath": "state", "path": ["state"], "action": "changed",
             "oldValue": "stopped", "newValue": "running"},
            {"prettyPath": "zoneid", "path": ["zoneid"], "action": "changed",
             "oldValue": None, "newValue": 12},
            {"prettyPath": "nics.*", "path": ["nics", None],
             "action": "added", "newValue": {"mac": "aa", "x": [1, 2.5]}},
            {"prettyPath": "tags.x", "path": ["tags", "x"],
             "action": "removed", "oldValue": "é\"q"}], 1),
        fake_event("create", long_alias, None, 2),
        fake_event("create", "b" * 30, None, 3),
        fake_event("create", "", None, 4),
        fake_event("delete", None, None, 5),
        fake_event("modify", "x", [], 6),
    ]
    ready = {"type": "ready", "date": "2019-06-19T04:40:00.000Z",
             "uuid": "0d9f1c7e-1111-4222-8333-944445555666", "vms": "[]"}
    # Line ends of every kind: \n, \r\n, a lone \r, split across writes.
    body = [json.dumps(ready).encode() + b"\r\n"]
    seps = [b"\n", b"\r\n", b"\r", b"\n", b"\r", b"\n"]
    for ev, sep in zip(events, seps):
        data = json.dumps(ev, ensure_ascii=False).encode() + sep
        body += [data[:10], data[10:]]
    f = fake({"/events": (200, body)})
    want = ["[04:40:00.000Z] ready",
            '[04:40:01.123Z] 5a02245a kvm7 modify: state changed :: '
            '"stopped" -> "running"',
            "[04:40:01.123Z] 5a02245a kvm7 modify: zoneid changed :: "
            "null -> 12",
            '[04:40:01.123Z] 5a02245a kvm7 modify: nics.* added :: '
            'undefined -> {"mac":"aa","x":[1,2.5]}',
            '[04:40:01.123Z] 5a02245a kvm7 modify: tags.x removed :: '
            '"é\\"q" -> undefined',
            "[04:40:01.123Z] 5a02245a " + "a" * 26 + "\ufffd... create",
            "[04:40:01.123Z] 5a02245a " + "b" * 30 + " create",
            "[04:40:01.123Z] 5a02245a - create",
            "[04:40:01.123Z] 5a02245a - delete"]
    p = events_proc(f.port, "-r")
    try:
        assert p.take(len(want)) == want
    finally:
        p.stop()
    p = events_proc(f.port, "-r", "-f")
    try:
        got = p.take(3)
        assert got[0] == "[2019-06-19T04:40:00.000Z] ready (uuid %s)" % \
            ready["uuid"]
        assert got[1] == ("[2019-06-19T04:40:01.123Z] %s kvm7 modify: state "
                          "changed :: \"stopped\" -> \"running\"" % FAKE_ZONE)
    finally:
        p.stop()
    p = events_proc(f.port, "-j", "-r")
    try:
        got = p.take(1 + len(events))
        assert got[0] == js(ready)
        assert got[1:] == [js(e) for e in events]
    finally:
        p.stop()


def test_library_ready_timeout(fake):
    f = fake({"/events": (200, [b""])})
    p = subprocess.run([tool("watchchanges"), "--port", str(f.port),
                        "--ready-timeout", "300", '[]'],
                       capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert p.returncode == 2
    assert p.stdout == "VminfodEventStream ready timeout (300ms) exceeded\n"


# ---------------------------------------------------------------------
# libvminfod: watch_for_changes and the mirror

def test_watch_for_changes_strict_types(host):
    root, d = host
    z = first_zone(root)
    mk = [sys.executable, str(helpers.script("mkhost")), str(root)]
    wanted = '[{"path":["max_physical_memory"],"newValue":"1024"}]'
    p = subprocess.run([tool("watchchanges"), "--port", str(d.port),
                        "--zonename", z, "--timeout", "1500", wanted, "--"]
                       + mk + ["--set-ram", z, "1024"],
                       capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert p.returncode == 1, p.stdout + p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "ready"
    assert lines[1] == \
        "vminfod watchForChanges timeout exceeded - unmatched events"
    detail = json.loads(lines[2])
    assert detail["wanted"] == json.loads(wanted)
    assert detail["unmatched"] == json.loads(wanted)
    seen = [c for e in detail["events"] for c in e["changes"]
            if c["path"] == ["max_physical_memory"]]
    assert seen and seen[0]["newValue"] == 1024

    # The number matches; alternatives and wildcards too, each seen change
    # satisfying one item.
    wanted = json.dumps([
        {"path": ["max_physical_memory"], "newValue": 2048},
        [{"path": ["ram"], "newValue": 1}, {"path": [None],
                                            "oldValue": 1024}],
    ])
    p = subprocess.run([tool("watchchanges"), "--port", str(d.port),
                        "--zonename", z, "--timeout", "10000", wanted, "--"]
                       + mk + ["--set-ram", z, "2048"],
                       capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert (p.returncode, p.stdout) == (0, "ready\nmatched\n"), p.stderr

    # One seen change cannot satisfy two items.
    wanted = json.dumps([{"path": ["ram"], "newValue": 4096},
                         {"path": [None], "newValue": 4096},
                         {"path": [None], "newValue": 4096}])
    p = subprocess.run([tool("watchchanges"), "--port", str(d.port),
                        "--zonename", z, "--timeout", "1500", wanted, "--"]
                       + mk + ["--set-ram", z, "4096"],
                       capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert p.returncode == 1
    detail = json.loads(p.stdout.splitlines()[2])
    assert detail["unmatched"] == [{"path": [None], "newValue": 4096}]

    p = subprocess.run([tool("watchchanges"), "--port", str(d.port),
                        '[{"path":["ram"]}]'],
                       capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert p.returncode == 2 and "path" in p.stdout


def test_mirror_reconciles(host, daemon):
    root, d = host
    m = Lines([tool("mirror"), "--port", str(d.port), "--reconciles", "1"])
    try:
        assert json.loads(m.next()) == {"type": "ready", "vms": 20}
        # Live events are applied as they come.
        z = first_zone(root)
        mkhost_change(root, "--set-ram", z, 1024)
        got = json.loads(m.next())
        assert got["synthetic"] is False and got["event"]["zonename"] == z

        # A resumed reconnect (frontend killed) loses nothing and
        # synthesises nothing.
        fe = frontend_pid(d.pid)
        os.kill(fe, signal.SIGKILL)
        mkhost_change(root, "--set-ram", z, 2048)
        got = json.loads(m.next(20))
        assert got["synthetic"] is False
        assert got["event"]["vm"]["max_physical_memory"] == 2048

        # Away for good: the daemon stops, the tree changes, a new daemon
        # with a new ring (new epoch) comes up on the same port.
        before = {vm["zonename"]: vm for vm in d.get_json("/vms")}
        with d.stream() as s:
            old_epoch = json.loads(s.next_line(10))["epoch"]
        d.stop()
        deleted = mkhost_change(root, "--change", "--kind", "delete",
                                "--seed", 21)[0]["zonename"]
        created = mkhost_change(root, "--change", "--kind", "create",
                                "--seed", 22)[0]["zonename"]
        modified = mkhost_change(root, "--set-ram", z, 512)[0]["zonename"]
        d2 = daemon(root, port=d.port)
        lines = m.until(lambda l: json.loads(l).get("type") == "state",
                        timeout=30, what="the reconciled state")
        assert m.wait() == 0
        state = json.loads(lines[-1])
        synth = [json.loads(l)["event"] for l in lines[:-1]]
        assert all(json.loads(l)["synthetic"] for l in lines[:-1])
        kinds = {(e["type"], e["zonename"]) for e in synth}
        assert ("create", created) in kinds
        assert ("delete", deleted) in kinds
        assert ("modify", modified) in kinds
        mod = [e for e in synth if e["zonename"] == modified][0]
        assert {"prettyPath": "ram", "path": ["ram"], "action": "changed",
                "oldValue": 2048, "newValue": 512} in mod["changes"]
        assert all(e["zonename"] in (created, deleted, modified)
                   for e in synth)
        now = {vm["zonename"]: vm for vm in d2.get_json("/vms")}
        assert state["vms"] == now
        with d2.stream() as s:
            assert state["epoch"] == json.loads(s.next_line(10))["epoch"]
        assert state["epoch"] != old_epoch
        assert deleted in before and created not in before
    finally:
        m.stop()
