"""scripts/mkhost and scripts/activity: the host trees every test runs on."""

import base64
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import helpers

BRANDS = {"joyent", "joyent-minimal", "lx", "kvm", "bhyve"}
STATES = {"configured", "incomplete", "installed", "ready", "running",
          "shutting_down", "down"}
MIB = 1024 * 1024
UUID_V4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}"
                     r"-[0-9a-f]{12}$")


def tree_snapshot(root):
    """relative path -> (kind, bytes or None, mtime_ns) for a whole tree."""
    snap = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, root)
            if name in filenames:
                with open(path, "rb") as f:
                    snap[rel] = ("file", f.read(), st.st_mtime_ns)
            else:
                snap[rel] = ("dir", None, st.st_mtime_ns)
    return snap


def zone_xml(root, zonename):
    """Parsed XML root element of a zone."""
    return ET.parse(Path(root) / "etc" / "zones" / (zonename + ".xml")) \
        .getroot()


def xml_attrs(zone):
    """{attr name: value} of a parsed <zone>."""
    return {a.get("name"): a.get("value") for a in zone.findall("attr")}


def xml_rctls(zone):
    """{rctl name: limit} of a parsed <zone>."""
    return {r.get("name"): int(r.find("rctl-value").get("limit"))
            for r in zone.findall("rctl")}


def config_json(root, zone, name):
    """Parsed zonepath/config/<name> of an index entry (None if missing)."""
    path = Path(root) / zone["zonepath"].lstrip("/") / "config" / name
    if not path.exists():
        return None
    return json.loads(path.read_text("utf-8"))


# --- generation -----------------------------------------------------------

def test_same_seed_gives_identical_trees(mkhost):
    a = tree_snapshot(mkhost(120, seed=7))
    b = tree_snapshot(mkhost(120, seed=7))
    assert a.keys() == b.keys()
    for rel in a:
        assert a[rel] == b[rel], rel


def test_different_seed_gives_different_trees(mkhost):
    a = tree_snapshot(mkhost(50, seed=1))
    b = tree_snapshot(mkhost(50, seed=2))
    assert a["etc/zones/index"][1] != b["etc/zones/index"][1]
    assert a.keys() != b.keys()


def test_index_format(mkhost):
    root = mkhost(150, seed=3)
    lines = (root / "etc" / "zones" / "index").read_text().splitlines()
    assert lines[0].startswith("#")
    comments = [ln for ln in lines if ln.startswith("#")]
    rest = [ln for ln in lines if not ln.startswith("#")]
    assert lines[:len(comments)] == comments, "comments form the header"
    assert rest[0] == "global:installed:/:"
    zones = rest[1:]
    assert len(zones) == 150
    names = set()
    for line in zones:
        zonename, state, zonepath, uid = line.split(":")
        assert UUID_V4.match(zonename), line
        assert uid == zonename
        assert zonepath == "/zones/" + uid
        assert state in STATES
        names.add(zonename)
    assert len(names) == 150
    states = [ln.split(":")[1] for ln in zones]
    common = states.count("running") + states.count("installed")
    assert states.count("running") > states.count("installed") > 0
    assert common >= 0.85 * len(states)
    assert common < len(states), "a few zones in other states"


def test_zone_files_brands_and_counts(mkhost):
    root = mkhost(300, seed=4)
    zones = helpers.read_index(root)
    assert len(zones) == 300
    xml_files = list((root / "etc" / "zones").glob("*.xml"))
    assert len(xml_files) == 300
    brands = {}
    no_routes = 0
    for z in zones:
        zone = zone_xml(root, z["zonename"])
        assert zone.tag == "zone"
        assert zone.get("name") == z["zonename"]
        assert zone.get("zonepath") == z["zonepath"]
        brands[zone.get("brand")] = brands.get(zone.get("brand"), 0) + 1
        md = config_json(root, z, "metadata.json")
        assert set(md) == {"customer_metadata", "internal_metadata"}
        assert isinstance(config_json(root, z, "tags.json"), dict)
        routes = config_json(root, z, "routes.json")
        no_routes += routes is None
        lastexited = root / z["zonepath"].lstrip("/") / "lastexited"
        if lastexited.exists():
            assert z["state"] != "running"
            when, status = lastexited.read_text().split()
            assert float(when) > 1e9 and int(status) >= -1
    assert set(brands) == BRANDS
    assert brands["joyent"] > brands["bhyve"]
    assert 0 < no_routes < 300
    sysinfo = json.loads((root / "tmp" / ".sysinfo.json").read_text())
    for key in ("UUID", "Live Image", "Datacenter Name", "Headnode ID"):
        assert key in sysinfo
    assert UUID_V4.match(sysinfo["UUID"])


def test_every_xml_parses_with_brand_attributes(mkhost):
    root = mkhost(400, seed=5)
    escaped = 0
    for z in helpers.read_index(root):
        zone = zone_xml(root, z["zonename"])
        brand = zone.get("brand")
        attrs = xml_attrs(zone)
        rctls = xml_rctls(zone)
        for key in ("vm-version", "create-timestamp", "owner-uuid",
                    "billing-id", "ram", "dataset-uuid"):
            assert key in attrs, (brand, key)
        if "alias" in attrs:
            base64.b64decode(attrs["alias"], validate=True).decode("utf-8")
        for key in ("zone.cpu-shares", "zone.max-lwps", "zone.zfs-io-priority",
                    "zone.max-physical-memory", "zone.max-locked-memory",
                    "zone.max-swap"):
            assert key in rctls, (brand, key)
        ram = int(attrs["ram"])
        if brand in ("kvm", "bhyve"):
            assert rctls["zone.max-physical-memory"] > ram * MIB
            disks = [d for d in zone.findall("device")
                     if d.find("net-attr[@name='model']").get("value")
                     != "passthru"]
            assert disks, "hvm zones have disks"
            boot = [d for d in disks if {
                n.get("name"): n.get("value") for n in d.findall("net-attr")
            }.get("boot") == "true"]
            assert len(boot) == 1
            assert "vcpus" in attrs
        else:
            assert rctls["zone.max-physical-memory"] == ram * MIB
            assert not zone.findall("device")
        if brand == "kvm":
            assert attrs["vm-autoboot"] in ("true", "false")
            assert zone.get("autoboot") == "false"
        if brand == "lx":
            assert "kernel-version" in attrs
        if brand == "bhyve":
            assert int(attrs["flexible-disk-size"]) > 0
            assert attrs["bootrom"] in ("uefi", "bios")
        nets = zone.findall("network")
        assert nets
        primaries = [n for n in nets
                     if n.find("net-attr[@name='primary']") is not None]
        assert len(primaries) == 1
        for n in nets:
            assert re.match(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$",
                            n.get("mac-addr"))
            assert n.get("global-nic")
            models = n.findall("net-attr[@name='model']")
            assert bool(models) == (brand in ("kvm", "bhyve"))
        escaped += "&" in attrs.get("package-name", "")
    assert escaped > 0, "some values need XML escaping"


def test_no_temporary_files_left(mkhost):
    root = mkhost(100, seed=6)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            assert ".tmp." not in name, os.path.join(dirpath, name)


def test_mtimes_are_deterministic_and_in_the_past(mkhost):
    root = mkhost(30, seed=8)
    day_ago = time.time() - 86400
    for rel, (kind, _, mtime_ns) in tree_snapshot(root).items():
        assert mtime_ns / 1e9 < day_ago, rel


def test_refuses_to_overwrite_a_tree(mkhost):
    root = mkhost(5)
    proc = helpers.run_script("mkhost", root, "--vms", 5, check=False)
    assert proc.returncode == 1
    assert "already exists" in proc.stderr


# --- command line ----------------------------------------------------------

def test_help_and_usage_errors(tmp_path):
    proc = helpers.run_script("mkhost", "--help")
    assert "--change" in proc.stdout and "--set-ram" in proc.stdout
    proc = helpers.run_script("mkhost", check=False)
    assert proc.returncode == 2 and proc.stderr
    proc = helpers.run_script("mkhost", tmp_path, "--change", "--kind",
                              "bogus", check=False)
    assert proc.returncode == 2 and proc.stderr
    proc = helpers.run_script("mkhost", tmp_path / "nothing", "--change",
                              check=False)
    assert proc.returncode == 1
    assert "etc/zones/index" in proc.stderr
    assert proc.stdout == ""


# --- change mode ------------------------------------------------------------

def test_set_ram_updates_xml_only(mkhost):
    root = mkhost(20, seed=9)
    z = helpers.read_index(root)[3]
    index_before = (root / "etc/zones/index").read_bytes()
    [change] = helpers.mkhost_change(root, "--set-ram", z["zonename"], 3072)
    assert change == {"kind": "ram", "zonename": z["zonename"],
                      "detail": change["detail"]}
    assert change["detail"]["ram"] == 3072
    zone = zone_xml(root, z["zonename"])
    assert xml_attrs(zone)["ram"] == "3072"
    assert xml_rctls(zone)["zone.max-physical-memory"] == 3072 * MIB
    assert (root / "etc/zones/index").read_bytes() == index_before


def test_set_ram_unknown_zone_fails(mkhost):
    root = mkhost(3)
    proc = helpers.run_script("mkhost", root, "--set-ram", "nosuchzone", 1,
                              check=False)
    assert proc.returncode == 1 and "nosuchzone" in proc.stderr


def test_set_metadata(mkhost):
    root = mkhost(10, seed=10)
    z = helpers.read_index(root)[0]
    before = config_json(root, z, "metadata.json")
    [change] = helpers.mkhost_change(root, "--set-metadata", z["zonename"],
                                     "note", 'a "quoted" & <odd> värde')
    assert change["kind"] == "metadata"
    after = config_json(root, z, "metadata.json")
    assert after["customer_metadata"]["note"] == 'a "quoted" & <odd> värde'
    assert after["internal_metadata"] == before["internal_metadata"]


def test_change_ram(mkhost):
    root = mkhost(10, seed=11)
    [change] = helpers.mkhost_change(root, "--change", "--kind", "ram",
                                     "--seed", 1)
    zone = zone_xml(root, change["zonename"])
    mib = change["detail"]["ram"]
    assert xml_attrs(zone)["ram"] == str(mib)
    assert xml_rctls(zone)["zone.max-physical-memory"] == mib * MIB
    assert change["detail"]["old_ram"] != mib


def test_change_tags(mkhost):
    root = mkhost(10, seed=12)
    changes = helpers.mkhost_change(root, "--change", "--kind", "tags",
                                    "--count", 6, "--seed", 2)
    assert len(changes) == 6
    last = changes[-1]
    z = [z for z in helpers.read_index(root)
         if z["zonename"] == last["zonename"]][0]
    tags = config_json(root, z, "tags.json")
    if last["detail"]["op"] == "add":
        assert tags[last["detail"]["key"]] == last["detail"]["value"]
    else:
        assert last["detail"]["key"] not in tags


def test_change_state(mkhost):
    root = mkhost(10, seed=13)
    before = {z["zonename"]: z["state"] for z in helpers.read_index(root)}
    [change] = helpers.mkhost_change(root, "--change", "--kind", "state",
                                     "--seed", 3)
    after = {z["zonename"]: z["state"] for z in helpers.read_index(root)}
    name = change["zonename"]
    assert before[name] == change["detail"]["from"]
    assert after[name] == change["detail"]["to"] != before[name]
    del before[name], after[name]
    assert before == after


def test_change_create(mkhost):
    root = mkhost(10, seed=14)
    [change] = helpers.mkhost_change(root, "--change", "--kind", "create")
    zones = helpers.read_index(root)
    assert len(zones) == 11
    new = zones[-1]
    assert new["zonename"] == change["zonename"]
    zone = zone_xml(root, new["zonename"])
    assert zone.get("brand") == change["detail"]["brand"]
    assert config_json(root, new, "metadata.json") is not None
    assert config_json(root, new, "tags.json") is not None


def test_change_delete(mkhost):
    root = mkhost(10, seed=15)
    [change] = helpers.mkhost_change(root, "--change", "--kind", "delete",
                                     "--seed", 4)
    zones = helpers.read_index(root)
    assert len(zones) == 9
    assert change["zonename"] not in [z["zonename"] for z in zones]
    assert not (root / "etc/zones" / (change["zonename"] + ".xml")).exists()
    assert not (root / "zones" / change["detail"]["uuid"]).exists()


def test_change_any_is_deterministic_for_a_seed(mkhost):
    a = helpers.mkhost_change(mkhost(40, seed=16), "--change", "--count", 15,
                              "--seed", 5)
    b = helpers.mkhost_change(mkhost(40, seed=16), "--change", "--count", 15,
                              "--seed", 5)
    strip = [(c["kind"], c["zonename"]) for c in a]
    assert strip == [(c["kind"], c["zonename"]) for c in b]
    assert len({c["kind"] for c in a}) >= 3


# --- activity ---------------------------------------------------------------

def test_activity_count(mkhost):
    root = mkhost(20, seed=17)
    proc = helpers.run_script("activity", root, "--rate", 200, "--count", 12,
                              "--seed", 1)
    changes = [json.loads(ln) for ln in proc.stdout.splitlines()]
    assert len(changes) == 12
    assert all(c["kind"] in ("ram", "tags", "metadata", "state", "create",
                             "delete") for c in changes)


def read_line_before(proc, deadline):
    """One stdout line of a running process, or fail at the deadline."""
    left = deadline - time.monotonic()
    ready, _, _ = select.select([proc.stdout], [], [], max(left, 0))
    assert ready, "no output before the deadline"
    return proc.stdout.readline()


def test_activity_stops_cleanly_on_sigterm(mkhost):
    root = mkhost(20, seed=18)
    cmd = [sys.executable, str(helpers.script("activity")), str(root),
           "--rate", "50"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        line = read_line_before(proc, time.monotonic() + 10)
        assert json.loads(line)["kind"]
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert b"stopped by signal" in err
    for ln in out.splitlines():
        json.loads(ln)  # never a half-written line
    leftovers = [p for p in root.rglob(".*") if ".tmp." in p.name]
    assert leftovers == []


@pytest.mark.parametrize("kind", ["ram", "tags", "metadata", "state",
                                  "create", "delete"])
def test_activity_single_kind(mkhost, kind):
    root = mkhost(15, seed=19)
    proc = helpers.run_script("activity", root, "--rate", 500, "--count", 3,
                              "--kind", kind, "--seed", 2)
    kinds = {json.loads(ln)["kind"] for ln in proc.stdout.splitlines()}
    assert kinds == {kind}
