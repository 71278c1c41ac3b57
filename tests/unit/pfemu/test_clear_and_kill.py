"""Sections 5.8 and 5.9: DIOCCLRSTATES and DIOCKILLSTATES."""

import pytest

LAN = b"\x0a\x00\x00\x05"
EXT = b"\xc6\x33\x64\x07"
V6_LAN = bytes.fromhex("fd000000000000000000000000000005")
V6_EXT = bytes.fromhex("20010db8000000000000000000000007")


def test_clear_all_counts_modulo_256(pf):
    fd = pf.open()
    pf.kernel.fill(300, seed=1)
    assert pf.kill(fd, "DIOCCLRSTATES") == 44
    assert pf.get_states(fd) == []


def test_kill_counts_modulo_256(pf):
    fd = pf.open()
    pf.kernel.fill(300, seed=2)
    assert pf.kill(fd) == 44


def test_clear_by_interface_leaves_floating_states(pf):
    fd = pf.open()
    pf.add_states(fd, pf.record(ifname=b"wm0", lan=(LAN, 1)) + pf.record(ifname=b"all", lan=(LAN, 2))
                  + pf.record(ifname=b"wm1", lan=(LAN, 3)))
    assert pf.kill(fd, "DIOCCLRSTATES", ifname=b"wm0") == 1
    assert [rec[8:11] for rec in pf.get_states(fd)] == [b"all", b"wm1"]


def test_clear_with_an_unterminated_ifname_matches_nothing(pf):
    fd = pf.open()
    pf.add_states(fd, pf.record(ifname=b"abcdefghijklmnop"))
    assert pf.kill(fd, "DIOCCLRSTATES", ifname=b"abcdefghijklmnop") == 0
    assert pf.kill(fd, "DIOCCLRSTATES", ifname=b"abcdefghijklmno") == 1


def _table(pf, fd):
    pf.add_states(fd, pf.record(af=2, proto=6, lan=(LAN, 1025), ext=(EXT, 443), direction=2))  # out
    pf.add_states(fd, pf.record(af=2, proto=17, lan=(LAN, 53), ext=(EXT, 5353), direction=1))  # in
    pf.add_states(fd, pf.record(af=24, proto=6, lan=(V6_LAN, 2000), ext=(V6_EXT, 80), direction=2))


def _full(addr):
    return {"addr": addr, "mask": b"\xff" * 16}


@pytest.mark.parametrize("kwargs,killed", [
    ({}, 3),
    ({"af": 2}, 2),
    ({"af": 24}, 1),
    ({"proto": 17}, 1),
    ({"af": 2, "proto": 6}, 1),
    ({"src": _full(LAN)}, 1),  # outbound: source is lan
    ({"src": _full(EXT)}, 1),  # inbound: source is ext
    ({"dst": _full(EXT)}, 1),
    ({"src": {"addr": b"\x0a", "mask": b"\xff"}}, 1),  # 10/8 as source: only the outbound v4 state
    ({"src": {"addr": b"\x0a", "mask": b"\xff", "neg": 1}, "af": 2}, 1),
    ({"src": {"addr": V6_LAN, "mask": b"\xff" * 16}}, 1),
    ({"src": {"addr": V6_LAN[:15] + b"\x99", "mask": b"\xff" * 15}}, 1),
    ({"src": {"neg": 1}}, 0),  # zero mask matches everything; neg inverts
    ({"ifname": b"all"}, 3),
    ({"ifname": b"wm0"}, 0),
])
def test_kill_address_matching(pf, kwargs, killed):
    fd = pf.open()
    _table(pf, fd)
    assert pf.kill(fd, **kwargs) == killed
    assert len(pf.get_states(fd)) == 3 - killed


@pytest.mark.parametrize("op,port1,port2,killed_ports", [
    (1, 1000, 1100, {1025}),  # IRG a1 < p < a2
    (2, 1025, 0, {1025}),  # EQ
    (3, 1025, 0, {53, 2000}),  # NE
    (4, 1025, 0, {53}),  # LT
    (5, 1025, 0, {53, 1025}),  # LE
    (6, 1025, 0, {2000}),  # GT
    (7, 1025, 0, {1025, 2000}),  # GE
    (8, 100, 1999, {53, 2000}),  # XRG p < a1 or p > a2
    (9, 53, 1025, {53, 1025}),  # RRG a1 <= p <= a2
    (10, 0, 65535, set()),  # unknown operator matches nothing
])
def test_kill_source_port_operators(pf, op, port1, port2, killed_ports):
    fd = pf.open()
    pf.add_states(fd, b"".join(pf.record(lan=(LAN, port), ext=(EXT, 443), direction=2) for port in (53, 1025, 2000)))
    assert pf.kill(fd, src={"op": op, "port1": port1, "port2": port2}) == len(killed_ports)
    left = {int.from_bytes(rec[40:42], "big") for rec in pf.get_states(fd)}
    assert left == {53, 1025, 2000} - killed_ports


def test_kill_destination_port_of_an_inbound_state_is_the_lan_port(pf):
    fd = pf.open()
    _table(pf, fd)
    assert pf.kill(fd, dst={"op": 2, "port1": 53}) == 1


def test_other_address_family_never_matches_an_address_unless_negated(pf):
    fd = pf.open()
    pf.add_states(fd, pf.record(af=9, lan=(LAN, 1), ext=(EXT, 2)))
    assert pf.kill(fd) == 0  # even the empty filter: its zero-mask addresses do not match
    assert pf.kill(fd, src={"neg": 1}) == 0
    assert pf.kill(fd, src={"neg": 1}, dst={"neg": 1}) == 1


def test_killed_states_release_their_keys_and_ids_at_once(pf):
    fd = pf.open()
    rec = pf.record(state_id=b"\x01" * 8, creatorid=3)
    pf.add_states(fd, rec)
    assert pf.kill(fd) == 1
    pf.add_states(fd, rec)
    assert pf.status(fd)["states"] == 2
