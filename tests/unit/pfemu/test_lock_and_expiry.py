"""Section 5.10 (DIOCSETLCK, what the lock does) and state expiry."""

import os
import struct

import pytest


def _setlck(pf, fd, value):
    arg = bytearray(struct.pack(pf.order + "I", value))
    pf.ioctl(fd, "DIOCSETLCK", arg)
    return arg


def test_lock_is_stored_and_allowed_on_a_read_only_descriptor(pf):
    fd = pf.open(os.O_RDONLY)
    assert _setlck(pf, fd, 0x1234) == bytearray(struct.pack(pf.order + "I", 0x1234))
    assert pf.kernel.lock
    _setlck(pf, pf.open(), 0)  # not tied to whoever locked
    assert not pf.kernel.lock


def test_lock_blocks_no_ioctl(pf):
    fd = pf.open()
    _setlck(pf, fd, 1)
    pf.add_states(fd, pf.record(ifname=b"wm0"))
    assert len(pf.get_states(fd)) == 1
    assert pf.kill(fd, "DIOCKILLSTATES") == 1
    assert pf.kill(fd, "DIOCCLRSTATES") == 0
    pf.status(fd)
    pf.ioctl(fd, "DIOCSTOP", bytearray(0))
    pf.ioctl(fd, "DIOCSTART", bytearray(0))
    assert pf.kernel.lock  # survives stop/start


def test_lock_stops_expiry_and_freeing_then_purge_catches_up(pf):
    fd = pf.open()
    pf.add_states(fd, pf.record(proto=17, timeout=7, expire=10, ifname=b"wm0", lan=(b"\x0a\0\0\x01", 1)))
    pf.add_states(fd, pf.record(lan=(b"\x0a\0\0\x02", 2)))
    pf.kill(fd, "DIOCCLRSTATES", ifname=b"wm0")
    pf.add_states(fd, pf.record(proto=17, timeout=7, expire=10, lan=(b"\x0a\0\0\x03", 3)))
    _setlck(pf, fd, 1)
    pf.kernel.clock.advance(60)
    pf.kernel.purge()
    assert pf.status(fd)["states"] == 3  # the unlinked one and the expired one are still there
    assert len(pf.get_states(fd)) == 2
    _setlck(pf, fd, 0)
    pf.kernel.purge()
    assert pf.status(fd)["states"] == 1


def test_purge_keeps_states_that_are_not_due(pf):
    fd = pf.open()
    pf.add_states(fd, pf.record(timeout=2, expire=100))
    pf.kernel.clock.advance(99)
    pf.kernel.purge()
    assert pf.size_query(fd) == 240
    pf.kernel.clock.advance(1)
    pf.kernel.purge()
    assert pf.size_query(fd) == 0
    assert pf.status(fd)["fcounters"][1:] == (1, 1)  # inserts, removals


def test_adaptive_timeouts_scale_the_expiry(pf):
    fd = pf.open()
    pf.kernel.timeouts[16], pf.kernel.timeouts[17] = 2, 6
    records = b"".join(pf.record(lan=(bytes((10, 0, 0, n)), 1), timeout=7, proto=17) for n in range(4))
    pf.add_states(fd, records)
    # 4 default-rule states, start 2, end 6: 30 * (6 - 4) / (6 - 2) = 15
    assert {pf.field(rec, "I", 192) for rec in pf.get_states(fd)} == {15}
    pf.add_states(fd, b"".join(pf.record(lan=(bytes((10, 0, 1, n)), 1), timeout=7, proto=17) for n in range(2)))
    assert {pf.field(rec, "I", 192) for rec in pf.get_states(fd)} == {0}  # at the end: expire now
    pf.kernel.purge()
    # pf_state_expires() per state: once the first is freed, 5 states are below the end again
    # and the others get 30 * (6 - 5) / (6 - 2) = 7 seconds (pf.c, pf_purge_expired_states).
    assert pf.size_query(fd) == 5 * 240
    assert {pf.field(rec, "I", 192) for rec in pf.get_states(fd)} == {7}


def test_state_limit_setter_sets_adaptive_bounds_like_pfctl(pf):
    pf.kernel.state_limit = 100000
    assert pf.kernel.timeouts[16:18] == [60000, 120000]


@pytest.mark.parametrize("running", [True, False])
def test_reboot_empties_the_table_and_clears_the_lock(pf, running):
    fd = pf.open()
    pf.kernel.fill(5, seed=1)
    _setlck(pf, fd, 1)
    pf.kernel.running = running
    pf.kernel.clock.advance(1000)
    old_boot = pf.kernel.boot_time
    pf.kernel.reboot()
    assert pf.kernel.boot_time == old_boot + 1000
    assert not pf.kernel.lock and pf.kernel.running  # pf=YES in the configuration
    fd = pf.open()
    status = pf.status(fd)
    assert status["states"] == 0 and status["fcounters"] == (0, 0, 0) and status["running"] == 1
    assert status["stateid"] == int(pf.kernel.clock.now()) << 32


def test_table_stays_consistent_after_purge_compacts_it(pf):
    fd = pf.open()
    pf.kernel.fill(100, seed=9)
    pf.add_states(fd, pf.record(ifname=b"wm0", lan=(b"\x0a\x09\x09\x09", 7), state_id=b"\x11" * 8, creatorid=1))
    pf.add_states(fd, pf.record(ifname=b"wm1", lan=(b"\x0a\x09\x09\x09", 7), state_id=b"\x12" * 8, creatorid=1))
    assert pf.kill(fd, af=24) + pf.kill(fd, proto=17) > 0
    survivors = pf.get_states(fd)
    assert pf.kill(fd, proto=6) > len(survivors) // 2
    pf.kernel.purge()  # frees the killed states and the due ones (expire 0), then compacts
    left = pf.get_states(fd)
    assert [rec[0:8] for rec in left] == [rec[0:8] for rec in survivors if rec[233] != 6 and pf.field(rec, "I", 192)]
    assert pf.status(fd)["states"] == len(left)
    for rec in left:  # every key and id is still indexed: re-adding each one collides
        with pytest.raises(OSError):
            pf.add_states(fd, rec)
    assert pf.kill(fd, "DIOCCLRSTATES") == len(left)
    pf.kernel.purge()
    pf.add_states(fd, b"".join(left))
    assert len(pf.get_states(fd)) == len(left)
