"""Concurrency and the lock: rows D4, D6, C1 and D8 of docs/reliability.md ("Issue 10: concurrency and the lock").

Other writers (a second restore, pfsync, a `pfstate lock` taking the lease over)
act at chosen moments by wrapping the device calls of the restore or dump under
test; the emulated kernel (pfemu_kernel) is shared by all of them.
"""

import json
import os
import stat
import threading
import time

import pytest

from ansible_collections.netbsd.pf.plugins.module_utils import operations, restore as restore_mod
from ansible_collections.netbsd.pf.plugins.module_utils.lease import (
    EXPIRED, HELD, LeaseError, arm_lease, end_lease, lease_view, read_lease, release_lease,
)
from ansible_collections.netbsd.pf.plugins.module_utils.pfdev import PfDevice
from ansible_collections.netbsd.pf.plugins.module_utils.restore import BUCKETS, RestoreError, restore_file
from ansible_collections.netbsd.pf.tests.unit.reliability.test_matrix import dump_file, records as matrix_records

RECORD_SIZE = 240


def records(count, seed=7):
    """``count`` generated states that load into an empty table, none expired (test_matrix's, ids from 2**40)."""
    return matrix_records(count, seed, first_stateid=1 << 40)


def run_restore(path, tmp_path, **options):
    options.setdefault("lease_file", str(tmp_path / "lease"))
    options.setdefault("age", "none")
    return restore_file(path, **options)


def table_size():
    with PfDevice() as device:
        return device.get_status()["states"]


def rival_adds(block):
    """Someone else (another writer, pfsync) adds these states, one call per record."""
    with PfDevice(writable=True) as device:
        for offset in range(0, len(block), RECORD_SIZE):
            device.add_states(block[offset:offset + RECORD_SIZE])


def before_add_call(monkeypatch, call_number, action):
    """Run ``action(block)`` right before the restore's ``call_number``-th DIOCADDSTATES, after it read the counters."""
    real_add = PfDevice.add_states
    calls = [0]

    def add_states(self, block, *args, **kwargs):
        calls[0] += 1
        if calls[0] == call_number:
            action(bytes(block))
        return real_add(self, block, *args, **kwargs)

    monkeypatch.setattr(PfDevice, "add_states", add_states)


@pytest.fixture
def cleanup_leases():
    """Lease files whose watchdogs must be told to exit (release) after the test."""
    files = []
    yield files
    for path in files:
        try:
            release_lease(path)
        except LeaseError:
            pass


# --- D4: the lock taken over mid-restore ---------------------------------------------------


def test_lock_taken_over_mid_restore_stays_locked(pfemu_kernel, tmp_path, monkeypatch, cleanup_leases):
    """`pfstate lock --lease 300` during a restore: the restore must not unlock the new holder's lock, and says so."""
    lease_file = str(tmp_path / "lease")
    cleanup_leases.append(lease_file)
    taken = {}

    def take_over(_block):
        taken["view"] = operations.lock_table("/dev/pf", 300, lease_file, holder="pfstate")

    before_add_call(monkeypatch, 2, take_over)
    report = run_restore(dump_file(tmp_path, records(30)), tmp_path, chunk_size=10)
    assert report["restored"] == 30
    lease = read_lease(lease_file)
    assert lease["state"] == HELD and lease["token"] == taken["view"]["token"] and lease["holder"] == "pfstate"
    assert pfemu_kernel.lock is True, "the lease file says held: the kernel must be locked too"
    assert report["lock"]["ended"] == "taken_over" and report["lock"]["taken_over_by"]["token"] == lease["token"]
    assert any("taken over" in warning for warning in report["warnings"])


def test_lock_taken_over_during_a_dump_stays_locked(pfemu_kernel, tmp_path, monkeypatch, cleanup_leases):
    lease_file = str(tmp_path / "lease")
    cleanup_leases.append(lease_file)
    pfemu_kernel.fill(20, seed=3)
    real_get_states = PfDevice.get_states
    taken = {}

    def get_states(self, *args, **kwargs):
        if pfemu_kernel.lock and not taken:
            taken["view"] = operations.lock_table("/dev/pf", 300, lease_file, holder="pfstate")
        return real_get_states(self, *args, **kwargs)

    monkeypatch.setattr(PfDevice, "get_states", get_states)
    result = operations.dump_states(str(tmp_path / "d.pfstate"), lease_file=lease_file)
    assert result["count"] == 20 and taken
    assert read_lease(lease_file)["token"] == taken["view"]["token"] and pfemu_kernel.lock is True


def test_a_lock_taken_during_an_explicit_unlock_stays_with_its_lease(pfemu_kernel, tmp_path, monkeypatch, cleanup_leases):
    """`pfstate unlock` while `pfstate lock` runs: the new lease is either released with the table unlocked, or in force."""
    lease_file = str(tmp_path / "lease")
    cleanup_leases.append(lease_file)
    operations.lock_table("/dev/pf", 300, lease_file, holder="first")
    real_set_table_lock = operations.set_table_lock
    taker = threading.Thread(target=lambda: operations.lock_table("/dev/pf", 300, lease_file, holder="second"))

    def unlock_while_another_locks(device_path, locked):
        real_set_table_lock(device_path, locked)
        if not locked and not taker.is_alive():
            taker.start()
            taker.join(0.5)         # it arms its lease and locks, unless the unlock holds the lease file

    monkeypatch.setattr(operations, "set_table_lock", unlock_while_another_locks)
    operations.unlock_table("/dev/pf", lease_file)
    taker.join(10)
    lease = read_lease(lease_file)
    assert lease["holder"] == "second" and lease["state"] == HELD and pfemu_kernel.lock is True


@pytest.mark.parametrize("found, unlocks, ended", [
    ({"token": "mine", "state": "held"}, True, None),
    ({"token": "mine", "state": "unlock_failed"}, True, None),      # its watchdog could not unlock: try again
    ({"token": "mine", "state": "expired"}, False, "expired"),      # the watchdog unlocked; a later lock is not ours
    ({"token": "mine", "state": "released"}, False, "released"),    # someone ran pfstate unlock
    ({"token": "theirs", "state": "held"}, False, "taken_over"),
    (None, True, None),                                             # no lease file: nobody else holds a lease
])
def test_end_lease_unlocks_only_its_own_lease(tmp_path, found, unlocks, ended):
    lease_file = str(tmp_path / "lease")
    if found is not None:
        with open(lease_file, "w") as handle:
            json.dump(dict(found, version=1), handle)
    unlocked = []
    result = end_lease(lease_file, "mine", lambda: unlocked.append(True))
    assert unlocked == ([True] if unlocks else [])
    assert (result or {}).get("ended") == ended
    if found is not None:
        assert read_lease(lease_file)["state"] == ("released" if unlocks else found["state"])


def test_own_lease_ends_with_an_unlock(pfemu_kernel, tmp_path):
    report = run_restore(dump_file(tmp_path, records(5)), tmp_path)
    assert pfemu_kernel.lock is False and read_lease(str(tmp_path / "lease"))["state"] == "released"
    assert "ended" not in report["lock"]


# --- D6: two restores at once, and other writers -----------------------------------------------


def test_restores_with_different_lease_files_are_serialised(pfemu_kernel, tmp_path, monkeypatch):
    """The restore lock is host-wide: a second restore naming another lease file still waits for the first."""
    path = dump_file(tmp_path, records(20))
    inside, proceed = threading.Event(), threading.Event()
    real_add = restore_mod.Restorer.add

    def slow_add(self):
        inside.set()
        proceed.wait(10)
        return real_add(self)

    monkeypatch.setattr(restore_mod.Restorer, "add", slow_add)
    first = {}
    thread = threading.Thread(target=lambda: first.setdefault("report", run_restore(path, tmp_path, lease_file=str(tmp_path / "A"))))
    thread.start()
    try:
        assert inside.wait(10)
        with pytest.raises(RestoreError, match=r"another restore \(pid %d\) is running" % os.getpid()):
            run_restore(path, tmp_path, lease_file=str(tmp_path / "B"), restore_lock_timeout=0)
    finally:
        proceed.set()
        thread.join(20)
    assert first["report"]["restored"] == 20 and table_size() == 20


def test_a_rival_adding_the_whole_chunk_before_the_call_is_not_credited(pfemu_kernel, tmp_path, monkeypatch):
    """Another writer adds the identical chunk between the restore's counter read and its call (the 999 of D6)."""
    before_add_call(monkeypatch, 2, rival_adds)
    report = run_restore(dump_file(tmp_path, records(30)), tmp_path, chunk_size=10)
    assert (report["restored"], report["already_present"], report["appeared_during_restore"]) == (20, 10, 10)
    assert table_size() == 30, "restored + the rival's 10 is what the table gained"
    assert sum(report[bucket] for bucket in BUCKETS) == report["total"] == 30


def test_a_rival_adding_the_head_of_a_chunk_before_the_call_is_not_credited(pfemu_kernel, tmp_path, monkeypatch):
    """The rival's chunks are cut elsewhere: it added the first half of ours; the second half is still to add."""
    before_add_call(monkeypatch, 2, lambda block: rival_adds(block[:5 * RECORD_SIZE]))
    report = run_restore(dump_file(tmp_path, records(30)), tmp_path, chunk_size=10)
    assert (report["restored"], report["appeared_during_restore"]) == (25, 5)
    assert table_size() == 30


def test_a_rival_adding_the_tail_of_a_chunk_is_not_credited(pfemu_kernel, tmp_path, monkeypatch):
    """The call adds the head of the chunk and stops at the first state the rival added."""
    before_add_call(monkeypatch, 2, lambda block: rival_adds(block[5 * RECORD_SIZE:]))
    report = run_restore(dump_file(tmp_path, records(30)), tmp_path, chunk_size=10)
    assert (report["restored"], report["appeared_during_restore"]) == (25, 5)
    assert table_size() == 30


def test_a_conflict_in_the_middle_of_a_chunk_is_still_ours(pfemu_kernel, tmp_path, monkeypatch):
    """No rival: the call stops at a colliding state; the records before it are this restore's."""
    block = bytearray(records(30))
    clash = bytearray(block[13 * RECORD_SIZE:14 * RECORD_SIZE])
    clash[0:8] = b"\x7f" * 8                      # another id, the same connection
    rival_adds(bytes(clash))
    report = run_restore(dump_file(tmp_path, bytes(block)), tmp_path, chunk_size=10)
    assert (report["restored"], report["rejected"], report["appeared_during_restore"]) == (29, 1, 0)
    assert report["rejected_states"][0]["record"] == 14


# --- C1: a backward step of the wall clock --------------------------------------------------------


def test_a_backward_clock_step_does_not_delay_the_watchdog(pfemu_kernel, tmp_path, monkeypatch):
    """The clock is an hour fast when the lock is taken and ntpd steps it back: the 1 s lease still ends after 1 s."""
    lease_file = str(tmp_path / "lease")
    real_time, armed = time.time, time.monotonic()
    monkeypatch.setattr(time, "time", lambda: real_time() + (3600 if time.monotonic() < armed + 0.2 else 0))
    arm_lease(lease_file, 1)
    time.sleep(0.3)
    view = lease_view(lease_file)
    assert view["locked_by_lease"] is True and view["remaining_seconds"] <= 1
    deadline = armed + 6
    while time.monotonic() < deadline and read_lease(lease_file)["state"] == HELD:
        time.sleep(0.1)
    assert read_lease(lease_file)["state"] == EXPIRED, "the watchdog must unlock 1 s after arming, not an hour later"


# --- D8: lease and restore lock files in a directory others can write to ---------------------------


@pytest.fixture
def shared_dir(tmp_path):
    """A world-writable sticky directory like /tmp."""
    path = tmp_path / "shared"
    path.mkdir()
    os.chmod(str(path), 0o1777)
    return path


def test_a_planted_symlink_as_lease_file_is_refused(pfemu_kernel, shared_dir):
    target = shared_dir.parent / "passwd"
    target.write_text("root:x:0:0\n")
    lease_file = shared_dir / "netbsd_pf_lock.lease"
    os.symlink(str(target), str(lease_file))
    with pytest.raises(LeaseError, match=r"lease file %s: it is a symbolic link" % lease_file):
        arm_lease(str(lease_file), 60)
    with pytest.raises(operations.OperationError, match="symbolic link"):
        operations.lock_table("/dev/pf", 60, str(lease_file))
    assert target.read_text() == "root:x:0:0\n" and pfemu_kernel.lock is False
    assert lease_view(str(lease_file))["state"] == "unreadable"


def test_a_planted_symlink_as_restore_lock_is_refused(pfemu_kernel, tmp_path, shared_dir):
    target = tmp_path / "victim"
    target.write_text("keep\n")
    lock_file = shared_dir / "netbsd_pf_restore.lock"
    os.symlink(str(target), str(lock_file))
    with pytest.raises(RestoreError, match=r"restore lock file %s: it is a symbolic link" % lock_file):
        run_restore(dump_file(tmp_path, records(3)), tmp_path, restore_lock_file=str(lock_file))
    assert target.read_text() == "keep\n" and table_size() == 0


def test_a_hard_link_as_lease_file_is_refused(pfemu_kernel, tmp_path):
    target = tmp_path / "victim"
    target.write_text("keep\n")
    os.link(str(target), str(tmp_path / "lease"))
    with pytest.raises(LeaseError, match="2 hard links"):
        arm_lease(str(tmp_path / "lease"), 60)
    assert target.read_text() == "keep\n"


def test_a_fifo_as_lease_file_is_refused_without_hanging(pfemu_kernel, tmp_path):
    os.mkfifo(str(tmp_path / "lease"))
    with pytest.raises(LeaseError, match="not a regular file"):
        arm_lease(str(tmp_path / "lease"), 60)
    assert lease_view(str(tmp_path / "lease"))["state"] == "unreadable"


def test_a_world_writable_directory_without_sticky_bit_is_refused(pfemu_kernel, tmp_path):
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    os.chmod(str(open_dir), 0o777)
    with pytest.raises(LeaseError, match=r"directory %s can be written by other users and is not sticky" % open_dir):
        arm_lease(str(open_dir / "lease"), 60)
    assert os.listdir(str(open_dir)) == []


def test_a_new_lease_file_in_a_sticky_directory_is_created_private(pfemu_kernel, shared_dir, cleanup_leases):
    lease_file = str(shared_dir / "lease")
    cleanup_leases.append(lease_file)
    arm_lease(lease_file, 60)
    info = os.lstat(lease_file)
    assert stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == os.geteuid()


@pytest.mark.skipif(os.geteuid() != 0, reason="planting a file of another user needs root")
def test_someone_elses_file_in_a_sticky_directory_is_refused(pfemu_kernel, shared_dir):
    lease_file = shared_dir / "lease"
    lease_file.write_text("{}")
    os.chown(str(lease_file), 65534, 65534)
    with pytest.raises(LeaseError, match="belongs to uid 65534"):
        arm_lease(str(lease_file), 60)
    assert lease_file.read_text() == "{}"
