# -*- coding: utf-8 -*-
# Copyright: netbsd.pf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restore of NPF connections: plan one IOC_NPF_LOAD, then send it (NPF reference 3.6, 3.7, 5.1).

A load replaces the whole configuration and, since it carries connections, every running
connection; one bad record fails all of it; the request must stay under 4 MiB. So the plan
is made before anything is sent: the configuration is the running one (what rc.d loaded
from npf.conf), the connections are the snapshot's, validated, with their keys repaired,
deduplicated as the kernel keys them, and merged with the running connections (which are
newer than the snapshot and would otherwise be destroyed by the load). Every input
connection ends in exactly one count.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections
import copy

from ansible_collections.netbsd.pf.plugins.module_utils.errors import PfStateError
from ansible_collections.netbsd.pf.plugins.module_utils.npf_nvlist import encode
from ansible_collections.netbsd.pf.plugins.module_utils.npf_snapshot import (
    CONN_DIRECTION_MASK, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, PFIL_IN, PFIL_OUT, UNKNOWN_IFNAME,
)
from ansible_collections.netbsd.pf.plugins.module_utils.npfdev import NPF_REQUEST_LIMIT, NPF_VERSION, NpfError

NPF_TCPS_ESTABLISHED = 4
NPF_TABLE_CONST = 3
NPF_NAT_PORTMAP = 0x02
# N20 timeouts by state (reference 3.4): a connection idle longer than this has expired. Each is
# a kernel param (the first name), the default when the snapshot does not carry it.
TCP_TIMEOUTS = tuple(("state.tcp.timeout." + name, seconds) for name, seconds in (
    ("close", 10), ("new", 30), ("new", 30), ("new", 30), ("established", 86400), ("half_close", 21600),
    ("half_close", 21600), ("half_close", 21600), ("half_close", 21600), ("close", 10), ("close", 10),
    ("time_wait", 240)))
GENERIC_TIMEOUTS = tuple(("state.generic.timeout." + name, seconds)
                         for name, seconds in (("closed", 0), ("new", 30), ("established", 60)))
# Reasons a connection is not loaded; each has its count in the plan.
DROP_REASONS = ("invalid", "expired", "nat", "duplicate", "over_limit")
REJECTED_LIST_LIMIT = 100
# NPF_MAX_IFMAP: interface names NPF registers from one boot or flush to the next (reference 3.9); a load
# that brings the 65th fails whole with EINVAL, and the names it registered stay taken.
MAX_INTERFACE_NAMES = 64
# Connections looked up after the load (reference 5.1 step 7); NAT ones cannot be (3.6: ENOMEM).
VERIFY_SAMPLE = 16
# The element header and NVLIST_ARRAY_NEXT pair that each conn-list element adds to its own packing.
ARRAY_ELEMENT_OVERHEAD = 20
CONN_LIST_PAIR = 20 + len("conn-list")
# NpfDevice adds the request's ioctl number as the NUMBER "operation" (reference 2.3).
OPERATION_PAIR = 28 + len("operation")


class NpfRestoreError(PfStateError):
    """The restore cannot be planned or was refused; nothing was sent to the kernel."""


def kernel_key(key, alen, key_interface, key_direction):
    """The identity the kernel's conndb gives a key (reference 3.6 step 6), for deduplication."""
    return (alen, key.proto, key.di if key_direction else 0, key.ifname if key_interface else None,
            key.sport, key.dport, bytes(key.saddr), bytes(key.daddr))


def connection_timeout(conn, params):
    """The idle timeout of ``conn``'s state under ``params``, the timeouts of the host it aged on."""
    table = TCP_TIMEOUTS if conn.proto == IPPROTO_TCP else GENERIC_TIMEOUTS
    state = conn.state.state
    if state >= len(table):
        return 0
    name, default = table[state]
    return params.get(name, default)


def fit_rank(conn):
    """limit_policy=fit order, as pf's: established TCP, other TCP, UDP, ICMP."""
    if conn.proto == IPPROTO_TCP:
        return 0 if conn.state.state == NPF_TCPS_ESTABLISHED else 1
    if conn.proto == IPPROTO_UDP:
        return 2
    return 4 if conn.proto == IPPROTO_ICMP else 3


class RestorePlan:
    """What one load will carry, and where every input connection went."""

    def __init__(self, source):
        self.source = source
        self.request = None
        self.loaded = []
        self.counts = collections.OrderedDict(
            [("input", 0), ("running", 0), ("loaded", 0), ("already_running", 0), ("merged_running", 0),
             ("repaired", 0)] + [(reason, 0) for reason in DROP_REASONS])
        self.running_dropped = collections.Counter()
        self.rejected = []
        self.request_size = 0

    @property
    def changes(self):
        """False when the running table already holds every connection the snapshot can give."""
        return self.counts["loaded"] > self.counts["merged_running"]

    def drop(self, conn, reason, why, from_running=False):
        if from_running:
            self.running_dropped[reason] += 1
        else:
            self.counts[reason] += 1
        if len(self.rejected) < REJECTED_LIST_LIMIT:
            self.rejected.append({"connection": conn.to_text(), "reason": reason, "why": why,
                                  "from": "running" if from_running else "snapshot"})

    def accounted(self):
        """The snapshot's counts add up to its input; the running ones to the running table."""
        snapshot_loaded = self.counts["loaded"] - self.counts["merged_running"]
        snapshot_side = snapshot_loaded + self.counts["already_running"] + sum(self.counts[r] for r in DROP_REASONS)
        running_side = self.counts["merged_running"] + sum(self.running_dropped.values())
        return snapshot_side == self.counts["input"] and running_side == self.counts["running"]

    def as_dict(self):
        out = dict(self.counts)
        out.update({"source": self.source, "changed": self.changes, "request_size": self.request_size,
                    "running_dropped": dict(self.running_dropped), "rejected": list(self.rejected)})
        return out


def _nat_policy_fields(rule):
    return tuple(rule.get(field) for field in ("type", "flags", "nat-addr", "nat-mask", "nat-port",
                                               "nat-table-id", "nat-algo", "ifname"))


def _policy_map(snapshot_nat, running_nat):
    """Snapshot nat-policy id -> the running policy that compares equal (reference 5.1 step 3)."""
    running = {}
    for rule in running_nat:
        running.setdefault(_nat_policy_fields(rule), rule.get("nat-policy", 0))
    return dict((rule.get("nat-policy"), running[_nat_policy_fields(rule)]) for rule in snapshot_nat
                if _nat_policy_fields(rule) in running)


def _working_copy(conn):
    """A copy the plan may repair and renumber, leaving the caller's snapshot as it was."""
    clone = copy.copy(conn)
    clone.forw, clone.back = copy.copy(conn.forw), copy.copy(conn.back)
    clone.nat = copy.copy(conn.nat)
    return clone


def _port_map_refusal(port, port_range, reserved_ports):
    if not port_range[0] <= port <= port_range[1]:
        return "NAT port %d outside the port map %d-%d (raise portmap.max_port first)" % ((port,) + port_range)
    if port in reserved_ports:
        return ("NAT port %d already reserved by another restored entry (NetBSD 10 shares one pool "
                "between every restored NAT entry)" % port)
    return None


def _check_running_config(running):
    config = running.config
    if not config["rules"] and not config["nat"]:
        raise NpfRestoreError(
            "%s: NPF has no configuration loaded; a load of connections alone would block every other packet. "
            "Restore after npf.conf is loaded (rc.d npf)" % running.source)
    const = [table.get("name") for table in config["tables"] if table.get("type") == NPF_TABLE_CONST]
    if const:
        raise NpfRestoreError(
            "%s: the running configuration has const tables (%s), which a save cannot carry back "
            "(their data is not exported), so it cannot be re-sent with connections" % (
                running.source, ", ".join(str(name) for name in const)))


def _interface_names(conn):
    names = {conn.ifname, conn.forw.ifname, conn.back.ifname, conn.nat.ifname if conn.nat is not None else None}
    names.discard(None)
    names.discard(UNKNOWN_IFNAME)       # what a SAVE prints for a key's interface id, not a registered name
    return names


def _fit_interface_map(plan, candidates, running, limit_policy):
    """The candidates whose interface names fit NPF's map of MAX_INTERFACE_NAMES, with those already registered.

    The running configuration's and running connections' names are registered already; the names the
    snapshot adds take what is left.  ``fit`` keeps the names that carry the most connections and drops
    the others' connections as over_limit; ``refuse`` raises.  Names registered earlier by connections
    that are gone cannot be seen, so the kernel may still refuse (EINVAL).
    """
    registered = set(rule.get("ifname") for section in ("rules", "nat") for rule in running.config[section]
                     if isinstance(rule.get("ifname"), str))
    for conn in running.connections:
        registered |= _interface_names(conn)
    new = collections.Counter(name for conn, from_running in candidates if not from_running
                              for name in _interface_names(conn) - registered)
    room = max(MAX_INTERFACE_NAMES - len(registered), 0)
    if len(new) <= room:
        return candidates
    if limit_policy != "fit":
        figures = (plan.source, len(registered) + len(new), len(registered), len(new), MAX_INTERFACE_NAMES, room)
        raise NpfRestoreError(
            "%s: the load needs %d interface names (%d registered already, %d new from the snapshot); NPF registers at "
            "most %d per boot or flush and fails the whole load on the next one. Use limit_policy=fit to keep the "
            "connections of the %d busiest new interfaces" % figures)
    admitted = set(name for name, _count in sorted(new.items(), key=lambda item: (-item[1], item[0]))[:room])
    kept = []
    for conn, from_running in candidates:
        beyond = sorted(_interface_names(conn) - registered - admitted) if not from_running else []
        if beyond:
            plan.drop(conn, "over_limit", "interface %s is beyond the %d interface names NPF registers per boot or flush"
                      % (beyond[0], MAX_INTERFACE_NAMES))
        else:
            kept.append((conn, from_running))
    return kept


def plan_restore(snapshot, running, age=None, nat="drop", limit_policy="fit", running_conns="merge",
                 limit=NPF_REQUEST_LIMIT):
    """Plan the load of ``snapshot``'s connections into the host whose SAVE is ``running``.

    ``age``: seconds since the snapshot was taken (None: unknown, nothing counts as expired), measured
    against the timeouts in the snapshot's params (the host the connections aged on);
    ``nat``: "drop" (restored NAT entries break every later SAVE on NetBSD 10) or "keep" (needs a
    running NAT policy equal to the saved one); ``limit_policy``: "fit" keeps the most valuable
    connections under the 4 MiB cap, "refuse" raises; ``running_conns``: "merge" keeps the running
    connections (they are newer than the snapshot), "refuse" raises when there are any the
    snapshot does not hold.
    """
    _check_running_config(running)
    plan = RestorePlan(snapshot.source)
    key_interface = bool(running.params.get("state.key.interface", 1))
    key_direction = bool(running.params.get("state.key.direction", 1))
    policies = _policy_map(snapshot.config["nat"], running.config["nat"])
    portmap_policies = set(rule.get("nat-policy", 0) for rule in running.config["nat"]
                           if rule.get("flags", 0) & NPF_NAT_PORTMAP)
    port_range = (running.params.get("portmap.min_port", 1024), running.params.get("portmap.max_port", 49151))
    # N20 reserves every imported port in one pool of zero-length addresses (reference 3.6 step 5).
    reserved_ports = set()
    seen = {}
    candidates = []
    snapshot_keys = set()

    def keys_of(conn):
        return [kernel_key(key, conn.alen, key_interface, key_direction) for key in (conn.forw, conn.back)]

    def prepare(conn):
        """Validate and repair the keys: (the reason it cannot load or None, whether keys were repaired)."""
        if not conn.valid:
            return "; ".join(conn.problems), False
        stale = conn.keys_need_repair or not key_interface and any(key.ifname for key in (conn.forw, conn.back))
        if stale and not conn.repair_keys(key_interface):
            return "a stateful-all connection whose key interface was not saved", False
        if not key_direction:
            conn.forw.di = conn.back.di = None
        if key_interface and conn.ifname is not None and conn.forw.ifname is None and conn.back.ifname is None:
            # Saved on a host that did not key by interface: keys take the connection's, as repair_keys does.
            conn.forw.ifname = conn.back.ifname = conn.ifname
            stale = True
        if key_direction and conn.forw.di is None and conn.flags & CONN_DIRECTION_MASK in (PFIL_IN, PFIL_OUT):
            # Saved on a host that did not key by direction: the first packet's direction is in the flags.
            conn.forw.di = conn.flags & CONN_DIRECTION_MASK
            conn.back.di = PFIL_IN + PFIL_OUT - conn.forw.di
            stale = True
        return None, stale

    def admit(conn, from_running):
        if conn.nat is not None:
            if nat != "keep":
                plan.drop(conn, "nat", "restored NAT entries make every later save fail (NetBSD 10)", from_running)
                return
            if not from_running:
                if conn.nat.policy not in policies:
                    plan.drop(conn, "nat", "no running NAT policy equals saved policy %d" % conn.nat.policy)
                    return
                conn.nat.policy = policies[conn.nat.policy]
            if conn.nat.policy in portmap_policies and conn.nat.tport:
                why = _port_map_refusal(conn.nat.tport, port_range, reserved_ports)
                if why:
                    plan.drop(conn, "nat", why, from_running)
                    return
        if not from_running and age is not None and age > connection_timeout(conn, snapshot.params):
            plan.drop(conn, "expired", "idle timeout of %s is %ds, the snapshot is %ds old"
                      % (conn.state_name, connection_timeout(conn, snapshot.params), age))
            return
        keys = keys_of(conn)
        if keys[0] == keys[1] or any(key in seen for key in keys):
            plan.drop(conn, "duplicate", "a key equal to another connection's", from_running)
            return
        for key in keys:
            seen[key] = conn
        if conn.nat is not None and conn.nat.policy in portmap_policies and conn.nat.tport:
            reserved_ports.add(conn.nat.tport)
        candidates.append((conn, from_running))

    plan.counts["running"] = len(running.connections)
    plan.counts["input"] = len(snapshot.connections)
    for conn in map(_working_copy, running.connections):
        reason, _repaired = prepare(conn)
        if reason:
            plan.drop(conn, "invalid", reason, True)
        else:
            admit(conn, True)
    running_keys = set(seen)
    for conn in map(_working_copy, snapshot.connections):
        reason, repaired = prepare(conn)
        if reason:
            plan.drop(conn, "invalid", reason)
            continue
        keys = keys_of(conn)
        snapshot_keys.update(keys)
        if any(key in running_keys for key in keys):
            plan.counts["already_running"] += 1
            continue
        if repaired:
            plan.counts["repaired"] += 1
        admit(conn, False)
    newer = sum(1 for conn, from_running in candidates
                if from_running and not any(key in snapshot_keys for key in keys_of(conn)))
    if running_conns == "refuse" and newer:
        raise NpfRestoreError(
            "%s: the running table has %d connections that the snapshot does not hold (newer than it); the load "
            "would destroy them. Use running_conns=merge to keep them" % (running.source, newer))

    candidates = _fit_interface_map(plan, candidates, running, limit_policy)
    base = dict((section, items) for section, items in running.config.items() if items)
    base["params"] = dict(running.params)
    base["version"] = NPF_VERSION
    byte_order = running.byte_order
    room = limit - 1 - len(encode(base, byte_order)) - CONN_LIST_PAIR - OPERATION_PAIR
    costed = [(conn, from_running, len(encode(conn.to_nvlist(byte_order), byte_order)) + ARRAY_ELEMENT_OVERHEAD)
              for conn, from_running in candidates]
    if sum(cost for _conn, _from, cost in costed) > room:
        if limit_policy != "fit":
            raise NpfRestoreError(
                "%s: %d connections need %d bytes; one NPF load carries at most %d besides the configuration. "
                "Use limit_policy=fit to keep the most valuable ones" % (
                    snapshot.source, len(costed), sum(cost for _conn, _from, cost in costed), room))
        order = sorted(range(len(costed)), key=lambda i: (fit_rank(costed[i][0]), not costed[i][1], i))
        kept, used = set(), 0
        for index in order:
            if used + costed[index][2] <= room:
                kept.add(index)
                used += costed[index][2]
        for index, (conn, from_running, _cost) in enumerate(costed):
            if index not in kept:
                plan.drop(conn, "over_limit", "beyond the 4 MiB load", from_running)
        costed = [item for index, item in enumerate(costed) if index in kept]

    plan.loaded = [conn for conn, _from, _cost in costed]
    plan.counts["loaded"] = len(plan.loaded)
    plan.counts["merged_running"] = sum(1 for _conn, from_running, _cost in costed if from_running)
    if plan.loaded:
        base["conn-list"] = [conn.to_nvlist(byte_order) for conn in plan.loaded]
    plan.request = base
    plan.request_size = len(encode(base, byte_order))
    return plan


def execute_plan(device, plan, verify=VERIFY_SAMPLE):
    """Send the planned load (a plan without changes sends nothing), then look up a sample of
    the loaded connections by their forward keys. Returns the plan's report."""
    report = plan.as_dict()
    if not plan.accounted():
        raise NpfRestoreError("%s: internal accounting error, nothing sent: %r" % (plan.source, report))
    report.update({"verified": 0, "verify_failed": []})
    if not plan.changes or not plan.loaded:
        report["changed"] = False
        return report
    device.load(plan.request)
    report["changed"] = True
    for conn in [conn for conn in plan.loaded if conn.nat is None][:verify]:
        try:
            device.conn_lookup(conn.forw.to_nvlist(device.abi.byte_order))
            report["verified"] += 1
        except NpfError as exc:
            report["verify_failed"].append({"connection": conn.to_text(), "error": str(exc)})
    return report
