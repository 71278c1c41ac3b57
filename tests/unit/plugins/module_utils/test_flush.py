"""Flush selections: the local matcher agrees with the emulated kernel, counts are exact past 256."""

import pytest

from ansible_collections.netbsd.pf.plugins.module_utils.flush import Selection, SelectionError, flush_states
from ansible_collections.netbsd.pf.plugins.module_utils.pfdev import PfDevice
from ansible_collections.netbsd.pf.plugins.module_utils.views import record_keys
from ansible_collections.netbsd.pf.tests.unit.plugins.module_utils.test_restore import make_state, table


def fill(records):
    with PfDevice(writable=True) as device:
        device.add_states(b"".join(records))


def flush(selection, check_mode=False):
    with PfDevice(writable=not check_mode) as device:
        return flush_states(device, selection, check_mode=check_mode)


def mixed():
    """Outbound and inbound TCP/UDP states on two interfaces, two lan networks."""
    records = []
    for n in range(40):
        records.append(make_state(n, proto=6 if n % 2 else 17, timeout=2 if n % 2 else 8,
                                  direction=2 if n % 4 < 2 else 1, ifname="wm0" if n % 5 == 0 else "all",
                                  lan=("10.%d.0.%d" % (n % 3, n), 2000 + n), ext=("198.51.100.%d" % (n % 7), 53 if n % 3 else 443)))
    return records


def test_all_counts_past_256(pfemu_kernel):
    fill([make_state(n) for n in range(300)])
    result = flush(Selection(all_states=True))
    assert (result["removed"], result["request"], result["kernel_count"]) == (300, "DIOCCLRSTATES", 300 % 256)
    assert table() == []


@pytest.mark.parametrize("criteria", [
    {"interface": "wm0"},
    {"interface": "all"},
    {"protocol": "udp"},
    {"source": "10.1.0.0/16"},
    {"destination": "10.2.0.0/16"},
    {"destination_port": "53"},
    {"source_port": "2010-2030"},
    {"protocol": "tcp", "destination": "198.51.100.0/30", "interface": "all"},
    {"address_family": "inet6"},
])
def test_check_mode_predicts_the_kernel(pfemu_kernel, criteria):
    fill(mixed())
    predicted = flush(Selection(**criteria), check_mode=True)
    assert len(table()) == 40
    actual = flush(Selection(**criteria))
    assert predicted["removed"] == actual["removed"] == actual["matched"]
    assert actual["states_after"] == 40 - actual["removed"]
    assert actual["kernel_count"] == actual["removed"] % 256


def test_direction_decides_source_side(pfemu_kernel):
    fill([make_state(0, direction=2, lan=("10.0.0.1", 1000), ext=("192.0.2.1", 80)),
          make_state(1, direction=1, lan=("10.0.0.2", 1000), ext=("192.0.2.2", 80))])
    result = flush(Selection(source="192.0.2.0/24"))
    assert result["removed"] == 1
    (left,) = table()
    assert left["direction"] == 2


@pytest.mark.parametrize("criteria, message", [
    ({}, "empty selection"),
    ({"all_states": True, "protocol": "tcp"}, "cannot be combined"),
    ({"source": "192.0.2.0/24", "address_family": "inet6"}, "does not belong"),
    ({"source_port": "70000"}, "outside"),
    ({"destination_port": "90-80"}, "empty"),
    ({"protocol": "nosuch"}, "unknown protocol"),
    ({"source": "300.1.1.1"}, "CIDR"),
    ({"interface": "w\u00e90"}, "not ASCII"),
])
def test_bad_selections(criteria, message):
    with pytest.raises(SelectionError, match=message):
        Selection(**criteria)


@pytest.mark.parametrize("criteria", [
    {"protocol": "udp"},
    {"address_family": "inet6", "protocol": "tcp"},
    {"source": "10.0.0.0/10"},
    {"destination": "10.0.0.0/9", "destination_port": "1024-30000"},
    {"destination_port": "443"},
    {"source_port": "80", "protocol": "tcp"},
    {"interface": "all", "source_port": "1024-65535"},
    {"interface": "wm0"},
])
def test_kernel_request_and_matcher_select_the_same_states(pfemu_kernel, criteria):
    pfemu_kernel.fill(600, seed=14)
    selection = Selection(**criteria)
    with PfDevice(writable=True) as device:
        block = device.get_states()
        keys = [ident for ident, _ifname, _key1, _key2, _expire in record_keys(block, device.abi.byte_order)]
        matched = set(ident for ident, kept in zip(keys, selection.matcher.mask(block)) if kept)
        if selection.request == "DIOCCLRSTATES":
            device.clear_states(selection.kernel.interface)
        else:
            device.kill_states(**selection.kernel.kill_arguments())
        remaining = set(ident for ident, _ifname, _key1, _key2, _expire in record_keys(device.get_states(), device.abi.byte_order))
    assert 0 < len(matched) < len(keys)
    assert set(keys) - remaining == matched
