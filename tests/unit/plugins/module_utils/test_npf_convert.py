"""pf states -> NPF connections: plugins/module_utils/npf_convert.py (NPF reference 5.2-5.4), loaded into npfemu."""

import pytest

from ansible_collections.netbsd.pf.plugins.module_utils.abi import Abi
from ansible_collections.netbsd.pf.plugins.module_utils.npf_convert import TCP_STATE_MAP, convert_states, to_snapshot
from ansible_collections.netbsd.pf.plugins.module_utils.npf_restore import execute_plan, plan_restore
from ansible_collections.netbsd.pf.plugins.module_utils.npf_snapshot import NpfSnapshot, decode_connection
from ansible_collections.netbsd.pf.plugins.module_utils.npfdev import NpfDevice
from ansible_collections.netbsd.pf.plugins.module_utils.records import FIELD_INDEX, StateCodec, state_to_dict
from ansible_collections.netbsd.pf.tests.npfemu import ManualClock, NpfKernel
from ansible_collections.netbsd.pf.tests.npfemu.inprocess import make_syscalls
from ansible_collections.netbsd.pf.tests.pfemu.generate import generate_records

RULES = [{"name": "pass-wm0", "attr": 0x13, "ifname": "wm0"}, {"name": "pass-wm1", "attr": 0x13, "ifname": "wm1"}]
# The generator's outbound NAT pool is 198.51.100.0-15; its rdr addresses are 203.0.113.x.
NAT_RULES = [{"type": 2, "flags": 0, "ifname": "wm0", "nat-addr": bytes([198, 51, 100, n]), "nat-policy": n + 1}
             for n in range(16)] + [{"type": 1, "flags": 0, "ifname": "wm0", "nat-addr": b"\x0a\x00\x00\x01",
                                     "nat-policy": 40}]


@pytest.fixture
def npf_host():
    kernel = NpfKernel(clock=ManualClock(1000.0))
    device = NpfDevice(abi=Abi(8, True, "little"), syscalls=make_syscalls(kernel))
    device.load({"rules": RULES, "nat": NAT_RULES})  # what rc.d npf loads from npf.conf
    yield kernel, device
    device.close()


def running(device):
    return NpfSnapshot(device.save(), "little", "npf1")


def pf_block(count=120, seed=5, order="little"):
    return generate_records(count, seed=seed, byte_order=order, now=1700000000, interfaces=("wm0", "wm1"),
                            floating_share=0.3)


@pytest.mark.parametrize("order", ["little", "big"])
def test_every_state_is_converted_or_named_with_its_reason(order):
    result = convert_states([pf_block(order=order)], order, NAT_RULES)
    summary = result.summary()
    assert summary["converted"] + summary["unconvertible"] == summary["input"] == 120
    assert summary["converted"] > 20 and summary["unconvertible"] > 20
    assert len(summary["rejected"]) == summary["unconvertible"]  # below the list limit: every one named
    assert set(summary["reasons"]) >= {"floating interface", "synproxy state", "protocol", "modulated sequence numbers"}
    assert sum(summary["reasons"].values()) == summary["unconvertible"]


def test_converted_states_load_and_read_back_field_by_field(npf_host):
    kernel, device = npf_host
    block = pf_block()
    result = convert_states([block], "little", running(device).config["nat"])
    plan = plan_restore(to_snapshot(result, running(device), "pf1"), running(device))
    report = execute_plan(device, plan)
    assert plan.accounted() and report["invalid"] == report["duplicate"] == report["over_limit"] == 0
    plain = [conn for conn in result.connections if conn.nat is None]
    assert report["loaded"] == len(plain) and report["nat"] == len(result.connections) - len(plain)
    for conn in plain:
        pf = state_to_dict(block[conn.index * 240:(conn.index + 1) * 240], "little")
        reply = device.conn_lookup(conn.forw.to_nvlist("little"))
        assert reply["flow"] == 0
        loaded = decode_connection(0, reply, "little")
        assert loaded.repair_keys(True)
        assert (loaded.flags, loaded.proto, loaded.ifname, loaded.alen) == (
            conn.flags, conn.proto, conn.ifname, conn.alen)
        assert loaded.state == conn.state
        for mine, theirs in ((conn.forw, loaded.forw), (conn.back, loaded.back)):
            assert (theirs.saddr, theirs.daddr, theirs.sport, theirs.dport, theirs.di, theirs.ifname) == (
                mine.saddr, mine.daddr, mine.sport, mine.dport, mine.di, mine.ifname)
        # and against the pf state it came from
        assert loaded.proto == pf["proto_number"] and loaded.flags & 3 == (2 if pf["direction"] == "out" else 1)
        initiator, responder = (pf["lan"], pf["ext"]) if pf["direction"] == "out" else (pf["ext"], pf["lan"])
        assert (loaded.forw.sport, loaded.forw.dport) == (initiator["port"], responder["port"])
        if conn.proto == 6:
            assert loaded.state.peers[0].end == pf["src"]["seqlo"]
            assert loaded.state.peers[1].maxend == pf["dst"]["seqhi"]
            assert TCP_STATE_MAP[(pf["src"]["state"], pf["dst"]["state"])] == loaded.state.state


def test_nat_states_load_with_the_matching_policy(npf_host):
    kernel, device = npf_host
    # The host's own policy ids: a load without connections renumbered them (reference 3.7).
    live_nat = running(device).config["nat"]
    assert [rule["nat-policy"] for rule in live_nat] != [rule["nat-policy"] for rule in NAT_RULES]
    result = convert_states([pf_block(400, seed=9)], "little", live_nat)
    nat = [conn for conn in result.connections if conn.nat is not None]
    assert {conn.flags & 3 for conn in nat} == {1, 2}, "the generator made no convertible nat and rdr states"
    for conn in nat:
        assert conn.nat.policy in [rule["nat-policy"] for rule in live_nat]
        if conn.flags & 3 == 2:  # outbound: backward key goes to the translated source
            assert (conn.back.daddr, conn.back.dport) == (conn.nat.taddr, conn.nat.tport)
            assert (conn.forw.saddr, conn.forw.sport) == (conn.nat.oaddr, conn.nat.oport)
    plan = plan_restore(to_snapshot(result, running(device), "pf1"), running(device), nat="keep")
    execute_plan(device, plan)
    assert plan.accounted() and plan.counts["nat"] == 0
    assert kernel.connection_count == len(result.connections)


def _patched(block, index, **fields):
    codec = StateCodec("little")
    values = list(codec.unpack(block[index * 240:(index + 1) * 240]))
    for name, value in fields.items():
        values[FIELD_INDEX[name]] = value
    return codec.pack(values)


def test_each_blocker_is_named():
    block = pf_block()
    result = convert_states([block], "little", NAT_RULES)
    base = next(conn.index for conn in result.connections if conn.proto == 6 and conn.nat is None)
    cases = [
        (dict(src_seqdiff=12345), "modulated sequence numbers"),
        (dict(proto=58, af=24), "protocol: 58"),
        (dict(proto=47), "protocol: 47"),
        (dict(ifname=b"all".ljust(16, b"\0")), "floating interface"),
        (dict(gwy_addr=bytes([192, 0, 2, 99]) + bytes(12), ifname=b"wm1".ljust(16, b"\0"), direction=2),
         "NAT without a matching policy"),
        (dict(src_state=11), "synproxy state"),
        (dict(src_state=3, dst_state=5), "TCP state: pf peer states 3/5"),
        (dict(expire=0), "expired"),
    ]
    records = b"".join(_patched(block, base, **fields) for fields, _reason in cases)
    outcome = convert_states([records], "little", NAT_RULES)
    assert outcome.connections == []
    for entry, (_fields, reason) in zip(outcome.rejected, cases):
        assert entry["reason"].startswith(reason), entry
    bound = convert_states([_patched(block, base, ifname=b"all".ljust(16, b"\0"))], "little", NAT_RULES,
                           floating_interface="wm0")
    assert [conn.ifname for conn in bound.connections] == ["wm0"]
    young = _patched(block, base, expire=100)
    assert convert_states([young], "little", NAT_RULES, age=99).connections
    assert convert_states([young], "little", NAT_RULES, age=100).reasons == {"expired": 1}


def test_floating_states_become_unbound_connections_on_a_host_that_keys_by_neither(npf_host):
    kernel, device = npf_host
    kernel.reboot()
    device.load({"rules": RULES, "nat": NAT_RULES,
                 "params": {"state.key.interface": 0, "state.key.direction": 0}})
    host = running(device)
    block = pf_block()
    result = convert_states([block], "little", host.config["nat"], key_interface=False, key_direction=False)
    floating = [conn for conn in result.connections
                if StateCodec("little").to_dict(block[conn.index * 240:(conn.index + 1) * 240])["ifname"]
                .startswith(b"all\0")]
    assert floating and all(conn.ifname is None and conn.forw.ifname is None and conn.forw.di is None
                            for conn in floating)
    assert "floating interface" not in result.reasons
    assert all(conn.nat.ifname == "wm0" for conn in floating if conn.nat is not None)
    plan = plan_restore(to_snapshot(result, host, "pf1"), host, nat="keep")
    execute_plan(device, plan)
    assert plan.accounted() and plan.counts["invalid"] == 0
    sample = floating[0]
    assert kernel.match_packet("wm1", 1, sample.proto, sample.forw.saddr, sample.forw.to_nvlist("little")["sport"],
                               sample.forw.daddr, sample.forw.to_nvlist("little")["dport"]) is not None
