# -*- coding: utf-8 -*-
# Copyright: netbsd.pf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Format detection, a common reader interface and the atomic dump writer."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os
import re
import sys
import tempfile

from ansible_collections.netbsd.pf.plugins.module_utils.abi import RECORD_SIZE
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


class DumpFormatError(ValueError):
    """A dump file whose format cannot be determined or that cannot be used as asked."""


def detect_format(path):
    """NATIVE, PFS_BINARY or PFS_TEXT for the file at `path`; DumpFormatError otherwise."""
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        head = handle.read(4096)
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
        self.format = fmt or detect_format(path)
        if self.format not in FORMATS:
            raise DumpFormatError("unknown dump format %r (one of %s)" % (self.format, ", ".join(FORMATS)))
        self.size = os.path.getsize(path)
        self._file = open(path, "rb")
        self.header = None
        self.trailing_bytes = 0
        try:
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

    def _text_blocks(self):
        self._reader.count = 0
        for block in self._reader.blocks():
            yield block
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


def write_dump(path, fmt, blocks, byte_order, count=None, metadata=None, compress="zlib", mode=0o600):
    """Write `blocks` to `path` atomically; returns (bytes written, SHA-256 hex of the file, records).

    The temp file is created in the target directory with O_EXCL and `mode`
    from the start, flushed and fsynced, renamed over `path`, and the directory
    fsynced.  On any error the temp file is removed and `path` is untouched.
    """
    if fmt not in FORMATS:
        raise DumpFormatError("unknown dump format %r (one of %s)" % (fmt, ", ".join(FORMATS)))
    directory = os.path.dirname(os.path.abspath(path))
    fd, temp_path = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w+b") as handle:
            fd = None
            if fmt == NATIVE:
                writer = NativeWriter(handle, byte_order, metadata, compression=compress or "none")
            elif fmt == PFS_BINARY:
                writer = PfsBinaryWriter(handle, byte_order, count)
            else:
                writer = PfsTextWriter(handle, byte_order)
            for block in blocks:
                writer.write_block(block)
            if hasattr(writer, "close"):
                writer.close()
            if count is not None and writer.count != count:
                raise DumpFormatError("expected %d states, got %d" % (count, writer.count))
            handle.flush()
            os.fsync(handle.fileno())
            size, digest = _file_digest(handle)
        os.rename(temp_path, path)
        temp_path = None
        _fsync_directory(directory)
        return size, digest, writer.count
    finally:
        if fd is not None:
            os.close(fd)
        if temp_path is not None and os.path.exists(temp_path):
            os.unlink(temp_path)


def _fsync_directory(directory):
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
