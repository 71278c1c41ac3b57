# -*- coding: utf-8 -*-
# Copyright: netbsd.pf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pf states -> NPF connections (NPF reference 5.2-5.4).

Input: pf record blocks as the pf layers give them (240-byte ``pfsync_state`` records in a
known byte order). Output: ``npf_snapshot.Connection`` records for a host whose npf.conf
passes that traffic with stateful rules on the states' interfaces, plus one reason for every
state that cannot become an NPF connection. Counts add up: converted + unconvertible = input.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections
import functools

from ansible_collections.netbsd.pf.plugins.module_utils.abi import AF_INET, AF_INET6, PF_IN, PF_OUT
from ansible_collections.netbsd.pf.plugins.module_utils.npf_snapshot import (
    CONN_ACTIVE, CONN_PASS, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, Connection, ConnKey, ConnState, NatEntry,
    NpfSnapshot, PeerWindow,
)
from ansible_collections.netbsd.pf.plugins.module_utils.records import FIELD_INDEX, StateCodec, ifname_bytes, inet_ntop

# pf TCP peer states that pf_test_state_tcp uses (reference 5.3).
PF_CLOSED, PF_LISTEN, PF_SYN_SENT, PF_ESTABLISHED, PF_CLOSING, PF_FIN_WAIT_2, PF_TIME_WAIT = 0, 1, 2, 4, 7, 9, 10
PF_SYNPROXY_STATES = (11, 12)
# (pf src peer, pf dst peer) -> NPF_TCPS_* (reference 5.3).
TCP_STATE_MAP = {
    (PF_SYN_SENT, PF_CLOSED): 1, (PF_SYN_SENT, PF_LISTEN): 1,
    (PF_ESTABLISHED, PF_SYN_SENT): 3,
    (PF_SYN_SENT, PF_SYN_SENT): 2,
    (PF_ESTABLISHED, PF_ESTABLISHED): 4,
    (PF_CLOSING, PF_ESTABLISHED): 5,
    (PF_FIN_WAIT_2, PF_ESTABLISHED): 8,
    (PF_ESTABLISHED, PF_CLOSING): 6,
    (PF_ESTABLISHED, PF_FIN_WAIT_2): 7,
    (PF_CLOSING, PF_CLOSING): 9,
    (PF_FIN_WAIT_2, PF_CLOSING): 10, (PF_CLOSING, PF_FIN_WAIT_2): 10,
    (PF_FIN_WAIT_2, PF_FIN_WAIT_2): 11,
    (PF_TIME_WAIT, PF_TIME_WAIT): 0,
}
PF_WSCALE_FLAG, PF_WSCALE_MASK = 0x80, 0x0F
NPF_NAT_OUTBOUND, NPF_NAT_INBOUND = 2, 1
FLOATING_IFNAME = b"all"
REJECTED_LIST_LIMIT = 100
_F = FIELD_INDEX


class ConversionResult:
    """Converted connections and where every other state went (``reasons`` counts, ``rejected`` list)."""

    def __init__(self):
        self.connections = []
        self.input = 0
        self.reasons = collections.Counter()
        self.rejected = []

    def refuse(self, index, describe, reason):
        """Count ``reason`` by its category (the text before the first colon) and name the state."""
        self.reasons[reason.split(":", 1)[0]] += 1
        if len(self.rejected) < REJECTED_LIST_LIMIT:
            self.rejected.append({"index": index, "state": describe(), "reason": reason})

    def summary(self):
        return {"input": self.input, "converted": len(self.connections),
                "unconvertible": sum(self.reasons.values()), "reasons": dict(sorted(self.reasons.items())),
                "rejected": list(self.rejected)}


def _addr(af, raw16):
    return bytes(raw16[:4] if af == AF_INET else raw16)


def _port(raw2):
    return int.from_bytes(raw2, "big")


def _window(values, base, wscale):
    """One NPF peer from pf's: seqlo -> end, seqhi -> maxend, max_win scaled (5.2)."""
    seqlo, seqhi, max_win = values[base + 4], values[base + 5], values[base + 7]
    return PeerWindow(seqlo, seqhi, max(max_win, 1) << wscale, wscale)


def _tcp_state(values):
    src, dst = _F["src_pfss_flags"], _F["dst_pfss_flags"]
    pair = (values[src + 9], values[dst + 9])
    npf_state = TCP_STATE_MAP.get(pair)
    if npf_state is None:
        return None, "TCP state: pf peer states %d/%d have no NPF equivalent" % pair
    src_wscale, dst_wscale = values[src + 10], values[dst + 10]
    both = src_wscale & PF_WSCALE_FLAG and dst_wscale & PF_WSCALE_FLAG
    scales = (src_wscale & PF_WSCALE_MASK, dst_wscale & PF_WSCALE_MASK) if both else (0, 0)
    return ConnState(npf_state, (_window(values, src, scales[0]), _window(values, dst, scales[1]))), None


def _generic_state(values, proto):
    if proto == IPPROTO_UDP:
        return ConnState(2 if values[_F["dst_pfss_flags"] + 9] >= 1 else 1, (PeerWindow(0, 0, 0, 0),) * 2)
    return ConnState(1, (PeerWindow(0, 0, 0, 0),) * 2)


def find_nat_rule(nat_rules, nat_type, ifname, translated):
    """The running NAT rule of ``nat_type`` that translates to ``translated`` on ``ifname`` (any
    interface when ``ifname`` is None: an unbound connection), or None."""
    for rule in nat_rules:
        if rule.get("type") != nat_type or ifname is not None and rule.get("ifname") not in (None, ifname):
            continue
        if nat_type == NPF_NAT_OUTBOUND and rule.get("nat-addr") not in (None, translated):
            continue
        return rule
    return None


def convert_states(blocks, byte_order, nat_rules=(), key_interface=True, key_direction=True,
                   floating_interface=None, age=None):
    """Convert pf record ``blocks`` (in ``byte_order``) into NPF connections.

    ``nat_rules``: the NAT rules of the NPF host (its SAVE's ``nat``), for the policy ids of
    NAT states; ``key_interface``/``key_direction``: that host's ``state.key.*`` params;
    ``floating_interface``: the interface to bind floating ("all") pf states to, or None to
    refuse them (NPF connections are per interface, reference 5.4 blocker 2) unless the host
    keys connections by neither interface nor direction: then they become connections bound
    to no interface, the reference's clean equivalent. ``age``: seconds since the pf dump; a
    state whose remaining lifetime (``expire``) is 0 or not more than that is expired.
    """
    codec = StateCodec(byte_order)
    result = ConversionResult()
    index = 0
    for block in blocks:
        for values in codec.iter_unpack(block):
            result.input += 1
            if not values[_F["expire"]] or age is not None and values[_F["expire"]] <= age:
                result.refuse(index, functools.partial(_describe, values), "expired: %ds left at the dump, %s since" % (
                    values[_F["expire"]], "unknown" if age is None else "%ds" % age))
            else:
                _convert_one(index, values, result, nat_rules, key_interface, key_direction, floating_interface)
            index += 1
    return result


def _describe(values):
    af, proto = values[_F["af"]], values[_F["proto"]]
    ends = []
    for name in ("lan", "gwy", "ext"):
        address = inet_ntop(af, values[_F[name + "_addr"]]) or values[_F[name + "_addr"]].hex()
        ends.append("%s:%d" % (address, _port(values[_F[name + "_port"]])))
    return "proto %d %s %s (gwy %s) %s" % (proto, "in" if values[_F["direction"]] == PF_IN else "out",
                                           ends[0], ends[1], ends[2])


def _convert_one(index, values, result, nat_rules, key_interface, key_direction, floating_interface):
    # pylint: disable=too-many-locals,too-many-return-statements
    def describe():
        return _describe(values)

    af, proto, direction = values[_F["af"]], values[_F["proto"]], values[_F["direction"]]
    if proto not in (IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP) or af not in (AF_INET, AF_INET6):
        result.refuse(index, describe, "protocol: %d is not tracked by NPF (only TCP, UDP and ICMPv4)" % proto)
        return
    if proto == IPPROTO_ICMP and af != AF_INET:
        result.refuse(index, describe, "protocol: ICMP over IPv6 is not tracked by NPF (only ICMPv4)")
        return
    if direction not in (PF_IN, PF_OUT):
        result.refuse(index, describe, "direction: %d is neither in nor out" % direction)
        return
    if proto == IPPROTO_TCP:
        if values[_F["src_pfss_flags"] + 9] in PF_SYNPROXY_STATES:
            result.refuse(index, describe, "synproxy state: NPF has no SYN proxy")
            return
        if values[_F["src_seqdiff"]] or values[_F["dst_seqdiff"]]:
            result.refuse(index, describe, "modulated sequence numbers: NPF cannot translate them")
            return
        state, why = _tcp_state(values)
        if state is None:
            result.refuse(index, describe, why)
            return
    else:
        state = _generic_state(values, proto)
    raw_ifname = ifname_bytes(values[_F["ifname"]])
    if raw_ifname == FLOATING_IFNAME or not raw_ifname:
        if floating_interface is None and (key_interface or key_direction):
            result.refuse(index, describe, "floating interface: pf did not record where the state was made")
            return
        ifname = floating_interface
    else:
        ifname = raw_ifname.decode("ascii", "replace")
    lan = (_addr(af, values[_F["lan_addr"]]), _port(values[_F["lan_port"]]))
    gwy = (_addr(af, values[_F["gwy_addr"]]), _port(values[_F["gwy_port"]]))
    ext = (_addr(af, values[_F["ext_addr"]]), _port(values[_F["ext_port"]]))
    nat = None
    if gwy != lan:
        nat_type = NPF_NAT_OUTBOUND if direction == PF_OUT else NPF_NAT_INBOUND
        rule = find_nat_rule(nat_rules, nat_type, ifname, gwy[0])
        if rule is None:
            result.refuse(index, describe, "NAT without a matching policy: no %s NAT rule on %s of the NPF host"
                          % ("outbound" if nat_type == NPF_NAT_OUTBOUND else "inbound", ifname or "any interface"))
            return
        origin, translated = (lan, gwy) if direction == PF_OUT else (gwy, lan)
        # A NAT entry translates only on its interface (reference 3.5): the rule's, for an unbound connection.
        nat = NatEntry(ifname or rule.get("ifname"), len(lan[0]), origin[0], origin[1], translated[0],
                       translated[1], rule.get("nat-policy", 0))
    if direction == PF_OUT:
        forw, back = (lan, ext), (ext, gwy)
    else:
        forw, back = (ext, gwy), (lan, ext)
    key_ifname = ifname if key_interface else None

    def key(src, dst, di):
        return ConnKey(proto, src[1], dst[1], src[0], dst[0], key_ifname, di if key_direction else None)

    other = PF_IN if direction == PF_OUT else PF_OUT
    result.connections.append(Connection(
        index, direction | CONN_ACTIVE | CONN_PASS, proto, ifname, state, key(forw[0], forw[1], direction),
        key(back[0], back[1], other), len(lan[0]), nat, []))


def to_snapshot(result, running, source):
    """The converted connections as a snapshot of the NPF host ``running`` (its NAT rules and
    key params), ready for ``npf_restore.plan_restore``; re-decoded so that every record is
    validated like a saved one."""
    reply = {"version": running.version, "params": dict(running.params)}
    if result.connections:
        reply["conn-list"] = [conn.to_nvlist(running.byte_order) for conn in result.connections]
    if running.config["nat"]:
        reply["nat"] = running.config["nat"]
    return NpfSnapshot(reply, running.byte_order, source)
