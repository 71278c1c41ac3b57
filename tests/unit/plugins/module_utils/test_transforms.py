import struct

import pytest

from ansible_collections.netbsd.pf.plugins.module_utils.records import StateCodec
from ansible_collections.netbsd.pf.plugins.module_utils.transforms import (
    StateFilter, TransformError, TransformStats, rename_interfaces, transform_blocks,
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
