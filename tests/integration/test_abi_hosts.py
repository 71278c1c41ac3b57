"""Hosts of other ABIs: real i386 and s390x Pythons against daemons of their ABI, raw ioctls.

Needs root and the userlands (``python -m tests.pfemu userland ilp32-le lp64-be``);
run by tests/integration/run-abi.sh, which builds them first:
    .venv/bin/python -m pytest tests/integration/test_abi_hosts.py
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tests.pfemu import userland  # noqa: E402  pylint: disable=wrong-import-position,import-error
from tests.pfemu.fleet import Fleet  # noqa: E402  pylint: disable=wrong-import-position,import-error

# Request numbers and pfioc_states layouts per ABI, from the reference (section 4), by hand.
CLIENTS = {
    "ilp32-le": {"getstates": 0xC0084419, "other_getstates": 0xC0104419, "pfioc_states": "<iI"},
    "lp64-be": {"getstates": 0xC0104419, "other_getstates": 0xC0084419, "pfioc_states": ">i4xQ"},
}
DIOCGETSTATUS = 0xC1A84415
STATES = 200

CLIENT = """
import ctypes, errno, fcntl, json, os, struct, sys
getstates, other_getstates, layout = %(getstates)d, %(other_getstates)d, %(pfioc_states)r
order = layout[0]
fd = os.open("/dev/pf", os.O_RDONLY)
status = bytearray(424)
fcntl.ioctl(fd, %(getstatus)d, status)
running, states, hostid = struct.unpack_from(order + "II12xI", status, 368)
size_query = bytearray(struct.pack(layout, 0, 0))
fcntl.ioctl(fd, getstates, size_query)
length = struct.unpack(layout, size_query)[0]
buffer = ctypes.create_string_buffer(length)
arg = bytearray(struct.pack(layout, length, ctypes.addressof(buffer)))
fcntl.ioctl(fd, getstates, arg)
got = struct.unpack(layout, arg)[0]
creatorids = sorted({struct.unpack_from(order + "I", buffer.raw, offset + 228)[0] for offset in range(0, got, 240)})
try:
    fcntl.ioctl(fd, other_getstates, bytearray((other_getstates >> 16) & 0x1FFF))
    other = 0
except OSError as error:
    other = error.errno
print(json.dumps({"pointer": ctypes.sizeof(ctypes.c_void_p), "byteorder": sys.byteorder, "states": states,
                  "hostid": hostid, "length": length, "got": got, "creatorids": creatorids, "other": other}))
"""


@pytest.fixture(scope="module", name="fleet")
def abi_fleet(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("hosts of other ABIs need root")
    try:
        for abi in CLIENTS:
            userland.ensure(abi)
    except userland.UserlandUnavailable as error:
        pytest.skip("no userland: %s" % error)
    fleet = Fleet(str(tmp_path_factory.mktemp("abi-fleet")))
    fleet.up(3, states=STATES, seed=5, abi_hosts=list(CLIENTS))
    yield fleet
    fleet.down()


def run_client(fleet, host, abi):
    interpreter = fleet.host_vars(fleet.host(host))["ansible_python_interpreter"]
    script = textwrap.dedent(CLIENT % dict(CLIENTS[abi], getstatus=DIOCGETSTATUS))
    result = subprocess.run([interpreter, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("host, abi", [("fw2", "ilp32-le"), ("fw3", "lp64-be")])
def test_the_host_python_and_its_kernel_share_the_abi(fleet, host, abi):
    answer = run_client(fleet, host, abi)
    kernel = fleet.control(host, {"command": "status"})
    assert kernel["abi"] == abi
    assert (answer["pointer"], answer["byteorder"]) == {"ilp32-le": (4, "little"), "lp64-be": (8, "big")}[abi]
    # Status fields decoded in the host's byte order, the table copied out to its own addresses.
    # (the first purge pass drops the few generated states that were born expired)
    assert answer["states"] == kernel["states"] > 0.9 * STATES
    assert answer["hostid"] == kernel["hostid"]
    assert answer["length"] == answer["got"] == kernel["states"] * 240
    assert kernel["hostid"] in answer["creatorids"]
    # The request number of the other pointer width is not DIOCGETSTATES for this kernel.
    assert answer["other"] != 0


def test_the_native_host_keeps_the_machine_python(fleet):
    host = fleet.host("fw1")
    assert host["abi"] == "lp64-le" and host["userland"] is None
    assert fleet.host_vars(host)["ansible_python_interpreter"].endswith("/venv/bin/python")


def test_fleet_up_starts_every_host_afresh(tmp_path):
    """Nothing of a previous fleet in the same directory survives: no rc.d script, dump or lease.

    (A boot-time restore script left by the reboot role restored an earlier run's dump at the
    next run's first emulated reboot.)
    """
    fleet = Fleet(str(tmp_path))
    fleet.up(1)
    host_dir = fleet.host_dir("fw1")
    leftovers = [os.path.join(host_dir, "etc", "rc.d", "pfstate"),
                 os.path.join(host_dir, "var", "db", "pfstate", "boot.pfstate"),
                 os.path.join(host_dir, "var", "run", "netbsd_pf_lock.lease")]
    for path in leftovers:
        with open(path, "w", encoding="utf-8") as leftover:
            leftover.write("from the previous fleet\n")
    try:
        fleet.up(1)
        assert [path for path in leftovers if os.path.exists(path)] == []
    finally:
        fleet.down()
