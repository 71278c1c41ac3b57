import ipaddress
import struct

import pytest
from hypothesis import given, settings, strategies as st

from ansible_collections.netbsd.pf.plugins.module_utils.abi import protocol_number
from ansible_collections.netbsd.pf.plugins.module_utils.records import StateCodec, state_to_dict
from ansible_collections.netbsd.pf.plugins.module_utils.transforms import (
    AddressMatch, KernelCriteria, PortMatch, StateFilter, TransformError, TransformStats, rename_interfaces,
    state_filter_from, transform_blocks,
)
from ansible_collections.netbsd.pf.tests.unit.plugins.module_utils.statefactory import random_block

CODEC = StateCodec("little")


def make(**fields):
    base = {"af": 2, "proto": 6, "direction": 2, "ifname": b"wm0", "expire": 100, "timeout": 2,
            "lan_addr": bytes([10, 0, 0, 1]) + bytes(12), "lan_port": struct.pack(">H", 1000),
            "gwy_addr": bytes([10, 0, 0, 1]) + bytes(12), "gwy_port": struct.pack(">H", 1000),
            "ext_addr": bytes([192, 0, 2, 9]) + bytes(12), "ext_port": struct.pack(">H", 443)}
    base.update(fields)
    return CODEC.from_dict(base)


def fields(block):
    return [dict(zip(("ifname", "expire", "proto"), (v[1].rstrip(b"\0"), v[35], v[46]))) for v in CODEC.iter_unpack(block)]


def test_filters_each_criterion():
    block = b"".join([
        make(), make(ifname=b"re0"), make(proto=17), make(direction=1),
        make(af=24, lan_addr=bytes(15) + b"\1", gwy_addr=bytes(15) + b"\1", ext_addr=bytes(15) + b"\2"),
        make(ext_port=struct.pack(">H", 22)),
    ])
    assert StateFilter(interfaces=["re0"]).mask(block) == [False, True, False, False, False, False]
    assert StateFilter(protocols=["udp"]).mask(block) == [False, False, True, False, False, False]
    assert StateFilter(protocols=[17]).mask(block) == StateFilter(protocols=["udp"]).mask(block)
    assert StateFilter(direction="in").mask(block) == [False, False, False, True, False, False]
    assert StateFilter(address_family="inet6").mask(block) == [False, False, False, False, True, False]
    assert StateFilter(ports=[22]).mask(block) == [False, False, False, False, False, True]
    assert StateFilter(networks=["::/127"]).mask(block) == [False, False, False, False, True, False]
    assert StateFilter(networks=["192.0.2.0/24"]).mask(block) == [True, True, True, True, False, True]
    assert StateFilter(networks=["10.0.0.0/8"], protocols=["tcp"], interfaces=["wm0"]).mask(block) == [
        True, False, False, True, False, True]
    assert not StateFilter().active


def test_bad_filter_arguments():
    for kwargs in ({"protocols": ["nosuch"]}, {"networks": ["10.0.0.300/8"]}, {"address_family": "ipx"},
                   {"direction": "sideways"}, {"ports": [70000]}):
        with pytest.raises(TransformError):
            StateFilter(**kwargs)


def test_rename_interfaces():
    block = make() + make(ifname=b"re0") + make(ifname=b"all")
    renamed, count = rename_interfaces(block, {"wm0": "ixg0", "re0": "re15abcdefghijk"})
    assert count == 2
    assert [f["ifname"] for f in fields(renamed)] == [b"ixg0", b"re15abcdefghijk", b"all"]
    with pytest.raises(TransformError, match="1..15"):
        rename_interfaces(block, {"wm0": "a" * 16})


def test_pipeline_counts():
    block = random_block(100, "little", seed=12)
    stats = TransformStats()
    out = b"".join(transform_blocks([block[:2400], block[2400:]], StateFilter(protocols=["tcp"]), {"wm0": "wm1"}, stats))
    tcp = sum(1 for v in CODEC.iter_unpack(block) if v[46] == 6)
    wm0 = sum(1 for v in CODEC.iter_unpack(block) if v[46] == 6 and v[1].rstrip(b"\0") == b"wm0")
    assert stats.read == 100 and stats.filtered == 100 - tcp
    assert stats.kept == len(out) // 240 == tcp and stats.renamed == wm0


# --- the one matcher against a per-record reading of the options ------------------------

def _record_matches_filters(state, criteria):
    """What the filters mean, read off records.state_to_dict one record at a time."""
    if "interfaces" in criteria and state["ifname"] not in criteria["interfaces"]:
        return False
    if "protocols" in criteria and state["proto_number"] not in [protocol_number(p) for p in criteria["protocols"]]:
        return False
    if "address_family" in criteria and state["af"] != criteria["address_family"]:
        return False
    if "direction" in criteria and state["direction"] != criteria["direction"]:
        return False
    hosts = [state[name] for name in ("lan", "gwy", "ext")]
    if "ports" in criteria and not any(host["port"] in criteria["ports"] for host in hosts):
        return False
    if "networks" in criteria:
        nets = [ipaddress.ip_network(n, strict=False) for n in criteria["networks"]]
        family = {"inet": 4, "inet6": 6}.get(state["af"])
        return any(net.version == family and ipaddress.ip_address(host["address"]) in net for net in nets for host in hosts)
    return True


def _record_matches_kernel(state, af, proto, source, destination, source_port, destination_port):
    """DIOCKILLSTATES's compare (reference 5.9) read off records.state_to_dict."""
    if (af and state["af"] != {2: "inet", 24: "inet6"}[af]) or (proto and state["proto_number"] != proto):
        return False
    src, dst = (state["lan"], state["ext"]) if state["direction"] == "out" else (state["ext"], state["lan"])
    for network, host in ((source, src), (destination, dst)):
        if state["af"] not in ("inet", "inet6"):
            return False
        if network is not None and ipaddress.ip_address(host["address"]) not in ipaddress.ip_network(network):
            return False
    for ports, host in ((source_port, src), (destination_port, dst)):
        if ports is not None and not ports[0] <= host["port"] <= ports[1]:
            return False
    return True


FILTER_CRITERIA = st.fixed_dictionaries({}, optional={
    "interfaces": st.lists(st.sampled_from(["all", "wm0", "re0", "vioif0", "tap0123456789ab", "nosuch0"]), max_size=3),
    "protocols": st.lists(st.sampled_from(["tcp", "udp", "icmp", 58, 47, 253]), max_size=3),
    "address_family": st.sampled_from(["inet", "inet6"]),
    "direction": st.sampled_from(["in", "out"]),
    "ports": st.lists(st.integers(0, 65535), max_size=2),
    "networks": st.lists(st.sampled_from(["0.0.0.0/1", "128.0.0.0/2", "192.0.0.0/3", "::/1", "::/96", "8000::/1"]),
                         max_size=2),
})


@settings(max_examples=60, deadline=None)
@given(criteria=FILTER_CRITERIA, seed=st.integers(0, 1000))
def test_the_matcher_keeps_the_meaning_of_filters(criteria, seed):
    block = random_block(60, "little", seed=seed)
    states = [state_to_dict(block[i * 240:(i + 1) * 240], "little") for i in range(60)]
    assert StateFilter(**criteria).mask(block) == [_record_matches_filters(state, criteria) for state in states]


@settings(max_examples=60, deadline=None)
@given(af=st.sampled_from([0, 2, 24]), proto=st.sampled_from([0, 6, 17]),
       source=st.sampled_from([None, "0.0.0.0/1", "128.0.0.0/2", "::/1", "8000::/2"]),
       destination=st.sampled_from([None, "0.0.0.0/2", "::/2"]),
       source_port=st.sampled_from([None, "1024-40000", "0-32767"]), destination_port=st.sampled_from([None, "32768-65535"]),
       seed=st.integers(0, 1000))
def test_kernel_criteria_keep_the_meaning_of_diockillstates(af, proto, source, destination, source_port, destination_port,
                                                            seed):
    if source and destination and (":" in source) != (":" in destination):
        destination = None      # flush.Selection refuses networks of two families
    for network in (source, destination):
        if network is not None:
            af = 24 if ":" in network else 2     # as flush.Selection sets it
    block = bytearray(random_block(60, "little", seed=seed))
    block[12 * 240 + 232] = 0      # a state of no known family: matched by nothing
    criteria = KernelCriteria(af, proto, *[None if value is None else kind(value) for kind, value in (
        (AddressMatch, source), (AddressMatch, destination), (PortMatch, source_port), (PortMatch, destination_port))])
    states = [state_to_dict(bytes(block[i * 240:(i + 1) * 240]), "little") for i in range(60)]
    ranges = [None if text is None else tuple(int(p) for p in text.split("-")) for text in (source_port, destination_port)]
    expected = [_record_matches_kernel(state, af, proto, source, destination, *ranges) for state in states]
    assert StateFilter().narrowed(criteria).mask(block) == expected
    assert not expected[12]


def test_narrowed_keeps_the_filters_and_clear_compares_the_interface_only():
    block = b"".join([make(), make(ifname=b"re0"), make(ifname=b"re0", proto=17), make(ifname=b"re0", af=0)])
    by_proto = StateFilter(protocols=["tcp"])
    on_re0 = KernelCriteria(interface="re0")
    assert by_proto.narrowed(on_re0).mask(block) == [False, True, False, False]
    assert StateFilter().narrowed(on_re0, compare_peers=False).mask(block) == [False, True, True, True]
    assert by_proto.mask(block) == [True, True, False, True]
    with pytest.raises(TransformError, match="not ASCII"):
        KernelCriteria(interface="w\u00e90")


def test_kill_arguments_are_the_built_fields():
    criteria = KernelCriteria(24, 6, AddressMatch("2001:db8::/32"), None, PortMatch("1024-2048"), PortMatch(443), "wm0")
    assert criteria.kill_arguments() == {
        "af": 24, "proto": 6, "src": (bytes.fromhex("20010db8") + bytes(12), b"\xff" * 4 + bytes(12)), "dst": None,
        "src_port": (9, 1024, 2048), "dst_port": (2, 443, 0), "ifname": b"wm0"}


def test_a_non_ascii_interface_is_a_clear_error():
    class OptionError(Exception):
        pass
    with pytest.raises(OptionError, match="filters: interface name 'w\u00e90' is not ASCII"):
        state_filter_from({"filters": {"interfaces": ["w\u00e90"]}}, OptionError)
