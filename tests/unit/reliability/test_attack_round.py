"""Attack round of 2026-12-03 (evening): the rows of docs/reliability.md, "Attack round (2026-12-03 evening)".

Each test here failed on the code before its fix; the attacks that found nothing are listed
in that section with the test that holds them.
"""

import errno
import json
import os
import signal
import socket
import stat
import struct
import subprocess
import sys
import textwrap
import time
import tracemalloc
import zlib

import pytest

from ansible_collections.netbsd.pf.plugins.module_utils import formats, lease as lease_mod, native, operations, pfstate_cli
from ansible_collections.netbsd.pf.plugins.module_utils.formats import NATIVE, PFS_BINARY, PFS_TEXT, open_dump, write_dump
from ansible_collections.netbsd.pf.plugins.module_utils.pfdev import PfDevice
from ansible_collections.netbsd.pf.plugins.module_utils.npf_native import write_npf_file
from ansible_collections.netbsd.pf.plugins.module_utils.npf_restore import NpfRestoreError, execute_plan, plan_restore
from ansible_collections.netbsd.pf.plugins.module_utils.npf_snapshot import NpfSnapshot
from ansible_collections.netbsd.pf.plugins.module_utils.pfs_text import TextFormatError
from ansible_collections.netbsd.pf.plugins.module_utils.pushed import PUSHED_NAME
from ansible_collections.netbsd.pf.plugins.modules import states_dump, states_info, states_restore
from ansible_collections.netbsd.pf.tests.pfemu.generate import generate_records
from ansible_collections.netbsd.pf.tests.unit.plugins.module_utils.test_npf_restore import (  # pylint: disable=unused-import
    boot_with_config, conn as npf_conn, host as npf_host, save,
)
from ansible_collections.netbsd.pf.tests.unit.plugins.module_utils.test_npf_snapshot import record as npf_record
from ansible_collections.netbsd.pf.tests.unit.plugins.modules.module_runner import run_module
from ansible_collections.netbsd.pf.tests.unit.reliability.test_concurrency import (
    before_add_call, records as concurrency_records, run_restore as concurrency_restore,
)
from ansible_collections.netbsd.pf.tests.unit.reliability.test_matrix import dump_file, records as matrix_records

ORDER = sys.byteorder


# --- A1: a native dump damaged behind an intact header ---------------------------------------

@pytest.mark.parametrize("compress", [True, False])
def test_a_damaged_native_dump_is_rewritten_not_kept(pfemu_kernel, tmp_path, compress):
    path = str(tmp_path / "states.pfstate")
    lease = str(tmp_path / "lease")
    pfemu_kernel.fill(200, seed=3)
    operations.dump_states(path, compress=compress, lease_file=lease)
    damaged = bytearray(open(path, "rb").read())
    damaged[-10] ^= 0xff            # bit rot in the last record; header (CRC, SHA-256, sizes) intact
    with open(path, "wb") as handle:
        handle.write(bytes(damaged))

    result = operations.dump_states(path, compress=compress, lease_file=lease)

    assert result["changed"] is True
    with open_dump(path) as reader:
        assert reader.verify() == 200
    assert result["sha256"] == operations.file_sha256(path)[1]


def test_an_intact_native_dump_of_the_same_table_is_still_unchanged(pfemu_kernel, tmp_path):
    path = str(tmp_path / "states.pfstate")
    lease = str(tmp_path / "lease")
    pfemu_kernel.fill(50, seed=3)
    first = operations.dump_states(path, lease_file=lease)
    again = operations.dump_states(path, lease_file=lease)
    assert (first["changed"], again["changed"]) == (True, False)
    assert again["sha256"] == first["sha256"]


# --- A2: pfs text without line ends (CR-only, one endless line) ------------------------------

def _cr_only_text(path, count):
    write_dump(path, PFS_TEXT, [generate_records(count, seed=5, byte_order=ORDER)], ORDER)
    with open(path, "rb") as handle:
        data = handle.read()
    with open(path, "wb") as handle:
        handle.write(data.replace(b"\n", b"\r"))
    return len(data)


def test_a_pfs_text_file_without_line_ends_is_refused_in_bounded_memory(tmp_path):
    path = str(tmp_path / "cr-only.txt")
    size = _cr_only_text(path, 30000)               # about 8 MB, not one "\n"
    assert size > 6 << 20
    tracemalloc.start()
    try:
        with pytest.raises(TextFormatError) as caught:
            with open_dump(path) as reader:
                reader.verify()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "no line end" in str(caught.value) and "byte 0" in str(caught.value), caught.value
    assert peak < 4 << 20, peak


def test_pfstate_show_refuses_an_endless_line_in_one_line(tmp_path, capsys):
    path = str(tmp_path / "endless.txt")
    with open(path, "wb") as handle:
        handle.write(b"state in on wm0 proto tcp" + b" " * (3 << 20))
    assert pfstate_cli.main(["show", path]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and path in err and "no line end" in err and "Traceback" not in err, err


def test_a_short_cr_only_file_still_reads(tmp_path):
    path = str(tmp_path / "short.txt")
    _cr_only_text(path, 20)
    with open_dump(path, PFS_TEXT) as reader:
        assert reader.verify() == 20


# --- A3: a lease file edited by hand -----------------------------------------------------------

HAND_EDITED_LEASES = {
    "deadline-text": {"token": "t", "state": "held", "deadline": "tomorrow", "watchdog_pid": None},
    "pid-text": {"token": "t", "state": "held", "deadline": 4e9, "watchdog_pid": "abc", "deadline_monotonic": 5},
    "pid-huge": {"token": "t", "state": "held", "deadline": 1.0, "watchdog_pid": 2 ** 70},
    "pid-minus-one": {"token": "t", "state": "held", "deadline": 1.0, "watchdog_pid": -1},
    "pid-true": {"token": "t", "state": "held", "deadline": 1.0, "watchdog_pid": True},
    "token-list": {"token": ["t"], "state": "held", "deadline": None},
    "state-list": {"token": "t", "state": ["held"], "deadline": 4e9},
}


def _plant_lease(tmp_path, case):
    path = str(tmp_path / "lease")
    with open(path, "w") as handle:
        json.dump(HAND_EDITED_LEASES[case], handle)
    os.chmod(path, 0o600)
    return path


@pytest.mark.parametrize("case", sorted(HAND_EDITED_LEASES))
def test_states_info_reads_a_hand_edited_lease_as_no_lease(pfemu_kernel, tmp_path, capsys, case):
    lease = _plant_lease(tmp_path, case)
    result = run_module(states_info.main, capsys, tmp_path, lease_file=lease)
    assert not result.get("failed"), result
    assert result["lock"]["state"] == "invalid" and result["lock"]["locked_by_lease"] is None, result["lock"]
    assert "not a valid lease" in result["lock"]["message"]


@pytest.mark.parametrize("case", sorted(HAND_EDITED_LEASES))
def test_dump_and_unlock_work_over_a_hand_edited_lease(pfemu_kernel, tmp_path, capsys, case):
    lease = _plant_lease(tmp_path, case)
    pfemu_kernel.fill(5, seed=1)
    result = run_module(states_dump.main, capsys, tmp_path, path=str(tmp_path / "d.pfstate"), lease_file=lease, lease=5)
    assert not result.get("failed") and result["count"] == 5, result
    assert not pfemu_kernel.lock
    _plant_lease(tmp_path, case)
    with PfDevice(writable=True) as device:
        device.set_lock(True)
    assert pfstate_cli.main(["unlock", "--lease-file", lease]) == 0
    assert "Traceback" not in capsys.readouterr().err
    assert not pfemu_kernel.lock


def test_process_alive_never_signals_a_process_group():
    assert lease_mod.process_alive(-1) is False
    assert lease_mod.process_alive(0) is False
    assert lease_mod.process_alive(True) is False
    assert lease_mod.process_alive("1") is False
    assert lease_mod.process_alive(os.getpid()) is True


def _default_signals():
    """The child starts with the default signal actions, whatever the test run inherited (nohup ignores SIGHUP)."""
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, signal.SIG_DFL)


# --- A4: SIGTERM / SIGHUP to a dump that holds the lock (lock: hold) ---------------------------

_HOLD_DUMP_KILLED = textwrap.dedent("""
    import os, signal, sys
    from _pytest.monkeypatch import MonkeyPatch
    from ansible_collections.netbsd.pf.plugins.module_utils import operations
    from ansible_collections.netbsd.pf.plugins.module_utils.pfdev import PfDevice
    from ansible_collections.netbsd.pf.tests.pfemu.inprocess import PfDeviceRouter
    from ansible_collections.netbsd.pf.tests.pfemu.kernel import Kernel
    from ansible_collections.netbsd.pf.tests.pfemu.structs import host_abi

    path, lease, signum = sys.argv[1], sys.argv[2], int(sys.argv[3])
    router = PfDeviceRouter(Kernel(abi=host_abi(), seed=1))
    router.install(MonkeyPatch())
    router.kernel.fill(300, seed=2)
    real_stage = operations.stage_dump

    def stage_dump(*args, **kwargs):
        print("locked while writing: %s" % router.kernel.lock, flush=True)
        os.kill(os.getpid(), signum)      # the signal arrives while the dump is written, table locked
        return real_stage(*args, **kwargs)

    real_set_lock = PfDevice.set_lock

    def set_lock(self, lock):
        real_set_lock(self, lock)
        print("kernel lock now: %s" % router.kernel.lock, flush=True)

    operations.stage_dump = stage_dump
    PfDevice.set_lock = set_lock
    operations.dump_states(path, lock="hold", lease=30, lease_file=lease)
""")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_during_a_hold_dump_unlocks_and_still_ends_the_process(tmp_path, signum):
    path = str(tmp_path / "states.pfstate")
    lease = str(tmp_path / "lease")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    child = subprocess.run(preexec_fn=_default_signals, args=[sys.executable, "-c", _HOLD_DUMP_KILLED, path, lease, str(int(signum))], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60, check=False)
    out = child.stdout.decode()
    assert child.returncode == -signum, (child.returncode, out, child.stderr.decode()[-2000:])
    assert out.splitlines() == ["kernel lock now: True", "locked while writing: True", "kernel lock now: False"], out
    assert lease_mod.read_lease(lease)["state"] == lease_mod.RELEASED
    assert sorted(os.listdir(str(tmp_path))) == ["lease"]       # no dump, no staged file


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_the_process_ignores_does_not_stop_a_hold_dump(tmp_path, signum):
    """nohup (SIGHUP ignored), or a parent that ignores SIGTERM: the dump goes on as the process asked."""
    path = str(tmp_path / "states.pfstate")
    lease = str(tmp_path / "lease")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    ignoring = "import signal, sys; signal.signal(int(sys.argv[3]), signal.SIG_IGN)\n" + _HOLD_DUMP_KILLED
    child = subprocess.run(preexec_fn=_default_signals, args=[sys.executable, "-c", ignoring, path, lease, str(int(signum))], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60, check=False)
    out = child.stdout.decode()
    assert child.returncode == 0, (child.returncode, out, child.stderr.decode()[-2000:])
    assert out.splitlines() == ["kernel lock now: True", "locked while writing: True"], out
    assert lease_mod.read_lease(lease)["state"] == lease_mod.HELD
    with open_dump(path) as reader:
        assert reader.count == 300


# --- A5: a device, a FIFO or a socket as the dump's path or convert's dest ----------------------

def _special_file(tmp_path, kind):
    path = str(tmp_path / kind)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(path)
        listener.close()
    else:           # a node of /dev/null's major and minor, as `path: /dev/null` would be
        os.mknod(path, stat.S_IFCHR | 0o666, os.lstat("/dev/null").st_rdev)
    return path, stat.S_IFMT(os.lstat(path).st_mode)


SPECIAL = ["fifo", "socket"] + (["device"] if os.geteuid() == 0 else [])
KIND_NAMES = {"fifo": "a FIFO", "socket": "a socket", "device": "a character device"}


@pytest.mark.parametrize("kind", SPECIAL)
def test_states_dump_never_replaces_a_device_fifo_or_socket(pfemu_kernel, tmp_path, capsys, kind):
    path, file_type = _special_file(tmp_path, kind)
    pfemu_kernel.fill(10, seed=2)
    result = run_module(states_dump.main, capsys, tmp_path, path=path, lock="hold", lease=5)
    assert result.get("failed") and result["msg"].count(path) == 1, result
    assert "%s, not a regular file" % KIND_NAMES[kind] in result["msg"], result["msg"]
    assert stat.S_IFMT(os.lstat(path).st_mode) == file_type
    assert not pfemu_kernel.lock
    assert not [name for name in os.listdir(str(tmp_path)) if name.endswith(".tmp")]


@pytest.mark.parametrize("kind", SPECIAL)
def test_pfstate_convert_never_replaces_a_device_fifo_or_socket(tmp_path, capsys, kind):
    dest, file_type = _special_file(tmp_path, kind)
    src = str(tmp_path / "src.pfs")
    write_dump(src, PFS_BINARY, [generate_records(3, seed=1, byte_order=ORDER)], ORDER, count=3)
    assert pfstate_cli.main(["convert", src, dest]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and KIND_NAMES[kind] in err and "Traceback" not in err, err
    assert stat.S_IFMT(os.lstat(dest).st_mode) == file_type


# --- attacks that held: the tests that hold them -------------------------------------------------

def _native_dump(tmp_path, count=20):
    path = str(tmp_path / "states.pfstate")
    write_dump(path, NATIVE, [generate_records(count, seed=9, byte_order=ORDER)], ORDER, count=count, metadata={})
    return path


def _forge_header_sha(path):
    """Replace the records' SHA-256 in the header and recompute the header CRC: a header that is right on wrong data."""
    with open(path, "rb") as handle:
        data = bytearray(handle.read())
    fields = list(native.PRELUDE.unpack_from(data))
    fields[8] = bytes(32)
    head = native.PRELUDE.pack(*fields)
    meta_len = fields[9]
    crc = zlib.crc32(head[:-4] + bytes(data[native.PRELUDE_SIZE:native.PRELUDE_SIZE + meta_len])) & 0xffffffff
    data[:native.PRELUDE_SIZE] = head[:-4] + struct.pack(">I", crc)
    with open(path, "wb") as handle:
        handle.write(bytes(data))


NATIVE_DAMAGE = {
    "trailing-garbage": (lambda path: open(path, "ab").write(b"garbage"), "trailing garbage"),
    "second-zlib-stream": (lambda path: open(path, "ab").write(zlib.compress(bytes(240))), "trailing garbage"),
    "forged-header-sha": (_forge_header_sha, "SHA-256 of the records does not match"),
}


@pytest.mark.parametrize("case", sorted(NATIVE_DAMAGE))
def test_held_native_damage_is_refused_in_one_line(tmp_path, capsys, case):
    damage, reason = NATIVE_DAMAGE[case]
    path = _native_dump(tmp_path)
    damage(path)
    assert pfstate_cli.main(["show", path]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and path in err and reason in err and "Traceback" not in err, err


_RESTORE_KILLED = textwrap.dedent("""
    import os, sys
    from _pytest.monkeypatch import MonkeyPatch
    from ansible_collections.netbsd.pf.plugins.module_utils import restore
    from ansible_collections.netbsd.pf.plugins.module_utils.pfdev import PfDevice
    from ansible_collections.netbsd.pf.tests.pfemu.inprocess import PfDeviceRouter
    from ansible_collections.netbsd.pf.tests.pfemu.kernel import Kernel
    from ansible_collections.netbsd.pf.tests.pfemu.structs import host_abi

    path, lease, restore_lock, signum = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    router = PfDeviceRouter(Kernel(abi=host_abi(), seed=1))
    router.install(MonkeyPatch())
    real_add, real_set_lock, calls = PfDevice.add_states, PfDevice.set_lock, []

    def add_states(self, block, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signum)
        return real_add(self, block, *args, **kwargs)

    def set_lock(self, lock):
        real_set_lock(self, lock)
        print("kernel lock now: %s" % router.kernel.lock, flush=True)

    PfDevice.add_states, PfDevice.set_lock = add_states, set_lock
    restore.restore_file(path, age="none", chunk_size=10, lease=30, lease_file=lease, restore_lock_file=restore_lock)
""")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_held_a_signal_during_a_restore_unlocks_and_releases_the_lease(tmp_path, private_restore_lock, signum):
    path = str(tmp_path / "dump.bin")
    write_dump(path, PFS_BINARY, [matrix_records(40, 3, first_stateid=1 << 40)], ORDER, count=40)
    lease = str(tmp_path / "lease")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    child = subprocess.run(preexec_fn=_default_signals, args=[sys.executable, "-c", _RESTORE_KILLED, path, lease, private_restore_lock, str(int(signum))],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60, check=False)
    out = child.stdout.decode().splitlines()
    assert child.returncode == -signum, (child.returncode, out, child.stderr.decode()[-2000:])
    assert out[0].startswith("kernel lock now: True") and out[-1].startswith("kernel lock now: False"), out
    assert lease_mod.read_lease(lease)["state"] == lease_mod.RELEASED


_RIVAL_DUMPER = textwrap.dedent("""
    import json, sys
    from _pytest.monkeypatch import MonkeyPatch
    from ansible_collections.netbsd.pf.plugins.module_utils import operations
    from ansible_collections.netbsd.pf.tests.pfemu.inprocess import PfDeviceRouter
    from ansible_collections.netbsd.pf.tests.pfemu.kernel import Kernel
    from ansible_collections.netbsd.pf.tests.pfemu.structs import host_abi

    path, lease, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    router = PfDeviceRouter(Kernel(abi=host_abi(), seed=seed, state_limit=100000))
    router.install(MonkeyPatch())
    router.kernel.fill(30000, seed=seed)
    for _round in range(3):
        result = operations.dump_states(path, fmt="pfs-text", lease_file=lease, summary=False)
        print(json.dumps([result["sha256"], result["count"]]), flush=True)
""")


def test_held_two_dumps_to_the_same_path_at_once_leave_one_intact_file(tmp_path):
    path = str(tmp_path / "states.txt")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    children = [subprocess.Popen([sys.executable, "-c", _RIVAL_DUMPER, path, str(tmp_path / ("lease%d" % seed)),
                                  str(seed)], env=env, stdout=subprocess.PIPE) for seed in (1, 2)]
    written = [[json.loads(line) for line in child.communicate(timeout=120)[0].splitlines()] for child in children]
    assert [child.returncode for child in children] == [0, 0]
    assert [len(results) for results in written] == [3, 3]
    final = operations.file_sha256(path)[1]
    assert final in [sha for results in written for sha, _count in results]
    with open_dump(path) as reader:
        assert reader.verify() == 30000
    assert sorted(os.listdir(str(tmp_path))) == ["lease1", "lease2", "states.txt"]     # no staged file left


# --- A6, A7: option values that passed the argspec ---------------------------------------------

@pytest.mark.parametrize("captured_at", ["1e400", "-1e400", "nan", "inf"])
def test_states_restore_refuses_a_captured_at_that_is_not_a_finite_time(pfemu_kernel, tmp_path, capsys, captured_at):
    path = _native_dump(tmp_path)
    result = run_module(states_restore.main, capsys, tmp_path, path=path, captured_at=captured_at)
    assert result.get("failed") and "captured_at" in result["msg"] and "finite" in result["msg"], result
    assert len(pfemu_kernel.export_all()) == 0


@pytest.mark.parametrize("mode", [-1, 0o10000, "-1", "77777"])
def test_states_dump_refuses_a_mode_that_is_not_a_file_mode(pfemu_kernel, tmp_path, capsys, mode):
    path = str(tmp_path / "d.pfstate")
    pfemu_kernel.fill(5, seed=1)
    result = run_module(states_dump.main, capsys, tmp_path, path=path, mode=mode)
    assert result.get("failed") and "mode" in result["msg"] and "07777" in result["msg"], result
    assert not os.path.exists(path)


@pytest.mark.parametrize("target", ["dangling", "victim"])
def test_held_a_symlink_at_the_dump_path_is_replaced_never_followed(pfemu_kernel, tmp_path, target):
    victim = tmp_path / "victim"
    if target == "victim":
        victim.write_bytes(b"keep")
    path = str(tmp_path / "states.pfstate")
    os.symlink(str(victim), path)
    pfemu_kernel.fill(5, seed=1)
    result = operations.dump_states(path, lease_file=str(tmp_path / "lease"))
    assert result["changed"] and stat.S_ISREG(os.lstat(path).st_mode)
    assert (victim.read_bytes() == b"keep") if target == "victim" else not victim.exists()


# --- A8: the backup copy cannot be made ----------------------------------------------------------

class _FullDisk:
    """A new file on a file system that is full: every write fails with ENOSPC."""

    def __init__(self, handle):
        self.handle = handle

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.handle.close()


@pytest.mark.parametrize("obstacle", ["planted-symlink", "no-space"])
def test_a_failed_backup_is_a_message_and_keeps_the_old_dump(pfemu_kernel, tmp_path, monkeypatch, obstacle):
    path = str(tmp_path / "states.pfstate")
    lease = str(tmp_path / "lease")
    pfemu_kernel.fill(20, seed=3)
    operations.dump_states(path, lease_file=lease)
    old = operations.file_sha256(path)
    pfemu_kernel.fill(5, seed=4)
    now = time.time()
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    if obstacle == "planted-symlink":      # the backup's name is predictable: path.PID.DATE~
        os.symlink(str(victim), "%s.%d.%s~" % (path, os.getpid(), time.strftime("%Y-%m-%d@%H:%M:%S", time.localtime(now))))
    else:
        real_create = formats.create_private

        def create_on_a_full_disk(name):
            return _FullDisk(real_create(name))
        monkeypatch.setattr(formats, "create_private", create_on_a_full_disk)
    with pytest.raises(operations.OperationError) as caught:
        operations.dump_states(path, lease_file=lease, backup=True, now=now)
    message = str(caught.value)
    assert "cannot back up %s" % path in message and "nothing was written" in message, message
    assert operations.file_sha256(path) == old
    assert victim.read_bytes() == b"keep"
    assert not pfemu_kernel.lock
    left = [name for name in os.listdir(str(tmp_path)) if name.endswith((".tmp", "~"))]
    assert len(left) == (1 if obstacle == "planted-symlink" else 0), left     # only the planted link


# --- A9: an NPF snapshot file of many tiny connection entries ----------------------------------

def test_an_npf_snapshot_of_empty_connection_entries_is_refused_before_they_are_decoded(tmp_path, capsys):
    path = str(tmp_path / "empty-entries.pfstate")
    with open(path, "wb") as handle:        # 50,000 entries of 42 bytes: 2 MB packed, 120 KB compressed
        write_npf_file(handle, {"version": 22, "conn-list": [{}] * 50000}, ORDER)
    assert pfstate_cli.main(["show", path]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "50000 connections in" in err and "Traceback" not in err, err


def test_an_npf_snapshot_of_real_connections_is_within_the_bound(tmp_path, capsys):
    path = str(tmp_path / "real.pfstate")
    with open(path, "wb") as handle:
        write_npf_file(handle, {"version": 22, "conn-list": [npf_record(sport=1024 + n) for n in range(200)]}, ORDER)
    assert pfstate_cli.main(["show", path]) == 0
    assert "connections: 200" in capsys.readouterr().out


_PFSTATE_DUMP_SIGNALLED = textwrap.dedent("""
    import os, sys
    from _pytest.monkeypatch import MonkeyPatch
    from ansible_collections.netbsd.pf.plugins.module_utils import operations, pfstate_cli
    from ansible_collections.netbsd.pf.tests.pfemu.inprocess import PfDeviceRouter
    from ansible_collections.netbsd.pf.tests.pfemu.kernel import Kernel
    from ansible_collections.netbsd.pf.tests.pfemu.structs import host_abi

    path, signum, lock = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    router = PfDeviceRouter(Kernel(abi=host_abi(), seed=1))
    router.install(MonkeyPatch())
    router.kernel.fill(300, seed=2)
    real_stage = operations.stage_dump

    def stage_dump(*args, **kwargs):
        os.kill(os.getpid(), signum)
        return real_stage(*args, **kwargs)

    operations.stage_dump = stage_dump
    status = pfstate_cli.main(["dump", "--lock", lock, "--lease", "30", "--lease-file", path + ".lease", path])
    print("status %d, locked %s" % (status, router.kernel.lock), flush=True)
""")


@pytest.mark.parametrize("lock", ["hold", "during"])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_held_pfstate_dump_interrupted_keeps_its_exit_status_and_unlocks(tmp_path, lock, signum):
    path = str(tmp_path / "states.pfstate")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    child = subprocess.run(preexec_fn=_default_signals, args=[sys.executable, "-c", _PFSTATE_DUMP_SIGNALLED, path, str(int(signum)), lock], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60, check=False)
    assert child.stdout.decode().strip() == "status %d, locked False" % (128 + signum), child.stderr.decode()[-2000:]
    assert lease_mod.read_lease(path + ".lease")["state"] == lease_mod.RELEASED
    assert os.listdir(str(tmp_path)) == ["states.pfstate.lease"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_pfstate_dump_under_nohup_goes_on_through_the_ignored_signal(tmp_path, signum):
    path = str(tmp_path / "states.pfstate")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    ignoring = "import signal, sys; signal.signal(int(sys.argv[2]), signal.SIG_IGN)\n" + _PFSTATE_DUMP_SIGNALLED
    child = subprocess.run(preexec_fn=_default_signals, args=[sys.executable, "-c", ignoring, path, str(int(signum)), "during"], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60, check=False)
    assert child.stdout.decode().splitlines()[-1] == "status 0, locked False", child.stderr.decode()[-2000:]
    with open_dump(path) as reader:
        assert reader.count == 300


# --- A10: the disk fills while the lease is armed --------------------------------------------------

def test_a_lease_that_cannot_be_recorded_leaves_no_watchdog_behind(tmp_path, monkeypatch):
    lease = str(tmp_path / "lease")
    real_write, real_spawn = lease_mod._LockedLeaseFile.write, lease_mod._spawn_watchdog
    writes, spawned = [], []

    def write_on_a_filling_disk(self, record):
        writes.append(1)
        if len(writes) == 2:        # the lease with the watchdog's pid, written after the watchdog started
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(self, record)

    def spawn(*args):
        spawned.append(real_spawn(*args))
        return spawned[-1]

    monkeypatch.setattr(lease_mod._LockedLeaseFile, "write", write_on_a_filling_disk)
    monkeypatch.setattr(lease_mod, "_spawn_watchdog", spawn)
    with pytest.raises(lease_mod.LeaseError) as caught:
        lease_mod.arm_lease(lease, 600, "/nonexistent/pf", holder="test")
    assert "No space left on device" in str(caught.value)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and lease_mod.process_alive(spawned[0]):
        time.sleep(0.1)
    assert not lease_mod.process_alive(spawned[0]), "a watchdog of a lease that was never recorded would unlock later"


# --- AH10: a flush while a restore runs ------------------------------------------------------------

@pytest.mark.parametrize("call", [2, 3])
def test_held_a_flush_during_a_restore_is_not_hidden_by_the_counts(pfemu_kernel, tmp_path, monkeypatch, call):
    block = concurrency_records(30)
    path = dump_file(tmp_path, block)

    def flush_then_add_one_of_ours(_chunk):
        """pfctl -F states, then a pfsync peer inserts record 26 (chunk 3) before the restore sends it."""
        with PfDevice(writable=True) as device:
            device.clear_states()
            device.add_states(block[25 * 240:26 * 240])

    before_add_call(monkeypatch, call, flush_then_add_one_of_ours)
    report = concurrency_restore(path, tmp_path, chunk_size=10)
    assert (report["restored"], report["already_present"], report["appeared_during_restore"]) == (29, 1, 1)
    assert report["restored"] + report["already_present"] + report["rejected"] + report["expired"] == 30
    # What the table holds: the restore's own records sent after the flush, and the peer's copy.
    assert len(pfemu_kernel.export_all()) // 240 == 30 - 10 * (call - 1)


# --- A11: an NPF restore onto more interfaces than one NPF epoch can name ----------------------------

def _snapshot_on_interfaces(count, per_interface=1):
    return NpfSnapshot({"version": 22, "params": {"state.key.interface": 1},
                        "conn-list": [npf_conn(1000 + index, ifname="vlan%d" % (index // per_interface))
                                      for index in range(count * per_interface)]}, "little", "fw1.npf")


def test_an_npf_restore_onto_70_interfaces_loads_what_fits_the_interface_map(npf_host):
    kernel, device = npf_host
    boot_with_config(kernel, device)                 # npf.conf's rules name wm0
    snapshot = _snapshot_on_interfaces(70, per_interface=2)
    with pytest.raises(NpfRestoreError) as caught:
        plan_restore(snapshot, save(device), limit_policy="refuse")
    assert "needs 71 interface names" in str(caught.value) and "at most 64" in str(caught.value), caught.value
    plan = plan_restore(snapshot, save(device))
    report = execute_plan(device, plan)              # before: EINVAL, nothing restored, 64 names used up
    assert report["loaded"] == 2 * 63 and report["over_limit"] == 2 * 7, report
    assert plan.accounted() and kernel.connection_count == 126
    assert all("64 interface names" in entry["why"] for entry in report["rejected"]), report["rejected"]
    again = plan_restore(snapshot, save(device))     # the names in use now count as registered: no new room
    assert (again.counts["already_running"], again.counts["over_limit"], again.changes) == (126, 14, False)


# --- A12: pushed_copy set by hand on a dump of one's own ------------------------------------------

@pytest.mark.parametrize("check_mode", [False, True])
def test_pushed_copy_never_removes_a_file_the_action_plugin_did_not_push(pfemu_kernel, tmp_path, capsys, check_mode):
    path = _native_dump(tmp_path)           # the only copy of the dump, in a directory of the operator's
    before = operations.file_sha256(path)
    result = run_module(states_restore.main, capsys, tmp_path, check_mode=check_mode, path=path, pushed_copy=True)
    assert result.get("failed") and "pushed_copy" in result["msg"] and path in result["msg"], result
    assert operations.file_sha256(path) == before
    assert len(pfemu_kernel.export_all()) == 0


def test_pushed_copy_still_removes_the_copy_the_action_plugin_pushed(pfemu_kernel, tmp_path, capsys):
    pushed_dir = tmp_path / "remote_tmp" / "ansible-tmp-1764800000.1-4242-123456789"
    pushed_dir.mkdir(parents=True)
    pushed = str(pushed_dir / PUSHED_NAME)
    os.rename(_native_dump(tmp_path), pushed)
    result = run_module(states_restore.main, capsys, tmp_path, path=pushed, pushed_copy=True, age="none")
    assert not result.get("failed") and result["restored"] == 20, result
    assert not os.path.exists(pushed)
