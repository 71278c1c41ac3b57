"""netbsd.pf.states_lock through its main(), against the in-process pf emulator."""

import json
from functools import partial

from ansible_collections.netbsd.pf.plugins.module_utils.lease import read_lease
from ansible_collections.netbsd.pf.plugins.modules import states_lock
from ansible_collections.netbsd.pf.tests.unit.plugins.modules.module_runner import run_module


run = partial(run_module, states_lock.main)


def test_lock_then_unlock(pfemu_kernel, tmp_path, capsys):
    locked = run(capsys, tmp_path, state="locked", lease=120)
    assert locked["changed"] is True and pfemu_kernel.lock is True
    assert locked["previous"]["state"] == "none"
    assert locked["lock"]["locked_by_lease"] is True and locked["lock"]["seconds"] == 120
    assert locked["lock"]["watchdog_pid"] > 0

    renewed = run(capsys, tmp_path, state="locked", lease=60)
    assert renewed["changed"] is True and renewed["lock"]["token"] != locked["lock"]["token"]

    unlocked = run(capsys, tmp_path, state="unlocked")
    assert unlocked["changed"] is True and pfemu_kernel.lock is False
    assert unlocked["lock"]["state"] == "released" and unlocked["lock"]["locked_by_lease"] is False

    again = run(capsys, tmp_path, state="unlocked")
    assert again["changed"] is False and pfemu_kernel.lock is False


def test_unlock_clears_a_lock_nobody_recorded(pfemu_kernel, tmp_path, capsys):
    pfemu_kernel.lock = True            # as pfs -l would leave it
    result = run(capsys, tmp_path, state="unlocked")
    assert pfemu_kernel.lock is False
    assert result["changed"] is False, "the kernel cannot tell; the lease file knew of no lock"


def test_check_mode_touches_nothing(pfemu_kernel, tmp_path, capsys):
    result = run(capsys, tmp_path, check_mode=True, state="locked")
    assert result["changed"] is True
    assert pfemu_kernel.lock is False and read_lease(str(tmp_path / "lease")) is None


def test_lease_zero_warns(pfemu_kernel, tmp_path, capsys):
    result = run(capsys, tmp_path, state="locked", lease=0)
    assert pfemu_kernel.lock is True and result["lock"]["deadline"] is None
    assert "no watchdog" in json.dumps(result.get("warnings")), result
    run(capsys, tmp_path, state="unlocked")


def test_unwritable_lease_file_does_not_lock(pfemu_kernel, tmp_path, capsys):
    result = run(capsys, tmp_path, state="locked", lease_file=str(tmp_path / "missing" / "lease"))
    assert result["failed"] is True and "lease_file" in result["msg"]
    assert pfemu_kernel.lock is False


def test_negative_lease_is_refused(pfemu_kernel, tmp_path, capsys):
    result = run(capsys, tmp_path, state="locked", lease=-5)
    assert result["failed"] is True and "lease must be" in result["msg"]
