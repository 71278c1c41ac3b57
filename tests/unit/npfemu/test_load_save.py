"""LOAD and SAVE semantics, the 2020 export/import defects, expiry (NPF reference 3.3-3.8, 6.5-6.14)."""

import errno
import struct

import pytest

from ansible_collections.netbsd.pf.tests.npfemu.kernel import KernelPanic, NpfKernel, WouldCorrupt

NAT_PORTMAP_RULE = [(3, "type", 2), (3, "flags", 2), (7, "nat-addr", b"\xc0\x00\x02\x01"), (3, "nat-policy", 7)]


def load_conns(npf, conns, nat=None, extra=()):
    pairs = [(3, "version", 22)] + list(extra)
    if nat:
        pairs.append((11, "nat", nat))
    pairs.append((11, "conn-list", conns))
    return npf.load(pairs)


def einval(npf, pairs):
    with pytest.raises(OSError) as caught:
        npf.ioctl("LOAD", npf.ref_arg(npf.nvlist(pairs)))
    assert caught.value.errno == errno.EINVAL


def test_loaded_connections_come_back_in_load_order_with_the_unknown_key_interface(npf):
    load_conns(npf, [npf.conn(sport=0x1004 + n) for n in range(3)])
    saved = npf.save()["conn-list"]
    assert [c["forw-key"]["sport"] for c in saved] == [0x1004, 0x1005, 0x1006]
    first = saved[0]
    assert list(first) == ["flags", "proto", "ifname", "state", "forw-key", "back-key", "alen"]
    assert first["ifname"] == "wm0" and first["flags"] == 6 and first["alen"] == 4
    assert first["forw-key"]["ifname"] == "???" and first["forw-key"]["di"] == 2
    assert first["back-key"]["ifname"] == "???" and first["back-key"]["di"] == 1


@pytest.mark.parametrize("proto, forw, back", [(6, 104, 100), (17, 24, 20), (1, 24, 20)])
def test_exported_key_protocol_is_read_from_the_wrong_bits(npf, proto, forw, back):
    # setkey stores the protocol at bit 20, getkey reads bits 16..23 (npf_connkey.c 1.2)
    load_conns(npf, [npf.conn(proto=proto, state=npf.tcp_state(4 if proto == 6 else 2))])
    saved = npf.save()["conn-list"][0]
    assert (saved["proto"], saved["forw-key"]["proto"], saved["back-key"]["proto"]) == (proto, forw, back)


def test_unrepaired_round_trip_gives_dead_connections_and_repaired_keys_match(npf):
    load_conns(npf, [npf.conn()])
    saddr, daddr = b"\x0a\0\0\x05", b"\xc6\x33\x64\x07"
    assert npf.kernel.match_packet("wm0", 2, 6, saddr, 0x1004, daddr, 0x5000) is not None
    saved = npf.save()["conn-list"]
    with pytest.raises(WouldCorrupt, match="key protocol differs"):
        npf.load([(11, "conn-list", [npf.pairs(conn) for conn in saved])])
    npf.kernel.strict = False  # what the real kernel does with the plain save/load round trip:
    npf.load([(11, "conn-list", [npf.pairs(conn) for conn in saved])])
    assert npf.kernel.connection_count == 1 and "???" in npf.kernel.ifmap
    assert npf.kernel.match_packet("wm0", 2, 6, saddr, 0x1004, daddr, 0x5000) is None
    assert npf.kernel.match_packet("wm0", 1, 6, daddr, 0x5000, saddr, 0x1004) is None


def test_conn_list_replaces_every_connection_and_its_absence_keeps_them(npf):
    load_conns(npf, [npf.conn(sport=1), npf.conn(sport=2)])
    load_conns(npf, [npf.conn(sport=3)])
    assert [c["forw-key"]["sport"] for c in npf.save()["conn-list"]] == [3]
    npf.load([(3, "version", 22)])
    assert [c["forw-key"]["sport"] for c in npf.save()["conn-list"]] == [3]


def test_one_bad_record_fails_the_whole_load_and_changes_nothing(npf):
    load_conns(npf, [npf.conn(sport=1)])
    stats_before = list(npf.kernel.stats)
    einval(npf, [(11, "conn-list", [npf.conn(sport=9, ifname="new0", key_ifname="new0"),
                                    npf.conn(sport=9, ifname="new0", key_ifname="new0")])])  # duplicate key
    assert [c["forw-key"]["sport"] for c in npf.save()["conn-list"]] == [1]
    assert "new0" in npf.kernel.ifmap  # interface names registered so far stay
    # both records count as destroyed: the failing one and the one discarded with the new table (2.7)
    assert npf.kernel.stats[5] == stats_before[5] + 2 and npf.kernel.stats[6] == stats_before[6] + 2


@pytest.mark.parametrize("broken", [
    {"state": b"\0" * 35},
    {"alen": 16},
    {"saddr": b"\x0a\0\0"},
])
def test_record_checks_of_the_import(npf, broken):
    einval(npf, [(11, "conn-list", [npf.conn(**broken)])])
    assert "conn-list" not in npf.save()


def test_key_protocol_of_256_is_refused(npf):
    conn = npf.conn()
    conn[4] = (5, "forw-key", npf.key(b"\x0a\0\0\x05", 1, b"\xc6\x33\x64\x07", 2, proto=256, ifname="wm0", di=2))
    einval(npf, [(11, "conn-list", [conn])])


def test_wrong_type_counts_as_absent(npf):
    conn = [(4, "alen", "4") if item[1] == "alen" else item for item in npf.conn()]
    einval(npf, [(11, "conn-list", [conn])])


def test_65th_interface_name_fails_and_the_first_64_stay_registered(npf):
    conns = [npf.conn(sport=n + 1, ifname="if%d" % n, key_ifname="if%d" % n) for n in range(65)]
    einval(npf, [(11, "conn-list", conns)])
    assert npf.kernel.ifmap == ["if%d" % n for n in range(64)]


def test_undefined_behaviour_is_refused_loudly_in_strict_mode(npf):
    wide = npf.conn(alen=8, saddr=b"\0" * 8, daddr=b"\1" * 8)
    with pytest.raises(WouldCorrupt, match="alen 8"):
        npf.ioctl("LOAD", npf.ref_arg(npf.nvlist([(11, "conn-list", [wide])])))
    npf.kernel.strict = False
    load_conns(npf, [npf.conn(proto=47)])  # a non-strict kernel accepts what the real one accepts
    assert npf.save()["conn-list"][0]["proto"] == 47


def test_nat_entry_imports_then_breaks_every_save_and_lookup(npf):
    nat = {"taddr": b"\xc0\x00\x02\x01", "tport": struct.unpack("<H", struct.pack(">H", 40000))[0], "policy": 7}
    load_conns(npf, [npf.conn(nat=nat)], nat=[NAT_PORTMAP_RULE])
    assert npf.kernel.stats[7] == 1
    for name, packed in (("SAVE", b""), ("CONN_LOOKUP", npf.nvlist([(5, "key", npf.key(
            b"\x0a\0\0\x05", 0x1004, b"\xc6\x33\x64\x07", 0x5000, ifname="wm0", di=2))]))):
        with pytest.raises(OSError) as caught:
            npf.ioctl(name, npf.ref_arg(packed))
        assert caught.value.errno == errno.ENOMEM
    assert not npf.memory.live_replies
    npf.kernel.clock.advance(86401)
    assert "conn-list" not in npf.save()  # expired: SAVE works again


def test_nat_ports_share_one_pool_and_respect_the_port_map(npf):
    def nat(port, taddr=b"\xc0\x00\x02\x01"):
        return {"taddr": taddr, "tport": struct.unpack("<H", struct.pack(">H", port))[0], "policy": 7}
    einval(npf, [(11, "nat", [NAT_PORTMAP_RULE]), (11, "conn-list", [
        npf.conn(sport=1, nat=nat(40000)), npf.conn(sport=2, nat=nat(40000, b"\xc0\x00\x02\x09"))])])
    einval(npf, [(11, "nat", [NAT_PORTMAP_RULE]), (11, "conn-list", [npf.conn(nat=nat(50001))])])
    einval(npf, [(11, "nat", [NAT_PORTMAP_RULE]), (11, "conn-list", [npf.conn(nat={**nat(40000), "policy": 8})])])


def test_nat_import_panics_a_diagnostic_kernel(make_npf):
    npf = make_npf(NpfKernel(diagnostic=True))
    nat = {"taddr": b"\xc0\x00\x02\x01", "tport": struct.unpack("<H", struct.pack(">H", 40000))[0], "policy": 7}
    with pytest.raises(KernelPanic):
        npf.ioctl("LOAD", npf.ref_arg(npf.nvlist([(11, "nat", [NAT_PORTMAP_RULE]),
                                                  (11, "conn-list", [npf.conn(nat=nat)])])))


def test_nat_policy_ids_renumbered_in_reverse_without_connections(npf):
    rules = [[(3, "type", 2), (3, "flags", 0), (3, "nat-policy", 50)], [(3, "type", 1), (3, "flags", 0)]]
    npf.load([(11, "nat", rules)])
    assert [rule["nat-policy"] for rule in npf.save()["nat"]] == [2, 1]
    load_conns(npf, [npf.conn()], nat=rules)
    assert [rule["nat-policy"] for rule in npf.save()["nat"]] == [50, 0]


def test_tables_are_exported_without_entries_and_const_needs_data(npf):
    npf.load([(11, "tables", [[(4, "name", "blocklist"), (3, "type", 1), (3, "id", 0), (7, "entries", b"\x01")]])])
    assert npf.save()["tables"] == [{"name": "blocklist", "type": 1, "id": 0}]
    einval(npf, [(11, "tables", [[(4, "name", "fixed"), (3, "type", 3), (3, "id", 0)]])])
    with pytest.raises(OSError) as caught:
        npf.ioctl("LOAD", npf.ref_arg(npf.nvlist([(11, "tables", [[(4, "name", "t" * 32), (3, "type", 1), (3, "id", 0)]])])))
    assert caught.value.errno == 63  # ENAMETOOLONG on NetBSD
    with pytest.raises(OSError) as caught:
        npf.ioctl("LOAD", npf.ref_arg(npf.nvlist([(11, "rules", [[(4, "name", "a")], [(4, "name", "a")]])])))
    assert caught.value.errno == errno.EEXIST


def test_expiry_is_strictly_after_the_timeout(npf):
    load_conns(npf, [npf.conn(sport=1), npf.conn(sport=2, state=npf.tcp_state(11))])  # ESTABLISHED, TIME_WAIT
    npf.kernel.clock.advance(240)
    assert len(npf.save()["conn-list"]) == 2
    npf.kernel.clock.advance(1)
    assert [c["forw-key"]["sport"] for c in npf.save()["conn-list"]] == [1]


def test_conn_lookup_reports_the_flow_and_esrch(npf):
    load_conns(npf, [npf.conn()])

    def lookup(key):
        data = npf.nvlist_call("CONN_LOOKUP", npf.nvlist([(5, "key", key)]))[0]
        from ansible_collections.netbsd.pf.tests.npfemu.libnv import unpack
        return unpack(data, 0, "little")
    assert lookup(npf.key(b"\x0a\0\0\x05", 0x1004, b"\xc6\x33\x64\x07", 0x5000, ifname="wm0", di=2))["flow"] == 0
    assert lookup(npf.key(b"\xc6\x33\x64\x07", 0x5000, b"\x0a\0\0\x05", 0x1004, ifname="wm0", di=1))["flow"] == 1
    with pytest.raises(OSError) as caught:
        npf.ioctl("CONN_LOOKUP", npf.ref_arg(npf.nvlist([(5, "key", npf.key(
            b"\x0a\0\0\x05", 0x1004, b"\xc6\x33\x64\x07", 0x5000, ifname="wm0", di=1))])))
    assert caught.value.errno == errno.ESRCH


def test_flush_hides_connections_and_a_later_load_shows_survivors(npf):
    load_conns(npf, [npf.conn()])
    npf.load([(2, "flush", True)])
    assert "conn-list" not in npf.save()
    npf.load([(3, "version", 22)])
    assert len(npf.save()["conn-list"]) == 1


def test_reboot_forgets_everything(npf):
    load_conns(npf, [npf.conn()], extra=[(5, "params", [(3, "portmap.max_port", 65535)])])
    npf.kernel.reboot()
    reply = npf.save()
    assert "conn-list" not in reply and reply["params"]["portmap.max_port"] == 49151
