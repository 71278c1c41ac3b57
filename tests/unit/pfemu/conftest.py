"""Raw access to the emulated /dev/pf for the conformance suite.

Everything goes through the patched os.open/fcntl.ioctl with literal request numbers and
hand-packed argument bytes at real addresses: nothing from plugins/ and nothing computed by the
emulator's own structs module is used to talk to it.
"""

import ctypes
import fcntl
import os
import struct
import sys

import pytest

LP64 = {
    "DIOCSTART": 0x20004401, "DIOCSTOP": 0x20004402, "DIOCSETLCK": 0xC0044408, "DIOCCLRSTATES": 0xC0884412,
    "DIOCGETSTATE": 0xC0104413, "DIOCGETSTATUS": 0xC1A84415, "DIOCGETSTATES": 0xC0104419,
    "DIOCGETTIMEOUT": 0xC008441E, "DIOCADDSTATE": 0xC0104425, "DIOCGETLIMIT": 0xC0084427,
    "DIOCKILLSTATES": 0xC0884429, "DIOCADDSTATES": 0xC0104438,
}
ILP32 = {
    "DIOCSTART": 0x20004401, "DIOCSTOP": 0x20004402, "DIOCSETLCK": 0xC0044408, "DIOCCLRSTATES": 0xC0784412,
    "DIOCGETSTATE": 0xC0084413, "DIOCGETSTATUS": 0xC1A84415, "DIOCGETSTATES": 0xC0084419,
    "DIOCGETTIMEOUT": 0xC008441E, "DIOCADDSTATE": 0xC0084425, "DIOCGETLIMIT": 0xC0084427,
    "DIOCKILLSTATES": 0xC0784429, "DIOCADDSTATES": 0xC0084438,
}
ARG_SIZES = {
    "DIOCSTART": 0, "DIOCSTOP": 0, "DIOCSETLCK": 4, "DIOCGETSTATUS": 424, "DIOCGETTIMEOUT": 8, "DIOCGETLIMIT": 8,
}

LP64_HOST = ctypes.sizeof(ctypes.c_void_p) == 8
ORDER = "<" if sys.byteorder == "little" else ">"


def pack_record(ifname=b"all", af=2, proto=6, lan=(b"\x0a\x00\x00\x01", 1025), gwy=None, ext=(b"\xc6\x33\x64\x07", 443),
                direction=2, timeout=2, expire=0, state_id=b"\x00" * 8, creatorid=0, src=(4, 0, 0), dst=(4, 0, 0),
                rule=7, creation=55, packets=(3, 4), counters_bytes=(300, 400), log=1, allow_opts=1, sync_flags=4,
                scrub=True):
    """A 240-byte pfsync_state in host order. src/dst peers are (state, mss, seqdiff)."""
    gwy = lan if gwy is None else gwy
    rec = bytearray(240)
    rec[0:8] = state_id
    rec[8:24] = ifname.ljust(16, b"\0")[:16]
    for offset, (addr, port) in ((24, lan), (48, gwy), (72, ext)):
        rec[offset:offset + 16] = addr.ljust(16, b"\0")
        rec[offset + 16:offset + 18] = port.to_bytes(2, "big")
    for offset, (state, mss, seqdiff) in ((96, src), (128, dst)):
        if scrub:
            struct.pack_into(ORDER + "HBBI", rec, offset, 1, 64, 1, 0xABCDEF)
        struct.pack_into(ORDER + "IIIHHBB", rec, offset + 8, 1000, 2000, seqdiff, 65535, mss, state, 0x87)
    rec[160:176] = b"\x09" * 16  # rt_addr, ignored
    struct.pack_into(ORDER + "IIIII", rec, 176, rule, 3, 5, creation, expire)
    struct.pack_into(ORDER + "4I4I", rec, 196, 0, packets[0], 0, packets[1], 0, counters_bytes[0], 0, counters_bytes[1])
    struct.pack_into(ORDER + "I", rec, 228, creatorid)
    rec[232:240] = bytes((af, proto, direction, log, allow_opts, timeout, sync_flags, 1))
    return bytes(rec)


def field(rec, fmt, offset):
    return struct.unpack_from(ORDER + fmt, rec, offset)[0]


class RawPf(object):
    """Opens /dev/pf, builds argument structs by hand, keeps user buffers alive."""

    tables = {"lp64": LP64, "ilp32": ILP32}
    record = staticmethod(pack_record)
    field = staticmethod(field)
    order = ORDER

    def __init__(self, kernel):
        self.kernel = kernel
        self.req = LP64 if LP64_HOST else ILP32
        self.other_word_size = ILP32 if LP64_HOST else LP64
        self._buffers = []
        self._fds = []

    def open(self, flags=os.O_RDWR):
        fd = os.open("/dev/pf", flags)
        self._fds.append(fd)
        return fd

    def close_all(self):
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass

    def buffer(self, data_or_size):
        buf = ctypes.create_string_buffer(data_or_size, len(data_or_size)) if isinstance(data_or_size, bytes) \
            else ctypes.create_string_buffer(data_or_size)
        self._buffers.append(buf)
        return buf

    @staticmethod
    def states_arg(ps_len, address):
        return bytearray(struct.pack(ORDER + ("i4xQ" if LP64_HOST else "iI"), ps_len, address))

    @staticmethod
    def states_len(arg):
        return struct.unpack_from(ORDER + "i", arg)[0]

    def ioctl(self, fd, name, arg):
        return fcntl.ioctl(fd, self.req[name], arg, True)

    def size_query(self, fd):
        arg = self.states_arg(0, 0)
        self.ioctl(fd, "DIOCGETSTATES", arg)
        return self.states_len(arg)

    def fetch(self, fd, ps_len):
        buf = self.buffer(max(ps_len, 1))
        arg = self.states_arg(ps_len, ctypes.addressof(buf))
        self.ioctl(fd, "DIOCGETSTATES", arg)
        got = self.states_len(arg)
        return [buf.raw[i:i + 240] for i in range(0, got, 240)]

    def get_states(self, fd):
        return self.fetch(fd, self.size_query(fd))

    def add_states(self, fd, block, ps_len=None):
        buf = self.buffer(bytes(block))
        arg = self.states_arg(len(block) if ps_len is None else ps_len, ctypes.addressof(buf))
        self.ioctl(fd, "DIOCADDSTATES", arg)
        return arg

    def status(self, fd):
        arg = bytearray(424)
        self.ioctl(fd, "DIOCGETSTATUS", arg)
        values = struct.unpack(ORDER + "16Q7Q3Q3Q12Q4QQ6I16s16s", arg)
        return {"counters": values[0:16], "fcounters": values[23:26], "stateid": values[45], "running": values[46],
                "states": values[47], "src_nodes": values[48], "since": values[49], "debug": values[50],
                "hostid": values[51]}

    @staticmethod
    def kill_arg(af=0, proto=0, src=None, dst=None, ifname=b""):
        """pfioc_state_kill; src/dst = dict(addr, mask, neg, op, port1, port2)."""
        rule_addr = "32sQBB6x2s2sBB2x" if LP64_HOST else "32sIBB2x2s2sBB2x"
        values = [af, proto]
        for side in (src or {}, dst or {}):
            addr = side.get("addr", b"").ljust(16, b"\0") + side.get("mask", b"").ljust(16, b"\0")
            values += [addr, 0, 0, 0, side.get("port1", 0).to_bytes(2, "big"), side.get("port2", 0).to_bytes(2, "big"),
                       side.get("neg", 0), side.get("op", 0)]
        values.append(ifname)
        return bytearray(struct.pack(ORDER + "B3xi" + rule_addr * 2 + "16s", *values))

    def kill(self, fd, name="DIOCKILLSTATES", **kwargs):
        arg = self.kill_arg(**kwargs)
        self.ioctl(fd, name, arg)
        return arg[0]


@pytest.fixture
def pf(pfemu_kernel):
    raw = RawPf(pfemu_kernel)
    yield raw
    raw.close_all()
