"""netbsd.pf.states_dump through its main(), against the in-process pf emulator."""

import errno
import json
import os
import time
from functools import partial

import pytest

from ansible_collections.netbsd.pf.plugins.module_utils import formats
from ansible_collections.netbsd.pf.plugins.module_utils import operations as states_dump_operations
from ansible_collections.netbsd.pf.plugins.module_utils.formats import open_dump
from ansible_collections.netbsd.pf.plugins.module_utils.lease import read_lease, release_lease
from ansible_collections.netbsd.pf.plugins.modules import states_dump
from ansible_collections.netbsd.pf.tests.unit.plugins.modules.module_runner import run_module


run = partial(run_module, states_dump.main)


@pytest.fixture
def kernel(pfemu_kernel):
    pfemu_kernel.fill(300, seed=7)
    return pfemu_kernel


@pytest.fixture
def lock_trace(kernel, monkeypatch):
    """(request name, lock flag) of every ioctl the kernel sees."""
    trace = []
    names = dict((number, name) for name, number in kernel.layout.numbers.items())
    real = kernel.ioctl

    def traced(handle, request, arg, memory):
        try:
            return real(handle, request, arg, memory)
        finally:
            trace.append((names.get(request), kernel.lock))
    monkeypatch.setattr(kernel, "ioctl", traced)
    return trace


def records(path):
    with open_dump(path) as reader:
        return b"".join(bytes(block) for block in reader.blocks()), reader


@pytest.mark.parametrize("fmt,expected", [("native", "native"), ("pfs_binary", "pfs-binary"), ("pfs-text", "pfs-text")])
def test_dump_each_format_and_read_it_back(kernel, tmp_path, capsys, fmt, expected):
    path = str(tmp_path / "states.dump")
    result = run(capsys, tmp_path, path=path, format=fmt)
    assert result["changed"] is True and result["count"] == 300 == result["read"]
    block, reader = records(path)
    assert reader.format == expected
    if fmt == "pfs-text":
        assert len(block) == 300 * 240    # the text form does not carry every field (rule numbers, counters)
    else:
        assert block == bytes(kernel.export_all())
    assert result["sha256"] == formats._file_digest(open(path, "rb"))[1]
    assert result["bytes"] == os.path.getsize(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert sum(result["by_protocol"].values()) == 300 == sum(result["by_interface"].values())


def test_native_header_carries_capture_metadata(kernel, tmp_path, capsys):
    before = time.time()
    result = run(capsys, tmp_path, path=str(tmp_path / "d.pfstate"))
    meta = result["header"]["metadata"]
    assert before - 1 <= meta["captured_at"] <= time.time()
    assert meta["hostid"] == "%08x" % kernel.hostid
    assert meta["release"] == os.uname().release and meta["machine"] == os.uname().machine
    assert meta["hostname"] and meta["captured_at_utc"].endswith("Z")
    assert result["header"]["compression"] == "zlib"
    assert run(capsys, tmp_path, path=str(tmp_path / "raw.pfstate"), compress=False)["header"]["compression"] == "none"


@pytest.mark.parametrize("fmt", ["native", "pfs_binary", "pfs_text"])
def test_same_content_is_not_rewritten(kernel, tmp_path, capsys, fmt):
    path = str(tmp_path / "d.pfstate")
    first = run(capsys, tmp_path, path=path, format=fmt)
    mtime = os.stat(path).st_mtime_ns
    second = run(capsys, tmp_path, path=path, format=fmt)
    assert second["changed"] is False and second["sha256"] == first["sha256"]
    assert second["content_sha256"] == first["content_sha256"] and second["bytes"] == first["bytes"]
    assert os.stat(path).st_mtime_ns == mtime
    assert sorted(os.listdir(str(tmp_path))) == ["d.pfstate", "lease"], "the unused temp file must be gone"
    kernel.fill(1, seed=99)
    third = run(capsys, tmp_path, path=path, format=fmt)
    assert third["changed"] is True and third["sha256"] == formats._file_digest(open(path, "rb"))[1]


def test_unchanged_native_dump_is_judged_by_the_header_without_writing(kernel, tmp_path, capsys, monkeypatch):
    path = str(tmp_path / "d.pfstate")
    first = run(capsys, tmp_path, path=path)

    def must_not_write(*args, **kwargs):
        raise AssertionError("an unchanged native dump must not be compressed or written again")
    monkeypatch.setattr(states_dump_operations, "stage_dump", must_not_write)
    second = run(capsys, tmp_path, path=path)
    assert second["changed"] is False and second["sha256"] == first["sha256"]
    assert second["header"] == first["header"]


def test_native_with_a_damaged_header_is_rewritten(kernel, tmp_path, capsys):
    path = str(tmp_path / "d.pfstate")
    run(capsys, tmp_path, path=path)
    with open(path, "r+b") as handle:
        handle.seek(40)         # inside the records' SHA-256: the header CRC no longer matches
        handle.write(b"\xff")
    again = run(capsys, tmp_path, path=path)
    assert again["changed"] is True
    with open_dump(path) as reader:
        assert reader.verify() == 300


def test_check_mode_reports_but_touches_nothing(kernel, tmp_path, capsys, lock_trace):
    path = str(tmp_path / "d.pfstate")
    result = run(capsys, tmp_path, check_mode=True, path=path, lock="hold")
    assert result["changed"] is True and result["count"] == 300
    assert not os.path.exists(path) and os.listdir(str(tmp_path)) == []
    assert all(name != "DIOCSETLCK" for name, _locked in lock_trace)


def test_lock_during_covers_only_the_copy(kernel, tmp_path, capsys, lock_trace):
    result = run(capsys, tmp_path, path=str(tmp_path / "d.pfstate"))
    fetches = [locked for name, locked in lock_trace if name == "DIOCGETSTATES"]
    assert fetches == [False, True], "size query (and allocation) before the lock, then one locked copy"
    assert [name for name, _locked in lock_trace].count("DIOCSETLCK") == 2
    assert kernel.lock is False
    assert result["lock"] == {"mode": "during", "taken": True}
    assert result["lock_window_ms"] > 0
    assert read_lease(str(tmp_path / "lease"))["state"] == "released"


def test_lock_none_never_locks(kernel, tmp_path, capsys, lock_trace):
    result = run(capsys, tmp_path, path=str(tmp_path / "d.pfstate"), lock="none")
    assert "DIOCSETLCK" not in [name for name, _locked in lock_trace]
    assert result["lock_window_ms"] is None and not os.path.exists(str(tmp_path / "lease"))


def test_lock_hold_stays_locked_under_a_lease_and_runs_the_command(kernel, tmp_path, capsys):
    marker = tmp_path / "ran"
    result = run(capsys, tmp_path, path=str(tmp_path / "d.pfstate"), lock="hold", lease=600,
                 run_after=["/bin/sh", "-c", "touch %s" % marker])
    assert kernel.lock is True
    assert result["lock"]["locked_by_lease"] is True and result["lock"]["seconds"] == 600
    assert result["lock_window_ms"] >= 0 and result["run_after_pid"] > 0
    deadline = time.time() + 5
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists()
    release_lease(str(tmp_path / "lease"))


def test_run_after_needs_hold(kernel, tmp_path, capsys):
    result = run(capsys, tmp_path, path=str(tmp_path / "d.pfstate"), run_after=["/bin/true"])
    assert result["failed"] is True and "lock=hold" in result["msg"]
    assert kernel.lock is False


def test_failed_write_keeps_the_old_file_and_unlocks(kernel, tmp_path, capsys, monkeypatch):
    path = str(tmp_path / "d.pfstate")
    run(capsys, tmp_path, path=path)
    old = open(path, "rb").read()
    kernel.fill(5, seed=42)

    real_fsync = os.fsync

    def no_space_for_dumps(fd):
        if os.readlink("/proc/self/fd/%d" % fd).endswith(".tmp"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)
    monkeypatch.setattr(os, "fsync", no_space_for_dumps)
    result = run(capsys, tmp_path, path=path, lock="hold")
    assert result["failed"] is True and "No space left" in result["msg"] and "unchanged" in result["msg"]
    assert open(path, "rb").read() == old
    assert sorted(os.listdir(str(tmp_path))) == ["d.pfstate", "lease"], "no temp file may be left"
    assert kernel.lock is False, "a failed hold dump must not leave the table locked"


def test_missing_directory_is_a_clean_failure(kernel, tmp_path, capsys):
    result = run(capsys, tmp_path, path=str(tmp_path / "nope" / "d.pfstate"))
    assert result["failed"] is True and "does not exist" in result["msg"]
    assert "Traceback" not in json.dumps(result)


def test_filters_rename_and_backup(kernel, tmp_path, capsys):
    path = str(tmp_path / "d.pfstate")
    everything = run(capsys, tmp_path, path=path)
    tcp = everything["by_protocol"]["tcp"]
    result = run(capsys, tmp_path, path=path, backup=True, filters={"protocols": ["tcp"]}, rename={"all": "wm9"})
    assert result["count"] == tcp and result["filtered"] == 300 - tcp
    assert set(result["by_protocol"]) == {"tcp"} and "all" not in result["by_interface"]
    assert os.path.exists(result["backup_file"])
    assert open(result["backup_file"], "rb").read()[:8] == b"\x89PFSTAT\n"


def test_bad_filter_is_reported(kernel, tmp_path, capsys):
    result = run(capsys, tmp_path, path=str(tmp_path / "d"), filters={"protocols": ["nosuchproto"]})
    assert result["failed"] is True and "filters.protocols" in result["msg"]


def test_mode_is_applied(kernel, tmp_path, capsys):
    path = str(tmp_path / "d.pfstate")
    run(capsys, tmp_path, path=path, mode="0640")
    assert os.stat(path).st_mode & 0o777 == 0o640
