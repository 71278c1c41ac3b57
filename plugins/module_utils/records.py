# -*- coding: utf-8 -*-
# Copyright: netbsd.pf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The 240-byte ``struct pfsync_state`` record and helpers over blocks of them.

A *block* is a bytes-like object whose length is a multiple of 240, each
record laid out as DIOCGETSTATES returns it (reference section 3.5).  The
helpers here work on whole blocks with ``struct.iter_unpack`` and extended
slices so that a million states never become a million sets of Python objects
unless a caller asks for one tuple per record.

Byte order: addresses and ports are raw network-order bytes, ``id`` is 8
opaque bytes copied bytewise by the kernel, every other integer (including
``creatorid``, the creator's hostid) is in the byte order of the host that
produced the record.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import socket
import struct

from ansible_collections.netbsd.pf.plugins.module_utils.abi import (
    AF_INET, AF_INET6, AF_NAMES, PF_OUT, PFTM_CONSTANT_NAMES, PFTM_UNTIL_PACKET,
    RECORD_SIZE, peer_state_names, protocol_name,
)
from ansible_collections.netbsd.pf.plugins.module_utils.errors import PfStateError

BYTE_ORDERS = ("little", "big")

# The record, declared once (reference section 3.5): (name, offset, struct code).
# Codes "Ns" and "B" are raw bytes or single bytes, the same in every byte order;
# every other code is a multi-byte integer in the byte order of the producing host.
_PEER_LAYOUT = (("pfss_flags", 0, "H"), ("pfss_ttl", 2, "B"), ("scrub_flag", 3, "B"), ("pfss_ts_mod", 4, "I"),
                ("seqlo", 8, "I"), ("seqhi", 12, "I"), ("seqdiff", 16, "I"), ("max_win", 20, "H"),
                ("mss", 22, "H"), ("state", 24, "B"), ("wscale", 25, "B"))
FIELDS = tuple(
    [("id", 0, "8s"), ("ifname", 8, "16s")]
    + [(host + suffix, base + delta, code) for host, base in (("lan", 24), ("gwy", 48), ("ext", 72))
       for suffix, delta, code in (("_addr", 0, "16s"), ("_port", 16, "2s"))]
    + [(peer + "_" + name, base + delta, code) for peer, base in (("src", 96), ("dst", 128))
       for name, delta, code in _PEER_LAYOUT]
    + [("rt_addr", 160, "16s"), ("rule", 176, "I"), ("anchor", 180, "I"), ("nat_rule", 184, "I"),
       ("creation", 188, "I"), ("expire", 192, "I")]
    + [("%s%d_%s" % (counter, direction, half), base + 8 * direction + 4 * word, "I")
       for counter, base in (("packets", 196), ("bytes", 212)) for direction in (0, 1)
       for word, half in enumerate(("hi", "lo"))]
    + [("creatorid", 228, "I")]
    + [(name, 232 + delta, "B") for delta, name in enumerate(
        ("af", "proto", "direction", "log", "allow_opts", "timeout", "sync_flags", "updates"))]
)
FIELD_NAMES = tuple(name for name, _offset, _code in FIELDS)
FIELD_INDEX = dict((name, index) for index, name in enumerate(FIELD_NAMES))
OFFSET = dict((name, offset) for name, offset, _code in FIELDS)
_CODE = dict((name, code) for name, _offset, code in FIELDS)


def is_byte_order_free(code):
    """True for raw bytes ("16s") and single bytes ("B"): codes whose value no byte order changes."""
    return code.endswith("s") or code in ("B", "b", "x")


def _format_of(fields, whole_record):
    """struct format (no byte-order prefix) of (name, code) pairs, pads computed from the offsets."""
    parts = []
    position = OFFSET[fields[0][0]] if fields and not whole_record else 0
    for name, code in fields:
        offset = OFFSET[name]
        if offset < position:
            raise ValueError("record field %s at offset %d is not after the field before it: list fields in record order"
                             % (name, offset))
        if offset > position:
            parts.append("%dx" % (offset - position))
        if struct.calcsize("<" + code) != struct.calcsize("<" + _CODE[name]):
            raise ValueError("code %r does not fit the %d bytes of record field %s" % (code, struct.calcsize("<" + _CODE[name]), name))
        parts.append(code)
        position = offset + struct.calcsize("<" + code)
    if whole_record and position < RECORD_SIZE:
        parts.append("%dx" % (RECORD_SIZE - position))
    return "".join(parts)


STATE_FORMAT = _format_of([(name, code) for name, _offset, code in FIELDS], True)

# Absolute byte offsets inside a record.
OFF_ID = OFFSET["id"]
OFF_IFNAME = OFFSET["ifname"]
OFF_LAN = OFFSET["lan_addr"]
OFF_GWY = OFFSET["gwy_addr"]
OFF_EXT = OFFSET["ext_addr"]
HOST_PORT = OFFSET["lan_port"] - OFF_LAN     # port offset inside pfsync_state_host
OFF_SRC = OFFSET["src_pfss_flags"]
OFF_DST = OFFSET["dst_pfss_flags"]
OFF_RULE = OFFSET["rule"]
OFF_CREATION = OFFSET["creation"]
OFF_EXPIRE = OFFSET["expire"]
OFF_CREATORID = OFFSET["creatorid"]
OFF_AF = OFFSET["af"]
OFF_PROTO = OFFSET["proto"]
OFF_DIRECTION = OFFSET["direction"]
OFF_TIMEOUT = OFFSET["timeout"]

PEER_FIELDS = tuple(name for name, _delta, _code in _PEER_LAYOUT)
SRC_BASE = FIELD_INDEX["src_pfss_flags"]
DST_BASE = FIELD_INDEX["dst_pfss_flags"]

# (offset, size) of every host-order integer: what changes between byte orders.
# id is declared as bytes on purpose: the kernel copies it bytewise (its own
# ids are big-endian counters), so its bytes are the identity.  creatorid is a
# number (a hostid; pfsync converts it with htonl): swapping keeps that number.
HOST_ORDER_FIELDS = tuple((offset, struct.calcsize("<" + code)) for _name, offset, code in FIELDS
                          if not is_byte_order_free(code))


class RecordError(PfStateError, ValueError):
    """A block or record that is not a whole number of 240-byte records or has a bad field."""

    message_lacks_file = True


def prefix_for(byte_order):
    if byte_order == "little":
        return "<"
    if byte_order == "big":
        return ">"
    raise ValueError("byte order must be 'little' or 'big', not %r" % (byte_order,))


_PARTIAL_STRUCTS = {}


def partial_struct(byte_order, fields, whole_record=True):
    """Cached struct.Struct whose unpack gives the record ``fields`` in that order.

    ``fields``: FIELD_NAMES names, or (name, code) pairs to read a field with
    another code of its size (the id as a host-order "Q", creatorid as raw "4s").
    A whole-record struct spans 240 bytes (iter_unpack over a block); otherwise
    it starts at the first field's offset and ends with the last field, for
    pack_into/unpack_from at ``record start + OFFSET[first field]``.
    ``byte_order`` None: only byte-order-free fields (bytes, single bytes).
    """
    key = (byte_order, fields, whole_record)
    layout = _PARTIAL_STRUCTS.get(key)
    if layout is None:
        pairs = [(field, _CODE[field]) if isinstance(field, str) else tuple(field) for field in fields]
        if byte_order is None:
            ordered = [name for name, code in pairs if not is_byte_order_free(code)]
            if ordered:
                raise ValueError("record fields %s need a byte order" % ", ".join(ordered))
        prefix = "<" if byte_order is None else prefix_for(byte_order)
        layout = _PARTIAL_STRUCTS[key] = struct.Struct(prefix + _format_of(pairs, whole_record))
    return layout


def ifname_bytes(raw_ifname):
    """The bytes of a 16-byte interface-name field before its NUL."""
    return raw_ifname.split(b"\0", 1)[0]


def ifname_text(raw_ifname):
    """The interface name of a 16-byte field as text (undecodable bytes replaced)."""
    return raw_ifname.split(b"\0", 1)[0].decode("ascii", "replace")


def other_byte_order(byte_order):
    prefix_for(byte_order)
    return "big" if byte_order == "little" else "little"


def record_count(block):
    """Number of records in a block; RecordError if its length is not a multiple of 240."""
    size = len(block) if not isinstance(block, memoryview) else block.nbytes
    if size % RECORD_SIZE:
        raise RecordError("block of %d bytes is not a whole number of %d-byte records" % (size, RECORD_SIZE))
    return size // RECORD_SIZE


class StateCodec:
    """pfsync_state <-> tuple of FIELD_NAMES values, for one byte order."""

    def __init__(self, byte_order):
        self.byte_order = byte_order
        self.prefix = prefix_for(byte_order)
        self.struct = struct.Struct(self.prefix + STATE_FORMAT)
        self._expire = partial_struct(byte_order, ("expire",))
        self._key = partial_struct(None, ("id", ("creatorid", "4s")))
        self._ifname = partial_struct(None, ("ifname",))
        self._u32 = struct.Struct(self.prefix + "I")
        self._u64 = struct.Struct(self.prefix + "Q")

    def unpack(self, record):
        return self.struct.unpack(record)

    def pack(self, values):
        return self.struct.pack(*values)

    def iter_unpack(self, block):
        """One tuple per record of a block (fastest way to touch every field)."""
        return self.struct.iter_unpack(block)

    def to_dict(self, record):
        return dict(zip(FIELD_NAMES, self.struct.unpack(record)))

    def from_dict(self, fields):
        """Record from a dict of FIELD_NAMES values; missing fields are zero (bytes fields empty)."""
        unknown = set(fields) - set(FIELD_INDEX)
        if unknown:
            raise RecordError("unknown record fields: %s" % ", ".join(sorted(unknown)))
        values = [fields.get(name, b"" if isinstance(default, bytes) else 0)
                  for name, default in zip(FIELD_NAMES, _ZERO_VALUES)]
        try:
            return self.struct.pack(*values)
        except struct.error as exc:
            raise RecordError("cannot build a state record: %s" % exc)

    def expires(self, block):
        """Remaining seconds of every record of a block (list of int)."""
        return [value for (value,) in self._expire.iter_unpack(block)]

    def keys(self, block):
        """(id bytes, creatorid bytes) of every record: the kernel's identity of a state."""
        return self._key.iter_unpack(block)

    def ifnames(self, block):
        """Interface name (str) of every record."""
        return [ifname_text(raw) for (raw,) in self._ifname.iter_unpack(block)]

    def id_number(self, raw_id):
        """The 8 id bytes as the host-order u64 pfs prints."""
        return self._u64.unpack(raw_id)[0]

    def id_bytes(self, number):
        return self._u64.pack(number)

    def creatorid_bytes(self, number):
        return self._u32.pack(number)


_ZERO_VALUES = struct.unpack("<" + STATE_FORMAT, bytes(RECORD_SIZE))


def column(block, offset):
    """The byte at `offset` of every record, as bytes (af, proto, direction, timeout...)."""
    return bytes(block[offset::RECORD_SIZE])


def swap_records(block, from_order, to_order=None):
    """Block converted from `from_order` to `to_order` (default: the other order).

    Every host-order integer is byte-swapped; addresses, ports, ifname and the
    opaque id bytes are left alone; creatorid is swapped so that it keeps its
    numeric value (it is the creator's hostid).  Returns `block` itself when
    nothing changes, else a new bytearray.
    """
    prefix_for(from_order)
    to_order = other_byte_order(from_order) if to_order is None else to_order
    prefix_for(to_order)
    record_count(block)
    if from_order == to_order:
        return block
    out = bytearray(block)
    for offset, size in HOST_ORDER_FIELDS:
        lanes = [out[offset + i::RECORD_SIZE] for i in range(size)]
        for i in range(size):
            out[offset + i::RECORD_SIZE] = lanes[size - 1 - i]
    return out


# --- NetBSD libc (ISC) inet_ntop / inet_pton -------------------------------

_NTOP6_CACHE = {}
_CACHE_LIMIT = 65536
_WORDS6 = struct.Struct(">8H")


def _ntop6(raw):
    words = _WORDS6.unpack(raw)
    text = "%x:%x:%x:%x:%x:%x:%x:%x" % words
    if ":0:0:" not in ":" + text + ":":
        return text     # no run of two zero groups: nothing to compress, no dotted form
    best_base, best_len, cur_base, cur_len = -1, 0, -1, 0
    for i, word in enumerate(words):
        if word == 0:
            if cur_base < 0:
                cur_base, cur_len = i, 1
            else:
                cur_len += 1
            if cur_len > best_len:
                best_base, best_len = cur_base, cur_len
        else:
            cur_base = -1
    if best_base == 0 and (best_len == 6 or (best_len == 5 and words[5] == 0xffff)):
        return ("::ffff:" if best_len == 5 else "::") + socket.inet_ntoa(raw[12:16])
    head = ":".join(["%x" % word for word in words[:best_base]])
    tail = ":".join(["%x" % word for word in words[best_base + best_len:]])
    return head + "::" + tail


def inet_ntop(af, raw):
    """Address text as NetBSD's inet_ntop prints it; None if af is neither inet nor inet6.

    IPv6 follows the ISC rules (longest run of >= 2 zero groups, first on a tie;
    ::a.b.c.d and ::ffff:a.b.c.d forms), which differ from Python's ipaddress.
    """
    if af == AF_INET:
        return socket.inet_ntoa(bytes(raw[:4]))
    if af == AF_INET6:
        raw = bytes(raw[:16])
        text = _NTOP6_CACHE.get(raw)
        if text is None:
            if len(_NTOP6_CACHE) >= _CACHE_LIMIT:
                _NTOP6_CACHE.clear()
            text = _NTOP6_CACHE[raw] = _ntop6(raw)
        return text
    return None


format_addr = inet_ntop


def _pton4(text):
    # the C inet_pton: strict dotted quad, as in NetBSD's libc
    try:
        return socket.inet_pton(socket.AF_INET, text)
    except (OSError, UnicodeError):
        raise ValueError(text)


def _pton6(text):
    # The C parser first, trusted only when the ISC printer gives the text back
    # (as it does for everything pfs prints): inet_pton implementations differ
    # on odd spellings, and the rules below are NetBSD's.
    try:
        raw = socket.inet_pton(socket.AF_INET6, text)
    except (OSError, ValueError, UnicodeError):
        raw = None
    if raw is not None and _ntop6(raw) == text:
        return raw
    return _parse6(text)


def _parse6(text):
    if text.count("::") > 1 or not text:
        raise ValueError
    tail4 = b""
    if "." in text:
        head, sep, last = text.rpartition(":")
        if not sep:
            raise ValueError
        tail4 = _pton4(last)
        text = head + ":" if head.endswith(":") else head
    if "::" in text:
        left, right = text.split("::")
        left_groups = left.split(":") if left else []
        right_groups = right.split(":") if right else []
    else:
        left_groups, right_groups = text.split(":"), []
        if tail4 and left_groups and left_groups[-1] == "":
            raise ValueError
    groups = []
    for group in left_groups + right_groups:
        if not 1 <= len(group) <= 4 or not all(c in "0123456789abcdefABCDEF" for c in group):
            raise ValueError
        groups.append(int(group, 16))
    total = 8 - len(tail4) // 2
    if "::" in text:
        if len(groups) >= total:
            raise ValueError
        groups = [int(g, 16) for g in left_groups] + [0] * (total - len(groups)) + [int(g, 16) for g in right_groups]
    elif len(groups) != total:
        raise ValueError
    return struct.pack(">%dH" % total, *groups) + tail4


_PTON_CACHE = {}


def inet_pton(af, text):
    """16-byte pf_addr from text (IPv4 zero-padded); ValueError if `text` is not an address of `af`."""
    key = (af, text)
    raw = _PTON_CACHE.get(key)
    if raw is not None:
        return raw
    try:
        if af == AF_INET:
            raw = _pton4(text) + bytes(12)
        elif af == AF_INET6:
            raw = _pton6(text)
        else:
            raise ValueError
    except ValueError:
        raise ValueError("%r is not a valid %s address" % (text, AF_NAMES.get(af, "af %s" % af)))
    if len(_PTON_CACHE) >= _CACHE_LIMIT:
        _PTON_CACHE.clear()
    _PTON_CACHE[key] = raw
    return raw


# --- module output -----------------------------------------------------------

def timeout_name(index):
    if index < len(PFTM_CONSTANT_NAMES):
        return PFTM_CONSTANT_NAMES[index].lower()
    if index == PFTM_UNTIL_PACKET:
        return "until_packet"
    return str(index)


def peer_state_name(proto, state):
    names = peer_state_names(proto)
    return names[state] if state < len(names) else str(state)


def _host(af, raw_addr, raw_port):
    return {"address": inet_ntop(af, raw_addr) or raw_addr.hex(), "port": struct.unpack(">H", raw_port)[0]}


def _peer(values, base, proto):
    peer = dict(zip(PEER_FIELDS, values[base:base + len(PEER_FIELDS)]))
    peer["state_name"] = peer_state_name(proto, peer["state"])
    peer["scrub"] = bool(peer.pop("scrub_flag"))
    return peer


def _u64(hi, lo):
    return (hi << 32) | lo


def state_to_dict(record, byte_order):
    """A state as plain data for Ansible output (JSON-safe, stable keys)."""
    values = StateCodec(byte_order).unpack(record)
    field = dict(zip(FIELD_NAMES, values))
    af, proto = field["af"], field["proto"]
    return {
        "id": field["id"].hex(),
        "creatorid": "%08x" % field["creatorid"],
        "af": AF_NAMES.get(af, str(af)),
        "proto": protocol_name(proto),
        "proto_number": proto,
        "direction": "out" if field["direction"] == PF_OUT else "in",
        "ifname": ifname_text(field["ifname"]),
        "lan": _host(af, field["lan_addr"], field["lan_port"]),
        "gwy": _host(af, field["gwy_addr"], field["gwy_port"]),
        "ext": _host(af, field["ext_addr"], field["ext_port"]),
        "src": _peer(values, SRC_BASE, proto),
        "dst": _peer(values, DST_BASE, proto),
        "expire": field["expire"],
        "timeout": field["timeout"],
        "timeout_name": timeout_name(field["timeout"]),
        "creation": field["creation"],
        "packets": [_u64(field["packets0_hi"], field["packets0_lo"]), _u64(field["packets1_hi"], field["packets1_lo"])],
        "bytes": [_u64(field["bytes0_hi"], field["bytes0_lo"]), _u64(field["bytes1_hi"], field["bytes1_lo"])],
        "rule": field["rule"],
    }
