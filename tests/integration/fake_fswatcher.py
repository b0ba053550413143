#!/usr/bin/python3
"""A file watcher that watches nothing: every request succeeds, no event
is ever reported ("watches suppressed").

Speaks the fswatcher line protocol (spec/fswatcher.md §3-§4, JSON mode):
prints `ready` first when started with -r, answers `<key> WATCH <path>`
and `<key> UNWATCH <path>` with a SUCCESS response and `<key> STATUS`
with the list of paths it pretends to watch.  Exits 0 when stdin closes,
as the real program does.  Used by the integration tests to show what the
periodic full refresh catches on its own.
"""

import json
import os
import sys
import time


def now():
    """Monotonic [seconds, nanoseconds], as the real watcher stamps lines."""
    ns = time.monotonic_ns()
    return [ns // 10 ** 9, ns % 10 ** 9]


def send(msg):
    """One compact JSON line on stdout, flushed at once."""
    sys.stdout.write(json.dumps(msg, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def error(key, code, message):
    send({"type": "error", "time": now(), "key": key, "code": code,
          "message": message})


def handle(line, watched):
    """Answer one command line."""
    words = line.split()
    if len(words) < 2 or not words[0].lstrip("+-").isdigit():
        error(0, 1, "invalid command line")
        return
    key = int(words[0]) % (1 << 64)
    if key == 0:
        error(0, 2, "invalid key: 0")
        return
    cmd = words[1]
    if cmd in ("WATCH", "UNWATCH"):
        if len(words) < 3:
            error(0, 1, "invalid command line - %s requires pathname" % cmd)
            return
        path = words[2]
        if cmd == "WATCH":
            message = "already watching" if path in watched else \
                "port_associate(3c) started watching path"
            watched.add(path)
        else:
            watched.discard(path)
            message = "port_dissociate(3c) stopped watching path"
        send({"type": "response", "time": now(), "key": key, "code": 0,
              "pathname": path, "message": message, "result": "SUCCESS"})
    elif cmd == "STATUS":
        if len(words) > 2:
            error(0, 1, "invalid command line - STATUS takes no arguments")
            return
        files = sorted(watched)
        send({"type": "response", "time": now(), "key": key, "code": 0,
              "result": "SUCCESS",
              "data": {"files": files, "files_count": len(files),
                       "pid": os.getpid()}})
    else:
        error(key, 3, "unknown command '%s'" % cmd)


def main():
    if "-h" in sys.argv[1:]:
        print("Usage: fake_fswatcher [-hrj]")
        return 0
    watched = set()
    if "-r" in sys.argv[1:]:
        send({"type": "ready", "time": now()})
    for line in sys.stdin:
        handle(line, watched)
    sys.stderr.write("fswatcher: stdin closed\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
