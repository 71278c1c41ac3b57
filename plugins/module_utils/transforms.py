# -*- coding: utf-8 -*-
# Copyright: netbsd.pf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Streaming filters, interface renaming and ageing over raw record blocks.

Everything reads fixed offsets of the 240-byte records (columns of single
bytes via extended slices, small structs via iter_unpack), so no per-field
Python objects are made for records that a cheap test already decides.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import struct

from ansible_collections.netbsd.pf.plugins.module_utils.abi import (
    AF_INET, AF_INET6, AF_NUMBERS, MAX_IFNAME_LEN, PF_IN, PF_OUT, RECORD_SIZE, protocol_number,
)
from ansible_collections.netbsd.pf.plugins.module_utils.records import (
    OFF_AF, OFF_DIRECTION, OFF_EXPIRE, OFF_IFNAME, OFF_PROTO, ifname_bytes, partial_struct, record_count,
)

_HOSTS = partial_struct(None, ("lan_addr", "lan_port", "gwy_addr", "gwy_port", "ext_addr", "ext_port"))
_IFNAME = partial_struct(None, ("ifname",))


class TransformError(ValueError):
    """Invalid filter or rename arguments."""


class StateFilter:
    """Selects states; every given criterion must match (None = no constraint).

    interfaces: names; protocols: names or numbers; address_family: "inet"/"inet6";
    networks: CIDRs matched against lan, gwy or ext; ports: matched against any
    of lan, gwy, ext; direction: "in"/"out".
    """

    def __init__(self, interfaces=None, protocols=None, address_family=None, networks=None, ports=None,
                 direction=None):
        self.interfaces = None if interfaces is None else frozenset(
            name.encode("ascii").ljust(16, b"\0") for name in interfaces)
        try:
            self.protocols = None if protocols is None else frozenset(protocol_number(p) for p in protocols)
            self.networks = None if networks is None else [ipaddress.ip_network(n, strict=False) for n in networks]
        except ValueError as exc:
            raise TransformError(str(exc))
        if address_family is not None and address_family not in AF_NUMBERS:
            raise TransformError("address_family must be inet or inet6, not %r" % (address_family,))
        self.af = None if address_family is None else AF_NUMBERS[address_family]
        if direction not in (None, "in", "out"):
            raise TransformError("direction must be in or out, not %r" % (direction,))
        self.direction = None if direction is None else (PF_OUT if direction == "out" else PF_IN)
        if ports is not None and any(not 0 <= int(p) <= 65535 for p in ports):
            raise TransformError("ports must be in 0..65535")
        self.ports = None if ports is None else frozenset(struct.pack(">H", int(p)) for p in ports)
        self._nets = None
        if self.networks is not None:
            self._nets = [(AF_INET if n.version == 4 else AF_INET6, n.max_prefixlen // 8,
                           int(n.network_address), int(n.netmask)) for n in self.networks]

    @property
    def active(self):
        return any(v is not None for v in (self.interfaces, self.protocols, self.af, self._nets, self.ports,
                                           self.direction))

    def mask(self, block):
        """One bool per record: True if the record is selected."""
        count = record_count(block)
        keep = [True] * count
        if self.af is not None:
            self._apply(keep, block[OFF_AF::RECORD_SIZE], lambda v: v == self.af)
        if self.protocols is not None:
            self._apply(keep, block[OFF_PROTO::RECORD_SIZE], self.protocols.__contains__)
        if self.direction is not None:
            # pfs and the kernel treat anything but "out" as "in"
            wanted_out = self.direction == PF_OUT
            self._apply(keep, block[OFF_DIRECTION::RECORD_SIZE], lambda v: (v == PF_OUT) == wanted_out)
        if self.interfaces is not None:
            self._apply(keep, [raw for (raw,) in _IFNAME.iter_unpack(block)], self._ifname_matches)
        if self.ports is not None or self._nets is not None:
            afs = bytes(block[OFF_AF::RECORD_SIZE])
            for index, hosts in enumerate(_HOSTS.iter_unpack(block)):
                if keep[index]:
                    keep[index] = self._hosts_match(afs[index], hosts)
        return keep

    @staticmethod
    def _apply(keep, values, predicate):
        for index, value in enumerate(values):
            if keep[index] and not predicate(value):
                keep[index] = False

    def _ifname_matches(self, raw):
        # compare like the kernel: the name up to its NUL
        return ifname_bytes(raw).ljust(16, b"\0") in self.interfaces

    def _hosts_match(self, af, hosts):
        if self.ports is not None and not (hosts[1] in self.ports or hosts[3] in self.ports or hosts[5] in self.ports):
            return False
        if self._nets is None:
            return True
        for net_af, length, network, netmask in self._nets:
            if net_af != af:
                continue
            for addr in (hosts[0], hosts[2], hosts[4]):
                if int.from_bytes(addr[:length], "big") & netmask == network:
                    return True
        return False


def state_filter_from(transforms, error=TransformError):
    """The StateFilter for the ``filters`` of ``transforms`` (argspec.transforms_from_params), None without filters.

    Bad criteria raise ``error`` (the caller's own exception class) with a message starting "filters: ".
    """
    filters = (transforms or {}).get("filters")
    if not filters:
        return None
    try:
        return StateFilter(**filters)
    except TransformError as exc:
        raise error("filters: %s" % exc)


def _select(block, keep):
    if all(keep):
        return block
    view = memoryview(block)
    return b"".join([view[i * RECORD_SIZE:(i + 1) * RECORD_SIZE] for i, wanted in enumerate(keep) if wanted])


def rename_interfaces(block, mapping):
    """Block with interface names replaced per `mapping` (old -> new); returns (block, renamed count)."""
    encoded = {}
    for old, new in mapping.items():
        if not new or len(new) > MAX_IFNAME_LEN or "\0" in new:
            raise TransformError("interface name %r must be 1..%d characters" % (new, MAX_IFNAME_LEN))
        encoded[old.encode("ascii")] = new.encode("ascii").ljust(16, b"\0")
    out = None
    renamed = 0
    for index, (raw,) in enumerate(_IFNAME.iter_unpack(block)):
        new = encoded.get(ifname_bytes(raw))
        if new is not None:
            if out is None:
                out = bytearray(block)
            start = index * RECORD_SIZE + OFF_IFNAME
            out[start:start + 16] = new
            renamed += 1
    return (block if out is None else out), renamed


def age_block(block, byte_order, elapsed):
    """Subtract `elapsed` seconds from every expire; returns (block, expired count).

    States with expire <= elapsed are dropped, never written with expire 0,
    because DIOCADDSTATES reads 0 as "full default timeout from now".  A state
    dumped with expire 0 was already due, so it is dropped too.
    """
    if elapsed < 0:
        raise TransformError("elapsed time must not be negative")
    expire_struct = partial_struct(byte_order, ("expire",))
    pack_into = partial_struct(byte_order, ("expire",), whole_record=False).pack_into
    expires = [value for (value,) in expire_struct.iter_unpack(block)]
    keep = [value > elapsed for value in expires]
    expired = len(keep) - sum(keep)
    if elapsed == 0 and not expired:
        return block, 0
    out = bytearray(_select(block, keep))
    position = OFF_EXPIRE
    for value, wanted in zip(expires, keep):
        if wanted:
            pack_into(out, position, value - elapsed)
            position += RECORD_SIZE
    return out, expired


class TransformStats:
    def __init__(self):
        self.read = 0
        self.kept = 0
        self.filtered = 0
        self.expired = 0
        self.renamed = 0

    def as_dict(self):
        return {"read": self.read, "kept": self.kept, "filtered": self.filtered, "expired": self.expired,
                "renamed": self.renamed}


def transform_blocks(blocks, byte_order, state_filter=None, rename=None, elapsed=None, stats=None):
    """Filter, then age, then rename every block; yields non-empty blocks and fills `stats`."""
    stats = stats if stats is not None else TransformStats()
    for block in blocks:
        count = record_count(block)
        stats.read += count
        if state_filter is not None and state_filter.active:
            block = _select(block, state_filter.mask(block))
            stats.filtered += count - record_count(block)
        if elapsed is not None:
            block, expired = age_block(block, byte_order, elapsed)
            stats.expired += expired
        if rename:
            block, renamed = rename_interfaces(block, rename)
            stats.renamed += renamed
        kept = record_count(block)
        stats.kept += kept
        if kept:
            yield block
