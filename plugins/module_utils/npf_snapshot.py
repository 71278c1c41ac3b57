# -*- coding: utf-8 -*-
# Copyright: netbsd.pf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The saved NPF state: what IOC_NPF_SAVE returns (NPF reference 3.3-3.5, 3.8), as records.

A snapshot is the kernel's reply: configuration (rules, NAT, tables, procedures, params)
and ``conn-list``. Connections become ``Connection`` records with real port numbers and a
decoded ``npf_state_t``; everything the kernel would refuse, or accept and then mishandle,
is listed per record in ``problems``. The snapshot's byte order is the saving host's: the
36-byte state and the port numbers are host-endian inside the nvlist (reference 6.15).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections
import ipaddress
import struct

from ansible_collections.netbsd.pf.plugins.module_utils.errors import PfStateError
from ansible_collections.netbsd.pf.plugins.module_utils.npf_nvlist import NvlistError, byte_order_of, decode

NPF_VERSION = 22
STATE_SIZE = 36
CONN_DIRECTION_MASK = 0x3
CONN_ACTIVE = 0x4
CONN_PASS = 0x8
CONN_KNOWN_FLAGS = 0xF
PFIL_IN, PFIL_OUT = 1, 2
IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP = 1, 6, 17
PROTOCOL_NAMES = {IPPROTO_ICMP: "icmp", IPPROTO_TCP: "tcp", IPPROTO_UDP: "udp"}
NPF_TCP_STATE_NAMES = ("CLOSED", "SYN_SENT", "SIMSYN_SENT", "SYN_RECEIVED", "ESTABLISHED", "FIN_SENT",
                       "FIN_RECEIVED", "CLOSE_WAIT", "FIN_WAIT", "CLOSING", "LAST_ACK", "TIME_WAIT")
NPF_GENERIC_STATE_NAMES = ("CLOSED", "NEW", "ESTABLISHED")
# What the N20 exporter writes instead of a key's interface whenever the key has a direction (3.6).
UNKNOWN_IFNAME = "???"
# A connection the kernel saves packs into about 650 bytes at least (state, both keys with their
# addresses, flags, proto, alen: reference 3.9). Fewer packed bytes per conn-list entry mean a damaged
# or forged file whose tiny entries would each become a Connection of about 1.2 KB: 30 times its size.
MIN_SAVED_CONNECTION_BYTES = 256


def exported_key_proto(proto, di):
    """The ``proto`` that N20's SAVE writes into a key of a ``proto`` connection.

    npf_connkey_getkey() reads bits 16..23 of the key's first word, where
    npf_connkey_setkey() stored the protocol at bit 20, followed by the direction
    (bits 18-19) and the interface id (< 2**16 here): NetBSD npf_connkey.c 1.2 and
    rmind/npf alike. The NPF reference (3.3) misses this: TCP keys come back as 100/104.
    """
    return ((proto << 4) | ((di or 0) << 2)) & 0xFF


PeerWindow = collections.namedtuple("PeerWindow", "end maxend maxwin wscale")


class NpfSnapshotError(PfStateError, ValueError):
    """A snapshot that cannot be read at all; names the source and what is wrong."""


def state_names(proto):
    return NPF_TCP_STATE_NAMES if proto == IPPROTO_TCP else NPF_GENERIC_STATE_NAMES


class ConnState:
    """npf_state_t: the connection's state and the two peers' TCP windows (3.4)."""

    __slots__ = ("state", "peers")

    def __init__(self, state, peers):
        self.state = state
        self.peers = tuple(peers)

    @classmethod
    def from_bytes(cls, raw, byte_order):
        values = struct.unpack(("<" if byte_order == "little" else ">") + "IIIIiIIIi", raw)
        return cls(values[0], (PeerWindow(*values[1:5]), PeerWindow(*values[5:9])))

    def to_bytes(self, byte_order):
        values = [self.state]
        for peer in self.peers:
            values.extend(peer)
        return struct.pack(("<" if byte_order == "little" else ">") + "IIIIiIIIi", *values)

    def __eq__(self, other):
        return isinstance(other, ConnState) and (self.state, self.peers) == (other.state, other.peers)

    def __ne__(self, other):
        return not self == other

    __hash__ = None


def port_from_word(word, byte_order):
    """A port as the kernel saves it (a network-order word read in host order) -> its number."""
    return int.from_bytes((word & 0xFFFF).to_bytes(2, byte_order), "big")


def port_to_word(port, byte_order):
    return int.from_bytes(port.to_bytes(2, "big"), byte_order)


def format_address(raw):
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(bytes(raw)))
    if len(raw) == 16:
        return str(ipaddress.IPv6Address(bytes(raw)))
    return "<%d-byte address %s>" % (len(raw), bytes(raw).hex())


def printable_name(name):
    """An interface name for the text form: escaped when it holds a control character or a
    blank, so a hostile file cannot add or split lines."""
    if name.isprintable() and " " not in name:
        return name
    return name.encode("unicode_escape").decode("ascii").replace(" ", "\\x20")


def format_endpoint(raw, port, proto):
    """ICMP keys carry the query id in both ports: shown as the bare address."""
    address = format_address(raw)
    if proto == IPPROTO_ICMP:
        return address
    return "%s:%d" % ("[%s]" % address if len(raw) == 16 else address, port)


class ConnKey:
    """One direction's key: addresses as bytes, real port numbers, optional interface and direction."""

    __slots__ = ("proto", "sport", "dport", "saddr", "daddr", "ifname", "di")

    def __init__(self, proto, sport, dport, saddr, daddr, ifname=None, di=None):
        self.proto = proto
        self.sport = sport
        self.dport = dport
        self.saddr = saddr
        self.daddr = daddr
        self.ifname = ifname
        self.di = di

    def to_nvlist(self, byte_order):
        out = {"proto": self.proto, "sport": port_to_word(self.sport, byte_order),
               "dport": port_to_word(self.dport, byte_order), "saddr": self.saddr, "daddr": self.daddr}
        if self.ifname is not None:
            out["ifname"] = self.ifname
        if self.di is not None:
            out["di"] = self.di
        return out

    def describe(self):
        return "%s -> %s" % (format_endpoint(self.saddr, self.sport, self.proto),
                             format_endpoint(self.daddr, self.dport, self.proto))


class NatEntry:
    __slots__ = ("ifname", "alen", "oaddr", "oport", "taddr", "tport", "policy")

    def __init__(self, ifname, alen, oaddr, oport, taddr, tport, policy):
        self.ifname = ifname
        self.alen = alen
        self.oaddr = oaddr
        self.oport = oport
        self.taddr = taddr
        self.tport = tport
        self.policy = policy

    def to_nvlist(self, byte_order):
        out = {}
        if self.ifname is not None:
            out["ifname"] = self.ifname
        out.update({"alen": self.alen, "oaddr": self.oaddr, "oport": port_to_word(self.oport, byte_order),
                    "taddr": self.taddr, "tport": port_to_word(self.tport, byte_order), "nat-policy": self.policy})
        return out


class Connection:
    """One saved connection; ``problems`` lists why the kernel would refuse or mishandle it."""

    __slots__ = ("index", "flags", "proto", "ifname", "state", "forw", "back", "alen", "nat", "problems")

    def __init__(self, index, flags, proto, ifname, state, forw, back, alen, nat, problems):
        self.index = index
        self.flags = flags
        self.proto = proto
        self.ifname = ifname
        self.state = state
        self.forw = forw
        self.back = back
        self.alen = alen
        self.nat = nat
        self.problems = problems

    @property
    def valid(self):
        return not self.problems

    @property
    def state_name(self):
        names = state_names(self.proto)
        return names[self.state.state] if self.state.state < len(names) else "state %d" % self.state.state

    @property
    def keys_need_repair(self):
        """The keys carry the "???" interface or the garbled protocol of N20's export."""
        return any(key.ifname == UNKNOWN_IFNAME or key.proto != self.proto for key in (self.forw, self.back))

    def repair_keys(self, key_interface):
        """Undo N20's export defects in both keys (reference 3.6 plus the key protocol).

        ``key_interface`` is the snapshot's ``state.key.interface`` param: keys then name
        the connection's interface (or, for a connection made by a NAT-only rule, the NAT
        one); without it keys name no interface. Returns False when a key needs an
        interface that the record does not give (a ``stateful-all`` connection).
        """
        interface = self.ifname if self.ifname is not None else (self.nat.ifname if self.nat else None)
        recoverable = True
        for key in (self.forw, self.back):
            key.proto = self.proto
            if key.ifname == UNKNOWN_IFNAME or key.ifname is not None and not key_interface:
                if key_interface and interface is None:
                    recoverable = False
                key.ifname = interface if key_interface else None
        return recoverable

    def to_nvlist(self, byte_order):
        """The record as IOC_NPF_LOAD takes it, fields in the kernel's export order."""
        out = {"flags": self.flags, "proto": self.proto}
        if self.ifname is not None:
            out["ifname"] = self.ifname
        out["state"] = self.state.to_bytes(byte_order)
        out["forw-key"] = self.forw.to_nvlist(byte_order)
        out["back-key"] = self.back.to_nvlist(byte_order)
        out["alen"] = self.alen
        if self.nat is not None:
            out["nat"] = self.nat.to_nvlist(byte_order)
        return out

    def to_text(self):
        direction = {PFIL_IN: "in", PFIL_OUT: "out"}.get(self.flags & CONN_DIRECTION_MASK, "-")
        line = "%-4s %-3s %s %s %s %s" % (
            PROTOCOL_NAMES.get(self.proto, str(self.proto)), direction,
            format_endpoint(self.forw.saddr, self.forw.sport, self.proto),
            format_endpoint(self.forw.daddr, self.forw.dport, self.proto),
            "-" if self.ifname is None else printable_name(self.ifname), self.state_name)
        if self.nat is not None:
            line += " nat %s policy %d" % (format_endpoint(self.nat.taddr, self.nat.tport, self.proto), self.nat.policy)
        if self.problems:
            line += "  # INVALID: %s" % "; ".join(self.problems)
        return line


def _typed(nvl, key, kind, problems, label, required=True):
    value = nvl.get(key)
    if value is None and key not in nvl:
        if required:
            problems.append("%s has no %r" % (label, key))
        return None
    ok = {
        "number": isinstance(value, int) and not isinstance(value, bool),
        "string": isinstance(value, str),
        "binary": isinstance(value, bytes),
        "nvlist": isinstance(value, dict),
    }[kind]
    if not ok:
        problems.append("%s: %r is not a %s" % (label, key, kind.upper()))
        return None
    return value


def _decode_key(nvl, label, byte_order, problems):
    if not isinstance(nvl, dict):
        problems.append("%s missing or not an NVLIST" % label)
        return ConnKey(0, 0, 0, b"", b"")
    proto = _typed(nvl, "proto", "number", problems, label)
    sport = _typed(nvl, "sport", "number", problems, label)
    dport = _typed(nvl, "dport", "number", problems, label)
    saddr = _typed(nvl, "saddr", "binary", problems, label) or b""
    daddr = _typed(nvl, "daddr", "binary", problems, label) or b""
    ifname = _typed(nvl, "ifname", "string", problems, label, required=False)
    di = _typed(nvl, "di", "number", problems, label, required=False)
    if proto is not None and proto >= 256:
        problems.append("%s protocol %d (must be < 256)" % (label, proto))
    if len(saddr) != len(daddr) or not 1 <= len(saddr) <= 16:
        problems.append("%s addresses of %d and %d bytes" % (label, len(saddr), len(daddr)))
    for name, port in (("sport", sport), ("dport", dport)):
        if port is not None and port > 0xFFFF:
            problems.append("%s %s %d does not fit 16 bits" % (label, name, port))
    if di is not None and di not in (PFIL_IN, PFIL_OUT):
        problems.append("%s direction %d (must be 1 or 2)" % (label, di))
    return ConnKey(proto or 0, port_from_word(sport or 0, byte_order), port_from_word(dport or 0, byte_order),
                   saddr, daddr, ifname, di)


def _decode_nat(nvl, byte_order, alen, problems):
    label = "nat"
    ifname = _typed(nvl, "ifname", "string", problems, label, required=False)
    nat_alen = _typed(nvl, "alen", "number", problems, label)
    oaddr = _typed(nvl, "oaddr", "binary", problems, label) or b""
    taddr = _typed(nvl, "taddr", "binary", problems, label) or b""
    oport = _typed(nvl, "oport", "number", problems, label) or 0
    tport = _typed(nvl, "tport", "number", problems, label) or 0
    policy = _typed(nvl, "nat-policy", "number", problems, label)
    if nat_alen is not None:
        if alen is not None and nat_alen != alen:     # a missing connection alen is reported already
            problems.append("nat address length %d differs from the connection's %d" % (nat_alen, alen))
        if len(oaddr) != nat_alen or len(taddr) != nat_alen:
            problems.append("nat addresses are not %d bytes" % nat_alen)
    if ifname is None:
        problems.append("nat entry without an interface never translates")
    return NatEntry(ifname, nat_alen or 0, oaddr, port_from_word(oport, byte_order), taddr,
                    port_from_word(tport, byte_order), policy if policy is not None else 0)


def decode_connection(index, nvl, byte_order):
    """A conn-list element -> Connection (never raises: a broken record is returned with its problems)."""
    problems = []
    if not isinstance(nvl, dict):
        nvl = {}
        problems.append("not an NVLIST")
    label = "connection"
    flags = _typed(nvl, "flags", "number", problems, label) or 0
    proto = _typed(nvl, "proto", "number", problems, label)
    ifname = _typed(nvl, "ifname", "string", problems, label, required=False)
    raw_state = _typed(nvl, "state", "binary", problems, label)
    alen = _typed(nvl, "alen", "number", problems, label)
    if raw_state is not None and len(raw_state) != STATE_SIZE:
        problems.append("state is %d bytes (must be %d)" % (len(raw_state), STATE_SIZE))
        raw_state = None
    state = ConnState.from_bytes(raw_state or bytes(STATE_SIZE), byte_order)
    forw = _decode_key(nvl.get("forw-key"), "forw-key", byte_order, problems)
    back = _decode_key(nvl.get("back-key"), "back-key", byte_order, problems)
    if proto is not None:
        if proto not in PROTOCOL_NAMES:
            problems.append("protocol %d is not tracked by NPF (only tcp, udp, icmp)" % proto)
        if any(key.proto not in (proto, exported_key_proto(proto, key.di)) for key in (forw, back)):
            problems.append("key protocol differs from the connection's %d" % proto)
        if state.state >= len(state_names(proto)):
            problems.append("state %d out of range for %s" % (state.state, PROTOCOL_NAMES.get(proto, proto)))
    if alen is not None:
        if alen not in (4, 16):
            problems.append("address length %d (must be 4 or 16)" % alen)
        elif len(forw.saddr) != alen or len(back.saddr) != alen:
            problems.append("key addresses are not %d bytes" % alen)
    if flags & ~CONN_KNOWN_FLAGS:
        problems.append("unknown flags 0x%x" % (flags & ~CONN_KNOWN_FLAGS))
    elif not flags & CONN_ACTIVE:
        problems.append("not ACTIVE (the kernel never exports such a connection)")
    nat = None
    raw_nat = nvl.get("nat")
    if raw_nat is not None:
        if isinstance(raw_nat, dict):
            nat = _decode_nat(raw_nat, byte_order, alen, problems)
        else:
            problems.append("nat is not an NVLIST")
    return Connection(index, flags, proto or 0, ifname, state, forw, back, alen or 0, nat, problems)


class NpfSnapshot:
    """A decoded IOC_NPF_SAVE reply (or an ``npfctl save`` file of NetBSD 9.2 and later)."""

    CONFIG_SECTIONS = ("rules", "nat", "tables", "rprocs", "algs")

    def __init__(self, reply, byte_order, source="snapshot"):
        if not isinstance(reply, dict):
            raise NpfSnapshotError("%s: not an NPF snapshot (top level is not an nvlist)" % source)
        version = reply.get("version")
        if version != NPF_VERSION or isinstance(version, bool):
            raise NpfSnapshotError("%s: NPF version %r; only version %d (NetBSD 9.2 and later) is supported"
                                   % (source, version, NPF_VERSION))
        self.source = source
        self.byte_order = byte_order
        self.version = version
        self.params = self._number_map(reply, "params")
        self.params_defaults = self._number_map(reply, "params-defaults")
        self.active = reply.get("active") is True
        self.config = {}
        for section in self.CONFIG_SECTIONS:
            items = reply.get(section, [])
            if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
                raise NpfSnapshotError("%s: %r is not a list of nvlists" % (source, section))
            self.config[section] = items
        conn_list = reply.get("conn-list", [])
        if not isinstance(conn_list, list):
            raise NpfSnapshotError("%s: 'conn-list' is not an NVLIST_ARRAY" % source)
        self.connections = [decode_connection(index, nvl, byte_order) for index, nvl in enumerate(conn_list)]

    def _number_map(self, reply, key):
        value = reply.get(key, {})
        if not isinstance(value, dict) or any(not isinstance(v, int) or isinstance(v, bool) for v in value.values()):
            raise NpfSnapshotError("%s: %r is not an nvlist of numbers" % (self.source, key))
        return value

    @classmethod
    def from_packed(cls, data, source="snapshot"):
        """From packed bytes (a SAVE reply or an npfctl save file)."""
        try:
            order = byte_order_of(data, source)
            reply = decode(data, source=source)
        except NvlistError as exc:
            raise NpfSnapshotError(str(exc))
        conn_list = reply.get("conn-list") if isinstance(reply, dict) else None
        if isinstance(conn_list, list) and len(conn_list) > len(data) // MIN_SAVED_CONNECTION_BYTES:
            raise NpfSnapshotError("%s: %d connections in %d packed bytes, but every connection NPF saves takes more "
                                   "than %d: damaged or forged, refused before decoding them"
                                   % (source, len(conn_list), len(data), MIN_SAVED_CONNECTION_BYTES))
        return cls(reply, order, source)

    def summary(self):
        """Counts that add up: valid + invalid == connections; the breakdowns cover the valid ones."""
        valid = [conn for conn in self.connections if conn.valid]
        by_protocol = collections.Counter(PROTOCOL_NAMES[conn.proto] for conn in valid)
        by_state = collections.Counter("%s %s" % (PROTOCOL_NAMES[conn.proto], conn.state_name) for conn in valid)
        problems = collections.Counter(problem for conn in self.connections for problem in conn.problems)
        return {
            "connections": len(self.connections),
            "valid": len(valid),
            "invalid": len(self.connections) - len(valid),
            "by_protocol": dict(sorted(by_protocol.items())),
            "by_state": dict(sorted(by_state.items())),
            "ipv4": sum(1 for conn in valid if conn.alen == 4),
            "ipv6": sum(1 for conn in valid if conn.alen == 16),
            "nat": sum(1 for conn in valid if conn.nat is not None),
            "without_interface": sum(1 for conn in valid if conn.ifname is None),
            "keys_need_repair": sum(1 for conn in valid if conn.keys_need_repair),
            "problems": dict(sorted(problems.items())),
        }

    def to_text(self):
        """Readable form: a header, then one line per connection (npfctl list order: as saved)."""
        summary = self.summary()
        lines = [
            "# NPF snapshot of %s: version %d, %s byte order, filtering %s" % (
                self.source, self.version, self.byte_order, "active" if self.active else "stopped"),
            "# %d connections (%d valid, %d invalid); %d rules, %d NAT rules, %d tables" % (
                summary["connections"], summary["valid"], summary["invalid"], len(self.config["rules"]),
                len(self.config["nat"]), len(self.config["tables"])),
            "# proto dir src-addr:port dst-addr:port interface state [nat taddr:tport policy id]",
        ]
        lines.extend(conn.to_text() for conn in self.connections)
        return "\n".join(lines) + "\n"
