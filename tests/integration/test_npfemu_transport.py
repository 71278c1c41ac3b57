"""The emulated /dev/npf across processes: npfemu in the host's daemon, the shim in the host's Python.

A local fleet (no root) of hosts running NPF, both firewalls, and pf only; small client scripts
run by the hosts' venv Pythons (3.8 first) use the collection's own NpfDevice, snapshot and
restore planner, the way a module does on a target.
    .venv/bin/python -m pytest tests/integration/test_npfemu_transport.py
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tests.pfemu import userland  # noqa: E402  pylint: disable=wrong-import-position,import-error
from tests.pfemu.fleet import Fleet  # noqa: E402  pylint: disable=wrong-import-position,import-error

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONNECTIONS = 60
# Each script ends by checking that every reply the daemon mapped into it was unmapped by the client.
CLIENT_PRELUDE = """
import json, os, sys
import pfemu_shim
from ansible_collections.netbsd.pf.plugins.module_utils.npfdev import NpfDevice, NpfError
from ansible_collections.netbsd.pf.plugins.module_utils.npf_snapshot import NpfSnapshot
from ansible_collections.netbsd.pf.plugins.module_utils.npf_restore import execute_plan, plan_restore
def still_mapped():
    with open("/proc/self/maps") as maps:
        starts = {int(line.split("-")[0], 16) for line in maps}
    return [address for address, _length in pfemu_shim.mapped_replies if address in starts]
answer = {}
"""
CLIENT_EPILOGUE = """
answer["replies"] = len(pfemu_shim.mapped_replies)
answer["still_mapped"] = still_mapped()
print(json.dumps(answer))
"""


@pytest.fixture(scope="module", name="collections_root")
def collection_on_a_path(tmp_path_factory):
    """A folder with ansible_collections/netbsd/pf leading to this checkout, for the hosts' PYTHONPATH."""
    root = tmp_path_factory.mktemp("collections")
    os.makedirs(root / "ansible_collections" / "netbsd")
    os.symlink(REPO_ROOT, root / "ansible_collections" / "netbsd" / "pf")
    return str(root)


@pytest.fixture(scope="module", name="fleet")
def mixed_fleet(tmp_path_factory):
    fleet = Fleet(str(tmp_path_factory.mktemp("fleet")))
    fleet.up(3, firewall="npf,both,pf", npf_connections=CONNECTIONS, states=50, seed=3)
    yield fleet
    fleet.down()


def run_client(fleet, host, collections_root, body):
    python = fleet.host_vars(fleet.host(host))["ansible_python_interpreter"]
    script = CLIENT_PRELUDE + textwrap.dedent(body) + CLIENT_EPILOGUE
    result = subprocess.run([python, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, PYTHONPATH=collections_root), universal_newlines=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer.pop("still_mapped") == [], "the client left a reply mapped"
    return answer


def npf_status(fleet, host):
    return fleet.control(host, {"command": "status"})["npf"]


def reboot(fleet, host):
    before = fleet.control(host, {"command": "status"})["boot_time"]
    fleet.control(host, {"command": "reboot", "delay": 0})
    for _attempt in range(300):
        status = fleet.control(host, {"command": "status"})
        if not status["rebooting"] and status["boot_time"] != before:
            return status
        time.sleep(0.05)
    raise AssertionError("%s did not come back" % host)


def test_inventory_and_status_say_what_each_host_runs(fleet):
    firewalls = {host["name"]: fleet.host_vars(host)["pfemu_firewall"] for host in fleet.load()["hosts"]}
    assert firewalls == {"fw1": "npf", "fw2": "both", "fw3": "pf"}
    report = {host["name"]: host for host in fleet.status()["hosts"]}
    for name in ("fw1", "fw2"):
        assert report[name]["npf"]["connections"] == CONNECTIONS
        assert report[name]["npf"]["active"] and report[name]["npf"]["boot_config"] == "pass"
    assert "npf" not in report["fw3"]
    assert report["fw1"]["states"] == 0 and report["fw2"]["states"] == report["fw3"]["states"] == 50


def test_save_reboot_restore_through_the_shim(fleet, collections_root, tmp_path):
    for host in ("fw1", "fw2"):
        snapshot = tmp_path / ("%s.json" % host)
        saved = run_client(fleet, host, collections_root, """
            with NpfDevice() as device:
                answer["version"] = device.probe()
                reply = device.save()
            snapshot = NpfSnapshot(reply, device.abi.byte_order, "%s")
            answer["saved"] = len(snapshot.connections)
            answer["unknown_ifname"] = sum(1 for conn in snapshot.connections if conn.keys_need_repair)
            from ansible_collections.netbsd.pf.plugins.module_utils.npf_nvlist import encode
            with open("%s", "wb") as snapshot_file:
                snapshot_file.write(encode(reply, device.abi.byte_order))
        """ % (host, snapshot.with_suffix(".nv")))
        assert saved == {"version": 22, "saved": CONNECTIONS, "unknown_ifname": CONNECTIONS, "replies": 1}
        status = reboot(fleet, host)
        # The reboot emptied NPF; rc.d/npf loaded the pass configuration and started it.
        assert status["npf"]["connections"] == 0 and status["npf"]["active"] and status["npf"]["rules"] == 2
        mapped_before = npf_status(fleet, host)["replies_mapped"]
        restored = run_client(fleet, host, collections_root, """
            with open("%s", "rb") as snapshot_file:
                snapshot = NpfSnapshot.from_packed(snapshot_file.read(), "%s")
            with NpfDevice() as device:
                running = NpfSnapshot(device.save(), device.abi.byte_order, "running")
                plan = plan_restore(snapshot, running)
                report = execute_plan(device, plan)
                answer["accounted"] = plan.accounted()
                answer["report"] = {key: report[key] for key in ("input", "loaded", "repaired", "verified")}
                answer["verify_failed"] = report["verify_failed"]
                answer["after"] = len(NpfSnapshot(device.save(), device.abi.byte_order, "after").connections)
        """ % (snapshot.with_suffix(".nv"), host))
        assert restored["accounted"] and restored["verify_failed"] == []
        assert restored["report"]["input"] == restored["report"]["loaded"] == CONNECTIONS
        assert restored["report"]["repaired"] == CONNECTIONS and restored["report"]["verified"] > 0
        assert restored["after"] == CONNECTIONS
        # save, save (running), load, lookups, save: each mapped reply was unmapped once.
        assert restored["replies"] == 3 + restored["report"]["verified"]
        after = npf_status(fleet, host)
        assert after["connections"] == CONNECTIONS
        assert after["replies_mapped"] - mapped_before == restored["replies"]


def test_errors_map_nothing_and_leave_the_argument_alone(fleet, collections_root):
    answer = run_client(fleet, "fw1", collections_root, """
        import fcntl, struct, ctypes
        LOAD = 0xC0184E66
        fd = os.open("/dev/npf", os.O_RDONLY)
        garbage = ctypes.create_string_buffer(b"not an nvlist", 13)
        arg = bytearray(struct.pack("=QQi4x", ctypes.addressof(garbage), 13, 0))
        before = bytes(arg)
        try:
            fcntl.ioctl(fd, LOAD, arg)
        except OSError as error:
            answer["garbage"] = [error.errno, bytes(arg) == before]
        try:
            fcntl.ioctl(fd, 0xC0184E6A, bytearray(24))
        except OSError as error:
            answer["unused_request"] = error.errno
        answer["mapped_by_errors"] = len(pfemu_shim.mapped_replies)
        try:
            os.open("/dev/pf", os.O_RDONLY)
        except OSError as error:
            answer["no_pf"] = error.errno
    """)
    assert answer == {"garbage": [22, True], "unused_request": 22, "mapped_by_errors": 0, "no_pf": 6,
                      "replies": 0}


def test_a_pf_host_has_no_npf_and_securelevel_2_refuses_npf(fleet, collections_root):
    answer = run_client(fleet, "fw3", collections_root, """
        try:
            NpfDevice()
        except NpfError as error:
            answer["open"] = [error.errno, str(error)]
    """)
    assert answer["open"][0] == 6 and "NPF is not in the kernel" in answer["open"][1]
    fleet.control("fw2", {"command": "securelevel", "level": 2})
    try:
        answer = run_client(fleet, "fw2", collections_root, """
            try:
                NpfDevice().save()
            except NpfError as error:
                answer["save"] = [error.errno, str(error)]
        """)
    finally:
        fleet.control("fw2", {"command": "securelevel", "level": 0})
    assert answer["save"][0] == 1 and "securelevel" in answer["save"][1]


def test_npf_fill_and_boot_configuration(fleet):
    before = npf_status(fleet, "fw1")["connections"]
    assert fleet.control("fw1", {"command": "npf-fill", "count": 25, "seed": 9})["npf"]["connections"] == before + 25
    with pytest.raises(OSError, match="refuses this configuration: const table without data"):
        fleet.control("fw1", {"command": "npf-config", "config": {"tables": [{"name": "t", "type": 3, "id": 0}]}})
    assert npf_status(fleet, "fw1")["boot_config"] == "pass"
    fleet.control("fw1", {"command": "npf-config", "preset": "none"})
    try:
        status = reboot(fleet, "fw1")["npf"]
        assert (status["active"], status["tracking"], status["rules"], status["connections"]) == (False, False, 0, 0)
        with pytest.raises(OSError, match="no configuration"):
            fleet.control("fw1", {"command": "npf-fill", "count": 1})
    finally:
        fleet.control("fw1", {"command": "npf-config", "preset": "pass"})
    status = reboot(fleet, "fw1")["npf"]
    assert status["active"] and status["rules"] == 2
    with pytest.raises(OSError, match="does not run NPF"):
        fleet.control("fw3", {"command": "npf-fill", "count": 1})


def test_an_ilp32_host_saves_and_restores_through_its_own_request_numbers(tmp_path):
    """A real i386 Python (4-byte pointers: 12-byte nvlist_ref_t, other request numbers) on an NPF host."""
    if os.geteuid() != 0:
        pytest.skip("hosts of other ABIs need root (chroot)")
    try:
        userland.ensure("ilp32-le", None, log=print)
    except userland.UserlandUnavailable as error:
        pytest.skip("no ilp32-le userland: %s" % error)
    fleet = Fleet(str(tmp_path / "fleet"))
    fleet.up(1, firewall="npf", abi_hosts=["ilp32-le"], npf_connections=CONNECTIONS, seed=4)
    try:
        # The host runs chrooted with only the fleet directory mounted: the collection goes there.
        collections_root = os.path.join(fleet.dir, "collections")
        shutil.copytree(os.path.join(REPO_ROOT, "plugins"),
                        os.path.join(collections_root, "ansible_collections", "netbsd", "pf", "plugins"))
        packed = os.path.join(fleet.dir, "snapshot.nv")
        saved = run_client(fleet, "fw1", collections_root, """
            import ctypes
            from ansible_collections.netbsd.pf.plugins.module_utils.npf_nvlist import encode
            with NpfDevice() as device:
                reply = device.save()
                answer["ref_size"] = (device.ioctls["IOC_NPF_SAVE"] >> 16) & 0x1FFF
            answer["pointer"] = ctypes.sizeof(ctypes.c_void_p)
            answer["saved"] = len(NpfSnapshot(reply, device.abi.byte_order, "fw1").connections)
            with open(%r, "wb") as snapshot_file:
                snapshot_file.write(encode(reply, device.abi.byte_order))
        """ % packed)
        assert saved == {"ref_size": 12, "pointer": 4, "saved": CONNECTIONS, "replies": 1}
        assert reboot(fleet, "fw1")["npf"]["connections"] == 0
        restored = run_client(fleet, "fw1", collections_root, """
            with open(%r, "rb") as snapshot_file:
                snapshot = NpfSnapshot.from_packed(snapshot_file.read(), "fw1")
            with NpfDevice() as device:
                plan = plan_restore(snapshot, NpfSnapshot(device.save(), device.abi.byte_order, "running"))
                report = execute_plan(device, plan)
            answer.update(accounted=plan.accounted(), loaded=report["loaded"], failed=report["verify_failed"])
        """ % packed)
        assert restored["accounted"] and restored["loaded"] == CONNECTIONS and restored["failed"] == []
        assert npf_status(fleet, "fw1")["connections"] == CONNECTIONS
    finally:
        fleet.down()
