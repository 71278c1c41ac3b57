"""The /dev/npf client of plugins/module_utils/npfdev.py against the NPF emulator (tests/npfemu)."""

import struct

import pytest

from ansible_collections.netbsd.pf.plugins.module_utils.abi import Abi
from ansible_collections.netbsd.pf.plugins.module_utils.npfdev import (
    E2BIG, EINVAL, ENOMEM, EPERM, ESRCH, NPF_REQUEST_LIMIT, NpfDevice, NpfError, NpfUnsupported, npf_ioctls,
)
from ansible_collections.netbsd.pf.tests.npfemu import ManualClock, NpfKernel
from ansible_collections.netbsd.pf.tests.npfemu.inprocess import make_syscalls

LP64_LE = Abi(8, True, "little")
ILP32_BE = Abi(4, True, "big")


def connection(sport=1028, order="little", nat=None, ifname="wm0"):
    def word(port):
        return int.from_bytes(port.to_bytes(2, "big"), order)
    prefix = "<" if order == "little" else ">"
    inside, outside = b"\x0a\x00\x00\x05", b"\xc6\x33\x64\x07"
    record = {
        "flags": 6, "proto": 6, "ifname": ifname, "state": struct.pack(prefix + "I", 4) + bytes(32),
        "forw-key": {"proto": 6, "sport": word(sport), "dport": word(443), "saddr": inside, "daddr": outside,
                     "ifname": ifname, "di": 2},
        "back-key": {"proto": 6, "sport": word(443), "dport": word(nat["tport"] if nat else sport),
                     "saddr": outside, "daddr": nat["taddr"] if nat else inside, "ifname": ifname, "di": 1},
        "alen": 4,
    }
    if nat:
        record["nat"] = {"ifname": ifname, "alen": 4, "oaddr": inside, "oport": word(sport), "taddr": nat["taddr"],
                         "tport": word(nat["tport"]), "nat-policy": 1}
    return record


@pytest.fixture
def emulated():
    kernel = NpfKernel(clock=ManualClock(1000.0))
    syscalls = make_syscalls(kernel)
    device = NpfDevice(abi=LP64_LE, syscalls=syscalls)
    yield kernel, syscalls, device
    device.close()


def test_request_numbers_are_the_references():
    lp64, ilp32 = npf_ioctls(LP64_LE), npf_ioctls(Abi(4, False, "little"))
    assert (lp64["IOC_NPF_VERSION"], lp64["IOC_NPF_LOAD"], lp64["IOC_NPF_SAVE"], lp64["IOC_NPF_CONN_LOOKUP"],
            lp64["IOC_NPF_STATS"], lp64["IOC_NPF_SWITCH"]) == (
        0x40044E64, 0xC0184E66, 0x40184E69, 0xC0184E6C, 0x80084E68, 0x80044E65)
    assert (ilp32["IOC_NPF_LOAD"], ilp32["IOC_NPF_SAVE"], ilp32["IOC_NPF_CONN_LOOKUP"], ilp32["IOC_NPF_STATS"]) == (
        0xC00C4E66, 0x400C4E69, 0xC00C4E6C, 0x80044E68)


def test_probe_accepts_the_2020_generation(emulated):
    assert emulated[2].probe() == 22


@pytest.mark.parametrize("generation, generation_name, words", [
    ("N19", "2019", "NetBSD 9.0"), ("P", "proplib", "NetBSD 7 or 8")])
def test_probe_refuses_older_generations_with_a_clear_message(generation, generation_name, words):
    device = NpfDevice(abi=LP64_LE, syscalls=make_syscalls(NpfKernel(generation=generation)))
    with pytest.raises(NpfUnsupported) as caught:
        device.probe()
    assert caught.value.generation == generation_name
    assert words in str(caught.value) and "9.2" in str(caught.value)


def test_save_load_lookup_and_every_reply_unmapped_once(emulated):
    kernel, syscalls, device = emulated
    device.load({"conn-list": [connection(1028), connection(1029)]})
    reply = device.save()
    assert [c["forw-key"]["sport"] for c in reply["conn-list"]] == [
        int.from_bytes((1028).to_bytes(2, "big"), "little"), int.from_bytes((1029).to_bytes(2, "big"), "little")]
    found = device.conn_lookup(connection(1029)["forw-key"])
    assert found["flow"] == 0 and found["ifname"] == "wm0"
    assert syscalls.memory.live_replies == {} and syscalls.memory.unmapped == 3


def test_requests_carry_version_and_operation(emulated):
    kernel, syscalls, device = emulated
    seen = {}
    original = kernel._load

    def spy(request):
        seen.update(request)
        return original(request)
    kernel._load = spy
    device.load({})
    assert seen == {"version": 22, "operation": 0xC0184E66}


def test_a_failed_load_maps_nothing_and_names_the_all_or_nothing_rule(emulated):
    kernel, syscalls, device = emulated
    with pytest.raises(NpfError) as caught:
        device.load({"conn-list": [connection(1028), connection(1028)]})
    assert caught.value.errno == EINVAL and caught.value.request == "IOC_NPF_LOAD"
    assert "one bad record fails the whole load" in str(caught.value) and "(EINVAL)" in str(caught.value)
    assert syscalls.memory.live_replies == {} and syscalls.memory.unmapped == 0


def test_request_over_4_mib_is_refused_before_any_ioctl(emulated):
    kernel, syscalls, device = emulated
    with pytest.raises(NpfError) as caught:
        device.load({"blob": b"x" * NPF_REQUEST_LIMIT})
    assert caught.value.errno == E2BIG and "4194304" in str(caught.value)
    assert syscalls.requests == []


def test_save_enomem_after_a_nat_restore_is_explained(emulated):
    kernel, syscalls, device = emulated
    nat_rule = {"type": 2, "flags": 2, "nat-addr": b"\xc0\x00\x02\x01", "nat-policy": 1}
    translated = connection(1028, nat={"taddr": b"\xc0\x00\x02\x01", "tport": 40000})
    device.load({"nat": [nat_rule], "conn-list": [translated]})
    with pytest.raises(NpfError) as caught:
        device.save()
    assert caught.value.errno == ENOMEM and "restored with a NAT entry" in str(caught.value)
    with pytest.raises(NpfError) as caught:
        device.conn_lookup(connection(1028)["forw-key"])
    assert caught.value.errno == ENOMEM


def test_lookup_of_an_unknown_key(emulated):
    with pytest.raises(NpfError) as caught:
        emulated[2].conn_lookup(connection(999)["forw-key"])
    assert caught.value.errno == ESRCH and "no active connection" in str(caught.value)


def test_securelevel_2_is_named(emulated):
    kernel, syscalls, device = emulated
    kernel.securelevel = 2
    with pytest.raises(NpfError) as caught:
        device.version()
    assert caught.value.errno == EPERM and "securelevel 2" in str(caught.value)
    with pytest.raises(NpfError, match="securelevel 1 or lower"):
        NpfDevice(abi=LP64_LE, syscalls=syscalls)


def test_missing_device_is_named():
    with pytest.raises(NpfError, match="no /dev/npf: NPF is not in the kernel"):
        NpfDevice(path="/dev/npf-absent", abi=LP64_LE, syscalls=make_syscalls(NpfKernel()))


def test_netbsd_errno_names_are_not_the_hosts():
    assert "(EPROGMISMATCH)" in str(NpfError(75, "IOC_NPF_LOAD"))
    assert "(ENOTSUP)" in str(NpfError(86, "IOC_NPF_LOAD"))


def test_stats(emulated):
    kernel, syscalls, device = emulated
    device.load({"conn-list": [connection(1028)]})
    stats = device.stats()
    assert len(stats) == 21 and stats["conn_create"] == 1 and stats["nat_create"] == 0


def test_big_endian_ilp32_kernel():
    kernel = NpfKernel(pointer_size=4, byte_order="big")
    syscalls = make_syscalls(kernel)
    device = NpfDevice(abi=ILP32_BE, syscalls=syscalls)
    assert device.probe() == 22
    device.load({"conn-list": [connection(1028, order="big")]})
    reply = device.save()
    assert reply["conn-list"][0]["forw-key"]["sport"] == 1028  # network order read as big-endian
    assert kernel.match_packet("wm0", 2, 6, b"\x0a\x00\x00\x05", 1028, b"\xc6\x33\x64\x07", 443) is not None
    assert syscalls.memory.live_replies == {}


def test_closed_device(emulated):
    device = emulated[2]
    device.close()
    with pytest.raises(NpfError, match="closed"):
        device.save()


def test_host_syscalls_read_and_unmap_a_real_mapping():
    import ctypes
    import mmap as mmap_module
    from ansible_collections.netbsd.pf.plugins.module_utils.npfdev import HostSyscalls
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
    address = libc.mmap(None, 4096, mmap_module.PROT_READ | mmap_module.PROT_WRITE,
                        mmap_module.MAP_PRIVATE | mmap_module.MAP_ANONYMOUS, -1, 0)
    ctypes.memmove(address, b"reply bytes", 11)
    syscalls = HostSyscalls()
    assert syscalls.read(address, 11) == b"reply bytes"
    syscalls.munmap(address, 11)
    with open("/proc/self/maps") as maps:
        starts = [int(line.split("-")[0], 16) for line in maps]
    assert address not in starts
    with pytest.raises(OSError):
        syscalls.munmap(address + 1, 11)  # not page aligned: EINVAL from the real munmap


def test_no_npf_device_on_this_host():
    with pytest.raises(NpfError) as caught:
        NpfDevice(path="/nonexistent/npf")
    assert caught.value.request == "open" and "NPF is not in the kernel" in str(caught.value)


def test_an_exported_connection_costs_796_packed_bytes(emulated):
    # Reference 3.2/3.9: 796 bytes per v4 connection with 3-letter interface names, which
    # is what caps one LOAD at about 5,270 connections.
    from ansible_collections.netbsd.pf.plugins.module_utils.npf_nvlist import encode
    kernel, syscalls, device = emulated
    device.load({"conn-list": [connection(1028)]})
    exported = device.save()["conn-list"]
    array_pair = 19 + len("conn-list") + 1
    assert len(encode({"conn-list": exported})) - len(encode({})) - array_pair == 796


def test_the_pfstate_bundle_carries_the_npf_layers_and_they_import_from_it(tmp_path):
    import os
    import shutil
    import subprocess
    import sys
    from ansible_collections.netbsd.pf.plugins.module_utils import npfdev
    module_utils = os.path.dirname(os.path.abspath(npfdev.__file__))
    collection = os.path.dirname(os.path.dirname(module_utils))
    bundler = os.path.join(collection, "roles", "reboot", "files", "bundle_module_utils.py")
    bundle = subprocess.check_output([sys.executable, bundler, module_utils]).decode().strip()
    try:
        probe = ("import sys; sys.path.insert(0, sys.argv[1]);"
                 "from ansible_collections.netbsd.pf.plugins.module_utils import npf_nvlist, npf_snapshot, npfdev,"
                 " npf_native, npf_convert, npf_restore;"
                 "print(npf_snapshot.__file__)")
        result = subprocess.run([sys.executable, "-I", "-c", probe, bundle], cwd=str(tmp_path),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
        assert result.returncode == 0, result.stderr.decode()
        assert result.stdout.decode().startswith(bundle)
    finally:
        shutil.rmtree(os.path.dirname(bundle))
