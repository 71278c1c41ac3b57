"""Section 5.4 and 5.11: DIOCGETSTATES and how a state is exported."""

import ctypes
import errno
import mmap

import pytest


def test_size_query_of_an_empty_table_is_zero(pf):
    assert pf.size_query(pf.open()) == 0


def test_size_query_is_240_per_state(pf):
    pf.kernel.fill(7, seed=1)
    assert pf.size_query(pf.open()) == 7 * 240


def test_size_query_counts_unlinked_states_until_purged(pf):
    fd = pf.open()
    pf.kernel.fill(10, seed=1)
    pf.kill(fd, "DIOCCLRSTATES")
    assert pf.size_query(fd) == 10 * 240
    assert pf.get_states(fd) == []
    assert pf.status(fd)["states"] == 10
    pf.kernel.purge()
    assert pf.size_query(fd) == 0


def test_fetch_returns_states_in_insertion_order(pf):
    fd = pf.open()
    records = [pf.record(lan=(bytes((10, 0, 0, n)), 2000 + n), state_id=bytes((0, 0, 0, 0, 0, 0, 1, n)), creatorid=9)
               for n in (5, 1, 3)]
    for rec in records:
        pf.add_states(fd, rec)
    assert [got[0:8] for got in pf.get_states(fd)] == [rec[0:8] for rec in records]


def test_too_small_buffer_truncates_silently(pf):
    fd = pf.open()
    pf.kernel.fill(5, seed=2)
    everything = pf.get_states(fd)
    assert [rec[0:8] for rec in pf.fetch(fd, 3 * 240 + 239)] == [rec[0:8] for rec in everything[:3]]
    assert pf.fetch(fd, 239) == []


def test_fetch_skips_unlinked_states(pf):
    fd = pf.open()
    pf.add_states(fd, pf.record(ifname=b"wm0", lan=(b"\x0a\x00\x00\x01", 1)) + pf.record(lan=(b"\x0a\x00\x00\x02", 2)))
    assert pf.kill(fd, "DIOCCLRSTATES", ifname=b"wm0") == 1
    states = pf.get_states(fd)
    assert len(states) == 1 and states[0][8:11] == b"all"


def test_negative_ps_len_overruns_and_faults_keeping_earlier_records(pf):
    """ps_len < 0 is a huge unsigned size: copyout runs past the buffer into unmapped memory."""
    fd = pf.open()
    pf.kernel.fill(40, seed=3)
    expected = pf.kernel.export_all()
    # A buffer at the very end of an anonymous mapping, followed by a guard page.
    page = mmap.PAGESIZE
    area = mmap.mmap(-1, 2 * page)
    base = ctypes.addressof(ctypes.c_char.from_buffer(area))
    libc = ctypes.CDLL(None)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    assert libc.mprotect(base + page, page, 0) == 0
    try:
        start = base + page - 3 * 240
        arg = pf.states_arg(-1, start)
        before = bytes(arg)
        with pytest.raises(OSError) as caught:
            pf.ioctl(fd, "DIOCGETSTATES", arg)
        assert caught.value.errno == errno.EFAULT
        assert bytes(arg) == before  # no copy-back on error
        assert ctypes.string_at(start, 3 * 240) == expected[:3 * 240]
    finally:
        libc.mprotect(base + page, page, 3)
        area.close()


def test_bad_buffer_address_is_efault(pf):
    fd = pf.open()
    pf.kernel.fill(2, seed=4)
    arg = pf.states_arg(480, 16)
    with pytest.raises(OSError) as caught:
        pf.ioctl(fd, "DIOCGETSTATES", arg)
    assert caught.value.errno == errno.EFAULT
    assert pf.states_len(arg) == 480


def test_states_added_after_the_size_query_are_dropped(pf):
    fd = pf.open()
    pf.kernel.state_limit = 1000
    pf.kernel.fill(4, seed=5)
    pf.kernel.grow_before_next_fetch(3)
    size = pf.size_query(fd)
    assert size == 4 * 240
    assert len(pf.fetch(fd, size)) == 4
    assert pf.size_query(fd) == 7 * 240


def test_export_of_kernel_made_states_keeps_rules_counters_and_ages(pf):
    fd = pf.open()
    pf.kernel.fill(200, seed=6)
    states = pf.get_states(fd)
    rules = {pf.field(rec, "I", 176) for rec in states}
    assert 0xFFFFFFFF in rules and len(rules) > 10
    assert any(pf.field(rec, "I", 200) for rec in states)  # packets[0] low word
    assert any(pf.field(rec, "I", 188) for rec in states)  # creation age
    assert all(rec[160:176] == b"\0" * 16 and rec[239] == 0 for rec in states)  # rt_addr, updates


def test_expire_and_creation_follow_the_clock(pf):
    fd = pf.open()
    pf.add_states(fd, pf.record(timeout=7, expire=20))
    rec = pf.get_states(fd)[0]
    assert (pf.field(rec, "I", 188), pf.field(rec, "I", 192)) == (0, 20)
    pf.kernel.clock.advance(15)
    rec = pf.get_states(fd)[0]
    assert (pf.field(rec, "I", 188), pf.field(rec, "I", 192)) == (15, 5)
    pf.kernel.clock.advance(10)
    rec = pf.get_states(fd)[0]
    assert (pf.field(rec, "I", 188), pf.field(rec, "I", 192)) == (25, 0)  # due, not purged yet


def test_fault_injection_on_getstates(pf):
    fd = pf.open()
    pf.kernel.fill(3, seed=7)
    pf.kernel.inject_fault("DIOCGETSTATES", 1, errno.EINTR)
    arg = pf.states_arg(0, 0)
    with pytest.raises(OSError) as caught:
        pf.ioctl(fd, "DIOCGETSTATES", arg)
    assert caught.value.errno == errno.EINTR and pf.states_len(arg) == 0
    assert pf.size_query(fd) == 3 * 240
