"""Connections as NPF's packet path makes them, for ``ctl HOST npf-fill N``.

``generate_connections(count, seed, byte_order)`` gives LOAD-form connection nvlists (the
shape of reference 3.3, keys as a stateful rule on an interface makes them: bound to the
interface, forward key in the direction of the first packet): TCP established and UDP,
IPv4 and IPv6, distinct keys, no NAT. Deterministic for a seed.
"""

import random
import struct

PFIL_IN, PFIL_OUT = 1, 2
CONN_ACTIVE, CONN_PASS = 0x4, 0x8
TCP_ESTABLISHED, GENERIC_ESTABLISHED = 4, 2
INTERFACES = ("wm0", "wm1")


def _port(value, prefix):
    """A port as the nvlists carry it: the host-order reading of the network-order word."""
    return struct.unpack(prefix + "H", struct.pack(">H", value))[0]


def _key(proto, saddr, sport, daddr, dport, ifname, di):
    return {"proto": proto, "sport": sport, "dport": dport, "saddr": saddr, "daddr": daddr, "ifname": ifname,
            "di": di}


def generate_connections(count, seed=0, byte_order="little", first=0):
    """``count`` connections; ``first`` numbers them so that later fills do not collide with earlier ones."""
    prefix = "<" if byte_order == "little" else ">"
    rng = random.Random(seed)
    records = []
    for number in range(first, first + count):
        proto = 6 if rng.random() < 0.8 else 17
        ipv6 = rng.random() < 0.2
        # The connection number is spelled into the inside address: keys never collide.
        if ipv6:
            inside = b"\xfd\x00" + bytes(10) + struct.pack(">I", number)
            outside = b"\x20\x01\x0d\xb8" + bytes(8) + struct.pack(">I", rng.getrandbits(32))
        else:
            inside = bytes([10]) + struct.pack(">I", number)[1:]
            outside = bytes([198, 51, 100, rng.randrange(1, 255)])
        sport, dport = _port(rng.randrange(1024, 65536), prefix), _port(rng.choice((22, 53, 80, 443, 993)), prefix)
        ifname = rng.choice(INTERFACES)
        nst_state = TCP_ESTABLISHED if proto == 6 else GENERIC_ESTABLISHED
        records.append({
            "flags": CONN_ACTIVE | CONN_PASS | PFIL_OUT, "proto": proto, "ifname": ifname,
            "state": struct.pack(prefix + "I", nst_state) + bytes(32),
            "forw-key": _key(proto, inside, sport, outside, dport, ifname, PFIL_OUT),
            "back-key": _key(proto, outside, dport, inside, sport, ifname, PFIL_IN),
            "alen": len(inside),
        })
    return records
