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


def fill_for_filters():
    """Six plain outbound TCP states, one NATed outbound one (gwy in 198.51.100/24), one inbound UDP one from that network."""
    records = [make_state(n) for n in range(6)]
    records.append(make_state(6, lan=("192.168.1.5", 40000), gwy=("198.51.100.20", 61000)))
    records.append(make_state(7, proto=17, direction=1, ifname="wm0", lan=("10.0.0.9", 53), ext=("198.51.100.7", 5555)))
    with PfDevice(writable=True) as device:
        device.add_states(b"".join(records))


def remaining_lan_hosts():
    return sorted(".".join(str(b) for b in state["lan_addr"][:4]) for state in table())


def test_filters_select_like_the_other_modules(pfemu_kernel, capsys):
    fill_for_filters()
    predicted = run(capsys, check_mode=True, filters={"networks": ["198.51.100.0/24"]})
    assert (predicted["removed"], predicted["request"]) == (2, "DIOCKILLSTATES")
    assert len(table()) == 8
    removed = run(capsys, filters={"networks": ["198.51.100.0/24"], "direction": "out"})
    assert (removed["changed"], removed["removed"], removed["states_after"]) == (True, 1, 7)
    assert "192.168.1.5" not in remaining_lan_hosts() and "10.0.0.9" in remaining_lan_hosts()
    removed = run(capsys, filters={"protocols": ["udp", "icmp"], "ports": [5555]})
    assert removed["removed"] == 1 and "10.0.0.9" not in remaining_lan_hosts()
    assert len(table()) == 6


def test_filters_and_kernel_criteria_must_both_match(pfemu_kernel, capsys):
    fill_for_filters()
    result = run(capsys, interface="wm0", filters={"protocols": ["tcp"]})
    assert result["removed"] == 0 and len(table()) == 8
    result = run(capsys, protocol="tcp", filters={"ports": [1025, 1026]})
    assert result["removed"] == 2 and len(table()) == 6


def test_filters_with_all_refused(pfemu_kernel, capsys):
    result = run(capsys, all=True, filters={"protocols": ["tcp"]})
    assert result["failed"] is True and "mutually exclusive" in result["msg"]


def test_bad_filter_is_a_clean_failure(pfemu_kernel, capsys):
    fill_for_filters()
    result = run(capsys, filters={"protocols": ["nosuchproto"]})
    assert result["failed"] is True and "filters.protocols" in result["msg"] and len(table()) == 8
