"""`vminfod --root DIR --dump`: every VM object of a generated host.

The expected values are computed here from the generated files with the
rules of spec/vmload.md (§2-§4), independently of mkhost's internals.
"""

import base64
import json
import re
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import helpers

ZONES = 200
MIB = 1024 * 1024
# Build-stage keys in the order vmload appends them (spec/vmload.md §4).
BUILD_ORDER = ["uuid", "zone_state", "zonepath", "hvm", "zoneid", "zonedid",
               "last_modified", "exit_status", "exit_timestamp", "resolvers",
               "firewall_enabled", "server_uuid", "datacenter_name",
               "platform_buildstamp", "headnode_id", "state",
               "boot_timestamp", "init_restarts", "pid", "customer_metadata",
               "internal_metadata", "routes", "tags"]
ROOT_KEYS = {"name": "zonename", "autoboot": "autoboot", "brand": "brand",
             "limitpriv": "limit_priv"}


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """A 200-zone host tree and the parsed output of vminfod --dump on it."""
    root = helpers.run_mkhost(tmp_path_factory.mktemp("dump") / "host",
                              ZONES, seed=42)
    binary = helpers.build_dir() / "vminfod"
    proc = subprocess.run([str(binary), "--root", str(root), "--dump"],
                          stdin=subprocess.DEVNULL, capture_output=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr.decode("utf-8", "replace")[-4000:]
    vms = json.loads(proc.stdout)
    return root, helpers.read_index(root), vms


def iso_ms(ms):
    """Epoch milliseconds -> ISO-8601 UTC with milliseconds."""
    secs, rest = divmod(int(ms), 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + \
        ".%03dZ" % rest


def zone_file(root, z, *parts):
    """A path inside a zone's zonepath under root."""
    return Path(root) / z["zonepath"].lstrip("/") / Path(*parts)


def load_json(path, default):
    """Parsed JSON file, default when missing."""
    try:
        return json.loads(Path(path).read_text("utf-8"))
    except FileNotFoundError:
        return default


def expected_exit(root, z):
    """(exit_status, exit_timestamp) per vmload.md §2.4, or None."""
    path = zone_file(root, z, "lastexited")
    if not path.exists():
        return None
    pieces = path.read_text().strip().split(" ")
    assert len(pieces) == 2
    n = int(pieces[1])
    if n == -1:
        status = 0
    elif n & 0xff == 0:
        status = n >> 8
    else:
        status = -(n & 0xff)
    return status, iso_ms(int(float(pieces[0]) * 1000))


def expected_last_modified(root, z):
    """Newest mtime of the five per-VM files, whole seconds, as ISO."""
    paths = [zone_file(root, z, "config", n) for n in
             ("metadata.json", "routes.json", "tags.json")]
    paths += [zone_file(root, z, "lastexited"),
              Path(root) / "etc" / "zones" / (z["zonename"] + ".xml")]
    mtimes = [p.stat().st_mtime_ns for p in paths if p.exists()]
    return iso_ms(max(mtimes) // 10 ** 9 * 1000)


def net_attrs(el):
    """{name: value} of an element's <net-attr> children."""
    return {n.get("name"): n.get("value") for n in el.findall("net-attr")}


def disk_number(path):
    """Sort key of a disk path (vmload.md §3.4)."""
    m = re.match(r"^.*[-/]disk(\d+)$", path)
    return int(m.group(1)) if m else 0


def nic_number(interface):
    """Sort key of a nic interface name (vmload.md §3.4)."""
    m = re.match(r"^net(\d+)$", interface)
    return int(m.group(1)) if m else 0


def by_name(vms):
    """{zonename: vm}."""
    return {vm["zonename"]: vm for vm in vms}


def test_dump_has_every_zone_in_index_order(host):
    root, zones, vms = host
    assert isinstance(vms, list)
    assert len(vms) == len(zones) == ZONES
    assert [vm["zonename"] for vm in vms] == [z["zonename"] for z in zones]


def test_identity_brand_and_state(host):
    root, zones, vms = host
    vmap = by_name(vms)
    brands = set()
    for z in zones:
        vm = vmap[z["zonename"]]
        zone = ET.parse(root / "etc/zones" / (z["zonename"] + ".xml")) \
            .getroot()
        attrs = {a.get("name"): a.get("value") for a in zone.findall("attr")}
        for marker in ("transition", "provisioning", "failed"):
            assert marker not in attrs  # they would change `state`
        brand = zone.get("brand")
        brands.add(brand)
        assert vm["uuid"] == z["uuid"]
        assert vm["zonepath"] == z["zonepath"]
        assert vm["brand"] == brand
        assert vm["zone_state"] == z["state"]
        want = "stopped" if z["state"] == "installed" else z["state"]
        assert vm["state"] == want, z
        assert vm["hvm"] is (brand in ("kvm", "bhyve"))
        assert vm["zonedid"] == int(zone.get("debugid"))
        if z["state"] != "running":
            assert vm["zoneid"] is None
        assert vm["limit_priv"] == zone.get("limitpriv")
    assert brands == {"joyent", "joyent-minimal", "lx", "kvm", "bhyve"}


def test_xml_values(host):
    root, zones, vms = host
    vmap = by_name(vms)
    for z in zones:
        vm = vmap[z["zonename"]]
        zone = ET.parse(root / "etc/zones" / (z["zonename"] + ".xml")) \
            .getroot()
        brand = zone.get("brand")
        attrs = {a.get("name"): a.get("value") for a in zone.findall("attr")}
        rctls = {r.get("name"): int(r.find("rctl-value").get("limit"))
                 for r in zone.findall("rctl")}
        assert vm["ram"] == int(attrs["ram"])
        assert vm["max_physical_memory"] == \
            rctls["zone.max-physical-memory"] / MIB
        assert vm["max_swap"] == rctls["zone.max-swap"] / MIB
        assert vm["cpu_shares"] == rctls["zone.cpu-shares"]
        assert vm["v"] == 1
        assert vm["create_timestamp"] == attrs["create-timestamp"]
        assert vm["owner_uuid"] == attrs["owner-uuid"]
        assert vm["billing_id"] == attrs["billing-id"]
        assert vm["image_uuid"] == attrs["dataset-uuid"]
        if "alias" in attrs:
            assert vm["alias"] == base64.b64decode(attrs["alias"]) \
                .decode("utf-8")
        else:
            assert "alias" not in vm
        if "hostname" in attrs:
            assert vm["hostname"] == attrs["hostname"]
        if "package-name" in attrs:
            assert vm["package_name"] == attrs["package-name"]
        assert vm["resolvers"] == (attrs["resolvers"].split(",")
                                   if "resolvers" in attrs else [])
        assert vm["firewall_enabled"] is (attrs.get("firewall-enabled")
                                          == "true")
        if brand == "kvm":
            assert vm["autoboot"] is (attrs["vm-autoboot"] == "true")
            assert "vm_autoboot" not in vm
        else:
            assert vm["autoboot"] is (zone.get("autoboot") == "true")
        if brand == "lx":
            assert vm["kernel_version"] == attrs["kernel-version"]
            if attrs.get("docker") == "true":
                assert vm["docker"] is True
                assert [f["target"] for f in vm["filesystems"]] == \
                    [f.get("directory") for f in zone.findall("filesystem")]
                assert all(f["options"] == ["ro"] and f["type"] == "lofs"
                           for f in vm["filesystems"])
        if brand == "bhyve":
            assert vm["flexible_disk_size"] == \
                int(attrs["flexible-disk-size"])
            assert vm["bootrom"] == attrs["bootrom"]
        if brand in ("kvm", "bhyve"):
            assert vm["vcpus"] == int(attrs["vcpus"])
        datasets = [d.get("name") for d in zone.findall("dataset")]
        if datasets:
            assert vm["datasets"] == datasets
        else:
            assert "datasets" not in vm


def test_nics_and_disks(host):
    root, zones, vms = host
    vmap = by_name(vms)
    for z in zones:
        vm = vmap[z["zonename"]]
        zone = ET.parse(root / "etc/zones" / (z["zonename"] + ".xml")) \
            .getroot()
        brand = zone.get("brand")
        nets = sorted(zone.findall("network"),
                      key=lambda n: nic_number(n.get("physical")))
        assert [n["mac"] for n in vm["nics"]] == \
            [n.get("mac-addr") for n in nets]
        for nic, net in zip(vm["nics"], nets):
            na = net_attrs(net)
            assert nic["interface"] == net.get("physical")
            assert nic["nic_tag"] == net.get("global-nic")
            assert nic["ip"] == na["ip"]
            assert nic["ips"] == na["ips"].split(",")
            if "gateways" in na:
                assert nic["gateways"] == na["gateways"].split(",")
            if "vlan-id" in net.attrib:
                assert nic["vlan_id"] == int(net.get("vlan-id"))
            if "mtu" in na:
                assert nic["mtu"] == int(na["mtu"])
            assert nic.get("primary") is (True if "primary" in na else None)
        devices = zone.findall("device")
        if not devices:
            assert "device" not in vm
            assert "disks" not in vm or brand in ("kvm", "bhyve")
            continue
        assert "device" in vm and vm["device"] is None
        disks = [d for d in devices if net_attrs(d).get("model") != "passthru"]
        pci = [d for d in devices if net_attrs(d).get("model") == "passthru"]
        disks.sort(key=lambda d: disk_number(d.get("match")))
        assert [d["path"] for d in vm["disks"]] == \
            [d.get("match") for d in disks]
        for disk, dev in zip(vm["disks"], disks):
            na = net_attrs(dev)
            assert disk["boot"] is (na["boot"] == "true")
            assert disk["model"] == na["model"]
            assert disk["media"] == na["media"]
            assert "size" not in disk
            if "image-size" in na:
                assert disk["image_size"] == int(na["image-size"])
                assert disk["image_uuid"] == na["image-uuid"]
        if pci:
            assert [p["path"] for p in vm["pci_devices"]] == \
                [d.get("match") for d in pci]


def test_config_files_lastexited_and_mtimes(host):
    root, zones, vms = host
    vmap = by_name(vms)
    with_exit = 0
    for z in zones:
        vm = vmap[z["zonename"]]
        md = load_json(zone_file(root, z, "config", "metadata.json"), {})
        assert vm["customer_metadata"] == md.get("customer_metadata", {})
        assert vm["internal_metadata"] == md.get("internal_metadata", {})
        assert vm["tags"] == load_json(zone_file(root, z, "config",
                                                 "tags.json"), {})
        assert vm["routes"] == load_json(zone_file(root, z, "config",
                                                   "routes.json"), {})
        assert vm["last_modified"] == expected_last_modified(root, z)
        ex = expected_exit(root, z) if z["state"] != "running" else None
        if ex is None:
            assert "exit_status" not in vm and "exit_timestamp" not in vm
        else:
            with_exit += 1
            assert (vm["exit_status"], vm["exit_timestamp"]) == ex
    assert with_exit > 0


def test_sysinfo_values(host):
    root, zones, vms = host
    sysinfo = json.loads((root / "tmp/.sysinfo.json").read_text())
    for vm in vms:
        assert vm["server_uuid"] == sysinfo["UUID"]
        assert vm["datacenter_name"] == sysinfo["Datacenter Name"]
        assert vm["platform_buildstamp"] == sysinfo["Live Image"]
        assert vm["headnode_id"] == sysinfo["Headnode ID"]


def test_key_order(host):
    root, zones, vms = host
    for vm in vms:
        zone = ET.parse(root / "etc/zones" / (vm["zonename"] + ".xml")) \
            .getroot()
        keys = list(vm)
        # XML root attributes first, in document order, then the first
        # <attr> elements (vm-version, create-timestamp).
        head = [ROOT_KEYS[a] for a in zone.attrib if a in ROOT_KEYS]
        assert keys[:len(head) + 2] == head + ["v", "create_timestamp"], \
            vm["zonename"]
        # Build-stage keys are appended after every XML key, in spec order.
        tail = keys[keys.index("uuid"):]
        assert [k for k in BUILD_ORDER if k in tail] == tail, vm["zonename"]
        for k in ("uuid", "zone_state", "zonepath", "hvm", "zoneid",
                  "zonedid", "state", "customer_metadata",
                  "internal_metadata", "routes", "tags"):
            assert k in tail, (vm["zonename"], k)
        assert tail[-4:] == ["customer_metadata", "internal_metadata",
                             "routes", "tags"]
