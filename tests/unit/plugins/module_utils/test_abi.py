import json
import os
import struct

import pytest

from ansible_collections.netbsd.pf.plugins.module_utils import abi
from ansible_collections.netbsd.pf.plugins.module_utils.records import STATE_FORMAT

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
with open(os.path.join(FIXTURES, "netbsd-pf-layouts-subset.json")) as handle:
    LAYOUTS = json.load(handle)["abis"]


def abi_for(name):
    measured = LAYOUTS[name]
    return abi.Abi(measured["pointer_size"], measured["pf_status_align"] == 8, measured["endianness"])


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_sizes_match_compiler_measurements(name):
    measured, computed = LAYOUTS[name], abi_for(name)
    assert computed.pfioc_states_size == measured["sizes"]["pfioc_states"]
    assert computed.pfioc_state_kill_size == measured["sizes"]["pfioc_state_kill"]
    assert computed.pf_status_size == measured["sizes"]["pf_status"] == struct.calcsize(computed.pf_status_format)
    assert measured["sizes"]["pfsync_state"] == abi.RECORD_SIZE == struct.calcsize("<" + STATE_FORMAT)
    assert computed.pfioc_states_buf_offset == measured["pfioc_states_buf_offset"]


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_kill_offsets_match(name):
    fields = LAYOUTS[name]["kill_fields"]
    offsets = abi_for(name).kill_offsets
    for side in ("src", "dst"):
        assert offsets[side + ".addr"] == fields["psk_%s.addr.v.a.addr" % side]
        assert offsets[side + ".mask"] == fields["psk_%s.addr.v.a.mask" % side]
        assert offsets[side + ".port"] == fields["psk_%s.port" % side]
        assert offsets[side + ".neg"] == fields["psk_%s.neg" % side]
        assert offsets[side + ".port_op"] == fields["psk_%s.port_op" % side]
    assert offsets["proto"] == fields["psk_proto"]
    assert offsets["ifname"] == fields["psk_ifname"]


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_ioctl_numbers_computed_like_ioccom(name):
    measured = LAYOUTS[name]["ioctls"]
    computed = abi_for(name).ioctls
    for request, number in computed.items():
        assert number == measured[request], request
    assert "DIOCADDSTATE" not in computed and "DIOCGETSTATE" not in computed


def test_reference_numbers_spot_check():
    assert abi.LP64_LE.ioctls["DIOCGETSTATES"] == 0xc0104419
    assert abi.ILP32_LE.ioctls["DIOCADDSTATES"] == 0xc0084438
    assert abi.ILP32_BE.ioctls["DIOCKILLSTATES"] == 0xc0784429
    assert abi.LP64_BE.ioctls["DIOCGETSTATUS"] == 0xc1a84415


def test_host_abi_is_consistent():
    host = abi.Abi.host()
    assert host.pointer_size in (4, 8)
    assert host in abi.KNOWN_ABIS or host.pointer_size == 4


def test_bad_abi_rejected():
    with pytest.raises(ValueError):
        abi.Abi(2, False, "little")
    with pytest.raises(ValueError):
        abi.Abi(8, True, "middle")


def test_protocol_table_is_netbsds():
    assert abi.protocol_name(6) == "tcp"
    assert abi.protocol_name(58) == "ipv6-icmp"
    assert abi.protocol_name(112) == "vrrp"
    assert abi.protocol_name(4) == "ipv4"
    assert abi.protocol_name(107) == "a/n"
    assert abi.protocol_name(240) == "240"     # not named in NetBSD's /etc/protocols
    assert abi.protocol_number("TCP") == 6
    assert abi.protocol_number("ipv6-icmp") == 58
    assert abi.protocol_number("253") == 253
    with pytest.raises(ValueError, match="unknown protocol"):
        abi.protocol_number("nosuchproto")
    with pytest.raises(ValueError, match="out of range"):
        abi.protocol_number("256")


def test_constants():
    assert abi.AF_INET6 == 24
    assert len(abi.PFTM_DEFAULTS) == abi.PFTM_MAX == 20
    assert abi.PFTM_DEFAULTS[2] == 86400
    assert len(abi.TCP_STATE_NAMES) == 11
    assert 23 in abi.PFTM_ACCEPTED and 20 not in abi.PFTM_ACCEPTED
