"""Fidelity audit of the NPF model (2026-12-03): rules where it was kinder than NetBSD's N20 kernel.

Each test states one rule, the NPF reference section it comes from (or the NetBSD/rmind source the
reference points to), and failed on the model before the fix. docs/testing.md lists the audit.
"""

import errno
import struct

import pytest

from ansible_collections.netbsd.pf.tests.npfemu.kernel import NotModelled
from ansible_collections.netbsd.pf.tests.npfemu.libnv import unpack

NAT_PORTMAP_RULE = [(3, "type", 2), (3, "flags", 2), (7, "nat-addr", b"\xc0\x00\x02\x01"), (3, "nat-policy", 7)]


def load_conns(npf, conns, nat=None):
    pairs = [(3, "version", 22)]
    if nat:
        pairs.append((11, "nat", nat))
    pairs.append((11, "conn-list", conns))
    return npf.load(pairs)


def einval(npf, pairs):
    assert load_error(npf, pairs) == errno.EINVAL


def load_error(npf, pairs):
    with pytest.raises(OSError) as caught:
        npf.ioctl("LOAD", npf.ref_arg(npf.nvlist(pairs)))
    return caught.value.errno


def network_port(port):
    """The host reading of a network-order port word, as nvlists carry ports (3.5)."""
    return struct.unpack("<H", struct.pack(">H", port))[0]


# --- params: validated before anything is built (3.7; npf_ctl.c npf_mk_params, npf_params.c npf_param_check)

def test_load_refuses_a_param_the_kernel_does_not_know_with_enoent(npf):
    assert load_error(npf, [(5, "params", [(3, "state.key.nonsense", 1)])]) == errno.ENOENT
    assert "state.key.nonsense" not in npf.save()["params"]


@pytest.mark.parametrize("name, value", [
    ("state.key.interface", 2), ("portmap.min_port", 80), ("portmap.max_port", 65536), ("gc.step", 0),
    ("gc.interval_max", 10001), ("state.tcp.timeout.established", 2 ** 32 - 1),  # (int) -1 < 0
])
def test_load_refuses_a_param_outside_its_range_with_einval(npf, name, value):
    before = npf.save()["params"][name]
    assert load_error(npf, [(5, "params", [(3, name, value)])]) == errno.EINVAL
    assert npf.save()["params"][name] == before


def test_a_bad_param_fails_the_load_before_connections_are_imported(npf):
    load_conns(npf, [npf.conn(sport=1)])
    created = npf.kernel.stats[5]
    assert load_error(npf, [(5, "params", [(3, "portmap.min_port", 1)]),
                            (11, "conn-list", [npf.conn(sport=2)])]) == errno.EINVAL
    assert npf.kernel.stats[5] == created
    assert [c["forw-key"]["sport"] for c in npf.save()["conn-list"]] == [1]


def test_save_exports_every_parameter_netbsd_registers(npf):
    reply = npf.save()
    assert sorted(reply["params"]) == sorted(reply["params-defaults"]) == sorted([
        "ip4.reassembly", "ip6.reassembly", "state.key.interface", "state.key.direction", "gc.step",
        "gc.interval_min", "gc.interval_max", "portmap.min_port", "portmap.max_port",
        "state.generic.timeout.closed", "state.generic.timeout.new", "state.generic.timeout.established",
        "state.tcp.timeout.new", "state.tcp.timeout.established", "state.tcp.timeout.half_close",
        "state.tcp.timeout.close", "state.tcp.timeout.time_wait", "state.tcp.strict_order_rst",
        "state.tcp.max_ack_win"])
    assert reply["params"]["state.tcp.timeout.established"] == 86400


def test_connection_timeouts_are_the_params_in_force(npf):
    # npf_state_tcp_timeout / npf_state_etime read the params (3.4); params apply after the swap (3.7)
    npf.load([(5, "params", [(3, "state.tcp.timeout.established", 100), (3, "state.generic.timeout.established", 5)])])
    load_conns(npf, [npf.conn(sport=1), npf.conn(sport=2, proto=17, state=npf.tcp_state(2))])
    npf.kernel.clock.advance(6)
    assert [c["forw-key"]["sport"] for c in npf.save()["conn-list"]] == [1]
    npf.kernel.clock.advance(95)
    assert "conn-list" not in npf.save()


# --- ioctl(2) before the driver (NPF 2.3: sys_ioctl; pf reference 5.1 step 2)

def test_an_argument_longer_than_a_page_is_enotty_before_the_driver(npf):
    request = 0xC0000000 | (0x1FFF << 16) | (ord("N") << 8) | 102
    with pytest.raises(OSError) as caught:
        npf.kernel.ioctl(npf.handle, request, bytearray(0x1FFF), npf.memory)
    assert caught.value.errno == errno.ENOTTY


# --- destroyed connections give back what they held (2.7 counters; 3.6 step 5 port map; 3.7 replacement)

def test_a_failed_load_counts_every_discarded_connection_destroyed(npf):
    before = list(npf.kernel.stats)
    einval(npf, [(11, "conn-list", [npf.conn(sport=1), npf.conn(sport=2), npf.conn(sport=2)])])
    assert npf.kernel.stats[5] == before[5] + 3 and npf.kernel.stats[6] == before[6] + 3


def test_replaced_connections_are_destroyed_and_free_their_nat_port(npf):
    nat = {"taddr": b"\xc0\x00\x02\x01", "tport": network_port(40000), "policy": 7}
    load_conns(npf, [npf.conn(sport=1, nat=nat)], nat=[NAT_PORTMAP_RULE])
    npf.kernel.clock.advance(86401)  # let the imported NAT entry expire: SAVE works again
    assert "conn-list" not in npf.save()
    destroyed = npf.kernel.stats[6]
    load_conns(npf, [npf.conn(sport=2, nat=nat)], nat=[NAT_PORTMAP_RULE])  # port 40000 is free again
    load_conns(npf, [npf.conn(sport=3)], nat=[NAT_PORTMAP_RULE])  # replaces the table: sport 2 is destroyed
    assert npf.kernel.stats[6] == destroyed + 1
    assert npf.kernel.stats[8] == 2  # NAT_DESTROY: the expired entry and the replaced one
    load_conns(npf, [npf.conn(sport=4, nat=nat)], nat=[NAT_PORTMAP_RULE])


# --- the interface map (npf_if.c: npf_ifmap_register/lookup/flush, N20)

def test_a_name_longer_than_15_characters_takes_a_new_slot_at_every_registration(npf):
    # the slot keeps 15 characters (strlcpy IFNAMSIZ) but the lookup compares the whole given name
    name = "averylongifname0"
    load_conns(npf, [npf.conn(ifname=name, key_ifname=name)])
    assert npf.kernel.ifmap == [name[:15]] * 3


def test_interface_ids_from_before_a_flush_name_nothing_afterwards(npf):
    load_conns(npf, [npf.conn(ifname="wm0", key_ifname="wm0")])
    npf.load([(2, "flush", True)])
    npf.load([(3, "version", 22)])  # tracking on again: the survivor reappears (3.7)
    traffic = unpack(npf.nvlist([(5, "c", npf.conn(sport=9, ifname="wm1", key_ifname="wm1"))]))["c"]
    npf.kernel.add_connections([traffic])  # wm1 takes the first slot of the new epoch
    survivor = [c for c in npf.save()["conn-list"] if c["forw-key"]["sport"] == 0x1004][0]
    assert survivor["ifname"] == "???"  # ids grow by 64 at every flush (ifmap_off)
    assert npf.kernel.match_packet("wm1", 2, 6, b"\x0a\0\0\x05", 0x1004, b"\xc6\x33\x64\x07", 0x5000) is None


def test_rules_register_their_interface_names(npf):
    # npf_rule_alloc registers a rule's ifname: the 64 slots are shared with connections
    rules = [[(4, "ifname", "r%d" % n)] for n in range(64)]
    assert load_error(npf, [(11, "rules", rules), (11, "conn-list", [npf.conn()])]) == errno.EINVAL
    assert npf.kernel.ifmap == ["r%d" % n for n in range(64)]


def test_a_section_of_another_type_counts_as_absent(npf):
    # nvlist_exists_nvlist_array is false for another type: the load goes on without it (6.10)
    load_conns(npf, [npf.conn(sport=1)])
    assert npf.load([(3, "rules", 5), (4, "conn-list", "none")]) == {"errno": 0}
    assert [c["forw-key"]["sport"] for c in npf.save()["conn-list"]] == [1]
    assert "rules" not in npf.save()


# --- tables (npf_tableset.c npf_table_check, N20: id, then type, then name)

@pytest.mark.parametrize("tables, code", [
    ([[(4, "name", "a"), (3, "type", 1)]], errno.EINVAL),  # no id: UINT64_MAX
    ([[(4, "name", "a"), (3, "type", 1), (3, "id", 1)]], errno.EINVAL),  # id not below the number of tables
    ([[(4, "name", "a"), (3, "type", 1), (3, "id", 0)], [(4, "name", "b"), (3, "type", 1), (3, "id", 0)]],
     errno.EEXIST),
    ([[(4, "name", "a"), (3, "type", 9), (3, "id", 0)]], errno.EINVAL),  # not IPSET, LPM, CONST or IFADDR
])
def test_table_ids_and_types_are_checked(npf, tables, code):
    assert load_error(npf, [(11, "tables", tables)]) == code


def test_tables_are_exported_with_the_ids_they_were_loaded_with(npf):
    npf.load([(11, "tables", [[(4, "name", "a"), (3, "type", 2), (3, "id", 1)],
                              [(4, "name", "b"), (3, "type", 1), (3, "id", 0)]])])
    assert npf.save()["tables"] == [{"name": "a", "type": 2, "id": 1}, {"name": "b", "type": 1, "id": 0}]


# --- CONN_LOOKUP (npf_conn.c npf_conn_find, N20: import the key, look it up, ACTIVE and not expiring)

def lookup_error(npf, key):
    with pytest.raises(OSError) as caught:
        npf.ioctl("CONN_LOOKUP", npf.ref_arg(npf.nvlist([(5, "key", key)])))
    return caught.value.errno


def test_lookup_of_a_key_no_connection_can_have_is_esrch_not_einval(npf):
    load_conns(npf, [npf.conn()])
    assert lookup_error(npf, npf.key(b"\0" * 8, 1, b"\1" * 8, 2, ifname="wm0", di=2)) == errno.ESRCH


def test_lookup_reads_the_table_even_while_tracking_is_off(npf):
    # the ioctl looks in the connection database itself; only packets check the tracking switch.
    # Keys without an interface: a flush renumbers interfaces, so a keyed lookup would miss anyway.
    load_conns(npf, [npf.conn(key_ifname=None)])
    npf.load([(2, "flush", True)])
    assert "conn-list" not in npf.save()
    data = npf.nvlist_call("CONN_LOOKUP", npf.nvlist([(5, "key", npf.key(
        b"\x0a\0\0\x05", 0x1004, b"\xc6\x33\x64\x07", 0x5000, di=2))]))[0]
    assert unpack(data)["flow"] == 0


# --- what LOAD builds besides connections (npf_ctl.c N20: npf_mk_algs, npf_mk_singlerule, npf_mk_singlenat)

@pytest.mark.parametrize("pairs", [
    [(11, "algs", [[(3, "id", 1)]])],  # an ALG without a name
    [(11, "algs", [[(4, "name", "pptp")]])],  # an ALG NetBSD does not have (npf_alg_icmp only)
    [(11, "rules", [[(4, "rproc", "log0")]])],  # a rule procedure not in the request
    [(11, "nat", [[(3, "type", 2), (3, "nat-table-id", 0)]])],  # a NAT table id not in the request
])
def test_load_refuses_references_to_what_it_does_not_carry(npf, pairs):
    assert load_error(npf, pairs) == errno.EINVAL


def test_load_takes_the_icmp_alg_and_a_known_rule_procedure(npf):
    assert npf.load([(11, "algs", [[(4, "name", "icmp")]]), (11, "rprocs", [[(4, "name", "log0")]]),
                     (11, "rules", [[(4, "rproc", "log0")]])]) == {"errno": 0}


def test_the_table_request_netbsd_implements_is_refused_loudly_not_answered(npf):
    # npf_dev_ioctl handles IOC_NPF_TABLE itself (2.4); EINVAL would be an answer the model cannot know
    request = 0x80284E67 if npf.kernel.pointer_size == 8 else 0x80204E67
    with pytest.raises(NotModelled):
        npf.kernel.ioctl(npf.handle, request, bytearray(40), npf.memory)


# --- libnv terminators (nvlist_xunpack: UP and ARRAY_NEXT both climb to the parent when there is one)

def test_an_array_next_closing_a_nested_list_climbs_like_an_up(npf):
    packed = bytearray(npf.nvlist([(5, "params", [(3, "gc.step", 7)])]))
    assert packed[-20] == 255
    packed[-20] = 254  # NVLIST_ARRAY_NEXT: no next element, so libnv goes to the parent
    npf.nvlist_call("LOAD", bytes(packed))
    assert npf.kernel.params["gc.step"] == 7


def test_an_up_inside_an_array_element_leaves_the_other_elements_empty(npf):
    packed = bytearray(npf.nvlist([(11, "rules", [[(3, "prio", 1)]]), (2, "flush", False)]))
    nitems = 19 + 11
    assert struct.unpack_from("<Q", packed, nitems)[0] == 1
    struct.pack_into("<Q", packed, nitems, 2)  # two elements announced, one written
    terminator = packed.index(b"\xfe\x01\x00")
    packed[terminator] = 255  # the element ends with NVLIST_UP: back to the top list
    npf.nvlist_call("LOAD", bytes(packed))
    assert npf.kernel.config["rules"] == [{"prio": 1}, {}]


# --- what a packet finds (npf_conn.c N20: npf_conn_lookup -> npf_conn_check)

INSIDE, OUTSIDE = b"\x0a\0\0\x05", b"\xc6\x33\x64\x07"


def test_a_connection_without_the_active_flag_matches_no_packet(npf):
    load_conns(npf, [npf.conn(flags=2)])  # PFIL_OUT only
    assert npf.kernel.match_packet("wm0", 2, 6, INSIDE, 0x1004, OUTSIDE, 0x5000) is None


def test_an_interface_bound_connection_checks_the_packets_direction_against_its_flow(npf):
    # keys without direction (state.key.direction 0): the flags' first direction picks the flow
    npf.load([(5, "params", [(3, "state.key.direction", 0)])])
    load_conns(npf, [[item for item in npf.conn() if item[1] not in ("forw-key", "back-key")]
                     + [(5, "forw-key", npf.key(INSIDE, 0x1004, OUTSIDE, 0x5000, ifname="wm0")),
                        (5, "back-key", npf.key(OUTSIDE, 0x5000, INSIDE, 0x1004, ifname="wm0"))]])
    assert npf.kernel.match_packet("wm0", 2, 6, INSIDE, 0x1004, OUTSIDE, 0x5000) is not None
    assert npf.kernel.match_packet("wm0", 1, 6, OUTSIDE, 0x5000, INSIDE, 0x1004) is not None
    assert npf.kernel.match_packet("wm0", 1, 6, INSIDE, 0x1004, OUTSIDE, 0x5000) is None  # forward tuple, inbound


def test_an_interface_bound_connection_matches_only_on_its_interface(npf):
    # keys without interface (state.key.interface 0): the connection's own interface still binds it
    npf.load([(5, "params", [(3, "state.key.interface", 0)]), (11, "rules", [[(4, "ifname", "wm1")]])])
    load_conns(npf, [npf.conn(key_ifname=None)])
    assert npf.kernel.match_packet("wm0", 2, 6, INSIDE, 0x1004, OUTSIDE, 0x5000) is not None
    assert npf.kernel.match_packet("wm1", 2, 6, INSIDE, 0x1004, OUTSIDE, 0x5000) is None
