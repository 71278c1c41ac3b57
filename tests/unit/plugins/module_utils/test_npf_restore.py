"""Restore planning for NPF: plugins/module_utils/npf_restore.py against the NPF emulator (reference 3.6, 3.7, 5.1)."""

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.netbsd.pf.plugins.module_utils.abi import Abi
from ansible_collections.netbsd.pf.plugins.module_utils.npf_restore import (
    NpfRestoreError, execute_plan, plan_restore,
)
from ansible_collections.netbsd.pf.plugins.module_utils.npf_snapshot import NpfSnapshot, port_to_word
from ansible_collections.netbsd.pf.plugins.module_utils.npf_nvlist import encode
from ansible_collections.netbsd.pf.plugins.module_utils.npfdev import NPF_REQUEST_LIMIT, NpfDevice
from ansible_collections.netbsd.pf.tests.npfemu import ManualClock, NpfKernel
from ansible_collections.netbsd.pf.tests.npfemu.inprocess import make_syscalls

RULES = [{"name": "pass-stateful", "attr": 0x13, "ifname": "wm0"}]
NAT_RULE = {"type": 2, "flags": 2, "nat-addr": b"\xc0\x00\x02\x01", "ifname": "wm0", "nat-policy": 7}
INSIDE, OUTSIDE = b"\x0a\x00\x00\x05", b"\xc6\x33\x64\x07"


def conn(sport, nst_state=4, proto=6, ifname="wm0", nat_port=None, state_size=36):
    """A connection as a kernel of this host would export it (ports as host-order words)."""
    def word(port):
        return port_to_word(port, "little")
    record = {
        "flags": 6, "proto": proto, "ifname": ifname, "state": struct.pack("<I", nst_state) + bytes(state_size - 4),
        "forw-key": {"proto": proto, "sport": word(sport), "dport": word(443), "saddr": INSIDE, "daddr": OUTSIDE,
                     "ifname": ifname, "di": 2},
        "back-key": {"proto": proto, "sport": word(443), "dport": word(nat_port or sport), "saddr": OUTSIDE,
                     "daddr": b"\xc0\x00\x02\x01" if nat_port else INSIDE, "ifname": ifname, "di": 1},
        "alen": 4,
    }
    if nat_port:
        record["nat"] = {"ifname": ifname, "alen": 4, "oaddr": INSIDE, "oport": word(sport),
                         "taddr": b"\xc0\x00\x02\x01", "tport": word(nat_port), "nat-policy": 7}
    return record


@pytest.fixture
def host():
    kernel = NpfKernel(clock=ManualClock(1000.0))
    device = NpfDevice(abi=Abi(8, True, "little"), syscalls=make_syscalls(kernel))
    yield kernel, device
    device.close()


def save(device, source="fw1"):
    return NpfSnapshot(device.save(), "little", source)


def boot_with_config(kernel, device, conns=None, nat=False):
    """A reboot, then what rc.d npf does: load npf.conf (here: a config, optionally with live connections)."""
    kernel.reboot()
    request = {"rules": RULES}
    if nat:
        request["nat"] = [NAT_RULE]
    if conns:
        request["conn-list"] = conns
    device.load(request)


def lookup(device, sport, ifname="wm0"):
    key = {"proto": 6, "sport": port_to_word(sport, "little"), "dport": port_to_word(443, "little"),
           "saddr": INSIDE, "daddr": OUTSIDE, "ifname": ifname, "di": 2}
    return device.conn_lookup(key)


def test_reboot_restore_gives_back_every_connection_with_counts_that_add_up(host):
    kernel, device = host
    boot_with_config(kernel, device, [conn(1000 + n) for n in range(5)])
    snapshot = save(device)
    assert all(c.keys_need_repair for c in snapshot.connections)
    boot_with_config(kernel, device)
    plan = plan_restore(snapshot, save(device))
    report = execute_plan(device, plan)
    assert report["changed"] and report["loaded"] == report["input"] == 5 and report["repaired"] == 5
    assert (report["verified"], report["verify_failed"]) == (5, [])
    assert plan.accounted()
    assert kernel.connection_count == 5
    for n in range(5):
        assert lookup(device, 1000 + n)["ifname"] == "wm0"
        # the repaired keys match real packets (unrepaired ones would be bound to "???")
        assert kernel.match_packet("wm0", 2, 6, INSIDE, port_to_word(1000 + n, "little"), OUTSIDE,
                                   port_to_word(443, "little")) is not None


def test_a_second_restore_is_reported_as_a_no_op_and_sends_nothing(host):
    kernel, device = host
    boot_with_config(kernel, device, [conn(1000 + n) for n in range(3)])
    snapshot_bytes = device.save()
    boot_with_config(kernel, device)
    execute_plan(device, plan_restore(NpfSnapshot(snapshot_bytes, "little", "fw1"), save(device)))
    loads = []
    device.load = loads.append
    plan = plan_restore(NpfSnapshot(snapshot_bytes, "little", "fw1"), save(device))
    report = execute_plan(device, plan)
    assert not report["changed"] and loads == []
    assert report["already_running"] == 3 and report["loaded"] == report["merged_running"] == 3
    assert plan.accounted()


def test_one_bad_record_is_dropped_and_never_reaches_the_kernel(host):
    kernel, device = host
    boot_with_config(kernel, device)
    broken = {"version": 22, "params": {"state.key.interface": 1},
              "conn-list": [conn(1000), conn(1001, state_size=30), conn(1002, proto=47), conn(1003)]}
    snapshot = NpfSnapshot(broken, "little", "fw1.npf")
    report = execute_plan(device, plan_restore(snapshot, save(device)))
    assert (report["input"], report["loaded"], report["invalid"]) == (4, 2, 2)
    assert kernel.connection_count == 2
    assert {entry["reason"] for entry in report["rejected"]} == {"invalid"}
    assert any("state is 30 bytes" in entry["why"] for entry in report["rejected"])


def test_running_connections_newer_than_the_snapshot_are_merged_not_destroyed(host):
    kernel, device = host
    boot_with_config(kernel, device, [conn(1000), conn(1001)])
    snapshot = save(device)
    boot_with_config(kernel, device, [conn(2000)])  # a connection opened after the reboot
    report = execute_plan(device, plan_restore(snapshot, save(device)))
    assert (report["merged_running"], report["loaded"], report["running"]) == (1, 3, 1)
    for sport in (1000, 1001, 2000):
        assert lookup(device, sport)


def test_running_connections_can_be_refused_instead_and_nothing_is_sent(host):
    kernel, device = host
    boot_with_config(kernel, device, [conn(1000)])
    snapshot = save(device)
    boot_with_config(kernel, device, [conn(2000)])
    with pytest.raises(NpfRestoreError, match="1 connections that the snapshot does not hold"):
        plan_restore(snapshot, save(device), running_conns="refuse")
    assert lookup(device, 2000) and kernel.connection_count == 1


def test_no_configuration_loaded_is_refused(host):
    kernel, device = host
    boot_with_config(kernel, device, [conn(1000)])
    snapshot = save(device)
    kernel.reboot()
    with pytest.raises(NpfRestoreError, match="no configuration loaded"):
        plan_restore(snapshot, save(device))


def test_over_the_cap_fit_keeps_established_tcp_first_and_refuse_raises(host):
    kernel, device = host
    conns = [conn(1000 + n, nst_state=1) for n in range(4)] + [conn(2000 + n) for n in range(4)]
    boot_with_config(kernel, device, conns)
    snapshot = save(device)
    boot_with_config(kernel, device)
    running = save(device)
    whole = plan_restore(snapshot, running).request_size
    small = whole - 2 * 800
    with pytest.raises(NpfRestoreError, match="limit_policy=fit"):
        plan_restore(snapshot, running, limit_policy="refuse", limit=small)
    plan = plan_restore(snapshot, running, limit=small)
    assert plan.request_size < small
    assert plan.counts["over_limit"] >= 2 and plan.accounted()
    assert sum(c.state.state == 4 for c in plan.loaded) == 4  # every established one kept
    execute_plan(device, plan)
    assert kernel.connection_count == plan.counts["loaded"]


def test_expired_connections_are_dropped_by_their_state_timeout(host):
    kernel, device = host
    boot_with_config(kernel, device, [conn(1000, nst_state=1), conn(1001, nst_state=4)])
    snapshot = save(device)
    boot_with_config(kernel, device)
    plan = plan_restore(snapshot, save(device), age=60)
    assert (plan.counts["expired"], plan.counts["loaded"]) == (1, 1) and plan.accounted()
    assert plan.loaded[0].forw.sport == 1001


@pytest.mark.parametrize("established, age, expired", [(600, 700, 1), (7 * 86400, 2 * 86400, 0)])
def test_expiry_follows_the_timeouts_of_the_host_that_saved(host, established, age, expired):
    # NPF times connections out by its params (reference 3.4), here `set state.tcp.timeout.established`
    kernel, device = host
    kernel.reboot()
    device.load({"rules": RULES, "params": {"state.tcp.timeout.established": established}, "conn-list": [conn(1000)]})
    snapshot = save(device)
    kernel.clock.advance(age)
    assert len(save(device).connections) == 1 - expired  # what the saving host itself still holds
    boot_with_config(kernel, device)
    plan = plan_restore(snapshot, save(device), age=age)
    assert (plan.counts["expired"], plan.counts["loaded"]) == (expired, 1 - expired) and plan.accounted()


def test_nat_connections_are_dropped_by_default_or_kept_on_an_equal_policy(host):
    kernel, device = host
    # (a save of a host holding restored NAT entries fails: the snapshot is one of a NAT box before it)
    snapshot = NpfSnapshot({"version": 22, "params": {"state.key.interface": 1}, "nat": [NAT_RULE],
                            "conn-list": [conn(1000), conn(1001, nat_port=40000)]}, "little", "fw1.npf")
    boot_with_config(kernel, device, nat=True)
    running = save(device)
    plan = plan_restore(snapshot, running)
    assert (plan.counts["nat"], plan.counts["loaded"]) == (1, 1) and plan.accounted()
    kept = plan_restore(snapshot, running, nat="keep")
    assert (kept.counts["nat"], kept.counts["loaded"]) == (0, 2)
    execute_plan(device, kept)
    assert kernel.connection_count == 2


def test_duplicate_keys_are_dropped_as_the_kernel_would_refuse_them(host):
    kernel, device = host
    boot_with_config(kernel, device)
    snapshot = NpfSnapshot({"version": 22, "params": {"state.key.interface": 1},
                            "conn-list": [conn(1000), conn(1000, nst_state=1)]}, "little", "fw1.npf")
    report = execute_plan(device, plan_restore(snapshot, save(device)))
    assert (report["duplicate"], report["loaded"]) == (1, 1) and kernel.connection_count == 1


def test_a_big_endian_snapshot_restores_into_a_little_endian_host(host):
    kernel, device = host
    source = NpfKernel(byte_order="big", clock=ManualClock(1000.0))
    with NpfDevice(abi=Abi(8, True, "big"), syscalls=make_syscalls(source)) as big:
        records = []
        for sport in (1028, 1029):
            record = conn(sport)
            for key in ("forw-key", "back-key"):
                for port in ("sport", "dport"):  # host-order words of the big-endian host
                    record[key][port] = int.from_bytes(record[key][port].to_bytes(2, "little"), "big")
            record["state"] = struct.pack(">I", 4) + bytes(32)
            records.append(record)
        big.load({"rules": RULES, "conn-list": records})
        snapshot = NpfSnapshot(big.save(), "big", "fw-be")
    boot_with_config(kernel, device)
    report = execute_plan(device, plan_restore(snapshot, save(device)))
    assert report["loaded"] == 2 and report["verified"] == 2
    for sport in (1028, 1029):
        assert lookup(device, sport)["state"] == struct.pack("<I", 4) + bytes(32)


def test_keys_follow_the_running_hosts_key_params(host):
    kernel, device = host
    boot_with_config(kernel, device, [conn(1000)])
    snapshot = save(device)
    kernel.reboot()
    device.load({"rules": RULES, "params": {"state.key.interface": 0, "state.key.direction": 0}})
    report = execute_plan(device, plan_restore(snapshot, save(device)))
    assert report["loaded"] == 1
    loaded = kernel.conns[0]
    assert loaded.forw[2:4] == (0, 0)  # no direction, no interface in the kernel key
    assert kernel.match_packet("wm0", 2, 6, INSIDE, port_to_word(1000, "little"), OUTSIDE,
                               port_to_word(443, "little")) is loaded
    # the connection itself stays bound to wm0 and its first direction (npf_conn_check)
    assert kernel.match_packet("wm1", 1, 6, INSIDE, port_to_word(1000, "little"), OUTSIDE,
                               port_to_word(443, "little")) is None


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(1000, 1015), st.sampled_from([0, 1, 4, 11]), st.booleans(), st.booleans()),
                max_size=24),
       st.lists(st.integers(1000, 1031), max_size=6, unique=True), st.sampled_from([None, 60]))
def test_counts_always_add_up(specs, running_ports, age):
    kernel = NpfKernel(clock=ManualClock(1000.0))
    with NpfDevice(abi=Abi(8, True, "little"), syscalls=make_syscalls(kernel)) as device:
        boot_with_config(kernel, device, [conn(port) for port in running_ports], nat=True)
        records = [conn(sport, nst_state=state, nat_port=40000 + sport if with_nat else None,
                        state_size=36 if valid else 20)
                   for sport, state, with_nat, valid in specs]
        snapshot = NpfSnapshot({"version": 22, "params": {"state.key.interface": 1}, "nat": [NAT_RULE],
                                "conn-list": records} if records else {"version": 22}, "little", "fw1.npf")
        plan = plan_restore(snapshot, save(device), age=age, nat="keep")
        assert plan.accounted()
        execute_plan(device, plan)
        assert kernel.connection_count == (plan.counts["loaded"] if plan.changes else len(running_ports))


def test_a_snapshot_beyond_one_load_fills_it_and_the_kernel_takes_it(host):
    kernel, device = host
    records = []
    for n in range(5400):
        record = conn(1024 + n % 50000, nst_state=4 if n % 4 else 1)
        record["forw-key"]["daddr"] = record["back-key"]["saddr"] = struct.pack(">I", 0xC6000001 + n // 50000)
        records.append(record)
    snapshot = NpfSnapshot({"version": 22, "params": {"state.key.interface": 1}, "conn-list": records},
                           "little", "fw1.npf")
    boot_with_config(kernel, device)
    plan = plan_restore(snapshot, save(device))
    sent = []
    load = device.load

    def spy(request):
        sent.append(request)
        return load(request)
    device.load = spy
    report = execute_plan(device, plan)
    assert report["over_limit"] > 0 and plan.accounted()
    assert NPF_REQUEST_LIMIT - 800 < len(encode(dict(sent[0], operation=0xC0184E66), "little")) < NPF_REQUEST_LIMIT
    assert kernel.connection_count == report["loaded"] > 5000
    assert sum(c.state.state == 4 for c in plan.loaded) == sum(1 for n in range(5400) if n % 4)


def test_the_planned_request_fits_with_what_the_device_adds(host):
    """version and operation are part of the request the kernel measures (reference 2.3)."""
    kernel, device = host
    boot_with_config(kernel, device)
    running = save(device)
    snapshot = NpfSnapshot({"version": 22, "params": {"state.key.interface": 1},
                            "conn-list": [conn(1000 + n) for n in range(10)]}, "little", "fw1.npf")
    whole = plan_restore(snapshot, running).request
    full_size = len(encode(dict(whole, version=22, operation=0xC0184E66), "little"))
    for slack in range(0, 1600, 40):
        plan = plan_restore(snapshot, running, limit=full_size - 1600 + slack)
        sent = dict(plan.request, version=22, operation=0xC0184E66)
        assert len(encode(sent, "little")) < full_size - 1600 + slack, slack


def test_planning_leaves_the_snapshot_as_it_was(host):
    kernel, device = host
    snapshot = NpfSnapshot({"version": 22, "params": {"state.key.interface": 1}, "nat": [NAT_RULE],
                            "conn-list": [conn(1000), conn(1001, nat_port=40000)]}, "little", "fw1.npf")
    before = [c.to_nvlist("little") for c in snapshot.connections]
    boot_with_config(kernel, device, nat=True)
    running = save(device)
    first = plan_restore(snapshot, running, nat="keep")
    second = plan_restore(snapshot, running, nat="keep")
    assert [c.to_nvlist("little") for c in snapshot.connections] == before
    assert first.counts == second.counts and first.request == second.request


def test_keys_saved_without_direction_get_it_back_from_the_flags(host):
    kernel, device = host
    record = conn(1000)
    for key in ("forw-key", "back-key"):
        del record[key]["ifname"], record[key]["di"]
    snapshot = NpfSnapshot({"version": 22, "params": {"state.key.interface": 0, "state.key.direction": 0},
                            "conn-list": [record]}, "little", "fw1.npf")
    boot_with_config(kernel, device)
    report = execute_plan(device, plan_restore(snapshot, save(device)))
    assert (report["loaded"], report["repaired"], report["verified"]) == (1, 1, 1)
    assert kernel.match_packet("wm0", 2, 6, INSIDE, port_to_word(1000, "little"), OUTSIDE,
                               port_to_word(443, "little")) is not None
    assert kernel.match_packet("wm0", 1, 6, OUTSIDE, port_to_word(443, "little"), INSIDE,
                               port_to_word(1000, "little")) is not None
