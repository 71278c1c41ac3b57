# -*- coding: utf-8 -*-
# Copyright: netbsd.pf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Removing states: DIOCCLRSTATES / DIOCKILLSTATES with an exact count.

The kernel reports how many states it removed in a uint8 (reference 5.8,
5.9), so the count is taken from the table itself: the states that matched
before the call and are gone after it.  The states are chosen by the same
matcher as everywhere (transforms.StateFilter) narrowed by the kernel's own
DIOCKILLSTATES rules (transforms.KernelCriteria), so that check mode predicts
exactly what a real run removes.

``filters`` (the structure the other modules take)
select states in ways no single kernel request can express (any of lan, gwy
or ext in a network, several protocols, a direction); those states are removed
one DIOCKILLSTATES each, keyed exactly to the state (af, proto, both hosts and
ports, interface).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import struct

from ansible_collections.netbsd.pf.plugins.module_utils.abi import (
    AF_INET, AF_INET6, AF_NUMBERS, IFNAMSIZ, PF_OP_EQ, PF_OUT, protocol_number,
)
from ansible_collections.netbsd.pf.plugins.module_utils.transforms import (
    AddressMatch, KernelCriteria, PortMatch, StateFilter, TransformError,
)
from ansible_collections.netbsd.pf.plugins.module_utils.errors import PfStateError
from ansible_collections.netbsd.pf.plugins.module_utils.views import state_views


class SelectionError(PfStateError, ValueError):
    """Options that do not describe a usable selection (the message says why)."""


class Selection:
    """Which states to remove: everything, one interface, or DIOCKILLSTATES criteria, and the ``filters``.

    ``kernel`` (transforms.KernelCriteria) is what the kernel request carries; ``matcher``
    (transforms.StateFilter) selects the same states from a block, filters included.
    """

    def __init__(self, all_states=False, interface=None, address_family=None, protocol=None,
                 source=None, destination=None, source_port=None, destination_port=None, state_filter=None):
        self.all_states = bool(all_states)
        self.filtered = state_filter is not None and state_filter.active
        self.interface = interface or None
        if self.interface and len(self.interface.encode("utf-8")) >= IFNAMSIZ:
            raise SelectionError("interface name %r is longer than %d bytes" % (self.interface, IFNAMSIZ - 1))
        try:
            source = AddressMatch(source) if source else None
            destination = AddressMatch(destination) if destination else None
            af = AF_NUMBERS[address_family] if address_family else 0
            for address in (source, destination):
                # Without an af the kernel would apply an IPv4 mask to the first word of IPv6 states.
                if address is not None:
                    if af and af != address.af:
                        raise SelectionError("network %s does not belong to address_family %s" % (address.text, address_family))
                    af = address.af
            if source and destination and source.af != destination.af:
                raise SelectionError("source and destination are of different address families")
            try:
                proto = protocol_number(str(protocol).strip()) if protocol not in (None, "") else 0
            except ValueError as exc:
                raise SelectionError("protocol: %s" % exc)
            self.kernel = KernelCriteria(
                af, proto, source, destination,
                PortMatch(source_port) if source_port not in (None, "") else None,
                PortMatch(destination_port) if destination_port not in (None, "") else None, self.interface)
        except TransformError as exc:
            raise SelectionError(str(exc))
        criteria = self.kill_criteria()
        if self.all_states and (criteria or self.interface or self.filtered):
            raise SelectionError("all: true removes every state; it cannot be combined with other criteria")
        if not self.all_states and not criteria and not self.interface and not self.filtered:
            raise SelectionError("empty selection: give filters, interface, address_family, protocol, source, destination or a port, "
                                 "or all: true to remove every state")
        self.matcher = (state_filter if self.filtered else StateFilter()).narrowed(
            self.kernel, compare_peers=self.request == "DIOCKILLSTATES")

    def kill_criteria(self):
        """The criteria only DIOCKILLSTATES can express (an interface alone is a DIOCCLRSTATES)."""
        kernel = self.kernel
        return [name for name, value in (("address_family", kernel.af), ("protocol", kernel.proto), ("source", kernel.source),
                                         ("destination", kernel.destination), ("source_port", kernel.source_port),
                                         ("destination_port", kernel.destination_port)) if value]

    @property
    def request(self):
        return "DIOCKILLSTATES" if self.kill_criteria() or self.filtered else "DIOCCLRSTATES"

    def describe(self):
        if self.all_states:
            return "all states"
        kernel = self.kernel
        parts = []
        if self.interface:
            parts.append("interface %s" % self.interface)
        if kernel.af:
            parts.append("af %s" % ("inet" if kernel.af == AF_INET else "inet6"))
        if kernel.proto:
            parts.append("proto %d" % kernel.proto)
        if kernel.source:
            parts.append("from %s" % kernel.source.text)
        if kernel.source_port:
            parts.append("source port %s" % kernel.source_port.text())
        if kernel.destination:
            parts.append("to %s" % kernel.destination.text)
        if kernel.destination_port:
            parts.append("destination port %s" % kernel.destination_port.text())
        if self.filtered:
            parts.append("matching filters")
        return ", ".join(parts)


def matching_views(block, byte_order, selection):
    views = state_views(block, byte_order)
    return [view for view, kept in zip(views, selection.matcher.mask(block)) if kept]


def exact_kill_arguments(view):
    """PfDevice.kill_states arguments that match this state and only states with its very key, or None.

    The kernel matches no address of a family other than inet/inet6 (reference 5.9),
    so such a state cannot be removed on its own.
    """
    if view.af == AF_INET:
        size = 4
    elif view.af == AF_INET6:
        size = 16
    else:
        return None
    if view.direction == PF_OUT:
        src, src_port, dst, dst_port = view.lan, view.lan_port, view.ext, view.ext_port
    else:
        src, src_port, dst, dst_port = view.ext, view.ext_port, view.lan, view.lan_port
    host_mask = b"\xff" * size + bytes(16 - size)
    return {
        "af": view.af, "proto": view.proto, "ifname": view.ifname.encode("ascii"),
        "src": (bytes(src[:size]) + bytes(16 - size), host_mask), "dst": (bytes(dst[:size]) + bytes(16 - size), host_mask),
        "src_port": (PF_OP_EQ, struct.unpack(">H", src_port)[0], 0), "dst_port": (PF_OP_EQ, struct.unpack(">H", dst_port)[0], 0),
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
        kernel_count = device.clear_states(selection.kernel.interface)
    elif selection.filtered:
        kernel_count = 0
        for arguments in filter(None, map(exact_kill_arguments, matched)):
            kernel_count = (kernel_count + device.kill_states(**arguments)) % 256
    else:
        kernel_count = device.kill_states(**selection.kernel.kill_arguments())
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
