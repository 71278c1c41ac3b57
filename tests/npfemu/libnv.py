"""The kernel's libnv (sys/external/bsd/libnv), as NPF reference 3.2 describes it.

Written independently of plugins/module_utils/npf_nvlist.py so that each checks the other:
this one follows the C code's shape (nvlist_xpack, nvlist_size's walk, nvlist_xunpack) and
its leniencies: any header version byte, a buffer that ends inside nested lists, UP or NEXT
climbing to any parent list, NVLIST datasize only checked for 0 and overflow; and its defect:
the item count of arrays is not byte-swapped, so a foreign-endian buffer holding an array fails.

Values: None NULL, bool BOOL, int NUMBER, str STRING, bytes BINARY, dict NVLIST, and lists
of dict / bool / int / str for the array types.
"""

import struct

NULL, BOOL, NUMBER, STRING, NVLIST, DESCRIPTOR, BINARY = 1, 2, 3, 4, 5, 6, 7
BOOL_ARRAY, NUMBER_ARRAY, STRING_ARRAY, NVLIST_ARRAY, DESCRIPTOR_ARRAY = 8, 9, 10, 11, 12
ARRAY_NEXT, UP = 254, 255
HDR = 19


class UnpackError(Exception):
    """nvlist_unpack() returned NULL."""


class PackError(Exception):
    """nvlist_pack() failed (the kernel answers ENOMEM)."""


class DescriptorPanic(Exception):
    """The kernel build of libnv has no case for descriptors: PJDLOG_ABORT, a panic."""


def _type_of(value):
    if value is None:
        return NULL
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, int):
        return NUMBER
    if isinstance(value, str):
        return STRING
    if isinstance(value, (bytes, bytearray)):
        return BINARY
    if isinstance(value, dict):
        return NVLIST
    first = value[0]
    if isinstance(first, dict):
        return NVLIST_ARRAY
    if isinstance(first, bool):
        return BOOL_ARRAY
    if isinstance(first, int):
        return NUMBER_ARRAY
    return STRING_ARRAY


def _leaf_size(kind, value):
    if kind == NULL:
        return 0
    if kind == BOOL:
        return 1
    if kind == NUMBER:
        return 8
    if kind == STRING:
        return len(value.encode()) + 1
    if kind == BINARY:
        return len(value)
    if kind == BOOL_ARRAY:
        return len(value)
    if kind == NUMBER_ARRAY:
        return 8 * len(value)
    return sum(len(item.encode()) + 1 for item in value)


def _preorder(nvl):
    """Every (name, value) in pack order, descending into lists and array elements."""
    for name, value in nvl.items():
        yield name, value
        kind = _type_of(value)
        if kind == NVLIST:
            yield from _preorder(value)
        elif kind == NVLIST_ARRAY:
            for element in value:
                yield from _preorder(element)


def _walk_cost(name, value):
    """What nvlist_size() adds when its walk visits this pair."""
    kind = _type_of(value)
    size = HDR + len(name.encode()) + 1
    if kind == NVLIST:
        return size + HDR + HDR + 1
    if kind == NVLIST_ARRAY:
        return size + (HDR + HDR + 1) * len(value)
    return size + _leaf_size(kind, value)


def nvlist_sizes(flat):
    """nvlist_size() of a child starting after each position of ``flat``: 19 plus every pair
    the walk visits, which is all the rest of the document (it climbs past the child)."""
    sizes = [HDR] * (len(flat) + 1)
    for index in range(len(flat) - 1, -1, -1):
        sizes[index] = sizes[index + 1] + _walk_cost(*flat[index])
    return sizes


def pack(nvl, byte_order="little"):
    """nvlist_pack(): bytes, or PackError (zero-length BINARY, which libnv marks as an error)."""
    prefix = "<" if byte_order == "little" else ">"
    flag = 0x80 if byte_order == "big" else 0
    flat = list(_preorder(nvl))
    child_sizes = nvlist_sizes(flat)
    out = bytearray()
    headers = []
    position = [0]  # index in flat of the next pair to pack

    def header():
        headers.append(len(out))
        out.extend(struct.pack(prefix + "BBBQQ", 0x6C, 0, flag, 0, 0))

    def pair(kind, name, datasize, nitems):
        raw = name.encode() + b"\0"
        out.extend(struct.pack(prefix + "BHQQ", kind, len(raw), datasize, nitems) + raw)

    def body(current):
        for name, value in current.items():
            position[0] += 1
            kind = _type_of(value)
            if kind == NVLIST:
                pair(kind, name, child_sizes[position[0]] if value else HDR, 0)
                header()
                body(value)
                pair(UP, "", 0, 0)
            elif kind == NVLIST_ARRAY:
                pair(kind, name, 0, len(value))
                for element in value:
                    header()
                    body(element)
                    pair(ARRAY_NEXT, "", 0, 0)
            else:
                if kind == BINARY and not value:
                    raise PackError("zero-length binary %r" % name)
                if kind == NUMBER:
                    payload = struct.pack(prefix + "Q", value)
                elif kind == NUMBER_ARRAY:
                    payload = struct.pack(prefix + "%dQ" % len(value), *value)
                elif kind == BOOL:
                    payload = bytes([1 if value else 0])
                elif kind == BOOL_ARRAY:
                    payload = bytes(1 if item else 0 for item in value)
                elif kind == STRING:
                    payload = value.encode() + b"\0"
                elif kind == STRING_ARRAY:
                    payload = b"".join(item.encode() + b"\0" for item in value)
                elif kind == BINARY:
                    payload = bytes(value)
                else:
                    payload = b""
                pair(kind, name, len(payload), len(value) if kind in (BOOL_ARRAY, NUMBER_ARRAY, STRING_ARRAY) else 0)
                out.extend(payload)

    header()
    body(nvl)
    for offset in headers:
        struct.pack_into(prefix + "Q", out, offset + 11, len(out) - offset - HDR)
    return bytes(out)


def unpack(data, flags=0, host_order="little"):
    """nvlist_xunpack() as the kernel runs it: a dict, or UnpackError / DescriptorPanic."""
    data = bytes(data)
    host_big = host_order == "big"
    state = {"prefix": "<", "swap": False}

    def check_header(offset, top):
        if len(data) - offset < HDR or data[offset] != 0x6C:
            raise UnpackError("bad header at %d" % offset)
        hflags = data[offset + 2]
        if hflags & ~0x83:
            raise UnpackError("bad flags")
        if top:
            state["prefix"] = ">" if hflags & 0x80 else "<"
            state["swap"] = bool(hflags & 0x80) != host_big
            if hflags & 0x03 != flags & 0x03:
                raise UnpackError("public flags differ from the request's")
        descriptors, size = struct.unpack_from(state["prefix"] + "QQ", data, offset + 3)
        if descriptors:
            raise UnpackError("descriptors")
        if size != len(data) - offset - HDR:
            raise UnpackError("header size")
        return hflags

    def nitems_of(raw_nitems):
        # nvpair.c converts header sizes but not nitems: a foreign-endian count is garbage.
        if state["swap"]:
            return struct.unpack("<Q", struct.pack(">Q", raw_nitems))[0]
        return raw_nitems

    def read_list(offset, depth_kind):
        """Pairs from offset; returns (dict, offset, how it ended)."""
        result = {}
        while offset < len(data):
            if len(data) - offset < HDR:
                raise UnpackError("short pair")
            kind, namesize, datasize, nitems = struct.unpack_from(state["prefix"] + "BHQQ", data, offset)
            nitems = nitems_of(nitems)
            offset += HDR
            if kind not in (NULL, BOOL, NUMBER, STRING, NVLIST, DESCRIPTOR, BINARY, BOOL_ARRAY, NUMBER_ARRAY,
                            STRING_ARRAY, NVLIST_ARRAY, DESCRIPTOR_ARRAY, ARRAY_NEXT, UP):
                raise UnpackError("type")
            if namesize == 0 or namesize > 2048 or namesize > len(data) - offset:
                raise UnpackError("namesize")
            raw_name = data[offset:offset + namesize]
            if raw_name.find(b"\0") != namesize - 1:
                raise UnpackError("name")
            name = raw_name[:-1].decode("utf-8", "surrogateescape")
            offset += namesize
            if datasize > len(data) - offset:
                raise UnpackError("datasize")
            # nvlist_xunpack: UP climbs to the parent list; NEXT goes to the next array element,
            # or climbs like UP when there is none (a nested list, the last element). At the top: fail.
            if kind in (UP, ARRAY_NEXT) and depth_kind == "top":
                raise UnpackError("terminator at the top level")
            if kind == UP:
                return result, offset, "up"
            if kind == ARRAY_NEXT:
                return result, offset, "next" if depth_kind == "element" else "up"
            if kind in (DESCRIPTOR, DESCRIPTOR_ARRAY):
                raise DescriptorPanic("descriptor pair %r" % name)
            if name in result:
                raise UnpackError("duplicate %r" % name)
            if kind == NVLIST:
                if datasize == 0:
                    raise UnpackError("nvlist datasize 0")
                check_header(offset, False)
                child, offset = read_list(offset + HDR, "nested")[:2]
                result[name] = child
                continue
            if kind == NVLIST_ARRAY:
                if nitems == 0 or HDR * nitems > len(data) - offset:
                    raise UnpackError("nvlist array count")
                elements = []
                for dummy_index in range(nitems):
                    check_header(offset, False)
                    element, offset, ended = read_list(offset + HDR, "element")
                    elements.append(element)
                    if ended != "next":
                        break
                # the nitems lists exist from the start (nvpair_unpack_nvlist_array): unread ones stay empty
                result[name] = elements + [{} for dummy_index in range(nitems - len(elements))]
                continue
            payload = data[offset:offset + datasize]  # only leaves: a nested list's datasize spans the rest
            result[name] = _unpack_leaf(kind, payload, datasize, nitems, state["prefix"])
            offset += datasize
        return result, offset, "end"

    check_header(0, True)
    return read_list(HDR, "top")[0]


def _unpack_leaf(kind, payload, datasize, nitems, prefix):
    if kind == NULL:
        if datasize:
            raise UnpackError("null size")
        return None
    if kind == BOOL:
        if datasize != 1 or payload[0] > 1:
            raise UnpackError("bool")
        return payload[0] == 1
    if kind == NUMBER:
        if datasize != 8:
            raise UnpackError("number size")
        return struct.unpack(prefix + "Q", payload)[0]
    if kind == STRING:
        if datasize == 0 or payload.find(b"\0") != datasize - 1:
            raise UnpackError("string")
        return payload[:-1].decode("utf-8", "surrogateescape")
    if kind == BINARY:
        if datasize == 0:
            raise UnpackError("binary size 0")
        return payload
    if nitems == 0:
        raise UnpackError("array without items")
    if kind == BOOL_ARRAY:
        if datasize != nitems or any(b > 1 for b in payload):
            raise UnpackError("bool array")
        return [b == 1 for b in payload]
    if kind == NUMBER_ARRAY:
        if datasize != 8 * nitems:
            raise UnpackError("number array size")
        return list(struct.unpack(prefix + "%dQ" % nitems, payload))
    if not payload.endswith(b"\0") or payload.count(b"\0") != nitems:
        raise UnpackError("string array")
    return [item.decode("utf-8", "surrogateescape") for item in payload[:-1].split(b"\0")]
