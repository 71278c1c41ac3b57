"""Section 4 and 5.1/5.12: request numbers, the common ioctl path, the access matrix."""

import ctypes
import errno
import fcntl
import os

import pytest

from ansible_collections.netbsd.pf.tests.pfemu.kernel import Kernel, KernelBugRefused, RequestNotModelled
from ansible_collections.netbsd.pf.tests.pfemu.structs import Layout

ALL_REQUESTS = ("DIOCSTART", "DIOCSTOP", "DIOCSETLCK", "DIOCCLRSTATES", "DIOCGETSTATE", "DIOCGETSTATUS",
                "DIOCGETSTATES", "DIOCGETTIMEOUT", "DIOCADDSTATE", "DIOCGETLIMIT", "DIOCKILLSTATES", "DIOCADDSTATES")
READ_ONLY_OK = {"DIOCGETSTATES", "DIOCGETSTATE", "DIOCGETSTATUS", "DIOCSETLCK", "DIOCGETTIMEOUT", "DIOCGETLIMIT"}
SECURELEVEL_OK = READ_ONLY_OK | {"DIOCADDSTATES"}


@pytest.mark.parametrize("abi", ["lp64-le", "lp64-be", "ilp32-le", "ilp32-be"])
def test_emulator_request_numbers_match_the_reference_table(pf, abi):
    assert Layout(abi).numbers == pf.tables[abi.split("-")[0]]


def _harmless_arg(pf, name):
    """An argument that makes the request succeed (or fail with its own errno) once past the checks."""
    if name in ("DIOCGETSTATES", "DIOCADDSTATES"):
        return pf.states_arg(0, 0)
    if name in ("DIOCGETSTATE", "DIOCADDSTATE"):
        return bytearray(len(pf.states_arg(0, 0)))
    if name in ("DIOCCLRSTATES", "DIOCKILLSTATES"):
        return pf.kill_arg(ifname=b"nothing0")
    return bytearray(max(1, (pf.req[name] >> 16) & 0x1FFF))


@pytest.mark.parametrize("name", ALL_REQUESTS)
def test_read_only_descriptor_matrix(pf, name):
    fd = pf.open(os.O_RDONLY)
    arg = _harmless_arg(pf, name)
    if name in READ_ONLY_OK:
        if name == "DIOCGETSTATE":
            with pytest.raises(OSError) as caught:  # empty table: EBUSY before the kernel bug
                pf.ioctl(fd, name, arg)
            assert caught.value.errno == errno.EBUSY
        else:
            pf.ioctl(fd, name, arg)
    else:
        before = bytes(arg)
        with pytest.raises(OSError) as caught:
            pf.ioctl(fd, name, arg)
        assert caught.value.errno == errno.EACCES
        assert bytes(arg) == before


@pytest.mark.parametrize("name", ALL_REQUESTS)
def test_securelevel_matrix(pf, name):
    pf.kernel.set_securelevel(2)
    fd = pf.open(os.O_RDWR)
    arg = _harmless_arg(pf, name)
    if name in SECURELEVEL_OK:
        if name == "DIOCGETSTATE":
            with pytest.raises(OSError) as caught:
                pf.ioctl(fd, name, arg)
            assert caught.value.errno == errno.EBUSY
        else:
            pf.ioctl(fd, name, arg)
    else:
        with pytest.raises(OSError) as caught:
            pf.ioctl(fd, name, arg)
        assert caught.value.errno == errno.EPERM


def test_securelevel_one_allows_everything(pf):
    pf.kernel.set_securelevel(1)
    fd = pf.open()
    pf.ioctl(fd, "DIOCSTOP", bytearray(0))
    pf.ioctl(fd, "DIOCSTART", bytearray(0))


def test_write_only_descriptor_can_write_and_read(pf):
    fd = pf.open(os.O_WRONLY)
    pf.add_states(fd, pf.record())
    assert pf.size_query(fd) == 240


@pytest.mark.parametrize("name", ["DIOCGETSTATES", "DIOCADDSTATES", "DIOCKILLSTATES", "DIOCCLRSTATES",
                                  "DIOCGETSTATE", "DIOCADDSTATE"])
def test_other_word_size_request_is_enodev_on_rw_and_eacces_on_ro(pf, name):
    rw, ro = pf.open(os.O_RDWR), pf.open(os.O_RDONLY)
    arg = bytearray(256)
    with pytest.raises(OSError) as caught:
        os_ioctl(rw, pf.other_word_size[name], arg)
    assert caught.value.errno == errno.ENODEV
    with pytest.raises(OSError) as caught:
        os_ioctl(ro, pf.other_word_size[name], arg)
    assert caught.value.errno == errno.EACCES


def os_ioctl(fd, request, arg):
    return fcntl.ioctl(fd, request, arg, True)


@pytest.mark.parametrize("name", ["DIOCSTART", "DIOCSTOP", "DIOCSETLCK", "DIOCGETSTATUS"])
def test_same_number_on_both_word_sizes(pf, name):
    assert pf.req[name] == pf.other_word_size[name]


# Requests NetBSD's pfioctl() implements that the emulator does not model (pfvar.h numbers, same on every ABI
# for these argument sizes; DIOCGETRULES carries a struct pfioc_rule whose size the emulator does not compute).
UNMODELLED = {
    "DIOCSETTIMEOUT": 0xC008441D, "DIOCSETHOSTID": 0xC0044456, "DIOCCLRSTATUS": 0x20004416,
    "DIOCSETLIMIT": 0xC0084428, "DIOCSETDEBUG": 0xC0044418, "DIOCCLRSRCNODES": 0x20004455,
    "DIOCGETRULES": 0xC0204406,
}


@pytest.mark.parametrize("name", sorted(UNMODELLED))
def test_request_netbsd_implements_but_the_emulator_does_not_model_is_refused_loudly(pf, name):
    fd = pf.open()
    arg = bytearray((UNMODELLED[name] >> 16) & 0x1FFF)
    with pytest.raises(RequestNotModelled, match=name):
        os_ioctl(fd, UNMODELLED[name], arg)
    assert arg == bytearray(len(arg))


def test_unmodelled_requests_pass_netbsds_access_checks_first(pf):
    read_only = pf.open(os.O_RDONLY)
    with pytest.raises(OSError) as caught:
        os_ioctl(read_only, UNMODELLED["DIOCSETHOSTID"], bytearray(4))   # not in the read-only list
    assert caught.value.errno == errno.EACCES
    with pytest.raises(RequestNotModelled):
        os_ioctl(read_only, UNMODELLED["DIOCGETRULES"], bytearray(32))   # in the read-only list
    with pytest.raises(RequestNotModelled, match="reads the argument"):
        os_ioctl(read_only, 0xC0204443, bytearray(32))   # DIOCRADDADDRS: PFR_FLAG_DUMMY decides
    pf.kernel.set_securelevel(2)
    writable = pf.open()
    with pytest.raises(OSError) as caught:
        os_ioctl(writable, UNMODELLED["DIOCSETTIMEOUT"], bytearray(8))   # not in the securelevel list
    assert caught.value.errno == errno.EPERM
    with pytest.raises(RequestNotModelled):
        os_ioctl(writable, UNMODELLED["DIOCCLRSTATUS"], bytearray(0))    # in the securelevel list


@pytest.mark.parametrize("request_number", [
    0xC0044499,   # number 0x99: no such request in pfvar.h
    0xC0084456,   # DIOCSETHOSTID's number with an 8-byte argument: matches no case of the switch
    0x40044456,   # DIOCSETHOSTID's number as _IOR: matches no case either
])
def test_request_netbsd_does_not_implement_is_enodev(pf, request_number):
    fd = pf.open()
    with pytest.raises(OSError) as caught:
        os_ioctl(fd, request_number, bytearray((request_number >> 16) & 0x1FFF))
    assert caught.value.errno == errno.ENODEV


def test_encoded_length_above_a_page_is_enotty(pf):
    fd = pf.open()
    with pytest.raises(OSError) as caught:
        os_ioctl(fd, 0xD0014401, bytearray(0x1001))  # _IOWR("D", 1, 4097 bytes): one byte over a page
    assert caught.value.errno == errno.ENOTTY


def test_closed_or_pre_reboot_descriptor_is_ebadf(pf):
    kernel = pf.kernel
    handle = kernel.open(os.O_RDWR)
    kernel.reboot()
    with pytest.raises(OSError) as caught:
        kernel.ioctl(handle, pf.req["DIOCGETSTATUS"], bytearray(424), None)
    assert caught.value.errno == errno.EBADF
    handle = kernel.open(os.O_RDWR)
    kernel.close(handle)
    with pytest.raises(OSError) as caught:
        kernel.ioctl(handle, pf.req["DIOCGETSTATUS"], bytearray(424), None)
    assert caught.value.errno == errno.EBADF


def test_open_minor_and_access_mode():
    kernel = Kernel()
    with pytest.raises(OSError) as caught:
        kernel.open(os.O_RDWR, minor=1)
    assert caught.value.errno == errno.ENXIO
    with pytest.raises(OSError) as caught:
        kernel.open(os.O_ACCMODE)
    assert caught.value.errno == errno.EINVAL


def test_real_fd_numbers_and_passthrough(pf):
    fd = pf.open()
    other = os.open(os.devnull, os.O_RDONLY)
    try:
        assert fd != other and fd >= 0
        assert os.fstat(fd).st_rdev == os.stat(os.devnull).st_rdev
    finally:
        os.close(other)


def test_argument_copied_back_only_on_success(pf):
    fd = pf.open()
    arg = bytearray(8)
    arg[0:4] = (99).to_bytes(4, pf.kernel.layout.byte_order)  # invalid timeout index
    arg[4:8] = b"\xaa\xbb\xcc\xdd"
    with pytest.raises(OSError):
        pf.ioctl(fd, "DIOCGETTIMEOUT", arg)
    assert arg[4:8] == b"\xaa\xbb\xcc\xdd"
    arg[0:4] = (2).to_bytes(4, pf.kernel.layout.byte_order)
    pf.ioctl(fd, "DIOCGETTIMEOUT", arg)
    assert int.from_bytes(arg[4:8], pf.kernel.layout.byte_order) == 86400


def test_argument_given_as_a_user_address(pf):
    fd = pf.open()
    buf = pf.buffer(424)
    assert os_ioctl(fd, pf.req["DIOCGETSTATUS"], ctypes.addressof(buf)) == 0
    assert buf.raw[368:372] == (1).to_bytes(4, pf.kernel.layout.byte_order)  # running
    with pytest.raises(OSError) as caught:
        os_ioctl(fd, pf.req["DIOCGETSTATUS"], 8)
    assert caught.value.errno == errno.EFAULT


def test_immutable_argument_returns_result_bytes(pf):
    fd = pf.open()
    result = os_ioctl(fd, pf.req["DIOCGETLIMIT"], bytes(8))
    assert int.from_bytes(result[4:8], pf.kernel.layout.byte_order) == 10000


def test_singular_requests_are_refused_loudly(pf):
    fd = pf.open()
    pf.add_states(fd, pf.record())
    with pytest.raises(KernelBugRefused, match="stack"):
        pf.ioctl(fd, "DIOCGETSTATE", bytearray(len(pf.states_arg(0, 0))))
    with pytest.raises(KernelBugRefused, match="dereferences the user pointer"):
        pf.ioctl(fd, "DIOCADDSTATE", bytearray(len(pf.states_arg(0, 0))))


def test_getstate_past_the_end_is_ebusy(pf):
    fd = pf.open()
    pf.add_states(fd, pf.record())
    arg = bytearray(len(pf.states_arg(0, 0)))
    arg[0:4] = (1).to_bytes(4, pf.kernel.layout.byte_order)
    with pytest.raises(OSError) as caught:
        pf.ioctl(fd, "DIOCGETSTATE", arg)
    assert caught.value.errno == errno.EBUSY


def test_fault_injection_fails_the_nth_call_only(pf):
    fd = pf.open()
    pf.kernel.inject_fault("DIOCGETSTATUS", 2, errno.EIO)
    pf.status(fd)
    with pytest.raises(OSError) as caught:
        pf.status(fd)
    assert caught.value.errno == errno.EIO
    pf.status(fd)
