"""The purge thread's cadence (pf.c: pf_purge_thread, pf_purge_expired_states, pf_state_expires).

Once a second NetBSD visits 1 + pf_status.states / timeout[PFTM_INTERVAL] states from a cursor
kept between ticks; unlinked states are freed, due ones unlinked and freed; nothing while the
table is locked (reference 5.4, 5.8, 5.10).  The clock is manual: ``run_purge(n)`` lets n
seconds pass with one tick each.  Everything is observed through raw requests.
"""

import errno

import pytest

LIMIT = 100


def _lan(n):
    return (bytes((10, 1, n // 256, n % 256)), 1000 + n)


def _states(pf, count, first=0, ifname=b"wm0", **fields):
    fields.setdefault("timeout", 2)
    fields.setdefault("expire", 80000)
    return b"".join(pf.record(lan=_lan(first + n), ifname=ifname, **fields) for n in range(count))


def _errno_of(call, *args):
    with pytest.raises(OSError) as failure:
        call(*args)
    return failure.value.errno


@pytest.mark.parametrize("count, ticks", [(1000, 49), (10000, 71)])
def test_cleared_states_are_freed_geometrically(pf, count, ticks):
    """The quota shrinks with what is left: 1,000 cleared states take 49 ticks, 10,000 take 71."""
    fd = pf.open()
    pf.kernel.fill(count, seed=5)
    pf.kill(fd, "DIOCCLRSTATES")
    assert pf.get_states(fd) == [] and pf.status(fd)["states"] == count
    assert pf.size_query(fd) == 240 * count  # the size query over-reports until the purge frees them
    left = [count]
    while left[-1]:
        pf.kernel.run_purge(1)
        left.append(pf.status(fd)["states"])
    assert len(left) - 1 == ticks
    assert left[1] == count - (1 + count // 10)  # the first tick frees 1 + states / 10
    assert pf.status(fd)["fcounters"][2] == count  # removals


def test_cursor_persists_between_ticks(pf):
    """20 states, the last 5 cleared: quota 3, so the cursor reaches them at the 6th tick, not the 1st."""
    fd = pf.open()
    pf.add_states(fd, _states(pf, 15))
    pf.add_states(fd, _states(pf, 5, first=15, ifname=b"wm1"))
    pf.kill(fd, "DIOCCLRSTATES", ifname=b"wm1")
    counts = []
    for _second in range(7):
        pf.kernel.run_purge(1)
        counts.append(pf.status(fd)["states"])
    assert counts == [20, 20, 20, 20, 20, 17, 15]  # 3 freed at tick 6, then quota 1 + 17 // 10 = 2
    assert len(pf.get_states(fd)) == 15


def test_nothing_is_purged_while_locked(pf):
    fd = pf.open()
    pf.add_states(fd, _states(pf, 10))
    pf.add_states(fd, _states(pf, 1, first=10, proto=17, timeout=7, expire=5))
    pf.kill(fd, "DIOCCLRSTATES", ifname=b"wm0")
    pf.ioctl(fd, "DIOCSETLCK", bytearray(b"\1\0\0\0"))
    pf.kernel.run_purge(60)
    assert pf.status(fd)["states"] == 11  # neither the cleared ones nor the expired one
    pf.ioctl(fd, "DIOCSETLCK", bytearray(4))
    pf.kernel.run_purge(1)
    assert pf.status(fd)["states"] == 9  # one tick visits 1 + 11 / 10 = 2 states


def test_pending_states_hold_the_pool_until_freed(pf):
    """DIOCADDSTATES answers ENOMEM at the limit while cleared states wait for the purge."""
    fd = pf.open()
    pf.kernel.state_limit = LIMIT
    pf.add_states(fd, _states(pf, LIMIT))
    pf.kill(fd, "DIOCCLRSTATES")
    fresh = _states(pf, LIMIT, first=200)
    assert _errno_of(pf.add_states, fd, fresh[:240]) == errno.ENOMEM
    pf.kernel.run_purge(1)  # frees 1 + 100 / 10 = 11
    pf.add_states(fd, fresh[:11 * 240])
    assert _errno_of(pf.add_states, fd, fresh[11 * 240:12 * 240]) == errno.ENOMEM
    assert pf.status(fd)["states"] == LIMIT and len(pf.get_states(fd)) == 11


def test_expired_states_stay_linked_until_the_purge_reaches_them(pf):
    """Past their expiry but not visited yet: still exported, with expire 0, and still counted."""
    fd = pf.open()
    pf.add_states(fd, _states(pf, 30))
    pf.add_states(fd, _states(pf, 1, first=30, proto=17, timeout=7, expire=5))
    pf.kernel.clock.advance(10)  # no tick
    exported = pf.get_states(fd)
    assert len(exported) == 31 and pf.field(exported[-1], "I", 192) == 0
    pf.kernel.run_purge(7)  # quota 4: the 31st state is visited at the 8th tick
    assert len(pf.get_states(fd)) == 31
    pf.kernel.run_purge(1)
    assert len(pf.get_states(fd)) == 30 and pf.status(fd)["states"] == 30


def test_adaptive_scaling_is_recomputed_per_state_during_a_tick(pf):
    """pf_free_state() decrements the counts before the next state's pf_state_expires()."""
    fd = pf.open()
    pf.kernel.timeouts[15] = 1  # PFTM_INTERVAL 1: a tick visits 1 + states states, the whole table
    pf.kernel.timeouts[16], pf.kernel.timeouts[17] = 2, 6
    pf.add_states(fd, _states(pf, 6, proto=17, timeout=7, expire=30))
    # 6 states at the adaptive end are all due, but once the first is freed the other 5 scale
    # 30 s to 30 * (6 - 5) / (6 - 2) = 7 s from their last activity: a per-pass scaling would free all 6.
    pf.kernel.run_purge(1)
    assert [pf.field(rec, "I", 192) for rec in pf.get_states(fd)] == [6] * 5
    pf.kernel.run_purge(6)  # at 7 s the first is due; then 4 states scale to 30 * 2 / 4 = 15 s
    assert [pf.field(rec, "I", 192) for rec in pf.get_states(fd)] == [8] * 4
    assert pf.status(fd)["states"] == 4
