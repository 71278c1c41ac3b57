"""Fault-injection matrix: every failure gives a clear message, exact counts, nothing lost silently.

Each test is one row of the table in docs/reliability.md.  The emulated kernel
(pfemu_kernel) fails requests on demand (inject_fault), grows between the size query
and the fetch, enforces the state limit and securelevel; writes are failed by patching
the writer's file object and os.fsync.  The SIGKILL and lost-controller rows need
separate processes: tests/integration/run-reliability.sh.
"""

import errno
import os
import struct
import sys
import threading

import pytest

from ansible_collections.netbsd.pf.plugins.module_utils import abi, operations, restore as restore_mod
from ansible_collections.netbsd.pf.plugins.module_utils.flush import Selection, flush_states
from ansible_collections.netbsd.pf.plugins.module_utils.formats import PFS_BINARY, open_dump, write_dump
from ansible_collections.netbsd.pf.plugins.module_utils.lease import read_lease
from ansible_collections.netbsd.pf.plugins.module_utils.operations import OperationError
from ansible_collections.netbsd.pf.plugins.module_utils.pfdev import PfDevice, PfError
from ansible_collections.netbsd.pf.plugins.module_utils.records import OFF_CREATORID, OFF_EXPIRE
from ansible_collections.netbsd.pf.plugins.module_utils.restore import BUCKETS, RestoreError, restore_file
from ansible_collections.netbsd.pf.tests.pfemu.generate import generate_records
from ansible_collections.netbsd.pf.tests.pfemu.kernel import Kernel

RECORD_SIZE = 240
ORDER = sys.byteorder
U32 = struct.Struct(("<" if ORDER == "little" else ">") + "I")
NOW = 1700000000


def records(count, seed, first_stateid):
    """``count`` generated states that load into an empty table, none expired (age none keeps them all)."""
    block = bytearray(generate_records(count, seed=seed, byte_order=ORDER, now=NOW, first_stateid=first_stateid))
    for offset in range(0, len(block), RECORD_SIZE):
        if U32.unpack_from(block, offset + OFF_EXPIRE)[0] == 0:
            U32.pack_into(block, offset + OFF_EXPIRE, 60)    # a remaining lifetime: no state is dropped as expired
    return bytes(block)


def dump_file(tmp_path, block, name="dump.bin"):
    path = str(tmp_path / name)
    write_dump(path, PFS_BINARY, [block], ORDER, count=len(block) // RECORD_SIZE)
    return path


def ids(block):
    """(id, creatorid) of every record: what identifies a state."""
    return [bytes(block[o:o + 8]) + bytes(block[o + OFF_CREATORID:o + OFF_CREATORID + 4])
            for o in range(0, len(block), RECORD_SIZE)]


def table():
    with PfDevice() as device:
        return bytes(device.get_states())


def run_restore(path, tmp_path, **options):
    options.setdefault("lease_file", str(tmp_path / "lease"))
    options.setdefault("age", "none")
    return restore_file(path, **options)


def assert_accounted(report, total):
    assert report["total"] == total
    assert sum(report[bucket] for bucket in BUCKETS) == total, report


def race_after_plan(monkeypatch, action):
    """Run ``action`` after the restore planned its adds and before it sends them (someone else acts)."""
    real_plan = restore_mod.plan_restore

    def plan_then_act(*args, **kwargs):
        plan = real_plan(*args, **kwargs)
        action()
        return plan

    monkeypatch.setattr(restore_mod, "plan_restore", plan_then_act)


def assert_unlocked_and_released(kernel, tmp_path):
    assert kernel.lock is False
    lease = read_lease(str(tmp_path / "lease"))
    assert lease is None or lease["state"] == "released"


# --- restore ------------------------------------------------------------------------------


def test_enomem_at_state_limit_in_the_middle_of_a_restore(pfemu_kernel, tmp_path, monkeypatch):
    """The limit is reached mid-restore because the table grew after the plan: the rest is rejected, counted."""
    pfemu_kernel.state_limit = 100
    block = records(80, seed=1, first_stateid=1 << 40)
    race_after_plan(monkeypatch, lambda: pfemu_kernel.fill(50, seed=2))    # room drops from 100 to 50
    # purge_wait 0: the fill leaves expired states that a real kernel's purge would free (row F11 waits for them).
    report = run_restore(dump_file(tmp_path, block), tmp_path, chunk_size=16, purge_wait=0)
    assert_accounted(report, 80)
    assert (report["restored"], report["rejected"]) == (50, 30)
    assert report["rejected_by_reason"] == {"state limit": 30}
    assert all("state limit of 100" in item["reason"] for item in report["rejected_states"])
    live = set(ids(table()))
    wanted = ids(block)
    assert [state in live for state in wanted] == [True] * 50 + [False] * 30    # the first 50 in order, no others
    assert pfemu_kernel.states == 100 and report["states_after"] == 100
    assert_unlocked_and_released(pfemu_kernel, tmp_path)


@pytest.mark.parametrize("position", range(5))
def test_identical_duplicate_in_every_chunk_position(pfemu_kernel, tmp_path, monkeypatch, position):
    """An identical copy of record ``position`` of every 5-record chunk appears after the plan (pfsync, a second restore)."""
    block = records(15, seed=3, first_stateid=1 << 40)
    duplicates = [n for n in range(15) if n % 5 == position]

    def add_duplicates():
        with PfDevice(writable=True) as device:
            for n in duplicates:
                device.add_states(block[n * RECORD_SIZE:(n + 1) * RECORD_SIZE])

    race_after_plan(monkeypatch, add_duplicates)
    report = run_restore(dump_file(tmp_path, block), tmp_path, chunk_size=5)
    assert_accounted(report, 15)
    assert sorted(ids(table())) == sorted(ids(block))          # every state there exactly once
    assert (report["restored"], report["already_present"], report["rejected"]) == (12, 3, 0)
    assert report["appeared_during_restore"] == len(duplicates)
    assert_unlocked_and_released(pfemu_kernel, tmp_path)


def test_efault_on_an_add_stops_with_exact_counts(pfemu_kernel, tmp_path):
    block = records(30, seed=4, first_stateid=1 << 40)
    pfemu_kernel.inject_fault("DIOCADDSTATES", 3, errno.EFAULT)
    with pytest.raises(RestoreError, match=r"DIOCADDSTATES failed: .*EFAULT.*20 states were restored") as info:
        run_restore(dump_file(tmp_path, block), tmp_path, chunk_size=10)
    assert info.value.report["restored"] == 20
    assert sorted(ids(table())) == sorted(ids(block[:20 * RECORD_SIZE]))
    assert_unlocked_and_released(pfemu_kernel, tmp_path)


def test_efault_on_the_fetch_writes_nothing(pfemu_kernel, tmp_path):
    pfemu_kernel.fill(20, seed=5)
    pfemu_kernel.inject_fault("DIOCGETSTATES", 2, errno.EFAULT)     # the fetch after the size query
    path = str(tmp_path / "dump")
    with pytest.raises(PfError, match="EFAULT") as info:
        operations.dump_states(path, lease_file=str(tmp_path / "lease"))
    assert info.value.request == "DIOCGETSTATES"
    assert os.listdir(str(tmp_path)) == ["lease"]
    assert_unlocked_and_released(pfemu_kernel, tmp_path)


def test_eacces_on_a_read_only_descriptor(pfemu_kernel):
    with PfDevice() as device:
        with pytest.raises(PfError, match="EACCES") as info:
            device.add_states(records(1, seed=6, first_stateid=1 << 40))
    assert "writ" in str(info.value) and pfemu_kernel.states == 0


def test_eperm_at_securelevel_2_refuses_flush_only(pfemu_kernel, tmp_path):
    """NetBSD allows DIOCADDSTATES and DIOCSETLCK at securelevel 2; flushing is refused with EPERM."""
    pfemu_kernel.fill(5, seed=8)
    pfemu_kernel.set_securelevel(2)
    with PfDevice(writable=True) as device:
        with pytest.raises(PfError, match="EPERM") as info:
            flush_states(device, Selection(all_states=True))
    assert info.value.errno == errno.EPERM and "securelevel" in str(info.value)
    assert pfemu_kernel.states == 5
    path = str(tmp_path / "dump")
    assert operations.dump_states(path, lease_file=str(tmp_path / "lease"))["count"] == 5
    pfemu_kernel.set_securelevel(0)
    with PfDevice(writable=True) as device:
        flush_states(device, Selection(all_states=True))
    pfemu_kernel.set_securelevel(2)
    report = run_restore(path, tmp_path)
    assert report["restored"] == 5 and pfemu_kernel.linked_states == 5
    assert_unlocked_and_released(pfemu_kernel, tmp_path)


@pytest.mark.parametrize("kernel_abi, client_abi", [("ilp32-le", abi.LP64_LE), ("lp64-le", abi.ILP32_LE),
                                                    ("ilp32-be", abi.LP64_BE)])
def test_enodev_word_size_mismatch(pfemu_syscalls, kernel_abi, client_abi):
    kernel = Kernel(abi=kernel_abi, seed=1)
    kernel.fill(3, seed=9)
    with PfDevice(abi=client_abi, syscalls=pfemu_syscalls(kernel), writable=True) as device:
        with pytest.raises(PfError) as info:
            device.get_states()
    assert info.value.errno == errno.ENODEV and "word size" in str(info.value)
    assert kernel.states == 3


@pytest.mark.parametrize("growth", [10, 500, 3000])
def test_table_growing_between_size_query_and_fetch(pfemu_kernel, tmp_path, growth):
    """Within the headroom, and beyond it (the reply fills the buffer, the client retries bigger)."""
    pfemu_kernel.state_limit = 10000
    pfemu_kernel.fill(1000, seed=10)
    pfemu_kernel.grow_before_next_fetch(growth)
    path = str(tmp_path / "dump")
    result = operations.dump_states(path, fmt="pfs_binary", lease_file=str(tmp_path / "lease"))
    assert result["count"] == 1000 + growth == pfemu_kernel.states
    with open_dump(path) as reader:
        assert sorted(ids(b"".join(reader.blocks()))) == sorted(ids(pfemu_kernel.export_all()))


# --- writing the dump ---------------------------------------------------------------------


class _FailingFile(object):
    """A file object that fails with ``error`` once more than ``budget`` bytes were written."""

    def __init__(self, real, budget, error):
        self._real = real
        self._budget = budget
        self._error = error

    def write(self, data):
        self._budget -= len(data)
        if self._budget < 0:
            raise OSError(self._error, os.strerror(self._error))
        return self._real.write(data)

    def __getattr__(self, name):
        return getattr(self._real, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return self._real.__exit__(*exc_info)


@pytest.mark.parametrize("fmt", ["native", "pfs_binary", "pfs_text"])
@pytest.mark.parametrize("error, where", [(errno.ENOSPC, "write"), (errno.EIO, "write"), (errno.EIO, "fsync"),
                                          (errno.ENOSPC, "fsync")])
def test_write_failure_keeps_the_old_dump_and_leaves_no_temp_file(pfemu_kernel, tmp_path, monkeypatch, fmt, error, where):
    pfemu_kernel.fill(300, seed=11)
    path = str(tmp_path / "dump")
    lease_file = str(tmp_path / "lease")
    with open(path, "wb") as old:
        old.write(b"the previous dump")
    if where == "write":
        real_fdopen = os.fdopen
        monkeypatch.setattr(os, "fdopen", lambda *a, **k: _FailingFile(real_fdopen(*a, **k), 4096, error))
    else:
        real_fsync = os.fsync

        def failing_fsync(fd):
            if ".tmp" in os.readlink("/proc/self/fd/%d" % fd):     # the dump's temp file, not the lease file
                raise OSError(error, os.strerror(error))
            return real_fsync(fd)
        monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OperationError) as info:
        operations.dump_states(path, fmt=fmt, lease_file=lease_file)
    message = str(info.value)
    assert os.strerror(error) in message and "previous file (if any) is unchanged" in message
    with open(path, "rb") as old:
        assert old.read() == b"the previous dump"
    assert sorted(os.listdir(str(tmp_path))) == ["dump", "lease"]
    assert_unlocked_and_released(pfemu_kernel, tmp_path)


# --- concurrency --------------------------------------------------------------------------


def test_two_restores_at_once(pfemu_kernel, tmp_path, monkeypatch):
    """The second restore waits for the first (or gives up with a clear message); nothing is added twice."""
    block = records(40, seed=12, first_stateid=1 << 40)
    path = dump_file(tmp_path, block)
    inside, proceed = threading.Event(), threading.Event()
    real_add = restore_mod.Restorer.add

    def slow_add(self):
        inside.set()
        proceed.wait(10)
        return real_add(self)

    monkeypatch.setattr(restore_mod.Restorer, "add", slow_add)
    reports = {}
    first = threading.Thread(target=lambda: reports.setdefault("first", run_restore(path, tmp_path)))
    first.start()
    assert inside.wait(10)
    with pytest.raises(RestoreError, match=r"another restore \(pid %d\) is running" % os.getpid()):
        run_restore(path, tmp_path, restore_lock_timeout=0)
    monkeypatch.setattr(restore_mod.Restorer, "add", real_add)
    second = threading.Thread(target=lambda: reports.setdefault("second", run_restore(path, tmp_path,
                                                                                      restore_lock_timeout=20)))
    second.start()
    proceed.set()
    first.join(20)
    second.join(20)
    assert reports["first"]["restored"] == 40
    assert (reports["second"]["restored"], reports["second"]["already_present"]) == (0, 40)
    assert sorted(ids(table())) == sorted(ids(block))
    assert_unlocked_and_released(pfemu_kernel, tmp_path)
