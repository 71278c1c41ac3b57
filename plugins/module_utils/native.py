# -*- coding: utf-8 -*-
# Copyright: netbsd.pf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collection's own dump format, `.pfstate` (version 1); byte layout in docs/formats.md.

A 72-byte big-endian prelude (magic, version, record byte order, compression,
record size, count, payload length, SHA-256 of the records, metadata length,
CRC-32 of prelude and metadata), JSON metadata, then the records, raw or as
one zlib stream.  Nothing may follow.  Readers refuse unknown versions and
verify everything before handing out a record when asked to.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json
import math
import re
import struct
import tempfile
import zlib

from ansible_collections.netbsd.pf.plugins.module_utils.abi import RECORD_SIZE
from ansible_collections.netbsd.pf.plugins.module_utils.errors import PfStateError
from ansible_collections.netbsd.pf.plugins.module_utils.records import record_count

MAGIC = b"\x89PFSTAT\n"
FORMAT_VERSION = 1
# Version 2 is the NPF kind (npf_native.py): one packed NPF snapshot instead of pf records.
NPF_FORMAT_VERSION = 2
PRELUDE = struct.Struct(">8sHBBHHQQ32sII")   # 72 bytes
PRELUDE_SIZE = PRELUDE.size
BYTE_ORDER_CODES = {"little": 1, "big": 2}
COMPRESSION_CODES = {"none": 0, "zlib": 1}
DEFAULT_COMPRESSION_LEVEL = 1       # measured: see docs/formats.md
MAX_METADATA = 1 << 20
READ_SIZE = 1 << 20
# No NetBSD table holds more states than this (the state limit is a u_int, but
# the kernel's memory runs out long before): a header announcing more is refused.
MAX_RECORDS = 10000000
# Inflated size / compressed size: deflate cannot exceed 1032; the most
# compressible table measured (records that differ only by their id) reaches 87.
# A header whose count needs more than this from its payload is refused before
# anything is decompressed.
MAX_INFLATION = 256
# Nesting of the metadata JSON (the collection writes 2 levels).
MAX_METADATA_DEPTH = 16
# Capture times must fall between 1970 and 9999 (what ISO 8601 years and gmtime carry).
MAX_EPOCH_SECONDS = 253402300799


class NativeFormatError(PfStateError, ValueError):
    """A .pfstate file that is damaged, truncated or of an unknown version."""

    message_lacks_file = True


def _code_name(codes, code, what):
    for name, value in codes.items():
        if value == code:
            return name
    raise NativeFormatError("unknown %s code %d in .pfstate header" % (what, code))


class NativeWriter:
    """Streams blocks into a seekable binary file object; call close() to seal the header.

    The prelude holds the count, payload length and SHA-256 of the records, so it
    is normally written twice: a placeholder, then the real one at close().  A
    caller that knows ``count`` and ``records_sha256`` in advance (it has the
    records in memory) vouches for them: the records are not hashed again, and
    without compression the first prelude is final and the file is written
    strictly in order.
    """

    def __init__(self, fileobj, byte_order, metadata=None, compression="zlib", level=DEFAULT_COMPRESSION_LEVEL,
                 count=None, records_sha256=None):
        if compression not in COMPRESSION_CODES:
            raise ValueError("compression must be one of %s" % ", ".join(COMPRESSION_CODES))
        self.fileobj = fileobj
        self.byte_order = byte_order
        self.compression = compression
        self.metadata = dict(metadata or {})
        if compression == "zlib":
            self.metadata["compression_level"] = level
        self._metadata_bytes = json.dumps(self.metadata, sort_keys=True, separators=(",", ":")).encode("utf-8")
        if len(self._metadata_bytes) > MAX_METADATA:
            raise ValueError("metadata larger than %d bytes" % MAX_METADATA)
        self._compressor = zlib.compressobj(level) if compression == "zlib" else None
        self._declared_count = count
        self._declared_sha256 = bytes.fromhex(records_sha256) if records_sha256 else None
        self._digest = None if self._declared_sha256 else hashlib.sha256()
        self._final_prelude = self._declared_sha256 is not None and count is not None and compression == "none"
        self.rewrites_start = not self._final_prelude
        self.count = 0
        self.payload_length = 0
        self._start = fileobj.tell()
        fileobj.write(self._prelude(count, count * RECORD_SIZE) if self._final_prelude else self._prelude(0, 0))
        fileobj.write(self._metadata_bytes)

    @property
    def records_sha256(self):
        """Hex SHA-256 of the records (after close())."""
        return (self._declared_sha256 or self._digest.digest()).hex()

    def _prelude(self, count, payload_length):
        head = PRELUDE.pack(MAGIC, FORMAT_VERSION, BYTE_ORDER_CODES[self.byte_order],
                            COMPRESSION_CODES[self.compression], RECORD_SIZE, 0, count,
                            payload_length, self._declared_sha256 or self._digest.digest(),
                            len(self._metadata_bytes), 0)
        crc = zlib.crc32(head[:-4] + self._metadata_bytes) & 0xffffffff
        return head[:-4] + struct.pack(">I", crc)

    def _emit(self, data):
        if data:
            self.fileobj.write(data)
            self.payload_length += len(data)

    def write_block(self, block):
        self.count += record_count(block)
        if self._digest is not None:
            self._digest.update(block)
        self._emit(self._compressor.compress(block) if self._compressor else block)

    def close(self):
        if self._compressor:
            self._emit(self._compressor.flush())
            self._compressor = None
        if self._declared_count is not None and self.count != self._declared_count:
            raise ValueError("declared %d records but %d were written" % (self._declared_count, self.count))
        if self._final_prelude:
            return
        end = self.fileobj.tell()
        self.fileobj.seek(self._start)
        self.fileobj.write(self._prelude(self.count, self.payload_length))
        self.fileobj.seek(end)


_ISO_8601 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2})(?::([0-9]{2})(\.[0-9]{1,9})?)?(Z|[+-][0-9]{2}:?[0-9]{2})\Z")
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")
# Keys the collection writes, with what their values must be: anything else in
# the free-form metadata is kept but only bounded (size, depth, no NaN).
_STRING_KEYS = ("captured_at_utc", "hostname", "os", "release", "machine", "hostid", "tool", "source_host",
                "netbsd_release")
_TIME_KEYS = ("captured_at", "converted_at")


def iso8601_seconds(text):
    """Seconds since the epoch of an ISO 8601 date-time with an offset (Z or +HH:MM); ValueError (saying why) otherwise.

    Every field is range-checked (2024-02-30 or 25:61 are refused, not wrapped round).
    """
    import calendar     # pylint: disable=import-outside-toplevel  # only for dates given as text: not at every start-up
    match = _ISO_8601.match(text) if isinstance(text, str) else None
    if not match:
        raise ValueError("not an ISO 8601 date-time with an offset, such as 2024-05-01T12:30:00Z")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    year, month, day, hour, minute, second = (int(value) for value in (year, month, day, hour, minute, second or 0))
    if not 1 <= month <= 12 or not 1 <= day <= calendar.monthrange(max(year, 1), month)[1] or year < 1:
        raise ValueError("not a date: no day %02d in %04d-%02d" % (day, year, month))
    if hour > 23 or minute > 59 or second > 60:
        raise ValueError("not a time of day (hours 0-23, minutes 0-59, seconds 0-60)")
    seconds = calendar.timegm((year, month, day, hour, minute, min(second, 59), 0, 0, 0)) + float(fraction or 0)
    if zone != "Z":
        digits = zone[1:].replace(":", "")
        offset_hours, offset_minutes = int(digits[:2]), int(digits[2:])
        if offset_hours > 23 or offset_minutes > 59:
            raise ValueError("not a valid UTC offset")
        seconds -= (-1 if zone[0] == "-" else 1) * (offset_hours * 3600 + offset_minutes * 60)
    return seconds


def _json_depth(data):
    """Deepest nesting of arrays and objects in JSON bytes, counted without recursion."""
    depth = deepest = 0
    for char in _NOT_BRACKET.sub(b"", _JSON_STRING.sub(b"", data)):
        depth += 1 if char in b"[{" else -1
        if depth > deepest:
            deepest = depth
            if deepest > MAX_METADATA_DEPTH:
                break
    return deepest


def _refuse_constant(name):
    raise ValueError("%s is not a number JSON allows" % name)


def _finite_float(text):
    value = float(text)
    if math.isinf(value):
        raise ValueError("%s is too large for a number" % text[:40])
    return value


def _check_time(key, value):
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise NativeFormatError("metadata %s must be seconds since the epoch or an ISO 8601 date-time, not %s"
                                % (key, type(value).__name__))
    if isinstance(value, str):
        try:
            value = iso8601_seconds(value)
        except ValueError as exc:
            raise NativeFormatError("metadata %s %r: %s" % (key, value, exc))
    if not 0 <= value <= MAX_EPOCH_SECONDS:
        raise NativeFormatError("metadata %s %r is outside the years 1970-9999" % (key, value))


def parse_metadata(metadata_bytes):
    """The metadata object of a .pfstate header, checked against the schema in docs/formats.md."""
    if _json_depth(metadata_bytes) > MAX_METADATA_DEPTH:
        raise NativeFormatError(".pfstate metadata is nested deeper than %d levels" % MAX_METADATA_DEPTH)
    try:
        metadata = json.loads(metadata_bytes.decode("utf-8"), parse_constant=_refuse_constant,
                              parse_float=_finite_float)
    except RecursionError:
        raise NativeFormatError(".pfstate metadata is nested too deeply")
    except ValueError as exc:
        raise NativeFormatError(".pfstate metadata is not valid JSON: %s" % exc)
    if not isinstance(metadata, dict):
        raise NativeFormatError(".pfstate metadata must be a JSON object, not %s" % type(metadata).__name__)
    for key in _TIME_KEYS:
        if key in metadata:
            _check_time(key, metadata[key])
    for key in _STRING_KEYS:
        if key in metadata and not isinstance(metadata[key], str):
            raise NativeFormatError("metadata %s must be a string, not %s" % (key, type(metadata[key]).__name__))
    if "captured_at_utc" in metadata:
        _check_time("captured_at_utc", metadata["captured_at_utc"])
    level = metadata.get("compression_level", 0)
    if isinstance(level, bool) or not isinstance(level, int) or not -1 <= level <= 9:
        raise NativeFormatError("metadata compression_level must be a zlib level -1 to 9, not %r" % (level,))
    converted = metadata.get("converted_from", {})
    if not isinstance(converted, dict) or not all(isinstance(value, str) for value in converted.values()):
        raise NativeFormatError("metadata converted_from must be an object of strings")
    return metadata


def parse_header(head, metadata_bytes=None):
    """Check a prelude (72 bytes) and return a dict; with metadata bytes, check the CRC too."""
    if len(head) < PRELUDE_SIZE:
        raise NativeFormatError("truncated .pfstate header: %d of %d bytes" % (len(head), PRELUDE_SIZE))
    magic, version, order, compression, size, reserved, count, payload, digest, meta_len, crc = PRELUDE.unpack(
        head[:PRELUDE_SIZE])
    if magic != MAGIC:
        raise NativeFormatError("not a .pfstate file (bad magic %r)" % magic)
    if version == NPF_FORMAT_VERSION:
        raise NativeFormatError("unsupported .pfstate format version %d: unsupported kind, the file holds an NPF "
                                "snapshot (kind npf), not pf states" % version)
    if version != FORMAT_VERSION:
        raise NativeFormatError("unsupported .pfstate format version %d (this collection reads version %d only)"
                                % (version, FORMAT_VERSION))
    if size != RECORD_SIZE:
        raise NativeFormatError("record size %d in .pfstate header; NetBSD's pfsync_state is %d bytes" % (size, RECORD_SIZE))
    if reserved or meta_len > MAX_METADATA:
        raise NativeFormatError("corrupt .pfstate header (reserved field or metadata length)")
    if count > MAX_RECORDS:
        raise NativeFormatError("header announces %d records; no NetBSD state table holds more than %d"
                                % (count, MAX_RECORDS))
    header = {
        "format_version": version,
        "byte_order": _code_name(BYTE_ORDER_CODES, order, "byte order"),
        "compression": _code_name(COMPRESSION_CODES, compression, "compression"),
        "record_size": size, "count": count, "payload_length": payload,
        "sha256": digest.hex(), "metadata_length": meta_len,
    }
    if metadata_bytes is not None:
        if len(metadata_bytes) != meta_len:
            raise NativeFormatError("truncated .pfstate header: metadata of %d bytes, %d present" % (meta_len, len(metadata_bytes)))
        if zlib.crc32(head[:PRELUDE_SIZE - 4] + metadata_bytes) & 0xffffffff != crc:
            raise NativeFormatError(".pfstate header checksum mismatch (header or metadata damaged)")
        header["metadata"] = parse_metadata(metadata_bytes)
    return header


class NativeReader:
    """Reads a .pfstate file object (binary, seekable) of `size` bytes."""

    def __init__(self, fileobj, size, block_records=4096):
        self.fileobj = fileobj
        self.size = size
        self.block_records = block_records
        head = fileobj.read(PRELUDE_SIZE)
        prelude = parse_header(head)
        metadata_bytes = fileobj.read(prelude["metadata_length"])
        self.header = parse_header(head, metadata_bytes)
        self.payload_offset = PRELUDE_SIZE + len(metadata_bytes)
        self.byte_order = self.header["byte_order"]
        self.count = self.header["count"]
        expected = self.payload_offset + self.header["payload_length"]
        if size < expected:
            raise NativeFormatError("truncated .pfstate file: header promises %d bytes, file has %d" % (expected, size))
        if size > expected:
            raise NativeFormatError("%d bytes of trailing garbage after the .pfstate payload" % (size - expected))
        if self.header["compression"] == "none" and self.header["payload_length"] != self.count * RECORD_SIZE:
            raise NativeFormatError("payload of %d bytes does not hold the %d records the header announces"
                                    % (self.header["payload_length"], self.count))
        if self.count * RECORD_SIZE > self.header["payload_length"] * MAX_INFLATION:
            raise NativeFormatError(
                "header announces %d records (%d bytes) but a %d-byte compressed payload cannot hold more than %d bytes "
                "(%d:1 is beyond any state table)" % (self.count, self.count * RECORD_SIZE, self.header["payload_length"],
                                                      self.header["payload_length"] * MAX_INFLATION, MAX_INFLATION))
        self.verified = False

    def _raw_blocks(self):
        """Unverified record blocks (each a whole number of records).

        Decompression is bounded: never more than one block's worth of output per
        step, and never more than the header's count of records in all, so a small
        crafted zlib payload cannot inflate into memory before the checks refuse it.
        """
        self.fileobj.seek(self.payload_offset)
        left = self.header["payload_length"]
        decompressor = zlib.decompressobj() if self.header["compression"] == "zlib" else None
        allowed = self.count * RECORD_SIZE
        pending = bytearray()
        limit = self.block_records * RECORD_SIZE
        while left or (decompressor and decompressor.unconsumed_tail):
            if decompressor and decompressor.unconsumed_tail:
                chunk = decompressor.unconsumed_tail
            else:
                chunk = self.fileobj.read(min(READ_SIZE, left))
                if not chunk:
                    raise NativeFormatError("truncated .pfstate payload (%d bytes missing)" % left)
                left -= len(chunk)
            if decompressor:
                try:
                    chunk = decompressor.decompress(chunk, limit)
                except zlib.error as exc:
                    raise NativeFormatError("corrupt compressed .pfstate payload: %s" % exc)
            allowed -= len(chunk)
            if allowed < 0:
                raise NativeFormatError("header announces %d records, payload holds more" % self.count)
            pending += chunk
            consumed = 0
            while len(pending) - consumed >= limit:
                yield bytes(pending[consumed:consumed + limit])
                consumed += limit
            del pending[:consumed]
        if decompressor and (not decompressor.eof or decompressor.unused_data):
            raise NativeFormatError("corrupt compressed .pfstate payload (stream %s)" % (
                "incomplete" if not decompressor.eof else "followed by extra data"))
        whole = len(pending) - len(pending) % RECORD_SIZE
        if whole:
            yield bytes(pending[:whole])
        if len(pending) % RECORD_SIZE:
            raise NativeFormatError("payload ends with a partial record of %d bytes" % (len(pending) % RECORD_SIZE))

    def verify(self, spool=None):
        """Read everything and check count and SHA-256; returns the count or raises NativeFormatError.

        With ``spool`` (a binary file object) the records are also written to it as they are checked.
        """
        count = 0
        for block in self.checked_blocks():
            count += len(block) // RECORD_SIZE
            if spool is not None:
                spool.write(block)
        return count

    def checked_blocks(self):
        """Record blocks as read, count and SHA-256 checked after the last one (NativeFormatError then).

        One pass instead of two, for a consumer that can still drop what it made of
        the blocks when the check fails (a staged file that is not committed).
        """
        digest = hashlib.sha256()
        count = 0
        for block in self._raw_blocks():
            digest.update(block)
            count += len(block) // RECORD_SIZE
            yield block
        if count != self.count:
            raise NativeFormatError("header announces %d records, payload holds %d" % (self.count, count))
        if digest.hexdigest() != self.header["sha256"]:
            raise NativeFormatError("SHA-256 of the records does not match the header (file damaged)")
        self.verified = True

    def blocks(self, verify=True):
        """Record blocks; with verify (default) the whole file is checked before the first one.

        A compressed file is then decompressed once, into an unnamed temp file
        (mode 0600, in TMPDIR) that the blocks are read back from: one
        decompression instead of two, and memory bounded by one block.
        """
        if not verify or self.verified:
            return self._raw_blocks()
        if self.header["compression"] == "none":
            self.verify()
            return self._raw_blocks()
        spool = tempfile.TemporaryFile(prefix="pfstate-spool.")
        try:
            self.verify(spool)
            spool.seek(0)
        except BaseException:
            spool.close()
            raise
        return self._spooled_blocks(spool)

    def _spooled_blocks(self, spool):
        with spool:
            yield from iter(lambda: spool.read(self.block_records * RECORD_SIZE), b"")

    def __iter__(self):
        return self.blocks()
