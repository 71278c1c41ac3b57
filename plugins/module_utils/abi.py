# -*- coding: utf-8 -*-
# Copyright: netbsd.pf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""NetBSD ABI description, struct sizes, ioctl numbers and pf(4) constants.

Everything kernel-facing is derived here from the ABI (pointer width, 64-bit
alignment, byte order) with the C layout rules, never copied from a table of
magic numbers, so a new ABI needs no new constants.  Source: the NetBSD pf
reference (netbsd-pf-abi.md), sections 2, 3, 4 and 11.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import sys

RECORD_SIZE = 240          # sizeof(struct pfsync_state), packed, every ABI
PF_STATUS_SIZE = 424       # sizeof(struct pf_status), every ABI
IFNAMSIZ = 16
MAX_IFNAME_LEN = IFNAMSIZ - 1

AF_INET = 2
AF_INET6 = 24              # NetBSD's value, not Linux's 10
AF_NAMES = {AF_INET: "inet", AF_INET6: "inet6"}
AF_NUMBERS = {"inet": AF_INET, "inet6": AF_INET6}

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58

PF_INOUT = 0
PF_IN = 1
PF_OUT = 2

# pf_rule_addr port operators (pfvar.h PF_OP_*), the two a selection uses.
PF_OP_EQ = 2
PF_OP_RRG = 9       # a1 <= p <= a2

PFSYNC_SCRUB_FLAG_VALID = 0x01
FLOATING_IFNAME = "all"     # kif name of states not bound to an interface
PFRES_STATELOCKED = 15      # NetBSD-only reason counter: packets dropped while locked
PFSTATE_HIWAT = 10000       # default state limit
PF_LIMIT_STATES = 0

# PFTM_* timeout indices and the kernel's default values in seconds.
PFTM_NAMES = (
    "tcp.first", "tcp.opening", "tcp.established", "tcp.closing", "tcp.finwait",
    "tcp.closed", "udp.first", "udp.single", "udp.multiple", "icmp.first",
    "icmp.error", "other.first", "other.single", "other.multiple", "frag",
    "interval", "adaptive.start", "adaptive.end", "src.track", "ts.diff",
)
PFTM_CONSTANT_NAMES = (
    "TCP_FIRST_PACKET", "TCP_OPENING", "TCP_ESTABLISHED", "TCP_CLOSING", "TCP_FIN_WAIT",
    "TCP_CLOSED", "UDP_FIRST_PACKET", "UDP_SINGLE", "UDP_MULTIPLE", "ICMP_FIRST_PACKET",
    "ICMP_ERROR_REPLY", "OTHER_FIRST_PACKET", "OTHER_SINGLE", "OTHER_MULTIPLE", "FRAG",
    "INTERVAL", "ADAPTIVE_START", "ADAPTIVE_END", "SRC_NODE", "TS_DIFF",
)
PFTM_DEFAULTS = (120, 30, 86400, 900, 45, 90, 60, 30, 60, 20, 10, 60, 30, 60, 30, 10, 6000, 12000, 0, 30)
PFTM_MAX = 20
PFTM_UNTIL_PACKET = 23
# Timeout indices DIOCADDSTATES accepts (anything else is EINVAL).
PFTM_ACCEPTED = frozenset(list(range(PFTM_MAX)) + [PFTM_UNTIL_PACKET])
# Indices that are per-state expiry timeouts (the rest are tuning knobs).
PFTM_STATE_TIMEOUTS = tuple(range(15))

# Peer state names, by protocol family (tcp_fsm.h tcpstates[], PFUDPS_NAMES, PFOTHERS_NAMES).
TCP_STATE_NAMES = (
    "CLOSED", "LISTEN", "SYN_SENT", "SYN_RCVD", "ESTABLISHED", "CLOSE_WAIT",
    "FIN_WAIT_1", "CLOSING", "LAST_ACK", "FIN_WAIT_2", "TIME_WAIT",
)
PF_TCPS_PROXY_SRC = 11     # synproxy states: no name, pfs prints nothing
PF_TCPS_PROXY_DST = 12
UDP_STATE_NAMES = ("NO_TRAFFIC", "SINGLE", "MULTIPLE")
OTHER_STATE_NAMES = ("NO_TRAFFIC", "SINGLE", "MULTIPLE")

PF_STATUS_COUNTER_NAMES = (
    "match", "bad-offset", "fragment", "short", "normalize", "memory", "bad-timestamp",
    "congestion", "ip-option", "proto-cksum", "state-mismatch", "state-insert",
    "state-limit", "src-limit", "synproxy", "state-locked",
)
PF_STATUS_LCOUNTER_NAMES = (
    "max-states-per-rule", "max-src-states", "max-src-nodes", "max-src-conn",
    "max-src-conn-rate", "overload-table-insertion", "overload-flush-states",
)
PF_STATUS_FCOUNTER_NAMES = ("searches", "inserts", "removals")

# NetBSD's /etc/protocols (revision 1.25, the IANA registry of 2012-08-21):
# official name (what getprotobynumber returns and pfs prints) and number.
# Built in so that output never depends on the host's /etc/protocols.
_PROTOCOLS = (
    "hopopt 0 icmp 1 igmp 2 ggp 3 ipv4 4 st 5 tcp 6 cbt 7 egp 8 igp 9 bbn-rcc-mon 10 "
    "nvp-ii 11 pup 12 argus 13 emcon 14 xnet 15 chaos 16 udp 17 mux 18 dcn-meas 19 hmp 20 "
    "prm 21 xns-idp 22 trunk-1 23 trunk-2 24 leaf-1 25 leaf-2 26 rdp 27 irtp 28 iso-tp4 29 "
    "netblt 30 mfe-nsp 31 merit-inp 32 dccp 33 3pc 34 idpr 35 xtp 36 ddp 37 idpr-cmtp 38 "
    "tp++ 39 il 40 ipv6 41 sdrp 42 ipv6-route 43 ipv6-frag 44 idrp 45 rsvp 46 gre 47 dsr 48 "
    "bna 49 esp 50 ah 51 i-nlsp 52 swipe 53 narp 54 mobile 55 tlsp 56 skip 57 ipv6-icmp 58 "
    "ipv6-nonxt 59 ipv6-opts 60 cftp 62 sat-expak 64 kryptolan 65 rvd 66 ippc 67 sat-mon 69 "
    "visa 70 ipcv 71 cpnx 72 cphb 73 wsn 74 pvp 75 br-sat-mon 76 sun-nd 77 wb-mon 78 "
    "wb-expak 79 iso-ip 80 vmtp 81 secure-vmtp 82 vines 83 ttp 84 nsfnet-igp 85 dgp 86 "
    "tcf 87 eigrp 88 ospfigp 89 sprite-rpc 90 larp 91 mtp 92 ax.25 93 ipip 94 micp 95 "
    "scc-sp 96 etherip 97 encap 98 gmtp 100 ifmp 101 pnni 102 pim 103 aris 104 scps 105 "
    "qnx 106 a/n 107 ipcomp 108 snp 109 compaq-peer 110 ipx-in-ip 111 vrrp 112 pgm 113 "
    "l2tp 115 ddx 116 iatp 117 stp 118 srp 119 uti 120 smp 121 sm 122 ptp 123 isis 124 "
    "fire 125 crtp 126 crudp 127 sscopmce 128 iplt 129 sps 130 pipe 131 sctp 132 fc 133 "
    "rsvp-e2e-ignore 134 mobility 135 udplite 136 mpls-in-ip 137 manet 138 hip 139 "
    "shim6 140 wesp 141 rohc 142 reserved 255"
).split()
PROTOCOL_NAMES = dict((int(_PROTOCOLS[i + 1]), _PROTOCOLS[i]) for i in range(0, len(_PROTOCOLS), 2))
# Aliases of that file that differ from the official name only beyond case.
_PROTOCOL_ALIASES = {"iptm": 84}
PROTOCOL_NUMBERS = dict((name, number) for number, name in PROTOCOL_NAMES.items())
PROTOCOL_NUMBERS.update(_PROTOCOL_ALIASES)


def protocol_name(number):
    """What pfs prints for an IP protocol: NetBSD's official name, else the number."""
    return PROTOCOL_NAMES.get(number) or str(number)


def protocol_number(value):
    """Protocol number from a name (NetBSD name or alias, any case) or a decimal string/int.

    Raises ValueError for an unknown name or a number outside 0..255.
    """
    if isinstance(value, int):
        number = value
    elif value.isdigit():
        number = int(value)
    else:
        try:
            return PROTOCOL_NUMBERS[value.lower()]
        except KeyError:
            raise ValueError("unknown protocol name %r (not in NetBSD's /etc/protocols)" % value)
    if not 0 <= number <= 255:
        raise ValueError("protocol number %d out of range 0..255" % number)
    return number


def peer_state_names(proto):
    """The name table pfs uses for a peer's state, by protocol (ICMP uses the 'other' table)."""
    if proto == IPPROTO_TCP:
        return TCP_STATE_NAMES
    if proto == IPPROTO_UDP:
        return UDP_STATE_NAMES
    return OTHER_STATE_NAMES


# NetBSD sys/sys/ioccom.h
IOC_VOID = 0x20000000
IOC_OUT = 0x40000000
IOC_IN = 0x80000000
IOC_INOUT = IOC_IN | IOC_OUT
IOCPARM_MASK = 0x1fff
PF_IOC_GROUP = ord("D")


def _ioc(direction, group, number, length):
    return direction | ((length & IOCPARM_MASK) << 16) | (group << 8) | number


def _IO(group, number):
    return _ioc(IOC_VOID, group, number, 0)


def _IOWR(group, number, length):
    return _ioc(IOC_INOUT, group, number, length)


def _align(offset, alignment):
    return (offset + alignment - 1) // alignment * alignment


class Abi:
    """A NetBSD ABI: pointer width (4 or 8), 64-bit alignment and byte order.

    align64 says whether 64-bit integers are 8-byte aligned inside structs
    (True on LP64, armv7 EABI and powerpc; False on i386 and old-ABI arm).
    """

    def __init__(self, pointer_size, align64, byte_order):
        if pointer_size not in (4, 8):
            raise ValueError("pointer_size must be 4 or 8, not %r" % (pointer_size,))
        if byte_order not in ("little", "big"):
            raise ValueError("byte_order must be 'little' or 'big', not %r" % (byte_order,))
        self.pointer_size = pointer_size
        self.align64 = bool(align64)
        self.byte_order = byte_order
        self.prefix = "<" if byte_order == "little" else ">"
        self.pointer_code = "Q" if pointer_size == 8 else "I"
        self._compute_layouts()

    @classmethod
    def host(cls):
        """The ABI of the running Python (which must match the kernel's, see PfDevice)."""
        return cls(ctypes.sizeof(ctypes.c_void_p), ctypes.alignment(ctypes.c_uint64) == 8, sys.byteorder)

    @property
    def name(self):
        return "%s-%s%s" % ("LP64" if self.pointer_size == 8 else "ILP32",
                            "LE" if self.byte_order == "little" else "BE",
                            "" if self.align64 or self.pointer_size == 8 else " (4-byte aligned 64-bit)")

    def __repr__(self):
        return "Abi(pointer_size=%d, align64=%r, byte_order=%r)" % (self.pointer_size, self.align64, self.byte_order)

    def __eq__(self, other):
        return isinstance(other, Abi) and (self.pointer_size, self.align64, self.byte_order) == (
            other.pointer_size, other.align64, other.byte_order)

    def __ne__(self, other):
        return not self == other

    def __hash__(self):
        return hash((self.pointer_size, self.align64, self.byte_order))

    def _compute_layouts(self):
        ptr = self.pointer_size
        # struct pfioc_states { int ps_len; union { caddr_t; struct pfsync_state * } ps_u; }
        self.pfioc_states_buf_offset = _align(4, ptr)
        self.pfioc_states_size = _align(self.pfioc_states_buf_offset + ptr, max(4, ptr))

        # struct pf_addr_wrap { union v (32, align 4); union p (pointer); u8 type; u8 iflags; }
        wrap_align = max(4, ptr)
        wrap_p = _align(32, ptr)
        wrap_type = wrap_p + ptr
        wrap_size = _align(wrap_type + 2, wrap_align)
        # struct pf_rule_addr { pf_addr_wrap addr; u16 port[2]; u8 neg; u8 port_op; }
        rule_addr_size = _align(wrap_size + 6, wrap_align)
        # struct pfioc_state_kill { sa_family_t psk_af; int psk_proto; pf_rule_addr src, dst; char ifname[16]; }
        src = _align(4 + 4, wrap_align)
        dst = src + rule_addr_size
        ifname = dst + rule_addr_size
        self.pfioc_state_kill_size = _align(ifname + IFNAMSIZ, wrap_align)
        self.kill_offsets = {
            "af": 0, "proto": 4, "ifname": ifname,
            "src.addr": src, "src.mask": src + 16, "src.port": src + wrap_size,
            "src.neg": src + wrap_size + 4, "src.port_op": src + wrap_size + 5,
            "dst.addr": dst, "dst.mask": dst + 16, "dst.port": dst + wrap_size,
            "dst.neg": dst + wrap_size + 4, "dst.port_op": dst + wrap_size + 5,
        }

        # pf_status: only u64/u32/char arrays in an order that never needs padding.
        self.pf_status_size = PF_STATUS_SIZE
        self.pf_status_format = self.prefix + "16Q7Q3Q3Q12Q4QQ6I16s16s"
        self.pfioc_tm_size = 8       # { int timeout; int seconds; }
        self.pfioc_limit_size = 8    # { int index; unsigned limit; }
        self.u32_size = 4

        self.ioctls = {
            "DIOCSTART": _IO(PF_IOC_GROUP, 1),
            "DIOCSTOP": _IO(PF_IOC_GROUP, 2),
            "DIOCSETLCK": _IOWR(PF_IOC_GROUP, 8, self.u32_size),
            "DIOCCLRSTATES": _IOWR(PF_IOC_GROUP, 18, self.pfioc_state_kill_size),
            "DIOCGETSTATUS": _IOWR(PF_IOC_GROUP, 21, self.pf_status_size),
            "DIOCGETSTATES": _IOWR(PF_IOC_GROUP, 25, self.pfioc_states_size),
            "DIOCGETTIMEOUT": _IOWR(PF_IOC_GROUP, 30, self.pfioc_tm_size),
            "DIOCGETLIMIT": _IOWR(PF_IOC_GROUP, 39, self.pfioc_limit_size),
            "DIOCKILLSTATES": _IOWR(PF_IOC_GROUP, 41, self.pfioc_state_kill_size),
            "DIOCADDSTATES": _IOWR(PF_IOC_GROUP, 56, self.pfioc_states_size),
        }
        self.ioctl_names = dict((number, name) for name, number in self.ioctls.items())


LP64_LE = Abi(8, True, "little")      # amd64, aarch64
LP64_BE = Abi(8, True, "big")         # sparc64
ILP32_LE = Abi(4, False, "little")    # i386 (armv7 EABI: Abi(4, True, "little"), same sizes)
ILP32_BE = Abi(4, True, "big")        # powerpc
KNOWN_ABIS = (LP64_LE, LP64_BE, ILP32_LE, ILP32_BE)
