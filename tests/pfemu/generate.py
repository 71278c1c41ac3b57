"""Realistic kernel-made pf states, as DIOCGETSTATES exports them (240-byte records).

The mix looks like a busy NetBSD gateway: mostly floating ("all") TCP and UDP states, TCP in
every state including synproxy (11, 12) and modulated sequence numbers, ICMP/ICMPv6, tunnels
and other protocols, about a fifth IPv6, outbound NAT and inbound rdr (gwy != lan), some scrub
data, some states synced from a pfsync peer (foreign creatorid). Every record has a unique
lan/ext key, ext/gwy key and (id, creatorid), so a generated block always loads into an empty
table. Standard library only; one ``struct.pack_into`` per record into a preallocated buffer.
"""

import random
import struct
import time

from .structs import DEFAULT_TIMEOUTS, RECORD_SIZE

IFNAMES = ("wm0", "wm1", "re0", "vlan10", "vlan20", "pppoe0", "gif0", "tun0", "bridge0", "npflog0", "ixg0", "l2tp0")

# (weight, proto, af, src state, dst state, PFTM index)
PROFILES = (
    (300, 6, 2, 4, 4, 2), (70, 6, 24, 4, 4, 2),  # established
    (20, 6, 2, 2, 0, 0), (6, 6, 24, 2, 0, 0),  # first packet (SYN_SENT / CLOSED)
    (15, 6, 2, 2, 2, 1), (10, 6, 2, 4, 3, 1),  # opening
    (20, 6, 2, 6, 4, 3), (6, 6, 2, 4, 6, 3), (6, 6, 24, 6, 4, 3),  # closing
    (8, 6, 2, 8, 7, 4), (6, 6, 2, 9, 8, 4),  # fin wait
    (18, 6, 2, 10, 10, 5), (6, 6, 2, 9, 10, 5), (4, 6, 24, 10, 10, 5),  # closed / time wait
    (6, 6, 2, 11, 0, 0), (5, 6, 2, 12, 2, 1),  # synproxy (PF_TCPS_PROXY_SRC / _DST)
    (50, 17, 2, 1, 0, 6), (30, 17, 2, 2, 1, 7), (110, 17, 2, 2, 2, 8),
    (10, 17, 24, 1, 0, 6), (30, 17, 24, 2, 2, 8),
    (30, 1, 2, 0, 0, 9), (6, 1, 2, 0, 0, 10), (14, 58, 24, 0, 0, 9), (3, 58, 24, 0, 0, 10),
    (6, 47, 2, 2, 2, 13), (6, 50, 2, 2, 2, 13), (2, 50, 2, 1, 0, 11), (2, 51, 2, 2, 1, 12),
    (3, 41, 2, 2, 2, 13), (2, 89, 2, 1, 0, 11), (2, 132, 2, 2, 2, 13), (1, 103, 24, 2, 1, 12),
)
PORTLESS = frozenset((47, 50, 51, 41, 89, 103))
SERVICE_PORTS = (443, 443, 443, 80, 80, 53, 22, 25, 993, 123, 8080, 3478, 5222, 1194, 51820)
WINDOWS = (65535, 64240, 29200, 14600, 8192, 65160, 1024)
PORT_SPAN = 60000  # lan (and gwy) ports 1024..61023; one pool host per PORT_SPAN states

TEMPLATES = 4096  # fully random records; later ones are templates with fresh ids and key hosts
NAT, RDR = "nat", "rdr"
KEY_HOSTS = struct.Struct("16s2s6x16s2s6x16s2s")  # lan, gwy, ext at offset 24
RECORD = struct.Struct(
    "8s16s" + "16s2s6x" * 3 + "HBBIIIIHHBB6x" * 2 + "16xIIIII4I4I4sBBBBBBBB")


def _v4(value):
    return value.to_bytes(4, "big")


def _v6(prefix, value):
    return prefix + value.to_bytes(8, "big")


def _profile_table(rng):
    table = []
    for entry in PROFILES:
        table.extend([entry[1:]] * entry[0])
    rng.shuffle(table)
    return table


def generate_records(count, seed, byte_order="little", hostid=None, now=None, interfaces=None, first_stateid=None,
                     floating_share=0.85):
    """``count`` export records (``count * 240`` bytes) in ``byte_order``, reproducible from ``seed``.

    ``hostid`` becomes the creatorid of most states, ``now`` (seconds) the kernel time the ages
    and expiries refer to, ``first_stateid`` the id counter (ids are htobe64(counter) like the
    kernel's). ``interfaces``: names of if-bound states (the rest are floating, "all").
    """
    # pylint: disable=too-many-locals,too-many-statements
    rng = random.Random(seed)
    order = "<" if byte_order == "little" else ">"
    pack = struct.Struct(order + RECORD.format).pack_into
    now = int(time.time() if now is None else now)
    hostid = rng.getrandbits(32) if hostid is None else hostid
    creator = struct.pack(order + "I", hostid)
    stateid = (now << 32) if first_stateid is None else first_stateid
    names = [name.encode("ascii") for name in (interfaces or IFNAMES)]
    interface_table = [b"all"] * int(round(floating_share * 100)) + names * max(1, int(round((1 - floating_share) * 100)) // len(names))
    profiles = _profile_table(rng)
    hosts = max(4096, -(-count // PORT_SPAN))
    lan4 = [_v4((10 << 24) | host) for host in rng.sample(range(1 << 23), hosts)]  # 10.0.0.0/9
    lan6 = [_v6(b"\xfd\x00\x0a\x0b\x00\x00\x00\x01", host) for host in rng.sample(range(1 << 48), hosts)]
    publics = max(16, -(-count // PORT_SPAN))
    nat_pool = [_v4((198 << 24) | (51 << 16) | (100 << 8) | n % 256) if n < 256 else _v4((100 << 24) | (64 << 16) | n)
                for n in range(publics)]
    rdr_pool = [_v4((203 << 24) | (113 << 8) | n % 256) if n < 256 else _v4((100 << 24) | (65 << 16) | n)
                for n in range(publics)]
    peers = [rng.getrandbits(32) | 1 for peer_number in range(3)]
    out = bytearray(count * RECORD_SIZE)
    getrandbits = rng.getrandbits
    default_timeouts = DEFAULT_TIMEOUTS

    def key_hosts(index, af, proto, translation, ext_port):
        """lan, gwy and ext (addr, port) of state ``index``; unique lan/ext and ext/gwy keys by construction."""
        host, slot = index % hosts, index // hosts
        lan_port = (1024 + slot).to_bytes(2, "big")
        if proto in PORTLESS:
            # No ports in the key: a lan address of its own (10.128.0.0/9, fd00:a:b:2::/64) keeps it unique.
            lan = _v4((10 << 24) | (1 << 23) | index) if af == 2 else _v6(b"\xfd\x00\x0a\x0b\x00\x00\x00\x02", index)
            lan_port = ext_port = b"\0\0"
        else:
            lan = lan4[host] if af == 2 else lan6[host]
            if proto in (1, 58):
                ext_port = lan_port  # ICMP: the query id in every port field
        if af == 2:
            ext = _v4(getrandbits(32) | 0x01000000)
        else:
            ext = _v6(b"\x20\x01\x0d\xb8" + getrandbits(32).to_bytes(4, "big"), getrandbits(64))
        if translation == NAT:
            return lan, lan_port, nat_pool[index % publics], (1024 + index // publics).to_bytes(2, "big"), ext, ext_port
        if translation == RDR:
            return lan, lan_port, rdr_pool[index % publics], (1024 + index // publics).to_bytes(2, "big"), ext, ext_port
        return lan, lan_port, lan, lan_port, ext, ext_port

    templates = []  # (af, proto, translation, ext port, pfsync peer's creatorid or None)
    for index in range(min(count, TEMPLATES)):
        bits = getrandbits(160)
        proto, af, src_state, dst_state, timeout = profiles[bits % len(profiles)]
        bits >>= 10
        ifname = interface_table[bits % len(interface_table)]
        bits >>= 7
        ext_port = SERVICE_PORTS[bits % len(SERVICE_PORTS)].to_bytes(2, "big")
        bits >>= 4
        outbound = bits % 10 < 7
        bits >>= 4
        translation, nat_rule = None, 0xFFFFFFFF
        if af == 2 and proto not in PORTLESS:
            if outbound and bits % 20 < 5:  # nat on the external interface
                translation, nat_rule = NAT, bits % 20
            elif not outbound and bits % 20 < 2:  # rdr to an internal server
                translation, nat_rule = RDR, 10 + bits % 20
        lan, lan_port, gwy, gwy_port, ext, ext_port = key_hosts(index, af, proto, translation, ext_port)
        bits >>= 5
        if bits % 50:
            state_id, creatorid, peer = (stateid + index).to_bytes(8, "big"), creator, None
        else:  # synced from a pfsync peer
            peer = struct.pack(order + "I", peers[index % 3])
            state_id, creatorid = getrandbits(64).to_bytes(8, "big"), peer
        templates.append((af, proto, translation, ext_port, peer))
        bits >>= 6
        if proto == 6:
            seq_src, seq_dst = getrandbits(32), getrandbits(32)
            win_src, win_dst = WINDOWS[bits % 7], WINDOWS[(bits >> 3) % 7]
            wscale_src = (0x80 | (bits >> 6) % 9) if (bits >> 10) % 10 < 7 else 0
            wscale_dst = (0x80 | (bits >> 14) % 9) if wscale_src else 0
            seqdiff = (getrandbits(32) or 1) if (bits >> 18) % 10 == 0 else 0  # modulate state
            mss = 1460 if (bits >> 22) % 2 else 1380
            mss_src = mss if src_state >= 11 or (bits >> 23) % 50 == 0 else 0
            mss_dst = mss if src_state == 12 else 0
            scrub_src = (bits >> 29) % 20 == 0
            scrub_dst = scrub_src and (bits >> 34) % 2 == 0
            src_peer = ((1, 64, 1, getrandbits(32)) if scrub_src else (0, 0, 0, 0)) + (
                seq_src, (seq_src + (win_dst << (wscale_dst & 0x0F))) & 0xFFFFFFFF, seqdiff, win_src, mss_src,
                src_state, wscale_src)
            dst_peer = ((1, 128, 1, getrandbits(32)) if scrub_dst else (0, 0, 0, 0)) + (
                seq_dst, (seq_dst + (win_src << (wscale_src & 0x0F))) & 0xFFFFFFFF, 0, win_dst, mss_dst,
                dst_state, wscale_dst)
        else:
            src_peer = (0, 0, 0, 0, 0, 0, 0, 0, 0, src_state, 0)
            dst_peer = (0, 0, 0, 0, 0, 0, 0, 0, 0, dst_state, 0)
        bits >>= 36
        rule = 0xFFFFFFFF if bits % 5 == 0 else (bits >> 3) % 300
        anchor = 0xFFFFFFFF if (bits >> 12) % 10 else (bits >> 16) % 20
        full = default_timeouts[timeout]
        age = getrandbits(18) if timeout == 2 else getrandbits(7)
        remaining = 0 if (bits >> 21) % 40 == 0 else 1 + getrandbits(20) % full
        packets_in = getrandbits(34 if (bits >> 27) % 200 == 0 else 14)
        packets_out = packets_in + getrandbits(10)
        bytes_in = packets_in * (40 + (bits >> 35) % 1460)
        bytes_out = packets_out * (40 + (bits >> 46) % 1460)
        flags = (bits >> 57) % 100
        pack(out, index * RECORD_SIZE, state_id, ifname, lan, lan_port, gwy, gwy_port, ext, ext_port,
             *(src_peer + dst_peer),
             rule, anchor, nat_rule, age, remaining,
             packets_in >> 32, packets_in & 0xFFFFFFFF, packets_out >> 32, packets_out & 0xFFFFFFFF,
             bytes_in >> 32, bytes_in & 0xFFFFFFFF, bytes_out >> 32, bytes_out & 0xFFFFFFFF,
             creatorid, af, proto, 2 if outbound else 1, 1 if flags < 3 else 0, 1 if flags == 3 else 0, timeout,
             0x04 if flags in (4, 5) else 0x08 if flags == 6 and nat_rule != 0xFFFFFFFF else 0, 0)
    # The rest copies a random template and gives it its own ids and key hosts: 3x faster.
    pack_hosts = KEY_HOSTS.pack_into
    for index in range(len(templates), count):
        choice = getrandbits(32) % len(templates)
        af, proto, translation, ext_port, peer = templates[choice]
        offset = index * RECORD_SIZE
        out[offset:offset + RECORD_SIZE] = out[choice * RECORD_SIZE:(choice + 1) * RECORD_SIZE]
        out[offset:offset + 8] = (stateid + index).to_bytes(8, "big") if peer is None else getrandbits(64).to_bytes(8, "big")
        pack_hosts(out, offset + 24, *key_hosts(index, af, proto, translation, ext_port))
    return bytes(out)
