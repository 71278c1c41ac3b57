# -*- coding: utf-8 -*-
# Copyright: netbsd.pf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The binary format of NetBSD's pfs(8) (`pfs -b -w`), reference section 7.2.

A C int count in host byte order followed by that many 240-byte records; an
empty table is a 0-byte file.  No magic, version or checksum, so the byte order
of a foreign file is inferred from the count and the file size.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import struct

from ansible_collections.netbsd.pf.plugins.module_utils.abi import RECORD_SIZE
from ansible_collections.netbsd.pf.plugins.module_utils.errors import PfStateError
from ansible_collections.netbsd.pf.plugins.module_utils.records import prefix_for, record_count

COUNT_SIZE = 4
INT32_MAX = 0x7fffffff


class BinaryFormatError(PfStateError, ValueError):
    """A pfs binary file that cannot be read as such."""

    message_lacks_file = True


def infer_layout(size, head, byte_order=None, host_order="little"):
    """(byte_order, count, trailing_bytes) of a pfs binary file of `size` bytes starting with `head`.

    The count is read both ways; the order whose count matches (size - 4) / 240
    exactly wins, then one that leaves trailing bytes (which pfs ignores).
    `byte_order` forces an order; `host_order` breaks ties (e.g. count 0).
    """
    if size == 0:
        return byte_order or host_order, 0, 0
    if size < COUNT_SIZE:
        raise BinaryFormatError("file of %d bytes is too short for the 4-byte state count of a pfs binary dump" % size)
    available = (size - COUNT_SIZE) // RECORD_SIZE
    orders = [byte_order] if byte_order else [host_order, "big" if host_order == "little" else "little"]
    counts = dict((order, struct.unpack(prefix_for(order) + "i", head[:COUNT_SIZE])[0]) for order in orders)
    for order in orders:
        if counts[order] == available and (size - COUNT_SIZE) % RECORD_SIZE == 0:
            return order, available, 0
    for order in orders:
        if 0 <= counts[order] <= available:
            return order, counts[order], size - COUNT_SIZE - counts[order] * RECORD_SIZE
    seen = ", ".join("%d read %s-endian" % (counts[order], order) for order in orders)
    plausible = [counts[order] for order in orders if 0 <= counts[order] <= INT32_MAX]
    if len(orders) == 1 and plausible:
        raise BinaryFormatError(
            "truncated pfs binary dump: count %d needs %d bytes, file has %d" % (
                plausible[0], COUNT_SIZE + plausible[0] * RECORD_SIZE, size))
    smallest = min(plausible) if plausible else None
    if smallest is not None:
        raise BinaryFormatError(
            "truncated or not a pfs binary dump: count %s; %d-byte file holds at most %d records "
            "(count %d needs %d bytes)" % (seen, size, available, smallest, COUNT_SIZE + smallest * RECORD_SIZE))
    raise BinaryFormatError("not a pfs binary dump: negative state count (%s)" % seen)


class PfsBinaryReader:
    """Streams the records of a pfs binary file object opened in binary mode."""

    def __init__(self, fileobj, size, byte_order=None, host_order="little", block_records=4096):
        self.fileobj = fileobj
        head = fileobj.read(COUNT_SIZE) if size else b""
        self.byte_order, self.count, self.trailing_bytes = infer_layout(size, head, byte_order, host_order)
        self.block_records = block_records

    def __iter__(self):
        return self.blocks()

    def blocks(self):
        remaining = self.count
        while remaining:
            want = min(remaining, self.block_records) * RECORD_SIZE
            block = self.fileobj.read(want)
            if len(block) != want:
                raise BinaryFormatError("pfs binary dump shrank while being read (short read of %d bytes, wanted %d)"
                                        % (len(block), want))
            remaining -= want // RECORD_SIZE
            yield block


class PfsBinaryWriter:
    """Writes blocks in `pfs -b -w` layout; an empty table leaves the file empty, as pfs does.

    With `count` unknown the count is written last (the file must be seekable).
    """

    def __init__(self, fileobj, byte_order, count=None):
        self.fileobj = fileobj
        self.prefix = prefix_for(byte_order)
        self.declared = count
        self.rewrites_start = count is None         # the count goes first, once known
        self.count = 0
        self.started = False

    def write_block(self, block):
        records = record_count(block)
        if not records:
            return
        if not self.started:
            self.fileobj.write(struct.pack(self.prefix + "i", self.declared or 0))
            self.started = True
        self.fileobj.write(block)
        self.count += records

    def close(self):
        if self.count > INT32_MAX:
            raise BinaryFormatError("%d states do not fit the int count of a pfs binary dump" % self.count)
        if self.declared is not None:
            if self.declared != self.count:
                raise BinaryFormatError("declared %d states but %d were written" % (self.declared, self.count))
            return
        if self.started:
            end = self.fileobj.tell()
            self.fileobj.seek(end - COUNT_SIZE - self.count * RECORD_SIZE)
            self.fileobj.write(struct.pack(self.prefix + "i", self.count))
            self.fileobj.seek(end)
