"""D9: the copy of a controller dump that the states_restore action plugin pushes (src) never stays on the target.

The module removes it as soon as it has opened it (the reads go on from the open descriptor),
so an interrupted run (Ctrl-C of ansible-playbook, a dropped connection) leaves nothing behind;
copies that earlier pushes left before the module ran are removed by the next run.
"""

import fcntl
import os
import time
from functools import partial

from ansible_collections.netbsd.pf.plugins.module_utils.pushed import LEGACY_PUSHED_NAME, PUSHED_NAME, STALE_SECONDS
from ansible_collections.netbsd.pf.plugins.modules import states_restore
from ansible_collections.netbsd.pf.tests.unit.plugins.module_utils.test_restore import make_state, table, write_states
from ansible_collections.netbsd.pf.tests.unit.plugins.modules.module_runner import run_module

run = partial(run_module, states_restore.main)


def _push(tmp_path, name="ansible-tmp-1-2-3", states=5):
    """A copy as the action plugin leaves it: <remote_tmp>/ansible-tmp-.../PUSHED_NAME, mode 0600."""
    directory = tmp_path / "remote_tmp" / name
    directory.mkdir(parents=True)
    path = write_states(directory / PUSHED_NAME, [make_state(n) for n in range(states)])
    os.chmod(path, 0o600)
    return path


def test_pushed_copy_is_removed_after_a_restore(pfemu_kernel, tmp_path, capsys):
    path = _push(tmp_path)
    result = run(capsys, tmp_path, path=path, age="none", pushed_copy=True)
    assert result["restored"] == 5 and len(table()) == 5
    assert not os.path.exists(path)


def test_pushed_copy_is_gone_while_the_restore_still_waits(pfemu_kernel, tmp_path, capsys):
    """The copy is removed once opened, before the long phases: a run interrupted while it waits
    for another restore (or adds states) leaves nothing; here the wait gives up at once."""
    path = _push(tmp_path)
    lock_file = str(tmp_path / "restore.lock")
    holder = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        result = run(capsys, tmp_path, path=path, age="none", pushed_copy=True, restore_lock_file=lock_file,
                     restore_lock_timeout=0)
    finally:
        os.close(holder)
    assert result["failed"] is True and "another restore" in result["msg"]
    assert not os.path.exists(path)
    assert table() == []


def test_pushed_copy_that_is_not_a_dump_is_removed_too(pfemu_kernel, tmp_path, capsys):
    path = _push(tmp_path)
    with open(path, "wb") as handle:
        handle.write(b"\x01garbage" * 7)
    result = run(capsys, tmp_path, path=path, pushed_copy=True)
    assert result["failed"] is True and "unknown dump format" in result["msg"]
    assert not os.path.exists(path)


def test_a_file_given_as_path_is_kept(pfemu_kernel, tmp_path, capsys):
    path = write_states(tmp_path / "d.bin", [make_state(n) for n in range(3)])
    run(capsys, tmp_path, path=path, age="none")
    assert os.path.exists(path)


def test_copies_left_by_interrupted_pushes_are_removed_by_the_next_run(pfemu_kernel, tmp_path, capsys):
    stale = _push(tmp_path, "ansible-tmp-100-1-1")
    old = time.time() - STALE_SECONDS - 5
    os.utime(stale, (old, old))
    in_progress = _push(tmp_path, "ansible-tmp-200-2-2")       # another run's push, still fresh
    busy_dir = tmp_path / "remote_tmp" / "ansible-tmp-300-3-3"
    stale_beside_other_files = _push(tmp_path, busy_dir.name)
    os.utime(stale_beside_other_files, (old, old))
    (busy_dir / "AnsiballZ_states_restore.py").write_text("")
    unrelated = tmp_path / "remote_tmp" / "ansible-tmp-400-4-4"
    unrelated.mkdir()
    (unrelated / "states.pfstate").write_bytes(b"")
    os.utime(str(unrelated / "states.pfstate"), (old, old))
    legacy_dir = tmp_path / "remote_tmp" / "ansible-tmp-600-6-6"     # left by collection 0.1.0
    legacy_dir.mkdir()
    legacy = str(legacy_dir / LEGACY_PUSHED_NAME)
    os.rename(_push(tmp_path, "ansible-tmp-700-7-7"), legacy)
    os.utime(legacy, (old, old))
    path = _push(tmp_path, "ansible-tmp-500-5-5")

    result = run(capsys, tmp_path, path=path, age="none", pushed_copy=True)

    assert sorted(result["removed_stale_copies"]) == sorted([stale, stale_beside_other_files, legacy])
    assert not legacy_dir.exists()
    assert not os.path.exists(os.path.dirname(stale)), "an emptied temporary directory is removed"
    assert not os.path.exists(stale_beside_other_files) and busy_dir.exists(), "Ansible's own files are left alone"
    assert os.path.exists(in_progress)
    assert (unrelated / "states.pfstate").exists()
