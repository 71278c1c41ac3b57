# -*- coding: utf-8 -*-
# Copyright: netbsd.pf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""High-level state-table operations: dump, inspect, convert, info and lock.

What the modules (states_dump, states_info, states_lock, states_convert) call;
nothing here knows of Ansible.  Expected failures raise OperationError with a
message that names the problem and the fix; PfError escapes for device errors
(its message already explains the errno on NetBSD).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os
import socket
import subprocess
import sys
import time

from ansible_collections.netbsd.pf.plugins.module_utils.abi import RECORD_SIZE
from ansible_collections.netbsd.pf.plugins.module_utils.argspec import canonical_format
from ansible_collections.netbsd.pf.plugins.module_utils.errors import PfStateError
from ansible_collections.netbsd.pf.plugins.module_utils.formats import (
    NATIVE, PFS_BINARY, DumpFormatError, check_destination, copy_private, open_dump, stage_dump,
)
from ansible_collections.netbsd.pf.plugins.module_utils.lease import (
    LeaseError, arm_lease, end_lease, lease_view, release_lease, set_table_lock, unlock_and_release,
)
from ansible_collections.netbsd.pf.plugins.module_utils.native import NativeFormatError
from ansible_collections.netbsd.pf.plugins.module_utils.pfdev import PfDevice, locked, signals_unwind
from ansible_collections.netbsd.pf.plugins.module_utils.pfs_binary import BinaryFormatError, PfsBinaryWriter
from ansible_collections.netbsd.pf.plugins.module_utils.progress import reported_blocks, reported_slices
from ansible_collections.netbsd.pf.plugins.module_utils.pfs_text import PfsTextWriter, TextFormatError
from ansible_collections.netbsd.pf.plugins.module_utils.records import (
    RecordError, record_count, state_to_dict, swap_records,
)
from ansible_collections.netbsd.pf.plugins.module_utils.transforms import (
    TransformStats, state_filter_from, transform_blocks,
)
from ansible_collections.netbsd.pf.plugins.module_utils.views import summarize, table_occupancy

LOCK_MODES = ("none", "during", "hold")
# Errors that mean "this file is not a usable dump".
DUMP_ERRORS = (DumpFormatError, NativeFormatError, BinaryFormatError, TextFormatError, RecordError)


class OperationError(PfStateError):
    """An operation that cannot be done as asked; the message says why and what to change."""


def apply_transforms(blocks, transforms, stats):
    """Blocks after the filters and renames of ``transforms`` (argspec.transforms_from_params)."""
    return transform_blocks(blocks, state_filter=state_filter_from(transforms, OperationError),
                            rename=(transforms or {}).get("rename"), stats=stats)


# --- locking ---------------------------------------------------------------------

def lock_table(device_path, lease, lease_file, holder="netbsd.pf.states_lock"):
    """Arm (or take over) the lease, then lock the table; returns the lease view after locking."""
    token = _arm(lease_file, lease, device_path, holder)
    try:
        set_table_lock(device_path, True)
    except BaseException:
        release_lease(lease_file, token)
        raise
    return lease_view(lease_file)


def unlock_table(device_path, lease_file):
    """Unlock the table and release the lease; returns (lease view before, whether a held lease was released)."""
    before = lease_view(lease_file)
    try:
        released = unlock_and_release(lease_file, lambda: set_table_lock(device_path, False))
    except LeaseError as exc:
        set_table_lock(device_path, False)
        raise OperationError("the table is unlocked, but the lease could not be released (%s); its watchdog will "
                             "unlock again at its deadline, which is harmless" % exc)
    return before, released


def _arm(lease_file, lease, device_path, holder):
    try:
        return arm_lease(lease_file, lease, device_path, holder=holder)
    except LeaseError as exc:
        raise OperationError("cannot lock the table safely: %s" % exc)


class Snapshot:
    """States read from the kernel: ``block`` (a memoryview of the reply buffer), ``byte_order``, ``status``,
    and how the lock went."""

    def __init__(self, block, byte_order, status, lock_mode, lock_window_ms, lock_taken, lease_token):
        self.block = block
        self.byte_order = byte_order
        self.status = status
        self.lock_mode = lock_mode
        self.lock_window_ms = lock_window_ms
        self.lock_taken = lock_taken
        self.lease_token = lease_token


def take_snapshot(device_path, lock, lease, lease_file, holder="netbsd.pf.states_dump"):
    """Read the state table under the requested lock mode.

    ``during``: the lease is armed, the table locked for the DIOCGETSTATES
    copy only, then unlocked and the lease released.  ``hold``: the table
    stays locked under the lease when this returns.  A table already locked
    under a lease (states_lock) is left as it is by ``during``; ``hold`` takes
    the lease over with its own duration.  The reply buffer is sized and
    allocated before locking, and the records are not copied afterwards, so
    the lock covers the kernel's copy-out and nothing else.
    """
    if lock not in LOCK_MODES:
        raise OperationError("lock must be one of %s, not %r" % (", ".join(LOCK_MODES), lock))
    with PfDevice(device_path) as device:
        status = device.get_status()
        byte_order = device.abi.byte_order
        if lock == "none" or (lock == "during" and lease_view(lease_file).get("locked_by_lease")):
            return Snapshot(device.get_states(), byte_order, status, lock, None, False, None)
        token = _arm(lease_file, lease, device_path, holder)
        # The buffer is made after arming: the lease watchdog is a fork of this process, and
        # pages faulted in before it would be shared with it, then copied on write by the kernel.
        if lock == "during":
            try:
                buffer = device.states_buffer()
                started = time.perf_counter()
                with locked(device, unlock=lambda: _end_own_lease(device, lease_file, token)):
                    block = device.get_states(buffer)
                window = (time.perf_counter() - started) * 1000.0
            finally:
                release_lease(lease_file, token)
            return Snapshot(block, byte_order, status, lock, round(window, 3), True, None)
        try:
            buffer = device.states_buffer()
            device.set_lock(True)
            locked_at = time.time()
            block = device.get_states(buffer)
        except BaseException:
            _unlock_quietly(device, lease_file, token)
            raise
        snapshot = Snapshot(block, byte_order, status, lock, None, True, token)
        snapshot.locked_at = locked_at
        return snapshot


def _end_own_lease(device, lease_file, token):
    """Unlock and release unless the lease was taken over meanwhile: the new holder's lock must stay."""
    try:
        end_lease(lease_file, token, lambda: device.set_lock(False))
    except LeaseError:
        device.set_lock(False)      # a stuck lock is worse than a lease record left "held"


def _unlock_quietly(device, lease_file, token):
    """Undo a hold lock after a failure; the lease watchdog remains the fallback if this fails too."""
    try:
        _end_own_lease(device, lease_file, token)
    except Exception:   # pylint: disable=broad-except
        pass


def release_hold(device_path, lease_file, token):
    """Unlock a hold lock taken by take_snapshot (after a failed write)."""
    with PfDevice(device_path) as device:
        _unlock_quietly(device, lease_file, token)


# --- dump ------------------------------------------------------------------------

def capture_metadata(hostid, now=None, firewall=None):
    """What the native header records about the capture (host, release, machine, time; pf's hostid or the firewall)."""
    now = time.time() if now is None else now
    uname = os.uname()
    metadata = {
        "captured_at": now,
        "captured_at_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "hostname": socket.gethostname() or uname.nodename,
        "os": uname.sysname,
        "release": uname.release,
        "machine": uname.machine,
        "tool": "netbsd.pf.states_dump",
    }
    if hostid is not None:
        metadata["hostid"] = "%08x" % hostid
    if firewall:
        metadata["firewall"] = firewall
    return metadata


def native_content_digest(byte_order, compression, records_sha256):
    """Identity of a native dump's content: byte order, compression and the SHA-256 of the records.

    All three are in the header, so an existing file is judged without
    decompressing it; when and where it was captured does not count.
    """
    return hashlib.sha256(("native|%s|%s|%s" % (byte_order, compression, records_sha256)).encode("ascii")).hexdigest()


def content_digest(fmt, byte_order, compress, block):
    """Identity of a dump's content, the basis of ``changed``, computed without writing anything.

    pfs files hold nothing but the records, so their identity is the SHA-256 of
    the exact bytes that would be written (rendered here into a hash only:
    check mode).  A native file's is native_content_digest().
    """
    if fmt == NATIVE:
        return native_content_digest(byte_order, compress, hashlib.sha256(block).hexdigest())
    sink = _HashingSink()
    writer = PfsBinaryWriter(sink, byte_order, record_count(block)) if fmt == PFS_BINARY else PfsTextWriter(sink, byte_order)
    writer.write_block(block)
    if hasattr(writer, "close"):
        writer.close()
    return sink.digest.hexdigest()


class _HashingSink:
    """A write-only file object that only hashes what is written to it."""

    def __init__(self):
        self.digest = hashlib.sha256()

    def write(self, data):
        self.digest.update(data)
        return len(data)


def existing_content_digest(path, fmt):
    """content_digest() of the ``fmt`` dump already at ``path``, or None if there is none or it is not such a dump.

    A native file is judged by its header (the CRC-checked prelude, with the
    SHA-256 of its records), and its payload is checked against that header
    (streamed, nothing spooled): a file damaged behind an intact header is not
    "unchanged", it is rewritten.
    """
    if not os.path.isfile(path):
        return None
    try:
        if fmt != NATIVE:
            return file_sha256(path)[1]
        with open_dump(path, NATIVE) as reader:
            header = reader.header
            digest = native_content_digest(header["byte_order"], header["compression"], header["sha256"])
            for _block in reader.checked_blocks():
                pass
            return digest
    except DUMP_ERRORS + (OSError,):
        return None


def file_sha256(path):
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def backup_file(path, now=None):
    """Copy ``path`` to ``path.PID.YYYY-MM-DD@HH:MM:SS~`` (ansible's backup_local naming); returns the copy's path."""
    now = time.time() if now is None else now
    backup = "%s.%d.%s~" % (path, os.getpid(), time.strftime("%Y-%m-%d@%H:%M:%S", time.localtime(now)))
    try:
        copy_private(path, backup)
    except OSError as exc:      # a full disk, or something planted at the predictable name
        raise OperationError("cannot back up %s to %s: %s; nothing was written"
                             % (path, backup, os.strerror(exc.errno) if exc.errno else exc))
    return backup


def start_detached(argv):
    """Start ``argv`` in a session of its own with stdio on /dev/null, without waiting; returns its pid.

    The command keeps running after this process exits and does not hold the
    pipes of the Ansible connection, so the module can return at once.
    """
    try:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   close_fds=True, cwd="/", start_new_session=True)
    except OSError as exc:
        raise OperationError("run_after: cannot start %s: %s" % (argv[0], os.strerror(exc.errno) if exc.errno else exc))
    return process.pid


def dump_states(path, fmt=NATIVE, compress=True, transforms=None, lock="during", lease=300,
                lease_file="/var/run/netbsd_pf_lock.lease", backup=False, mode=0o600, check_mode=False,
                device_path="/dev/pf", run_after=None, now=None, progress=None, summary=True):
    """Dump the state table to ``path``; returns the result dict (see the states_dump module's RETURN).

    ``summary=False`` leaves out by_interface, by_protocol, by_address_family and
    expired_awaiting_purge (passes over the table that a caller which does not report
    them, the pfstate command, need not pay for).

    The file is replaced atomically and only when its content (format,
    options, records) differs from what is there; the native header's
    capture metadata does not count.  In check mode nothing is locked or
    written: the table is read and the result says what would happen.
    """
    fmt = canonical_format(fmt)
    compression = ("zlib" if compress else "none") if fmt == NATIVE else None
    if run_after and lock != "hold":
        raise OperationError("run_after needs lock=hold: the command is started while the table stays locked")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise OperationError("directory %s does not exist; create it first (for example with ansible.builtin.file)" % directory)
    if os.path.isdir(path):
        raise OperationError("%s is a directory; path must name the dump file" % path)
    check_destination(path)     # before the table is locked or read

    # A termination signal (a module's connection dropped: SIGHUP) unwinds: a hold lock is released and the
    # staged file removed, as on any failure, before the signal ends the process.
    with signals_unwind():
        snapshot = take_snapshot(device_path, "none" if check_mode else lock, lease, lease_file)
        try:
            result = _write_snapshot(snapshot, path, fmt, compression, transforms, backup, mode, check_mode, now,
                                     progress, summary)
            if snapshot.lock_mode == "hold":
                result["lock_window_ms"] = round((time.time() - snapshot.locked_at) * 1000.0, 3)
                result["lock"] = dict(lease_view(lease_file), mode="hold")
                if run_after:
                    result["run_after_pid"] = start_detached(run_after)
        except BaseException:
            if snapshot.lease_token is not None:
                release_hold(device_path, lease_file, snapshot.lease_token)
            raise
    if snapshot.lock_mode != "hold":
        result["lock"] = {"mode": lock if not check_mode else "none", "taken": snapshot.lock_taken}
        result["lock_window_ms"] = snapshot.lock_window_ms
    return result


def _write_snapshot(snapshot, path, fmt, compression, transforms, backup, mode, check_mode, now, progress, summary):
    byte_order = snapshot.byte_order
    stats = TransformStats()
    block = _one_block(apply_transforms([snapshot.block], transforms, stats))
    metadata = capture_metadata(snapshot.status["hostid"], now) if fmt == NATIVE else None
    stored = store_dump(path, fmt, block, byte_order, stats.kept, compression, metadata, backup=backup, mode=mode,
                        check_mode=check_mode, now=now, progress=progress)
    result = {
        "path": path, "format": fmt.replace("-", "_"), "byte_order": byte_order, "count": stats.kept,
        "filtered": stats.filtered, "renamed": stats.renamed, "read": stats.read,
    }
    if summary:
        brief = summarize([block], byte_order, brief=True)
        result.update((key, brief[key]) for key in ("by_interface", "by_protocol", "by_address_family"))
        # Expired states the purge has not reached yet: kept in the file, dropped as expired by a restore.
        result["expired_awaiting_purge"] = table_occupancy(block, byte_order, 0)["expired"]
    result.update(stored)
    return result


def _one_block(blocks):
    """The blocks as one block; a single block (the unfiltered table) is passed on without a copy."""
    blocks = list(blocks)
    return blocks[0] if len(blocks) == 1 else b"".join(blocks)


def store_dump(path, fmt, block, byte_order, count, compression, metadata=None, backup=False, mode=0o600,
               check_mode=False, now=None, progress=None):
    """Write ``block`` to ``path`` unless the file there already has the same content.

    Returns ``changed`` and ``content_sha256``, and unless in check mode the
    ``bytes`` and ``sha256`` of the file now at ``path``, ``backup_file`` if
    one was made and, for native, its ``header``.  The dump is rendered once: pfs files are written to a temp
    file (hashed while written) and compared with the old one, which stays
    when equal; a native file's identity comes from the records' SHA-256 and
    the old file's verified header, so an unchanged native dump is not compressed at all.
    """
    if fmt == NATIVE:
        records_sha256 = hashlib.sha256(block).hexdigest()
        digest = native_content_digest(byte_order, compression, records_sha256)
        changed = existing_content_digest(path, NATIVE) != digest
        outcome = {"changed": changed, "content_sha256": digest}
        if check_mode:
            return outcome
        if changed:
            staged = _stage(path, fmt, _written_blocks(block, progress), byte_order, count, metadata, compression, mode,
                            records_sha256)
    elif check_mode:
        try:
            digest = content_digest(fmt, byte_order, compression, block)
        except TextFormatError as exc:
            raise _unwritable(path, exc)
        return {"changed": existing_content_digest(path, fmt) != digest, "content_sha256": digest}
    else:
        staged = _stage(path, fmt, _written_blocks(block, progress), byte_order, count, metadata, compression, mode)
        changed = not staged.same_as_existing()
        outcome = {"changed": changed, "content_sha256": staged.sha256}
        if not changed:
            staged.discard()
            outcome.update(bytes=staged.size, sha256=staged.sha256)
            return outcome
    if not changed:
        outcome["bytes"], outcome["sha256"] = file_sha256(path)
    else:
        with staged:
            if backup and os.path.isfile(path):
                outcome["backup_file"] = backup_file(path, now)
            try:
                staged.commit()
            except OSError as exc:
                raise _write_error(path, exc)
        outcome.update(bytes=staged.size, sha256=staged.sha256)
    if fmt == NATIVE:
        with open_dump(path, NATIVE) as reader:
            outcome["header"] = reader.header
    return outcome


def _written_blocks(block, progress):
    """The one block to write, as slices that report progress when there is a ``progress``.

    Read-only from here on, which lets the writer's hash of it still run when a write returns.
    """
    block = memoryview(block).toreadonly()
    return [block] if progress is None else reported_slices(block, progress, "writing")


def _stage(path, fmt, blocks, byte_order, count, metadata, compression, mode, records_sha256=None):
    try:
        return stage_dump(path, fmt, blocks, byte_order, count=count, metadata=metadata, compress=compression,
                          mode=mode, records_sha256=records_sha256)
    except OSError as exc:
        raise _write_error(path, exc)
    except TextFormatError as exc:
        raise _unwritable(path, exc)


def _unwritable(path, exc):
    return OperationError("cannot write %s: %s; nothing was written" % (path, exc))


def _write_error(path, exc):
    return OperationError("cannot write %s: %s; the previous file (if any) is unchanged"
                          % (path, os.strerror(exc.errno) if exc.errno else exc))


# --- inspect and convert ---------------------------------------------------------

def _open(src, src_format, byte_order=None):
    if not os.path.isfile(src):
        raise OperationError("%s does not exist or is not a regular file" % src)
    try:
        return open_dump(src, canonical_format(src_format) if src_format else None, byte_order)
    except DUMP_ERRORS as exc:
        raise OperationError("%s: %s" % (src, exc))


def inspect_dump(src, src_format=None, text_byte_order=None, transforms=None):
    """Header, format, byte order, counts and summary of a dump file (after transforms, if any)."""
    with _open(src, src_format, text_byte_order) as reader:
        stats = TransformStats()
        try:
            summary = summarize(apply_transforms(reader.blocks(), transforms, stats),
                                reader.byte_order)
        except DUMP_ERRORS as exc:
            raise OperationError("%s: %s" % (src, exc))
        size, sha256 = file_sha256(src)
        return {
            "src": src, "src_format": reader.format.replace("-", "_"), "byte_order": reader.byte_order,
            "header": reader.header, "bytes": size, "sha256": sha256, "read": stats.read,
            "filtered": stats.filtered, "count": stats.kept, "summary": summary,
            "trailing_bytes": reader.trailing_bytes,
        }


def convert_dump(src, dest, fmt, src_format=None, text_byte_order=None, byte_order=None, compress=True,
                 transforms=None, mode=0o600, check_mode=False, now=None, progress=None):
    """Rewrite the dump ``src`` as ``dest`` in ``fmt``; no device is touched.

    ``byte_order`` is the byte order of the output records: "little", "big",
    "host" (the running machine's) or None, which keeps the input's, so the
    output is byte-identical whatever machine runs the conversion (native
    headers aside, which record the conversion time).  The records stream from
    ``src`` into a staged file beside ``dest`` one block at a time (memory: one
    block, not the table); the staged file replaces ``dest`` only once the whole
    source has been read and checked, so a damaged source leaves ``dest`` as it was.
    """
    fmt = canonical_format(fmt)
    compression = ("zlib" if compress else "none") if fmt == NATIVE else None
    directory = os.path.dirname(os.path.abspath(dest))
    if not check_mode and not os.path.isdir(directory):
        raise OperationError("directory %s does not exist; create it first" % directory)
    with _open(src, src_format, text_byte_order) as reader:
        source_order = reader.byte_order
        target_order = {"host": sys.byteorder, None: source_order}.get(byte_order, byte_order)
        if target_order not in ("little", "big"):
            raise OperationError("byte_order must be little, big or host, not %r" % byte_order)
        metadata = None
        if fmt == NATIVE:
            metadata = dict(((reader.header or {}).get("metadata") or {}))
            metadata["converted_from"] = {"format": reader.format, "byte_order": source_order}
            metadata["converted_at"] = time.time() if now is None else now
        stats = TransformStats()
        blocks = _converted_blocks(reader, src, transforms, stats, target_order, progress)
        if check_mode:
            # The identity of what would be written, without writing: rendered from the records in memory.
            stored = store_dump(dest, fmt, b"".join(blocks), target_order, stats.kept, compression, metadata,
                                mode=mode, check_mode=True)
        else:
            # Known in advance, the count and the records' SHA-256 let the writers write in order, once.
            unfiltered = not (transforms or {}).get("filters")
            count = reader.count if unfiltered else None
            records_sha256 = None
            if reader.format == NATIVE and unfiltered and not (transforms or {}).get("rename") \
                    and target_order == source_order:
                records_sha256 = reader.header["sha256"]        # checked while streamed
            stored = _store_streamed(dest, fmt, blocks, target_order, count, compression, metadata, mode,
                                     records_sha256)
        source_format = reader.format
    result = {
        "src": src, "dest": dest, "src_format": source_format.replace("-", "_"), "format": fmt.replace("-", "_"),
        "src_byte_order": source_order, "byte_order": target_order, "read": stats.read, "filtered": stats.filtered,
        "renamed": stats.renamed, "count": stats.kept, "changed": stored["changed"],
    }
    if not check_mode:
        result.update(bytes=stored["bytes"], sha256=stored["sha256"])
    return result


def _converted_blocks(reader, src, transforms, stats, target_order, progress):
    """The source's blocks, transformed and in ``target_order``; a damaged source raises OperationError naming it.

    Each block is written as soon as it is read, so ``progress`` hears of one phase, "writing".
    """
    blocks = reader.checked_blocks()
    if progress is not None:
        blocks = reported_blocks(blocks, progress, "writing", reader.count)
    try:
        for block in apply_transforms(blocks, transforms, stats):
            yield swap_records(block, reader.byte_order, target_order)
    except DUMP_ERRORS as exc:
        raise OperationError("%s: %s" % (src, exc))


def _store_streamed(path, fmt, blocks, byte_order, count, compression, metadata, mode, records_sha256):
    """Stage ``blocks`` beside ``path`` and put the file in place unless ``path`` already has the same content."""
    with _stage(path, fmt, blocks, byte_order, count, metadata, compression, mode, records_sha256) as staged:
        if fmt == NATIVE:
            changed = existing_content_digest(path, NATIVE) != native_content_digest(
                byte_order, compression, staged.records_sha256)
        else:
            changed = not staged.same_as_existing()
        if changed:
            try:
                staged.commit()
            except OSError as exc:
                raise _write_error(path, exc)
        elif fmt == NATIVE:
            # Same records, but the staged header differs (conversion time): report the file left in place.
            size, sha256 = file_sha256(path)
            return {"changed": False, "bytes": size, "sha256": sha256}
        return {"changed": changed, "bytes": staged.size, "sha256": staged.sha256}


# --- info ------------------------------------------------------------------------

def table_info(device_path="/dev/pf", lease_file=None, timeouts=False, states=False, transforms=None, limit=None):
    """Status, limits, lock view and a summary of the live table (read-only descriptor only)."""
    with PfDevice(device_path) as device:
        status = device.get_status()
        state_limit = device.get_limit()
        timeout_values = device.get_timeouts_by_name() if timeouts else None
        block = device.get_states()
        byte_order = device.abi.byte_order
    stats = TransformStats()
    selected = _one_block(apply_transforms([block], transforms, stats))
    result = {
        "status": {
            "running": status["running"], "states": status["states"], "src_nodes": status["src_nodes"],
            "since": status["since"], "hostid": "%08x" % status["hostid"], "debug": status["debug"],
            "state_locked_drops": status["state_locked_drops"], "counters": status["counters"],
            "state_counters": status["state_counters"], "limit_counters": status["limit_counters"],
        },
        "state_limit": state_limit,
        "byte_order": byte_order,
        "summary": summarize([selected], byte_order),
        "filtered": stats.filtered,
    }
    result["summary"]["total_in_table"] = stats.read
    # Stock NetBSD draws a new hostid at every boot: restored states keep the creator id they were dumped with.
    result["summary"]["created_by_other_hostids"] = sum(
        n for creatorid, n in result["summary"]["by_creatorid"].items() if creatorid != result["status"]["hostid"])
    occupancy = table_occupancy(block, byte_order, status["states"])
    result["awaiting_purge"] = {key: occupancy[key] for key in ("unlinked", "expired", "awaiting_purge")}
    if lease_file:
        result["lock"] = lease_view(lease_file)
    if timeout_values is not None:
        result["timeouts"] = timeout_values
    if states:
        count = record_count(selected)
        shown = count if limit is None else min(limit, count)
        result["states"] = [state_to_dict(selected[i * RECORD_SIZE:(i + 1) * RECORD_SIZE], byte_order) for i in range(shown)]
        result["states_truncated"] = shown < count
    return result
