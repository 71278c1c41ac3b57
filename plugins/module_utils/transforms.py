# -*- coding: utf-8 -*-
# Copyright: netbsd.pf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Selecting states, renaming interfaces over raw record blocks.

``StateFilter`` is the one matcher of the collection: the ``filters`` option of
dump, convert, restore, info and flush, and flush's kernel-side criteria
(``KernelCriteria``, what DIOCKILLSTATES compares), all become criteria of it.
Every criterion reads fixed offsets of the 240-byte records (columns of single
bytes via extended slices, small structs via iter_unpack) and narrows one bool
per record, so positions are kept and no per-field Python objects are made for
records that a cheap test already decides.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import re
import struct

from ansible_collections.netbsd.pf.plugins.module_utils.abi import (
    AF_INET, AF_INET6, AF_NUMBERS, IFNAMSIZ, MAX_IFNAME_LEN, PF_OP_EQ, PF_OP_RRG, PF_OUT, RECORD_SIZE, protocol_number,
)
from ansible_collections.netbsd.pf.plugins.module_utils.errors import PfStateError
from ansible_collections.netbsd.pf.plugins.module_utils.records import (
    OFF_AF, OFF_DIRECTION, OFF_IFNAME, OFF_PROTO, ifname_bytes, partial_struct, record_count,
)

_HOSTS = partial_struct(None, ("lan_addr", "lan_port", "gwy_addr", "gwy_port", "ext_addr", "ext_port"))
_IFNAME = partial_struct(None, ("ifname",))
_PEERS = partial_struct(None, ("lan_addr", "lan_port", "ext_addr", "ext_port", "af", "direction"))
_PORT_RE = re.compile(r"^\s*(\d+)\s*(?:[-:]\s*(\d+)\s*)?$")


class TransformError(PfStateError, ValueError):
    """Invalid filter or rename arguments."""


def _restrict(keep, values, predicate):
    for index, value in enumerate(values):
        if keep[index] and not predicate(value):
            keep[index] = False


class _ByteIn:
    """A single-byte field (af, proto, direction) whose value is one of ``accepted``."""

    def __init__(self, offset, accepted):
        self.offset = offset
        self.accepted = frozenset(accepted)

    def restrict(self, keep, block):
        _restrict(keep, block[self.offset::RECORD_SIZE], self.accepted.__contains__)


class _InterfaceIn:
    """The interface name, compared like the kernel: up to its NUL."""

    def __init__(self, names):
        self.names = frozenset(name.ljust(IFNAMSIZ, b"\0") for name in names)

    def restrict(self, keep, block):
        _restrict(keep, [ifname_bytes(raw).ljust(IFNAMSIZ, b"\0") for (raw,) in _IFNAME.iter_unpack(block)],
                  self.names.__contains__)


class _AnyHost:
    """``ports`` (2 raw bytes each) and ``networks`` matched against any of lan, gwy and ext."""

    def __init__(self, ports, networks):
        self.ports = ports
        self.networks = networks

    def restrict(self, keep, block):
        afs = bytes(block[OFF_AF::RECORD_SIZE])
        for index, hosts in enumerate(_HOSTS.iter_unpack(block)):
            if keep[index]:
                keep[index] = self._matches(afs[index], hosts)

    def _matches(self, af, hosts):
        if self.ports is not None and not (hosts[1] in self.ports or hosts[3] in self.ports or hosts[5] in self.ports):
            return False
        if self.networks is None:
            return True
        for net_af, length, network, netmask in self.networks:
            if net_af != af:
                continue
            for addr in (hosts[0], hosts[2], hosts[4]):
                if int.from_bytes(addr[:length], "big") & netmask == network:
                    return True
        return False


class PortMatch:
    """A port criterion: one port (PF_OP_EQ) or an inclusive range (PF_OP_RRG), as DIOCKILLSTATES takes it."""

    def __init__(self, text):
        match = _PORT_RE.match(str(text))
        if not match:
            raise TransformError("%r is not a port (443) or an inclusive port range (1024-65535)" % (text,))
        low = int(match.group(1))
        high = int(match.group(2)) if match.group(2) is not None else None
        for port in (low, high):
            if port is not None and not 0 <= port <= 65535:
                raise TransformError("port %d is outside 0..65535" % port)
        if high is not None and high < low:
            raise TransformError("port range %d-%d is empty" % (low, high))
        self.low = low
        self.high = high
        self.op = PF_OP_EQ if high is None else PF_OP_RRG

    def matches(self, port):
        if self.op == PF_OP_EQ:
            return port == self.low
        return self.low <= port <= self.high

    def kernel(self):
        """(PF_OP_*, port1, port2) of pf_rule_addr."""
        return (self.op, self.low, self.high if self.high is not None else 0)

    def text(self):
        return str(self.low) if self.high is None else "%d-%d" % (self.low, self.high)


class AddressMatch:
    """A CIDR criterion with the kernel's masked compare (PF_MATCHA) for its family."""

    def __init__(self, text):
        try:
            network = ipaddress.ip_network(str(text).strip(), strict=False)
        except ValueError as exc:
            raise TransformError("%r is not an address or a network in CIDR notation: %s" % (text, exc))
        self.af = AF_INET if network.version == 4 else AF_INET6
        width = 4 if self.af == AF_INET else 16
        self.addr = network.network_address.packed + bytes(16 - width)
        self.mask = network.netmask.packed + bytes(16 - width)
        self.text = str(network)

    def matches(self, af, raw):
        if af == AF_INET:
            words = 4
        elif af == AF_INET6:
            words = 16
        else:
            return False          # the kernel's PF_MATCHA is false for any other af
        return all((raw[i] & self.mask[i]) == (self.addr[i] & self.mask[i]) for i in range(words))

    def kernel(self):
        """(16-byte address, 16-byte mask) of pf_addr_wrap."""
        return (self.addr, self.mask)


class _KernelPeers:
    """DIOCKILLSTATES's compare of source and destination (reference 5.9).

    The source is ext for inbound states and lan for outbound ones; no address
    criterion is a zero mask, which matches any inet/inet6 state and nothing else.
    """

    def __init__(self, source, destination, source_port, destination_port):
        self.source = source
        self.destination = destination
        self.source_port = source_port
        self.destination_port = destination_port

    def restrict(self, keep, block):
        for index, fields in enumerate(_PEERS.iter_unpack(block)):
            if keep[index]:
                keep[index] = self._matches(*fields)

    def _matches(self, lan, lan_port, ext, ext_port, af, direction):
        if direction == PF_OUT:
            src, src_port, dst, dst_port = lan, lan_port, ext, ext_port
        else:
            src, src_port, dst, dst_port = ext, ext_port, lan, lan_port
        for criterion, raw in ((self.source, src), (self.destination, dst)):
            if criterion is not None:
                if not criterion.matches(af, raw):
                    return False
            elif af not in (AF_INET, AF_INET6):
                return False
        for criterion, raw_port in ((self.source_port, src_port), (self.destination_port, dst_port)):
            if criterion is not None and not criterion.matches(struct.unpack(">H", raw_port)[0]):
                return False
        return True


def _interface_bytes(name):
    try:
        return name.encode("ascii")
    except UnicodeEncodeError:
        raise TransformError("interface name %r is not ASCII" % (name,))


class KernelCriteria:
    """What one DIOCKILLSTATES compares: af and proto numbers (0: any), source and destination
    (AddressMatch), their ports (PortMatch), each None when not given, and the interface name (None: any)."""

    def __init__(self, af=0, proto=0, source=None, destination=None, source_port=None, destination_port=None,
                 interface=None):
        self.af = af
        self.proto = proto
        self.source = source
        self.destination = destination
        self.source_port = source_port
        self.destination_port = destination_port
        self.interface = _interface_bytes(interface) if interface else b""

    def kill_arguments(self):
        """Keyword arguments of PfDevice.kill_states: the built pfioc_state_kill fields."""
        def kernel(criterion):
            return None if criterion is None else criterion.kernel()
        return {"af": self.af, "proto": self.proto, "src": kernel(self.source), "dst": kernel(self.destination),
                "src_port": kernel(self.source_port), "dst_port": kernel(self.destination_port), "ifname": self.interface}


class StateFilter:
    """Selects states; every given criterion must match (None = no constraint).

    interfaces: names; protocols: names or numbers; address_family: "inet"/"inet6";
    networks: CIDRs matched against lan, gwy or ext; ports: matched against any
    of lan, gwy, ext; direction: "in"/"out".  ``mask(block)`` gives one bool per
    record (positions kept); ``narrowed`` adds criteria, such as a KernelCriteria's.
    """

    def __init__(self, interfaces=None, protocols=None, address_family=None, networks=None, ports=None,
                 direction=None):
        names = None if interfaces is None else [_interface_bytes(name) for name in interfaces]
        try:
            numbers = None if protocols is None else [protocol_number(p) for p in protocols]
            nets = None if networks is None else [ipaddress.ip_network(n, strict=False) for n in networks]
        except ValueError as exc:
            raise TransformError(str(exc))
        if address_family is not None and address_family not in AF_NUMBERS:
            raise TransformError("address_family must be inet or inet6, not %r" % (address_family,))
        if direction not in (None, "in", "out"):
            raise TransformError("direction must be in or out, not %r" % (direction,))
        if ports is not None and any(not 0 <= int(p) <= 65535 for p in ports):
            raise TransformError("ports must be in 0..65535")
        self.criteria = []
        if address_family is not None:
            self.criteria.append(_ByteIn(OFF_AF, [AF_NUMBERS[address_family]]))
        if numbers is not None:
            self.criteria.append(_ByteIn(OFF_PROTO, numbers))
        if direction is not None:
            # pfs and the kernel treat anything but "out" as "in"
            self.criteria.append(_ByteIn(OFF_DIRECTION, [PF_OUT] if direction == "out" else set(range(256)) - {PF_OUT}))
        if names is not None:
            self.criteria.append(_InterfaceIn(names))
        if ports is not None or nets is not None:
            self.criteria.append(_AnyHost(
                None if ports is None else frozenset(struct.pack(">H", int(p)) for p in ports),
                None if nets is None else [(AF_INET if n.version == 4 else AF_INET6, n.max_prefixlen // 8,
                                            int(n.network_address), int(n.netmask)) for n in nets]))

    @property
    def active(self):
        return bool(self.criteria)

    def narrowed(self, kernel_criteria, compare_peers=True):
        """A StateFilter that also requires what ``kernel_criteria`` (KernelCriteria) selects.

        ``compare_peers`` False: only its interface (DIOCCLRSTATES compares nothing else).
        """
        narrowed = StateFilter()
        narrowed.criteria = list(self.criteria)
        if kernel_criteria.interface:
            narrowed.criteria.append(_InterfaceIn([kernel_criteria.interface]))
        if compare_peers:
            if kernel_criteria.af:
                narrowed.criteria.append(_ByteIn(OFF_AF, [kernel_criteria.af]))
            if kernel_criteria.proto:
                narrowed.criteria.append(_ByteIn(OFF_PROTO, [kernel_criteria.proto]))
            narrowed.criteria.append(_KernelPeers(kernel_criteria.source, kernel_criteria.destination,
                                                  kernel_criteria.source_port, kernel_criteria.destination_port))
        return narrowed

    def mask(self, block):
        """One bool per record: True if the record is selected."""
        keep = [True] * record_count(block)
        for criterion in self.criteria:
            criterion.restrict(keep, block)
        return keep


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


class TransformStats:
    def __init__(self):
        self.read = 0
        self.kept = 0
        self.filtered = 0
        self.renamed = 0


def transform_blocks(blocks, state_filter=None, rename=None, stats=None):
    """Filter, then rename every block; yields non-empty blocks and fills `stats`."""
    stats = stats if stats is not None else TransformStats()
    for block in blocks:
        count = record_count(block)
        stats.read += count
        if state_filter is not None and state_filter.active:
            block = _select(block, state_filter.mask(block))
            stats.filtered += count - record_count(block)
        if rename:
            block, renamed = rename_interfaces(block, rename)
            stats.renamed += renamed
        kept = record_count(block)
        stats.kept += kept
        if kept:
            yield block
