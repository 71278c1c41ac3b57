# -*- coding: utf-8 -*-
# Copyright: netbsd.pf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Client of NetBSD's /dev/pf for the state-table requests (reference sections 4, 5, 11).

Only the requests that are safe on NetBSD are issued: DIOCGETSTATES,
DIOCADDSTATES, DIOCSETLCK, DIOCGETSTATUS, DIOCGETLIMIT, DIOCGETTIMEOUT,
DIOCCLRSTATES, DIOCKILLSTATES, DIOCSTART and DIOCSTOP.  Never DIOCADDSTATE or
DIOCGETSTATE (both broken in the NetBSD kernel).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import ctypes
import errno
import fcntl
import mmap
import os
import signal
import struct

from ansible_collections.netbsd.pf.plugins.module_utils.abi import (
    IFNAMSIZ, MAX_IFNAME_LEN, PF_LIMIT_STATES, PF_STATUS_COUNTER_NAMES,
    PF_STATUS_FCOUNTER_NAMES, PF_STATUS_LCOUNTER_NAMES, PFTM_MAX, PFTM_NAMES, RECORD_SIZE, Abi,
)
from ansible_collections.netbsd.pf.plugins.module_utils.errors import PfStateError
from ansible_collections.netbsd.pf.plugins.module_utils.records import ifname_text, record_count

INT_MAX = 0x7fffffff
DEFAULT_CHUNK_RECORDS = 4096
# Room for states created between the size query and the fetch (a full reply is fetched again).
STATES_HEADROOM = 0.02
STATES_MINIMUM_EXTRA = 256

_GENERIC_MESSAGES = {
    errno.EACCES: "the /dev/pf descriptor is not open for writing (this request needs a read-write open)",
    errno.EPERM: "refused by the kernel securelevel (securelevel > 1 allows only reading, locking and adding states)",
    errno.ENODEV: "the kernel does not know this request: this Python's word size differs from the kernel's "
                  "(run a Python built for the kernel's ABI, e.g. a 64-bit Python on amd64) or pf is not compiled in",
    errno.ENOTTY: "the kernel does not know this request (wrong ABI or not a pf device)",
    errno.EFAULT: "the kernel could not copy the argument or a state buffer (bad address)",
    errno.EBADF: "the /dev/pf descriptor is not open",
    errno.ENXIO: "no such pf device (only minor 0 of /dev/pf exists)",
}
_REQUEST_MESSAGES = {
    ("open", errno.ENOENT): "no /dev/pf: pf is not in the kernel (add 'pseudo-device pf' or load the pf module)",
    ("open", errno.EACCES): "permission denied opening /dev/pf (run as root)",
    ("open", errno.EPERM): "permission denied opening /dev/pf (run as root)",
    ("DIOCADDSTATES", errno.ENOMEM): "a state was refused: it duplicates an existing state (same id and creator, "
                                     "or a colliding address/port key) or the state limit was reached; states "
                                     "before it in the same call were added",
    ("DIOCADDSTATES", errno.EINVAL): "a state has an invalid timeout index (the kernel accepts 0..19 and 23)",
    ("DIOCADDSTATES", errno.ENOENT): "the kernel could not allocate the interface of a state",
    ("DIOCSTART", errno.EEXIST): "pf is already running",
    ("DIOCSTOP", errno.ENOENT): "pf is not running",
    ("DIOCGETTIMEOUT", errno.EINVAL): "no such timeout index (0..19)",
    ("DIOCGETLIMIT", errno.EINVAL): "no such limit index (0..4)",
}


class PfError(PfStateError):
    """A /dev/pf operation failed; .errno, .request (ioctl name or "open") and a NetBSD-specific message."""

    def __init__(self, err, request, message=None, added=None):
        self.errno = err
        self.request = request
        self.added = added
        if message is None:
            message = _REQUEST_MESSAGES.get((request, err)) or _GENERIC_MESSAGES.get(err) or (
                os.strerror(err) if err else "failed")
        name = errno.errorcode.get(err, str(err)) if err else "error"
        super(PfError, self).__init__("%s: %s (%s)" % (request, message, name))


class HostSyscalls:
    """The real system calls; functions are looked up at call time so tests can patch them."""

    def open(self, path, flags):
        return os.open(path, flags)

    def close(self, fd):
        os.close(fd)

    def ioctl(self, fd, request, arg):
        fcntl.ioctl(fd, request, arg, True)

    def alloc(self, size):
        # A private anonymous mapping: zero pages that become resident only where they are
        # written, and are unmapped as soon as the last view of them is gone.
        memory = mmap.mmap(-1, max(size, 1), flags=mmap.MAP_PRIVATE)
        return ctypes.addressof(ctypes.c_char.from_buffer(memory)), memory


class StatesBuffer:
    """Memory the kernel copies states into: its address, the object that owns it, and its size in bytes."""

    __slots__ = ("address", "memory", "size")

    def __init__(self, address, memory, size):
        self.address = address
        self.memory = memory
        self.size = size


def _byte_view(buffer, size):
    return memoryview(buffer).cast("B")[:size]


class PfDevice:
    """An open /dev/pf.  Read-only by default: writes need writable=True."""

    def __init__(self, path="/dev/pf", writable=False, abi=None, syscalls=None):
        self.abi = abi or Abi.host()
        self.syscalls = syscalls or HostSyscalls()
        self.path = path
        self.writable = writable
        self._prefix = self.abi.prefix
        try:
            self.fd = self.syscalls.open(path, os.O_RDWR if writable else os.O_RDONLY)
        except OSError as exc:
            raise PfError(exc.errno, "open", None if exc.errno not in (errno.ENOENT, errno.EACCES, errno.EPERM)
                          else "%s: %s" % (path, _REQUEST_MESSAGES[("open", exc.errno)]))

    def close(self):
        if self.fd is not None:
            fd, self.fd = self.fd, None
            self.syscalls.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _ioctl(self, name, arg):
        if self.fd is None:
            raise PfError(errno.EBADF, name, "the device is closed")
        try:
            self.syscalls.ioctl(self.fd, self.abi.ioctls[name], arg)
        except OSError as exc:
            raise PfError(exc.errno, name)

    def _require_writable(self, name):
        if not self.writable:
            raise PfError(errno.EACCES, name, "refusing to issue %s on a read-only descriptor "
                                              "(open the device with writable=True)" % name)

    def _states_arg(self, length, address):
        arg = bytearray(self.abi.pfioc_states_size)
        struct.pack_into(self._prefix + "i", arg, 0, length)
        struct.pack_into(self._prefix + self.abi.pointer_code, arg, self.abi.pfioc_states_buf_offset, address)
        return arg

    # --- reading ---------------------------------------------------------------

    def state_table_size(self):
        """Bytes the kernel says the table needs (counts unlinked states too)."""
        arg = self._states_arg(0, 0)
        self._ioctl("DIOCGETSTATES", arg)
        return struct.unpack_from(self._prefix + "i", arg, 0)[0]

    def states_buffer(self, headroom=STATES_HEADROOM, minimum_extra=STATES_MINIMUM_EXTRA):
        """Memory for one DIOCGETSTATES reply: the table's current size plus headroom, already faulted in.

        Allocate it before locking the table, so the lock covers the copy only:
        every page is touched here, or the kernel's copy-out would take a
        zero-fill page fault per page while the table is locked.
        """
        needed = self.state_table_size() // RECORD_SIZE
        buffer = self._alloc_states(needed + max(minimum_extra, int(needed * headroom)))
        pages = memoryview(buffer.memory).cast("B")[:buffer.size:mmap.PAGESIZE]
        pages[:] = bytes(len(pages))
        pages.release()
        return buffer

    def _alloc_states(self, capacity):
        size = capacity * RECORD_SIZE
        if size > INT_MAX:
            raise PfError(errno.ENOMEM, "DIOCGETSTATES", "state table larger than one ioctl can return")
        address, memory = self.syscalls.alloc(size)
        return StatesBuffer(address, memory, size)

    def get_states(self, buffer=None, headroom=STATES_HEADROOM, minimum_extra=STATES_MINIMUM_EXTRA):
        """All states as one zero-copy memoryview of n * 240 bytes, in kernel (insertion) order.

        ``buffer`` (from states_buffer()) makes the fetch a single
        DIOCGETSTATES.  The kernel truncates silently when the buffer is too
        small, so a reply that fills it is fetched again into a buffer sized
        by a new size query (at least 1.5 times bigger) until one does not.
        """
        if buffer is None:
            buffer = self.states_buffer(headroom, minimum_extra)
        while True:
            arg = self._states_arg(buffer.size, buffer.address)
            self._ioctl("DIOCGETSTATES", arg)
            returned = struct.unpack_from(self._prefix + "i", arg, 0)[0]
            if returned < buffer.size:
                return _byte_view(buffer.memory, returned - returned % RECORD_SIZE)
            capacity = buffer.size // RECORD_SIZE
            buffer = None       # free the full reply before allocating the next one
            needed = self.state_table_size() // RECORD_SIZE
            buffer = self._alloc_states(max(needed + max(minimum_extra, int(needed * headroom)), capacity * 3 // 2 + 1))

    def get_status(self):
        arg = bytearray(self.abi.pf_status_size)
        self._ioctl("DIOCGETSTATUS", arg)
        values = struct.unpack(self.abi.pf_status_format, arg)
        counters, lcounters, fcounters = values[0:16], values[16:23], values[23:26]
        scounters, pcounters, bcounters = values[26:29], values[29:41], values[41:45]
        stateid, running, states, src_nodes, since, debug, hostid, ifname, checksum = values[45:]
        return {
            "running": bool(running), "states": states, "src_nodes": src_nodes, "since": since, "debug": debug,
            "hostid": hostid, "stateid": stateid,
            "ifname": ifname_text(ifname), "checksum": checksum.hex(),
            "counters": dict(zip(PF_STATUS_COUNTER_NAMES, counters)),
            "state_locked_drops": counters[15],
            "limit_counters": dict(zip(PF_STATUS_LCOUNTER_NAMES, lcounters)),
            "state_counters": dict(zip(PF_STATUS_FCOUNTER_NAMES, fcounters)),
            "src_node_counters": dict(zip(PF_STATUS_FCOUNTER_NAMES, scounters)),
            # [inet, inet6][in, out][pass, drop, other] and [inet, inet6][in, out]
            "packets": [[list(pcounters[a * 6 + d * 3:a * 6 + d * 3 + 3]) for d in (0, 1)] for a in (0, 1)],
            "bytes": [[bcounters[a * 2 + d] for d in (0, 1)] for a in (0, 1)],
        }

    def get_limit(self, index=PF_LIMIT_STATES):
        arg = bytearray(struct.pack(self._prefix + "iI", index, 0))
        self._ioctl("DIOCGETLIMIT", arg)
        return struct.unpack(self._prefix + "iI", arg)[1]

    def get_timeout(self, index):
        arg = bytearray(struct.pack(self._prefix + "ii", index, 0))
        self._ioctl("DIOCGETTIMEOUT", arg)
        return struct.unpack(self._prefix + "ii", arg)[1]

    def get_timeouts(self):
        """All 20 default timeouts as a tuple indexed by PFTM_* (names in abi.PFTM_NAMES)."""
        return tuple(self.get_timeout(index) for index in range(PFTM_MAX))

    def get_timeouts_by_name(self):
        return dict(zip(PFTM_NAMES, self.get_timeouts()))

    # --- writing ---------------------------------------------------------------

    def set_lock(self, locked):
        """DIOCSETLCK (allowed read-only and at any securelevel)."""
        self._ioctl("DIOCSETLCK", bytearray(struct.pack(self._prefix + "I", 1 if locked else 0)))

    def add_states(self, block, chunk_records=DEFAULT_CHUNK_RECORDS, progress=None):
        """DIOCADDSTATES in chunks; returns the number of records sent.

        The kernel stops at the first bad record of a call without saying which;
        PfError.added then counts the records of the chunks that succeeded.
        """
        self._require_writable("DIOCADDSTATES")
        total = record_count(block)
        if chunk_records < 1:
            raise ValueError("chunk_records must be positive")
        view = memoryview(block).cast("B") if not isinstance(block, memoryview) else block.cast("B")
        added = 0
        step = chunk_records * RECORD_SIZE
        for start in range(0, total * RECORD_SIZE, step):
            chunk = view[start:start + step]
            address, buffer = self.syscalls.alloc(len(chunk))
            _byte_view(buffer, len(chunk))[:] = chunk
            try:
                self._ioctl("DIOCADDSTATES", self._states_arg(len(chunk), address))
            except PfError as exc:
                exc.added = added
                raise
            added += len(chunk) // RECORD_SIZE
            if progress is not None:
                progress(added)
        return added

    def _kill_arg(self, af=0, proto=0, src=None, dst=None, src_port=None, dst_port=None, ifname=b""):
        """pfioc_state_kill of already-built fields (see transforms.KernelCriteria.kill_arguments).

        af, proto: numbers (0: any); src, dst: (16-byte address, 16-byte mask);
        src_port, dst_port: (PF_OP_*, port1, port2); ifname: bytes (b"": any).
        """
        offsets = self.abi.kill_offsets
        arg = bytearray(self.abi.pfioc_state_kill_size)
        for side, network, port in (("src", src, src_port), ("dst", dst, dst_port)):
            if network is not None:
                address, mask = network
                arg[offsets[side + ".addr"]:offsets[side + ".addr"] + 16] = address
                arg[offsets[side + ".mask"]:offsets[side + ".mask"] + 16] = mask
            if port is not None:
                op_code, first, second = port
                struct.pack_into(">HH", arg, offsets[side + ".port"], first, second)
                arg[offsets[side + ".port_op"]] = op_code
        arg[offsets["af"]] = af
        struct.pack_into(self._prefix + "i", arg, offsets["proto"], proto)
        if ifname:
            if len(ifname) > MAX_IFNAME_LEN:
                raise ValueError("interface name %r longer than %d characters" % (ifname, MAX_IFNAME_LEN))
            arg[offsets["ifname"]:offsets["ifname"] + IFNAMSIZ] = ifname.ljust(IFNAMSIZ, b"\0")
        return arg

    def clear_states(self, ifname=b""):
        """DIOCCLRSTATES: every state, or those whose kif is `ifname` (bytes; b"all" for floating ones).

        Returns the kernel's count, which is modulo 256.
        """
        self._require_writable("DIOCCLRSTATES")
        arg = self._kill_arg(ifname=ifname)
        self._ioctl("DIOCCLRSTATES", arg)
        return arg[0]

    def kill_states(self, af=0, proto=0, src=None, dst=None, src_port=None, dst_port=None, ifname=b""):
        """DIOCKILLSTATES with built criteria (see _kill_arg).

        Returns the kernel's count of killed states, modulo 256.
        """
        self._require_writable("DIOCKILLSTATES")
        arg = self._kill_arg(af, proto, src, dst, src_port, dst_port, ifname)
        self._ioctl("DIOCKILLSTATES", arg)
        return arg[0]

    def start(self):
        self._require_writable("DIOCSTART")
        self._ioctl("DIOCSTART", bytearray())

    def stop(self):
        self._require_writable("DIOCSTOP")
        self._ioctl("DIOCSTOP", bytearray())


class LockInterrupted(BaseException):
    """A termination signal arrived while the state table was locked (raised inside locked())."""

    def __init__(self, signum):
        super(LockInterrupted, self).__init__("interrupted by signal %d while the state table was locked" % signum)
        self.signum = signum


_LOCK_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, name))


def _raise_interrupted(signum, frame):
    raise LockInterrupted(signum)


def _catch_lock_signals(handler):
    """Put ``handler`` on the termination signals; returns the handlers it replaced.

    A signal the process ignores (nohup's SIGHUP) stays ignored: it would not have
    ended the process, so it must not end the work either.
    """
    previous = {}
    try:
        for signum in _LOCK_SIGNALS:
            if signal.getsignal(signum) != signal.SIG_IGN:
                previous[signum] = signal.signal(signum, handler)
    except ValueError:          # not the main thread: signals cannot be caught here
        pass
    return previous


@contextlib.contextmanager
def signals_unwind():
    """Turn the first SIGTERM/SIGINT/SIGHUP in the body into LockInterrupted, deliver it again afterwards.

    For work that leaves something behind if the process just dies (a table
    locked under a lease, a staged file): the ``finally`` and ``except``
    clauses of the body run, then the signal reaches the previous handlers, so
    the process ends (or not) as it would have.  Further signals while the
    body unwinds are held back, not raised again in its cleanup.
    """
    received = []

    def unwind(signum, frame):
        if not received:
            received.append(signum)
            raise LockInterrupted(signum)

    previous = _catch_lock_signals(unwind)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if received:
            os.kill(os.getpid(), received[0])


@contextlib.contextmanager
def locked(device, unlock=None):
    """Lock the state table for the body; always unlock, also on exceptions and SIGTERM/SIGINT/SIGHUP.

    The signals are turned into LockInterrupted for the duration; after the
    unlock the previous handlers are restored and the signal is delivered
    again to them, so the process ends (or not) as it would have.  ``unlock``,
    if given, is called instead of a plain unlock (with the signals still held
    off): a holder under a lease unlocks only while the lease is still its own.
    """
    previous = _catch_lock_signals(_raise_interrupted)
    try:
        try:
            device.set_lock(True)
            try:
                yield device
            finally:
                blocked = hasattr(signal, "pthread_sigmask")
                if blocked:
                    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _LOCK_SIGNALS)
                try:
                    if unlock is None:
                        device.set_lock(False)
                    else:
                        unlock()
                finally:
                    if blocked:
                        for signum, handler in previous.items():
                            signal.signal(signum, handler)
                        previous = {}
                        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
    except LockInterrupted as exc:
        os.kill(os.getpid(), exc.signum)
        raise
