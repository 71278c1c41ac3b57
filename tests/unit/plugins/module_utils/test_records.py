import ipaddress
import json
import os
import struct

import pytest
from hypothesis import given, settings, strategies as st

from ansible_collections.netbsd.pf.plugins.module_utils import records
from ansible_collections.netbsd.pf.plugins.module_utils.records import (
    FIELD_NAMES, RecordError, StateCodec, inet_ntop, inet_pton, state_to_dict, swap_records,
)
from ansible_collections.netbsd.pf.tests.unit.plugins.module_utils.statefactory import random_block

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def test_struct_offsets_match_reference():
    with open(os.path.join(FIXTURES, "netbsd-pf-layouts-subset.json")) as handle:
        fields = json.load(handle)["abis"]["x86_64"]["pfsync_state_fields"]
    assert struct.calcsize("<" + records.STATE_FORMAT) == 240
    assert fields["expire"] == [records.OFF_EXPIRE, 4]
    assert fields["creatorid"] == [records.OFF_CREATORID, 4]
    assert fields["af"][0] == records.OFF_AF and fields["timeout"][0] == records.OFF_TIMEOUT
    counters = (fields["packets"][0], fields["bytes"][0] + fields["bytes"][1])   # arrays of u32 words
    for offset, size in records.HOST_ORDER_FIELDS:
        in_counters = counters[0] <= offset < counters[1] and size == 4
        assert in_counters or any(spec == [offset, size] for spec in fields.values()), (offset, size)
    assert [0, 8] == fields["id"] and all(offset != 0 for offset, _size in records.HOST_ORDER_FIELDS)


def _reference_name(name):
    """The reference's dotted name of a FIELD_NAMES field and the byte offset of that name's word."""
    for peer in ("src", "dst"):
        if name.startswith(peer + "_"):
            rest = name[len(peer) + 1:]
            return ("%s.scrub.%s" if rest in ("pfss_flags", "pfss_ttl", "scrub_flag", "pfss_ts_mod") else "%s.%s") % (peer, rest), 0
    for counter in ("packets", "bytes"):
        if name.startswith(counter):
            direction, half = name[len(counter)], name.rsplit("_", 1)[1]   # packets1_lo: u32 [1][1]
            return counter, 8 * int(direction) + (4 if half == "lo" else 0)
    for host in ("lan", "gwy", "ext"):
        if name.startswith(host + "_"):
            return "%s.%s" % (host, name[4:]), 0
    return name, 0


@pytest.mark.parametrize("abi", ["x86_64", "i386", "aarch64", "sparc64", "powerpc"])
def test_declared_fields_match_reference(abi):
    with open(os.path.join(FIXTURES, "netbsd-pf-layouts-subset.json")) as handle:
        fields = json.load(handle)["abis"][abi]["pfsync_state_fields"]
    for name, offset, code in records.FIELDS:
        reference, word = _reference_name(name)
        ref_offset, ref_size = fields[reference]
        assert (offset, struct.calcsize("<" + code)) == ((ref_offset + word, 4) if word or reference in ("packets", "bytes")
                                                         else (ref_offset, ref_size)), name
    # Every byte not declared is a pad of the reference.
    declared = set(byte for _name, offset, code in records.FIELDS for byte in range(offset, offset + struct.calcsize("<" + code)))
    pads = set(byte for name, (offset, size) in fields.items() if name.endswith(".pad") for byte in range(offset, offset + size))
    assert declared | pads == set(range(240)) and not declared & pads


def test_state_format_is_derived_from_the_declaration():
    assert struct.calcsize("<" + records.STATE_FORMAT) == 240
    reference_format = "8s16s16s2s6x16s2s6x16s2s6xHBBIIIIHHBB6xHBBIIIIHHBB6x16s5I4I4II8B"   # reference python_struct_formats
    sample = bytes(range(240))
    for prefix in "<>":
        assert struct.unpack(prefix + records.STATE_FORMAT, sample) == struct.unpack(prefix + reference_format, sample)
    assert len(records.FIELDS) == len(FIELD_NAMES) == len(struct.unpack("<" + records.STATE_FORMAT, sample))


@pytest.mark.parametrize("order", ["little", "big"])
def test_partial_struct_reads_fields_at_their_offsets(order):
    block = random_block(3, order, seed=14)
    names = ("ifname", "src_mss", "expire", ("creatorid", "4s"), "af")
    partial = records.partial_struct(order, names)
    assert partial.size == 240 and records.partial_struct(order, names) is partial
    codec = StateCodec(order)
    for values, full in zip(partial.iter_unpack(block), codec.iter_unpack(block)):
        named = dict(zip(FIELD_NAMES, full))
        creatorid = codec.creatorid_bytes(named["creatorid"])
        assert values == (named["ifname"], named["src_mss"], named["expire"], creatorid, named["af"])
    inner = records.partial_struct(order, ("src_pfss_flags", "src_pfss_ttl"), whole_record=False)
    assert inner.size == 3
    assert inner.unpack_from(block, records.OFF_SRC) == codec.unpack(bytes(block[:240]))[records.SRC_BASE:records.SRC_BASE + 2]


def test_partial_struct_refuses_what_the_layout_does_not_allow():
    with pytest.raises(ValueError, match="need a byte order"):
        records.partial_struct(None, ("ifname", "expire"))
    with pytest.raises(ValueError, match="record order"):
        records.partial_struct("little", ("expire", "rule"))
    with pytest.raises(ValueError, match="does not fit"):
        records.partial_struct("little", (("expire", "Q"),))
    with pytest.raises(KeyError):
        records.partial_struct("little", ("no_such_field",))


def test_ifname_helpers():
    assert records.ifname_bytes(b"wm0\0junk\0\0\0\0\0\0\0\0") == b"wm0"
    assert records.ifname_text(b"wm\xff0".ljust(16, b"\0")) == "wm\ufffd0"
    assert records.ifname_text(b"a" * 16) == "a" * 16


@pytest.mark.parametrize("order", ["little", "big"])
def test_codec_round_trip(order):
    block = random_block(50, order, seed=5, text_safe=False)
    codec = StateCodec(order)
    rebuilt = b"".join(codec.pack(values) for values in codec.iter_unpack(block))
    assert rebuilt == block
    first = codec.to_dict(block[:240])
    assert codec.from_dict(first) == block[:240]


def test_swap_preserves_numbers_and_id_bytes():
    little = random_block(30, "little", seed=9, text_safe=False)
    big = swap_records(little, "little")
    assert swap_records(big, "big") == little
    assert swap_records(little, "little", "little") is little
    for a, b in zip(StateCodec("little").iter_unpack(little), StateCodec("big").iter_unpack(big)):
        assert a == b          # every numeric field keeps its value, raw fields their bytes
    assert bytes(big[0:8]) == little[0:8]


def test_block_helpers():
    block = random_block(5, "little", seed=2)
    codec = StateCodec("little")
    assert records.record_count(block) == 5
    with pytest.raises(RecordError, match="whole number"):
        records.record_count(block[:-1])
    assert codec.expires(block) == [v[35] for v in codec.iter_unpack(block)]
    assert [k[0] for k in codec.keys(block)] == [block[i * 240:i * 240 + 8] for i in range(5)]
    assert records.column(block, records.OFF_PROTO) == bytes(v[46] for v in codec.iter_unpack(block))


NTOP_CASES = [
    ("::", "::"), ("::1", "::1"), ("::2", "::2"), ("::10.1.2.3", "::10.1.2.3"),
    ("::ffff:10.1.2.3", "::ffff:10.1.2.3"), ("::ffff:0.0.0.0", "::ffff:0.0.0.0"),
    ("2001:db8::", "2001:db8::"), ("1:0:0:2::3", "1:0:0:2::3"), ("1::2:0:0:3:4", "1::2:0:0:3:4"),
    ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"), ("fe80::1", "fe80::1"),
    ("0:0:0:0:0:1:0:0", "::1:0:0"), ("::0.0.1.2", "::102"), ("1:0:1:0:1:0:1:0", "1:0:1:0:1:0:1:0"),
    ("0:0:1:0:0:1::", "::1:0:0:1:0:0"),
]


@pytest.mark.parametrize("text,printed", NTOP_CASES)
def test_netbsd_inet_ntop(text, printed):
    raw = ipaddress.IPv6Address(text).packed
    assert inet_ntop(24, raw) == printed
    assert inet_pton(24, printed) == raw


def test_inet_helpers_edge_cases():
    assert inet_ntop(2, bytes([10, 0, 0, 1]) + bytes(12)) == "10.0.0.1"
    assert inet_ntop(7, bytes(16)) is None
    assert inet_pton(2, "192.0.2.1") == bytes([192, 0, 2, 1]) + bytes(12)
    for bad in ("1.2.3", "1.2.3.256", "01.2.3.4x", "[::1]", "fe80::1%wm0", "1:2:3:4:5:6:7:8:9", ":::"):
        with pytest.raises(ValueError):
            inet_pton(24 if ":" in bad else 2, bad)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=16, max_size=16))
def test_ntop_pton_inverse(raw):
    text = inet_ntop(24, raw)
    assert inet_pton(24, text) == raw
    assert ipaddress.IPv6Address(text).packed == raw


def test_state_to_dict():
    codec = StateCodec("little")
    record = codec.from_dict({
        "id": bytes(range(8)), "ifname": b"wm0", "af": 2, "proto": 6, "direction": 2,
        "lan_addr": bytes([10, 0, 0, 1]) + bytes(12), "lan_port": b"\x01\xbb",
        "gwy_addr": bytes([10, 0, 0, 1]) + bytes(12), "gwy_port": b"\x01\xbb",
        "ext_addr": bytes([192, 0, 2, 7]) + bytes(12), "ext_port": b"\x00\x50",
        "src_state": 4, "dst_state": 11, "creatorid": 0x1234abcd, "expire": 50, "timeout": 2,
        "packets0_hi": 1, "packets0_lo": 2,
    })
    out = state_to_dict(record, "little")
    assert out["id"] == "0001020304050607" and out["creatorid"] == "1234abcd"
    assert out["lan"] == {"address": "10.0.0.1", "port": 443} and out["ext"]["port"] == 80
    assert out["src"]["state_name"] == "ESTABLISHED" and out["dst"]["state_name"] == "11"
    assert out["direction"] == "out" and out["proto"] == "tcp" and out["af"] == "inet"
    assert out["timeout_name"] == "tcp_established" and out["packets"][0] == (1 << 32) | 2
    assert set(FIELD_NAMES) >= {"id", "creatorid"}


@pytest.mark.parametrize("spelling,printed", [
    ("2001:DB8::1", "2001:db8::1"), ("2001:0db8:0000::0001", "2001:db8::1"), ("0:0:0:0:0:0:0:1", "::1"),
    ("::FFFF:10.1.2.3", "::ffff:10.1.2.3"), ("0:0:0:0:0:ffff:a01:203", "::ffff:10.1.2.3"), ("::0:1", "::1"),
])
def test_inet_pton_of_spellings_inet_ntop_does_not_print(spelling, printed):
    # The C parser is trusted only for texts the ISC printer gives back; these take the rules of records.py.
    assert inet_ntop(24, inet_pton(24, spelling)) == printed
    assert inet_pton(24, spelling) == inet_pton(24, printed)
