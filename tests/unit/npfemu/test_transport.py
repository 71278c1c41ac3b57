"""Requests, kauth, copyin/copyout and the reply mapping (NPF reference 2.3, 2.4, 2.6, 6.1-6.4, 6.9, 6.17)."""

import errno
import struct

import pytest

from ansible_collections.netbsd.pf.tests.npfemu.kernel import KernelPanic, NpfKernel
from ansible_collections.netbsd.pf.tests.npfemu.libnv import unpack

EPROGMISMATCH = 75


def version(npf):
    return struct.unpack("<i", npf.ioctl("VERSION", bytearray(4)))[0]


@pytest.mark.parametrize("generation, expected", [("N20", 22), ("N19", 22), ("P", 19)])
def test_version_per_generation(make_npf, generation, expected):
    assert version(make_npf(NpfKernel(generation=generation))) == expected


@pytest.mark.parametrize("generation, expected", [("N20", errno.EINVAL), ("N19", errno.ENOTTY), ("P", errno.ENOTTY)])
def test_unused_request_106_tells_the_generations_apart(make_npf, generation, expected):
    npf = make_npf(NpfKernel(generation=generation))
    arg = bytearray(b"\x5a" * 24)
    with pytest.raises(OSError) as caught:
        npf.ioctl("UNUSED_106", arg)
    assert caught.value.errno == expected
    assert arg == bytearray(b"\x5a" * 24)  # nothing written back on error


def test_table_replace_without_name_is_einval_on_n20(npf):
    with pytest.raises(OSError) as caught:
        npf.ioctl("TABLE_REPLACE", npf.ref_arg(npf.nvlist([(3, "version", 22)])))
    assert caught.value.errno == errno.EINVAL


def test_securelevel_2_refuses_open_and_every_request(npf_kernel, npf):
    npf_kernel.securelevel = 2
    for call in (lambda: npf_kernel.open(0), lambda: npf.ioctl("VERSION", bytearray(4)),
                 lambda: npf.nvlist_call("SAVE")):
        with pytest.raises(OSError) as caught:
            call()
        assert caught.value.errno == errno.EPERM
    npf_kernel.securelevel = 1
    assert version(npf) == 22


def test_non_root_is_refused(npf_kernel):
    npf_kernel.root = False
    with pytest.raises(OSError) as caught:
        npf_kernel.open(0)
    assert caught.value.errno == errno.EPERM


def test_save_ignores_its_argument_and_maps_a_reply(npf):
    garbage = npf.ref_arg(b"\xff" * 40)  # IOC_OUT only: sys_ioctl zero-fills, the kernel never reads it
    npf.ioctl("SAVE", garbage)
    address, length, flags = struct.unpack(npf.ref, garbage)
    assert address in npf.memory.live_replies and flags == 0
    reply = unpack(npf.memory.copyin(address, length), 0, "little")
    npf.memory.munmap(address, length)
    assert list(reply) == ["version", "params", "params-defaults", "active", "errno"]
    assert reply["version"] == 22 and reply["errno"] == 0 and reply["active"] is False
    assert not npf.memory.live_replies


def test_save_without_the_workaround_fails_with_einval(make_npf):
    npf = make_npf(NpfKernel(save_workaround=False))
    with pytest.raises(OSError) as caught:
        npf.nvlist_call("SAVE")
    assert caught.value.errno == errno.EINVAL
    assert not npf.memory.live_replies


def test_load_copyin_errors(npf):
    cases = [
        (npf.ref_arg(b""), errno.EINVAL),                                  # len 0
        (npf.ref_arg(b"\x6c" + bytes(18), length=4 * 1024 * 1024), errno.E2BIG),  # len >= 4 MiB, never read
        (npf.ref_arg(b"not an nvlist at all"), errno.EINVAL),
        (npf.ref_arg(npf.nvlist([(3, "version", 22)]), flags=1), errno.EINVAL),  # flags differ from nref.flags
        (npf.ref_arg(npf.nvlist([(3, "version", 21)])), EPROGMISMATCH),
    ]
    for arg, expected in cases:
        before = bytes(arg)
        with pytest.raises(OSError) as caught:
            npf.ioctl("LOAD", arg)
        assert caught.value.errno == expected
        assert bytes(arg) == before
    assert not npf.memory.live_replies


def test_request_of_4_mib_minus_one_is_read(make_npf):
    npf = make_npf(NpfKernel())
    filler = 4 * 1024 * 1024 - 1 - 19 - 19 - 2
    packed = npf.nvlist([(7, "x", b"\0" * filler)])
    assert len(packed) == 4 * 1024 * 1024 - 1
    assert npf.load([(7, "x", b"\0" * filler)]) == {"errno": 0}


def test_load_without_version_is_accepted_and_answers_errno_0(npf):
    assert npf.load([]) == {"errno": 0}
    assert npf.load([(3, "version", 2 ** 64 - 1)]) == {"errno": 0}  # the "absent" default of npfctl_run_op
    assert npf.load([(4, "version", "21")]) == {"errno": 0}  # another type reads as absent


def test_descriptor_pair_panics_the_kernel(npf):
    packed = npf.nvlist([(6, "fd", struct.pack("<Q", 3))])
    with pytest.raises(KernelPanic):
        npf.ioctl("LOAD", npf.ref_arg(packed))


def test_foreign_endian_request_fails_only_with_arrays(npf):
    assert unpack(npf.nvlist_call("LOAD", npf.nvlist([(3, "version", 22)], order=">"))[0], 0, "little") == \
        {"errno": 0}
    with pytest.raises(OSError) as caught:
        npf.ioctl("LOAD", npf.ref_arg(npf.nvlist([(11, "rules", [[(3, "attr", 1)]])], order=">")))
    assert caught.value.errno == errno.EINVAL


def test_buffer_ending_inside_a_nested_list_is_accepted(npf):
    packed = npf.nvlist([(5, "params", [(3, "gc.step", 7)])])
    truncated = bytearray(packed[:-20])  # drop the NVLIST_UP pair
    struct.pack_into("<Q", truncated, 11, len(truncated) - 19)
    struct.pack_into("<Q", truncated, 19 + 19 + 7 + 11, len(truncated) - (19 + 19 + 7) - 19)
    npf.nvlist_call("LOAD", bytes(truncated))
    assert npf.kernel.params["gc.step"] == 7


def test_switch_and_stats(npf):
    npf.ioctl("SWITCH", bytearray(struct.pack("<i", 1)))
    with pytest.raises(OSError) as caught:
        npf.ioctl("SWITCH", bytearray(struct.pack("<i", 1)))
    assert caught.value.errno == errno.EEXIST
    assert npf.save()["active"] is True
    npf.ioctl("SWITCH", bytearray(struct.pack("<i", 0)))
    assert npf.save()["active"] is False
    npf.kernel.stats[5] = 42
    address, buffer = npf.memory.alloc(168)
    npf.ioctl("STATS", bytearray(struct.pack("<Q", address)))
    assert struct.unpack("<21Q", bytes(buffer))[5] == 42


def test_ilp32_big_endian_kernel_uses_its_own_numbers_and_order(make_npf):
    kernel = NpfKernel(pointer_size=4, byte_order="big")
    npf = make_npf(kernel)
    assert npf.req is npf.ILP32
    assert struct.unpack(">i", npf.ioctl("VERSION", bytearray(4)))[0] == 22
    data = npf.nvlist_call("SAVE")[0]
    assert data[2] & 0x80  # the reply is packed big-endian
    assert unpack(data, 0, "big")["version"] == 22
    with pytest.raises(OSError) as caught:
        npf.ioctl(0xC0184E66, npf.ref_arg(npf.nvlist([], order=">")))  # the LP64 LOAD number
    assert caught.value.errno == errno.EINVAL


def test_a_reply_mapping_can_be_unmapped_once(npf):
    arg = npf.ioctl("SAVE", npf.ref_arg())
    address, length, _flags = struct.unpack(npf.ref, arg)
    npf.memory.munmap(address, length)
    with pytest.raises(OSError) as caught:
        npf.memory.munmap(address, length)
    assert caught.value.errno == errno.EINVAL and npf.memory.unmapped == 1
