# -*- coding: utf-8 -*-
# Copyright: netbsd.pf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Format detection, a common reader interface and the atomic dump writer."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import binascii
import errno
import fcntl
import hashlib
import os
import re
import stat
import sys
import threading

from ansible_collections.netbsd.pf.plugins.module_utils.abi import RECORD_SIZE
from ansible_collections.netbsd.pf.plugins.module_utils.errors import PfStateError
from ansible_collections.netbsd.pf.plugins.module_utils.native import MAGIC, NativeReader, NativeWriter
from ansible_collections.netbsd.pf.plugins.module_utils.pfs_binary import (
    BinaryFormatError, PfsBinaryReader, PfsBinaryWriter, infer_layout,
)
from ansible_collections.netbsd.pf.plugins.module_utils.pfs_text import PfsTextReader, PfsTextWriter

NATIVE = "native"
PFS_BINARY = "pfs-binary"
PFS_TEXT = "pfs-text"
FORMATS = (NATIVE, PFS_BINARY, PFS_TEXT)
_TEXT_START = re.compile(br"\s*state[\s]")


# Staged files are named ".NAME.pfstate-PID-RANDOM.tmp": the pid tells a later
# writer whether the one that made the file is still running.
_STAGED_NAME = re.compile(r"\A\..+\.pfstate-([1-9][0-9]{0,9})-[0-9a-f]{8}\.tmp\Z")
_PRIVATE_CREATE = os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


class DumpFormatError(PfStateError, ValueError):
    """A dump file whose format cannot be determined or that cannot be used as asked."""

    message_lacks_file = True


class DestinationError(PfStateError):
    """Something at a dump's destination that a dump must not replace (a device, a FIFO, a socket)."""


def check_destination(path):
    """Refuse ``path`` when a device, FIFO, socket or directory is there: the staged file's rename would replace it.

    A regular file is replaced (atomically) and a symbolic link is replaced
    itself, never followed; as root, ``path: /dev/null`` would otherwise
    put a dump in place of the device node.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISREG(mode) or stat.S_ISLNK(mode):
        return
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")
    raise DestinationError("%s is %s, not a regular file: refusing to replace it with a dump; name a file to write"
                           % (path, kind))


def open_regular(path):
    """``path`` opened for binary reading, refused unless it is a regular file.

    Opened non-blocking (a FIFO would block the open itself) and judged by
    fstat on the descriptor, so nothing can swap the file in between.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")
            raise DumpFormatError("%s is %s, not a regular file: refusing to read it as a dump" % (path, kind))
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def create_private(path):
    """A new file at ``path`` (never an existing one, never through a symlink), mode 0600 from its first byte."""
    return os.fdopen(os.open(path, os.O_WRONLY | _PRIVATE_CREATE, 0o600), "wb")


def copy_private(src, dest):
    """Copy ``src`` to the new file ``dest``: 0600 while written, then the mode and times of ``src``."""
    with open_regular(src) as source:
        info = os.fstat(source.fileno())
        target = create_private(dest)       # fails on anything already there, which stays untouched
        try:
            with target:
                for chunk in iter(lambda: source.read(1 << 20), b""):
                    target.write(chunk)
                target.flush()
                os.fchmod(target.fileno(), stat.S_IMODE(info.st_mode))
            os.utime(dest, ns=(info.st_atime_ns, info.st_mtime_ns))
        except BaseException:
            os.unlink(dest)
            raise


def _writer_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):
        return True         # another user's process (EPERM), or a pid we cannot judge: keep the file
    return True


def stale_staged_files(directory):
    """Staged files in ``directory`` whose writer is no longer running: dicts with path, pid, bytes, mtime."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    stale = []
    for name in sorted(names):
        match = _STAGED_NAME.match(name)
        if not match or _writer_alive(int(match.group(1))):
            continue
        path = os.path.join(directory, name)
        try:
            info = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISREG(info.st_mode):
            stale.append({"path": path, "pid": int(match.group(1)), "bytes": info.st_size, "mtime": info.st_mtime})
    return stale


def remove_stale_staged_files(directory):
    """Remove the staged files of dead writers from ``directory``."""
    for entry in stale_staged_files(directory):
        try:
            os.unlink(entry["path"])
        except OSError:
            pass            # not ours to remove (permissions) or already gone: states_info still reports it


def detect_format(path):
    """NATIVE, PFS_BINARY or PFS_TEXT for the file at `path`; DumpFormatError otherwise."""
    with open_regular(path) as handle:
        return _detect(handle, os.fstat(handle.fileno()).st_size, path)


def _detect(handle, size, path):
    head = handle.read(4096)
    handle.seek(0)
    if head.startswith(MAGIC):
        return NATIVE
    if size == 0:
        return PFS_BINARY       # what pfs -b writes for an empty table
    if _TEXT_START.match(head) or head.strip() == b"":
        return PFS_TEXT
    try:
        infer_layout(size, head)
        return PFS_BINARY
    except BinaryFormatError as exc:
        reason = str(exc)
    raise DumpFormatError(
        "%s: unknown dump format (%d bytes, starts with %r): not a .pfstate file (no magic), not pfs text "
        "(no leading 'state' keyword), not a pfs binary dump (%s)" % (path, size, head[:16], reason))


class DumpReader:
    """A dump opened for reading: .format, .byte_order, .count (None for text until read),
    .header (dict for native, else None), .blocks(), .verify(), and for pfs binary .trailing_bytes."""

    def __init__(self, path, fmt=None, byte_order=None, block_records=4096):
        self.path = path
        if fmt is not None and fmt not in FORMATS:
            raise DumpFormatError("unknown dump format %r (one of %s)" % (fmt, ", ".join(FORMATS)))
        self._file = open_regular(path)
        self.header = None
        self.trailing_bytes = 0
        try:
            self.size = os.fstat(self._file.fileno()).st_size
            self.format = fmt or _detect(self._file, self.size, path)
            if self.format == NATIVE:
                self._reader = NativeReader(self._file, self.size, block_records)
                if byte_order and byte_order != self._reader.byte_order:
                    raise DumpFormatError("%s holds %s-endian records, not %s" % (path, self._reader.byte_order, byte_order))
                self.header = self._reader.header
                self.count = self._reader.count
            elif self.format == PFS_BINARY:
                self._reader = PfsBinaryReader(self._file, self.size, byte_order, sys.byteorder, block_records)
                self.count = self._reader.count
                self.trailing_bytes = self._reader.trailing_bytes
            else:
                self._reader = PfsTextReader(self._file, byte_order or sys.byteorder, block_records)
                self.count = None
        except Exception:
            self._file.close()
            raise
        self.byte_order = self._reader.byte_order

    def blocks(self, verify=True):
        """Record blocks; for native dumps `verify` checks the whole file first."""
        if self.format == NATIVE:
            return self._reader.blocks(verify=verify)
        self._file.seek(0)
        if self.format == PFS_BINARY:
            self._file.read(4 if self.size else 0)
            return self._reader.blocks()
        return self._text_blocks()

    def checked_blocks(self):
        """Record blocks in one pass, each file checked as it is read: a damaged native file raises
        after its last block, so the consumer must be able to drop what it made (see stage_dump)."""
        if self.format == NATIVE:
            return self._reader.checked_blocks()
        return self.blocks()

    def _text_blocks(self):
        self._reader.count = 0
        yield from self._reader.blocks()
        self.count = self._reader.count

    def __iter__(self):
        return self.blocks()

    def verify(self):
        """Read the whole dump and check it (checksums for native, syntax for text); returns the count."""
        if self.format == NATIVE:
            return self._reader.verify()
        count = 0
        for block in self.blocks():
            count += len(block) // RECORD_SIZE
        self.count = count
        return count

    def close(self):
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def open_dump(path, fmt=None, byte_order=None, block_records=4096):
    return DumpReader(path, fmt, byte_order, block_records)


def _file_digest(fileobj):
    fileobj.seek(0)
    digest = hashlib.sha256()
    size = 0
    for chunk in iter(lambda: fileobj.read(1 << 20), b""):
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


# Writes of at least this many bytes are hashed by a second thread while they are written:
# hashlib and file writes both release the GIL, so a big dump costs one pass, not two.
_PARALLEL_HASH_BYTES = 4 << 20
# Blocks are handed to the text formatter and to zlib in slices of this many records, so
# neither holds a whole table's worth of output at once.
_SLICE_RECORDS = {PFS_TEXT: 4096, NATIVE: 65536}


class _HashingFile:
    """The temp file of a dump: what is written goes to the file and into SHA-256, in order.

    A writer that seeks back (native with zlib rewrites its prelude once the payload
    length is known) makes the running digest void; the file is then hashed from disk.
    The hash of a big immutable buffer may still run when write() returns (stage_written
    fsyncs meanwhile); size_and_sha256() waits for it.
    """

    def __init__(self, handle):
        self.handle = handle
        self.digest = hashlib.sha256()
        self.rewritten = False
        self._hasher = None         # the thread still hashing the last big write, if any

    def rewrites_start(self):
        """The writer will write the start of the file again: hash the file once, from disk, when done."""
        self.digest = None
        self.rewritten = True

    def _hashed(self):
        """Wait until the digest holds everything written so far."""
        if self._hasher is not None:
            self._hasher.join()
            self._hasher = None

    def write(self, data):
        view = memoryview(data).cast("B")
        self._hashed()
        if self.digest is None:
            return self.handle.write(view)
        if len(view) < _PARALLEL_HASH_BYTES:
            self.digest.update(view)
            return self.handle.write(view)
        self._hasher = threading.Thread(target=self.digest.update, args=(view,))
        self._hasher.start()
        try:
            written = self.handle.write(view)
        except BaseException:
            self._hashed()
            raise
        if not view.readonly:
            self._hashed()          # its owner may change the buffer once write() returns
        return written

    def tell(self):
        return self.handle.tell()

    def seek(self, offset, whence=os.SEEK_SET):
        if offset < self.handle.tell():
            self.rewritten = True
        return self.handle.seek(offset, whence)

    def size_and_sha256(self):
        self._hashed()
        if self.rewritten:
            return _file_digest(self.handle)
        return self.handle.tell(), self.digest.hexdigest()


class StagedDump:
    """A dump written and hashed in a temp file beside ``path``, not yet in place.

    ``size``, ``sha256`` (of the file), ``count`` and, for native, ``records_sha256``
    describe it.  commit() fsyncs it and renames it over ``path``; discard() removes
    it.  Used as a context manager it is discarded unless committed.  Every step goes
    through the directory opened when the dump began (``directory_fd``), so a parent
    symlink re-pointed meanwhile can neither strand the temp file nor redirect the rename.
    """

    def __init__(self, path, directory_fd, temp_name, handle, mode):
        self.path = path
        self._name = os.path.basename(path)
        self._directory_fd = directory_fd
        self._temp_name = temp_name
        self._handle = handle
        self.mode = mode
        self.size = self.sha256 = self.count = self.records_sha256 = None

    @property
    def temp_path(self):
        """Where the temp file is (as ``path``'s directory names it now), None once committed or discarded."""
        return os.path.join(os.path.dirname(os.path.abspath(self.path)), self._temp_name) if self._temp_name else None

    def _open_in_directory(self, name):
        return os.fdopen(os.open(name, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0), dir_fd=self._directory_fd), "rb")

    def same_as_existing(self):
        """True if ``path`` already holds exactly these bytes (compared in 1 MiB steps, stopping at the first difference)."""
        try:
            existing = os.stat(self._name, dir_fd=self._directory_fd)
            if not stat.S_ISREG(existing.st_mode) or existing.st_size != self.size:
                return False
            self._handle.flush()
            with self._open_in_directory(self._name) as old, self._open_in_directory(self._temp_name) as new:
                for chunk in iter(lambda: new.read(1 << 20), b""):
                    if old.read(len(chunk)) != chunk:
                        return False
            return True
        except OSError:
            return False

    def commit(self):
        """Give the file its mode, fsync, rename over ``path``, fsync the directory; on failure the temp file is removed."""
        try:
            self._handle.flush()
            os.fchmod(self._handle.fileno(), self.mode)
            os.fsync(self._handle.fileno())
            self._handle.close()
            os.rename(self._temp_name, self._name, src_dir_fd=self._directory_fd, dst_dir_fd=self._directory_fd)
            self._temp_name = None
            os.fsync(self._directory_fd)
        finally:
            self.discard()

    def discard(self):
        if not self._handle.closed:
            self._handle.close()
        if self._temp_name is not None:
            try:
                os.unlink(self._temp_name, dir_fd=self._directory_fd)
            except FileNotFoundError:
                pass
            self._temp_name = None
        if self._directory_fd is not None:
            os.close(self._directory_fd)
            self._directory_fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.discard()


def _create_staged(directory_fd, name):
    """A new staged file beside ``name`` in the directory ``directory_fd``: (binary read-write handle, its name)."""
    for _attempt in range(100):
        temp_name = ".%s.pfstate-%d-%s.tmp" % (name, os.getpid(), binascii.hexlify(os.urandom(4)).decode("ascii"))
        try:
            fd = os.open(temp_name, os.O_RDWR | _PRIVATE_CREATE, 0o600, dir_fd=directory_fd)
        except OSError as exc:
            if exc.errno == errno.EEXIST:
                continue
            raise
        return os.fdopen(fd, "w+b"), temp_name
    raise OSError(errno.EEXIST, "no unused staged file name", name)


def _slices(blocks, records):
    """The blocks cut into zero-copy slices of at most ``records`` records."""
    step = records * RECORD_SIZE
    for block in blocks:
        if len(block) <= step:
            yield block
            continue
        view = memoryview(block).cast("B")
        for start in range(0, len(view), step):
            yield view[start:start + step]


def stage_dump(path, fmt, blocks, byte_order, count=None, metadata=None, compress="zlib", mode=0o600,
               records_sha256=None):
    """Write ``blocks`` to a temp file beside ``path`` and return it as a StagedDump (not yet in place).

    Staged as ``stage_written`` stages.  For native, ``count`` and
    ``records_sha256`` (the SHA-256 of the records, if the caller already has
    it) spare a hashing pass over the records.
    """
    if fmt not in FORMATS:
        raise DumpFormatError("unknown dump format %r (one of %s)" % (fmt, ", ".join(FORMATS)))

    def write(sink):
        if fmt == NATIVE:
            writer = NativeWriter(sink, byte_order, metadata, compression=compress or "none", count=count,
                                  records_sha256=records_sha256)
        elif fmt == PFS_BINARY:
            writer = PfsBinaryWriter(sink, byte_order, count)
        else:
            writer = PfsTextWriter(sink, byte_order)
        if getattr(writer, "rewrites_start", False):
            sink.rewrites_start()
        slice_records = _SLICE_RECORDS.get(fmt) if fmt != NATIVE or compress == "zlib" else None
        for block in (_slices(blocks, slice_records) if slice_records else blocks):
            writer.write_block(block)
        if hasattr(writer, "close"):
            writer.close()
        if count is not None and writer.count != count:
            raise DumpFormatError("expected %d states, got %d" % (count, writer.count))
        return writer

    staged, writer = stage_written(path, write, mode)
    staged.count = writer.count
    staged.records_sha256 = getattr(writer, "records_sha256", None)
    return staged


def stage_written(path, write, mode=0o600):
    """Stage what ``write(sink)`` writes beside ``path``; returns (StagedDump, what ``write`` returned).

    ``sink`` hashes what passes through it (SHA-256 and size of the file).  The
    temp file is created with O_EXCL|O_NOFOLLOW, mode 0600, and gets ``mode``
    only when committed; its name carries this process's pid, and the staged
    files that dead writers left in the directory are removed first.
    """
    check_destination(path)
    directory = os.path.dirname(os.path.abspath(path))
    remove_stale_staged_files(directory)
    directory_fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        handle, temp_name = _create_staged(directory_fd, os.path.basename(path))
    except BaseException:
        os.close(directory_fd)
        raise
    staged = StagedDump(path, directory_fd, temp_name, handle, mode)
    try:
        sink = _HashingFile(handle)
        written = write(sink)
        handle.flush()
        # To disk while the last big write is still being hashed: the two overlap on two cores.
        os.fsync(handle.fileno())
        staged.size, staged.sha256 = sink.size_and_sha256()
    except BaseException:
        staged.discard()
        raise
    return staged, written


def write_dump(path, fmt, blocks, byte_order, count=None, metadata=None, compress="zlib", mode=0o600):
    """Write `blocks` to `path` atomically; returns (bytes written, SHA-256 hex of the file, records).

    The temp file is created in the target directory with O_EXCL and `mode`
    from the start, hashed while written, fsynced, renamed over `path`, and the
    directory fsynced.  On any error the temp file is removed and `path` is untouched.
    """
    with stage_dump(path, fmt, blocks, byte_order, count, metadata, compress, mode) as staged:
        staged.commit()
        return staged.size, staged.sha256, staged.count
