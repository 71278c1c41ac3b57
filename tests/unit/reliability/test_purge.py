"""Issue 11: the kernel's purge cadence and adaptive timeouts, against the in-process emulator.

NetBSD frees cleared, killed and expired states only when its purge thread reaches them:
1 + states / 10 states a second, from a cursor, never while the table is locked; until then
they fill the state pool.  ``PurgeClock`` stands in for restore.py's ``time`` so that each
second the restore sleeps is one second of the emulated kernel's clock, with its purge tick.
Rows of docs/reliability.md, section "Issue 11: purge and adaptive timeouts".
"""

import struct
import sys
import time

import pytest

from ansible_collections.netbsd.pf.plugins.module_utils import operations, restore as restore_mod
from ansible_collections.netbsd.pf.plugins.module_utils.flush import Selection, flush_states
from ansible_collections.netbsd.pf.plugins.module_utils.formats import PFS_BINARY, write_dump
from ansible_collections.netbsd.pf.plugins.module_utils.lease import read_lease
from ansible_collections.netbsd.pf.plugins.module_utils.pfdev import PfDevice
from ansible_collections.netbsd.pf.plugins.module_utils.records import OFF_CREATORID, OFF_EXPIRE, OFF_IFNAME, OFF_TIMEOUT
from ansible_collections.netbsd.pf.plugins.module_utils.restore import BUCKETS, RestoreError, restore_file
from ansible_collections.netbsd.pf.tests.pfemu.generate import generate_records

RECORD_SIZE = 240
ORDER = sys.byteorder
U32 = struct.Struct(("<" if ORDER == "little" else ">") + "I")
TCP_ESTABLISHED = 2
LIMIT = 1000


class PurgeClock:
    """restore.py's ``time``: monotonic is the kernel's clock, and each second slept is one purge tick."""

    def __init__(self, kernel):
        self.kernel = kernel
        self.slept = 0

    def monotonic(self):
        return self.kernel.clock.now()

    def sleep(self, seconds):
        self.slept += seconds
        self.kernel.run_purge(seconds)

    def __getattr__(self, name):
        return getattr(time, name)


def states(count, seed, ifname=b"wm0", expire=20000, timeout=TCP_ESTABLISHED):
    """``count`` states that load into an empty table, on ``ifname``, with ``expire`` seconds left."""
    block = bytearray(generate_records(count, seed=seed, byte_order=ORDER, first_stateid=(seed + 1) << 40))
    for offset in range(0, len(block), RECORD_SIZE):
        block[offset + OFF_IFNAME:offset + OFF_IFNAME + 16] = ifname.ljust(16, b"\0")
        block[offset + OFF_TIMEOUT] = timeout
        U32.pack_into(block, offset + OFF_EXPIRE, expire)
    return bytes(block)


def ids(block):
    return {bytes(block[o:o + 8]) + bytes(block[o + OFF_CREATORID:o + OFF_CREATORID + 4])
            for o in range(0, len(block), RECORD_SIZE)}


def table():
    with PfDevice() as device:
        return bytes(device.get_states())


def dump_file(tmp_path, block, name="dump.bin"):
    path = str(tmp_path / name)
    write_dump(path, PFS_BINARY, [block], ORDER, count=len(block) // RECORD_SIZE)
    return path


def run_restore(path, tmp_path, **options):
    options.setdefault("lease_file", str(tmp_path / "lease"))
    options.setdefault("age", "none")
    return restore_file(path, **options)


def flush(**selection):
    with PfDevice(writable=True) as device:
        return flush_states(device, Selection(**selection))


def assert_accounted(report, total):
    assert report["total"] == total
    assert sum(report[bucket] for bucket in BUCKETS) == total, report


def assert_unlocked_and_released(kernel, tmp_path):
    assert kernel.lock is False
    lease = read_lease(str(tmp_path / "lease"))
    assert lease is None or lease["state"] == "released"


@pytest.fixture
def purge_clock(pfemu_kernel, monkeypatch):
    clock = PurgeClock(pfemu_kernel)
    monkeypatch.setattr(restore_mod, "time", clock)
    return clock


def test_flush_then_restore_at_the_state_limit(pfemu_kernel, tmp_path, purge_clock):
    """P1: a full table flushed and restored at once: the restore waits for the purge, unlocked, and loses nothing."""
    pfemu_kernel.state_limit = LIMIT
    block = states(LIMIT, seed=1)
    path = dump_file(tmp_path, block)
    assert run_restore(path, tmp_path)["restored"] == LIMIT
    flushed = flush(all_states=True)
    assert (flushed["removed"], flushed["states_after"], flushed["awaiting_purge"]) == (LIMIT, 0, LIMIT)

    report = run_restore(path, tmp_path, chunk_size=100)
    assert_accounted(report, LIMIT)
    assert (report["restored"], report["rejected"], report["expired"]) == (LIMIT, 0, 0)
    assert report["states_before"] == LIMIT and report["states_awaiting_purge"] == LIMIT
    wait = report["purge_wait"]
    assert wait["lock_released"] and wait["stopped"] is None
    assert wait["freed_while_waiting"] == LIMIT  # the purge ran only while the restore slept, unlocked
    # Refilling as room appears keeps the purge's quota at 101 a second: 10 s, where an idle table takes 49.
    assert (wait["waits"], wait["waited_seconds"], purge_clock.slept) == (10, 10, 10)
    assert any("released while waiting" in warning for warning in report["warnings"])
    assert pfemu_kernel.states == pfemu_kernel.linked_states == LIMIT
    assert ids(table()) == ids(block)
    assert_unlocked_and_released(pfemu_kernel, tmp_path)


def test_flush_then_restore_without_waiting_is_refused_by_the_guard(pfemu_kernel, tmp_path, purge_clock):
    """P2: purge_wait 0: pending states count as occupied, limit_policy refuse adds nothing."""
    pfemu_kernel.state_limit = LIMIT
    block = states(LIMIT, seed=1)
    path = dump_file(tmp_path, block)
    run_restore(path, tmp_path)
    flush(all_states=True)
    with pytest.raises(RestoreError, match="leaves room for 0"):
        run_restore(path, tmp_path, purge_wait=0)
    assert (pfemu_kernel.states, pfemu_kernel.linked_states, purge_clock.slept) == (LIMIT, 0, 0)


def test_restore_right_after_a_flush_within_the_purge_window(pfemu_kernel, tmp_path, purge_clock):
    """P3: half of a full table flushed (the later half of the list), its states restored at once.

    The cursor visits the 500 kept states before the cleared ones (quota 101 a second), so
    nothing is freed for 5 seconds; the restore waits, then refills as room appears.
    """
    pfemu_kernel.state_limit = LIMIT
    kept, cleared = states(500, seed=2, ifname=b"wm0"), states(500, seed=3, ifname=b"wm1")
    assert run_restore(dump_file(tmp_path, kept + cleared), tmp_path)["restored"] == LIMIT
    flushed = flush(interface="wm1")
    assert (flushed["removed"], flushed["awaiting_purge"]) == (500, 500)

    report = run_restore(dump_file(tmp_path, cleared, "wm1.bin"), tmp_path, chunk_size=64)
    assert_accounted(report, 500)
    assert (report["restored"], report["already_present"], report["rejected"]) == (500, 0, 0)
    # 5 seconds free nothing (the cursor crosses the kept states), then 5 free 101 each.
    assert report["purge_wait"]["freed_while_waiting"] == 500 and purge_clock.slept == 10
    assert pfemu_kernel.states == pfemu_kernel.linked_states == LIMIT
    assert ids(table()) == ids(kept) | ids(cleared)
    assert_unlocked_and_released(pfemu_kernel, tmp_path)


def test_fit_without_waiting_rejects_exactly_what_does_not_fit(pfemu_kernel, tmp_path, purge_clock):
    """P4: the same window with purge_wait 0 and limit_policy fit: every state rejected as state limit, counted."""
    pfemu_kernel.state_limit = LIMIT
    kept, cleared = states(500, seed=2, ifname=b"wm0"), states(500, seed=3, ifname=b"wm1")
    run_restore(dump_file(tmp_path, kept + cleared), tmp_path)
    flush(interface="wm1")
    report = run_restore(dump_file(tmp_path, cleared, "wm1.bin"), tmp_path, purge_wait=0, limit_policy="fit")
    assert_accounted(report, 500)
    assert (report["restored"], report["rejected"], report["rejected_by_reason"]) == (0, 500, {"state limit": 500})
    assert (pfemu_kernel.states, pfemu_kernel.linked_states, purge_clock.slept) == (LIMIT, 500, 0)


def test_purge_wait_runs_out_while_another_lease_holds_the_lock(pfemu_kernel, tmp_path, purge_clock):
    """P5: the table locked under states_lock's lease: the purge cannot run, so the restore does not wait."""
    pfemu_kernel.state_limit = 100
    block = states(100, seed=4)
    path = dump_file(tmp_path, block)
    run_restore(path, tmp_path)
    flush(all_states=True)
    operations.lock_table("/dev/pf", 300, str(tmp_path / "lease"))
    try:
        report = run_restore(path, tmp_path, limit_policy="fit", chunk_size=10)
    finally:
        operations.unlock_table("/dev/pf", str(tmp_path / "lease"))
    assert_accounted(report, 100)
    assert (report["restored"], report["rejected_by_reason"]) == (0, {"state limit": 100})
    assert "another holder" in report["purge_wait"]["stopped"] and purge_clock.slept == 0


def test_expired_states_awaiting_the_purge_are_never_restored(pfemu_kernel, tmp_path):
    """P6: states past their expiry that the purge has not reached are exported with expire 0:
    the dump counts them (and keeps them), the restore drops them as expired."""
    live = states(20, seed=5)
    short = states(5, seed=6, ifname=b"wm1", expire=10, timeout=7)  # udp.single, 30 s
    assert run_restore(dump_file(tmp_path, live + short), tmp_path)["restored"] == 25
    pfemu_kernel.clock.advance(20)  # no purge tick: the 5 are due but still linked
    info = operations.table_info()
    assert info["awaiting_purge"] == {"unlinked": 0, "expired": 5, "awaiting_purge": 5}
    dumped = operations.dump_states(str(tmp_path / "table.pfstate"), lease_file=str(tmp_path / "lease"))
    assert (dumped["count"], dumped["expired_awaiting_purge"]) == (25, 5)
    flush(all_states=True)
    pfemu_kernel.purge()
    report = run_restore(str(tmp_path / "table.pfstate"), tmp_path)
    assert_accounted(report, 25)
    assert (report["restored"], report["expired"]) == (20, 5)
    assert ids(table()) == ids(live)


def test_adaptive_timeouts_near_the_limit_keep_the_dumped_remaining_time(pfemu_kernel, tmp_path):
    """P7: with set limit states 1000 (adaptive 600/1200), 950 states scale timeouts by 250/600.

    A plain import (what pfs -R does) gives them last activity now - (86400 - 3600) and a scaled
    timeout of 36000 s: every one arrives expired.  The restore compensates: each keeps 3600 s.
    """
    pfemu_kernel.state_limit = LIMIT
    block = states(950, seed=7, expire=3600)
    with PfDevice(writable=True) as device:
        device.add_states(block)
        exported = device.get_states()
    assert {U32.unpack_from(exported, o + OFF_EXPIRE)[0] for o in range(0, len(exported), RECORD_SIZE)} == {0}
    flush(all_states=True)
    pfemu_kernel.purge()

    report = run_restore(dump_file(tmp_path, block), tmp_path)
    assert (report["restored"], report["expired"]) == (950, 0)
    assert report["adaptive"] == {"start": 600, "end": 1200, "default_rule_states_after": 950, "scaling": True,
                                  "compensated": 950, "shortened": 0, "shortened_by_max": 0}
    exported = table()
    assert {U32.unpack_from(exported, o + OFF_EXPIRE)[0] for o in range(0, len(exported), RECORD_SIZE)} == {3600}
    pfemu_kernel.run_purge(3599)
    assert pfemu_kernel.linked_states == 950


def test_adaptive_compensation_is_capped_at_the_scaled_timeout(pfemu_kernel, tmp_path):
    """P8: a state whose remaining time exceeds its scaled timeout gets the scaled timeout, and a warning says so."""
    pfemu_kernel.state_limit = LIMIT
    block = states(950, seed=8, expire=80000)  # scaled tcp.established is 36000 s
    report = run_restore(dump_file(tmp_path, block), tmp_path)
    assert report["restored"] == 950
    assert (report["adaptive"]["shortened"], report["adaptive"]["shortened_by_max"]) == (950, 80000 - 36000)
    assert any("lost up to 44000 seconds" in warning for warning in report["warnings"])
    exported = table()
    assert {U32.unpack_from(exported, o + OFF_EXPIRE)[0] for o in range(0, len(exported), RECORD_SIZE)} == {36000}
