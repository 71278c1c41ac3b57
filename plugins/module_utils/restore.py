# -*- coding: utf-8 -*-
# Copyright: netbsd.pf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The restore engine: put dumped states back into the pf table, accounting for every one.

NetBSD's DIOCADDSTATES stops at the first record it cannot insert, keeps the
ones before it, reports nothing about how far it got and answers ENOMEM for a
duplicate, a key collision and a full table alike (reference 5.5).  pfs(8)
gives up at that point and leaves the table locked.  This engine instead:

1. reads and verifies the whole input before any ioctl (``load_dump``);
2. plans: filters and renames, ages the states by the time since the capture,
   predicts which states the kernel would refuse (already present, colliding
   keys, state limit) from a fresh DIOCGETSTATES (``plan_restore``);
3. adds the rest in chunks and, when a chunk fails, finds out from the table
   which of its records got in, files the failing one as rejected with the
   errno's meaning and carries on with the rest (``Restorer.add``).

Every input state ends in exactly one bucket:
``total = restored + already_present + rejected + expired + filtered``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import calendar
import errno
import fcntl
import os
import re
import struct
import time
from contextlib import contextmanager

from ansible_collections.netbsd.pf.plugins.module_utils.abi import (
    AF_INET, AF_INET6, IFNAMSIZ, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP,
    IPPROTO_UDP, PF_LIMIT_STATES, PF_OUT, PFTM_ACCEPTED, Abi, protocol_name,
)
from ansible_collections.netbsd.pf.plugins.module_utils.formats import open_dump
from ansible_collections.netbsd.pf.plugins.module_utils.lease import LeaseError, arm_lease, lease_view, release_lease
from ansible_collections.netbsd.pf.plugins.module_utils.pfdev import PfDevice, PfError, locked
from ansible_collections.netbsd.pf.plugins.module_utils.records import (
    OFF_EXPIRE, RECORD_SIZE, inet_ntop, prefix_for, record_count, swap_records,
)
from ansible_collections.netbsd.pf.plugins.module_utils.transforms import StateFilter, TransformError, rename_interfaces

DEFAULT_CHUNK_SIZE = 1000
REJECTED_LIST_LIMIT = 100
PFTM_TCP_ESTABLISHED = 2

BUCKETS = ("restored", "already_present", "rejected", "expired", "filtered")

# Offsets of the two peers' mss (reference 3.4/3.5): the kernel ntohs()es them on import.
_MSS_OFFSETS = (118, 150)

# One pass over a record for everything the planner needs (byte order added per codec).
_VIEW_FORMAT = "8s16s16s2s6x16s2s6x16s2s6x96xI32x4sBBB2xB2x"


class RestoreError(Exception):
    """A restore refused or aborted; ``report`` holds the counts known at that point (or None)."""

    def __init__(self, message, report=None):
        super(RestoreError, self).__init__(message)
        self.report = report


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
        self.ifname = raw_ifname.split(b"\0", 1)[0].decode("ascii", "replace")
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
    view_struct = struct.Struct(prefix_for(byte_order) + _VIEW_FORMAT)
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
    for view_index, fields in enumerate(struct.Struct(prefix_for(byte_order) + _VIEW_FORMAT).iter_unpack(block)):
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


# --- ageing ------------------------------------------------------------------

_ISO_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?\s*(Z|[+-]\d{2}:?\d{2})?$")


def parse_timestamp(value):
    """Seconds since the epoch from an epoch number or an ISO 8601 date-time (UTC unless an offset is given)."""
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    match = _ISO_RE.match(text)
    if not match:
        raise ValueError("%r is neither seconds since the epoch nor an ISO 8601 date-time such as 2024-05-01T12:30:00Z" % value)
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    seconds = calendar.timegm((int(year), int(month), int(day), int(hour), int(minute), int(second or 0), 0, 0, 0))
    seconds += float(fraction) if fraction else 0.0
    if zone and zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        seconds -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    return seconds


def resolve_age(age, now, captured_at=None, header_captured_at=None, source_mtime=None, file_mtime=None):
    """How many seconds to take off every state, and where that figure came from.

    ``age`` is "auto", "none" or a number of seconds.  For "auto" the capture
    time is, in this order: the ``captured_at`` option, the native header, the
    controller file's mtime (``src`` pushed by the action plugin), the target
    file's mtime.  Returns (seconds, source, captured_at or None).
    """
    if age in (None, "none"):
        return 0, "none", None
    if age != "auto":
        try:
            seconds = int(age)
        except (TypeError, ValueError):
            raise RestoreError("age must be auto, none or a number of seconds, not %r" % (age,))
        if seconds < 0:
            raise RestoreError("age must not be negative (%d)" % seconds)
        return seconds, "option", None
    for source, moment in (("captured_at", captured_at), ("header", header_captured_at),
                           ("controller file mtime", source_mtime), ("file mtime", file_mtime)):
        if moment is not None:
            return max(0, int(now - moment)), source, moment
    return 0, "none", None


# --- planning ------------------------------------------------------------------

class TableModel:
    """The kernel's three state trees, reduced to what decides whether an insert fails."""

    def __init__(self, views=()):
        self.by_ident = {}
        self.key1_ifnames = {}
        self.key2_owner = {}
        for view in views:
            self.insert(view)

    def insert(self, view):
        if not view.zero_ident:
            self.by_ident[view.ident] = view
        ifnames = self.key1_ifnames.get(view.key1)
        if ifnames is None:
            self.key1_ifnames[view.key1] = {view.ifname: view}
            self.key2_owner.setdefault(view.key2, view)
        else:
            ifnames[view.ifname] = view

    def classify(self, view):
        """(bucket, reason): ("new", None), ("already_present", None) or ("conflict", why)."""
        if not view.zero_ident:
            twin = self.by_ident.get(view.ident)
            if twin is not None:
                if twin.key1 == view.key1 and twin.ifname == view.ifname:
                    return "already_present", None
                return "conflict", "id and creatorid already used by %s" % twin.summary()
        ifnames = self.key1_ifnames.get(view.key1)
        if ifnames is not None:
            holder = ifnames.get(view.ifname)
            if holder is not None:
                if view.zero_ident:
                    # A state without identity is its key: the same key is the same state.
                    return "already_present", None
                return "conflict", "same connection already in the table on %s as %s" % (view.ifname, holder.summary())
            return "new", None      # joins the key held on other interfaces
        owner = self.key2_owner.get(view.key2)
        if owner is not None:
            return "conflict", "translated (ext/gwy) side collides with %s" % owner.summary()
        return "new", None


def limit_priority(view):
    """Sort key for limit_policy=fit: established TCP, other TCP, UDP, other, ICMP; longer-lived first."""
    if view.proto == IPPROTO_TCP:
        rank = 0 if view.timeout == PFTM_TCP_ESTABLISHED else 1
    elif view.proto == IPPROTO_UDP:
        rank = 2
    elif view.proto in (IPPROTO_ICMP, IPPROTO_ICMPV6):
        rank = 4
    else:
        rank = 3
    return (rank, -view.expire, view.index)


class Outcome:
    """Where every input state went."""

    def __init__(self, total):
        self.total = total
        self.counts = dict((bucket, 0) for bucket in BUCKETS)
        self.rejected_states = []
        self.rejected_by_reason = {}

    def add(self, bucket, count=1):
        self.counts[bucket] += count

    def reject(self, view, reason, category):
        self.counts["rejected"] += 1
        self.rejected_by_reason[category] = self.rejected_by_reason.get(category, 0) + 1
        if len(self.rejected_states) < REJECTED_LIST_LIMIT:
            self.rejected_states.append({"record": view.index + 1, "reason": reason, "category": category, "state": view.summary()})

    def as_dict(self):
        result = dict(self.counts)
        result["total"] = self.total
        result["rejected_states"] = list(self.rejected_states)
        result["rejected_by_reason"] = dict(self.rejected_by_reason)
        result["rejected_states_truncated"] = self.counts["rejected"] > len(self.rejected_states)
        return result

    def balanced(self):
        return sum(self.counts.values()) == self.total


class Plan:
    """What a restore will do: the records to add (kernel byte order, ready to send) and the buckets so far."""

    def __init__(self, outcome, to_add, block, live_views):
        self.outcome = outcome
        self.to_add = to_add          # StateViews, input order
        self.block = block            # bytearray, records indexed by StateView.index
        self.live_views = live_views  # the table the plan was made against

    def record(self, view):
        start = view.index * RECORD_SIZE
        return self.block[start:start + RECORD_SIZE]


def age_records(block, byte_order, views, seconds):
    """Subtract ``seconds`` from the expire of the given records in place; returns the views still alive.

    A record already at 0 is dropped whatever the age: the kernel would read
    expire 0 as "give it a full default timeout" (reference 5.5 step 4).
    """
    expire = struct.Struct(prefix_for(byte_order) + "I")
    alive = []
    for view in views:
        remaining = view.expire - seconds
        if remaining <= 0:
            continue
        if seconds:
            expire.pack_into(block, view.index * RECORD_SIZE + OFF_EXPIRE, remaining)
            view.expire = remaining
        alive.append(view)
    return alive


def swap_mss(block, views):
    """Byte-swap both peers' mss so that the kernel's ntohs() on a little-endian host restores the dumped value."""
    for view in views:
        base = view.index * RECORD_SIZE
        for offset in _MSS_OFFSETS:
            low = base + offset
            block[low], block[low + 1] = block[low + 1], block[low]


def plan_restore(block, byte_order, live_block, state_filter=None, rename=None, age_seconds=0,
                 on_conflict="skip", limit_policy="refuse", room=None):
    """Decide the fate of every record before anything is sent.

    ``block`` holds the input in kernel byte order; the returned Plan carries
    a copy with renames and ageing applied.  ``state_filter`` is a
    transforms.StateFilter, ``rename`` a dict old -> new interface name.
    ``room`` is how many more states the table takes (None: no limit check).
    Raises RestoreError for on_conflict=fail with conflicts, and for
    limit_policy=refuse when the states do not fit; nothing has been sent then.
    """
    total = record_count(block)
    keep = state_filter.mask(block) if state_filter is not None and state_filter.active else [True] * total
    work = bytearray(block)
    if rename:
        work = bytearray(rename_interfaces(work, rename)[0])
    views = [view for view in state_views(work, byte_order) if keep[view.index]]
    outcome = Outcome(total)
    outcome.add("filtered", total - len(views))
    alive = age_records(work, byte_order, views, age_seconds)
    outcome.add("expired", len(views) - len(alive))

    live_views = state_views(live_block, byte_order)
    model = TableModel(live_views)
    candidates, conflicts = [], []
    for view in alive:
        verdict, reason = model.classify(view)
        if verdict == "already_present":
            outcome.add("already_present")
        elif verdict == "conflict":
            conflicts.append((view, reason))
        else:
            model.insert(view)
            candidates.append(view)
    if conflicts and on_conflict == "fail":
        listed = "; ".join("record %d (%s): %s" % (view.index + 1, view.summary(), reason) for view, reason in conflicts[:10])
        more = " and %d more" % (len(conflicts) - 10) if len(conflicts) > 10 else ""
        raise RestoreError("refusing to restore: %d states conflict with the table (on_conflict=fail), nothing was added: %s%s"
                           % (len(conflicts), listed, more), outcome.as_dict())
    for view, reason in conflicts:
        outcome.reject(view, reason, "conflict")

    if room is not None and len(candidates) > max(room, 0):
        room = max(room, 0)
        if limit_policy != "fit":
            raise RestoreError(
                "refusing to restore: %d states to add but the state limit leaves room for %d (limit_policy=refuse), nothing was added; "
                "raise the limit with 'set limit states' in pf.conf or use limit_policy=fit" % (len(candidates), room), outcome.as_dict())
        chosen = set(view.index for view in sorted(candidates, key=limit_priority)[:room])
        for view in candidates:
            if view.index not in chosen:
                outcome.reject(view, "state limit: no room left in the table", "state limit")
        candidates = [view for view in candidates if view.index in chosen]
    return Plan(outcome, candidates, work, live_views)


# --- adding --------------------------------------------------------------------

def _batches(views, chunk_size):
    """Chunks for DIOCADDSTATES; records without identity travel alone (nothing else can tell whether they got in)."""
    batch = []
    for view in views:
        if view.zero_ident:
            if batch:
                yield batch
                batch = []
            yield [view]
            continue
        batch.append(view)
        if len(batch) >= chunk_size:
            yield batch
            batch = []
    if batch:
        yield batch


# errno -> (category, why) for the per-record failures of DIOCADDSTATES (reference 5.5).
_ADD_ERRORS = {
    errno.EINVAL: ("invalid", "EINVAL: the kernel refused the record's timeout index"),
    errno.ENOENT: ("interface", "ENOENT: the kernel could not create the interface (kif) the state is bound to"),
}


class Restorer:
    """Sends a Plan to the kernel chunk by chunk and accounts for every record."""

    def __init__(self, device, plan, byte_order, chunk_size=DEFAULT_CHUNK_SIZE, state_limit=None):
        self.device = device
        self.plan = plan
        self.byte_order = byte_order
        self.chunk_size = max(1, chunk_size)
        self.state_limit = state_limit
        self.calls = 0
        self.failures = 0
        self.restored_views = []

    def add(self):
        outcome = self.plan.outcome
        for batch in _batches(self.plan.to_add, self.chunk_size):
            pending = batch
            while pending:
                block = b"".join(self.plan.record(view) for view in pending)
                self.calls += 1
                try:
                    self.device.add_states(block)
                except PfError as exc:
                    failed_errno = exc.errno
                    if failed_errno not in (errno.ENOMEM, errno.EINVAL, errno.ENOENT):
                        raise RestoreError("DIOCADDSTATES failed: %s; %d states were restored before the failure"
                                           % (exc, outcome.counts["restored"]), outcome.as_dict())
                    self.failures += 1
                    pending = self._settle_failure(pending, failed_errno)
                    continue
                outcome.add("restored", len(pending))
                self.restored_views.extend(pending)
                pending = []
        return outcome

    def _settle_failure(self, pending, failed_errno):
        """Count the records the kernel took before the failing one, reject that one, return the rest."""
        live_block = self.device.get_states()
        live = state_views(live_block, self.byte_order)
        if len(pending) == 1 and pending[0].zero_ident:
            got_in = 0
        else:
            present = set(view.ident for view in live)
            got_in = 0
            while got_in < len(pending) and pending[got_in].ident in present:
                got_in += 1
            if got_in == len(pending):
                raise RestoreError("DIOCADDSTATES reported errno %d but every state of the chunk is in the table; "
                                   "something else is adding states, restore again to account for them" % failed_errno,
                                   self.plan.outcome.as_dict())
        outcome = self.plan.outcome
        outcome.add("restored", got_in)
        self.restored_views.extend(pending[:got_in])
        failed = pending[got_in]
        category, reason = self._failure_reason(failed, failed_errno, live)
        outcome.reject(failed, reason, category)
        return pending[got_in + 1:]

    def _failure_reason(self, view, failed_errno, live):
        if failed_errno in _ADD_ERRORS:
            return _ADD_ERRORS[failed_errno]
        verdict, why = TableModel(live).classify(view)
        if verdict != "new":
            return "conflict", "ENOMEM: %s (appeared during the restore)" % (why or "state already in the table")
        if self.state_limit is not None and self.device.get_status()["states"] >= self.state_limit:
            return "state limit", "ENOMEM: state limit of %d reached" % self.state_limit
        return "memory", "ENOMEM: the kernel could not allocate the state"


# --- diff and summaries ---------------------------------------------------------

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
    after = dict(before)
    for key, count in summarize_views(added_views).items():
        after[key] = after.get(key, 0) + count
    return after


# --- serialisation of concurrent restores -------------------------------------------

def default_restore_lock_file(lease_file):
    return lease_file + ".restore"


@contextmanager
def exclusive_restore(path, timeout, clock=time.time, sleep=time.sleep):
    """Hold an exclusive flock on ``path`` for the duration of one restore.

    Waits up to ``timeout`` seconds (0: do not wait) for a concurrent restore
    on the same host, then raises RestoreError naming the holder's pid.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    except OSError as exc:
        raise RestoreError("cannot open the restore lock file %s: %s; choose a writable restore_lock_file"
                           % (path, os.strerror(exc.errno)))
    try:
        deadline = clock() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
            if clock() >= deadline:
                holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
                raise RestoreError("another restore (pid %s) is running on this host and did not finish within %d seconds "
                                   "(restore_lock_file %s); wait for it or raise restore_lock_timeout" % (holder, timeout, path))
            sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, ("%d\n" % os.getpid()).encode("ascii"), 0)
        yield
    finally:
        os.close(fd)


# --- the whole restore ------------------------------------------------------------

class LoadedDump:
    """A dump read completely into memory and verified."""

    def __init__(self, path, fmt, byte_order, block, header_captured_at, mtime, trailing_bytes):
        self.path = path
        self.format = fmt
        self.byte_order = byte_order
        self.block = block
        self.header_captured_at = header_captured_at
        self.mtime = mtime
        self.trailing_bytes = trailing_bytes


def load_dump(path, fmt=None, byte_order=None, text_byte_order=None):
    """Read and verify every record of a dump (checksums, header, syntax, record fields).

    ``byte_order`` overrides detection for pfs binary files; text files are
    read in ``text_byte_order`` (the kernel's: pfs prints ids in host order).
    Raises RestoreError naming the problem; nothing is sent to the kernel.
    """
    try:
        mtime = os.stat(path).st_mtime
        reader = open_dump(path, None if fmt in (None, "auto") else fmt,
                           byte_order if byte_order else (text_byte_order if fmt == "pfs-text" else None))
        if reader.format == "pfs-text" and not byte_order and text_byte_order and reader.byte_order != text_byte_order:
            reader.close()
            reader = open_dump(path, "pfs-text", text_byte_order)
        with reader:
            block = bytearray()
            for chunk in reader.blocks(verify=True):
                block += chunk
            header = reader.header or {}
            dump_format, dump_order, trailing = reader.format, reader.byte_order, reader.trailing_bytes
    except (OSError, IOError) as exc:
        raise RestoreError("cannot read %s: %s" % (path, exc.strerror or exc))
    except ValueError as exc:
        raise RestoreError("refusing to restore %s, nothing was added: %s" % (path, exc))
    problems = verify_records(block, dump_order)
    if problems:
        raise RestoreError("refusing to restore %s, nothing was added: damaged records (wrong byte_order or a corrupt file?): %s"
                           % (path, "; ".join(problems)))
    captured = (header.get("metadata") or {}).get("captured_at")
    try:
        captured = parse_timestamp(captured) if captured is not None else None
    except ValueError:
        captured = None
    return LoadedDump(path, dump_format, dump_order, block, captured, mtime, trailing)


def _state_filter(transforms):
    filters = (transforms or {}).get("filters")
    if not filters:
        return None
    try:
        return StateFilter(**filters)
    except TransformError as exc:
        raise RestoreError("filters: %s" % exc)


@contextmanager
def _no_context():
    yield


@contextmanager
def table_lock(device, mode, lease_seconds, lease_file, report):
    """Lock the table for the body (mode "during"), under a lease so a killed module cannot leave it locked.

    A lock already held under a lease (netbsd.pf.states_lock) is left alone:
    the restore neither takes nor releases it.
    """
    if mode != "during":
        report["lock"] = {"mode": mode, "taken": False}
        yield
        return
    try:
        current = lease_view(lease_file)
        if current.get("locked_by_lease"):
            report["lock"] = {"mode": mode, "taken": False, "held_by_lease": current.get("token"),
                              "message": "the table is already locked under the lease in %s; it stays locked" % lease_file}
            yield
            return
        token = arm_lease(lease_file, lease_seconds, device.path, holder="netbsd.pf.states_restore")
    except LeaseError as exc:
        raise RestoreError("cannot lock the table safely: %s" % exc)
    report["lock"] = {"mode": mode, "taken": True, "lease_seconds": lease_seconds}
    try:
        with locked(device):
            yield
    finally:
        try:
            release_lease(lease_file, token)
        except LeaseError as exc:
            report.setdefault("warnings", []).append("the table is unlocked but the lease was not released: %s" % exc)


def restore_file(path, fmt=None, byte_order=None, transforms=None, age="auto", captured_at=None, source_mtime=None,
                 on_conflict="skip", limit_policy="refuse", chunk_size=DEFAULT_CHUNK_SIZE, fix_mss=True, lock="during",
                 lease=300, lease_file="/var/run/netbsd_pf_lock.lease", restore_lock_file=None, restore_lock_timeout=60,
                 check_mode=False, device_path="/dev/pf", now=None):
    """Restore a dump file into the kernel (or predict it in check mode); returns the report dict.

    Raises RestoreError (with ``report`` when counts are known) for refusals
    and aborts; PfError escapes only for device problems outside the add path.
    """
    report = {"warnings": []}
    kernel_order = Abi.host().byte_order
    dump = load_dump(path, fmt, byte_order, text_byte_order=kernel_order)
    now = time.time() if now is None else now
    try:
        captured_option = parse_timestamp(captured_at) if captured_at not in (None, "") else None
    except ValueError as exc:
        raise RestoreError("captured_at: %s" % exc)
    age_seconds, age_source, capture_time = resolve_age(age, now, captured_option, dump.header_captured_at, source_mtime, dump.mtime)
    if capture_time is not None and capture_time > now + 1:
        report["warnings"].append("the capture time (%s) lies in the future of this host's clock; states were not aged" % age_source)
    if age == "auto" and age_source == "file mtime":
        report["warnings"].append("ageing by the modification time of %s (no capture time in the file, no captured_at): "
                                  "if the file was copied without keeping its mtime, states were aged too little" % path)
    state_filter = _state_filter(transforms)
    rename = (transforms or {}).get("rename")
    block = dump.block if dump.byte_order == kernel_order else swap_records(dump.block, dump.byte_order, kernel_order)
    report.update({
        "format": dump.format, "byte_order": dump.byte_order, "kernel_byte_order": kernel_order,
        "age_seconds": age_seconds, "age_source": age_source, "captured_at": capture_time,
        "mss_fixed": bool(fix_mss and kernel_order == "little"),
    })
    if dump.trailing_bytes:
        report["warnings"].append("%d bytes after the last record of %s were ignored (as pfs does)" % (dump.trailing_bytes, path))

    serialized = _no_context() if check_mode else exclusive_restore(
        restore_lock_file or default_restore_lock_file(lease_file), restore_lock_timeout)
    with serialized:
        try:
            device = PfDevice(device_path, writable=not check_mode)
        except PfError as exc:
            raise RestoreError(str(exc))
        with device:
            with (table_lock(device, lock, lease, lease_file, report) if not check_mode else _no_context()):
                if check_mode:
                    report["lock"] = {"mode": lock, "taken": False}
                report.update(_restore_into(device, block, kernel_order, state_filter, rename, age_seconds,
                                            on_conflict, limit_policy, chunk_size, fix_mss, check_mode))
    return report


def _restore_into(device, block, kernel_order, state_filter, rename, age_seconds, on_conflict, limit_policy,
                  chunk_size, fix_mss, check_mode):
    try:
        live_block = device.get_states()
        status = device.get_status()
        state_limit = device.get_limit(PF_LIMIT_STATES)
    except PfError as exc:
        raise RestoreError("cannot read the state table: %s" % exc)
    room = state_limit - status["states"]
    plan = plan_restore(block, kernel_order, live_block, state_filter, rename, age_seconds, on_conflict, limit_policy, room)
    if fix_mss and kernel_order == "little":
        swap_mss(plan.block, plan.to_add)
    before = summarize_views(plan.live_views)
    result = {"state_limit": state_limit, "states_before": status["states"]}
    if check_mode:
        plan.outcome.add("restored", len(plan.to_add))
        added_views = plan.to_add
        result.update(add_calls=0, add_failures=0, states_after=status["states"] + len(plan.to_add))
    else:
        restorer = Restorer(device, plan, kernel_order, chunk_size, state_limit)
        try:
            restorer.add()
        except PfError as exc:      # re-reading the table after a failed chunk
            raise RestoreError("lost track of the restore after a failed chunk: %s" % exc, plan.outcome.as_dict())
        added_views = restorer.restored_views
        result.update(add_calls=restorer.calls, add_failures=restorer.failures, states_after=device.get_status()["states"])
    if not plan.outcome.balanced():
        raise RestoreError("internal accounting error: %r does not add up to %d" % (plan.outcome.counts, plan.outcome.total),
                           plan.outcome.as_dict())
    result.update(plan.outcome.as_dict())
    result["summary_before"] = before
    result["summary_after"] = merged_counts(before, added_views)
    return result
