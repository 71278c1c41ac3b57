# -*- coding: utf-8 -*-
# Copyright: netbsd.pf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Removing states: DIOCCLRSTATES / DIOCKILLSTATES with an exact count.

The kernel reports how many states it removed in a uint8 (reference 5.8,
5.9), so the count is taken from the table itself: the states that matched
before the call and are gone after it.  The same matching rules as the
kernel's DIOCKILLSTATES loop are implemented here so that check mode predicts
exactly what a real run removes.

``filters`` (the structure the other modules take, see transforms.StateFilter)
select states in ways no single kernel request can express (any of lan, gwy
or ext in a network, several protocols, a direction); those states are removed
one DIOCKILLSTATES each, keyed exactly to the state (af, proto, both hosts and
ports, interface).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import re
import struct

from ansible_collections.netbsd.pf.plugins.module_utils.abi import (
    AF_INET, AF_INET6, AF_NUMBERS, IFNAMSIZ, PF_OUT, protocol_number,
)
from ansible_collections.netbsd.pf.plugins.module_utils.errors import PfStateError
from ansible_collections.netbsd.pf.plugins.module_utils.views import state_views

# pf_rule_addr port operators (pfvar.h PF_OP_*), the two a selection uses.
PF_OP_NONE = 0
PF_OP_EQ = 2
PF_OP_RRG = 9     # a1 <= p <= a2

_PORT_RE = re.compile(r"^\s*(\d+)\s*(?:[-:]\s*(\d+)\s*)?$")


class SelectionError(PfStateError, ValueError):
    """Options that do not describe a usable selection (the message says why)."""


class PortMatch:
    """A port criterion: one port (EQ) or an inclusive range (RRG), as DIOCKILLSTATES takes it."""

    def __init__(self, text):
        match = _PORT_RE.match(str(text))
        if not match:
            raise SelectionError("%r is not a port (443) or an inclusive port range (1024-65535)" % (text,))
        low = int(match.group(1))
        high = int(match.group(2)) if match.group(2) is not None else None
        for port in (low, high):
            if port is not None and not 0 <= port <= 65535:
                raise SelectionError("port %d is outside 0..65535" % port)
        if high is not None and high < low:
            raise SelectionError("port range %d-%d is empty" % (low, high))
        self.low = low
        self.high = high
        self.op = PF_OP_EQ if high is None else PF_OP_RRG

    def matches(self, port):
        if self.op == PF_OP_EQ:
            return port == self.low
        return self.low <= port <= self.high

    def ports(self):
        """(port1, port2) for pf_rule_addr.port[]."""
        return (self.low, self.high if self.high is not None else 0)


class AddressMatch:
    """A CIDR criterion with the kernel's masked compare (PF_MATCHA) for its family."""

    def __init__(self, text):
        try:
            network = ipaddress.ip_network(str(text).strip(), strict=False)
        except ValueError as exc:
            raise SelectionError("%r is not an address or a network in CIDR notation: %s" % (text, exc))
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


class Selection:
    """Which states to remove: everything, one interface, or DIOCKILLSTATES criteria."""

    def __init__(self, all_states=False, interface=None, address_family=None, protocol=None,
                 source=None, destination=None, source_port=None, destination_port=None, state_filter=None):
        self.all_states = bool(all_states)
        self.state_filter = state_filter if state_filter is not None and state_filter.active else None
        self.interface = interface or None
        if self.interface and len(self.interface.encode("utf-8")) >= IFNAMSIZ:
            raise SelectionError("interface name %r is longer than %d bytes" % (self.interface, IFNAMSIZ - 1))
        self.source = AddressMatch(source) if source else None
        self.destination = AddressMatch(destination) if destination else None
        self.af = AF_NUMBERS[address_family] if address_family else 0
        for address in (self.source, self.destination):
            # Without an af the kernel would apply an IPv4 mask to the first word of IPv6 states.
            if address is not None:
                if self.af and self.af != address.af:
                    raise SelectionError("network %s does not belong to address_family %s" % (address.text, address_family))
                self.af = address.af
        if self.source and self.destination and self.source.af != self.destination.af:
            raise SelectionError("source and destination are of different address families")
        try:
            self.proto = protocol_number(str(protocol).strip()) if protocol not in (None, "") else 0
        except ValueError as exc:
            raise SelectionError("protocol: %s" % exc)
        self.source_port = PortMatch(source_port) if source_port not in (None, "") else None
        self.destination_port = PortMatch(destination_port) if destination_port not in (None, "") else None
        criteria = self.kill_criteria()
        if self.all_states and (criteria or self.interface or self.state_filter):
            raise SelectionError("all: true removes every state; it cannot be combined with other criteria")
        if not self.all_states and not criteria and not self.interface and not self.state_filter:
            raise SelectionError("empty selection: give filters, interface, address_family, protocol, source, destination or a port, "
                                 "or all: true to remove every state")

    def kill_criteria(self):
        """The criteria only DIOCKILLSTATES can express (an interface alone is a DIOCCLRSTATES)."""
        return [name for name, value in (("address_family", self.af), ("protocol", self.proto), ("source", self.source),
                                         ("destination", self.destination), ("source_port", self.source_port),
                                         ("destination_port", self.destination_port)) if value]

    @property
    def request(self):
        return "DIOCKILLSTATES" if self.kill_criteria() or self.state_filter else "DIOCCLRSTATES"

    def matches(self, view):
        """The kernel's verdict for one state (reference 5.8 for clear, 5.9 for kill)."""
        if self.interface and view.ifname != self.interface:
            return False
        if self.request == "DIOCCLRSTATES":
            return True
        if self.af and view.af != self.af:
            return False
        if self.proto and view.proto != self.proto:
            return False
        if view.direction == PF_OUT:
            src, src_port, dst, dst_port = view.lan, view.lan_port, view.ext, view.ext_port
        else:
            src, src_port, dst, dst_port = view.ext, view.ext_port, view.lan, view.lan_port
        # No address criterion is a zero mask, which matches any inet/inet6 state and nothing else.
        for criterion, raw in ((self.source, src), (self.destination, dst)):
            if criterion is not None:
                if not criterion.matches(view.af, raw):
                    return False
            elif view.af not in (AF_INET, AF_INET6):
                return False
        for criterion, raw_port in ((self.source_port, src_port), (self.destination_port, dst_port)):
            if criterion is not None and not criterion.matches(struct.unpack(">H", raw_port)[0]):
                return False
        return True

    def kill_arguments(self):
        """Keyword arguments of PfDevice.kill_states for this selection."""
        def port(criterion):
            return None if criterion is None else (criterion.op,) + criterion.ports()
        return {
            "af": self.af or None, "proto": self.proto or None,
            "src": self.source.text if self.source else None, "dst": self.destination.text if self.destination else None,
            "src_port": port(self.source_port), "dst_port": port(self.destination_port), "ifname": self.interface,
        }

    def describe(self):
        if self.all_states:
            return "all states"
        parts = []
        if self.interface:
            parts.append("interface %s" % self.interface)
        if self.af:
            parts.append("af %s" % ("inet" if self.af == AF_INET else "inet6"))
        if self.proto:
            parts.append("proto %d" % self.proto)
        if self.source:
            parts.append("from %s" % self.source.text)
        if self.source_port:
            parts.append("source port %s" % _port_text(self.source_port))
        if self.destination:
            parts.append("to %s" % self.destination.text)
        if self.destination_port:
            parts.append("destination port %s" % _port_text(self.destination_port))
        if self.state_filter:
            parts.append("matching filters")
        return ", ".join(parts)


def _port_text(port):
    return str(port.low) if port.high is None else "%d-%d" % (port.low, port.high)


def matching_views(block, byte_order, selection):
    views = state_views(block, byte_order)
    keep = selection.state_filter.mask(block) if selection.state_filter else [True] * len(views)
    return [view for view, kept in zip(views, keep) if kept and selection.matches(view)]


def exact_kill_arguments(view):
    """PfDevice.kill_states arguments that match this state and only states with its very key, or None.

    The kernel matches no address of a family other than inet/inet6 (reference 5.9),
    so such a state cannot be removed on its own.
    """
    if view.af == AF_INET:
        prefix = 32
    elif view.af == AF_INET6:
        prefix = 128
    else:
        return None
    if view.direction == PF_OUT:
        src, src_port, dst, dst_port = view.lan, view.lan_port, view.ext, view.ext_port
    else:
        src, src_port, dst, dst_port = view.ext, view.ext_port, view.lan, view.lan_port
    size = prefix // 8
    return {
        "af": view.af, "proto": str(view.proto), "ifname": view.ifname,
        "src": "%s/%d" % (ipaddress.ip_address(bytes(src[:size])), prefix),
        "dst": "%s/%d" % (ipaddress.ip_address(bytes(dst[:size])), prefix),
        "src_port": struct.unpack(">H", src_port)[0], "dst_port": struct.unpack(">H", dst_port)[0],
    }


def flush_states(device, selection, check_mode=False):
    """Remove the selected states (or count them in check mode).

    Returns a dict: ``removed`` (exact, from the table), ``matched`` (states
    that matched before the call), ``states_before``, ``states_after``,
    ``request``, ``kernel_count`` (the kernel's own count, modulo 256) and
    ``views_before``/``removed_views`` for diff summaries.
    """
    byte_order = device.abi.byte_order
    block = device.get_states()
    before = state_views(block, byte_order)
    matched = matching_views(block, byte_order, selection)
    del block
    result = {"request": selection.request, "matched": len(matched), "states_before": len(before),
              "selection": selection.describe(), "views_before": before}
    if check_mode:
        result.update(removed=len(matched), states_after=len(before) - len(matched), kernel_count=None, removed_views=matched,
                      awaiting_purge=_unlinked(device, len(before)) + len(matched))
        return result
    if selection.request == "DIOCCLRSTATES":
        kernel_count = device.clear_states(selection.interface or "")
    elif selection.state_filter:
        kernel_count = 0
        for arguments in filter(None, map(exact_kill_arguments, matched)):
            kernel_count = (kernel_count + device.kill_states(**arguments)) % 256
    else:
        kernel_count = device.kill_states(**selection.kill_arguments())
    after = state_views(device.get_states(), byte_order)
    remaining = set(view.ident for view in after)
    removed = [view for view in matched if view.ident not in remaining]
    result.update(removed=len(removed), states_after=len(after), kernel_count=kernel_count, removed_views=removed,
                  awaiting_purge=_unlinked(device, len(after)))
    return result


def _unlinked(device, shown):
    """States the kernel still counts (and keeps in its pool) but no longer shows: unlinked, waiting for the purge.

    NetBSD frees them only when its purge thread reaches them, about 1 + states / 10 a second and
    never while the table is locked (reference 5.8, 5.10); until then a restore can meet ENOMEM.
    """
    return max(0, device.get_status()["states"] - shown)
