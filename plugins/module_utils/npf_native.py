# -*- coding: utf-8 -*-
# Copyright: netbsd.pf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""NPF snapshots in the collection's native file: `.pfstate` format version 2, kind "npf".

The prelude is native.py's (magic, big-endian, CRC-32 over prelude and metadata); version 2
says the payload is one packed NPF snapshot (the IOC_NPF_SAVE reply as an nvlist, in the
saving host's byte order) instead of pf records, so a reader of version 1, including the
0.1.0 one, refuses it as an unsupported version instead of reading garbage. Layout in
docs/formats.md, "Native NPF snapshots".
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json
import struct
import zlib

from ansible_collections.netbsd.pf.plugins.module_utils.native import (
    BYTE_ORDER_CODES, COMPRESSION_CODES, DEFAULT_COMPRESSION_LEVEL, MAGIC, MAX_INFLATION, MAX_METADATA,
    NPF_FORMAT_VERSION,
    PRELUDE, PRELUDE_SIZE, NativeFormatError, parse_metadata,
)
from ansible_collections.netbsd.pf.plugins.module_utils.npf_nvlist import encode
from ansible_collections.netbsd.pf.plugins.module_utils.npf_snapshot import NpfSnapshot, NpfSnapshotError

KIND = "npf"
# A SAVE has no size cap; a million connections pack to under 1 GiB. Decompression also stops
# at MAX_INFLATION times the payload: 6,000 identical-looking connections inflate 29:1 (level 9).
MAX_SNAPSHOT_BYTES = 1 << 30


def _name(codes, code, what, source):
    for name, value in codes.items():
        if value == code:
            return name
    raise NativeFormatError("%s: unknown %s code %d in the NPF snapshot header" % (source, what, code))


def write_npf_file(fileobj, reply, byte_order, metadata=None, compression="zlib", level=DEFAULT_COMPRESSION_LEVEL,
                   packed=None):
    """Write the SAVE ``reply`` (a dict) packed in ``byte_order``; returns the header fields written.

    ``packed``: the reply already packed (``encode(reply, byte_order)``), when the caller has it.
    """
    if compression not in COMPRESSION_CODES:
        raise ValueError("compression must be one of %s" % ", ".join(COMPRESSION_CODES))
    if packed is None:
        packed = encode(reply, byte_order)
    meta = dict(metadata or {}, kind=KIND)
    if compression == "zlib":
        meta["compression_level"] = level
    meta_bytes = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode("utf-8")
    if len(meta_bytes) > MAX_METADATA:
        raise ValueError("metadata larger than %d bytes" % MAX_METADATA)
    payload = zlib.compress(packed, level) if compression == "zlib" else packed
    count = len(reply.get("conn-list", []))
    digest = hashlib.sha256(packed).digest()
    head = PRELUDE.pack(MAGIC, NPF_FORMAT_VERSION, BYTE_ORDER_CODES[byte_order], COMPRESSION_CODES[compression],
                        0, 0, count, len(payload), digest, len(meta_bytes), 0)
    crc = zlib.crc32(head[:-4] + meta_bytes) & 0xffffffff
    fileobj.write(head[:-4] + struct.pack(">I", crc) + meta_bytes + payload)
    return {"count": count, "payload_length": len(payload), "snapshot_bytes": len(packed),
            "sha256": digest.hex()}


def read_npf_header(fileobj, size, source="snapshot"):
    """The checked header of a version 2 file (prelude, CRC-checked metadata, size), without its payload.

    Leaves ``fileobj`` at the start of the payload."""
    head = fileobj.read(PRELUDE_SIZE)
    if len(head) < PRELUDE_SIZE:
        raise NativeFormatError("%s: truncated header: %d of %d bytes" % (source, len(head), PRELUDE_SIZE))
    magic, version, order, compression, record_size, reserved, count, payload_length, digest, meta_len, crc = \
        PRELUDE.unpack(head)
    if magic != MAGIC:
        raise NativeFormatError("%s: not a .pfstate file (bad magic %r)" % (source, magic))
    if version != NPF_FORMAT_VERSION:
        raise NativeFormatError("%s: format version %d holds %s, not an NPF snapshot (version %d)" % (
            source, version, "pf states" if version == 1 else "an unknown kind", NPF_FORMAT_VERSION))
    if record_size or reserved or meta_len > MAX_METADATA:
        raise NativeFormatError("%s: corrupt NPF snapshot header (record size, reserved field or metadata length)"
                                % source)
    meta_bytes = fileobj.read(meta_len)
    if len(meta_bytes) != meta_len:
        raise NativeFormatError("%s: truncated header: metadata of %d bytes, %d present" % (
            source, meta_len, len(meta_bytes)))
    if zlib.crc32(head[:-4] + meta_bytes) & 0xffffffff != crc:
        raise NativeFormatError("%s: header checksum mismatch (header or metadata damaged)" % source)
    metadata = parse_metadata(meta_bytes)
    if metadata.get("kind") != KIND:
        raise NativeFormatError("%s: metadata kind %r; an NPF snapshot says %r" % (source, metadata.get("kind"), KIND))
    expected = PRELUDE_SIZE + meta_len + payload_length
    if size != expected:
        raise NativeFormatError("%s: file is %d bytes, its header says %d" % (source, size, expected))
    return {"format_version": version, "kind": KIND, "byte_order": _name(BYTE_ORDER_CODES, order, "byte order", source),
            "compression": _name(COMPRESSION_CODES, compression, "compression", source), "count": count,
            "payload_length": payload_length, "sha256": digest.hex(), "metadata": metadata}


def read_npf_file(fileobj, size, source="snapshot"):
    """(header dict, NpfSnapshot) of a version 2 file; NativeFormatError names ``source`` and the defect."""
    header = read_npf_header(fileobj, size, source)
    payload_length, byte_order, count = header["payload_length"], header["byte_order"], header["count"]
    payload = fileobj.read(payload_length)
    if header["compression"] == "zlib":
        inflater = zlib.decompressobj()
        try:
            packed = inflater.decompress(payload, min(MAX_SNAPSHOT_BYTES, payload_length * MAX_INFLATION))
        except zlib.error as exc:
            raise NativeFormatError("%s: damaged compressed payload (%s)" % (source, exc))
        if inflater.unconsumed_tail or not inflater.eof or inflater.unused_data:
            raise NativeFormatError("%s: compressed payload is truncated, too large or followed by garbage" % source)
    else:
        packed = payload
    if hashlib.sha256(packed).hexdigest() != header["sha256"]:
        raise NativeFormatError("%s: SHA-256 of the snapshot does not match the header (damaged)" % source)
    try:
        snapshot = NpfSnapshot.from_packed(packed, source)
    except NpfSnapshotError as exc:
        raise NativeFormatError(str(exc))
    if snapshot.byte_order != byte_order or len(snapshot.connections) != count:
        raise NativeFormatError("%s: header says %d connections in %s byte order, the snapshot holds %d in %s" % (
            source, count, byte_order, len(snapshot.connections), snapshot.byte_order))
    return header, snapshot
