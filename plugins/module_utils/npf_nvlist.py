# -*- coding: utf-8 -*-
# Copyright: netbsd.pf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The libnv packed nvlist format that NPF speaks on NetBSD 9.0 and later (NPF reference 3.2).

Python values map to nvlist types one to one:

=============================  ==================
Python                         nvlist type
=============================  ==================
``None``                       NULL
``bool``                       BOOL
``int`` (0 .. 2**64-1)         NUMBER
``str``                        STRING
``bytes`` (non-empty)          BINARY
``dict``                       NVLIST
list of dict                   NVLIST_ARRAY
list of bool / int / str       BOOL_ / NUMBER_ / STRING_ARRAY
=============================  ==================

libnv has no empty arrays, so an empty list cannot be encoded. Descriptors (types 6 and 12)
never travel to the kernel and are refused both ways. ``encode`` reproduces libnv byte for
byte, including its ``nvlist_size()`` quirk for the datasize of nested lists, so a
packed snapshot compares equal to what ``npfctl save`` writes.

``decode`` is strict: every check of libnv's unpacker, plus a depth limit, a size limit,
missing terminators and names repeated in one list are errors. It converts foreign byte
order completely (libnv forgets the item counts of arrays).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import struct

from ansible_collections.netbsd.pf.plugins.module_utils.errors import PfStateError

NV_TYPE_NULL = 1
NV_TYPE_BOOL = 2
NV_TYPE_NUMBER = 3
NV_TYPE_STRING = 4
NV_TYPE_NVLIST = 5
NV_TYPE_DESCRIPTOR = 6
NV_TYPE_BINARY = 7
NV_TYPE_BOOL_ARRAY = 8
NV_TYPE_NUMBER_ARRAY = 9
NV_TYPE_STRING_ARRAY = 10
NV_TYPE_NVLIST_ARRAY = 11
NV_TYPE_DESCRIPTOR_ARRAY = 12
NV_TYPE_NVLIST_ARRAY_NEXT = 254
NV_TYPE_NVLIST_UP = 255

TYPE_NAMES = {
    NV_TYPE_NULL: "NULL", NV_TYPE_BOOL: "BOOL", NV_TYPE_NUMBER: "NUMBER", NV_TYPE_STRING: "STRING",
    NV_TYPE_NVLIST: "NVLIST", NV_TYPE_DESCRIPTOR: "DESCRIPTOR", NV_TYPE_BINARY: "BINARY",
    NV_TYPE_BOOL_ARRAY: "BOOL_ARRAY", NV_TYPE_NUMBER_ARRAY: "NUMBER_ARRAY", NV_TYPE_STRING_ARRAY: "STRING_ARRAY",
    NV_TYPE_NVLIST_ARRAY: "NVLIST_ARRAY", NV_TYPE_DESCRIPTOR_ARRAY: "DESCRIPTOR_ARRAY",
    NV_TYPE_NVLIST_ARRAY_NEXT: "NVLIST_ARRAY_NEXT", NV_TYPE_NVLIST_UP: "NVLIST_UP",
}

NVLIST_MAGIC = 0x6C
HEADER_SIZE = 19            # magic, version, flags, descriptors (8), size (8)
PAIR_HEADER_SIZE = 19       # type, namesize (2), datasize (8), nitems (8)
NV_FLAG_IGNORE_CASE = 0x01
NV_FLAG_NO_UNIQUE = 0x02
NV_FLAG_BIG_ENDIAN = 0x80
NV_FLAG_ALL = NV_FLAG_IGNORE_CASE | NV_FLAG_NO_UNIQUE | NV_FLAG_BIG_ENDIAN
NV_NAME_MAX = 2048          # namesize limit of libnv, NUL included
# Ours, not libnv's: NPF nests three deep (snapshot, connection, key); a hostile file must not
# make the decoder recurse without bound.
MAX_DEPTH = 32
UINT64_MAX = (1 << 64) - 1


class NvlistError(PfStateError, ValueError):
    """A buffer is not a valid packed nvlist, or a value cannot be packed. Says where and why."""


class NvlistDescriptorError(NvlistError):
    """A descriptor-typed pair: never valid towards NetBSD's kernel (its libnv panics on them)."""


def _order_prefix(byte_order):
    if byte_order not in ("little", "big"):
        raise NvlistError("byte order must be 'little' or 'big', not %r" % (byte_order,))
    return "<" if byte_order == "little" else ">"


# --- encoding ---------------------------------------------------------------


def _value_type(name, value):
    if value is None:
        return NV_TYPE_NULL
    if isinstance(value, bool):
        return NV_TYPE_BOOL
    if isinstance(value, int):
        if not 0 <= value <= UINT64_MAX:
            raise NvlistError("%r: NUMBER out of the unsigned 64-bit range: %d" % (name, value))
        return NV_TYPE_NUMBER
    if isinstance(value, str):
        if "\0" in value:
            raise NvlistError("%r: STRING contains a NUL character" % (name,))
        return NV_TYPE_STRING
    if isinstance(value, (bytes, bytearray, memoryview)):
        if not len(value):
            raise NvlistError("%r: libnv cannot pack an empty BINARY" % (name,))
        return NV_TYPE_BINARY
    if isinstance(value, dict):
        return NV_TYPE_NVLIST
    if isinstance(value, (list, tuple)):
        if not value:
            raise NvlistError("%r: libnv has no empty arrays" % (name,))
        for element_type, test in ((NV_TYPE_NVLIST_ARRAY, lambda v: isinstance(v, dict)),
                                   (NV_TYPE_BOOL_ARRAY, lambda v: isinstance(v, bool)),
                                   (NV_TYPE_NUMBER_ARRAY, lambda v: isinstance(v, int) and not isinstance(v, bool)),
                                   (NV_TYPE_STRING_ARRAY, lambda v: isinstance(v, str))):
            if all(test(item) for item in value):
                if element_type == NV_TYPE_NUMBER_ARRAY and not all(0 <= v <= UINT64_MAX for v in value):
                    raise NvlistError("%r: NUMBER_ARRAY item out of the unsigned 64-bit range" % (name,))
                if element_type == NV_TYPE_STRING_ARRAY and any("\0" in v for v in value):
                    raise NvlistError("%r: STRING_ARRAY item contains a NUL character" % (name,))
                return element_type
        raise NvlistError("%r: an array must hold only dicts, only bools, only ints or only strs" % (name,))
    raise NvlistError("%r: no nvlist type for a Python %s" % (name, type(value).__name__))


def _encode_name(name):
    if not isinstance(name, str):
        raise NvlistError("pair names must be str, not %r" % (name,))
    raw = name.encode("utf-8", "surrogateescape")
    if b"\0" in raw or len(raw) >= NV_NAME_MAX:
        raise NvlistError("%r: a pair name must be shorter than %d bytes, without NUL" % (name, NV_NAME_MAX))
    return raw + b"\0"


def _leaf_payload(pair_type, value, prefix):
    if pair_type == NV_TYPE_NULL:
        return b""
    if pair_type == NV_TYPE_BOOL:
        return b"\1" if value else b"\0"
    if pair_type == NV_TYPE_NUMBER:
        return struct.pack(prefix + "Q", value)
    if pair_type == NV_TYPE_STRING:
        return value.encode("utf-8", "surrogateescape") + b"\0"
    if pair_type == NV_TYPE_BINARY:
        return bytes(value)
    if pair_type == NV_TYPE_BOOL_ARRAY:
        return bytes(1 if item else 0 for item in value)
    if pair_type == NV_TYPE_NUMBER_ARRAY:
        return struct.pack(prefix + "%dQ" % len(value), *value)
    return b"".join(item.encode("utf-8", "surrogateescape") + b"\0" for item in value)


def _flatten(nvl, prefix, pairs, depth):
    """Every pair in pack (depth-first) order: [type, name, payload, nitems, child-or-elements]."""
    if depth > MAX_DEPTH:
        raise NvlistError("nvlist nested deeper than %d levels" % MAX_DEPTH)
    if not isinstance(nvl, dict):
        raise NvlistError("an nvlist must be a dict, not %s" % type(nvl).__name__)
    for name, value in nvl.items():
        pair_type = _value_type(name, value)
        raw_name = _encode_name(name)
        if pair_type == NV_TYPE_NVLIST:
            pairs.append([pair_type, raw_name, None, 0, value])
            _flatten(value, prefix, pairs, depth + 1)
        elif pair_type == NV_TYPE_NVLIST_ARRAY:
            pairs.append([pair_type, raw_name, None, len(value), value])
            for element in value:
                _flatten(element, prefix, pairs, depth + 1)
        else:
            nitems = len(value) if pair_type in (NV_TYPE_BOOL_ARRAY, NV_TYPE_NUMBER_ARRAY, NV_TYPE_STRING_ARRAY) else 0
            pairs.append([pair_type, raw_name, _leaf_payload(pair_type, value, prefix), nitems, None])


def _nvlist_size_costs(pairs):
    """What libnv's nvlist_size() adds per visited pair (reference 3.2)."""
    costs = []
    for pair_type, raw_name, payload, nitems, dummy_nested in pairs:
        cost = PAIR_HEADER_SIZE + len(raw_name)
        if pair_type == NV_TYPE_NVLIST:
            cost += HEADER_SIZE + PAIR_HEADER_SIZE + 1
        elif pair_type == NV_TYPE_NVLIST_ARRAY:
            cost += (HEADER_SIZE + PAIR_HEADER_SIZE + 1) * nitems
        else:
            cost += len(payload)
        costs.append(cost)
    return costs


class _Packer:
    def __init__(self, pairs, prefix, flags):
        self.pairs = pairs
        self.prefix = prefix
        self.flags = flags
        costs = _nvlist_size_costs(pairs)
        # nvlist_size() of a non-empty child walks on to the end of the whole document.
        self.rest = [0] * (len(pairs) + 1)
        for index in range(len(pairs) - 1, -1, -1):
            self.rest[index] = self.rest[index + 1] + costs[index]
        self.out = bytearray()
        self.header_offsets = []
        self.index = 0

    def header(self, flags):
        self.header_offsets.append(len(self.out))
        self.out += struct.pack(self.prefix + "BBBQQ", NVLIST_MAGIC, 0, flags, 0, 0)

    def pair(self, pair_type, raw_name, datasize, nitems):
        self.out += struct.pack(self.prefix + "BHQQ", pair_type, len(raw_name), datasize, nitems) + raw_name

    def list_body(self, nvl):
        for dummy_index in range(len(nvl)):
            pair_type, raw_name, payload, nitems, nested = self.pairs[self.index]
            self.index += 1
            if pair_type == NV_TYPE_NVLIST:
                datasize = HEADER_SIZE + (self.rest[self.index] if nested else 0)
                self.pair(pair_type, raw_name, datasize, 0)
                self.header(self.flags & NV_FLAG_BIG_ENDIAN)
                self.list_body(nested)
                self.pair(NV_TYPE_NVLIST_UP, b"\0", 0, 0)
            elif pair_type == NV_TYPE_NVLIST_ARRAY:
                self.pair(pair_type, raw_name, 0, nitems)
                for element in nested:
                    self.header(self.flags & NV_FLAG_BIG_ENDIAN)
                    self.list_body(element)
                    self.pair(NV_TYPE_NVLIST_ARRAY_NEXT, b"\0", 0, 0)
            else:
                self.pair(pair_type, raw_name, len(payload), nitems)
                self.out += payload

    def finish(self):
        total = len(self.out)
        for offset in self.header_offsets:
            struct.pack_into(self.prefix + "Q", self.out, offset + 11, total - offset - HEADER_SIZE)
        return bytes(self.out)


def encode(nvl, byte_order="little", flags=0):
    """Pack ``nvl`` (a dict) exactly as libnv's nvlist_pack() would on a host of ``byte_order``."""
    prefix = _order_prefix(byte_order)
    if flags & ~(NV_FLAG_IGNORE_CASE | NV_FLAG_NO_UNIQUE):
        raise NvlistError("only the ignore-case and no-unique flags can be set, not 0x%x" % flags)
    pairs = []
    _flatten(nvl, prefix, pairs, 1)
    top_flags = flags | (NV_FLAG_BIG_ENDIAN if byte_order == "big" else 0)
    packer = _Packer(pairs, prefix, top_flags)
    packer.header(top_flags)
    packer.list_body(nvl)
    return packer.finish()


# --- decoding ---------------------------------------------------------------

_FIXED_ITEM_SIZE = {NV_TYPE_BOOL_ARRAY: 1, NV_TYPE_NUMBER_ARRAY: 8, NV_TYPE_DESCRIPTOR_ARRAY: 8}


class _Unpacker:
    def __init__(self, data, source):
        self.data = data
        self.source = source
        self.prefix = "<"
        self.big_endian = None

    def fail(self, offset, message):
        raise NvlistError("%s: not a valid packed nvlist at byte %d: %s" % (self.source, offset, message))

    def header(self, offset, top):
        data = self.data
        if len(data) - offset < HEADER_SIZE:
            self.fail(offset, "truncated list header (%d bytes left, %d needed)" % (len(data) - offset, HEADER_SIZE))
        if data[offset] != NVLIST_MAGIC:
            self.fail(offset, "bad magic 0x%02x (expected 0x6c)" % data[offset])
        flags = data[offset + 2]
        if flags & ~NV_FLAG_ALL:
            self.fail(offset, "unknown header flags 0x%02x" % flags)
        big_endian = bool(flags & NV_FLAG_BIG_ENDIAN)
        if top:
            self.big_endian = big_endian
            self.prefix = ">" if big_endian else "<"
        elif big_endian != self.big_endian:
            self.fail(offset, "nested list header of the other byte order")
        descriptors, size = struct.unpack_from(self.prefix + "QQ", data, offset + 3)
        if descriptors:
            self.fail(offset, "%d file descriptors announced (the kernel accepts none)" % descriptors)
        remaining = len(data) - offset - HEADER_SIZE
        if size != remaining:
            self.fail(offset, "header size %d but %d bytes follow" % (size, remaining))
        return flags

    def pair_header(self, offset):
        data = self.data
        if len(data) - offset < PAIR_HEADER_SIZE:
            self.fail(offset, "truncated pair header (%d bytes left)" % (len(data) - offset))
        pair_type, namesize, datasize, nitems = struct.unpack_from(self.prefix + "BHQQ", data, offset)
        if pair_type not in TYPE_NAMES:
            self.fail(offset, "unknown pair type %d" % pair_type)
        name_offset = offset + PAIR_HEADER_SIZE
        if not 1 <= namesize <= NV_NAME_MAX:
            self.fail(offset, "name size %d outside 1..%d" % (namesize, NV_NAME_MAX))
        if namesize > len(data) - name_offset:
            self.fail(offset, "name size %d runs past the end of the buffer" % namesize)
        raw_name = bytes(data[name_offset:name_offset + namesize])
        if raw_name.find(b"\0") != namesize - 1:
            self.fail(offset, "name not NUL-terminated exactly at its size")
        name = raw_name[:-1].decode("utf-8", "surrogateescape")
        payload_offset = name_offset + namesize
        if datasize > len(data) - payload_offset:
            self.fail(offset, "%r: data size %d runs past the end of the buffer" % (name, datasize))
        return pair_type, name, datasize, nitems, payload_offset

    def leaf(self, offset, pair_type, name, datasize, nitems, payload_offset):
        data = self.data
        payload = bytes(data[payload_offset:payload_offset + datasize])
        label = "%r (%s)" % (name, TYPE_NAMES[pair_type])
        if pair_type in (NV_TYPE_DESCRIPTOR, NV_TYPE_DESCRIPTOR_ARRAY):
            raise NvlistDescriptorError("%s: not a valid packed nvlist at byte %d: %s: descriptors are never valid "
                                        "towards the kernel" % (self.source, offset, label))
        if pair_type not in (NV_TYPE_BOOL_ARRAY, NV_TYPE_NUMBER_ARRAY, NV_TYPE_STRING_ARRAY) and nitems:
            self.fail(offset, "%s: item count %d on a non-array pair" % (label, nitems))
        if pair_type == NV_TYPE_NULL:
            if datasize:
                self.fail(offset, "%s: data size %d (must be 0)" % (label, datasize))
            return None
        if pair_type == NV_TYPE_BOOL:
            if datasize != 1 or payload[0] > 1:
                self.fail(offset, "%s: must be one byte 0 or 1" % label)
            return payload[0] == 1
        if pair_type == NV_TYPE_NUMBER:
            if datasize != 8:
                self.fail(offset, "%s: data size %d (must be 8)" % (label, datasize))
            return struct.unpack(self.prefix + "Q", payload)[0]
        if pair_type == NV_TYPE_STRING:
            if not datasize or payload.find(b"\0") != datasize - 1:
                self.fail(offset, "%s: must be non-empty and NUL-terminated exactly at its end" % label)
            return payload[:-1].decode("utf-8", "surrogateescape")
        if pair_type == NV_TYPE_BINARY:
            if not datasize:
                self.fail(offset, "%s: empty" % label)
            return payload
        if nitems == 0:
            self.fail(offset, "%s: no items" % label)
        if pair_type in _FIXED_ITEM_SIZE:
            if datasize != _FIXED_ITEM_SIZE[pair_type] * nitems:
                self.fail(offset, "%s: data size %d does not hold %d items" % (label, datasize, nitems))
            if pair_type == NV_TYPE_BOOL_ARRAY:
                if any(byte > 1 for byte in payload):
                    self.fail(offset, "%s: an item is neither 0 nor 1" % label)
                return [byte == 1 for byte in payload]
            return list(struct.unpack(self.prefix + "%dQ" % nitems, payload))
        # STRING_ARRAY: nitems NUL-terminated strings filling the data exactly
        if not payload.endswith(b"\0") or payload.count(b"\0") != nitems:
            self.fail(offset, "%s: data does not hold exactly %d NUL-terminated strings" % (label, nitems))
        return [item.decode("utf-8", "surrogateescape") for item in payload[:-1].split(b"\0")]

    def add(self, offset, nvl, flags, name, value):
        key = name.lower() if flags & NV_FLAG_IGNORE_CASE else name
        if key in nvl["keys"]:
            self.fail(offset, "name %r repeated in one list" % name)
        nvl["keys"].add(key)
        nvl["items"][name] = value

    def decode(self, max_depth):
        data = self.data
        top_flags = self.header(0, True)
        offset = HEADER_SIZE
        # Stack entries: [list dict with "items"/"keys", its flags, kind ("top"/"nested"/"element"), array state]
        top = {"items": {}, "keys": set()}
        stack = [[top, top_flags, "top", None]]
        while True:
            current, flags, kind, array = stack[-1]
            if offset == len(data):
                if kind != "top":
                    self.fail(offset, "buffer ends inside a nested list (terminator missing)")
                break
            pair_type, name, datasize, nitems, payload_offset = self.pair_header(offset)
            if pair_type == NV_TYPE_NVLIST_UP:
                if kind != "nested" or datasize or nitems or name:
                    self.fail(offset, "NVLIST_UP outside a nested list or with a name or data")
                stack.pop()
                offset = payload_offset
                continue
            if pair_type == NV_TYPE_NVLIST_ARRAY_NEXT:
                if kind != "element" or datasize or nitems or name:
                    self.fail(offset, "NVLIST_ARRAY_NEXT outside an array element or with a name or data")
                stack.pop()
                offset = payload_offset
                parent, parent_flags = stack[-1][0], stack[-1][1]
                elements, wanted, array_name, array_offset = array[0], array[1], array[2], array[3]
                if len(elements) < wanted:
                    offset = self.open_element(offset, stack, array, max_depth)
                else:
                    self.add(array_offset, parent, parent_flags, array_name, [e["items"] for e in elements])
                continue
            if pair_type == NV_TYPE_NVLIST:
                if datasize == 0:
                    self.fail(offset, "%r: NVLIST with data size 0" % name)
                if nitems:
                    self.fail(offset, "%r: item count on an NVLIST pair" % name)
                if len(stack) >= max_depth:
                    self.fail(offset, "%r: lists nested deeper than %d levels" % (name, max_depth))
                child = {"items": {}, "keys": set()}
                self.add(offset, current, flags, name, child["items"])
                child_flags = self.header(payload_offset, False)
                stack.append([child, child_flags, "nested", None])
                offset = payload_offset + HEADER_SIZE
                continue
            if pair_type == NV_TYPE_NVLIST_ARRAY:
                if datasize:
                    self.fail(offset, "%r: NVLIST_ARRAY with data size %d (must be 0)" % (name, datasize))
                if nitems == 0 or HEADER_SIZE * nitems > len(data) - payload_offset:
                    self.fail(offset, "%r: NVLIST_ARRAY item count %d impossible here" % (name, nitems))
                if len(stack) >= max_depth:
                    self.fail(offset, "%r: lists nested deeper than %d levels" % (name, max_depth))
                array = [[], nitems, name, offset]
                offset = self.open_element(payload_offset, stack, array, max_depth)
                continue
            value = self.leaf(offset, pair_type, name, datasize, nitems, payload_offset)
            self.add(offset, current, flags, name, value)
            offset = payload_offset + datasize
        return top["items"]

    def open_element(self, offset, stack, array, max_depth):
        element_flags = self.header(offset, False)
        element = {"items": {}, "keys": set()}
        array[0].append(element)
        stack.append([element, element_flags, "element", array])
        return offset + HEADER_SIZE


def decode(data, source="nvlist", max_size=None, max_depth=MAX_DEPTH):
    """Unpack a packed nvlist into a dict (see the module doc for the types).

    ``source`` names the input in error messages (a file name, "SAVE reply").
    ``max_size`` refuses larger buffers before reading them. A buffer that stops inside
    nested lists is refused, although the kernel's libnv accepts it: libnv never writes one.
    """
    data = memoryview(data).cast("B") if not isinstance(data, (bytes, bytearray)) else data
    if max_size is not None and len(data) > max_size:
        raise NvlistError("%s: %d bytes, more than the %d allowed" % (source, len(data), max_size))
    return _Unpacker(data, source).decode(max_depth)


def byte_order_of(data, source="nvlist"):
    """"big" or "little": the packer's byte order, from the header flags."""
    if len(data) < HEADER_SIZE or data[0] != NVLIST_MAGIC:
        raise NvlistError("%s: not a packed nvlist (no 0x6c header)" % source)
    return "big" if data[2] & NV_FLAG_BIG_ENDIAN else "little"
