"""netbsd.pf.states_restore through its main(), against the in-process pf emulator."""

import json
from functools import partial

import pytest

from ansible_collections.netbsd.pf.plugins.modules import states_restore
from ansible_collections.netbsd.pf.tests.unit.plugins.module_utils.test_restore import (
    add_directly, make_state, table, write_states,
)
from ansible_collections.netbsd.pf.tests.unit.plugins.modules.module_runner import run_module


run = partial(run_module, states_restore.main)


def test_restore_then_again_unchanged(pfemu_kernel, tmp_path, capsys):
    path = write_states(tmp_path / "d.bin", [make_state(n) for n in range(8)])
    first = run(capsys, tmp_path, path=path, age="none")
    assert first["changed"] is True
    assert (first["total"], first["restored"]) == (8, 8)
    second = run(capsys, tmp_path, path=path, age="none")
    assert second["changed"] is False
    assert (second["restored"], second["already_present"]) == (0, 8)


def test_check_and_diff_mode(pfemu_kernel, tmp_path, capsys):
    add_directly([make_state(0)])
    path = write_states(tmp_path / "d.bin", [make_state(n) for n in range(3)] + [make_state(9, proto=17, timeout=8, ifname="wm0")])
    result = run(capsys, tmp_path, check_mode=True, diff=True, path=path, age="none")
    assert result["changed"] is True
    assert (result["restored"], result["already_present"]) == (3, 1)
    assert result["diff"]["before"] == "all tcp: 1\ntotal: 1\n"
    assert result["diff"]["after"] == "all tcp: 3\nwm0 udp: 1\ntotal: 4\n"
    assert len(table()) == 1


def test_conflict_fail_reports_counts(pfemu_kernel, tmp_path, capsys):
    add_directly([make_state(50, lan=("10.0.0.2", 1026))])
    path = write_states(tmp_path / "d.bin", [make_state(n) for n in range(4)])
    result = run(capsys, tmp_path, path=path, on_conflict="fail", age="none")
    assert result["failed"] is True
    assert "on_conflict=fail" in result["msg"] and "record 3" in result["msg"]
    assert len(table()) == 1


def test_missing_file_is_a_clean_failure(pfemu_kernel, tmp_path, capsys):
    result = run(capsys, tmp_path, path=str(tmp_path / "nope.bin"))
    assert result["failed"] is True
    assert "cannot read" in result["msg"] and "Traceback" not in json.dumps(result)


def test_src_without_action_plugin_is_refused(pfemu_kernel, tmp_path, capsys):
    result = run(capsys, tmp_path, src="dump.bin")
    assert result["failed"] is True
    assert "action plugin" in result["msg"]


@pytest.mark.parametrize("bad", [{"age": "soon"}, {"chunk_size": 0}, {"path": "x", "src": "y", "restore_lock_timeout": -1}])
def test_bad_options(pfemu_kernel, tmp_path, capsys, bad):
    args = dict({"path": str(tmp_path / "d.bin")}, **bad)
    result = run(capsys, tmp_path, **args)
    assert result["failed"] is True
