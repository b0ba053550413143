"""`make demo`'s script: it generates a host, starts vminfod with activity,
prints the commands to try, streams events, and stops everything it
started (and removes its files) on SIGINT or SIGTERM."""

import os
import re
import select
import signal
import subprocess
import time

import helpers


def read_until(proc, pattern, timeout):
    """Output of proc up to the first line matching pattern (regex)."""
    out = b""
    deadline = time.monotonic() + timeout
    rx = re.compile(pattern.encode())
    while not rx.search(out):
        left = deadline - time.monotonic()
        assert left > 0, "no %r in demo output:\n%s" % (pattern, out.decode())
        r, _, _ = select.select([proc.stdout], [], [], left)
        if r:
            chunk = os.read(proc.stdout.fileno(), 65536)
            assert chunk, "demo ended early:\n%s" % out.decode()
            out += chunk
    return out.decode()


def test_demo_runs_and_stops_cleanly():
    port = helpers.free_port()
    env = dict(os.environ, VMINFOD_PORT=str(port), DEMO_VMS="12")
    proc = subprocess.Popen(
        ["bash", str(helpers.script("demo")), str(helpers.build_dir())],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        text = read_until(proc, r"Ctrl-C stops everything", 60)
        work = re.search(r"watching (/\S+)/host", text).group(1)
        assert "vminfo --port %d ping" % port in text
        assert "vminfo --port %d events" % port in text
        # The activity generator's changes arrive on the live trace.
        text += read_until(proc, r"\] \S+ \S+ modify: ", 30)
        assert helpers.http_get(port, "/ping")[2] == b'{"ping":"pong"}'
        vms = helpers.http_get(port, "/vms")[2]
        assert vms.count(b'"zonename"') >= 12
        os.kill(proc.pid, signal.SIGTERM)
        rest = proc.communicate(timeout=30)[0].decode()
        assert "demo stopped." in rest
        assert proc.returncode in (0, 143), proc.returncode
        assert not os.path.exists(work), "the demo left %s behind" % work
        # Everything it started is gone: nothing left in its session.
        assert [p for p, st in helpers.processes() if st.session == proc.pid] == []
    finally:
        if proc.poll() is None:
            helpers.kill_sessions({proc.pid})
            proc.wait(10)
