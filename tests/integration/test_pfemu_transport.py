"""The cross-process emulator: shim <-> daemon, checked from real host Pythons.

Runs a local fleet (no root) and executes small client scripts with the hosts'
venv Pythons (oldest and newest available), the way modules run on a target.
    .venv/bin/python -m pytest tests/integration/test_pfemu_transport.py
"""

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tests.pfemu.fleet import Fleet, find_pythons  # noqa: E402  pylint: disable=wrong-import-position,import-error

CLIENT_PRELUDE = """
import ctypes, errno, fcntl, json, os, struct, sys
DIOCGETSTATUS, DIOCGETSTATES, DIOCADDSTATES, DIOCGETSTATE = 0xC1A84415, 0xC0104419, 0xC0104438, 0xC0104413
def status(fd):
    arg = bytearray(424)
    fcntl.ioctl(fd, DIOCGETSTATUS, arg)
    return dict(zip(("running", "states", "hostid"), struct.unpack_from("=II12xI", arg, 368)))
def states_arg(length, address):
    return bytearray(struct.pack("=i4xQ", length, address))
"""


@pytest.fixture(scope="module", name="fleet")
def local_fleet(tmp_path_factory):
    fleet = Fleet(str(tmp_path_factory.mktemp("fleet")))
    pythons = find_pythons()
    fleet.up(min(len(pythons), 6), states=300, seed=7)
    yield fleet
    fleet.down()
    assert not os.path.exists(fleet.socket_path("fw1"))


def run_client(fleet, host, body):
    """Run ``body`` with the host's venv Python; it prints one JSON document."""
    python = os.path.join(fleet.host_dir(host), "venv", "bin", "python")
    script = CLIENT_PRELUDE + textwrap.dedent(body)
    result = subprocess.run([python, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def hosts_to_check(fleet):
    names = [host["name"] for host in fleet.load()["hosts"]]
    return sorted({names[0], names[-1]})   # oldest and newest Python


def test_status_and_states_match_the_daemon(fleet):
    for host in hosts_to_check(fleet):
        kernel = fleet.control(host, {"command": "status"})
        seen = run_client(fleet, host, """
            fd = os.open("/dev/pf", os.O_RDONLY)
            size = states_arg(0, 0)
            fcntl.ioctl(fd, DIOCGETSTATES, size)
            length = struct.unpack_from("=i", size)[0]
            buffer = ctypes.create_string_buffer(length)
            arg = states_arg(length, ctypes.addressof(buffer))
            fcntl.ioctl(fd, DIOCGETSTATES, arg)
            first_creator = struct.unpack_from("=I", buffer, 228)[0]
            print(json.dumps(dict(status(fd), returned=struct.unpack_from("=i", arg)[0], python=sys.version[:4])))
        """)
        assert seen["hostid"] == kernel["hostid"]
        assert seen["states"] == kernel["states"] > 250   # a few generated states expire at the first purge
        assert seen["returned"] == 240 * kernel["states"]
        assert bool(seen["running"]) == kernel["running"]


def test_errors_come_back_as_fcntl_raises_them(fleet):
    host = hosts_to_check(fleet)[0]
    seen = run_client(fleet, host, """
        answers = {}
        fd = os.open("/dev/pf", os.O_RDONLY)
        arg = states_arg(240, 8)          # unmapped user address
        try:
            fcntl.ioctl(fd, DIOCGETSTATES, arg)
        except OSError as error:
            answers["bad_pointer"] = [error.errno, arg == states_arg(240, 8)]
        try:
            fcntl.ioctl(fd, DIOCADDSTATES, states_arg(0, 0))
        except OSError as error:
            answers["read_only_add"] = error.errno
        try:
            fcntl.ioctl(os.open("/dev/pf", os.O_RDWR), 0xC0044499, bytearray(4))
        except OSError as error:
            answers["unknown"] = error.errno
        answers["immutable"] = len(fcntl.ioctl(fd, DIOCGETSTATUS, bytes(424)))
        try:
            fcntl.ioctl(fd, DIOCGETSTATE, bytearray(16))
        except RuntimeError as error:
            answers["refused"] = type(error).__name__
        print(json.dumps(answers))
    """)
    assert seen == {"bad_pointer": [14, True], "read_only_add": 13, "unknown": 19, "immutable": 424,
                    "refused": "EmulatorRefusal"}
    refusals = fleet.control(host, {"command": "status"})["refusals"]
    assert len(refusals) == 1 and "DIOCGETSTATE" in refusals[0]


def test_add_states_reads_the_callers_memory_and_fork_reopens(fleet):
    host = hosts_to_check(fleet)[-1]
    seen = run_client(fleet, host, """
        fd = os.open("/dev/pf", os.O_RDWR)
        size = states_arg(0, 0)
        fcntl.ioctl(fd, DIOCGETSTATES, size)
        length = struct.unpack_from("=i", size)[0]
        buffer = ctypes.create_string_buffer(length)
        fcntl.ioctl(fd, DIOCGETSTATES, states_arg(length, ctypes.addressof(buffer)))
        # Adding the table to itself: every state is a duplicate, so ENOMEM at the first one.
        try:
            fcntl.ioctl(fd, DIOCADDSTATES, states_arg(length, ctypes.addressof(buffer)))
            duplicate = 0
        except OSError as error:
            duplicate = error.errno
        child = os.fork()
        if child == 0:
            child_fd = os.open("/dev/pf", os.O_RDONLY)
            os._exit(0 if status(child_fd)["states"] == status(fd)["states"] else 1)
        _, child_status = os.waitpid(child, 0)
        print(json.dumps({"duplicate": duplicate, "child": child_status}))
    """)
    assert seen == {"duplicate": 12, "child": 0}


def test_reboot_resets_the_kernel_and_old_descriptors(fleet, tmp_path):
    host = hosts_to_check(fleet)[0]
    marker = tmp_path / "rc-ran"
    rc_script = os.path.join(fleet.host_dir(host), "etc", "rc.d", "10marker")
    with open(rc_script, "w", encoding="utf-8") as script:
        script.write("#!/bin/sh\nsysctl -n kern.boottime >/dev/null 2>&1 || echo \"$1 before-boottime\" > %s\n" % marker)
    os.chmod(rc_script, 0o755)
    before = fleet.control(host, {"command": "status"})
    # A process holding /dev/pf open does not survive the reboot (it asks for it itself).
    python = os.path.join(fleet.host_dir(host), "venv", "bin", "python")
    holder = subprocess.run([python, "-c", "import os, subprocess, time\n"
                             "fd = os.open('/dev/pf', os.O_RDONLY)\n"
                             "subprocess.check_call([%r, '0'])\n"
                             "time.sleep(30)\n" % os.path.join(fleet.host_dir(host), "bin", "reboot")],
                            timeout=60, check=False)
    assert holder.returncode == -9
    after = _wait_until_up(fleet, host, before["boot_time"])
    os.unlink(rc_script)
    assert after["states"] == 0 and after["running"] and not after["lock"]
    assert after["boot_time"] > before["boot_time"]
    assert marker.read_text() == "start before-boottime\n"
    fleet.control(host, {"command": "fill", "count": 300, "seed": 7})


def test_every_boot_draws_a_new_hostid_unless_the_fleet_fixes_it(fleet, tmp_path):
    # Stock NetBSD: pfattach() sets pf_status.hostid = cprng_fast32() at every boot (pf_ioctl.c).
    hosts = [host["name"] for host in fleet.load()["hosts"]]
    hostids = {host: fleet.control(host, {"command": "status"})["hostid"] for host in hosts}
    assert len(set(hostids.values())) == len(hosts)
    host = hosts[0]
    before = fleet.control(host, {"command": "status"})
    fleet.control(host, {"command": "reboot", "delay": 0})
    after = _wait_until_up(fleet, host, before["boot_time"])
    assert after["hostid"] != before["hostid"]
    assert "pfemu_hostid" not in fleet.host_vars(fleet.host(host))
    fleet.control(host, {"command": "fill", "count": 300, "seed": 7})
    # `--hostid fixed` models `set hostid` in pf.conf: the same hostid after a reboot.
    fixed = Fleet(str(tmp_path / "fixed"))
    fixed.up(1, hostid="fixed")
    try:
        before = fixed.control("fw1", {"command": "status"})
        assert before["hostid"] == fixed.host_vars(fixed.host("fw1"))["pfemu_hostid"]
        fixed.control("fw1", {"command": "reboot", "delay": 0})
        assert _wait_until_up(fixed, "fw1", before["boot_time"])["hostid"] == before["hostid"]
    finally:
        fixed.down()


def _wait_until_up(fleet, host, old_boot_time):
    for _attempt in range(200):
        status = fleet.control(host, {"command": "status"})
        if not status["rebooting"] and status["boot_time"] != old_boot_time:
            return status
        time.sleep(0.05)
    raise AssertionError("%s did not come back" % host)
