# -*- coding: utf-8 -*-
# Copyright: netbsd.pf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Lock leases: a detached watchdog that unlocks the pf state table in time.

NetBSD's state lock (DIOCSETLCK) is a single global flag with no owner and no
getter: whoever sets it must make sure it is cleared, even if the process that
set it is SIGKILLed or loses its SSH session.  A lease is that guarantee:

* ``arm_lease()`` writes the lease file (token, deadline, watchdog pid) and
  starts a watchdog process that is fully detached (double fork + setsid, its
  own stdio on /dev/null), so it outlives the module, the Ansible connection
  and Ansible's async wrapper.  Arm the lease *before* locking the table.
* At the deadline the watchdog opens the pf device itself and clears the lock,
  unless the lease file shows the lease was released (``release_lease()``) or
  taken over by a newer lease (another token).  An unreadable or missing lease
  file does not stop it: when in doubt, unlock.
* The lease file is the only record of who locked the table; ``lease_view()``
  turns it into something a human (or states_info) can read.
* A holder ends its lease with ``end_lease()``: it unlocks the table only if
  the lease is still its own, so a lock taken over meanwhile stays in force.

All writes to the lease file happen under an exclusive flock(2) on the file
itself, so a watchdog deciding to unlock, a holder ending its lease and a task
arming a new lease cannot interleave.

The watchdog's deadline is on the monotonic clock (CLOCK_MONOTONIC, shared by
every process of the host): a step of the wall clock (ntpd, an RTC fix after
boot) neither shortens nor stretches a lease.  Wall-clock times in the lease
file are for people only.

Root writes these files: they are opened without following a symbolic link,
created exclusively, and refused in a directory that other users can write to
(unless it is sticky and the file is ours), so that nobody can point them at
another file (``open_record_file()``).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import binascii
import errno
import fcntl
import json
import math
import os
import signal
import stat
import syslog
import time

from ansible_collections.netbsd.pf.plugins.module_utils.errors import PfStateError
from ansible_collections.netbsd.pf.plugins.module_utils.pfdev import PfDevice, PfError

LEASE_FORMAT_VERSION = 1
HELD = "held"
RELEASED = "released"
EXPIRED = "expired"
UNLOCK_FAILED = "unlock_failed"

# How often a sleeping watchdog looks at the lease file, so that it exits soon
# after a release or takeover instead of lingering until its deadline.
POLL_SECONDS = 2.0
UNLOCK_ATTEMPTS = 5
UNLOCK_RETRY_SECONDS = 2.0


class LeaseError(PfStateError):
    """The lease could not be armed, read or released (the message says why and what to do)."""


def new_token():
    return binascii.hexlify(os.urandom(8)).decode("ascii")


def _refuse(what, path, why):
    return LeaseError("refusing the %s %s: %s" % (what, path, why))


def _check_directory(path, what):
    """The directory of ``path`` as os.stat; refuses one that other users can write to and that is not sticky."""
    directory = os.path.dirname(os.path.abspath(path))
    info = os.stat(directory)       # OSError: the callers say what they could not do with the file
    if _writable_by_others(info) and not info.st_mode & stat.S_ISVTX:
        raise _refuse(what, path, "its directory %s can be written by other users and is not sticky, so anyone could "
                      "replace the file with a link to another one; use a directory only root can write to "
                      "(such as /var/run)" % directory)
    return info


def _writable_by_others(info):
    return bool(info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)) or info.st_uid not in (0, os.geteuid())


def open_record_file(path, writable, create=False, what="lease file"):
    """Open a lease or lock record root writes to, so that nobody else can redirect the write; returns the fd.

    The file is opened without following a symbolic link and, when missing and
    ``create``, created with O_EXCL (mode 0600).  Refused with LeaseError: a
    symbolic link, anything but a regular file, a file with other hard links,
    a directory others can write to unless it is sticky, and in such a sticky
    directory a file that is not ours.  Other failures raise OSError (ENOENT
    for a missing file without ``create``).
    """
    directory = _check_directory(path, what)
    # O_NONBLOCK: a FIFO planted in its place must not hang the open (regular files ignore the flag).
    flags = (os.O_RDWR if writable else os.O_RDONLY) | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = _open_or_create(path, flags, create)
    except OSError as exc:
        if exc.errno != errno.ENOENT and os.path.islink(path):     # ELOOP on Linux, EFTYPE on NetBSD
            raise _refuse(what, path, "it is a symbolic link (to %s)" % os.readlink(path))
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _refuse(what, path, "it is not a regular file")
        if info.st_nlink != 1:
            raise _refuse(what, path, "it has %d hard links; a lease or lock file has one" % info.st_nlink)
        if _writable_by_others(directory) and info.st_uid != os.geteuid():
            raise _refuse(what, path, "it belongs to uid %d, not to this user, in a directory others can write to"
                          % info.st_uid)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_or_create(path, flags, create):
    """os.open, or a new file (O_EXCL, 0600) when there is none and ``create``; a file created meanwhile is opened."""
    while True:
        try:
            return os.open(path, flags)
        except OSError as exc:
            if exc.errno != errno.ENOENT or not create:
                raise
        try:
            return os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise


class _LockedLeaseFile:
    """The lease file opened and flock()ed; ``read()``/``write()`` work on its whole content."""

    def __init__(self, path, exclusive, create=False):
        self.fd = open_record_file(path, writable=exclusive, create=create)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        except BaseException:
            os.close(self.fd)
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        os.close(self.fd)   # also drops the flock

    def read(self):
        """The lease dict, or None if the file is empty or not a lease (a crash mid-write, a stray file)."""
        return self.read_checked()[0]

    def read_checked(self):
        """(lease dict or None, why the file's content is not a valid lease or None)."""
        os.lseek(self.fd, 0, os.SEEK_SET)
        chunks = []
        while True:
            chunk = os.read(self.fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        raw = b"".join(chunks)
        if not raw.strip():
            return None, None
        try:
            lease = json.loads(raw.decode("utf-8"))
        except ValueError:
            return None, "not JSON"
        problem = lease_problem(lease)
        return (None, problem) if problem else (lease, None)

    def write(self, lease):
        data = json.dumps(lease, sort_keys=True).encode("utf-8") + b"\n"
        os.lseek(self.fd, 0, os.SEEK_SET)
        os.ftruncate(self.fd, 0)
        while data:
            data = data[os.write(self.fd, data):]
        os.fsync(self.fd)


_PID_FIELDS = ("holder_pid", "watchdog_pid")
_TIME_FIELDS = ("locked_at", "seconds", "deadline", "deadline_monotonic", "released_at", "unlocked_at")
_MAX_PID = 2 ** 31 - 1       # pid_t is a 32-bit int


def _is_pid(value):
    return type(value) is int and 0 < value <= _MAX_PID     # pylint: disable=unidiomatic-typecheck


def lease_problem(lease):
    """Why decoded JSON is not a lease this code wrote (a file edited by hand), or None.

    Only the fields whose type the code relies on are checked: a pid that is
    not a positive int would make os.kill signal a process group (-1: every
    process) or raise, a time that is not a number would raise in arithmetic.
    """
    if not isinstance(lease, dict):
        return "not a JSON object"
    for key in ("token", "state"):
        if not isinstance(lease.get(key), str):
            return "%s is not a string" % key
    for key in _PID_FIELDS:
        if lease.get(key) is not None and not _is_pid(lease[key]):
            return "%s %r is not a process id" % (key, lease[key])
    for key in _TIME_FIELDS:
        value = lease.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value)):
            return "%s %r is not a number of seconds" % (key, value)
    return None


def read_lease(lease_file):
    """The lease recorded in ``lease_file``: a dict, or None if there is no (readable) lease."""
    return read_lease_checked(lease_file)[0]


def read_lease_checked(lease_file):
    """(lease or None, why the file holds no valid lease or None): read_lease() that tells garbage from nothing."""
    try:
        with _LockedLeaseFile(lease_file, exclusive=False) as locked:
            return locked.read_checked()
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return None, None
        raise LeaseError("cannot read lease file %s: %s" % (lease_file, os.strerror(exc.errno)))


def _update_lease(lease_file, token, **changes):
    """Apply ``changes`` to the lease if it still carries ``token`` (any lease if token is None).

    Returns the updated lease, or None if there was no matching lease.
    """
    try:
        with _LockedLeaseFile(lease_file, exclusive=True) as locked:
            lease = locked.read()
            if lease is None or (token is not None and lease.get("token") != token):
                return None
            lease.update(changes)
            locked.write(lease)
            return lease
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise LeaseError("cannot update lease file %s: %s" % (lease_file, os.strerror(exc.errno)))


def arm_lease(lease_file, seconds, device_path="/dev/pf", holder="netbsd.pf"):
    """Record a new lease and start its watchdog; returns the lease token.

    Call it before locking the table.  Any previous lease is taken over (its
    watchdog exits without unlocking).  ``seconds`` 0 records the lock with no
    deadline and starts no watchdog: nothing will unlock the table.
    """
    if seconds < 0:
        raise LeaseError("lease must be 0 (no watchdog) or a number of seconds, not %d" % seconds)
    token = new_token()
    now = time.time()
    deadline_monotonic = time.monotonic() + seconds
    lease = {
        "version": LEASE_FORMAT_VERSION,
        "token": token,
        "state": HELD,
        "holder": holder,
        "holder_pid": os.getpid(),
        "device": device_path,
        "locked_at": now,
        "seconds": seconds,
        "deadline": now + seconds if seconds else None,
        "deadline_monotonic": deadline_monotonic if seconds else None,
        "watchdog_pid": None,
    }
    try:
        with _LockedLeaseFile(lease_file, exclusive=True, create=True) as locked:
            locked.write(lease)
            if seconds:
                # Started while we hold the flock: the watchdog cannot act on a
                # half-written lease, and a concurrent arm waits for us.
                lease["watchdog_pid"] = _spawn_watchdog(lease_file, token, deadline_monotonic, device_path)
                try:
                    locked.write(lease)
                except BaseException:
                    # The lease is not on record (a full disk): its watchdog would unlock someone's lock later.
                    _stop_watchdog(lease["watchdog_pid"])
                    raise
    except OSError as exc:
        raise LeaseError("cannot write lease file %s: %s; choose a writable lease_file"
                         % (lease_file, os.strerror(exc.errno)))
    return token


def _stop_watchdog(pid):
    try:
        os.kill(pid, signal.SIGTERM)
    except OSError:
        pass            # already gone


def release_lease(lease_file, token=None):
    """Mark the lease released so its watchdog exits without unlocking.

    With a token, only that lease is released (a lease taken over by someone
    else is left alone).  Returns True if a held lease was released.
    """
    lease = read_lease(lease_file)
    if lease is None or lease.get("state") != HELD:
        return False
    return _update_lease(lease_file, token if token is not None else lease["token"],
                         state=RELEASED, released_at=time.time()) is not None


# How end_lease() found a lease that is no longer this holder's to end.
TAKEN_OVER = "taken_over"


def end_lease(lease_file, token, unlock):
    """End the lease ``token`` of this holder: unlock the table (``unlock()``) only while that lease is in force.

    Under the lease file's exclusive lock, so that nobody can take the lease
    over between the check and the unlock.  Returns None when this call
    unlocked the table (the lease is marked released), else the lease found
    there, with ``ended`` saying why the table was left as it is: TAKEN_OVER
    (another holder's lease is in force: its lock must stay), RELEASED (someone
    unlocked the table and released the lease) or EXPIRED (the watchdog
    unlocked the table when the lease ran out).  With no lease in the file, or
    one whose watchdog failed to unlock, the table is unlocked: a stuck lock
    is worse.  Raises LeaseError if the lease file cannot be used (the table
    is then still locked; the caller decides).
    """
    try:
        with _LockedLeaseFile(lease_file, exclusive=True) as locked:
            lease = locked.read()
            if lease is not None and lease.get("token") != token:
                lease["ended"] = TAKEN_OVER
                return lease
            if lease is not None and lease.get("state") in (RELEASED, EXPIRED):
                lease["ended"] = lease["state"]
                return lease
            unlock()
            if lease is not None:
                lease.update(state=RELEASED, released_at=time.time())
                locked.write(lease)
            return None
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise LeaseError("cannot end the lease in %s: %s" % (lease_file, os.strerror(exc.errno)))
    unlock()        # the lease file is gone: nobody else holds a lease
    return None


def unlock_and_release(lease_file, unlock):
    """An explicit unlock: ``unlock()`` whoever locked the table, and release the lease in force; True if one was.

    Under the lease file's exclusive lock, so that a lease armed meanwhile is
    either released with the table unlocked, or armed after the unlock and
    left in force with its lock.  Without a lease file the table is unlocked
    all the same.  Raises LeaseError if the lease file cannot be used (the
    table is then not unlocked yet; the caller decides).
    """
    try:
        with _LockedLeaseFile(lease_file, exclusive=True) as locked:
            unlock()
            lease = locked.read()
            if lease is None or lease.get("state") != HELD:
                return False
            lease.update(state=RELEASED, released_at=time.time())
            locked.write(lease)
            return True
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise LeaseError("cannot release the lease in %s: %s" % (lease_file, os.strerror(exc.errno)))
    unlock()
    return False


def lease_view(lease_file, now=None):
    """What the lease file says about the lock, for humans: never a kernel reading.

    ``locked_by_lease`` is True only while a held lease is in force; after a
    deadline passes with the watchdog gone the answer is None (unknown).
    """
    now = time.time() if now is None else now
    try:
        lease, problem = read_lease_checked(lease_file)
    except LeaseError as exc:
        return {"source": "lease_file", "lease_file": lease_file, "state": "unreadable", "locked_by_lease": None, "message": str(exc)}
    if problem:
        return {"source": "lease_file", "lease_file": lease_file, "state": "invalid", "locked_by_lease": None,
                "message": "%s is not a valid lease (%s): edited or damaged; a new lock or dump replaces it"
                           % (lease_file, problem)}
    if lease is None:
        return {"source": "lease_file", "lease_file": lease_file, "state": "none", "locked_by_lease": False,
                "message": "no lease recorded; a lock set by other tools (pfs -l) cannot be seen"}
    view = {"source": "lease_file", "lease_file": lease_file}
    view.update(lease)
    state = lease.get("state")
    deadline = lease.get("deadline")
    if state != HELD:
        view["locked_by_lease"] = False if state in (RELEASED, EXPIRED) else None
        return view
    if deadline is None:
        view["locked_by_lease"] = True
        view["message"] = "locked with lease 0: no watchdog will unlock the table"
        return view
    watchdog_alive = process_alive(lease.get("watchdog_pid"))
    remaining = deadline - now
    if watchdog_alive and isinstance(lease.get("deadline_monotonic"), (int, float)):
        # The watchdog runs: this boot's monotonic clock says how long it will wait, whatever the wall clock did.
        remaining = lease["deadline_monotonic"] - time.monotonic()
    view["remaining_seconds"] = max(0.0, round(remaining, 3))
    if remaining > 0:
        view["locked_by_lease"] = True
    elif watchdog_alive:
        view["locked_by_lease"] = True
        view["message"] = "deadline passed; the watchdog is unlocking the table"
    else:
        view["locked_by_lease"] = None
        view["message"] = "deadline passed but the watchdog is gone without recording an unlock; the table may still be locked"
    return view


def process_alive(pid):
    """Whether process ``pid`` exists (a watchdog recorded in a lease); False for no pid."""
    if not _is_pid(pid):
        return False        # never os.kill(0 or -N, 0): that asks about a process group or every process
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    return True


def set_table_lock(device_path, locked):
    """DIOCSETLCK on ``device_path``; read-only access is enough for it."""
    with PfDevice(device_path, writable=False) as device:
        device.set_lock(locked)


class Watchdog:
    """The decision logic of a lease watchdog, with injectable clock, sleep and unlock.

    ``deadline`` is a reading of ``clock``, the monotonic clock (a wall-clock
    step must not move it).  ``run()`` returns how the lease ended:
    ``"released"``, ``"taken_over"``, ``"unlocked"`` or ``"unlock_failed"``.
    """

    def __init__(self, lease_file, token, deadline, unlock, clock=time.monotonic, sleep=time.sleep, poll=POLL_SECONDS):
        self.lease_file = lease_file
        self.token = token
        self.deadline = deadline
        self.unlock = unlock
        self.clock = clock
        self.sleep = sleep
        self.poll = poll

    def _verdict(self, lease):
        """None to go on (ours and held, or no readable lease), else how the lease ended."""
        if lease is None:
            return None
        if lease.get("token") != self.token:
            return "taken_over"
        if lease.get("state") != HELD:
            return "released"
        return None

    def _peek(self):
        try:
            return read_lease(self.lease_file)
        except LeaseError:
            return None

    def run(self):
        while True:
            verdict = self._verdict(self._peek())
            if verdict:
                return verdict
            remaining = self.deadline - self.clock()
            if remaining <= 0:
                return self._expire()
            self.sleep(min(remaining, self.poll))

    def _expire(self):
        last_error = None
        for attempt in range(UNLOCK_ATTEMPTS):
            if attempt:
                self.sleep(UNLOCK_RETRY_SECONDS)
            try:
                with _LockedLeaseFile(self.lease_file, exclusive=True, create=True) as locked:
                    lease = locked.read()
                    verdict = self._verdict(lease)
                    if verdict:
                        return verdict
                    try:
                        self.unlock()
                    except (PfError, OSError) as exc:
                        last_error = str(exc)
                        continue
                    lease = lease or {"version": LEASE_FORMAT_VERSION, "token": self.token}
                    lease.update(state=EXPIRED, unlocked_at=time.time(), unlocked_by="watchdog")
                    locked.write(lease)
                    return "unlocked"
            except (OSError, LeaseError) as exc:
                # The lease file itself is unusable (or was replaced by a link): unlock anyway, a stuck lock is worse.
                last_error = "lease file %s: %s" % (self.lease_file, os.strerror(exc.errno) if isinstance(exc, OSError) else exc)
                try:
                    self.unlock()
                    return "unlocked"
                except (PfError, OSError) as unlock_exc:
                    last_error = str(unlock_exc)
        try:
            _update_lease(self.lease_file, self.token, state=UNLOCK_FAILED, error=last_error)
        except LeaseError:
            pass    # nothing more to record it in; syslog says it
        return "unlock_failed"


def _detach(keep_fd):
    """Double fork into a session of its own, stdio on /dev/null, every fd but ``keep_fd`` closed.

    Returns the first child's pid in the caller (to be waited for) and 0 in
    the detached grandchild, whose parent is init once the first child exits.
    """
    first = os.fork()
    if first:
        return first
    try:
        os.setsid()
        if os.fork():
            os._exit(0)
        os.chdir("/")
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.closerange(3, keep_fd)
        os.closerange(keep_fd + 1, _max_fd())
    except BaseException:
        os._exit(1)
    return 0


def _max_fd():
    try:
        return os.sysconf("SC_OPEN_MAX")
    except (ValueError, OSError):
        return 1024


def _spawn_watchdog(lease_file, token, deadline_monotonic, device_path):
    """Start the detached watchdog (deadline a time.monotonic() reading); returns its pid once it runs."""
    read_end, write_end = os.pipe()
    first_child = _detach(keep_fd=write_end)
    if first_child == 0:
        status = 0
        try:
            os.write(write_end, str(os.getpid()).encode("ascii"))
            os.close(write_end)
            outcome = Watchdog(lease_file, token, deadline_monotonic, lambda: set_table_lock(device_path, False)).run()
            _log_outcome(outcome, lease_file, device_path)
        except BaseException:
            status = 1
        os._exit(status)
    os.close(write_end)
    os.waitpid(first_child, 0)
    with os.fdopen(read_end, "rb") as pipe:
        pid_text = pipe.read()
    if not pid_text:
        raise LeaseError("the lease watchdog did not start; the table was not locked")
    return int(pid_text)


def _log_outcome(outcome, lease_file, device_path):
    if outcome == "unlocked":
        syslog.syslog(syslog.LOG_WARNING, "netbsd.pf: lock lease %s ran out, pf state table unlocked on %s" % (lease_file, device_path))
    elif outcome == "unlock_failed":
        syslog.syslog(syslog.LOG_ERR, "netbsd.pf: lock lease %s ran out but unlocking %s failed; the pf state table may still be locked"
                      % (lease_file, device_path))


# A lease recorded this long before the computed boot time is from an earlier boot (absorbs clock steps at boot).
STALE_LEASE_MARGIN = 120


def _seconds_since_boot():
    """The monotonic clock: on NetBSD (CLOCK_MONOTONIC, the kernel's uptime) and Linux it counts from boot."""
    return time.monotonic()


def lease_predates_boot(lease, now=None):
    """Whether a held lease was recorded before the host last booted, with no watchdog of it running.

    The kernel forgets DIOCSETLCK at boot, but the lease file may survive
    (on NetBSD /var/run is cleared at boot; a lease_file elsewhere is not).
    """
    now = time.time() if now is None else now
    locked_at = lease.get("locked_at")
    if not isinstance(locked_at, (int, float)):
        return False
    booted_at = now - _seconds_since_boot()
    return locked_at < booted_at - STALE_LEASE_MARGIN and not process_alive(lease.get("watchdog_pid"))
