"""Saved NPF state as records: plugins/module_utils/npf_snapshot.py (NPF reference 3.3-3.5, 3.8)."""

import struct

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ansible_collections.netbsd.pf.plugins.module_utils.abi import Abi
from ansible_collections.netbsd.pf.plugins.module_utils.npf_nvlist import encode
from ansible_collections.netbsd.pf.plugins.module_utils.npf_snapshot import (
    ConnState, NpfSnapshot, NpfSnapshotError, PeerWindow, port_from_word, port_to_word,
)
from ansible_collections.netbsd.pf.plugins.module_utils.npfdev import NpfDevice
from ansible_collections.netbsd.pf.tests.npfemu import NpfKernel
from ansible_collections.netbsd.pf.tests.npfemu.inprocess import make_syscalls


def record(order="little", proto=6, sport=1028, dport=443, alen=4, nst_state=4, nat=None, **overrides):
    prefix = "<" if order == "little" else ">"
    inside, outside = (b"\x0a\x00\x00\x05", b"\xc6\x33\x64\x07") if alen == 4 else (b"\x20" + bytes(15), b"\x30" + bytes(15))
    state = struct.pack(prefix + "IIIIiIIIi", nst_state, 100, 200, 65535 << 7, 7, 300, 400, 29200, 0)
    rec = {
        "flags": 6, "proto": proto, "ifname": "wm0", "state": state,
        "forw-key": {"proto": proto, "sport": port_to_word(sport, order), "dport": port_to_word(dport, order),
                     "saddr": inside, "daddr": outside, "ifname": "???", "di": 2},
        "back-key": {"proto": proto, "sport": port_to_word(dport, order), "dport": port_to_word(sport, order),
                     "saddr": outside, "daddr": inside, "ifname": "???", "di": 1},
        "alen": alen,
    }
    if nat:
        rec["nat"] = nat
    rec.update(overrides)
    return rec


def snapshot(conns, order="little", **extra):
    reply = {"version": 22, "params": {"state.key.interface": 1}, "params-defaults": {}}
    if conns:
        reply["conn-list"] = conns
    reply.update(extra)
    reply.update({"active": True, "errno": 0})
    return NpfSnapshot.from_packed(encode(reply, order), "fw1.npf")


@pytest.mark.parametrize("order", ["little", "big"])
def test_ports_and_state_decode_in_the_savers_byte_order(order):
    conn = snapshot([record(order)], order).connections[0]
    assert (conn.forw.sport, conn.forw.dport, conn.back.sport, conn.back.dport) == (1028, 443, 443, 1028)
    assert conn.state == ConnState(4, (PeerWindow(100, 200, 65535 << 7, 7), PeerWindow(300, 400, 29200, 0)))
    assert conn.state_name == "ESTABLISHED" and conn.valid and conn.keys_need_repair


@pytest.mark.parametrize("order", ["little", "big"])
def test_records_re_encode_to_what_was_saved(order):
    saved = [record(order), record(order, proto=17, sport=53, dport=5353, nst_state=2, ifname="re0"),
             record(order, alen=16, nat={"ifname": "wm0", "alen": 16, "oaddr": b"\x20" + bytes(15), "oport": 1,
                                         "taddr": b"\x21" + bytes(15), "tport": 2, "nat-policy": 3})]
    snap = snapshot(saved, order)
    assert [conn.to_nvlist(order) for conn in snap.connections] == saved


def test_port_words():
    assert port_from_word(20480, "little") == 80 and port_to_word(80, "little") == 20480
    assert port_from_word(80, "big") == 80


@pytest.mark.parametrize("overrides, problem", [
    ({"alen": 8}, "address length 8"),
    ({"proto": 47}, "protocol 47 is not tracked"),
    ({"state": b"\0" * 35}, "state is 35 bytes"),
    ({"flags": 2}, "not ACTIVE"),
    ({"flags": 0x16}, "unknown flags 0x10"),
    ({"forw-key": {"proto": 17, "sport": 1, "dport": 2, "saddr": b"\0" * 4, "daddr": b"\1" * 4}},
     "key protocol differs"),
    ({"back-key": {"proto": 6, "sport": 1, "dport": 2, "saddr": b"\0" * 4, "daddr": b"\1" * 16}},
     "back-key addresses of 4 and 16 bytes"),
    ({"forw-key": "x"}, "forw-key missing or not an NVLIST"),
    ({"alen": "4"}, "'alen' is not a NUMBER"),
    ({"nat": {"alen": 16, "oaddr": b"\0" * 16, "taddr": b"\0" * 16, "oport": 0, "tport": 0, "nat-policy": 1,
              "ifname": "wm0"}}, "nat address length 16 differs"),
    ({"nat": {"alen": 4, "oaddr": b"\0" * 4, "taddr": b"\0" * 4, "oport": 0, "tport": 0, "nat-policy": 1}},
     "never translates"),
])
def test_invalid_records_say_why(overrides, problem):
    snap = snapshot([record(**overrides), record(sport=2000)])
    bad = snap.connections[0]
    assert not bad.valid and any(problem in text for text in bad.problems), bad.problems
    summary = snap.summary()
    assert summary["valid"] + summary["invalid"] == summary["connections"] == 2
    assert "INVALID" in snap.to_text().splitlines()[3]


def test_nst_state_out_of_range():
    conn = snapshot([record(proto=17, nst_state=3, **{})]).connections[0]
    assert conn.problems == ["state 3 out of range for udp"]


def test_summary_adds_up():
    snap = snapshot([record(), record(sport=1), record(proto=17, sport=53, nst_state=1), record(alen=16),
                     record(proto=99)])
    summary = snap.summary()
    assert summary["connections"] == 5 and summary["valid"] == 4 and summary["invalid"] == 1
    assert summary["by_protocol"] == {"tcp": 3, "udp": 1}
    assert sum(summary["by_state"].values()) == summary["valid"] == summary["ipv4"] + summary["ipv6"]
    assert summary["by_state"]["udp NEW"] == 1 and summary["keys_need_repair"] == 4


def test_text_form():
    text = snapshot([record(), record(alen=16, proto=1, nst_state=2)]).to_text().splitlines()
    assert text[0] == "# NPF snapshot of fw1.npf: version 22, little byte order, filtering active"
    assert text[3] == "tcp  out 10.0.0.5:1028 198.51.100.7:443 wm0 ESTABLISHED"
    assert text[4] == "icmp out 2000:: 3000:: wm0 ESTABLISHED"


@pytest.mark.parametrize("data, message", [
    (b"garbage", "fw1.npf: not a packed nvlist"),
    (encode({"version": 19}), "fw1.npf: NPF version 19; only version 22"),
    (encode({"version": 22, "conn-list": "x"}), "'conn-list' is not an NVLIST_ARRAY"),
    (encode({"version": 22, "rules": [1]}), "'rules' is not a list of nvlists"),
    (encode({"version": 22, "params": {"x": "y"}}), "'params' is not an nvlist of numbers"),
    (encode({"version": 22})[:-3], "fw1.npf: not a valid packed nvlist"),
])
def test_unreadable_snapshots_name_the_source(data, message):
    with pytest.raises(NpfSnapshotError, match=message):
        NpfSnapshot.from_packed(data, "fw1.npf")


def test_snapshot_of_an_emulated_kernel_round_trips_through_load():
    kernel = NpfKernel()
    device = NpfDevice(abi=Abi(8, True, "little"), syscalls=make_syscalls(kernel))
    conns = [record(sport=1028 + n) for n in range(3)]
    for conn in conns:
        conn["forw-key"]["ifname"] = conn["back-key"]["ifname"] = "wm0"
    device.load({"conn-list": conns})
    snap = NpfSnapshot(device.save(), "little", "emulated")
    assert [c.forw.sport for c in snap.connections] == [1028, 1029, 1030]
    assert snap.summary()["keys_need_repair"] == 3  # the kernel's "???" export


def test_garbled_key_protocol_is_not_a_problem_but_needs_repair():
    rec = record()
    rec["forw-key"]["proto"], rec["back-key"]["proto"] = 104, 100
    conn = snapshot([rec]).connections[0]
    assert conn.valid and conn.keys_need_repair


def _emulated_host():
    kernel = NpfKernel()
    return kernel, NpfDevice(abi=Abi(8, True, "little"), syscalls=make_syscalls(kernel))


def _live_record(sport, ifname="wm0"):
    rec = record(sport=sport)
    if ifname is None:
        del rec["ifname"]
    for key in ("forw-key", "back-key"):
        rec[key]["ifname"] = ifname
        if ifname is None:
            del rec[key]["ifname"]
    return rec


def test_saved_connections_after_repair_match_traffic_again_after_a_reboot():
    kernel, device = _emulated_host()
    device.load({"conn-list": [_live_record(1028), _live_record(1029)]})
    snap = NpfSnapshot(device.save(), "little", "before reboot")
    assert snap.summary()["keys_need_repair"] == 2
    kernel.reboot()
    for conn in snap.connections:
        assert conn.repair_keys(snap.params["state.key.interface"] == 1)
        assert not conn.keys_need_repair and conn.valid
    device.load({"conn-list": [conn.to_nvlist("little") for conn in snap.connections]})
    inside, outside = b"\x0a\x00\x00\x05", b"\xc6\x33\x64\x07"
    for sport in (1028, 1029):
        word = port_to_word(sport, "little")
        https = port_to_word(443, "little")
        assert kernel.match_packet("wm0", 2, 6, inside, word, outside, https) is not None
        assert kernel.match_packet("wm0", 1, 6, outside, https, inside, word) is not None


def test_repair_without_key_interfaces_drops_the_key_names():
    conn = snapshot([record()]).connections[0]
    assert conn.repair_keys(False)
    assert (conn.forw.ifname, conn.back.ifname, conn.forw.proto) == (None, None, 6)
    assert conn.forw.di == 2  # the direction stays


def test_stateful_all_connection_key_interface_is_unrecoverable():
    rec = record()
    del rec["ifname"]
    conn = snapshot([rec]).connections[0]
    assert conn.repair_keys(True) is False


_FIELDS = ["flags", "proto", "ifname", "state", "forw-key", "back-key", "alen", "nat", "sport", "dport", "saddr",
           "daddr", "di", "oaddr", "taddr", "oport", "tport", "nat-policy"]


def _hostile_values(children):
    return (st.none() | st.booleans() | st.integers(0, 2 ** 64 - 1) | st.text(max_size=4)
            | st.binary(min_size=1, max_size=40) | st.lists(st.integers(0, 9), min_size=1, max_size=2) | children)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.recursive(st.dictionaries(st.sampled_from(_FIELDS), _hostile_values(st.nothing()), max_size=8),
                             lambda children: st.dictionaries(st.sampled_from(_FIELDS), _hostile_values(children),
                                                              max_size=8), max_leaves=20), min_size=1, max_size=3),
       st.sampled_from(["little", "big"]))
# Found by CI: a NAT entry with an address length in a connection without one (a TypeError then).
@example(conn_list=[{"flags": None, "nat": {"flags": None, "alen": 0}}], order="little")
def test_property_any_record_decodes_with_problems_never_an_exception(conn_list, order):
    snap = NpfSnapshot({"version": 22, "conn-list": conn_list}, order, "hostile")
    summary = snap.summary()
    assert summary["valid"] + summary["invalid"] == len(conn_list)
    assert len(snap.to_text().splitlines()) == 3 + len(conn_list)


def test_a_big_endian_snapshot_loads_into_a_little_endian_kernel():
    # Reference 6.15: the 36-byte state and the port words are host-endian in the nvlist;
    # the records hold real values, so re-encoding for the target converts both.
    source = snapshot([record("big", sport=40000)], "big").connections[0]
    source.repair_keys(True)
    target, device = _emulated_host()
    device.load({"conn-list": [source.to_nvlist("little")]})
    loaded = NpfSnapshot(device.save(), "little", "target").connections[0]
    assert (loaded.forw.sport, loaded.forw.dport) == (40000, 443)
    assert loaded.state == source.state
    assert target.match_packet("wm0", 2, 6, b"\x0a\x00\x00\x05", port_to_word(40000, "little"),
                               b"\xc6\x33\x64\x07", port_to_word(443, "little")) is not None


def test_hostile_interface_names_stay_on_one_line():
    text = snapshot([record(ifname="wm0\ntcp  out 1.2.3.4:1 5.6.7.8:2 evil ESTABLISHED")]).to_text().splitlines()
    assert len(text) == 4 and text[3].split()[4] == "wm0\\ntcp\\x20\\x20out\\x201.2.3.4:1\\x205.6.7.8:2\\x20evil\\x20ESTABLISHED"
