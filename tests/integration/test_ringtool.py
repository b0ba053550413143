"""ringtool: the ring file filled and read by the test tool, as the
frontend's tests use it without a supervisor (the ring format itself is
covered by tests/unit/test_ring.c)."""

import json
import os
import subprocess

import pytest

import helpers


def ringtool():
    path = os.path.join(helpers.build_dir(), "tools", "ringtool")
    if not os.path.exists(path):
        pytest.skip("ringtool not built")
    return path


def run(*args, stdin=None, pass_fds=()):
    p = subprocess.run([ringtool(), *args], input=stdin, capture_output=True,
                       text=True, timeout=30, pass_fds=pass_fds)
    assert p.returncode == 0, p.stderr
    return p.stdout


def dump(path):
    return [json.loads(line) for line in run("dump", str(path)).splitlines()]


def test_publish_dump_round_trip(tmp_path):
    ring = tmp_path / "vminfod.ring"
    opened = json.loads(run("create", str(ring), "1M"))
    assert opened["kept"] is False and opened["why"] == "missing"
    assert len(opened["epoch"]) == 36
    assert (ring.stat().st_mode & 0o777) == 0o644

    bell = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
    try:
        commands = "\n".join([
            'snapshot [{"zonename":"a","vm":{"uuid":"ua","ram":1}},'
            '{"zonename":"b","vm":{"uuid":"ub","ram":2}}]',
            'vm modify a {"uuid":"ua","ram":512}',
            'vm delete b',
            'event create c {"type":"create","zonename":"c","vm":{"uuid":"uc"},"version":3}',
            'status {"pid":42}',
            'nonsense',
        ]) + "\n"
        out = run("publish", "--doorbell", str(bell), str(ring), stdin=commands,
                  pass_fds=(bell,))
        replies = [json.loads(line) for line in out.splitlines()]
        assert replies[0]["kept"] is True
        assert replies[0]["epoch"] == opened["epoch"]
        assert [r["ok"] for r in replies[1:]] == [True] * 5 + [False]
        assert [r["version"] for r in replies[1:]] == [0, 1, 2, 3, 3, 3]
        # Rung once per successful command.
        assert os.eventfd_read(bell) == 5
    finally:
        os.close(bell)

    lines = dump(ring)
    header, snap = lines[0], lines[1]
    assert header["epoch"] == opened["epoch"]
    assert header["head_version"] == 3 and header["oldest_version"] == 1
    assert snap["vms"] == [{"zonename": "a", "vm": {"uuid": "ua", "ram": 1}},
                           {"zonename": "b", "vm": {"uuid": "ub", "ram": 2}}]
    events = [l for l in lines if l["kind"] == "event"]
    assert [(e["version"], e["type"], e["zonename"]) for e in events] == [
        (1, "modify", "a"), (2, "delete", "b"), (3, "create", "c")]
    for e in events:
        line = e["line"]
        assert line.endswith("\n")
        ev = json.loads(line)
        assert ev["version"] == e["version"]
        assert list(ev)[-1] == "version"
        if e["type"] == "delete":
            assert e["vm_len"] == 0 and "vm" not in ev
        else:
            vm = line[e["vm_off"]:e["vm_off"] + e["vm_len"]]
            assert json.loads(vm) == ev["vm"]
    assert lines[-1] == {"kind": "status", "status": {"pid": 42}}

    # A new publisher keeps the epoch and the VMs last published.
    out = run("publish", str(ring), stdin="snapshot\n")
    assert json.loads(out.splitlines()[0])["kept"] is True
    snap = [l for l in dump(ring) if l["kind"] == "snapshot"][0]
    assert snap["version"] == 3
    assert snap["vms"] == [{"zonename": "a", "vm": {"uuid": "ua", "ram": 512}},
                           {"zonename": "c", "vm": {"uuid": "uc"}}]


def test_foreign_file_gets_new_epoch(tmp_path):
    ring = tmp_path / "vminfod.ring"
    ring.write_bytes(b"not a ring\n" * 100)
    p = subprocess.run([ringtool(), "dump", str(ring)], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 1
    opened = json.loads(run("create", str(ring), "64K"))
    assert opened["kept"] is False and opened["why"] == "foreign magic"
    assert dump(ring)[0]["head_version"] == 0


def test_ring_wraps_and_stays_resumable(tmp_path):
    ring = tmp_path / "vminfod.ring"
    pad = "x" * 1000
    commands = "".join('vm modify z%d {"uuid":"u%d","pad":"%s","n":%d}\n'
                       % (i % 5, i % 5, pad, i) for i in range(300))
    out = run("publish", str(ring), "64K", stdin=commands)
    assert json.loads(out.splitlines()[-1]) == {"ok": True, "version": 300}
    lines = dump(ring)
    header = lines[0]
    assert header["head_version"] == 300 and header["oldest_version"] > 1
    snap = [l for l in lines if l["kind"] == "snapshot"][0]
    events = [l["version"] for l in lines if l["kind"] == "event"]
    assert events[-1] == 300
    assert all(v in events for v in range(snap["version"] + 1, 301))
    # The snapshot plus the events after it give the final state.
    state = {vm["zonename"]: vm["vm"] for vm in snap["vms"]}
    for l in lines:
        if l["kind"] == "event" and l["version"] > snap["version"]:
            state[l["zonename"]] = json.loads(l["line"])["vm"]
    assert sorted(vm["n"] for vm in state.values()) == [295, 296, 297, 298, 299]
