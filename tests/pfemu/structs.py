"""NetBSD pf(4) ioctl layouts, decoded independently of plugins/ (reference sections 3 and 4).

Everything here is derived from the reference tables, never from the collection's client,
so that the emulator checks the client instead of agreeing with it by construction.
"""

import struct

RECORD_SIZE = 240
STATUS_SIZE = 424

AF_INET = 2
AF_INET6 = 24

PF_IN = 1
PF_OUT = 2

PFTM_MAX = 20
PFTM_ADAPTIVE_START = 16
PFTM_ADAPTIVE_END = 17
PFTM_UNTIL_PACKET = 23

# Kernel default timeouts, indexed by PFTM_* (reference section 2).
DEFAULT_TIMEOUTS = (120, 30, 86400, 900, 45, 90, 60, 30, 60, 20, 10, 60, 30, 60, 30, 10, 6000, 12000, 0, 30)

PF_LIMIT_MAX = 5  # states, src-nodes, frags, tables, table-entries
DEFAULT_LIMITS = (10000, 10000, 5000, 1000, 200000)

PFRES_STATELOCKED = 15

# Offsets inside the 240-byte struct pfsync_state (reference 3.5).
OFF_ID = 0
OFF_IFNAME = 8
OFF_LAN = 24
OFF_GWY = 48
OFF_EXT = 72
OFF_SRC = 96
OFF_DST = 128
OFF_RT_ADDR = 160
OFF_RULE = 176
OFF_ANCHOR = 180
OFF_NAT_RULE = 184
OFF_CREATION = 188
OFF_EXPIRE = 192
OFF_PACKETS = 196
OFF_BYTES = 212
OFF_CREATORID = 228
OFF_AF = 232
OFF_PROTO = 233
OFF_DIRECTION = 234
OFF_LOG = 235
OFF_ALLOW_OPTS = 236
OFF_TIMEOUT = 237
OFF_SYNC_FLAGS = 238
OFF_UPDATES = 239

# Inside a 24-byte pfsync_state_host and a 32-byte pfsync_state_peer.
HOST_ADDR = 0
HOST_PORT = 16
PEER_SEQLO = 8
PEER_MSS = 22
PEER_STATE = 24
PEER_WSCALE = 25

# ioccom.h encoding (reference section 4).
IOC_VOID = 0x20000000
IOC_OUT = 0x40000000
IOC_IN = 0x80000000
IOC_INOUT = IOC_IN | IOC_OUT
IOCPARM_MASK = 0x1FFF
IOCPARM_SHIFT = 16
GROUP_D = ord("D")


def ioc(direction, number, size):
    """NetBSD _IO/_IOR/_IOW/_IOWR for group 'D'."""
    return direction | ((size & IOCPARM_MASK) << IOCPARM_SHIFT) | (GROUP_D << 8) | number


def ioc_length(request):
    return (request >> IOCPARM_SHIFT) & IOCPARM_MASK


# Requests NetBSD's pfioctl() implements (pfvar.h 1.x of netbsd-6..10, pf_ioctl.c 1.46-1.55 switch) that the
# emulator does not model: name -> (direction, number, argument size or None when the emulator does not compute
# the struct's size; then any size with that direction and number is taken for the request).
UNMODELLED_REQUESTS = {
    "DIOCADDRULE": (IOC_INOUT, 4, None), "DIOCGETRULES": (IOC_INOUT, 6, None), "DIOCGETRULE": (IOC_INOUT, 7, None),
    "DIOCSETSTATUSIF": (IOC_INOUT, 20, 16), "DIOCCLRSTATUS": (IOC_VOID, 22, 0), "DIOCNATLOOK": (IOC_INOUT, 23, None),
    "DIOCSETDEBUG": (IOC_INOUT, 24, 4), "DIOCCHANGERULE": (IOC_INOUT, 26, None), "DIOCSETTIMEOUT": (IOC_INOUT, 29, 8),
    "DIOCCLRRULECTRS": (IOC_VOID, 38, 0), "DIOCSETLIMIT": (IOC_INOUT, 40, 8), "DIOCSTARTALTQ": (IOC_VOID, 42, 0),
    "DIOCSTOPALTQ": (IOC_VOID, 43, 0), "DIOCADDALTQ": (IOC_INOUT, 45, None), "DIOCGETALTQS": (IOC_INOUT, 47, None),
    "DIOCGETALTQ": (IOC_INOUT, 48, None), "DIOCCHANGEALTQ": (IOC_INOUT, 49, None),
    "DIOCGETQSTATS": (IOC_INOUT, 50, None), "DIOCBEGINADDRS": (IOC_INOUT, 51, None),
    "DIOCADDADDR": (IOC_INOUT, 52, None), "DIOCGETADDRS": (IOC_INOUT, 53, None), "DIOCGETADDR": (IOC_INOUT, 54, None),
    "DIOCCHANGEADDR": (IOC_INOUT, 55, None), "DIOCGETRULESETS": (IOC_INOUT, 58, None),
    "DIOCGETRULESET": (IOC_INOUT, 59, None), "DIOCRCLRTABLES": (IOC_INOUT, 60, None),
    "DIOCRADDTABLES": (IOC_INOUT, 61, None), "DIOCRDELTABLES": (IOC_INOUT, 62, None),
    "DIOCRGETTABLES": (IOC_INOUT, 63, None), "DIOCRGETTSTATS": (IOC_INOUT, 64, None),
    "DIOCRCLRTSTATS": (IOC_INOUT, 65, None), "DIOCRCLRADDRS": (IOC_INOUT, 66, None),
    "DIOCRADDADDRS": (IOC_INOUT, 67, None), "DIOCRDELADDRS": (IOC_INOUT, 68, None),
    "DIOCRSETADDRS": (IOC_INOUT, 69, None), "DIOCRGETADDRS": (IOC_INOUT, 70, None),
    "DIOCRGETASTATS": (IOC_INOUT, 71, None), "DIOCRCLRASTATS": (IOC_INOUT, 72, None),
    "DIOCRTSTADDRS": (IOC_INOUT, 73, None), "DIOCRSETTFLAGS": (IOC_INOUT, 74, None),
    "DIOCRINADEFINE": (IOC_INOUT, 77, None), "DIOCOSFPFLUSH": (IOC_VOID, 78, 0), "DIOCOSFPADD": (IOC_INOUT, 79, None),
    "DIOCOSFPGET": (IOC_INOUT, 80, None), "DIOCXBEGIN": (IOC_INOUT, 81, None), "DIOCXCOMMIT": (IOC_INOUT, 82, None),
    "DIOCXROLLBACK": (IOC_INOUT, 83, None), "DIOCGETSRCNODES": (IOC_INOUT, 84, None),
    "DIOCCLRSRCNODES": (IOC_VOID, 85, 0), "DIOCSETHOSTID": (IOC_INOUT, 86, 4), "DIOCIGETIFACES": (IOC_INOUT, 87, None),
    "DIOCSETIFFLAG": (IOC_INOUT, 89, None), "DIOCCLRIFFLAG": (IOC_INOUT, 90, None),
    "DIOCKILLSRCNODES": (IOC_INOUT, 91, None),
}


ABIS = {
    # name: (pointer size, byte order)
    "lp64-le": (8, "little"),
    "lp64-be": (8, "big"),
    "ilp32-le": (4, "little"),
    "ilp32-be": (4, "big"),
}


class Layout(object):
    """Sizes, request numbers and struct codecs of one NetBSD ABI."""

    def __init__(self, abi):
        if abi not in ABIS:
            raise ValueError("unknown ABI %r (expected one of %s)" % (abi, ", ".join(sorted(ABIS))))
        self.name = abi
        self.pointer_size, self.byte_order = ABIS[abi]
        order = "<" if self.byte_order == "little" else ">"
        self.order = order
        lp64 = self.pointer_size == 8
        # struct pfioc_states / pfioc_state: int or u32, (pad), pointer.
        self.pfioc_states = struct.Struct(order + ("i4xQ" if lp64 else "iI"))
        self.pfioc_state = struct.Struct(order + ("I4xQ" if lp64 else "II"))
        rule_addr = "32sQBB6xHHBB2x" if lp64 else "32sIBB2xHHBB2x"
        # pfioc_state_kill: af, proto, src rule addr, dst rule addr, ifname.
        self.pfioc_state_kill = struct.Struct(order + "B3xi" + rule_addr + rule_addr + "16s")
        self.kill_ifname_offset = self.pfioc_state_kill.size - 16
        self.pf_status = struct.Struct(order + "16Q7Q3Q3Q12Q4QQ6I16s16s")
        self.u32 = struct.Struct(order + "I")
        self.i32 = struct.Struct(order + "i")
        self.u16 = struct.Struct(order + "H")
        self.int_pair = struct.Struct(order + "iI")  # pfioc_tm, pfioc_limit
        self.creation_expire = struct.Struct(order + "II")
        self.requests = {
            ioc(IOC_VOID, 1, 0): "DIOCSTART",
            ioc(IOC_VOID, 2, 0): "DIOCSTOP",
            ioc(IOC_INOUT, 8, 4): "DIOCSETLCK",
            ioc(IOC_INOUT, 18, self.pfioc_state_kill.size): "DIOCCLRSTATES",
            ioc(IOC_INOUT, 19, self.pfioc_state.size): "DIOCGETSTATE",
            ioc(IOC_INOUT, 21, self.pf_status.size): "DIOCGETSTATUS",
            ioc(IOC_INOUT, 25, self.pfioc_states.size): "DIOCGETSTATES",
            ioc(IOC_INOUT, 30, 8): "DIOCGETTIMEOUT",
            ioc(IOC_INOUT, 37, self.pfioc_state.size): "DIOCADDSTATE",
            ioc(IOC_INOUT, 39, 8): "DIOCGETLIMIT",
            ioc(IOC_INOUT, 41, self.pfioc_state_kill.size): "DIOCKILLSTATES",
            ioc(IOC_INOUT, 56, self.pfioc_states.size): "DIOCADDSTATES",
        }
        self.numbers = dict((name, number) for number, name in self.requests.items())
        self._unmodelled_exact = {}
        self._unmodelled_any_size = {}
        for name, (direction, number, size) in UNMODELLED_REQUESTS.items():
            if size is None:
                self._unmodelled_any_size[(direction, number)] = name
            else:
                self._unmodelled_exact[ioc(direction, number, size)] = name

    def unmodelled_request(self, request):
        """Name of the NetBSD request ``request`` encodes if the emulator does not model it, else None."""
        name = self._unmodelled_exact.get(request)
        if name is None and (request >> 8) & 0xFF == GROUP_D:
            name = self._unmodelled_any_size.get((request & (IOC_INOUT | IOC_VOID), request & 0xFF))
        return name

    def __repr__(self):
        return "Layout(%r)" % self.name


def host_abi():
    """The ABI of the running Python (pointer width and byte order)."""
    import ctypes  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel

    width = "lp64" if ctypes.sizeof(ctypes.c_void_p) == 8 else "ilp32"
    return width + ("-le" if sys.byteorder == "little" else "-be")
