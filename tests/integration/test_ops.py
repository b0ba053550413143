"""Operations: service manager notification, socket activation, privilege
separation of the frontend, GET /metrics, the live page at GET /, the
systemd units, the man pages and `make install` (DESIGN.md §8, issue
"Operations").
"""

import base64
import json
import math
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import helpers
from helpers import (build_dir, free_port, frontend_pid, http_get, repo_dir,
                     wait_for)


def proc_status(pid):
    fields = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            fields[k] = v.strip()
    return fields


# ---------------------------------------------------------------------
# sd_notify
# ---------------------------------------------------------------------

class NotifySocket:
    """A service manager's notification socket (abstract namespace, so the
    path length of tmp_path does not matter)."""

    def __init__(self):
        self.name = "@vminfod-test-%d-%d" % (os.getpid(), time.monotonic_ns())
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name[1:])
        self.sock.setblocking(False)
        self.messages = []

    def poll(self):
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return self.messages
            self.messages.append(data.decode())

    def find(self, key):
        """First message with a line KEY=..., or None."""
        for m in self.poll():
            if key in m.split("\n"):
                return m
        return None

    def close(self):
        self.sock.close()


def test_notify_ready_status_and_stopping(mkhost, daemon):
    root = mkhost(n=5)
    ns = NotifySocket()
    try:
        d = daemon(root, env={"NOTIFY_SOCKET": ns.name})
        ready = wait_for(lambda: ns.find("READY=1"), 10, "READY=1")
        # READY comes with a STATUS line and only once the frontend
        # answers on the listening socket.
        assert any(l.startswith("STATUS=") for l in ready.split("\n")), ready
        status, _, body = http_get(d.port, "/ping")
        assert (status, json.loads(body)) == (200, {"ping": "pong"})
        before = ns.messages[:ns.messages.index(ready)]
        assert any(m.startswith("STATUS=") for m in before), ns.messages
        assert sum("READY=1" in m.split("\n") for m in ns.poll()) == 1
        d.wait_log(lambda r: r.get("msg") == "frontend is serving, vminfod is ready",
                   what="the readiness log line")
        # Only the supervisor speaks for the service.
        fe = wait_for(lambda: frontend_pid(d.pid), 10, "the frontend")
        with open("/proc/%d/environ" % fe, "rb") as f:
            assert b"NOTIFY_SOCKET=" not in f.read()
        d.stop()
        assert wait_for(lambda: ns.find("STOPPING=1"), 5, "STOPPING=1")
    finally:
        ns.close()


# ---------------------------------------------------------------------
# socket activation
# ---------------------------------------------------------------------

def test_socket_activation_listen_fds(mkhost, tmp_path):
    """vminfod started the way systemd starts it: a bound socket at fd 3,
    LISTEN_FDS=1 and LISTEN_PID=<its pid>; no --listen."""
    root = mkhost(n=3)
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(64)
    port = lsock.getsockname()[1]
    fd = lsock.fileno()
    log = tmp_path / "vminfod.log"
    argv = [str(build_dir() / "vminfod"), "--root", str(root), "--rundir",
            str(tmp_path / "run"), "--log-file", str(log), "--frontend-user", ""]
    # What systemd does before exec: the socket at fd 3, LISTEN_FDS and
    # LISTEN_PID naming the process that gets them (exec keeps the pid).
    wrapper = ("import os, sys\n"
               "os.dup2(int(sys.argv[1]), 3)\n"
               "os.environ['LISTEN_FDS'] = '1'\n"
               "os.environ['LISTEN_PID'] = str(os.getpid())\n"
               "os.execv(sys.argv[2], sys.argv[2:])\n")
    with open(tmp_path / "out", "wb") as out:
        proc = subprocess.Popen(
            ["/usr/bin/python3", "-c", wrapper, str(fd)] + argv, pass_fds=(fd,),
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
    lsock.close()  # only vminfod holds it now
    try:
        def pong():
            try:
                return http_get(port, "/ping", timeout=2)[0] == 200
            except OSError:
                return False
        wait_for(pong, 10, "/ping on the passed socket")
        status, _, body = http_get(port, "/vms")
        assert status == 200 and len(json.loads(body)) == 3
        text = log.read_text()
        assert "listening on http://systemd fd 3" in text
        # The port 9090 default was not bound instead.
        assert "127.0.0.1:9090" not in text
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0


# ---------------------------------------------------------------------
# privilege separation
# ---------------------------------------------------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")


@pytest.fixture
def public_dir():
    """A directory every user can search (pytest's tmp_path is 0700)."""
    d = tempfile.mkdtemp(prefix="vminfod-ops-", dir="/tmp")
    os.chmod(d, 0o755)
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


@needs_root
def test_frontend_runs_unprivileged(mkhost, public_dir, tmp_path):
    root = mkhost(n=4)
    nobody = pwd.getpwnam("nobody")
    d = helpers.Daemon(root, tmp_path / "d")
    d.rundir = public_dir / "run"   # searchable by the frontend's user
    d.start()
    try:
        fe = wait_for(lambda: frontend_pid(d.pid), 10, "the frontend")
        st = wait_for(lambda: (lambda s: s if s["Uid"].split()[0] != "0" else None)(proc_status(fe)),
                      10, "the frontend to switch user")
        print("frontend pid %d: Uid %s Gid %s CapEff %s CapBnd %s NoNewPrivs %s" % (
            fe, st["Uid"], st["Gid"], st["CapEff"], st["CapBnd"], st["NoNewPrivs"]))
        assert st["Uid"].split() == [str(nobody.pw_uid)] * 4
        assert st["Gid"].split() == [str(nobody.pw_gid)] * 4
        assert st["Groups"] == ""
        for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            assert int(st[cap], 16) == 0, (cap, st[cap])
        assert st["NoNewPrivs"] == "1"
        # The supervisor stays root: it writes the ring.
        assert proc_status(d.pid)["Uid"].split()[0] == "0"

        # It still serves everything.
        assert len(d.get_json("/vms")) == 4
        assert d.get_json("/status")["state"] == "running"

        # The ring: readable by the frontend's user, not writable.
        ring = d.rundir / "vminfod.ring"
        mode = stat.S_IMODE(ring.stat().st_mode)
        assert mode & 0o044 and not mode & 0o022, oct(mode)
        probe = ("import sys\n"
                 "open(sys.argv[1], 'rb').read(8)\n"
                 "try:\n"
                 "    open(sys.argv[1], 'r+b')\n"
                 "except PermissionError:\n"
                 "    print('read-only')\n"
                 "else:\n"
                 "    print('WRITABLE')\n")
        out = subprocess.run(
            ["setpriv", "--reuid", str(nobody.pw_uid), "--regid", str(nobody.pw_gid),
             "--clear-groups", "/usr/bin/python3", "-c", probe, str(ring)],
            capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "read-only"
        # And the running frontend itself has the ring open read-only.
        for name in os.listdir("/proc/%d/fd" % fe):
            try:
                target = os.readlink("/proc/%d/fd/%s" % (fe, name))
            except OSError:
                continue
            if target == str(ring):
                with open("/proc/%d/fdinfo/%s" % (fe, name)) as f:
                    flags = int(re.search(r"flags:\s+(\d+)", f.read()).group(1), 8)
                assert flags & os.O_ACCMODE == os.O_RDONLY
        # Memory maps of the ring are read-only too.
        with open("/proc/%d/maps" % fe) as f:
            maps = [l.split() for l in f if l.rstrip().endswith(str(ring))]
        assert maps and all("w" not in m[1] for m in maps), maps
    finally:
        d.stop()


@needs_root
def test_frontend_user_empty_keeps_uid(mkhost, daemon):
    d = daemon(mkhost(n=1), "--frontend-user", "")
    fe = wait_for(lambda: frontend_pid(d.pid), 10, "the frontend")
    assert proc_status(fe)["Uid"].split()[0] == "0"


def test_frontend_refuses_to_serve_without_its_user(build, tmp_path, mkhost):
    """A frontend that cannot switch user exits instead of serving."""
    user = "no-such-user-vminfod" if os.geteuid() == 0 else "root"
    root = mkhost(n=1)
    run = tmp_path / "run"
    sup = subprocess.Popen([str(build / "vminfod"), "--root", str(root), "--rundir", str(run),
                            "--listen", "127.0.0.1:0", "--no-frontend",
                            "--log-file", str(tmp_path / "sup.log")])
    try:
        ring = run / "vminfod.ring"
        wait_for(ring.exists, 10, "the ring file")
        out = subprocess.run([str(build / "vminfod-frontend"), "--ring", str(ring),
                              "--listen", "127.0.0.1:0", "--user", user],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 1
        assert "cannot switch to user" in out.stderr
    finally:
        sup.send_signal(signal.SIGTERM)
        assert sup.wait(timeout=15) == 0


# ---------------------------------------------------------------------
# /metrics
# ---------------------------------------------------------------------

METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


def parse_value(s):
    if s in ("+Inf", "Inf"):
        return math.inf
    if s == "-Inf":
        return -math.inf
    if s == "NaN":
        return math.nan
    if not re.fullmatch(r"[-+]?(\d+\.?\d*([eE][-+]?\d+)?|\.\d+([eE][-+]?\d+)?)", s):
        raise AssertionError("bad sample value %r" % s)
    return float(s)


def parse_labels(s, lineno):
    """{a="x",b="y\\"z"} -> dict; strict about escapes and separators."""
    labels = {}
    i = 1
    assert s[0] == "{"
    while True:
        if s[i] == "}":
            return labels, i + 1
        m = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*").match(s, i)
        assert m, "line %d: bad label name at %r" % (lineno, s[i:])
        name = m.group(0)
        i = m.end()
        assert s[i:i + 2] == '="', "line %d: expected =\" after %s" % (lineno, name)
        i += 2
        val = []
        while s[i] != '"':
            if s[i] == "\\":
                esc = s[i + 1]
                assert esc in '\\"n', "line %d: bad escape \\%s" % (lineno, esc)
                val.append({"\\": "\\", '"': '"', "n": "\n"}[esc])
                i += 2
            else:
                assert s[i] != "\n"
                val.append(s[i])
                i += 1
        i += 1
        assert name not in labels, "line %d: duplicate label %s" % (lineno, name)
        labels[name] = "".join(val)
        if s[i] == ",":
            i += 1
        else:
            assert s[i] == "}", "line %d: expected , or } in labels" % lineno


def parse_exposition(text):
    """Parse the Prometheus text format (0.0.4) strictly.

    Returns {family: {"type", "help", "samples": [(name, labels, value)]}}.
    Checks: HELP/TYPE syntax and order (TYPE before the family's samples,
    each at most once), name and label syntax, escapes, values, samples of
    a family contiguous, no duplicate series, histogram structure."""
    assert text.endswith("\n"), "the exposition must end with a newline"
    families = {}
    seen_series = set()
    current = None
    done = set()

    def family_of(name):
        for suffix in ("_bucket", "_sum", "_count"):
            base = name[:-len(suffix)]
            if name.endswith(suffix) and families.get(base, {}).get("type") == "histogram":
                return base
        return name

    for lineno, line in enumerate(text[:-1].split("\n"), 1):
        if line == "":
            continue
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                name = parts[2]
                assert METRIC_NAME.match(name), "line %d: bad metric name %r" % (lineno, name)
                fam = families.setdefault(name, {"type": None, "help": None, "samples": []})
                assert name not in done, "line %d: %s after its samples ended" % (lineno, name)
                if parts[1] == "TYPE":
                    assert len(parts) == 4 and parts[3] in TYPES, "line %d: bad TYPE" % lineno
                    assert fam["type"] is None, "line %d: second TYPE for %s" % (lineno, name)
                    assert not fam["samples"], "line %d: TYPE after samples" % lineno
                    fam["type"] = parts[3]
                else:
                    assert fam["help"] is None, "line %d: second HELP for %s" % (lineno, name)
                    fam["help"] = parts[3] if len(parts) == 4 else ""
                if current and current != name:
                    done.add(current)
                current = name
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)", line)
        assert m, "line %d: bad sample line %r" % (lineno, line)
        name = m.group(1)
        rest = line[m.end():]
        labels = {}
        if rest.startswith("{"):
            labels, n = parse_labels(rest, lineno)
            rest = rest[n:]
        assert rest.startswith(" "), "line %d: expected a space before the value" % lineno
        fields = rest[1:].split(" ")
        assert 1 <= len(fields) <= 2, "line %d: bad value/timestamp" % lineno
        value = parse_value(fields[0])
        if len(fields) == 2:
            assert re.fullmatch(r"-?\d+", fields[1]), "line %d: bad timestamp" % lineno
        base = family_of(name)
        assert base in families and families[base]["type"], \
            "line %d: sample of %s without a TYPE line first" % (lineno, base)
        assert base not in done, "line %d: samples of %s are not contiguous" % (lineno, base)
        if current and current != base:
            done.add(current)
        current = base
        key = (name, tuple(sorted(labels.items())))
        assert key not in seen_series, "line %d: duplicate series %s" % (lineno, key)
        seen_series.add(key)
        fam = families[base]
        if fam["type"] == "counter":
            assert value >= 0, "line %d: negative counter" % lineno
        fam["samples"].append((name, labels, value))

    for base, fam in families.items():
        if fam["type"] != "histogram" or not fam["samples"]:
            continue
        groups = {}
        for name, labels, value in fam["samples"]:
            other = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
            g = groups.setdefault(other, {"buckets": [], "sum": None, "count": None})
            if name == base + "_bucket":
                assert "le" in labels, "%s: bucket without le" % base
                g["buckets"].append((parse_value(labels["le"]), value))
            elif name == base + "_sum":
                g["sum"] = value
            elif name == base + "_count":
                g["count"] = value
            else:
                raise AssertionError("%s: unexpected sample %s in a histogram" % (base, name))
        for g in groups.values():
            les = [le for le, _ in g["buckets"]]
            assert les == sorted(les) and les and les[-1] == math.inf, "%s: le order / +Inf" % base
            counts = [c for _, c in g["buckets"]]
            assert counts == sorted(counts), "%s: buckets not cumulative" % base
            assert g["count"] == counts[-1], "%s: _count != +Inf bucket" % base
            assert g["sum"] is not None and g["sum"] >= 0, "%s: _sum" % base
    return families


def sample_value(fams, name, **labels):
    for fam in fams.values():
        for n, l, v in fam["samples"]:
            if n == name and l == labels:
                return v
    raise KeyError((name, labels))


def test_metrics_parser_rejects_bad_input():
    """The parser used below is strict enough to catch the usual mistakes."""
    good = "# HELP a_total x\n# TYPE a_total counter\na_total{t=\"x\"} 1\n"
    assert parse_exposition(good)["a_total"]["samples"] == [("a_total", {"t": "x"}, 1.0)]
    for bad in (good[:-1],                                         # no final newline
                "a_total 1\n",                                     # no TYPE
                good + "a_total{t=\"y\"} -1\n",                    # negative counter
                good + "a_total{t=\"x\"} 2\n",                     # duplicate series
                "# TYPE b gauge\nb{1x=\"a\"} 1\n",                 # bad label name
                "# TYPE b gauge\nb{x=\"a\\q\"} 1\n",               # bad escape
                "# TYPE b gauge\nb 1\n# TYPE c gauge\nc 1\nb 2\n",  # not contiguous
                "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
                "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n"):
        with pytest.raises(AssertionError):
            parse_exposition(bad)


def test_metrics_exposition(mkhost, daemon):
    root = mkhost(n=6)
    d = daemon(root, "--frontend-user", "")
    status, hdrs, body = http_get(d.port, "/metrics")
    assert status == 200
    assert hdrs["content-type"].startswith("text/plain; version=0.0.4")
    fams = parse_exposition(body.decode())
    for name in ("vminfod_events_total", "vminfod_version", "vminfod_subscribers",
                 "vminfod_subscribers_lagged_total", "vminfod_queue_tasks",
                 "vminfod_task_duration_seconds", "vminfod_tasks_total",
                 "vminfod_full_refresh_duration_seconds", "vminfod_child_restarts_total",
                 "vminfod_ring_events", "vminfod_ring_size_bytes", "vminfod_fswatcher_watches",
                 "vminfod_supervisor_up", "vminfod_vms"):
        assert name in fams and fams[name]["help"], name
    assert fams["vminfod_task_duration_seconds"]["type"] == "histogram"
    assert fams["vminfod_full_refresh_duration_seconds"]["type"] == "histogram"
    assert sample_value(fams, "vminfod_vms") == 6
    assert sample_value(fams, "vminfod_supervisor_up") == 1
    # Watches are confirmed by fswatcher after boot; the facts follow
    # within a heartbeat.
    wait_for(lambda: sample_value(parse_exposition(http_get(d.port, "/metrics")[2].decode()),
                                  "vminfod_fswatcher_watches", state="watching") > 0,
             10, "fswatcher watches in /metrics")
    assert sample_value(fams, "vminfod_child_restarts_total", child="frontend") == 0
    v0 = sample_value(fams, "vminfod_version")
    m0 = sample_value(fams, "vminfod_events_total", type="modify")
    tasks0 = sample_value(fams, "vminfod_task_duration_seconds_count")

    # A subscriber and three changes on the host.
    with d.stream("/events") as s:
        s.next_event()  # ready
        zones = [z["zonename"] for z in helpers.read_index(root)][:3]
        for i, z in enumerate(zones):
            helpers.mkhost_change(root, "--set-ram", z, str(1000 + i))
        for z in zones:
            s.wait_event(lambda e, z=z: e.get("type") == "modify" and e.get("zonename") == z)

        def settled():
            f = parse_exposition(http_get(d.port, "/metrics")[2].decode())
            # Events reach the frontend at once; the supervisor's facts
            # within a heartbeat.
            return f if sample_value(f, "vminfod_version") >= v0 + 3 and \
                sample_value(f, "vminfod_task_duration_seconds_count") >= tasks0 + 3 else None
        fams = wait_for(settled, 10, "/metrics to show the new version and tasks")
        assert sample_value(fams, "vminfod_events_total", type="modify") - m0 == \
            sample_value(fams, "vminfod_version") - v0
        assert sample_value(fams, "vminfod_subscribers", transport="json") == 1
        assert sample_value(fams, "vminfod_subscribers", transport="sse") == 0
        with d.stream("/events", headers={"Accept": "text/event-stream"}) as sse:
            sse.next_line()  # its first line: the stream is registered
            fams = wait_for(lambda: (lambda f: f if sample_value(
                f, "vminfod_subscribers", transport="sse") == 1 else None)(
                parse_exposition(http_get(d.port, "/metrics")[2].decode())), 10, "an SSE subscriber")
            assert sample_value(fams, "vminfod_subscribers", transport="json") == 1
            assert sample_value(fams, "vminfod_subscribers_opened_total", transport="sse") == 1
        assert sample_value(fams, "vminfod_task_duration_seconds_count") >= tasks0 + 3
        assert sample_value(fams, "vminfod_tasks_total", result="ok") >= 3
        assert sample_value(fams, "vminfod_ring_events") >= 3
    print(http_get(d.port, "/metrics")[2].decode())


# ---------------------------------------------------------------------
# the live page
# ---------------------------------------------------------------------

def test_live_page_only_at_root(mkhost, daemon):
    d = daemon(mkhost(n=1), "--frontend-user", "")
    status, hdrs, body = http_get(d.port, "/")
    assert status == 200 and hdrs["content-type"].startswith("text/html")
    page = body.decode("ascii")
    assert "new EventSource(" in page and "/status" in page
    # Self-contained: nothing loaded from elsewhere.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<link" not in page and "<script src" not in page
    for path in ("/index.html", "//", "/?x=1", "/x/"):
        status, _, body = http_get(d.port, path)
        assert (status, body) == (404, b"Unsupported URL Path"), path


class WebDriver:
    """Just enough of the W3C WebDriver protocol, over chromedriver."""

    def __init__(self, tmp_path):
        self.port = free_port()
        self.log = open(tmp_path / "chromedriver.log", "wb")
        self.proc = subprocess.Popen(["chromedriver", "--port=%d" % self.port],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(self._up, 20, "chromedriver")
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": shutil.which("chromium") or "/usr/bin/chromium",
                "args": ["--headless", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync", "--no-first-run",
                         "--window-size=1280,900",
                         "--user-data-dir=%s" % (tmp_path / "chromium-profile")]}}}}
        self.session = self.call("POST", "/session", caps)["sessionId"]

    def _up(self):
        try:
            return self.call("GET", "/status")["ready"]
        except (OSError, urllib.error.URLError):
            return False

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (self.port, path), data=data,
                                     method=method, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())["value"]

    def s(self, method, path, body=None):
        return self.call(method, "/session/%s%s" % (self.session, path), body)

    def js(self, script, *args):
        return self.s("POST", "/execute/sync", {"script": script, "args": list(args)})

    def close(self):
        try:
            self.call("DELETE", "/session/%s" % self.session)
        finally:
            self.proc.terminate()
            self.proc.wait(timeout=20)
            self.log.close()


@pytest.mark.skipif(not shutil.which("chromedriver") or not (shutil.which("chromium")),
                    reason="needs Debian's chromium and chromium-driver (scripts/install-deps test)")
def test_live_page_in_chromium(mkhost, daemon, tmp_path):
    root = mkhost(n=5)
    d = daemon(root)
    wd = WebDriver(tmp_path)
    try:
        wd.s("POST", "/url", {"url": "http://127.0.0.1:%d/" % d.port})
        wait_for(lambda: wd.js("return document.body.dataset.conn === 'ok' && "
                               "document.querySelectorAll('#vms tr').length === 5 && "
                               "document.body.dataset.statusOk === '1'"),
                 20, "the page to connect and show 5 VMs and the status")
        state = wd.js("return document.querySelector('#facts dd[data-key=state]').textContent")
        assert state == "running"

        zone = helpers.read_index(root)[0]["zonename"]
        helpers.mkhost_change(root, "--set-ram", zone, "777")
        row = "document.querySelector('#events tr[data-type=modify][data-zonename=\"%s\"]')" % zone
        wait_for(lambda: wd.js("return !!" + row), 20, "the modify event on the page")
        assert "777" in wd.js("return %s.textContent" % row)
        assert wd.js("return document.querySelector('#vms tr[data-zonename=\"%s\"]').textContent"
                     % zone).endswith("777")
        transport = wd.js("return document.body.dataset.transport")
        assert transport in ("sse", "ndjson")

        # The frontend restarts: the page resumes by itself, with no
        # event missed or repeated.
        fe = frontend_pid(d.pid)
        os.kill(fe, signal.SIGKILL)
        wait_for(lambda: (frontend_pid(d.pid) or fe) != fe, 20, "a new frontend")
        helpers.mkhost_change(root, "--set-ram", zone, "778")
        wait_for(lambda: wd.js("return [...document.querySelectorAll('#events tr[data-type=modify]')]"
                               ".some(r => r.textContent.includes('778'))"),
                 30, "the change after the frontend restart on the page")
        versions = wd.js("return [...document.querySelectorAll('#events tr')]"
                         ".filter(r => r.dataset.type !== 'ready' && r.dataset.type !== 'error')"
                         ".map(r => r.cells[0].textContent)")
        assert len(versions) == len(set(versions)), versions
        assert wd.js("return document.body.dataset.conn") == "ok"

        png = base64.b64decode(wd.s("GET", "/screenshot"))
        assert png.startswith(b"\x89PNG")
        shot = tmp_path / "livepage.png"
        shot.write_bytes(png)
        print("screenshot: %s (transport %s)" % (shot, transport))
    finally:
        wd.close()


# ---------------------------------------------------------------------
# systemd units, man pages, make install
# ---------------------------------------------------------------------

def test_systemd_units_verify(tmp_path):
    units = repo_dir() / "scripts"
    service = (units / "vminfod.service").read_text()
    for line in ("Type=notify", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
                 "RuntimeDirectory=vminfod", "KillMode=", "ReadOnlyPaths="):
        assert re.search("^" + re.escape(line), service, re.M), line
    assert "ListenStream=" in (units / "vminfod.socket").read_text()
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze not installed (Debian package systemd)")
    (tmp_path / "vminfod.service").write_text(service.replace("@SBINDIR@", str(build_dir())))
    shutil.copy(units / "vminfod.socket", tmp_path)
    out = subprocess.run(["systemd-analyze", "verify", "--man=no", "vminfod.socket", "vminfod.service"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr


def man_options(page):
    """Option names documented with Fl in an mdoc page, without dashes
    ("Fl \\-root" and "Fl hjr" give "root", "h", "j", "r")."""
    names = set()
    for m in re.finditer(r"\bFl (\\-)?([A-Za-z][A-Za-z0-9\\-]*)", page.read_text()):
        word = m.group(2).replace("\\-", "-")
        if m.group(1):
            names.add(word)
        else:
            names.update(word)  # a cluster of single-letter flags
    return names


def help_options(text):
    """Option names in a usage text, without dashes."""
    return {o.lstrip("-") for o in re.findall(r"(?<![\w-])(--[a-z][a-z-]*|-[a-z])\b", text)}


@pytest.mark.skipif(not shutil.which("mandoc"), reason="mandoc not installed")
def test_man_pages_lint_clean_and_complete(build):
    man = repo_dir() / "man"
    pages = sorted(man.glob("*.8"))
    assert {p.name for p in pages} >= {"vminfod.8", "fswatcher.8", "vminfo.8"}
    for p in pages:
        out = subprocess.run(["mandoc", "-T", "lint", "-W", "warning", str(p)],
                             capture_output=True, text=True)
        assert out.returncode == 0 and not out.stdout.strip() and not out.stderr.strip(), \
            "%s:\n%s%s" % (p, out.stdout, out.stderr)
    for page, argv in (("vminfod.8", [str(build / "vminfod"), "--help"]),
                       ("fswatcher.8", [str(build / "fswatcher"), "-h"])):
        usage = subprocess.run(argv, capture_output=True, text=True).stdout
        offered = help_options(usage)
        assert len(offered) >= 3, usage
        missing = offered - man_options(man / page)
        assert not missing, (page, missing)
    if (build / "vminfo").exists():
        usage = subprocess.run([str(build / "vminfo"), "--help"], capture_output=True, text=True).stdout
        missing = help_options(usage) - man_options(man / "vminfo.8")
        assert not missing, ("vminfo.8", missing)
    for page, words in (("vminfod.8", ("SIGTERM", "SIGHUP", "NOTIFY_SOCKET", "LISTEN_FDS",
                                      "/run/vminfod/vminfod.ring", "EXIT STATUS")),
                        ("fswatcher.8", ("EXIT STATUS",)),
                        ("vminfo.8", ("VMINFOD_HOST", "VMINFOD_PORT", "EXIT STATUS"))):
        text = (man / page).read_text()
        for w in words:
            assert w in text, (page, w)


def test_make_install(build, tmp_path):
    dest = tmp_path / "dest"
    out = subprocess.run(["make", "--no-print-directory", "-C", str(repo_dir()), "B=%s" % build,
                          "install", "DESTDIR=%s" % dest, "PREFIX=/usr"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    expect = ["usr/sbin/vminfod", "usr/libexec/vminfod/fswatcher",
              "usr/libexec/vminfod/vminfod-frontend", "usr/share/man/man8/vminfod.8",
              "usr/share/man/man8/fswatcher.8", "usr/share/man/man8/vminfo.8",
              "usr/lib/systemd/system/vminfod.service", "usr/lib/systemd/system/vminfod.socket"]
    if (build / "vminfo").exists():
        expect += ["usr/bin/vminfo"]
    if (build / "libvminfod.so").exists():
        expect += ["usr/lib/libvminfod.so.1", "usr/include/vminfod.h"]
    if (repo_dir() / "client" / "libvminfod.pc.in").exists():
        expect += ["usr/lib/pkgconfig/libvminfod.pc"]
    missing = [p for p in expect if not (dest / p).exists()]
    assert not missing, missing
    service = (dest / "usr/lib/systemd/system/vminfod.service").read_text()
    assert "ExecStart=/usr/sbin/vminfod " in service and "@" not in service.split("ExecStart=")[1].split("\n")[0]
    assert os.access(dest / "usr/sbin/vminfod", os.X_OK)
    if (dest / "usr/lib/pkgconfig/libvminfod.pc").exists():
        assert "@" not in (dest / "usr/lib/pkgconfig/libvminfod.pc").read_text()
