"""Sections 5.2, 5.3 and 11: DIOCSTART/DIOCSTOP, DIOCGETSTATUS, DIOCGETLIMIT/DIOCGETTIMEOUT; generator."""

import errno
import os
import struct

import pytest

from ansible_collections.netbsd.pf.tests.pfemu.generate import generate_records
from ansible_collections.netbsd.pf.tests.pfemu.inprocess import make_syscalls
from ansible_collections.netbsd.pf.tests.pfemu.kernel import Kernel, ManualClock, lan_ext_key, ext_gwy_key, id_key


def test_start_when_running_is_eexist_and_stop_when_stopped_is_enoent(pf):
    fd = pf.open()
    with pytest.raises(OSError) as caught:
        pf.ioctl(fd, "DIOCSTART", bytearray(0))
    assert caught.value.errno == errno.EEXIST
    pf.kernel.clock.advance(5)
    pf.ioctl(fd, "DIOCSTOP", bytearray(0))
    status = pf.status(fd)
    assert status["running"] == 0 and status["since"] == int(pf.kernel.clock.now())
    with pytest.raises(OSError) as caught:
        pf.ioctl(fd, "DIOCSTOP", bytearray(0))
    assert caught.value.errno == errno.ENOENT


def test_start_sets_the_state_id_counter_only_once():
    kernel = Kernel(running=False, clock=ManualClock(1000))
    assert kernel.stateid == 0
    kernel.running = True
    assert kernel.stateid == 1000 << 32
    kernel.running = False
    kernel.clock.advance(50)
    kernel.running = True
    assert kernel.stateid == 1000 << 32


def test_stop_and_start_keep_states_and_lock(pf):
    fd = pf.open()
    pf.kernel.fill(3, seed=1)
    pf.kernel.lock = True
    pf.ioctl(fd, "DIOCSTOP", bytearray(0))
    pf.ioctl(fd, "DIOCSTART", bytearray(0))
    assert pf.size_query(fd) == 3 * 240 and pf.kernel.lock


def test_status_layout(pf):
    fd = pf.open()
    pf.kernel.fill(4, seed=2)
    status = pf.status(fd)
    assert status["states"] == 4 and status["running"] == 1 and status["hostid"] == pf.kernel.hostid
    assert status["counters"][15] == 0 and status["fcounters"][1] == 4 and status["debug"] == 1


@pytest.mark.parametrize("index,value", [(0, 120), (2, 86400), (16, 6000), (17, 12000), (18, 0), (19, 30)])
def test_gettimeout(pf, index, value):
    arg = bytearray(struct.pack(pf.order + "ii", index, -1))
    pf.ioctl(pf.open(os.O_RDONLY), "DIOCGETTIMEOUT", arg)
    assert struct.unpack(pf.order + "ii", arg) == (index, value)


@pytest.mark.parametrize("index", [-1, 20, 23])
def test_gettimeout_out_of_range_is_einval(pf, index):
    arg = bytearray(struct.pack(pf.order + "ii", index, 0))
    with pytest.raises(OSError) as caught:
        pf.ioctl(pf.open(), "DIOCGETTIMEOUT", arg)
    assert caught.value.errno == errno.EINVAL


@pytest.mark.parametrize("index,value", [(0, 10000), (1, 10000), (2, 5000), (3, 1000), (4, 200000)])
def test_getlimit(pf, index, value):
    arg = bytearray(struct.pack(pf.order + "iI", index, 0))
    pf.ioctl(pf.open(os.O_RDONLY), "DIOCGETLIMIT", arg)
    assert struct.unpack(pf.order + "iI", arg) == (index, value)


@pytest.mark.parametrize("index", [-1, 5])
def test_getlimit_out_of_range_is_einval(pf, index):
    arg = bytearray(struct.pack(pf.order + "iI", index, 0))
    with pytest.raises(OSError) as caught:
        pf.ioctl(pf.open(), "DIOCGETLIMIT", arg)
    assert caught.value.errno == errno.EINVAL


def test_generated_records_are_unique_and_varied():
    block = generate_records(20000, seed=11, hostid=0x01020304, now=1700000000)
    records = [block[i:i + 240] for i in range(0, len(block), 240)]
    assert len({lan_ext_key(rec) for rec in records}) == len({ext_gwy_key(rec) for rec in records}) == len(records)
    assert len({id_key(rec) for rec in records}) == len(records)
    tcp_states = {(rec[120], rec[152]) for rec in records if rec[233] == 6}
    assert {(11, 0), (12, 2), (4, 4), (10, 10)} <= tcp_states
    assert {rec[233] for rec in records} >= {1, 6, 17, 47, 50, 58}
    assert {rec[232] for rec in records} == {2, 24}
    assert any(rec[48:66] != rec[24:42] for rec in records)  # NAT
    assert any(rec[99] == 1 for rec in records)  # scrub
    assert any(struct.unpack_from("<I", rec, 112)[0] for rec in records)  # modulate
    assert {struct.unpack_from("<H", rec, 118)[0] for rec in records} == {0, 1380, 1460}
    floating = sum(rec[8:11] == b"all" for rec in records)
    assert 0.75 * len(records) < floating < len(records)
    for rec in records[:2000]:
        timeout, remaining = rec[237], struct.unpack_from("<I", rec, 192)[0]
        assert timeout < 20 and remaining <= (120, 30, 86400, 900, 45, 90, 60, 30, 60, 20, 10, 60, 30, 60)[timeout]


def test_generator_is_reproducible_and_honours_byte_order():
    assert generate_records(50, seed=3, now=1) == generate_records(50, seed=3, now=1)
    little = generate_records(1, seed=3, now=1, hostid=5)
    big = generate_records(1, seed=3, now=1, hostid=5, byte_order="big")
    assert little[228:232] == (5).to_bytes(4, "little") and big[228:232] == (5).to_bytes(4, "big")


def test_fill_refuses_to_pass_the_state_limit():
    with pytest.raises(ValueError, match="state limit"):
        Kernel(state_limit=10).fill(11)


@pytest.mark.parametrize("abi", ["ilp32-le", "ilp32-be", "lp64-be"])
def test_foreign_abi_through_simulated_memory(abi):
    """The same requests with ILP32/big-endian layouts, as a client under make_syscalls would send them."""
    kernel = Kernel(abi=abi, seed=5)
    kernel.fill(3, seed=4)
    syscalls = make_syscalls(kernel)
    order = ">" if abi.endswith("be") else "<"
    lp64 = abi.startswith("lp64")
    fmt = order + ("i4xQ" if lp64 else "iI")
    getstates = 0xC0104419 if lp64 else 0xC0084419
    fd = syscalls.open("/dev/pf", os.O_RDWR)
    arg = bytearray(struct.pack(fmt, 0, 0))
    syscalls.ioctl(fd, getstates, arg)
    size = struct.unpack(fmt, arg)[0]
    address, buffer = syscalls.alloc(size)
    arg = bytearray(struct.pack(fmt, size, address))
    syscalls.ioctl(fd, getstates, arg)
    assert bytes(buffer) == kernel.export_all() and struct.unpack(order + "I", buffer[228:232])[0] == kernel.hostid
    small_address, small = syscalls.alloc(240)
    arg = bytearray(struct.pack(fmt, -1, small_address))  # the second record hits the guard page
    with pytest.raises(OSError) as caught:
        syscalls.ioctl(fd, getstates, arg)
    assert caught.value.errno == errno.EFAULT
    assert bytes(small) == bytes(buffer[:240])
    with pytest.raises(OSError) as caught:
        syscalls.ioctl(fd, 0xC0084419 if lp64 else 0xC0104419, bytearray(16))
    assert caught.value.errno == errno.ENODEV
    syscalls.close(fd)
