# -*- coding: utf-8 -*-
# Copyright: netbsd.pf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read-only views of record blocks: per-state views, the keys pf compares, checks and counts.

What restore, flush, the operations and the modules read from a block of 240-byte
records without changing it: ``StateView`` (one state, named the way pfs prints
it), the packed keys of pf's three state trees, ``verify_records`` (what the
kernel would refuse or misread), ``table_occupancy`` (what holds the state pool)
and the counts by interface, protocol, family, direction, TCP state and creator.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import struct
from collections import Counter

from ansible_collections.netbsd.pf.plugins.module_utils.abi import (
    AF_INET, AF_INET6, AF_NAMES, IFNAMSIZ, IPPROTO_TCP, PF_OUT, PFTM_ACCEPTED, RECORD_SIZE, protocol_name,
)
from ansible_collections.netbsd.pf.plugins.module_utils.records import (
    OFF_AF, OFF_DIRECTION, OFF_IFNAME, OFF_PROTO, OFFSET, column, ifname_text, inet_ntop, partial_struct,
    peer_state_name, record_count,
)

# The rule number of states created by the default rule (pfsync exports nr -1).
DEFAULT_RULE = 0xFFFFFFFF

_NATIVE_WORD = struct.Struct("=Q")
_IFNAME_FIELD = partial_struct(None, ("ifname",))
_IFNAME_AND_CREATOR = partial_struct(None, ("ifname", ("creatorid", "4s")))
_SUMMARY_FIELDS = partial_struct(None, ("ifname", "proto"))

# One pass over a record for everything the planner needs.
_VIEW_FIELDS = ("id", "ifname", "lan_addr", "lan_port", "gwy_addr", "gwy_port", "ext_addr", "ext_port", "expire",
                ("creatorid", "4s"), "af", "proto", "direction", "timeout")


def _view_struct(byte_order):
    return partial_struct(byte_order, _VIEW_FIELDS)


# --- one state ---------------------------------------------------------------------

def _addr_key(af, raw):
    """The part of a pf_addr the kernel compares for this af (pf_addr_cmp): none for unknown families."""
    if af == AF_INET:
        return raw[:4]
    if af == AF_INET6:
        return raw
    return b""


class StateView:
    """What the planner needs to know about one 240-byte record."""

    __slots__ = ("index", "ident", "ifname", "af", "proto", "direction", "timeout", "expire",
                 "lan", "lan_port", "gwy", "gwy_port", "ext", "ext_port", "key1", "key2")

    def __init__(self, index, fields):
        (raw_id, raw_ifname, self.lan, self.lan_port, self.gwy, self.gwy_port, self.ext, self.ext_port,
         self.expire, raw_creatorid, self.af, self.proto, self.direction, self.timeout) = fields
        self.index = index
        self.ident = raw_id + raw_creatorid
        self.ifname = ifname_text(raw_ifname)
        head = bytes((self.proto, self.af))
        lan, gwy, ext = (_addr_key(self.af, addr) for addr in (self.lan, self.gwy, self.ext))
        # pf's key trees (reference 5.5 step 6): lan/ext per interface, ext/gwy global.
        self.key1 = head + lan + ext + self.lan_port + self.ext_port
        self.key2 = head + ext + gwy + self.ext_port + self.gwy_port

    @property
    def zero_ident(self):
        """id and creatorid both 0: the kernel assigns a fresh identity on insert."""
        return not any(self.ident)

    def summary(self):
        """One line naming the state the way pfs prints it."""
        def host(addr, port):
            return "%s:%d" % (inet_ntop(self.af, addr) or "?", struct.unpack(">H", port)[0])
        text = "%s on %s proto %s %s -> %s" % (
            "out" if self.direction == PF_OUT else "in", self.ifname, protocol_name(self.proto),
            host(self.lan, self.lan_port), host(self.ext, self.ext_port))
        if (self.gwy, self.gwy_port) != (self.lan, self.lan_port):
            text += " using %s" % host(self.gwy, self.gwy_port)
        return text + " id %s cid %s" % (self.ident[:8].hex(), self.ident[8:].hex())


def state_views(block, byte_order, first_index=0):
    """A StateView for every record of a block."""
    view_struct = _view_struct(byte_order)
    return [StateView(first_index + n, fields) for n, fields in enumerate(view_struct.iter_unpack(block))]


def verify_records(block, byte_order, limit=10):
    """Problems that would make the kernel refuse or misread a record: list of messages (empty if fine).

    The kernel validates only the timeout index (EINVAL for anything but 0..19
    and 23); an unknown address family or an interface name without its NUL
    would be accepted and produce a state that never matches a packet, so both
    are refused too: they mean the file is damaged or not what it claims.
    """
    problems = []
    count = 0
    for view_index, fields in enumerate(_view_struct(byte_order).iter_unpack(block)):
        raw_ifname, af, timeout = fields[1], fields[10], fields[13]
        reasons = []
        if af not in (AF_INET, AF_INET6):
            reasons.append("address family %d is neither inet (2) nor inet6 (24)" % af)
        if timeout not in PFTM_ACCEPTED:
            reasons.append("timeout index %d is not one the kernel accepts (0..19, 23)" % timeout)
        if b"\0" not in raw_ifname:
            reasons.append("interface name is not NUL-terminated within %d bytes" % IFNAMSIZ)
        if reasons:
            count += 1
            if len(problems) < limit:
                problems.append("record %d: %s" % (view_index + 1, "; ".join(reasons)))
    if count > len(problems):
        problems.append("... and %d more damaged records" % (count - len(problems)))
    return problems


# --- the keys pf compares -------------------------------------------------------

def _keys(fields):
    """(ident, raw ifname, key1, key2, expire) of one unpacked record (see record_keys)."""
    raw_id, raw_ifname, lan, lan_port, gwy, gwy_port, ext, ext_port, expire, raw_creatorid, af, proto = fields[:12]
    if af == AF_INET:
        lan, gwy, ext = lan[:4], gwy[:4], ext[:4]
    elif af != AF_INET6:
        lan = gwy = ext = b""
    head = bytes((proto, af))
    return (raw_id + raw_creatorid, raw_ifname, b"".join((head, lan, ext, lan_port, ext_port)),
            b"".join((head, ext, gwy, ext_port, gwy_port)), expire)


def record_keys(block, byte_order):
    """(ident, raw ifname, key1, key2, expire) for every record of a block, as packed bytes.

    These are what pf's three trees compare (reference 5.5 step 6): ident is id +
    creatorid; key1 is proto, af, lan and ext address and ports (looked up per
    interface); key2 is proto, af, ext and gwy address and ports (global).
    Addresses count 4 bytes for inet, 16 for inet6 and none for other families,
    as pf_addr_cmp compares them.  Nothing but these bytes objects is made per record.
    """
    for fields in _view_struct(byte_order).iter_unpack(block):
        yield _keys(fields)


def keys_at(block, byte_order, index):
    """record_keys of the single record ``index`` of a block."""
    return _keys(_view_struct(byte_order).unpack_from(block, index * RECORD_SIZE))


def state_summary(record, byte_order):
    """One line naming a 240-byte record the way pfs prints it."""
    return StateView(0, _view_struct(byte_order).unpack_from(record)).summary()


# --- the pool and the counts ------------------------------------------------------

def table_occupancy(live_block, byte_order, status_states):
    """What holds the state pool: states the purge will free, and the default rule's live states.

    ``awaiting_purge`` counts the states DIOCGETSTATUS counts but DIOCGETSTATES does not show
    (unlinked, not yet freed) plus the shown ones exported with expire 0 (expired, not yet
    reached by the purge, which unlinks and frees them when it gets there).
    """
    fields = partial_struct(byte_order, ("rule", "expire"))
    shown = expired = on_default_rule = 0
    for rule, expire in fields.iter_unpack(live_block):
        shown += 1
        if expire == 0:
            expired += 1
        elif rule == DEFAULT_RULE:
            on_default_rule += 1
    unlinked = max(0, status_states - shown)
    return {"unlinked": unlinked, "expired": expired, "awaiting_purge": unlinked + expired,
            "live": shown - expired, "live_on_default_rule": on_default_rule}


def summarize_records(block, indexes=None):
    """Counts by (interface, protocol name) of a block's records (all of them, or those at ``indexes``).

    Interface name and protocol are bytes, so the block's byte order does not matter.
    """
    if indexes is None:
        pairs = _SUMMARY_FIELDS.iter_unpack(block)
    else:
        pairs = (_SUMMARY_FIELDS.unpack_from(block, index * RECORD_SIZE) for index in indexes)
    raw_counts = {}
    for pair in pairs:
        raw_counts[pair] = raw_counts.get(pair, 0) + 1
    counts = {}
    for (raw_ifname, proto), count in raw_counts.items():
        key = (ifname_text(raw_ifname), protocol_name(proto))
        counts[key] = counts.get(key, 0) + count
    return counts


def summarize_views(views):
    """Counts by (interface, protocol name)."""
    counts = {}
    for view in views:
        key = (view.ifname, protocol_name(view.proto))
        counts[key] = counts.get(key, 0) + 1
    return counts


def summary_text(counts):
    lines = ["%s %s: %d" % (ifname, proto, count) for (ifname, proto), count in sorted(counts.items())]
    lines.append("total: %d" % sum(counts.values()))
    return "\n".join(lines) + "\n"


def merged_counts(before, added_views):
    return add_counts(before, summarize_views(added_views))


def add_counts(before, added):
    """``before`` plus ``added`` (both counts by interface and protocol)."""
    after = dict(before)
    for key, count in added.items():
        after[key] = after.get(key, 0) + count
    return after


def summarize(blocks, byte_order, brief=False):
    """Counts of the states in ``blocks`` by interface, protocol, family, direction, TCP state and creator.

    Counts raw fields (byte columns, 16-byte interface names, 4-byte creator
    ids) at C speed and decodes only the distinct values, so a million states
    cost a few passes over bytes, not one Python object per field.  ``brief``
    stops at count, interfaces, protocols and families (what states_dump returns).
    """
    interfaces, protocols, families, directions, tcp_states, creators = (
        Counter(), Counter(), Counter(), Counter(), Counter(), Counter())
    total = 0
    for block in blocks:
        count = record_count(block)
        if not count:
            continue
        total += count
        proto = column(block, OFF_PROTO)
        protocols.update(_byte_counts(proto))
        families.update(_byte_counts(column(block, OFF_AF)))
        if brief:
            interfaces.update(_ifname_counts(block))
            continue
        for (raw_ifname, raw_creator), n in Counter(_IFNAME_AND_CREATOR.iter_unpack(block)).items():
            interfaces[raw_ifname] += n
            creators[raw_creator] += n
        directions.update(_byte_counts(column(block, OFF_DIRECTION)))
        if IPPROTO_TCP in proto:
            peers = Counter(zip(proto, column(block, OFFSET["src_state"]), column(block, OFFSET["dst_state"])))
            tcp_states.update(dict(((src, dst), n) for (number, src, dst), n in peers.items() if number == IPPROTO_TCP))
    names = Counter()
    for raw, n in interfaces.items():
        names[ifname_text(raw)] += n
    summary = {
        "count": total,
        "by_interface": dict(names),
        "by_protocol": dict((protocol_name(number), n) for number, n in protocols.items()),
        "by_address_family": dict((AF_NAMES.get(af, str(af)), n) for af, n in families.items()),
    }
    if brief:
        return summary
    creator_order = "<I" if byte_order == "little" else ">I"
    summary.update({
        "by_direction": dict(("out" if d == PF_OUT else "in", n) for d, n in directions.items()),
        "by_tcp_state": dict(("%s:%s" % (peer_state_name(IPPROTO_TCP, s), peer_state_name(IPPROTO_TCP, d)), n)
                             for (s, d), n in tcp_states.items()),
        "by_creatorid": dict(("%08x" % _u32(raw, creator_order), n) for raw, n in creators.items()),
    })
    return summary


def _ifname_counts(block):
    """{raw 16-byte interface name: states} of a block.

    ifname sits 8-byte aligned (offset 8 of a 240-byte record), so when no name
    is longer than 8 bytes (the usual case: wm0, vioif0, pppoe0) each record's
    name is one native 8-byte word, counted as an int; otherwise the 16-byte fields.
    """
    words = memoryview(block).cast("B").cast("Q")
    per_record = RECORD_SIZE // 8
    first, second = OFF_IFNAME // 8, OFF_IFNAME // 8 + 1
    if words[second::per_record].tobytes().strip(b"\0"):
        return Counter(raw for (raw,) in _IFNAME_FIELD.iter_unpack(block))
    return dict((_NATIVE_WORD.pack(word) + bytes(8), n) for word, n in Counter(words[first::per_record].tolist()).items())


def _byte_counts(values):
    """{byte value: occurrences} of a bytes column: one C-speed count per distinct value."""
    counts = {}
    rest = values
    while rest:
        value = rest[0]
        counts[value] = values.count(value)
        rest = rest.translate(None, bytes((value,)))
    return counts


def _u32(raw, fmt):
    return struct.unpack(fmt, raw)[0]
