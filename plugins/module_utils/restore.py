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

import errno
import fcntl
import math
import os
import re
import time
from array import array
from contextlib import contextmanager

from ansible_collections.netbsd.pf.plugins.module_utils.abi import (
    IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, PF_LIMIT_STATES, PFTM_UNTIL_PACKET, Abi,
)
from ansible_collections.netbsd.pf.plugins.module_utils.errors import PfStateError
from ansible_collections.netbsd.pf.plugins.module_utils.formats import detect_format, open_dump
from ansible_collections.netbsd.pf.plugins.module_utils.lease import (
    EXPIRED, TAKEN_OVER, LeaseError, arm_lease, end_lease, lease_predates_boot, lease_view, open_record_file,
)
from ansible_collections.netbsd.pf.plugins.module_utils.native import iso8601_seconds
from ansible_collections.netbsd.pf.plugins.module_utils.pfdev import PfDevice, PfError, locked
from ansible_collections.netbsd.pf.plugins.module_utils.progress import reported_blocks
from ansible_collections.netbsd.pf.plugins.module_utils.pushed import remove_quietly
from ansible_collections.netbsd.pf.plugins.module_utils.records import (
    OFF_EXPIRE, OFF_TIMEOUT, OFFSET, RECORD_SIZE, ifname_bytes, ifname_text, partial_struct,
    record_count, swap_records,
)
from ansible_collections.netbsd.pf.plugins.module_utils.transforms import rename_interfaces, state_filter_from
from ansible_collections.netbsd.pf.plugins.module_utils.views import (
    add_counts, keys_at, record_keys, state_summary, summarize_records,
    table_occupancy, verify_records,
)

DEFAULT_CHUNK_SIZE = 1000
REJECTED_LIST_LIMIT = 100
PFTM_TCP_ESTABLISHED = 2

BUCKETS = ("restored", "already_present", "rejected", "expired", "filtered")

# Offsets of the two peers' mss (reference 3.4/3.5): the kernel ntohs()es them on import.
_MSS_OFFSETS = (OFFSET["src_mss"], OFFSET["dst_mss"])


class RestoreError(PfStateError):
    """A restore refused or aborted; ``report`` (the root's ``result``) holds the counts known at that point (or None)."""

    def __init__(self, message, report=None):
        super(RestoreError, self).__init__(message, result=report)

    @property
    def report(self):
        return self.result


# --- ageing ------------------------------------------------------------------

_ISO_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?\s*(Z|[+-]\d{2}:?\d{2})?$")


def _finite(seconds, value):
    """``seconds`` unless it is NaN or infinite (1e400 parses as infinity), which no age can be computed from."""
    if not math.isfinite(seconds):
        raise ValueError("%r is not a finite number of seconds since the epoch" % (value,))
    return seconds


def parse_timestamp(value):
    """Seconds since the epoch from an epoch number or an ISO 8601 date-time (UTC unless an offset is given)."""
    if isinstance(value, (int, float)):
        return _finite(float(value), value)
    text = str(value).strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return _finite(seconds, value)
    match = _ISO_RE.match(text)
    if not match:
        raise ValueError("%r is neither seconds since the epoch nor an ISO 8601 date-time such as 2024-05-01T12:30:00Z" % value)
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    # The strict form checks every field: 2024-02-30 or 25:61 are refused, not wrapped round.
    try:
        return iso8601_seconds("%s-%s-%sT%s:%s:%s%s%s" % (year, month, day, hour, minute, second or "00",
                                                          (fraction or "")[:10], zone or "Z"))
    except ValueError as exc:
        raise ValueError("%r is %s" % (value, exc))


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

_ZERO_IDENT = bytes(12)

# Verdicts of TableModel.classify: a new state, one the table already holds, or the conflict in the way.
NEW = "new"
ALREADY_PRESENT = "already_present"
SAME_ID = "same id"
SAME_CONNECTION = "same connection"
SAME_TRANSLATION = "same translation"

_NO_HOLDER = -(1 << 31)     # an empty slot of a _KeyIndex (holders are n >= 0 or ~n)


class _KeyIndex:
    """A dict from packed key to holder in 5 bytes a slot: no key is stored, only its holder.

    Open addressing with linear probing over an array of holders and an array of
    8-bit tags taken from the key's hash.  A slot whose tag matches is confirmed by
    recomputing the exact key of its holder's record (``key_of``), so keys with
    equal hashes are told apart and a hash collision never makes a match.
    """

    def __init__(self, key_of, key_hash, expected):
        self._key_of = key_of
        self._key_hash = key_hash
        self._count = 0
        self._allocate(expected * 3 // 2 + 1)

    def _allocate(self, capacity):
        self._holders = array("i", (_NO_HOLDER,)) * max(capacity, 8)
        self._tags = array("B", (0,)) * len(self._holders)
        self._most = len(self._holders) * 2 // 3       # kept at most 2/3 full: short probes

    def find(self, key):
        """(holder of ``key`` or None, spot): its slot and tag, where place() puts it until another key is placed."""
        hashed = self._key_hash(key)
        holders, tags = self._holders, self._tags
        capacity = len(holders)
        tag = hashed >> 24 & 0xFF
        slot = hashed % capacity
        while True:
            holder = holders[slot]
            if holder == _NO_HOLDER:
                return None, slot << 8 | tag
            if tags[slot] == tag and self._key_of(holder) == key:
                return holder, slot << 8 | tag
            slot += 1
            if slot == capacity:
                slot = 0

    def setdefault(self, key, holder, replace=False):
        """The holder of ``key`` (and ``holder`` replaces it if ``replace``), or ``holder``, now its holder."""
        found, spot = self.find(key)
        if found is None:
            self.place(spot, holder)
            return holder
        if replace:
            self._holders[spot >> 8] = holder
        return found

    def place(self, spot, holder):
        """Add a key that find() did not find, at the spot it returned."""
        slot = spot >> 8
        self._holders[slot] = holder
        self._tags[slot] = spot & 0xFF
        self._count += 1
        if self._count > self._most:
            self._grow()

    def _grow(self):
        holders = self._holders
        self._allocate(len(holders) * 2)
        self._count = 0
        for holder in holders:
            if holder != _NO_HOLDER:
                self.place(self.find(self._key_of(holder))[1], holder)


class TableModel:
    """The kernel's three state trees, reduced to what decides whether an insert fails.

    Each key maps to its *holder*, the index of the record that owns it: ``n``
    in the live table block, ``~n`` in the restore's own block, so that a
    conflict can name the state in the way.  The keys themselves are not kept
    (see _KeyIndex): a lookup recomputes them from the blocks, which are in memory
    anyway, so the model costs about 22 bytes a record of the live table and of
    the input, whatever the table holds.  ``key_hash`` hashes a packed key.
    """

    def __init__(self, byte_order, live=b"", own=b"", key_hash=hash):
        self.byte_order = byte_order
        self.live = live
        self.own = own
        self._last_keys = (None, None)      # (holder, keys): a twin is checked right after its id matched
        # Sized for both blocks: growing recomputes every key, which would cost a table of other
        # states more time than the dicts did; a table that holds the dump leaves most unused.
        expected = record_count(live) + record_count(own)
        self.by_ident = _KeyIndex(lambda holder: self._keys(holder)[0], key_hash, expected)
        # key1 -> holder on the first interface that uses it
        self.by_key1 = _KeyIndex(lambda holder: self._keys(holder)[2], key_hash, expected)
        # key1 + interface name -> holder, for a key used on several interfaces (rare: grows when needed)
        self.key1_elsewhere = _KeyIndex(self._key1_on_interface, key_hash, 0)
        self.by_key2 = _KeyIndex(lambda holder: self._keys(holder)[3], key_hash, expected)
        insert = self.insert
        for index, (ident, raw_ifname, key1, key2, _expire) in enumerate(record_keys(live, byte_order)):
            insert(index, ident, raw_ifname, key1, key2)

    def _keys(self, holder):
        """record_keys of the holder's record."""
        if self._last_keys[0] == holder:
            return self._last_keys[1]
        if holder >= 0:
            keys = keys_at(self.live, self.byte_order, holder)
        else:
            keys = keys_at(self.own, self.byte_order, ~holder)
        self._last_keys = (holder, keys)
        return keys

    def _key1_on_interface(self, holder):
        keys = self._keys(holder)
        return keys[2] + ifname_bytes(keys[1])

    def record(self, holder):
        block, index = (self.live, holder) if holder >= 0 else (self.own, ~holder)
        return block[index * RECORD_SIZE:(index + 1) * RECORD_SIZE]

    def insert(self, holder, ident, raw_ifname, key1, key2):
        if ident != _ZERO_IDENT:
            self.by_ident.setdefault(ident, holder, replace=True)
        if self.by_key1.setdefault(key1, holder) != holder:
            self.key1_elsewhere.setdefault(key1 + ifname_bytes(raw_ifname), holder, replace=True)
        else:
            self.by_key2.setdefault(key2, holder)

    def classify(self, ident, raw_ifname, key1, key2):
        """(verdict, holder): (NEW, None), (ALREADY_PRESENT, twin) or a conflict verdict with the state in the way."""
        return self._lookup(ident, raw_ifname, key1, key2)[:2]

    def admit(self, holder, ident, raw_ifname, key1, key2):
        """classify(), and a NEW record is inserted as ``holder`` on the way (one lookup per key, not two)."""
        verdict, found, spots = self._lookup(ident, raw_ifname, key1, key2)
        if verdict == NEW:
            for index, spot in spots:
                index.place(spot, holder)
        return verdict, found

    def _lookup(self, ident, raw_ifname, key1, key2):
        """classify()'s verdict and holder, and the (index, spot) pairs where insert() would put a NEW record."""
        spots = []
        if ident != _ZERO_IDENT:
            twin, spot = self.by_ident.find(ident)
            if twin is not None:
                twin_keys = self._keys(twin)
                if twin_keys[2] == key1 and ifname_bytes(twin_keys[1]) == ifname_bytes(raw_ifname):
                    return ALREADY_PRESENT, twin, spots
                return SAME_ID, twin, spots
            spots.append((self.by_ident, spot))
        first, spot = self.by_key1.find(key1)
        if first is not None:
            name = ifname_bytes(raw_ifname)
            if ifname_bytes(self._keys(first)[1]) == name:
                holder = first
            else:
                holder, spot = self.key1_elsewhere.find(key1 + name)
                if holder is None:
                    spots.append((self.key1_elsewhere, spot))
                    return NEW, None, spots     # joins the key held on other interfaces
            # A state without identity is its key: the same key is the same state.
            return (ALREADY_PRESENT if ident == _ZERO_IDENT else SAME_CONNECTION), holder, spots
        spots.append((self.by_key1, spot))
        owner, spot = self.by_key2.find(key2)
        if owner is not None:
            return SAME_TRANSLATION, owner, spots
        spots.append((self.by_key2, spot))
        return NEW, None, spots

    def why(self, verdict, holder, raw_ifname):
        """The reason for a conflict verdict, naming the state in the way."""
        other = state_summary(self.record(holder), self.byte_order)
        if verdict == SAME_ID:
            return "id and creatorid already used by %s" % other
        if verdict == SAME_CONNECTION:
            return "same connection already in the table on %s as %s" % (ifname_text(raw_ifname), other)
        return "translated (ext/gwy) side collides with %s" % other


_PRIORITY = partial_struct(None, ("proto", "timeout"))


def limit_priority(block, byte_order):
    """Sort key over record indexes for limit_policy=fit: established TCP, other TCP, UDP, other, ICMP; longer-lived first."""
    expire_field = partial_struct(byte_order, ("expire",), whole_record=False)

    def priority(index):
        offset = index * RECORD_SIZE
        proto, timeout = _PRIORITY.unpack_from(block, offset)
        if proto == IPPROTO_TCP:
            rank = 0 if timeout == PFTM_TCP_ESTABLISHED else 1
        elif proto == IPPROTO_UDP:
            rank = 2
        elif proto in (IPPROTO_ICMP, IPPROTO_ICMPV6):
            rank = 4
        else:
            rank = 3
        return (rank, -expire_field.unpack_from(block, offset + OFF_EXPIRE)[0], index)
    return priority


class Outcome:
    """Where every input state went; the first REJECTED_LIST_LIMIT rejected ones are listed with a reason."""

    def __init__(self, total, block=b"", byte_order="little"):
        self.total = total
        self.block = block
        self.byte_order = byte_order
        self.counts = dict((bucket, 0) for bucket in BUCKETS)
        self.rejected_states = []
        self.rejected_by_reason = {}
        self.appeared = 0           # of already_present: added identically by someone else during the restore

    def add(self, bucket, count=1):
        self.counts[bucket] += count

    def wants_details(self):
        """Whether the next rejected state gets listed (its reason is worth composing)."""
        return len(self.rejected_states) < REJECTED_LIST_LIMIT

    def describe(self, index):
        return state_summary(self.block[index * RECORD_SIZE:(index + 1) * RECORD_SIZE], self.byte_order)

    def reject(self, index, category, reason):
        self.counts["rejected"] += 1
        self.rejected_by_reason[category] = self.rejected_by_reason.get(category, 0) + 1
        if self.wants_details():
            self.rejected_states.append({"record": index + 1, "reason": reason, "category": category,
                                         "state": self.describe(index)})

    def as_dict(self):
        result = dict(self.counts)
        result["total"] = self.total
        result["rejected_states"] = list(self.rejected_states)
        result["rejected_by_reason"] = dict(self.rejected_by_reason)
        result["appeared_during_restore"] = self.appeared
        result["rejected_states_truncated"] = self.counts["rejected"] > len(self.rejected_states)
        return result

    def balanced(self):
        return sum(self.counts.values()) == self.total


class Plan:
    """What a restore will do: the records to add (indexes into ``block``, input order) and the buckets so far."""

    def __init__(self, outcome, to_add, block, without_identity, summary_before):
        self.outcome = outcome
        self.to_add = to_add                        # array of record indexes
        self.block = block                          # bytearray in kernel byte order, aged and renamed
        self.without_identity = without_identity    # indexes of records with id and creatorid 0
        self.summary_before = summary_before        # the table the plan was made against, by interface and protocol


def swap_mss(block):
    """Byte-swap both peers' mss of every record so that the kernel's ntohs() on a little-endian host restores the dumped value."""
    for offset in _MSS_OFFSETS:
        low, high = block[offset::RECORD_SIZE], block[offset + 1::RECORD_SIZE]
        block[offset::RECORD_SIZE], block[offset + 1::RECORD_SIZE] = high, low


def plan_restore(block, byte_order, live_block, state_filter=None, rename=None, age_seconds=0,
                 on_conflict="skip", limit_policy="refuse", room=None):
    """Decide the fate of every record before anything is sent.

    ``block`` holds the input in kernel byte order; a bytearray is taken over
    and aged in place (anything else is copied), renames give a new block.
    ``state_filter`` is a transforms.StateFilter, ``rename`` a dict old -> new
    interface name.  ``room`` is how many more states the table takes (None: no
    limit check).  Raises RestoreError for on_conflict=fail with conflicts, and
    for limit_policy=refuse when the states do not fit; nothing has been sent then.

    Memory: besides the blocks, the TableModel's 22 bytes or so a record of the
    input and of the table (no key is kept, see _KeyIndex) and an index for each
    record to add; no object per record.
    """
    total = record_count(block)
    keep = state_filter.mask(block) if state_filter is not None and state_filter.active else None
    if rename:
        block = rename_interfaces(block, rename)[0]
    if not isinstance(block, bytearray):
        block = bytearray(block)
    outcome = Outcome(total, block, byte_order)
    model = TableModel(byte_order, live_block, block)
    expire_field = partial_struct(byte_order, ("expire",), whole_record=False)
    candidates = array("i")
    without_identity = set()
    conflicts = []
    counts = {"filtered": 0, "expired": 0, "already_present": 0}
    for index, (ident, raw_ifname, key1, key2, expire) in enumerate(record_keys(block, byte_order)):
        if keep is not None and not keep[index]:
            counts["filtered"] += 1
            continue
        # A record already at 0 is dropped whatever the age: the kernel would read
        # expire 0 as "give it a full default timeout" (reference 5.5 step 4).
        remaining = expire - age_seconds
        # PFTM_UNTIL_PACKET is accepted, but pf_state_expires() gives it 0: purged at once (reference 5.5 step 4).
        if remaining <= 0 or block[index * RECORD_SIZE + OFF_TIMEOUT] == PFTM_UNTIL_PACKET:
            counts["expired"] += 1
            continue
        if age_seconds:
            expire_field.pack_into(block, index * RECORD_SIZE + OFF_EXPIRE, remaining)
        verdict, holder = model.admit(~index, ident, raw_ifname, key1, key2)
        if verdict == NEW:
            candidates.append(index)
            if ident == _ZERO_IDENT:
                without_identity.add(index)
        elif verdict == ALREADY_PRESENT:
            counts["already_present"] += 1
        elif on_conflict == "fail":
            if len(conflicts) < 10:
                conflicts.append("record %d (%s): %s" % (index + 1, outcome.describe(index), model.why(verdict, holder, raw_ifname)))
            else:
                conflicts.append(None)
        else:
            outcome.reject(index, "conflict", model.why(verdict, holder, raw_ifname) if outcome.wants_details() else None)
    for bucket, count in counts.items():
        outcome.add(bucket, count)
    if conflicts:
        more = " and %d more" % (len(conflicts) - 10) if len(conflicts) > 10 else ""
        raise RestoreError("refusing to restore: %d states conflict with the table (on_conflict=fail), nothing was added: %s%s"
                           % (len(conflicts), "; ".join(conflicts[:10]), more), outcome.as_dict())
    del model

    if room is not None and len(candidates) > max(room, 0):
        room = max(room, 0)
        if limit_policy != "fit":
            raise RestoreError(
                "refusing to restore: %d states to add but the state limit leaves room for %d (limit_policy=refuse), nothing was added; "
                "raise the limit with 'set limit states' in pf.conf or use limit_policy=fit" % (len(candidates), room), outcome.as_dict())
        chosen = bytearray(total)
        for index in sorted(candidates, key=limit_priority(block, byte_order))[:room]:
            chosen[index] = 1
        for index in candidates:
            if not chosen[index]:
                outcome.reject(index, "state limit", "state limit: no room left in the table")
        candidates = array("i", (index for index in candidates if chosen[index]))
    return Plan(outcome, candidates, block, without_identity, summarize_records(live_block))


# --- adding --------------------------------------------------------------------

def _batches(to_add, without_identity, chunk_size):
    """Chunks for DIOCADDSTATES; records without identity travel alone (nothing else can tell whether they got in)."""
    batch = []
    for index in to_add:
        if index in without_identity:
            if batch:
                yield batch
                batch = []
            yield [index]
            continue
        batch.append(index)
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
_SETTLED_ERRNOS = (errno.ENOMEM,) + tuple(_ADD_ERRORS)


class Restorer:
    """Sends a Plan to the kernel chunk by chunk and accounts for every record.

    The kernel adds a chunk in array order and stops at the first record it
    cannot insert, without saying which (reference 5.5).  When a chunk fails:

    * the table is read back and tells, record by record, which of the chunk's
      leading records this call inserted (``_own_prefix``): the kernel appends
      one call's records to the state list in array order, with no other insert
      in between, after every state that was there before the call.  A record
      held there that this call did not add was added identically by someone
      else (another writer, pfsync): it is in the table, so it counts as
      already present (and as appeared_during_restore).  Global counters are
      never credited to this restore: they count the other writers' inserts too;
    * the rest of the plan is checked against that table, so that states which
      appeared since the plan cost no further failed calls;
    * the record the kernel stopped at is sent again alone and rejected only if
      it fails alone, with the reason found in the table (a conflict, an identical
      state, a full table: then the rest is rejected without further calls).

    ``table_reads`` counts the tables read back: at most one per failed call.
    """

    def __init__(self, device, plan, byte_order, chunk_size=DEFAULT_CHUNK_SIZE, progress=None, purge_wait=None):
        self.device = device
        self.progress = progress
        self.purge_wait = purge_wait    # a PurgeWait, or None: never wait for the kernel's purge
        self.plan = plan
        self.byte_order = byte_order
        self.chunk_size = max(1, chunk_size)
        self.calls = 0
        self.failures = 0
        self.table_reads = 0
        self.restored = array("i")
        self._settled = bytearray(record_count(plan.block))
        self._table = None          # (version, TableModel) of the last table read back
        self._full_at = None        # the state limit, once the table is known to be full

    def add(self):
        outcome = self.plan.outcome
        done = 0
        for batch in _batches(self.plan.to_add, self.plan.without_identity, self.chunk_size):
            pending = [index for index in batch if not self._settled[index]]
            alone = False
            while pending:
                if self._full_at is not None:
                    for index in pending:
                        self._reject(index, "state limit", "ENOMEM: state limit of %d reached; not sent" % self._full_at)
                    break
                settled, alone = self._send(pending[:1] if alone else pending)
                pending = [index for index in pending[settled:] if not self._settled[index]]
            done += len(batch)
            if self.progress is not None:
                self.progress("adding", done, len(self.plan.to_add))
        return outcome

    def _send(self, chunk):
        """One DIOCADDSTATES; returns (records settled from the start of chunk, whether the next one goes alone)."""
        before = self._version() if len(chunk) > 1 else None
        self.calls += 1
        try:
            self.device.add_states(self._records(chunk), chunk_records=len(chunk))
        except PfError as exc:
            if exc.errno not in _SETTLED_ERRNOS:
                raise RestoreError("DIOCADDSTATES failed: %s; %d states were restored before the failure"
                                   % (exc, self.plan.outcome.counts["restored"]), self.plan.outcome.as_dict())
            self.failures += 1
            if len(chunk) == 1 and exc.errno == errno.ENOMEM and self._waited_for_purge():
                return 0, False
            if len(chunk) == 1:
                self._reject_alone(chunk[0], exc.errno)
                return 1, False
            return self._settle_chunk(chunk, before, exc.errno)
        self._restore(chunk)
        return len(chunk), False

    def _records(self, chunk):
        block = self.plan.block
        first, last = chunk[0], chunk[-1]
        if last - first == len(chunk) - 1:      # consecutive records: one slice of the block
            return memoryview(block)[first * RECORD_SIZE:(last + 1) * RECORD_SIZE]
        return b"".join(block[index * RECORD_SIZE:(index + 1) * RECORD_SIZE] for index in chunk)

    def _settle_chunk(self, chunk, before, failed_errno):
        after, model = self._read_table()
        positions = []      # where the table holds the chunk's leading records (DIOCGETSTATES: list order)
        for index in chunk:
            verdict, holder = self._classify(model, index)
            if verdict != ALREADY_PRESENT:
                break
            positions.append(holder)
        held = len(positions)
        ours = self._own_prefix(chunk, positions, before, after, model, failed_errno)
        self._restore(chunk[:ours])
        for index in chunk[ours:held]:
            self._appeared(index)
        failing = chunk[held] if ours == held else None
        self._replan(model, failing)
        return held, failing is not None

    def _own_prefix(self, chunk, positions, before, after, model, failed_errno):
        """How many of the chunk's leading records the failed call inserted; the other held ones are a rival's.

        ``positions``: where the table holds the chunk's leading records;
        ``before``/``after``: (inserts, removals, states) just before the call
        and with the table read back.  This call's records form a run of
        consecutive positions starting with the chunk's first record, after the
        states listed at ``before`` (if nothing was freed since), no longer than the
        inserts since.  The kernel stopped at the record after that run: one it
        could not insert (a conflict, a full table, an errno other than
        ENOMEM), or one held before the call began, which then sits before the
        run.  Anything else means the kernel stopped at the first record, held
        before the call by someone else.
        """
        held = len(positions)
        run = 1 if held else 0
        while run < held and positions[run] == positions[0] + run:
            run += 1
        # Positions count listed states only; the status count also holds states unlinked but
        # not yet freed by the purge, the same number before and after when nothing was freed.
        awaiting_purge = after[2] - record_count(model.live)
        if not run or run > after[0] - before[0] or (after[1] == before[1] and positions[0] < before[2] - awaiting_purge):
            return 0
        if run == held and held < len(chunk) and self._refused(chunk[held], model, after[2], failed_errno):
            return run
        if run < held and positions[run] < positions[0]:
            return run
        return 0

    def _refused(self, index, model, states, failed_errno):
        """Whether the kernel refused this record: not ENOMEM (a rival's duplicate), or a conflict or full table."""
        if failed_errno != errno.ENOMEM or self._classify(model, index)[0] != NEW:
            return True
        return states >= self.device.get_limit(PF_LIMIT_STATES)

    def _replan(self, model, failing):
        """Settle, against the table just read, the records still to send, as the planner would have."""
        for index in self.plan.to_add:
            if self._settled[index] or index == failing:
                continue
            verdict, holder = self._classify(model, index)
            if verdict == ALREADY_PRESENT:
                self._appeared(index)
            elif verdict != NEW:
                self._reject_conflict(model, index, verdict, holder)

    def _reject_alone(self, index, failed_errno):
        """Classify a record that failed in a call of its own."""
        if failed_errno in _ADD_ERRORS:
            self._reject(index, *_ADD_ERRORS[failed_errno])
            return
        reads = self.table_reads
        model = self._current_table()
        verdict, holder = self._classify(model, index)
        if verdict == ALREADY_PRESENT:
            self._appeared(index)
        elif verdict != NEW:
            self._reject_conflict(model, index, verdict, holder)
        else:
            limit = self.device.get_limit(PF_LIMIT_STATES)
            if self.device.get_status()["states"] >= limit:
                self._full_at = limit
                self._reject(index, "state limit", "ENOMEM: state limit of %d reached" % limit)
            else:
                self._reject(index, "memory", "ENOMEM: the kernel could not allocate the state")
        if self.table_reads > reads:
            self._replan(model, None)

    def _waited_for_purge(self):
        """A record refused at the state limit: wait for the purge to free pending states; True to send it again.

        At the limit the kernel fails the pool allocation before it looks at the trees, so the
        record's own fate is unknown until it is sent again below the limit.
        """
        if self.purge_wait is None or not self.purge_wait.possible:
            return False
        unsent = sum(1 for index in self.plan.to_add if not self._settled[index])
        return self.purge_wait.wait_for_room(min(unsent, self.chunk_size))

    def _classify(self, model, index):
        return model.classify(*keys_at(self.plan.block, self.byte_order, index)[:4])

    def _reject_conflict(self, model, index, verdict, holder):
        reason = None
        if self.plan.outcome.wants_details():
            raw_ifname = keys_at(self.plan.block, self.byte_order, index)[1]
            reason = "ENOMEM: %s (appeared during the restore)" % model.why(verdict, holder, raw_ifname)
        self._reject(index, "conflict", reason)

    def _restore(self, indexes):
        self.plan.outcome.add("restored", len(indexes))
        self.restored.extend(indexes)
        for index in indexes:
            self._settled[index] = 1

    def _reject(self, index, category, reason):
        self.plan.outcome.reject(index, category, reason)
        self._settled[index] = 1

    def _appeared(self, index):
        """An identical copy was added by someone else (pfsync, another writer) after the plan: the state is there."""
        self.plan.outcome.add("already_present")
        self.plan.outcome.appeared += 1
        self._settled[index] = 1

    def _version(self):
        """(states inserted ever, states removed ever, states now): changes whenever the table does."""
        status = self.device.get_status()
        counters = status["state_counters"]
        return counters["inserts"], counters["removals"], status["states"]

    def _read_table(self):
        """(version, TableModel) of a table read with no change during the read (positions match the counters)."""
        version = self._version()
        for _attempt in range(3):
            self.table_reads += 1
            block = self.device.get_states()
            settled = self._version()
            if settled == version:
                break
            version = settled
        self._table = (version, TableModel(self.byte_order, block))
        return self._table

    def _current_table(self):
        """The model of the table as it is now: the last one read back if nothing changed since."""
        if self._table is not None and self._table[0] == self._version():
            return self._table[1]
        return self._read_table()[1]


# --- the purge and adaptive timeouts ----------------------------------------------
#
# NetBSD frees a cleared, killed or expired state only when its purge thread reaches it, a part
# of the list each second and never while the table is locked (reference 5.4, 5.8, 5.10); until
# then the state holds its place in the pool and in DIOCGETSTATUS's count, so DIOCADDSTATES
# answers ENOMEM at the limit although DIOCGETSTATES no longer shows the state.

DEFAULT_PURGE_WAIT = 180
PURGE_POLL_SECONDS = 1.0
# Stop waiting this long before the restore's lock lease runs out, so the watchdog still guards the relock.
LEASE_MARGIN_SECONDS = 15
PFTM_INTERVAL = 15
PFTM_ADAPTIVE_START = 16
PFTM_ADAPTIVE_END = 17


class PurgeWait:
    """Waits, when DIOCADDSTATES hits the state limit, for the kernel's purge to free pending states.

    The purge does nothing while the table is locked, so a lock this restore holds is
    released for the wait and taken again after it (the lease stays armed meanwhile); a lock
    held by someone else's lease (netbsd.pf.states_lock) means there is nothing to wait for.
    Progress is kept in ``summary()`` for the module's result.
    """

    def __init__(self, device, seconds, lock_report, clock=None, sleep=None):
        self.device = device
        self.seconds = max(0, int(seconds or 0))
        self.lock_report = lock_report
        self._clock = clock or time.monotonic
        self._sleep = sleep or time.sleep
        self.deadline = self._clock() + self.seconds
        if lock_report.get("taken") and lock_report.get("lease_seconds"):
            self.deadline = min(self.deadline, self._clock() + lock_report["lease_seconds"] - LEASE_MARGIN_SECONDS)
        self.waits = []
        self.stopped = None     # why the restore does not or no longer waits
        if lock_report.get("held_by_lease"):
            self.stopped = "not waiting: the table is locked under another holder's lease and the kernel does not purge a locked table"
        elif not self.seconds:
            self.stopped = "not waiting: purge_wait is 0"

    @property
    def possible(self):
        """Whether the purge can free anything during a wait."""
        return self.seconds > 0 and not self.lock_report.get("held_by_lease")

    def wait_for_room(self, wanted):
        """Wait until ``wanted`` more states fit or everything pending is freed; False when waiting cannot help."""
        if not self.possible:
            return False
        status = self.device.get_status()
        limit = self.device.get_limit(PF_LIMIT_STATES)
        if status["states"] < limit:
            return False    # an ENOMEM below the limit: not the purge's to solve
        pending = table_occupancy(self.device.get_states(), self.device.abi.byte_order, status["states"])["awaiting_purge"]
        if pending == 0:
            return False
        if self._clock() >= self.deadline:
            self.stopped = "purge_wait ran out (%d seconds%s)" % (self.seconds, self._lease_note())
            return False
        # Room for one purge tick's worth is enough to go on: refilling keeps pf_status.states, and so the
        # purge's quota (1 + states / interval a second), high, where an idle table frees ever fewer states a second.
        quota = 1 + status["states"] // max(1, self.device.get_timeout(PFTM_INTERVAL))
        target = max(limit - min(wanted, quota), status["states"] - pending)
        started, states = self._clock(), status["states"]
        release = bool(self.lock_report.get("taken"))
        if release:
            self.device.set_lock(False)
        try:
            while states > target and self._clock() < self.deadline:
                self._sleep(PURGE_POLL_SECONDS)
                states = self.device.get_status()["states"]
        finally:
            if release:
                self.device.set_lock(True)
        self.waits.append({"pending": pending, "freed": status["states"] - states,
                           "seconds": round(self._clock() - started, 1), "lock_released": release})
        if states >= limit:
            self.stopped = "purge_wait ran out (%d seconds%s)" % (self.seconds, self._lease_note())
            return False
        return True

    def _lease_note(self):
        if self.lock_report.get("taken") and self.lock_report.get("lease_seconds"):
            return ", ending %d seconds before the lock lease" % LEASE_MARGIN_SECONDS
        return ""

    def summary(self):
        """The result's ``purge_wait``: limit, waits, seconds waited, states freed meanwhile, why it stopped."""
        return {"limit_seconds": self.seconds, "waits": len(self.waits),
                "waited_seconds": round(sum(wait["seconds"] for wait in self.waits), 1),
                "freed_while_waiting": sum(wait["freed"] for wait in self.waits),
                "lock_released": any(wait["lock_released"] for wait in self.waits), "stopped": self.stopped}

    def warning(self):
        """One line for the module's warnings when the restore had to wait, or None."""
        if not self.waits:
            return None
        summary = self.summary()
        text = ("the table was full with states awaiting the kernel's purge: waited %.1f s in %d waits, %d states freed "
                "meanwhile" % (summary["waited_seconds"], summary["waits"], summary["freed_while_waiting"]))
        if summary["lock_released"]:
            text += "; the table lock was released while waiting (the kernel does not purge a locked table)"
        return text


def scaled_timeout(timeout, timeouts, default_rule_states):
    """pf_state_expires() (pf.c) for a default-rule state: its timeout as scaled by adaptive.start/end.

    NetBSD scales by ``(end - states) / (end - start)`` in 32-bit unsigned arithmetic once the
    default rule holds more than adaptive.start states (``set limit states N`` makes pfctl set
    start/end to 60 %/120 % of N), and expires every state at once from adaptive.end on.
    """
    start, end = timeouts[PFTM_ADAPTIVE_START], timeouts[PFTM_ADAPTIVE_END]
    if not end or default_rule_states <= start or start >= end:
        return timeout
    if default_rule_states >= end:
        return 0
    return ((timeout * (end - default_rule_states)) & 0xFFFFFFFF) // (end - start)


def fit_remaining_times(block, indexes, byte_order, timeouts, default_rule_states):
    """Set the expire field of the records to add so each lives as long as it was dumped with, and no longer.

    Returns (states capped, most seconds a cap removed, the adaptive report).

    First the cap: the import puts a state's last activity at ``now - (timeout - expire)`` in
    32-bit unsigned arithmetic (reference 5.5 step 4), so an expire past the timeout (a corrupt
    file, or a source with longer timeouts) wraps, and the state either lives for decades or is
    dead on arrival; no state can be given more than its timeout from now.

    Then the adaptive timeouts: the import sets the last activity with the full timeout, and
    pf_state_expires() then scales the timeout, so a state near the limit dies ``timeout -
    scaled`` seconds earlier than the dump said, already expired when that exceeds its
    remaining time.  Adding that amount to ``expire`` cancels the scaling at the table's size
    after the restore.  No state gets more than its scaled timeout from now (that would put its
    last activity in the future): those are capped and counted as ``shortened``
    (``shortened_by_max``: the most seconds a capped state lost).
    """
    start, end = timeouts[PFTM_ADAPTIVE_START], timeouts[PFTM_ADAPTIVE_END]
    adaptive = {"start": start, "end": end, "default_rule_states_after": default_rule_states,
                "scaling": scaled_timeout(1000000, timeouts, default_rule_states) != 1000000,
                "compensated": 0, "shortened": 0, "shortened_by_max": 0}
    expire_field = partial_struct(byte_order, ("expire",), whole_record=False)
    capped = capped_by_max = 0
    for index in indexes:
        offset = index * RECORD_SIZE
        timeout_index = block[offset + OFF_TIMEOUT]
        if timeout_index >= len(timeouts):
            continue  # PFTM_UNTIL_PACKET: never sent (counted as expired)
        timeout = timeouts[timeout_index]
        dumped = remaining = expire_field.unpack_from(block, offset + OFF_EXPIRE)[0]
        if remaining > timeout:
            capped += 1
            capped_by_max = max(capped_by_max, remaining - timeout)
            remaining = timeout
        wanted = remaining
        if adaptive["scaling"]:
            wanted = remaining + timeout - scaled_timeout(timeout, timeouts, default_rule_states)
            if wanted > timeout:
                adaptive["shortened"] += 1
                adaptive["shortened_by_max"] = max(adaptive["shortened_by_max"], wanted - timeout)
                wanted = timeout
            if wanted != remaining:
                adaptive["compensated"] += 1
        if wanted != dumped:
            expire_field.pack_into(block, offset + OFF_EXPIRE, wanted)
    return capped, capped_by_max, adaptive


# --- serialisation of concurrent restores -------------------------------------------

# One per host, whatever lease file each restore names: two restores must never interleave their adds.
DEFAULT_RESTORE_LOCK_FILE = "/var/run/netbsd_pf_restore.lock"


@contextmanager
def exclusive_restore(path, timeout, clock=time.monotonic, sleep=time.sleep):
    """Hold an exclusive flock on ``path`` (None: DEFAULT_RESTORE_LOCK_FILE) for the duration of one restore.

    Waits up to ``timeout`` seconds (0: do not wait) for a concurrent restore
    on the same host, then raises RestoreError naming the holder's pid.
    """
    path = path or DEFAULT_RESTORE_LOCK_FILE
    try:
        fd = open_record_file(path, writable=True, create=True, what="restore lock file")
    except LeaseError as exc:
        raise RestoreError("%s; choose another restore_lock_file" % exc)
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

    def __init__(self, path, fmt, byte_order, block, header_captured_at, mtime, size, trailing_bytes):
        self.path = path
        self.format = fmt
        self.byte_order = byte_order
        self.block = block
        self.header_captured_at = header_captured_at
        self.mtime = mtime
        self.size = size
        self.trailing_bytes = trailing_bytes


def load_dump(path, fmt=None, byte_order=None, text_byte_order=None, progress=None, remove_after_open=False):
    """Read and verify every record of a dump (checksums, header, syntax, record fields).

    ``byte_order`` overrides detection for pfs binary files; text files are
    read in ``text_byte_order`` (the kernel's: pfs prints ids in host order).
    ``remove_after_open`` removes the file once it is open (also when it is
    not a dump): the records are read from the open descriptor.
    Raises RestoreError naming the problem; nothing is sent to the kernel.
    """
    try:
        try:
            file_info = os.stat(path)
            dump_format = detect_format(path) if fmt in (None, "auto") else fmt
            reader = open_dump(path, dump_format, byte_order if byte_order else (text_byte_order if dump_format == "pfs-text" else None))
        finally:
            if remove_after_open:
                remove_quietly(path)
        with reader:
            block = bytearray()
            chunks = reader.blocks(verify=True)
            for chunk in chunks if progress is None else reported_blocks(chunks, progress, "reading", reader.count):
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
    return LoadedDump(path, dump_format, dump_order, block, captured, file_info.st_mtime, file_info.st_size, trailing)


@contextmanager
def _no_context():
    yield


@contextmanager
def table_lock(device, mode, lease_seconds, lease_file, report):
    """Lock the table for the body (mode "during"), under a lease so a killed module cannot leave it locked.

    A lock already held under a lease (netbsd.pf.states_lock) is left alone:
    the restore neither takes nor releases it.  A lease left over from before
    the last boot guards nothing (the kernel lock died with the boot): it is
    taken over like a released one, with a warning.
    """
    if mode != "during":
        report["lock"] = {"mode": mode, "taken": False}
        yield
        return
    current = lease_view(lease_file)
    if current.get("locked_by_lease"):
        if not lease_predates_boot(current):
            report["lock"] = {"mode": mode, "taken": False, "held_by_lease": current.get("token"),
                              "message": "the table is already locked under the lease in %s; it stays locked" % lease_file}
            yield
            return
        report.setdefault("warnings", []).append(
            "the lease in %s (%s, locked at %s) dates from before the last boot; the kernel lock it recorded is gone, "
            "so the restore took the lock under a lease of its own" % (lease_file, current.get("holder"), current.get("locked_at")))
    try:
        token = arm_lease(lease_file, lease_seconds, device.path, holder="netbsd.pf.states_restore")
    except LeaseError as exc:
        raise RestoreError("cannot lock the table safely: %s" % exc)
    report["lock"] = {"mode": mode, "taken": True, "lease_seconds": lease_seconds}
    ended = {}

    def unlock_if_still_ours():
        try:
            ended["by"] = end_lease(lease_file, token, lambda: device.set_lock(False))
        except LeaseError as exc:
            device.set_lock(False)      # a stuck lock is worse than a lease record left "held"
            report.setdefault("warnings", []).append("the table is unlocked but the lease was not released: %s" % exc)

    try:
        with locked(device, unlock=unlock_if_still_ours):
            yield
    finally:
        _report_lease_end(report, lease_file, ended.get("by"))


def _report_lease_end(report, lease_file, lease):
    """Say in the report why the restore left the lock as it found it at the end (None: it unlocked)."""
    if lease is None:
        return
    lock = report["lock"]
    lock["ended"] = lease["ended"]
    if lease["ended"] == TAKEN_OVER:
        lock["taken_over_by"] = {key: lease.get(key) for key in ("holder", "holder_pid", "token", "seconds", "deadline")}
        report.setdefault("warnings", []).append(
            "the lock was taken over during the restore by %s (pid %s, lease %s in %s); the table stays locked under "
            "that lease" % (lease.get("holder"), lease.get("holder_pid"), lease.get("token"), lease_file))
    elif lease["ended"] == EXPIRED:
        report.setdefault("warnings", []).append(
            "the lease (%s s) ran out during the restore: the watchdog unlocked the table before the restore ended; "
            "raise lease" % lease.get("seconds"))
    else:
        report.setdefault("warnings", []).append("the table was unlocked and the lease released by someone else during the restore")


def restore_file(path, fmt=None, byte_order=None, transforms=None, age="auto", captured_at=None, source_mtime=None,
                 on_conflict="skip", limit_policy="refuse", chunk_size=DEFAULT_CHUNK_SIZE, fix_mss=True, lock="during",
                 lease=300, lease_file="/var/run/netbsd_pf_lock.lease", restore_lock_file=None, restore_lock_timeout=60,
                 check_mode=False, device_path="/dev/pf", now=None, progress=None, remove_after_open=False,
                 purge_wait=DEFAULT_PURGE_WAIT):
    """Restore a dump file into the kernel (or predict it in check mode); returns the report dict.

    ``remove_after_open``: see load_dump (a copy pushed by the states_restore action plugin).

    Raises RestoreError (with ``report`` when counts are known) for refusals
    and aborts; PfError escapes only for device problems outside the add path.
    """
    report = {"warnings": []}
    kernel_order = Abi.host().byte_order
    dump = load_dump(path, fmt, byte_order, text_byte_order=kernel_order, progress=progress,
                     remove_after_open=remove_after_open)
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
    state_filter = state_filter_from(transforms, RestoreError)
    rename = (transforms or {}).get("rename")
    block = dump.block if dump.byte_order == kernel_order else swap_records(dump.block, dump.byte_order, kernel_order)
    report.update({
        "format": dump.format, "byte_order": dump.byte_order, "kernel_byte_order": kernel_order, "bytes": dump.size,
        "age_seconds": age_seconds, "age_source": age_source, "captured_at": capture_time,
        "mss_fixed": bool(fix_mss and kernel_order == "little"),
    })
    if dump.trailing_bytes:
        report["warnings"].append("%d bytes after the last record of %s were ignored (as pfs does)" % (dump.trailing_bytes, path))

    serialized = _no_context() if check_mode else exclusive_restore(restore_lock_file, restore_lock_timeout)
    with serialized:
        try:
            device = PfDevice(device_path, writable=not check_mode)
        except PfError as exc:
            raise RestoreError(str(exc))
        with device:
            with (table_lock(device, lock, lease, lease_file, report) if not check_mode else _no_context()):
                if check_mode:
                    report["lock"] = {"mode": lock, "taken": False}
                waiter = PurgeWait(device, purge_wait, report["lock"])
                report.update(_restore_into(device, block, kernel_order, state_filter, rename, age_seconds,
                                            on_conflict, limit_policy, chunk_size, fix_mss, check_mode, waiter, progress))
                if waiter.warning():
                    report["warnings"].append(waiter.warning())
                if report["expire_capped"]:
                    report["warnings"].append(
                        "%d state(s) had more time left than this host's timeout for them (up to %d seconds more: a "
                        "corrupt file, or a source with longer timeouts); capped at the timeout, which the kernel "
                        "would otherwise have wrapped" % (report["expire_capped"], report["expire_capped_by_max"]))
                if report["adaptive"]["shortened"]:
                    report["warnings"].append(_adaptive_warning(report["adaptive"]))
    return report


def _adaptive_warning(adaptive):
    return ("adaptive timeouts: with %d states on the default rule after the restore (adaptive.start %d, adaptive.end %d) "
            "the kernel shortens every timeout; %d states could not keep the remaining time they were dumped with and "
            "lost up to %d seconds (raise 'set limit states' or the adaptive bounds to avoid this)"
            % (adaptive["default_rule_states_after"], adaptive["start"], adaptive["end"], adaptive["shortened"],
               adaptive["shortened_by_max"]))


def _restore_into(device, block, kernel_order, state_filter, rename, age_seconds, on_conflict, limit_policy,
                  chunk_size, fix_mss, check_mode, waiter, progress=None):
    try:
        live_block = device.get_states()
        status = device.get_status()
        state_limit = device.get_limit(PF_LIMIT_STATES)
        timeouts = device.get_timeouts()
    except PfError as exc:
        raise RestoreError("cannot read the state table: %s" % exc)
    occupancy = table_occupancy(live_block, kernel_order, status["states"])
    # States awaiting the purge leave room once freed, if the restore may wait for that.
    room = state_limit - (status["states"] - occupancy["awaiting_purge"] if waiter.possible else status["states"])
    plan = plan_restore(block, kernel_order, live_block, state_filter, rename, age_seconds, on_conflict, limit_policy, room)
    del live_block
    expire_capped, expire_capped_by_max, adaptive = fit_remaining_times(
        plan.block, plan.to_add, kernel_order, timeouts, occupancy["live_on_default_rule"] + len(plan.to_add))
    if fix_mss and kernel_order == "little":
        swap_mss(plan.block)
    result = {"state_limit": state_limit, "states_before": status["states"], "adaptive": adaptive,
              "expire_capped": expire_capped, "expire_capped_by_max": expire_capped_by_max,
              "states_awaiting_purge": occupancy["awaiting_purge"]}
    if check_mode:
        plan.outcome.add("restored", len(plan.to_add))
        added = plan.to_add
        result.update(add_calls=0, add_failures=0, table_reads=0, states_after=status["states"] + len(plan.to_add))
    else:
        restorer = Restorer(device, plan, kernel_order, chunk_size, progress, waiter)
        try:
            restorer.add()
        except PfError as exc:      # reading the table back after a failed chunk
            raise RestoreError("lost track of the restore after a failed chunk: %s" % exc, plan.outcome.as_dict())
        added = restorer.restored
        result.update(add_calls=restorer.calls, add_failures=restorer.failures, table_reads=restorer.table_reads,
                      states_after=device.get_status()["states"], purge_wait=waiter.summary())
    if not plan.outcome.balanced():
        raise RestoreError("internal accounting error: %r does not add up to %d" % (plan.outcome.counts, plan.outcome.total),
                           plan.outcome.as_dict())
    result.update(plan.outcome.as_dict())
    result["summary_before"] = plan.summary_before
    result["summary_after"] = add_counts(plan.summary_before, summarize_records(plan.block, added))
    return result
