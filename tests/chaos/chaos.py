#!/usr/bin/env python3
"""chaos - kill vminfod's processes at random while subscribers resume.

usage: chaos.py [--build DIR] [--subscribers N] [--rate R]
                [--frontend-kills K] [--supervisor-kills S] [--vms V]
                [--seed X] [--max-seconds T] [--keep]

Generates a host tree, starts vminfod on it (127.0.0.1, a free port) and
N subscribers of GET /events in one selectors loop (one process, no
threads), most over HTTP/1.0 (a raw line stream), every tenth over
HTTP/1.1 (chunked).  Each subscriber resumes with ?since=<epoch>:<version>
whenever its stream ends.  scripts/activity makes R changes a second.
Meanwhile the frontend is killed with SIGKILL K times and the supervisor S
times, at random moments; the harness restarts the supervisor at once (in
place of systemd) on the same ring file and port.  A /ping client runs
throughout.

Schedule rules (what the daemon promises, not luck): at most 5 frontend
kills within 10.5 s (more puts the frontend into maintenance by design);
a supervisor kill is never within 1.5 s of a frontend kill, because while
the frontend is down the supervisor is the only holder of the listening
socket and killing it then leaves nothing listening until the next one
binds (socket activation covers that under systemd).

At the end the generator stops, every subscriber must reach the version
GET /vms reports, and its state (ready snapshot + events) must equal
GET /vms.  Prints the counts; exits 0 only when lost, duplicated,
refused, mismatched and resynced counts are all 0 and every state
matches.  Bounded: --max-seconds (default 900) for the whole run.
"""

import argparse
import errno
import json
import os
import random
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))

import helpers  # noqa: E402

READ_SIZE = 1 << 18


class Counts(dict):
    def __missing__(self, key):
        return 0


class Sub:
    """One /events subscriber: connection state and its cursor."""

    def __init__(self, idx, chunked):
        self.idx = idx
        self.chunked = chunked
        self.sock = None
        self.state = "idle"         # idle, connecting, head, body
        self.buf = b""
        self.dec = None
        self.epoch = None
        self.version = None         # last version applied
        self.base_version = None    # version of the last full ready
        self.base_vms = None        # its VM list (parsed)
        self.retry_at = 0.0
        self.got_ready = False


class Chaos:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.counts = Counts()
        self.events = {}            # version -> line bytes (first seen)
        self.sel = selectors.DefaultSelector()
        self.subs = []
        self.sups = []              # every supervisor Popen started
        self.sup = None
        self.ping = None            # [sock, state, buf, started]
        self.next_ping = 0.0
        self.log = []

    # ---- processes -----------------------------------------------------

    def start_supervisor(self):
        a = self.args
        argv = [str(a.build / "vminfod"), "--root", str(self.root),
                "--listen", "127.0.0.1:%d" % self.port,
                "--rundir", str(self.work / "run"),
                "--log-file", str(self.work / "vminfod.log"),
                "--log-level", "info"]
        with open(self.work / "vminfod.out", "ab") as out:
            self.sup = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                        stdout=out, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        self.sups.append(self.sup)

    def kill_frontend(self):
        pid = helpers.frontend_pid(self.sup.pid)
        if pid is None:
            return False
        os.kill(pid, signal.SIGKILL)
        self.counts["frontend_kills"] += 1
        return True

    def kill_supervisor(self):
        os.kill(self.sup.pid, signal.SIGKILL)
        self.sup.wait()
        self.counts["supervisor_kills"] += 1
        self.start_supervisor()

    def cleanup(self):
        """Stop the last supervisor; SIGKILL leftovers of every session."""
        if self.sup and self.sup.poll() is None:
            self.sup.send_signal(signal.SIGTERM)
            try:
                self.sup.wait(15)
            except subprocess.TimeoutExpired:
                self.sup.kill()
                self.sup.wait()
        helpers.kill_sessions({p.pid for p in self.sups})

    # ---- subscribers ---------------------------------------------------

    def connect(self, sub, now):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        rc = s.connect_ex(("127.0.0.1", self.port))
        if rc not in (0, errno.EINPROGRESS):
            s.close()
            self.failed_connect(sub, rc, now)
            return
        sub.sock = s
        sub.state = "connecting"
        sub.buf = b""
        sub.dec = helpers.ChunkedDecoder() if sub.chunked else None
        self.sel.register(s, selectors.EVENT_WRITE, sub)

    def failed_connect(self, sub, err, now):
        self.counts["refused" if err == errno.ECONNREFUSED
                    else "connect_errors"] += 1
        sub.state = "idle"
        sub.retry_at = now + 0.05

    def drop(self, sub, now, why):
        if sub.sock is not None:
            self.sel.unregister(sub.sock)
            sub.sock.close()
            sub.sock = None
        if sub.state in ("connecting", "head") or not sub.got_ready:
            self.counts["dropped_before_ready"] += 1
        else:
            self.counts["drops"] += 1
        self.counts["drop_" + why] += 1
        sub.state = "idle"
        sub.got_ready = False
        sub.retry_at = now + self.rng.uniform(0.0, 0.02)

    def on_writable(self, sub, now):
        err = sub.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self.sel.unregister(sub.sock)
            sub.sock.close()
            sub.sock = None
            self.failed_connect(sub, err, now)
            return
        path = "/events"
        if sub.epoch is not None:
            path += "?since=%s:%d" % (sub.epoch, sub.version)
        proto = "HTTP/1.1" if sub.chunked else "HTTP/1.0"
        req = "GET %s %s\r\nHost: 127.0.0.1\r\nUser-Agent: chaos/%d\r\n\r\n" \
            % (path, proto, sub.idx)
        try:
            sub.sock.send(req.encode())   # small: fits the empty buffer
        except OSError:
            self.drop(sub, now, "send")
            return
        sub.state = "head"
        self.sel.modify(sub.sock, selectors.EVENT_READ, sub)

    def on_readable(self, sub, now):
        try:
            data = sub.sock.recv(READ_SIZE)
        except (ConnectionResetError, BrokenPipeError):
            data = None
        except BlockingIOError:
            return
        if not data:
            self.drop(sub, now, "reset" if data is None else "eof")
            return
        if sub.state == "head":
            sub.buf += data
            end = sub.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = sub.buf[:end], sub.buf[end + 4:]
            sub.buf = b""
            if not head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")):
                self.counts["bad_status"] += 1
                self.drop(sub, now, "status")
                return
            sub.state = "body"
        if sub.dec is not None:
            data = sub.dec.feed(data)
        buf = sub.buf + data
        lines = buf.split(b"\n")
        sub.buf = lines.pop()
        for line in lines:
            if line:
                self.on_line(sub, line)
        if sub.dec is not None and sub.dec.done:
            self.drop(sub, now, "end")

    def on_line(self, sub, line):
        c = self.counts
        if line.startswith(b'{"type":"ready"'):
            ready = json.loads(line)
            sub.got_ready = True
            if ready["resumed"]:
                c["resumed"] += 1
                if ready["epoch"] != sub.epoch or \
                        ready["version"] != sub.version:
                    c["bad_resume"] += 1
                return
            if sub.epoch is not None:
                c["resynced"] += 1     # a full ready after the first
            c["full_ready"] += 1
            sub.epoch = ready["epoch"]
            sub.version = sub.base_version = ready["version"]
            sub.base_vms = ready["vms"]
            return
        if line.startswith(b'{"type":"error"'):
            c["error_lines"] += 1
            return
        v = int(line[line.rindex(b":") + 1:-1])
        expect = sub.version + 1
        if v < expect:
            c["duplicated"] += 1
            return
        if v > expect:
            c["lost"] += v - expect
        sub.version = v
        c["lines"] += 1
        old = self.events.get(v)
        if old is None:
            self.events[v] = line
        elif old != line:
            c["mismatched"] += 1

    # ---- /ping ---------------------------------------------------------

    def ping_step(self, now):
        if self.ping is None and now >= self.next_ping:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            rc = s.connect_ex(("127.0.0.1", self.port))
            if rc not in (0, errno.EINPROGRESS):
                s.close()
                self.counts["ping_refused" if rc == errno.ECONNREFUSED
                            else "ping_errors"] += 1
                self.next_ping = now + 0.02
                return
            self.ping = [s, "connecting", b"", now]
            self.sel.register(s, selectors.EVENT_WRITE, "ping")
        elif self.ping is not None and now - self.ping[3] > 10:
            self.ping_done(now, "ping_timeout")

    def ping_done(self, now, what):
        self.counts[what] += 1
        self.sel.unregister(self.ping[0])
        self.ping[0].close()
        self.ping = None
        self.next_ping = now + 0.02

    def on_ping(self, mask, now):
        s, state, buf, _ = self.ping
        if state == "connecting":
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.ping_done(now, "ping_refused" if err == errno.ECONNREFUSED
                               else "ping_errors")
                return
            s.send(b"GET /ping HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            self.ping[1] = "reading"
            self.sel.modify(s, selectors.EVENT_READ, "ping")
            return
        try:
            data = s.recv(4096)
        except ConnectionResetError:
            self.ping_done(now, "ping_reset")
            return
        if data:
            self.ping[2] += data
            return
        ok = self.ping[2].startswith((b"HTTP/1.0 200", b"HTTP/1.1 200")) and \
            self.ping[2].endswith(b'{"ping":"pong"}')
        self.ping_done(now, "ping_ok" if ok else "ping_bad")

    # ---- the run -------------------------------------------------------

    def schedule(self, t0):
        """Kill times: frontend kills under the crash-loop limit, supervisor
        kills spread over the run, never close to a frontend kill."""
        a = self.args
        fe = []
        t = t0 + 1.0
        for i in range(a.frontend_kills):
            t += self.rng.uniform(0.2, 1.6)
            if i >= 5:
                t = max(t, fe[i - 5] + 10.5 + self.rng.uniform(0, 0.4))
            fe.append(t)
        end = max(fe[-1] if fe else t0, t0 + 1.0 + 4.0 * a.supervisor_kills) + 1.0
        sv = []
        tries = 0
        while len(sv) < a.supervisor_kills and tries < 100000:
            tries += 1
            t = self.rng.uniform(t0 + 1.0, end)
            if any(abs(t - f) < 1.5 for f in fe) or \
                    any(abs(t - s) < 2.0 for s in sv):
                continue
            sv.append(t)
        if len(sv) < a.supervisor_kills:
            raise SystemExit("cannot fit %d supervisor kills in the schedule"
                             % a.supervisor_kills)
        plan = [(t, "frontend") for t in fe] + [(t, "supervisor") for t in sv]
        return sorted(plan), end

    def run(self):
        a = self.args
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        self.work = Path(tempfile.mkdtemp(prefix="vminfod-chaos-"))
        self.root = self.work / "host"
        helpers.run_mkhost(self.root, a.vms, a.seed)
        self.port = helpers.free_port()
        t_start = time.monotonic()
        deadline = t_start + a.max_seconds
        act = None
        ok = False
        try:
            self.start_supervisor()
            helpers.wait_for(lambda: self.sup.poll() is None and
                             self.ping_once(), 20, "vminfod to answer /ping")
            self.subs = [Sub(i, i % 10 == 9) for i in range(a.subscribers)]
            now = time.monotonic()
            for sub in self.subs:
                self.connect(sub, now)
            # Everyone has a first ready before the chaos starts.
            self.loop_until(lambda: all(s.epoch is not None
                                        for s in self.subs), deadline, 60,
                            "every subscriber's first ready")
            act = subprocess.Popen(
                [sys.executable, str(REPO / "scripts" / "activity"),
                 str(self.root), "--rate", str(a.rate), "--seed",
                 str(a.seed)], stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            plan, end = self.schedule(time.monotonic())
            plan_i = 0

            def chaos_done():
                nonlocal plan_i
                now = time.monotonic()
                while plan_i < len(plan) and plan[plan_i][0] <= now:
                    kind = plan[plan_i][1]
                    if kind == "frontend":
                        if not self.kill_frontend():
                            # Not up yet (restarting): try again shortly.
                            plan[plan_i] = (now + 0.05, kind)
                            plan.sort()
                            continue
                    else:
                        self.kill_supervisor()
                    plan_i += 1
                return plan_i == len(plan) and now >= end
            self.loop_until(chaos_done, deadline, deadline - time.monotonic(),
                            "the kill schedule")
            act.send_signal(signal.SIGTERM)
            _, err = act.communicate(timeout=60)
            if act.returncode != 0:
                raise RuntimeError("activity failed: %s" % err.decode())
            act = None
            ok = self.finish(deadline)
        finally:
            if act is not None and act.poll() is None:
                act.kill()
                act.wait()
            self.cleanup()
            self.duration = time.monotonic() - t_start
            if ok and not a.keep:
                shutil.rmtree(self.work, ignore_errors=True)
        return ok

    def ping_once(self):
        try:
            return helpers.http_get(self.port, "/ping", timeout=2)[0] == 200
        except OSError:
            return False

    def loop_until(self, pred, deadline, budget, what):
        limit = min(deadline, time.monotonic() + budget)
        while not pred():
            now = time.monotonic()
            if now >= limit:
                raise RuntimeError("timed out waiting for %s" % what)
            for sub in self.subs:
                if sub.state == "idle" and now >= sub.retry_at:
                    self.connect(sub, now)
            self.ping_step(now)
            for key, mask in self.sel.select(0.01):
                now = time.monotonic()
                if key.data == "ping":
                    self.on_ping(mask, now)
                elif key.data.state == "connecting":
                    self.on_writable(key.data, now)
                else:
                    self.on_readable(key.data, now)

    def finish(self, deadline):
        """Quiet: every subscriber at GET /vms's version with its state."""
        c = self.counts
        vms_v = [None]

        def settled():
            try:
                st, hdrs, body = helpers.http_get(self.port, "/vms",
                                                  timeout=5)
            except OSError:
                return False
            if st != 200:
                return False
            v = int(hdrs["x-vminfod-version"])
            if vms_v[0] is None or vms_v[0][0] != v:
                vms_v[0] = (v, hdrs["x-vminfod-epoch"], body)
                return False   # must hold still across two looks
            return all(s.version == v and s.epoch == vms_v[0][1]
                       for s in self.subs)
        checked = [0.0]

        def pred():
            now = time.monotonic()
            if now - checked[0] < 0.25:
                return False
            checked[0] = now
            return settled()
        self.loop_until(pred, deadline, 120, "every subscriber to catch up")
        v, epoch, body = vms_v[0]
        want = {vm["zonename"]: vm for vm in json.loads(body)}
        by_base = {}
        for s in self.subs:
            key = (s.base_version, s.base_vms)
            if key in by_base:
                good = by_base[key]
            else:
                state = {vm["zonename"]: vm for vm in json.loads(s.base_vms)}
                good = True
                for ver in range(s.base_version + 1, v + 1):
                    line = self.events.get(ver)
                    if line is None:
                        good = False
                        break
                    ev = json.loads(line)
                    if ev["type"] == "delete":
                        state.pop(ev["zonename"], None)
                    else:
                        state[ev["zonename"]] = ev["vm"]
                good = good and state == want
                by_base[key] = good
            if not good:
                c["state_mismatch"] += 1
        c["final_version"] = v
        c["vms"] = len(want)
        return all(c[k] == 0 for k in ("lost", "duplicated", "refused",
                                       "ping_refused", "mismatched",
                                       "resynced", "bad_resume",
                                       "state_mismatch", "bad_status",
                                       "ping_bad", "ping_timeout"))


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="chaos.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--build", type=Path, default=helpers.build_dir())
    p.add_argument("--subscribers", type=int, default=1000)
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--frontend-kills", type=int, default=100)
    p.add_argument("--supervisor-kills", type=int, default=20)
    p.add_argument("--vms", type=int, default=20)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--max-seconds", type=float, default=900)
    p.add_argument("--keep", action="store_true",
                   help="keep the work directory")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    args.build = args.build.resolve()
    ch = Chaos(args)
    try:
        ok = ch.run()
    except RuntimeError as e:
        print("chaos: %s" % e, file=sys.stderr)
        ok = False
    c = ch.counts
    print("chaos: %d subscribers, %d changes/s, %d frontend + %d supervisor "
          "kills in %.1f s" % (args.subscribers, args.rate,
                               c["frontend_kills"], c["supervisor_kills"],
                               getattr(ch, "duration", 0.0)))
    print("chaos: lost=%d duplicated=%d refused=%d (pings refused=%d) "
          "resynced=%d mismatched=%d state_mismatch=%d"
          % (c["lost"], c["duplicated"], c["refused"], c["ping_refused"],
             c["resynced"], c["mismatched"], c["state_mismatch"]))
    print("chaos: detail %s" % json.dumps(dict(sorted(c.items()))))
    print("chaos: work dir %s" % ch.__dict__.get("work"))
    print("chaos: %s" % ("PASS" if ok else "FAIL"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
