"""Raw access to the emulated /dev/npf for the conformance suite.

Request numbers are the literal values of the reference's table 2.1, argument structs and
nvlists are packed here by hand (``raw_nvlist``): nothing from plugins/ and nothing of the
emulator's own libnv is used to build requests.
"""

import struct

import pytest

from ansible_collections.netbsd.pf.tests.npfemu.inprocess import ReplyMemory
from ansible_collections.netbsd.pf.tests.npfemu.kernel import ManualClock, NpfKernel

LP64 = {"VERSION": 0x40044E64, "SWITCH": 0x80044E65, "LOAD": 0xC0184E66, "STATS": 0x80084E68,
        "SAVE": 0x40184E69, "CONN_LOOKUP": 0xC0184E6C, "TABLE_REPLACE": 0xC0184E6D, "UNUSED_106": 0xC0184E6A}
ILP32 = {"VERSION": 0x40044E64, "SWITCH": 0x80044E65, "LOAD": 0xC00C4E66, "STATS": 0x80044E68,
         "SAVE": 0x400C4E69, "CONN_LOOKUP": 0xC00C4E6C, "TABLE_REPLACE": 0xC00C4E6D, "UNUSED_106": 0xC00C4E6A}


def raw_nvlist(pairs, order="<", flags=0):
    """Pack [(type, name, value)] by hand. value: int, bool, str, bytes, a nested pair list
    (type 5), or a list of pair lists (type 11). Nested datasize is the child's own length,
    which the kernel accepts (it only checks non-zero and not past the end)."""
    out = bytearray()
    headers = []

    def header():
        headers.append(len(out))
        out.extend(struct.pack(order + "BBBQQ", 0x6C, 0, flags | (0x80 if order == ">" else 0), 0, 0))

    def pair(kind, name, data=b"", nitems=0, datasize=None):
        raw = name.encode() + b"\0"
        out.extend(struct.pack(order + "BHQQ", kind, len(raw), len(data) if datasize is None else datasize, nitems))
        out.extend(raw + data)

    def body(items):
        for kind, name, value in items:
            if kind == 5:
                pair(5, name, datasize=19)
                header()
                body(value)
                pair(255, "")
            elif kind == 11:
                pair(11, name, nitems=len(value))
                for element in value:
                    header()
                    body(element)
                    pair(254, "")
            elif kind == 3:
                pair(3, name, struct.pack(order + "Q", value))
            elif kind == 2:
                pair(2, name, bytes([value]))
            elif kind == 4:
                pair(4, name, value.encode() + b"\0")
            elif kind == 1:
                pair(1, name)
            else:
                pair(kind, name, value)

    header()
    body(pairs)
    for offset in headers:
        struct.pack_into(order + "Q", out, offset + 11, len(out) - offset - 19)
    return bytes(out)


def as_pairs(nvl):
    """A decoded nvlist (dict of int/str/bytes/dict) back into raw_nvlist's pair list."""
    kinds = {int: 3, str: 4, bytes: 7}
    return [(5, name, as_pairs(value)) if isinstance(value, dict) else (kinds[type(value)], name, value)
            for name, value in nvl.items()]


def tcp_state(nst_state=4):
    return struct.pack("<I", nst_state) + bytes(32)


def raw_key(saddr, sport, daddr, dport, proto=6, ifname=None, di=None):
    items = [(3, "proto", proto), (3, "sport", sport), (3, "dport", dport), (7, "saddr", saddr), (7, "daddr", daddr)]
    if ifname is not None:
        items.append((4, "ifname", ifname))
    if di is not None:
        items.append((3, "di", di))
    return items


def raw_conn(sport=0x1004, dport=0x5000, proto=6, ifname="wm0", key_ifname="wm0", saddr=b"\x0a\0\0\x05",
             daddr=b"\xc6\x33\x64\x07", state=None, alen=4, nat=None, flags=6):
    """A conn-list element (pair list) as the N20 exporter lays it out, keys repaired (real ifname)."""
    items = [(3, "flags", flags), (3, "proto", proto)]
    if ifname is not None:
        items.append((4, "ifname", ifname))
    items += [(7, "state", tcp_state() if state is None else state),
              (5, "forw-key", raw_key(saddr, sport, daddr, dport, proto, key_ifname, 2)),
              (5, "back-key", raw_key(daddr, dport, nat["taddr"] if nat else saddr,
                                      nat["tport"] if nat else sport, proto, key_ifname, 1)),
              (3, "alen", alen)]
    if nat is not None:
        items.append((5, "nat", [(4, "ifname", ifname), (3, "alen", 4), (7, "oaddr", saddr), (3, "oport", sport),
                                 (7, "taddr", nat["taddr"]), (3, "tport", nat["tport"]),
                                 (3, "nat-policy", nat["policy"])]))
    return items


class RawNpf(object):
    """Issues requests to an NpfKernel with hand-packed nvlist_ref_t arguments (host ABI: LP64 LE)."""

    LP64 = LP64
    ILP32 = ILP32
    nvlist = staticmethod(raw_nvlist)
    conn = staticmethod(raw_conn)
    key = staticmethod(raw_key)
    tcp_state = staticmethod(tcp_state)
    pairs = staticmethod(as_pairs)

    def __init__(self, kernel):
        self.kernel = kernel
        self.memory = ReplyMemory()
        self.req = LP64 if kernel.pointer_size == 8 else ILP32
        self.ref = ("<" if kernel.byte_order == "little" else ">") + ("QQi4x" if kernel.pointer_size == 8 else "IIi")
        self.handle = kernel.open(0)
        self._keep = []  # request buffers stay mapped while referenced

    def ref_arg(self, packed=b"", flags=0, length=None):
        address = 0
        if packed:
            address, buffer = self.memory.alloc(len(packed))
            buffer[:] = packed
            self._keep.append(buffer)
        return bytearray(struct.pack(self.ref, address, len(packed) if length is None else length, flags))

    def ioctl(self, name, arg):
        self.kernel.ioctl(self.handle, self.req[name] if isinstance(name, str) else name, arg, self.memory)
        return arg

    def nvlist_call(self, name, packed=b"", flags=0):
        """Returns (reply bytes, reply address, reply length, flags written back); unmaps the reply."""
        arg = self.ioctl(name, self.ref_arg(packed, flags))
        address, length, out_flags = struct.unpack(self.ref, arg)
        data = self.memory.copyin(address, length)
        self.memory.munmap(address, length)
        return data, address, length, out_flags

    def load(self, pairs):
        from ansible_collections.netbsd.pf.tests.npfemu.libnv import unpack
        data = self.nvlist_call("LOAD", raw_nvlist(pairs))[0]
        return unpack(data, 0, self.kernel.byte_order)

    def save(self):
        from ansible_collections.netbsd.pf.tests.npfemu.libnv import unpack
        return unpack(self.nvlist_call("SAVE")[0], 0, self.kernel.byte_order)


@pytest.fixture
def npf_kernel():
    return NpfKernel(clock=ManualClock(1000000.0))


@pytest.fixture
def npf(npf_kernel):
    return RawNpf(npf_kernel)


@pytest.fixture
def make_npf():
    """Factory: ``make_npf(NpfKernel(generation="N19"))`` gives a RawNpf on that kernel."""
    return RawNpf
