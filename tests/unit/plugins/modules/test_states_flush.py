"""netbsd.pf.states_flush through its main(), against the in-process pf emulator."""

from functools import partial

from ansible_collections.netbsd.pf.plugins.module_utils.pfdev import PfDevice
from ansible_collections.netbsd.pf.plugins.modules import states_flush
from ansible_collections.netbsd.pf.tests.unit.plugins.module_utils.test_restore import make_state, table
from ansible_collections.netbsd.pf.tests.unit.plugins.modules.module_runner import run_module


run = partial(run_module, states_flush.main)


def fill(count):
    with PfDevice(writable=True) as device:
        device.add_states(b"".join(make_state(n, proto=6 if n % 3 else 17) for n in range(count)))


def test_flush_all_then_nothing_left(pfemu_kernel, capsys):
    fill(270)
    result = run(capsys, all=True)
    assert (result["changed"], result["removed"], result["kernel_count"]) == (True, 270, 14)
    assert run(capsys, all=True)["changed"] is False


def test_check_mode_with_diff(pfemu_kernel, capsys):
    fill(9)
    result = run(capsys, check_mode=True, diff=True, protocol="udp")
    assert (result["changed"], result["removed"]) == (True, 3)
    assert result["diff"]["before"] == "all tcp: 6\nall udp: 3\ntotal: 9\n"
    assert result["diff"]["after"] == "all tcp: 6\ntotal: 6\n"
    assert len(table()) == 9


def test_empty_selection_refused(pfemu_kernel, capsys):
    result = run(capsys)
    assert result["failed"] is True


def test_all_with_criteria_refused(pfemu_kernel, capsys):
    result = run(capsys, all=True, protocol="tcp")
    assert result["failed"] is True and "mutually exclusive" in result["msg"]


def test_securelevel_message(pfemu_kernel, capsys):
    fill(2)
    pfemu_kernel.set_securelevel(2)
    result = run(capsys, all=True)
    assert result["failed"] is True
    assert "securelevel" in result["msg"]
    pfemu_kernel.set_securelevel(0)
    assert len(table()) == 2
