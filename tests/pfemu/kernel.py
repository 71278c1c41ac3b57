"""An in-process model of the kernel side of NetBSD's /dev/pf, for the state-table requests.

It follows pf_ioctl.c 1.46-1.55 errno for errno as described in sections 5 and 11 of the
reference (../shared/reference/netbsd-pf-abi.md), bugs included, except where the real kernel
would crash or corrupt memory: there it raises an ``EmulatorRefusal`` subclass (never an
OSError) so that a client that would trigger the bug fails its test loudly.

Storage is built for a million states: every state is one 240-byte export record in a single
``bytearray`` (insertion order = slot order), plus a few per-slot columns and three indexes
that mirror the kernel's trees (lan/ext key, ext/gwy key, (id, creatorid)).
"""

import errno
import os
import random
import time
from array import array

from .structs import (
    DEFAULT_LIMITS, DEFAULT_TIMEOUTS, IOC_IN, IOC_OUT, Layout, OFF_CREATION, OFF_CREATORID, OFF_DIRECTION, OFF_IFNAME,
    OFF_EXPIRE, OFF_RULE, OFF_TIMEOUT, PF_LIMIT_MAX, PF_OUT, PFTM_ADAPTIVE_END, PFTM_ADAPTIVE_START, PFTM_MAX, PFTM_UNTIL_PACKET,
    RECORD_SIZE, ioc_length,
)

FREAD = 0x1
FWRITE = 0x2
IOCPARM_MAX = 4096  # NBPG on the ports that matter (amd64, i386, arm, powerpc); sparc64 has 8192
U32 = 0xFFFFFFFF
DEFAULT_RULE = 0xFFFFFFFF

LINKED, UNLINKED, FREED = 0, 1, 2
# Sentinels of the per-timeout expiry tables (non-negative entries are seconds to add).
EXPIRES_AT_ZERO = -1  # PFTM_UNTIL_PACKET: pf_state_expires() returns 0
EXPIRES_NOW = -2  # adaptive timeouts past their end: pf_state_expires() returns now
PFTM_INTERVAL = 15  # pfvar.h: the purge interval, 10 s by default

# The access checks at the top of pfioctl() (pf_ioctl.c 1.46-1.55), for modelled and unmodelled requests alike.
# Allowed on a descriptor without FWRITE (the `if (!(flags & FWRITE)) switch (cmd)` list):
READ_ONLY_REQUESTS = frozenset((
    "DIOCGETSTATES", "DIOCGETSTATE", "DIOCGETSTATUS", "DIOCSETLCK", "DIOCGETTIMEOUT", "DIOCGETLIMIT",
    "DIOCGETRULES", "DIOCGETADDRS", "DIOCGETADDR", "DIOCGETALTQS", "DIOCGETALTQ", "DIOCGETQSTATS", "DIOCGETRULESETS",
    "DIOCGETRULESET", "DIOCNATLOOK", "DIOCRGETTABLES", "DIOCRGETTSTATS", "DIOCRGETADDRS", "DIOCRGETASTATS",
    "DIOCRTSTADDRS", "DIOCOSFPGET", "DIOCGETSRCNODES", "DIOCIGETIFACES"))
# Allowed at securelevel > 1 (the kauth_authorize_network() failure list):
SECURELEVEL_REQUESTS = frozenset((
    "DIOCGETSTATES", "DIOCGETSTATE", "DIOCGETSTATUS", "DIOCSETLCK", "DIOCGETTIMEOUT", "DIOCGETLIMIT", "DIOCADDSTATES",
    "DIOCGETRULES", "DIOCGETRULE", "DIOCGETADDRS", "DIOCGETADDR", "DIOCSETSTATUSIF", "DIOCCLRSTATUS", "DIOCNATLOOK",
    "DIOCSETDEBUG", "DIOCCLRRULECTRS", "DIOCGETALTQS", "DIOCGETALTQ", "DIOCGETQSTATS", "DIOCGETRULESETS",
    "DIOCGETRULESET", "DIOCRGETTABLES", "DIOCRGETTSTATS", "DIOCRCLRTSTATS", "DIOCRCLRADDRS", "DIOCRADDADDRS",
    "DIOCRDELADDRS", "DIOCRSETADDRS", "DIOCRGETADDRS", "DIOCRGETASTATS", "DIOCRCLRASTATS", "DIOCRTSTADDRS",
    "DIOCOSFPGET", "DIOCGETSRCNODES", "DIOCCLRSRCNODES", "DIOCIGETIFACES", "DIOCSETIFFLAG", "DIOCCLRIFFLAG"))
# Where those checks read the argument (pfrio_flags & PFR_FLAG_DUMMY, or the action of a DIOCGETRULE): not
# modelled, refused at that check. DIOCADDSTATES on a read-only descriptor is one of them on a real kernel (it
# reads a field of the wrong struct, section 5.1 step 4): the emulator answers EACCES, the usual outcome.
SECURELEVEL_ARGUMENT_CHECKED = frozenset(("DIOCRCLRTABLES", "DIOCRADDTABLES", "DIOCRDELTABLES", "DIOCRSETTFLAGS"))
READ_ONLY_ARGUMENT_CHECKED = SECURELEVEL_ARGUMENT_CHECKED | frozenset((
    "DIOCRCLRTSTATS", "DIOCRCLRADDRS", "DIOCRADDADDRS", "DIOCRDELADDRS", "DIOCRSETADDRS", "DIOCGETRULE"))


class EmulatorRefusal(Exception):
    """The request would make a real NetBSD kernel crash or corrupt memory; the emulator stops here."""


class KernelPanic(EmulatorRefusal):
    """The emulated machine would have crashed; it stays down until ``Kernel.reboot()``."""


class KernelBugRefused(EmulatorRefusal):
    """A request whose kernel implementation is broken (DIOCADDSTATE, DIOCGETSTATE)."""


class RequestNotModelled(EmulatorRefusal):
    """A request NetBSD implements but the emulator does not model: no answer is better than a wrong one."""


class ManualClock(object):
    """Seconds that only move when told to (deterministic tests). Starts at the real time."""

    def __init__(self, start=None):
        self._now = time.time() if start is None else start

    def now(self):
        return self._now

    def advance(self, seconds):
        self._now += seconds


class SystemClock(object):
    """The real time plus an offset that ``advance`` increases (for long-running emulated hosts)."""

    def __init__(self):
        self._offset = 0

    def now(self):
        return time.time() + self._offset

    def advance(self, seconds):
        self._offset += seconds


class OpenFile(object):
    """A descriptor open on /dev/pf: the kernel's ``struct file`` flags."""

    def __init__(self, kernel, flags, generation):
        self.kernel = kernel
        self.flags = flags
        self.generation = generation
        self.closed = False

    @property
    def writable(self):
        return bool(self.flags & FWRITE)

    def __repr__(self):
        mode = {FREAD: "r", FWRITE: "w", FREAD | FWRITE: "rw"}[self.flags]
        return "<pf open file %s%s>" % (mode, " closed" if self.closed else "")


def _field_bits(*ranges):
    """An int mask (big-endian view of a 240-byte record) with the bytes of ``ranges`` set."""
    mask = bytearray(RECORD_SIZE)
    for start, end in ranges:
        mask[start:end] = b"\xff" * (end - start)
    return int.from_bytes(mask, "big")


# What DIOCADDSTATES keeps of a record: id, ifname, lan/gwy/ext addr+port, both peers' seqlo..wscale,
# creatorid, af, proto, direction, timeout. The rule numbers become the default rule's (0xffffffff).
IMPORTED_BITS = _field_bits((0, 24), (24, 42), (48, 66), (72, 90), (104, 122), (136, 154), (228, 235), (237, 238))
DEFAULT_RULE_BITS = _field_bits((OFF_RULE, OFF_CREATION))
ZERO_ID = bytes(8)
ZERO_CREATOR = bytes(4)


def _os_error(code, detail=None):
    message = os.strerror(code)
    if detail:
        message = "%s (%s)" % (message, detail)
    return OSError(code, message)


def lan_ext_key(rec):
    """Key of tree 1 (pf_state_compare_lan_ext): addresses count only for AF_INET/AF_INET6."""
    af = rec[232]
    if af == 2:
        return rec[232:234] + rec[24:28] + rec[72:76] + rec[40:42] + rec[88:90]
    if af == 24:
        return rec[232:234] + rec[24:40] + rec[72:88] + rec[40:42] + rec[88:90]
    return rec[232:234] + rec[40:42] + rec[88:90]


def ext_gwy_key(rec):
    """Key of tree 2 (pf_state_compare_ext_gwy)."""
    af = rec[232]
    if af == 2:
        return rec[232:234] + rec[72:76] + rec[48:52] + rec[88:90] + rec[64:66]
    if af == 24:
        return rec[232:234] + rec[72:88] + rec[48:64] + rec[88:90] + rec[64:66]
    return rec[232:234] + rec[88:90] + rec[64:66]


def id_key(rec):
    return rec[0:8] + rec[228:232]


def kif_name(raw16):
    """The name a kif gets from a 16-byte ifname: up to the NUL, at most 15 characters."""
    end = raw16.find(b"\0")
    name = raw16[:end if end >= 0 else 16][:15]
    return name + b"\0" * (16 - len(name))


class Kernel(object):
    """The pf state table and the /dev/pf requests that manage it, for one NetBSD ABI."""

    # pylint: disable=too-many-instance-attributes,too-many-public-methods

    def __init__(self, abi="lp64-le", state_limit=10000, hostid=None, securelevel=0, clock=None, seed=None,
                 running=True):
        self.layout = Layout(abi)
        self._u32_at = self.layout.u32.unpack_from
        self.abi = abi
        self.clock = clock if clock is not None else ManualClock()
        self.securelevel = securelevel
        self._configured_hostid = hostid
        self._start_at_boot = running
        self._random = random.Random(seed)
        self._limits = list(DEFAULT_LIMITS)
        self._timeouts = list(DEFAULT_TIMEOUTS)
        self.state_limit = state_limit
        self._faults = {}  # request name -> [calls seen, nth, errno]
        self._grow_pending = 0
        self._generation = 0
        self._boot()

    # ----------------------------------------------------------------- machine life cycle

    def _boot(self):
        self._generation += 1
        self._panic = None
        self._lock = 0
        self._running = 0
        self._since = 0
        self._stateid = 0
        # pfattach() (pf_ioctl.c) draws pf_status.hostid = cprng_fast32() at every boot; a configured hostid
        # stands for `set hostid` in pf.conf, which pfctl sets again (DIOCSETHOSTID) at every boot.
        self._hostid = self._configured_hostid if self._configured_hostid is not None else self._random.getrandbits(32)
        self._counters = [0] * 16
        self._fcounters = [0, 0, 0]
        self._boot_time = self.clock.now()
        self._records = bytearray()
        self._last_activity = array("q")
        self._created = array("q")
        self._status = bytearray()
        self._on_default_rule = bytearray()
        self._keys = {}  # lan/ext key -> slot, or list of slots when states on several interfaces share it
        self._ext_gwy = set()
        self._ids = {}  # id + creatorid -> slot
        self._purge_cursor = None  # the static ``cur`` of pf_purge_expired_states(): a slot, None at the end
        self._linked = 0
        self._unlinked = 0
        self._freed = 0
        self._default_rule_states = 0
        self._interfaces = set([b"all"])
        if self._start_at_boot:
            self._start()

    def reboot(self):
        """Empty table, lock cleared, counters reset, new boot time, pf started if configured so.

        Descriptors opened before the reboot belong to dead processes: they get EBADF.
        Limits, timeouts, hostid (when configured) and securelevel are kept, as pf.conf and
        rc.conf would set them again.
        """
        self._faults.clear()
        self._grow_pending = 0
        self._boot()

    def _now(self):
        return int(self.clock.now()) & U32

    def _start(self):
        self._running = 1
        self._since = self._now()
        if self._stateid == 0:
            self._stateid = self._now() << 32

    # ----------------------------------------------------------------- properties

    @property
    def running(self):
        return bool(self._running)

    @running.setter
    def running(self, value):
        if value and not self._running:
            self._start()
        elif not value and self._running:
            self._running = 0
            self._since = self._now()

    @property
    def lock(self):
        return bool(self._lock)

    @lock.setter
    def lock(self, value):
        self._lock = 1 if value else 0

    @property
    def boot_time(self):
        return self._boot_time

    @property
    def hostid(self):
        return self._hostid

    @property
    def stateid(self):
        return self._stateid

    @property
    def state_limit(self):
        return self._limits[0]

    @state_limit.setter
    def state_limit(self, limit):
        """Like ``set limit states N`` in pf.conf: pfctl also sets adaptive timeouts to 60%/120% (pfctl.c, pfctl_load_options).

        Assign ``timeouts[16]``/``timeouts[17]`` afterwards to choose other adaptive bounds.
        """
        self._limits[0] = int(limit)
        self._timeouts[PFTM_ADAPTIVE_START] = (int(limit) // 10) * 6
        self._timeouts[PFTM_ADAPTIVE_END] = (int(limit) // 10) * 12

    @property
    def timeouts(self):
        """The 20 global default timeouts (``set timeout``); a live list, edit it in place."""
        return self._timeouts

    @timeouts.setter
    def timeouts(self, values):
        values = [int(v) for v in values]
        if len(values) != PFTM_MAX:
            raise ValueError("pf has exactly %d timeouts" % PFTM_MAX)
        self._timeouts[:] = values

    def set_securelevel(self, level):
        self.securelevel = level

    @property
    def states(self):
        """pf_status.states: linked states plus unlinked ones not yet freed by a purge."""
        return self._linked + self._unlinked

    @property
    def linked_states(self):
        return self._linked

    @property
    def interfaces(self):
        return sorted(name.decode("ascii", "replace") for name in self._interfaces)

    @property
    def panicked(self):
        return self._panic

    # ----------------------------------------------------------------- test controls

    def inject_fault(self, request_name, nth, errno_value):
        """Fail the nth (1-based, counted from now) call of ``request_name`` that passes the access checks."""
        if request_name not in self.layout.numbers:
            raise ValueError("unknown request %r" % request_name)
        self._faults[request_name] = [0, int(nth), int(errno_value)]

    def grow_before_next_fetch(self, count):
        """Add ``count`` kernel-made states right after the next DIOCGETSTATES size query."""
        self._grow_pending = int(count)

    def fill(self, count, seed=0, **mix):
        """Insert ``count`` generated kernel-made states directly (rule numbers, ages, counters kept).

        Keyword arguments go to ``generate.generate_records`` (e.g. ``interfaces``).
        Raises ValueError if they would not fit under the state limit or collide with the table.
        """
        from .generate import generate_records  # pylint: disable=import-outside-toplevel

        if self.states + count > self._limits[0]:
            raise ValueError("%d more states do not fit under the state limit %d (%d present): raise state_limit"
                             % (count, self._limits[0], self.states))
        if self._stateid == 0:
            self._stateid = self._now() << 32
        now = self._now()
        block = generate_records(count, seed, byte_order=self.layout.byte_order, hostid=self._hostid, now=now,
                                 first_stateid=self._stateid, **mix)
        self._stateid += count
        self._insert_kernel_made(block, now)

    def _insert_kernel_made(self, block, now):
        decode = self.layout.creation_expire.unpack_from
        timeouts = list(self._timeouts) + [0] * (256 - PFTM_MAX)
        keys, ext_gwy, ids = self._keys, self._ext_gwy, self._ids
        first_slot = len(self._status)
        new_keys, new_ext_gwy, new_ids = [], [], []
        created, last_activity, on_default_rule, names = array("q"), array("q"), bytearray(), set()
        add_key, add_ext_gwy, add_id = new_keys.append, new_ext_gwy.append, new_ids.append
        add_created, add_last, add_default, add_name = created.append, last_activity.append, on_default_rule.append, names.add
        for offset in range(0, len(block), RECORD_SIZE):
            rec = block[offset:offset + RECORD_SIZE]
            add_key(lan_ext_key(rec))
            add_ext_gwy(ext_gwy_key(rec))
            add_id(rec[0:8] + rec[228:232])
            age, remaining = decode(rec, OFF_CREATION)
            add_created((now - age) & U32)
            add_last((now + remaining - timeouts[rec[OFF_TIMEOUT]]) & U32)
            add_default(rec[OFF_RULE:OFF_RULE + 4] == b"\xff\xff\xff\xff")
            add_name(rec[OFF_IFNAME:OFF_IFNAME + 16])
        self._interfaces.update(name.rstrip(b"\0") for name in names)
        count = len(new_ids)
        if (len(set(new_keys)) != count or not keys.keys().isdisjoint(new_keys) or not ext_gwy.isdisjoint(new_ext_gwy)
                or not ids.keys().isdisjoint(new_ids)):
            raise ValueError("generated states collide with states in the table; use another seed")
        for slot, key, second_key, state_id in zip(range(first_slot, first_slot + count), new_keys, new_ext_gwy, new_ids):
            keys[key] = slot
            ext_gwy.add(second_key)
            ids[state_id] = slot
        self._records += block
        self._created.extend(created)
        self._last_activity.extend(last_activity)
        self._status += bytes(count)
        self._on_default_rule += on_default_rule
        self._linked += count
        self._fcounters[1] += count
        self._default_rule_states += on_default_rule.count(1)

    # ----------------------------------------------------------------- expiry

    def _expiry_tables(self):
        """Per PFTM index, what pf_state_expires() adds to the last activity (or a sentinel).

        Returns (for default-rule states, for states of other rules); adaptive timeouts scale
        by pf_status.states, or by the default rule's own state count for its states.
        """
        timeouts = self._timeouts
        start, end = timeouts[PFTM_ADAPTIVE_START], timeouts[PFTM_ADAPTIVE_END]

        def table(states):
            entries = [EXPIRES_AT_ZERO] * 256
            for index in range(PFTM_MAX):
                timeout = timeouts[index] & U32
                if end and states > start and start < end:
                    entries[index] = (((timeout * (end - states)) & U32) // (end - start)) if states < end else EXPIRES_NOW
                else:
                    entries[index] = timeout
            return entries

        others = table(self.states)
        default_rule = table(self._default_rule_states) if start else others
        return default_rule, others

    def _state_expires(self, slot, now):
        """pf_state_expires() (pf.c) for one linked state, with the counts as they are at this moment.

        During a purge pass pf_free_state() (pf.c) has already decremented pf_status.states and the
        rule's state count when the next state's expiry is computed, so the adaptive scaling is
        recomputed per state, never once per pass.
        """
        timeout_index = self._records[slot * RECORD_SIZE + OFF_TIMEOUT]
        if timeout_index >= PFTM_MAX:
            return 0  # PFTM_UNTIL_PACKET
        timeouts = self._timeouts
        start, end = timeouts[PFTM_ADAPTIVE_START], timeouts[PFTM_ADAPTIVE_END]
        states = self._default_rule_states if (start and self._on_default_rule[slot]) else self.states
        timeout = timeouts[timeout_index] & U32
        if end and states > start and start < end:
            if states >= end:
                return now
            return (self._last_activity[slot] + ((timeout * (end - states)) & U32) // (end - start)) & U32
        return (self._last_activity[slot] + timeout) & U32

    def _purge_visit(self, slot, now):
        """One state of pf_purge_expired_states() (pf.c): free it if unlinked, unlink and free it if due."""
        state = self._status[slot]
        if state == UNLINKED:
            self._free(slot)
        elif state == LINKED and self._state_expires(slot, now) <= now:
            self._unlink(slot)
            self._free(slot)

    def _next_in_list(self, slot):
        """TAILQ_NEXT over the state list: the next slot not yet freed, or None at the end."""
        status = self._status
        slot += 1
        while slot < len(status) and status[slot] == FREED:
            slot += 1
        return slot if slot < len(status) else None

    def purge_quota(self):
        """States one tick visits: pf_purge_thread() (pf.c) passes 1 + pf_status.states / timeout[PFTM_INTERVAL]."""
        return 1 + self.states // max(1, self._timeouts[PFTM_INTERVAL])

    def purge_tick(self):
        """One wake-up of pf_purge_thread() (pf.c), at the clock's current second; returns the states freed.

        pf_purge_expired_states(maxcheck) (pf.c) visits ``maxcheck`` states from a cursor kept
        between calls (a static ``cur``), wrapping to the head of the list at its end: unlinked
        states (DIOCCLRSTATES, DIOCKILLSTATES, reference 5.8/5.9) are freed, due states unlinked
        and freed.  While the table is locked (DIOCSETLCK) NetBSD's purge thread skips the states
        entirely (reference 5.10), and the cursor stays where it was.
        """
        if self._lock:
            return 0
        now = self._now()
        freed_before = self._fcounters[2]
        for _visit in range(self.purge_quota()):
            if self._purge_cursor is None:
                self._purge_cursor = self._next_in_list(-1)
                if self._purge_cursor is None:
                    break  # list empty
            slot = self._purge_cursor
            self._purge_cursor = self._next_in_list(slot)  # taken before the state may be freed
            self._purge_visit(slot, now)
        self._compact_if_sparse()
        return self._fcounters[2] - freed_before

    def run_purge(self, seconds):
        """Let ``seconds`` seconds pass on the clock with the purge thread waking once a second."""
        freed = 0
        for _second in range(int(seconds)):
            self.clock.advance(1)
            freed += self.purge_tick()
        return freed

    def purge(self):
        """A test shortcut: one visit of every state of the list at the current second (not while locked).

        What the ticks of the next few seconds would do if the clock stood still; tests of the
        cadence itself use ``purge_tick``/``run_purge``.  The cursor restarts at the head.
        """
        if self._lock:
            return
        now = self._now()
        slot = self._next_in_list(-1)
        while slot is not None:
            following = self._next_in_list(slot)
            self._purge_visit(slot, now)
            slot = following
        self._purge_cursor = None
        self._compact_if_sparse()

    def _compact_if_sparse(self):
        if self._freed > len(self._status) // 2:
            self._compact()

    def _unlink(self, slot):
        offset = slot * RECORD_SIZE
        rec = bytes(self._records[offset:offset + RECORD_SIZE])
        key = lan_ext_key(rec)
        members = self._keys[key]
        if isinstance(members, list):
            members.remove(slot)
            if len(members) == 1:
                self._keys[key] = members[0]
        else:
            del self._keys[key]
            self._ext_gwy.discard(ext_gwy_key(rec))
        del self._ids[id_key(rec)]
        self._status[slot] = UNLINKED
        self._linked -= 1
        self._unlinked += 1

    def _free(self, slot):
        self._status[slot] = FREED
        self._unlinked -= 1
        self._freed += 1
        self._fcounters[2] += 1
        if self._on_default_rule[slot]:
            self._default_rule_states -= 1

    def _compact(self):
        """Drop freed slots from the arena and renumber the indexes."""
        old_records, old_status = self._records, self._status
        old_created, old_last, old_default = self._created, self._last_activity, self._on_default_rule
        self._records = bytearray()
        self._created, self._last_activity = array("q"), array("q")
        self._status, self._on_default_rule = bytearray(), bytearray()
        renumber = {}
        for slot in range(len(old_status)):
            if old_status[slot] == FREED:
                continue
            renumber[slot] = len(self._status)
            self._records += old_records[slot * RECORD_SIZE:(slot + 1) * RECORD_SIZE]
            self._created.append(old_created[slot])
            self._last_activity.append(old_last[slot])
            self._status.append(old_status[slot])
            self._on_default_rule.append(old_default[slot])
        for key, members in self._keys.items():
            self._keys[key] = [renumber[m] for m in members] if isinstance(members, list) else renumber[members]
        for key, slot in self._ids.items():
            self._ids[key] = renumber[slot]
        if self._purge_cursor is not None:
            self._purge_cursor = renumber[self._purge_cursor]
        self._freed = 0

    # ----------------------------------------------------------------- export (5.11)

    def _export_runs(self, limit):
        """Patch creation/expire of the first ``limit`` linked states in place, in insertion order.

        Returns (count, runs) with runs as (first slot, end slot) of consecutive linked slots.
        """
        now = self._now()
        default_table, other_table = self._expiry_tables()
        pack = self.layout.creation_expire.pack_into
        records, status, last, created = self._records, self._status, self._last_activity, self._created
        on_default = self._on_default_rule
        runs = []
        run_start = None
        count = 0
        slot = 0
        total = len(status)
        while slot < total and count < limit:
            if status[slot] != LINKED:
                if run_start is not None:
                    runs.append((run_start, slot))
                    run_start = None
                slot += 1
                continue
            offset = slot * RECORD_SIZE
            add = (default_table if on_default[slot] else other_table)[records[offset + OFF_TIMEOUT]]
            if add < 0:
                remaining = 0
            else:
                expires = (last[slot] + add) & U32
                remaining = expires - now if expires > now else 0
            pack(records, offset + OFF_CREATION, (now - created[slot]) & U32, remaining)
            if run_start is None:
                run_start = slot
            count += 1
            slot += 1
        if run_start is not None:
            runs.append((run_start, slot))
        return count, runs

    def export_all(self):
        """Every linked state as DIOCGETSTATES would return it (the ABI's byte order)."""
        _count, runs = self._export_runs(self._linked)
        records = self._records
        return b"".join(records[start * RECORD_SIZE:end * RECORD_SIZE] for start, end in runs)

    # ----------------------------------------------------------------- device entry points

    def open(self, flags, minor=0):
        """pfopen(): ``flags`` are open(2) flags; minor numbers other than 0 do not exist."""
        self._check_alive()
        if minor != 0:
            raise _os_error(errno.ENXIO)
        access = flags & os.O_ACCMODE
        file_flags = {os.O_RDONLY: FREAD, os.O_WRONLY: FWRITE, os.O_RDWR: FREAD | FWRITE}.get(access)
        if file_flags is None:
            raise _os_error(errno.EINVAL)
        return OpenFile(self, file_flags, self._generation)

    def close(self, handle):
        self._valid_handle(handle)
        handle.closed = True

    def _check_alive(self):
        if self._panic:
            raise KernelPanic("the emulated kernel has panicked (%s); reboot() it" % self._panic)

    def _valid_handle(self, handle):
        if (not isinstance(handle, OpenFile) or handle.kernel is not self or handle.closed
                or handle.generation != self._generation or not handle.flags & (FREAD | FWRITE)):
            raise _os_error(errno.EBADF)

    def ioctl(self, handle, request, arg, memory):
        """sys_ioctl() + pfioctl(): ``arg`` is the argument buffer (or an int user address).

        The result is written back into ``arg`` only when the request succeeds.
        """
        self._check_alive()
        self._valid_handle(handle)
        size = ioc_length(request)
        if size > IOCPARM_MAX:
            raise _os_error(errno.ENOTTY)
        address = None
        if isinstance(arg, int):
            address = arg
            argument = bytearray(memory.copyin(address, size)) if request & IOC_IN and size else bytearray(size)
        else:
            if len(arg) < size:
                raise EmulatorRefusal("ioctl 0x%x encodes a %d-byte argument but the buffer has %d bytes: the kernel "
                                      "would read past it" % (request, size, len(arg)))
            argument = bytearray(arg[:size]) if request & IOC_IN else bytearray(size)
        name = self.layout.requests.get(request)
        unmodelled = None if name else self.layout.unmodelled_request(request)
        checked_name = name or unmodelled
        if self.securelevel > 1 and checked_name not in SECURELEVEL_REQUESTS:
            if checked_name in SECURELEVEL_ARGUMENT_CHECKED:
                raise _not_modelled(unmodelled, request, "its securelevel check reads the argument")
            raise _os_error(errno.EPERM, "securelevel %d" % self.securelevel)
        if not handle.writable and checked_name not in READ_ONLY_REQUESTS:
            if checked_name in READ_ONLY_ARGUMENT_CHECKED:
                raise _not_modelled(unmodelled, request, "its read-only check reads the argument")
            raise _os_error(errno.EACCES, "descriptor not open for writing")
        if unmodelled:
            raise _not_modelled(unmodelled, request)
        if name is None:
            # pfioctl()'s `default: error = ENODEV` (also a request of the other word size).
            raise _os_error(errno.ENODEV, "request 0x%x is unknown to a %s kernel" % (request, self.abi))
        self._maybe_fault(name)
        getattr(self, "_" + name.lower())(argument, memory)
        if request & IOC_OUT and size:
            if address is None:
                arg[:size] = argument
            else:
                memory.copyout(address, argument)

    def _maybe_fault(self, name):
        fault = self._faults.get(name)
        if fault is None:
            return
        fault[0] += 1
        if fault[0] == fault[1]:
            del self._faults[name]
            raise _os_error(fault[2], "injected fault")

    # ----------------------------------------------------------------- requests

    def _diocstart(self, _argument, _memory):
        if self._running:
            raise _os_error(errno.EEXIST, "pf already running")
        self._start()

    def _diocstop(self, _argument, _memory):
        if not self._running:
            raise _os_error(errno.ENOENT, "pf not running")
        self._running = 0
        self._since = self._now()

    def _diocsetlck(self, argument, _memory):
        (self._lock,) = self.layout.u32.unpack_from(argument)

    def _diocgetstatus(self, argument, _memory):
        argument[:] = self.layout.pf_status.pack(
            *(self._counters + [0] * 7 + self._fcounters + [0] * 3 + [0] * 12 + [0] * 4
              + [self._stateid & 0xFFFFFFFFFFFFFFFF, self._running, self.states & U32, 0, self._since,
                 1, self._hostid, b"", b""]))

    def _diocgettimeout(self, argument, _memory):
        index, _seconds = self.layout.int_pair.unpack_from(argument)
        if index < 0 or index >= PFTM_MAX:
            raise _os_error(errno.EINVAL, "timeout index %d" % index)
        self.layout.int_pair.pack_into(argument, 0, index, self._timeouts[index] & U32)

    def _diocgetlimit(self, argument, _memory):
        index, _limit = self.layout.int_pair.unpack_from(argument)
        if index < 0 or index >= PF_LIMIT_MAX:
            raise _os_error(errno.EINVAL, "limit index %d" % index)
        self.layout.int_pair.pack_into(argument, 0, index, self._limits[index] & U32)

    def _diocgetstates(self, argument, memory):
        ps_len, buffer = self.layout.pfioc_states.unpack_from(argument)
        if ps_len == 0:
            self.layout.pfioc_states.pack_into(argument, 0, _as_int32(RECORD_SIZE * self.states), buffer)
            if self._grow_pending:
                count, self._grow_pending = self._grow_pending, 0
                self.fill(count, seed=self._random.getrandbits(31))
            return
        count, runs = self._export_runs((ps_len & U32) // RECORD_SIZE)
        address = buffer
        for start, end in runs:
            # A copy, not a memoryview: a view kept alive by a traceback would pin the arena's size.
            chunk = self._records[start * RECORD_SIZE:end * RECORD_SIZE]
            try:
                memory.copyout(address, chunk)
            except OSError:
                # Find how far the record-by-record copyout of the kernel gets, then fail.
                for offset in range(0, len(chunk), RECORD_SIZE):
                    memory.copyout(address + offset, chunk[offset:offset + RECORD_SIZE])
                raise
            address += len(chunk)
        self.layout.pfioc_states.pack_into(argument, 0, _as_int32(RECORD_SIZE * count), buffer)

    def _diocaddstates(self, argument, memory):
        ps_len, buffer = self.layout.pfioc_states.unpack_from(argument)
        if ps_len <= 0:
            return
        records = (ps_len + RECORD_SIZE - 1) // RECORD_SIZE  # a partial last record is read in full
        try:
            block = memory.copyin(buffer, records * RECORD_SIZE)
        except OSError:
            block = None
        for index in range(records):
            if block is not None:
                raw = block[index * RECORD_SIZE:(index + 1) * RECORD_SIZE]
            else:
                try:
                    raw = memory.copyin(buffer + index * RECORD_SIZE, RECORD_SIZE)
                except OSError:
                    self._panic = "DIOCADDSTATES double free after a failed copyin of record %d" % index
                    raise KernelPanic(
                        "DIOCADDSTATES: copyin of record %d at 0x%x failed; NetBSD's pf_ioctl.c then frees the "
                        "record buffer twice (kernel double free, expect a panic). The caller must pass a valid "
                        "buffer and a ps_len that is an exact multiple of 240." % (index, buffer + index * RECORD_SIZE))
            self._add_state(raw)

    def _add_state(self, raw):
        """pf_state_add() for one record (section 5.5 steps 1-7); raises OSError on failure."""
        timeout = raw[OFF_TIMEOUT]
        if timeout >= PFTM_MAX and timeout != PFTM_UNTIL_PACKET:
            raise _os_error(errno.EINVAL, "state timeout index %d" % timeout)
        if self._linked + self._unlinked >= self._limits[0]:
            raise _os_error(errno.ENOMEM, "state limit %d reached" % self._limits[0])
        now = self._now()
        self._default_rule_states += 1  # attached to the default rule; not given back if the insert fails
        last_activity = now
        remaining = self._u32_at(raw, OFF_EXPIRE)[0]
        if remaining and timeout < PFTM_MAX:
            last_activity = (now - ((self._timeouts[timeout] - remaining) & U32)) & U32
        self._insert(self._import(raw), now, last_activity)

    def _import(self, raw):
        """pf_state_import(): keep key, ids, peers' sequence data; drop everything else (5.5 step 3)."""
        rec = ((int.from_bytes(raw, "big") & IMPORTED_BITS) | DEFAULT_RULE_BITS).to_bytes(RECORD_SIZE, "big")
        name = raw[OFF_IFNAME:OFF_IFNAME + 16]
        if kif_name(name) != name:
            rec = rec[:OFF_IFNAME] + kif_name(name) + rec[OFF_IFNAME + 16:]
        if self.layout.byte_order == "little" and (raw[118:120] != b"\0\0" or raw[150:152] != b"\0\0"):
            # ntohs() on the import path only: a little-endian kernel swaps mss (reference 8, item 1).
            rec = rec[:118] + raw[119:117:-1] + rec[120:150] + raw[151:149:-1] + rec[152:]
        return rec

    def _insert(self, rec, now, last_activity):
        """pf_insert_state(): the three trees, then the state list; every failure is ENOMEM."""
        key = lan_ext_key(rec)
        records = self._records
        members = self._keys.get(key)
        second_key = None
        if members is not None:
            kif = rec[OFF_IFNAME:OFF_IFNAME + 16]
            slots = members if isinstance(members, list) else [members]
            for slot in slots:
                if records[slot * RECORD_SIZE + OFF_IFNAME:slot * RECORD_SIZE + OFF_IFNAME + 16] == kif:
                    raise _os_error(errno.ENOMEM, "a state with this lan/ext key exists on this interface")
            # Joining the key: the state now exports the key's hosts and direction.
            owner = slots[0] * RECORD_SIZE
            rec = (rec[:24] + records[owner + 24:owner + 96] + rec[96:OFF_DIRECTION]
                   + records[owner + OFF_DIRECTION:owner + OFF_DIRECTION + 1] + rec[OFF_DIRECTION + 1:])
        else:
            second_key = ext_gwy_key(rec)
            if second_key in self._ext_gwy:
                raise _os_error(errno.ENOMEM, "ext/gwy key collision")
        if rec[0:8] == ZERO_ID and rec[OFF_CREATORID:OFF_CREATORID + 4] == ZERO_CREATOR:
            rec = ((self._stateid & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big") + rec[8:OFF_CREATORID]
                   + self.layout.u32.pack(self._hostid) + rec[OFF_CREATORID + 4:])
            self._stateid += 1
        rec = bytes(rec)
        state_id = id_key(rec)
        if state_id in self._ids:
            raise _os_error(errno.ENOMEM, "duplicate (id, creatorid)")
        slot = len(self._status)
        if members is None:
            self._keys[key] = slot
            self._ext_gwy.add(second_key)
        elif isinstance(members, list):
            members.append(slot)
        else:
            self._keys[key] = [members, slot]
        self._ids[state_id] = slot
        records += rec
        self._created.append(now)
        self._last_activity.append(last_activity)
        self._status.append(LINKED)
        self._on_default_rule.append(1)
        self._linked += 1
        self._fcounters[1] += 1
        self._interfaces.add(rec[OFF_IFNAME:OFF_IFNAME + 16].rstrip(b"\0"))

    def _kill_matching(self, argument, matches):
        killed = 0
        records, status = self._records, self._status
        for slot in range(len(status)):
            if status[slot] == LINKED and matches(records[slot * RECORD_SIZE:(slot + 1) * RECORD_SIZE]):
                self._unlink(slot)
                killed += 1
        argument[0] = killed & 0xFF  # psk_af is a uint8

    def _psk_ifname(self, argument):
        """psk_ifname for strcmp(): None matches every state; 16 bytes without NUL match none."""
        raw = bytes(argument[self.layout.kill_ifname_offset:self.layout.kill_ifname_offset + 16])
        if raw[0] == 0:
            return None
        if b"\0" not in raw:
            return b"\x01" * 17  # longer than any kif name, so strcmp() never returns 0
        return kif_name(raw)

    def _diocclrstates(self, argument, _memory):
        ifname = self._psk_ifname(argument)
        self._kill_matching(argument, lambda rec: ifname is None or rec[OFF_IFNAME:OFF_IFNAME + 16] == ifname)

    def _diockillstates(self, argument, _memory):
        layout = self.layout
        af = argument[0]
        (proto,) = layout.i32.unpack_from(argument, 4)
        src = _RuleAddr(argument, 8, layout.pointer_size)
        dst = _RuleAddr(argument, 8 + src.size, layout.pointer_size)
        ifname = self._psk_ifname(argument)

        def matches(rec):
            state_af = rec[232]
            if af and af != state_af:
                return False
            if proto and proto != rec[233]:
                return False
            if rec[OFF_DIRECTION] == PF_OUT:
                source, destination = rec[24:42], rec[72:90]
            else:
                source, destination = rec[72:90], rec[24:42]
            return (src.matches(source, state_af) and dst.matches(destination, state_af)
                    and (ifname is None or rec[OFF_IFNAME:OFF_IFNAME + 16] == ifname))

        self._kill_matching(argument, matches)

    def _diocgetstate(self, argument, _memory):
        (nr, _pointer) = self.layout.pfioc_state.unpack_from(argument)
        if nr >= self._linked:
            raise _os_error(errno.EBUSY, "no state number %d" % nr)
        raise KernelBugRefused(
            "DIOCGETSTATE: NetBSD's pfioctl() exports the state into the kernel's on-stack copy of the 16/8-byte "
            "argument, overrunning the kernel stack by about 120 bytes (reference 5.7). Use DIOCGETSTATES.")

    def _diocaddstate(self, _argument, _memory):
        raise KernelBugRefused(
            "DIOCADDSTATE: NetBSD's pfioctl() dereferences the user pointer pfioc_state.state in the kernel without "
            "copyin (a fault with SMAP, garbage on sparc64; reference 5.6). Use DIOCADDSTATES.")


def _not_modelled(name, request, detail="the emulator has no model of it"):
    return RequestNotModelled(
        "%s (0x%x): NetBSD's pfioctl() implements this request but %s; a real kernel would answer it, so the "
        "emulator refuses rather than invent an answer (docs/testing.md lists the unmodelled requests)"
        % (name, request, detail))


def _as_int32(value):
    value &= U32
    return value - (1 << 32) if value & 0x80000000 else value


PORT_OPERATORS = {
    1: lambda a1, a2, p: a1 < p < a2,  # IRG
    2: lambda a1, a2, p: p == a1,  # EQ
    3: lambda a1, a2, p: p != a1,  # NE
    4: lambda a1, a2, p: p < a1,  # LT
    5: lambda a1, a2, p: p <= a1,  # LE
    6: lambda a1, a2, p: p > a1,  # GT
    7: lambda a1, a2, p: p >= a1,  # GE
    8: lambda a1, a2, p: p < a1 or p > a2,  # XRG
    9: lambda a1, a2, p: a1 <= p <= a2,  # RRG
}


class _RuleAddr(object):
    """One ``struct pf_rule_addr`` of a pfioc_state_kill: address/mask, neg, ports and operator."""

    def __init__(self, argument, offset, pointer_size):
        wrap_size = 48 if pointer_size == 8 else 40
        self.size = wrap_size + 8
        self.addr = bytes(argument[offset:offset + 16])
        self.mask = bytes(argument[offset + 16:offset + 32])
        ports = offset + wrap_size
        self.port1 = int.from_bytes(argument[ports:ports + 2], "big")
        self.port2 = int.from_bytes(argument[ports + 2:ports + 4], "big")
        self.neg = argument[ports + 4]
        self.port_op = argument[ports + 5]

    def _address_matches(self, address, af):
        """pf_match_addr(): masked compare over 1 or 4 words, inverted by neg."""
        words = 4 if af == 2 else 16 if af == 24 else 0
        match = False
        if words:
            mask = int.from_bytes(self.mask[:words], "big")
            match = (int.from_bytes(self.addr[:words], "big") & mask) == (int.from_bytes(address[:words], "big") & mask)
        return not match if self.neg else match

    def matches(self, host, af):
        """``host`` is a 18-byte addr + port of the state key."""
        if not self._address_matches(host[:16], af):
            return False
        if self.port_op == 0:
            return True
        operator = PORT_OPERATORS.get(self.port_op)
        return bool(operator and operator(self.port1, self.port2, int.from_bytes(host[16:18], "big")))
