# -*- coding: utf-8 -*-
# Copyright: netbsd.pf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ASCII format of NetBSD's pfs(8): a byte-identical writer and a tolerant reader.

Writer: reference section 7.3, including pfs's double spaces and its unspaced
``scrub flags Fttl Tmod M``.  Reader: everything pfs prints and everything its
grammar (section 7.4) accepts, layout-free, each state parsed from scratch
(pfs leaks fields between lines; we do not).  Chunks of lines in the printed
form go through one compiled regular expression and are then converted column
by column (a field of every line at once, in C loops), which is what makes a
million lines take seconds; anything else falls back to a tokenizer.  ``id``
and ``cid`` are host-order numbers, so both directions take the byte order of
the host the text belongs to.

Text is handled as Latin-1 so that any byte of an interface name survives.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import io
import itertools
import operator
import re
import socket
import struct
from socket import inet_ntoa

from ansible_collections.netbsd.pf.plugins.module_utils.abi import (
    AF_INET, AF_INET6, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, MAX_IFNAME_LEN,
    OTHER_STATE_NAMES, PF_IN, PF_OUT, PF_TCPS_PROXY_SRC, TCP_STATE_NAMES, UDP_STATE_NAMES,
    PROTOCOL_NAMES, PROTOCOL_NUMBERS, RECORD_SIZE, peer_state_names, protocol_name, protocol_number,
)
from ansible_collections.netbsd.pf.plugins.module_utils.errors import PfStateError
from ansible_collections.netbsd.pf.plugins.module_utils.records import (
    DST_BASE, OFF_DST, OFF_SRC, OFFSET, PEER_FIELDS, SRC_BASE, StateCodec, inet_ntop, inet_pton, partial_struct,
    record_count,
)

ENCODING = "latin-1"
U32_MAX = 0xffffffff
U64_MAX = 0xffffffffffffffff

# Field indices of StateCodec tuples used below.
_SRC, _DST = SRC_BASE, DST_BASE
_NUMERIC_STATE_PROTOS = (IPPROTO_ICMP, IPPROTO_ICMPV6)
PROTOCOL_TEXT = tuple(PROTOCOL_NAMES.get(number) or str(number) for number in range(256))


class TextFormatError(PfStateError, ValueError):
    """A pfs text file that cannot be read; the message starts with `line N:`."""

    message_lacks_file = True


# --- writer ---------------------------------------------------------------------

def _peer_text(proto, peer):
    flags, ttl, scrub_flag, ts_mod, seqlo, seqhi, seqdiff, max_win, mss, state, wscale = peer
    if proto == IPPROTO_TCP:
        text = "state " + TCP_STATE_NAMES[state] if state < len(TCP_STATE_NAMES) else ""
        if seqdiff:
            text += " seq [%d:%d,%d]" % (seqlo, seqhi, seqdiff)
        else:
            text += " seq [%d:%d]" % (seqlo, seqhi)
        if mss:
            text += " max_win %d mss %d wscale %d" % (max_win, mss, wscale)
        else:
            text += " max_win %d wscale %d" % (max_win, wscale)
    elif proto == IPPROTO_UDP:
        text = "state " + UDP_STATE_NAMES[state] if state < len(UDP_STATE_NAMES) else ""
    elif proto in _NUMERIC_STATE_PROTOS:
        text = " state %d" % state
    else:
        text = " state " + OTHER_STATE_NAMES[state] if state < len(OTHER_STATE_NAMES) else ""
    if scrub_flag == 1:
        return text + " scrub flags %dttl %dmod %d" % (flags, ttl, ts_mod)
    return text + " no-scrub"


_port_unpack = struct.Struct(">H").unpack


def _host_text(af, addr, port):
    return (inet_ntop(af, addr) or "?") + _PORT_TEXT_BY_RAW[port]


def format_record(values, id_number, peer_cache=None):
    """One pfs line (with its newline) for a StateCodec tuple; `id_number` is the host-order id."""
    af, proto, direction = values[45], values[46], values[47]
    lan_addr, lan_port = values[2], values[3]
    if af == AF_INET:
        lan = inet_ntoa(lan_addr[:4]) + _PORT_TEXT_BY_RAW[lan_port]
        ext = inet_ntoa(values[6][:4]) + _PORT_TEXT_BY_RAW[values[7]]
    else:
        lan = _host_text(af, lan_addr, lan_port)
        ext = _host_text(af, values[6], values[7])
    if values[4] != lan_addr or values[5] != lan_port:
        using = " using " + _host_text(af, values[4], values[5])
    else:
        using = ""
    if direction == PF_OUT:
        first, second = values[_SRC:_SRC + 11], values[_DST:_DST + 11]
    else:
        first, second = values[_DST:_DST + 11], values[_SRC:_SRC + 11]
    if peer_cache is None:
        first_text, second_text = _peer_text(proto, first), _peer_text(proto, second)
    else:
        first_text = peer_cache.get((proto, first))
        if first_text is None:
            first_text = peer_cache[(proto, first)] = _peer_text(proto, first)
        second_text = peer_cache.get((proto, second))
        if second_text is None:
            second_text = peer_cache[(proto, second)] = _peer_text(proto, second)
    ifname = values[1]
    if ifname[-1:] == b"\0":
        ifname = ifname[:ifname.index(b"\0")]
    return "state %s on %s proto %s from %s to %s%s id %d cid %d expire %d timeout %d src %s dst %s\n" % (
        "out" if direction == PF_OUT else "in", ifname.decode(ENCODING),
        PROTOCOL_TEXT[proto], lan, ext, using,
        id_number, values[44], values[35], values[50], first_text, second_text)


# Record layout the writer and the fast reader work on: the text-carried fields of
# pfsync_state in memory order (reference 3.5), everything else skipped.  id and
# creatorid are numbers in the file's byte order; ports stay raw network-order bytes.
_HOST_FIELDS = ("lan_addr", "lan_port", "gwy_addr", "gwy_port", "ext_addr", "ext_port")
_TAIL_FIELDS = ("expire", "creatorid", "af", "proto", "direction", "timeout")
_TEXT_FIELDS = ((("id", "Q"), "ifname") + _HOST_FIELDS
                + tuple(peer + "_" + name for peer in ("src", "dst") for name in PEER_FIELDS) + _TAIL_FIELDS)


class _Cache(dict):
    """dict that fills itself through `compute(key)` and empties itself when full."""

    def __init__(self, compute, limit=65536):
        dict.__init__(self)
        self.compute = compute
        self.limit = limit

    def __missing__(self, key):
        value = self.compute(key)
        if len(self) >= self.limit:
            self.clear()
        self[key] = value
        return value


def _ifname_text(raw):
    if raw[-1:] == b"\0":
        raw = raw[:raw.index(b"\0")]
    return raw.decode(ENCODING)


def shown_text(text):
    """``text`` for a person's terminal: every character the reader would not take as part of a name
    (control characters, ESC, spaces, non-ASCII) as a backslash escape."""
    return "".join(char if _NAME_CHAR.match(char) else "\\\\" if char == "\\" else
                   ("\\x%02x" % ord(char) if ord(char) < 256 else "\\u%04x" % ord(char)) for char in text)


def _carried_ifname_text(raw):
    """The name as pfs text writes it; TextFormatError for one the reader would not read back as it is."""
    text = _ifname_text(raw)
    if b"\0" not in raw:
        raise TextFormatError("interface name %s is %d characters long (pfs text carries at most %d)"
                              % (shown_text(text), len(text), MAX_IFNAME_LEN))
    if text and not _TOKEN_RE.fullmatch(text):
        raise TextFormatError("interface name '%s' holds characters pfs text cannot carry (it separates words "
                              "at them)" % shown_text(text))
    return text


# Filled as ports turn up: a table of all 65536 made at import would cost every command start-up.
_PORT_TEXT_BY_RAW = _Cache(lambda raw: ":[%d]" % _port_unpack(raw)[0], limit=65537)
_IFNAME_TEXT = _Cache(_carried_ifname_text, limit=4096)
_IFNAME_SHOWN = _Cache(lambda raw: shown_text(_ifname_text(raw)), limit=4096)
# Address text by af and raw 16 bytes (unknown af: '?', as inet_ntop fails in pfs).
_ADDRESS_TEXT = {AF_INET: _Cache(lambda raw: inet_ntoa(raw[:4])), AF_INET6: _Cache(lambda raw: inet_ntop(AF_INET6, raw))}
_UNKNOWN_AF_TEXT = _Cache(lambda raw: "?", limit=1)


def _scrub_text(scrub_flag, flags, ttl, ts_mod):
    if scrub_flag == 1:
        return " scrub flags %dttl %dmod %d" % (flags, ttl, ts_mod)
    return " no-scrub"


def _peer_prefix_tables():
    """Per protocol: text of a peer without its scrub part, by state, for peers without sequence numbers."""
    udp = tuple("state " + UDP_STATE_NAMES[state] if state < len(UDP_STATE_NAMES) else "" for state in range(256))
    numeric = tuple(" state %d" % state for state in range(256))
    other = tuple(" state " + OTHER_STATE_NAMES[state] if state < len(OTHER_STATE_NAMES) else "" for state in range(256))
    return tuple(udp if proto == IPPROTO_UDP else numeric if proto in _NUMERIC_STATE_PROTOS else other
                 for proto in range(256))


_PEER_PREFIX = _peer_prefix_tables()
_TCP_STATE_TEXT = tuple("state " + TCP_STATE_NAMES[state] if state < len(TCP_STATE_NAMES) else "" for state in range(256))


def _tcp_peer_text(flags, ttl, scrub_flag, ts_mod, seqlo, seqhi, seqdiff, max_win, mss, state, wscale):
    if seqdiff:
        seq = "%s seq [%d:%d,%d]" % (_TCP_STATE_TEXT[state], seqlo, seqhi, seqdiff)
    else:
        seq = "%s seq [%d:%d]" % (_TCP_STATE_TEXT[state], seqlo, seqhi)
    if mss:
        window = " max_win %d mss %d wscale %d" % (max_win, mss, wscale)
    else:
        window = " max_win %d wscale %d" % (max_win, wscale)
    if scrub_flag == 1:
        return seq + window + " scrub flags %dttl %dmod %d" % (flags, ttl, ts_mod)
    return seq + window + " no-scrub"


_TCP_LINE = ("state %s on %s proto tcp from %s%s to %s%s%s id %d cid %d expire %d timeout %d"
             " src %s seq [%d:%d] max_win %d wscale %d no-scrub dst %s seq [%d:%d] max_win %d wscale %d no-scrub\n")
_LINE = "state %s on %s proto %s from %s%s to %s%s%s id %d cid %d expire %d timeout %d src %s dst %s\n"


def format_block(block, byte_order, shown=False):
    """pfs text (str) of every record of a block (same text as format_record, one record at a time).

    Interface names that pfs text cannot carry raise TextFormatError, or with
    ``shown`` (text for a person, not a file) are escaped with shown_text().
    """
    record_count(block)
    ifnames = _IFNAME_SHOWN if shown else _IFNAME_TEXT
    lines = []
    append = lines.append
    for (state_id, ifname, lan, lan_port, gwy, gwy_port, ext, ext_port,
         f1, t1, s1, m1, lo1, hi1, d1, w1, ms1, st1, ws1,
         f2, t2, s2, m2, lo2, hi2, d2, w2, ms2, st2, ws2,
         expire, creatorid, af, proto, direction, timeout) in partial_struct(byte_order, _TEXT_FIELDS).iter_unpack(block):
        names = _ADDRESS_TEXT.get(af, _UNKNOWN_AF_TEXT)
        # The far end of a state seldom repeats: formatted directly, it neither misses in the
        # cache nor evicts the local addresses (lan) that do repeat.
        ext_text = inet_ntoa(ext[:4]) if af == AF_INET else names[ext]
        if gwy != lan or gwy_port != lan_port:
            using = " using " + names[gwy] + _PORT_TEXT_BY_RAW[gwy_port]
        else:
            using = ""
        if proto == IPPROTO_TCP:
            if not (d1 or ms1 or d2 or ms2) and s1 != 1 and s2 != 1:
                # The common TCP state, one template for the whole line.
                if direction == PF_OUT:
                    append(_TCP_LINE % (
                        "out", ifnames[ifname], names[lan], _PORT_TEXT_BY_RAW[lan_port], ext_text,
                        _PORT_TEXT_BY_RAW[ext_port], using, state_id, creatorid, expire, timeout,
                        _TCP_STATE_TEXT[st1], lo1, hi1, w1, ws1, _TCP_STATE_TEXT[st2], lo2, hi2, w2, ws2))
                else:
                    append(_TCP_LINE % (
                        "in", ifnames[ifname], names[lan], _PORT_TEXT_BY_RAW[lan_port], ext_text,
                        _PORT_TEXT_BY_RAW[ext_port], using, state_id, creatorid, expire, timeout,
                        _TCP_STATE_TEXT[st2], lo2, hi2, w2, ws2, _TCP_STATE_TEXT[st1], lo1, hi1, w1, ws1))
                continue
            src = _tcp_peer_text(f1, t1, s1, m1, lo1, hi1, d1, w1, ms1, st1, ws1)
            dst = _tcp_peer_text(f2, t2, s2, m2, lo2, hi2, d2, w2, ms2, st2, ws2)
        else:
            prefix = _PEER_PREFIX[proto]
            src = prefix[st1] + (" no-scrub" if s1 != 1 else _scrub_text(s1, f1, t1, m1))
            dst = prefix[st2] + (" no-scrub" if s2 != 1 else _scrub_text(s2, f2, t2, m2))
        if direction == PF_OUT:
            append(_LINE % ("out", ifnames[ifname], PROTOCOL_TEXT[proto], names[lan], _PORT_TEXT_BY_RAW[lan_port],
                            ext_text, _PORT_TEXT_BY_RAW[ext_port], using, state_id, creatorid, expire, timeout, src, dst))
        else:
            append(_LINE % ("in", ifnames[ifname], PROTOCOL_TEXT[proto], names[lan], _PORT_TEXT_BY_RAW[lan_port],
                            ext_text, _PORT_TEXT_BY_RAW[ext_port], using, state_id, creatorid, expire, timeout, dst, src))
    return "".join(lines)


class PfsTextWriter:
    """Streams blocks to a binary file object as pfs would print them."""

    def __init__(self, fileobj, byte_order):
        self.fileobj = fileobj
        self.byte_order = byte_order
        self.count = 0

    def write_block(self, block):
        try:
            text = format_block(block, self.byte_order)
        except TextFormatError as exc:
            raise TextFormatError("cannot write state %s as pfs text: %s" % (self._first_uncarried(block), exc))
        self.fileobj.write(text.encode(ENCODING))
        self.count += record_count(block)

    def _first_uncarried(self, block):
        """'N (id I)' of the first state of ``block`` whose interface name pfs text cannot carry."""
        for index, (state_id, ifname) in enumerate(partial_struct(self.byte_order, (("id", "Q"), "ifname")).iter_unpack(block)):
            try:
                _IFNAME_TEXT[ifname]
            except TextFormatError:
                return "%d (id %d)" % (self.count + index + 1, state_id)
        return "?"


# --- reader ---------------------------------------------------------------------

# Lexer (token.l) STRING class, plus '/', '+' (protocol names pfs prints, such
# as "a/n" and "tp++") and ',' (pfs prints "[LO:HI,DIFF]").  Any other
# character separates tokens, as flex's default rule makes it do in pfs.
_TOKEN_RE = re.compile(r"[A-Za-z0-9:\[][A-Za-z0-9\[\]_:%.\-/+,]*")
_NAME_CHAR = re.compile(r"[A-Za-z0-9\[\]_:%.\-/+,]")
# 20 digits hold any u64; longer numbers are out of range for every field, and
# refusing them here keeps int() away from Python's digit limit (ValueError).
_NUMBER_RE = re.compile(r"[0-9]{1,20}\Z")
_GLUED_RE = re.compile(r"([0-9]{1,20})(ttl|mod|mode)\Z")
_SEQ_RE = re.compile(r"\[([0-9]{1,20}):([0-9]{1,20})(?:,([0-9]{1,20}))?\]\Z")
_HOST_RE = re.compile(r"(.*):\[([0-9]{1,6})\]\Z")

# Fast path of the reader: whole chunks of lines in the printed form, matched by
# one regular expression and then handled column by column (see _fast_columns
# and _fast_records).  Python work per line, not per chunk, is what costs, so
# the only per-line loops left are in C (re, map, struct); Python touches a
# line only for the rare fields (scrub values, seqdiff, mss) and 'in' states.
# Each group is a whole token (the character classes are those of _TOKEN_RE,
# bounded by single spaces), so the fast path takes the same tokens the
# tokenizer would; whatever it does not match, or cannot convert, goes to the
# tokenizer, which gives the error.
_FAST_TOKEN = rb"[A-Za-z0-9:\[][A-Za-z0-9\[\]_:%.\-/+,]"
_FAST_NUMBER = rb"([0-9]{1,20})"
_FAST_HOST = rb"([0-9A-Fa-f:][0-9A-Fa-f.:]*):\[([0-9]{1,6})\]"
# Optional parts are spelled (?:X|), which sre matches faster than (?:X)?.
_FAST_PEER = (rb"(?: |)(?:state (" + _FAST_TOKEN + rb"*)|)"
              rb"(?: seq \[" + _FAST_NUMBER + b":" + _FAST_NUMBER + b"(?:," + _FAST_NUMBER + rb"|)\]"
              rb" max_win " + _FAST_NUMBER + b"(?: mss " + _FAST_NUMBER + b"|) wscale " + _FAST_NUMBER + b"|)"
              rb" (?:no-scrub|(s)crub flags " + _FAST_NUMBER + b"ttl " + _FAST_NUMBER + b"mod " + _FAST_NUMBER + b")")
_FAST_LINES = re.compile(
    rb"^state (in|out) on ((?:" + _FAST_TOKEN + b"{0,%d})|) proto (" % (MAX_IFNAME_LEN - 1) + _FAST_TOKEN + b"*) from "
    + _FAST_HOST + b" to " + _FAST_HOST + b"(?: using " + _FAST_HOST + b"|) id " + _FAST_NUMBER + b" cid " + _FAST_NUMBER
    + b" expire " + _FAST_NUMBER + b" timeout " + _FAST_NUMBER + b" src " + _FAST_PEER + b" dst " + _FAST_PEER
    + rb"(?:\n|\r\n|\Z)", re.M)
# Groups: the line's fields, then per peer (first the one after 'src', then the one after 'dst')
# the fields below, from _FIRST_PEER and _SECOND_PEER on.  Absent optional parts are b''.
(_DIRECTION, _IFNAME, _PROTO, _LAN, _LAN_PORT, _EXT, _EXT_PORT, _GWY, _GWY_PORT,
 _ID, _CID, _EXPIRE, _TIMEOUT) = range(13)
_FIRST_PEER, _SECOND_PEER = 13, 24
_P_STATE, _P_SEQLO, _P_SEQHI, _P_SEQDIFF, _P_MAX_WIN, _P_MSS, _P_WSCALE, _P_SCRUB, _P_FLAGS, _P_TTL, _P_MOD = range(11)
_PEER_OFFSETS = (OFF_SRC, OFF_DST, 2 * OFF_DST - OFF_SRC)   # src peer, dst peer, end of peers: swapped for 'in'
# The fields the fast path packs for every line: _TEXT_FIELDS less the peer fields
# that are zero on most lines (scrub values, seqdiff, mss), patched in afterwards.
_COMMON_FIELDS = ((("id", "Q"), "ifname") + _HOST_FIELDS
                  + tuple(peer + "_" + name for peer in ("src", "dst") for name in ("seqlo", "seqhi", "max_win", "state", "wscale"))
                  + _TAIL_FIELDS)
# The rarely set peer fields, by their offset inside the peer: seqdiff, mss, scrub values.
_RARE_PEER_FIELDS = (("src_seqdiff",), ("src_mss",), ("src_pfss_flags", "src_pfss_ttl", "src_scrub_flag", "src_pfss_ts_mod"))
_SEQDIFF_IN_PEER = OFFSET["src_seqdiff"] - OFF_SRC
_MSS_IN_PEER = OFFSET["src_mss"] - OFF_SRC

_PROTOCOL_BY_TOKEN = dict((str(number).encode(), number) for number in range(256))
_PROTOCOL_BY_TOKEN.update((name.encode(ENCODING), number) for name, number in PROTOCOL_NUMBERS.items())


def _state_tables():
    """Per protocol: peer state token (bytes; b'' or None when absent) -> value, as _pack_peer maps it."""
    tables = {}
    for proto in range(256):
        names = peer_state_names(proto)
        if names not in tables:
            table = dict((str(value).encode(), value) for value in range(256))
            table.update((name.encode(), value) for value, name in enumerate(names))
            table[b""] = table[None] = PF_TCPS_PROXY_SRC if proto == IPPROTO_TCP else len(OTHER_STATE_NAMES)
            tables[names] = table
    return tuple(tables[peer_state_names(proto)] for proto in range(256))


_STATE_BY_TOKEN = _state_tables()


_DIRECTION_BY_TOKEN = {b"in": PF_IN, b"out": PF_OUT}
_AF_BY_V6_FLAG = (AF_INET, AF_INET6)
_HEX_GROUPS = b"0123456789abcdefABCDEF: "
_port_pack = struct.Struct(">H").pack
_PORT_BY_TOKEN = _Cache(lambda token: _port_pack(int(token)), limit=65537)
_SMALL_NUMBERS = {}


def _small_numbers():
    """Decimal token -> value for 0..65535, and 0 for an absent one (b'' or None); built on first use."""
    if not _SMALL_NUMBERS:
        _SMALL_NUMBERS.update(zip(map(b"%d".__mod__, range(65536)), range(65536)))
        _SMALL_NUMBERS[b""] = _SMALL_NUMBERS[None] = 0
    return _SMALL_NUMBERS


def _fast_columns(chunk):
    """The _FAST_LINES groups of every line of a chunk, one list per group; None unless every line matches.

    Absent optional parts are None or b''.  One split gives the groups of all
    lines in a flat list: between two lines, and after the last, the text that
    no match took must be empty.
    """
    parts = _FAST_LINES.split(chunk)
    stride = _FAST_LINES.groups + 1
    count = len(parts) // stride
    if not count or parts[::stride].count(b"") != count + 1:
        return None
    return [parts[group::stride] for group in range(1, stride)]


def _small_column(column, small):
    """Values of a column of small decimal tokens (0 where absent), lazily."""
    if any(column):
        return map(small.__getitem__, column)
    return itertools.repeat(0)


def _number_columns(first, second):
    """Values of two columns of decimal tokens present on the same rows (0 elsewhere)."""
    if all(first):
        return list(map(int, first)), list(map(int, second))
    count = len(first)
    first_values, second_values = [0] * count, [0] * count
    for row, first_value, second_value in zip(itertools.compress(range(count), first),
                                              map(int, filter(None, first)), map(int, filter(None, second))):
        first_values[row], second_values[row] = first_value, second_value
    return first_values, second_values


def _ipv4_addresses(tokens):
    """4 raw bytes of each IPv4 address token (a 16-byte struct field pads them)."""
    if not tokens:
        return []
    return list(map(socket.inet_pton, itertools.repeat(socket.AF_INET), b" ".join(tokens).decode(ENCODING).split(" ")))


def _ipv6_addresses(tokens):
    """16 raw bytes of each IPv6 address token, as records.inet_pton reads it."""
    if not tokens:
        return []
    joined = b" ".join(tokens)
    texts = joined.decode(ENCODING).split(" ")
    if not joined.translate(None, _HEX_GROUPS):
        # Hexadecimal groups only, no dotted quad: inet_pton of the ISC lineage
        # and records' own parser read these alike, so the C one is exact.
        try:
            return list(map(socket.inet_pton, itertools.repeat(socket.AF_INET6), texts))
        except OSError:
            pass
    return [inet_pton(AF_INET6, text) for text in texts]


def _address_flags(tokens):
    """IPv6 flag of each address token: those with a colon, as _assemble() decides the af."""
    if b":" not in b"".join(tokens):
        return [False] * len(tokens)
    return list(map(operator.contains, tokens, itertools.repeat(ord(":"))))


def _addresses(tokens, v6):
    """Raw addresses of a column of address tokens of the families `v6` flags.

    A token of the other family (or one with a single colon, no address at all) raises.
    """
    if not any(v6):
        return _ipv4_addresses(tokens)
    ipv4 = iter(_ipv4_addresses(list(itertools.compress(tokens, map(operator.not_, v6)))))
    ipv6 = iter(_ipv6_addresses(list(itertools.compress(tokens, v6))))
    return list(map(next, map((ipv4, ipv6).__getitem__, v6)))


def _ports(tokens):
    return list(map(_PORT_BY_TOKEN.__getitem__, tokens))


def _host_columns(columns):
    """(IPv6 flags, lan, lan port, gwy, gwy port, ext, ext port) columns; the family of lan is the state's."""
    lan_v6 = _address_flags(columns[_LAN])
    lan, ext = _addresses(columns[_LAN], lan_v6), _addresses(columns[_EXT], lan_v6)
    lan_port, ext_port = _ports(columns[_LAN_PORT]), _ports(columns[_EXT_PORT])
    if not any(columns[_GWY]):
        return lan_v6, lan, lan_port, lan, lan_port, ext, ext_port
    # 'using' (gwy != lan) on some lines: their gwy replaces lan in a copy.
    rows = list(itertools.compress(range(len(lan)), columns[_GWY]))
    translated = _addresses(list(filter(None, columns[_GWY])), [lan_v6[row] for row in rows])
    gwy, gwy_port = list(lan), list(lan_port)
    for row, address, port in zip(rows, translated, _ports(list(filter(None, columns[_GWY_PORT])))):
        gwy[row], gwy_port[row] = address, port
    return lan_v6, lan, lan_port, gwy, gwy_port, ext, ext_port


def _peer_columns(peer, state_tables, small):
    """The _COMMON_FIELDS values of a peer (seqlo, seqhi, max_win, state, wscale), a column or iterator each."""
    seqlo, seqhi = _number_columns(peer[_P_SEQLO], peer[_P_SEQHI])
    return (seqlo, seqhi, _small_column(peer[_P_MAX_WIN], small),
            map(dict.__getitem__, state_tables, peer[_P_STATE]), _small_column(peer[_P_WSCALE], small))


def _present(column):
    """(row, token) of the rows where an optional group of `column` matched."""
    return zip(itertools.compress(range(len(column)), column), filter(None, column))


def _patch_rare_fields(out, columns, patchers):
    """Write into `out` the peer fields _COMMON_FIELDS leaves zero, on the lines that have them.

    `patchers`: pack_into of the seqdiff, mss and scrub values (flags, ttl, scrub_flag, ts_mod) in the file's order.
    """
    seqdiff_into, mss_into, scrub_into = patchers
    for base, peer in ((_PEER_OFFSETS[0], columns[_FIRST_PEER:_SECOND_PEER]), (_PEER_OFFSETS[1], columns[_SECOND_PEER:])):
        for row, token in _present(peer[_P_SEQDIFF]):
            seqdiff_into(out, row * RECORD_SIZE + base + _SEQDIFF_IN_PEER, int(token))
        for row, token in _present(peer[_P_MSS]):
            mss_into(out, row * RECORD_SIZE + base + _MSS_IN_PEER, int(token))
        scrubbed = peer[_P_SCRUB]
        for row, flags, ttl, ts_mod in zip(itertools.compress(range(len(scrubbed)), scrubbed),
                                           *(itertools.compress(peer[group], scrubbed) for group in (_P_FLAGS, _P_TTL, _P_MOD))):
            scrub_into(out, row * RECORD_SIZE + base, int(flags), int(ttl), 1, int(ts_mod))


def _distinct_numbers(column):
    """Values of a column of decimal tokens that repeat (creator ids), each distinct token converted once."""
    distinct = set(column)
    return map(dict(zip(distinct, map(int, distinct))).__getitem__, column)


def _fast_records(columns, pack, patchers):
    """Records of the lines whose _FAST_LINES groups are `columns` (one list per group).

    Per-record Python work is what made this reader slow, so each field is
    converted for all lines at once by loops that run in C (map over a column,
    inet_pton over a joined column), and `pack` (the _COMMON_FIELDS struct in
    the file's byte order) builds each record from one value per column.
    The few lines with scrub values, seqdiff or mss get those patched in, and
    as records are packed with the peers in text order ('out'), 'in' states
    get their peers swapped.  KeyError, ValueError, OSError or struct.error:
    a value the fast path does not take (the tokenizer tells why).
    """
    count = len(columns[0])
    lan_v6, lan, lan_port, gwy, gwy_port, ext, ext_port = _host_columns(columns)
    protocols = list(map(_PROTOCOL_BY_TOKEN.__getitem__, columns[_PROTO]))
    state_tables = list(map(_STATE_BY_TOKEN.__getitem__, protocols))
    small = _small_numbers()
    out = bytearray().join(map(
        pack, map(int, columns[_ID]), columns[_IFNAME], lan, lan_port, gwy, gwy_port, ext, ext_port,
        *(_peer_columns(columns[_FIRST_PEER:_SECOND_PEER], state_tables, small)
          + _peer_columns(columns[_SECOND_PEER:], state_tables, small)
          + (map(int, columns[_EXPIRE]), _distinct_numbers(columns[_CID]), map(_AF_BY_V6_FLAG.__getitem__, lan_v6),
             protocols, map(_DIRECTION_BY_TOKEN.__getitem__, columns[_DIRECTION]),
             map(small.__getitem__, columns[_TIMEOUT])))))
    if len(out) != count * RECORD_SIZE:
        raise ValueError("a column ended early")
    _patch_rare_fields(out, columns, patchers)
    src, dst, end = _PEER_OFFSETS
    for row in itertools.compress(range(count), map(operator.eq, columns[_DIRECTION], itertools.repeat(b"in"))):
        start = row * RECORD_SIZE
        out[start + src:start + end] = out[start + dst:start + end] + out[start + src:start + dst]
    return bytes(out)


def _lines_of(chunk):
    """The lines of a chunk, each with its newline (the last one may have none)."""
    lines = chunk.split(b"\n")
    last = lines.pop()
    lines = [line + b"\n" for line in lines]
    if last:
        lines.append(last)
    return lines


class _Lines:
    """Whole lines of a binary file object or of an iterable of lines (bytes or str).

    Hands out chunks of many lines (next_chunk) while no single line is left,
    and single lines by iteration, taken from a chunk given back with split().
    """

    CHUNK_BYTES = 1 << 20
    CHUNK_LINES = 4096
    # pfs writes one state per line, about 400 bytes; without this bound a file with no "\n"
    # (CR-only line ends, one endless line) would be gathered whole in memory, and in O(n^2) copies.
    MAX_LINE_BYTES = 1 << 16

    def __init__(self, source):
        self._chunks = self._read(source) if hasattr(source, "read") else self._join(source)
        self.lines = []             # single lines still to hand out, last first

    def _read(self, fileobj):
        rest = b""
        rest_offset = 0             # where ``rest``, the unfinished line, starts in the file
        while True:
            data = fileobj.read(self.CHUNK_BYTES)
            if not data:
                if rest:
                    yield rest
                return
            data = rest + data
            end = data.rfind(b"\n") + 1
            if end:
                yield data[:end]
            rest = data[end:]
            rest_offset += end
            if len(rest) > self.MAX_LINE_BYTES:
                raise TextFormatError("no line end in the %d bytes from byte %d: not pfs text (pfs ends every state's "
                                      "line with \\n; convert CR-only line ends first)" % (self.MAX_LINE_BYTES, rest_offset))

    def _join(self, lines):
        lines = iter(lines)
        while True:
            group = [line if isinstance(line, bytes) else line.encode(ENCODING)
                     for line in itertools.islice(lines, self.CHUNK_LINES)]
            if not group:
                return
            yield b"".join(group)

    def next_chunk(self):
        return next(self._chunks, None)

    def split(self, chunk):
        self.lines = _lines_of(chunk)
        self.lines.reverse()

    def __iter__(self):
        return self

    def __next__(self):
        if not self.lines:
            self.split(next(self._chunks))
        return self.lines.pop()


class _Peer:
    __slots__ = ("state", "seqlo", "seqhi", "seqdiff", "max_win", "mss", "wscale", "scrub")

    def __init__(self):
        self.state = None
        self.seqlo = self.seqhi = self.seqdiff = self.max_win = self.mss = self.wscale = 0
        self.scrub = None           # (pfss_flags, ttl, ts_mod) or None


class _Tokens:
    """Tokens of a line iterator, with line/column for messages; refills line by line."""

    def __init__(self, lines):
        self.lines = lines
        self.lineno = 0
        self.pending = []           # reversed list of (token, lineno, column)
        self.last = ("", 0, 0)

    def next_line(self):
        for raw in self.lines:
            self.lineno += 1
            return raw
        return None

    def load(self, raw):
        text = raw.decode(ENCODING)
        self.pending = [(m.group(), self.lineno, m.start() + 1) for m in _TOKEN_RE.finditer(text)]
        self.pending.reverse()

    def take(self, what):
        while not self.pending:
            raw = self.next_line()
            if raw is None:
                raise TextFormatError("line %d: unexpected end of file, expected %s" % (self.last[1] or self.lineno, what))
            self.load(raw)
        self.last = self.pending.pop()
        return self.last[0]

    def peek(self):
        while not self.pending:
            raw = self.next_line()
            if raw is None:
                return None
            self.load(raw)
        return self.pending[-1][0]

    def fail(self, message):
        token, lineno, column = self.last
        raise TextFormatError("line %d, column %d (at %r): %s" % (lineno, column, token, message))

    def expect(self, keyword):
        token = self.take("'%s'" % keyword)
        if token != keyword:
            self.fail("expected '%s'" % keyword)

    def number(self, what, maximum):
        token = self.take(what)
        if not _NUMBER_RE.match(token):
            self.fail("expected a number of at most 20 digits for %s" % what)
        value = int(token)
        if value > maximum:
            self.fail("%s %d out of range (maximum %d)" % (what, value, maximum))
        return value


def _parse_peer(tokens, name):
    peer = _Peer()
    keyword = tokens.take("peer of '%s'" % name)
    if keyword == "state":
        peer.state = tokens.take("peer state")
        keyword = tokens.take("'seq', 'no-scrub' or 'scrub'")
    if keyword == "seq":
        match = _SEQ_RE.match(tokens.take("sequence numbers"))
        if not match:
            tokens.fail("invalid seq number (want [LO:HI] or [LO:HI,DIFF])")
        peer.seqlo, peer.seqhi, peer.seqdiff = (int(v) if v else 0 for v in match.groups())
        if max(peer.seqlo, peer.seqhi, peer.seqdiff) > U32_MAX:
            tokens.fail("seq number out of range (maximum %d)" % U32_MAX)
        tokens.expect("max_win")
        peer.max_win = tokens.number("max_win", 0xffff)
        keyword = tokens.take("'mss' or 'wscale'")
        if keyword == "mss":
            peer.mss = tokens.number("mss", 0xffff)
            keyword = tokens.take("'wscale'")
        if keyword != "wscale":
            tokens.fail("expected 'wscale'")
        peer.wscale = tokens.number("wscale", 0xff)
        keyword = tokens.take("'mss', 'no-scrub' or 'scrub'")
        if keyword == "mss":
            peer.mss = tokens.number("mss", 0xffff)
            keyword = tokens.take("'no-scrub' or 'scrub'")
    if keyword == "no-scrub":
        return peer
    if keyword != "scrub":
        tokens.fail("expected 'no-scrub' or 'scrub'")
    tokens.expect("flags")
    peer.scrub = _parse_scrub(tokens)
    return peer


def _parse_scrub(tokens):
    """`flags` value then ttl and mod(e) in any order, spaced or glued as pfs prints them."""
    limits = {"flags": 0xffff, "ttl": 0xff, "mod": U32_MAX}
    values = {}
    name = "flags"
    while True:
        token = tokens.take("scrub %s value" % name)
        glued = _GLUED_RE.match(token)
        text, following = (glued.group(1), glued.group(2)) if glued else (token, None)
        if not _NUMBER_RE.match(text):
            tokens.fail("expected a number for scrub %s" % name)
        value = int(text)
        if value > limits[name]:
            tokens.fail("scrub %s %d out of range (maximum %d)" % (name, value, limits[name]))
        values[name] = value
        if len(values) == 3:
            return values["flags"], values["ttl"], values["mod"]
        if following is None:
            following = tokens.take("'ttl' or 'mode'")
        name = "mod" if following in ("mod", "mode") else following
        if name not in limits or name in values:
            tokens.fail("expected 'ttl' or 'mode' in scrub")


def _split_host(text):
    match = _HOST_RE.match(text)
    if not match:
        raise ValueError("expected ADDRESS:[PORT], got %r" % text)
    address, port = match.group(1), int(match.group(2))
    if port > 0xffff:
        raise ValueError("port %d out of range (maximum 65535)" % port)
    return address, port


def _parse_general(tokens):
    """One state from the token stream; returns the tuple _assemble() takes."""
    tokens.expect("state")
    direction = tokens.take("'in' or 'out'")
    if direction not in ("in", "out"):
        tokens.fail("expected 'in' or 'out'")
    tokens.expect("on")
    ifname = tokens.take("interface name")    # any token: the position makes keywords unambiguous
    ifname_pos = tokens.last
    if ifname == "proto" and tokens.peek() != "proto":
        ifname = ""                 # pfs prints an empty name as "on  proto"
    else:
        tokens.expect("proto")
    proto = tokens.take("protocol")
    hosts = []
    for keyword in ("from", "to"):
        tokens.expect(keyword)
        hosts.append((tokens.take("host"), tokens.last))
    if tokens.peek() == "using":
        tokens.take("'using'")
        hosts.append((tokens.take("host"), tokens.last))
    numbers = []
    for keyword, maximum in (("id", U64_MAX), ("cid", U32_MAX), ("expire", U32_MAX), ("timeout", 0xff)):
        tokens.expect(keyword)
        numbers.append(tokens.number(keyword, maximum))
    tokens.expect("src")
    first = _parse_peer(tokens, "src")
    tokens.expect("dst")
    second = _parse_peer(tokens, "dst")
    return direction, (ifname, ifname_pos), proto, hosts, numbers, first, second


def _pack_peer(peer, proto, tokens_fail):
    state = peer.state
    if state is None:
        # pfs omits the names it has not got: TCP synproxy states, UDP/other >= 3.
        value = PF_TCPS_PROXY_SRC if proto == IPPROTO_TCP else len(OTHER_STATE_NAMES)
    elif _NUMBER_RE.match(state):
        value = int(state)
        if value > 0xff:
            tokens_fail("peer state %d out of range (maximum 255)" % value)
    else:
        names = peer_state_names(proto)
        if state not in names:
            tokens_fail("invalid peer state %r for protocol %s (one of %s)" % (state, protocol_name(proto), ", ".join(names)))
        value = names.index(state)
    flags, ttl, ts_mod = peer.scrub or (0, 0, 0)
    return (flags, ttl, 1 if peer.scrub else 0, ts_mod, peer.seqlo, peer.seqhi, peer.seqdiff,
            peer.max_win, peer.mss, value, peer.wscale)


class PfsTextReader:
    """Iterates over blocks of records parsed from a pfs text file object (binary mode).

    `byte_order` is the order the id/cid numbers (and the produced records) are in.
    """

    def __init__(self, fileobj, byte_order, block_records=4096):
        self.fileobj = fileobj
        self.byte_order = byte_order
        self.block_records = block_records
        self.codec = StateCodec(byte_order)
        self._pack_common_fields = partial_struct(byte_order, _COMMON_FIELDS).pack
        self._patchers = tuple(partial_struct(byte_order, fields, whole_record=False).pack_into for fields in _RARE_PEER_FIELDS)
        self._id_pack = partial_struct(byte_order, (("id", "Q"),), whole_record=False).pack
        self.count = 0

    def __iter__(self):
        return self.blocks()

    def blocks(self):
        limit = self.block_records * RECORD_SIZE
        pending, size = [], 0
        for run in self._runs():
            pending.append(run)
            size += len(run)
            if size >= limit:
                data = b"".join(pending)
                whole = len(data) - len(data) % limit
                for start in range(0, whole, limit):
                    yield data[start:start + limit]
                pending = [data[whole:]]
                size = len(pending[0])
        if size:
            yield b"".join(pending)

    def _runs(self):
        """Records (bytes, one or more at a time) in file order; counts them."""
        lines = _Lines(self.fileobj)
        tokens = _Tokens(lines)
        while True:
            if tokens.pending:
                run = self._general_record(tokens)
            elif lines.lines:
                # A chunk the fast path refused: line by line, the fast path first.
                raw = tokens.next_line()
                run = self._fast_run(raw)
                if run is None:
                    tokens.load(raw)
                    if not tokens.pending:
                        continue
                    run = self._general_record(tokens)
            else:
                chunk = lines.next_chunk()
                if chunk is None:
                    return
                run = self._fast_run(chunk)
                if run is None:
                    lines.split(chunk)
                    continue
                tokens.lineno += len(run) // RECORD_SIZE
            self.count += len(run) // RECORD_SIZE
            yield run

    def _fast_run(self, chunk):
        """Records of a chunk whose every line is in the printed form (one record a line), else None.

        None whenever the regular expression misses a line or a value is out of
        range or unknown: the caller then reads the chunk line by line.
        """
        columns = _fast_columns(chunk)
        if columns is None:
            return None
        try:
            return _fast_records(columns, self._pack_common_fields, self._patchers)
        except (KeyError, ValueError, OSError, struct.error):
            return None

    def _general_record(self, tokens):
        direction, (ifname, ifname_pos), proto, host_tokens, numbers, first, second = _parse_general(tokens)
        end = tokens.last

        def fail_at(position):
            def fail(message):
                tokens.last = position
                tokens.fail(message)
            return fail
        hosts = []
        for text, position in host_tokens:
            try:
                hosts.append(_split_host(text))
            except ValueError as exc:
                fail_at(position)(str(exc))
        if len(ifname) > MAX_IFNAME_LEN:
            fail_at(ifname_pos)("interface name longer than %d characters" % MAX_IFNAME_LEN)
        return self._assemble(direction, ifname, proto, hosts, numbers, first, second, fail_at(end))

    def _assemble(self, direction, ifname, proto_text, hosts, numbers, first, second, fail):
        try:
            proto = protocol_number(proto_text)
        except ValueError as exc:
            fail(str(exc))
        if len(ifname) > MAX_IFNAME_LEN:
            fail("interface name %r longer than %d characters" % (ifname, MAX_IFNAME_LEN))
        raw_hosts = []
        af = None
        for address, port in hosts:
            if port > 0xffff:
                fail("port %d out of range (maximum 65535)" % port)
            host_af = AF_INET6 if address.count(":") > 1 or address == "::" else AF_INET
            if af is not None and host_af != af:
                fail("address %s is not of the same family as the state's other addresses" % address)
            af = host_af
            try:
                raw_hosts.append((inet_pton(af, address), struct.pack(">H", port)))
            except ValueError as exc:
                fail(str(exc))
        if len(raw_hosts) == 2:
            raw_hosts.append(raw_hosts[0])   # no 'using': gwy is lan
        (lan_addr, lan_port), (ext_addr, ext_port), (gwy_addr, gwy_port) = raw_hosts
        state_id, cid, expire, timeout = numbers
        if state_id > U64_MAX or cid > U32_MAX or expire > U32_MAX or timeout > 0xff:
            fail("id, cid, expire or timeout out of range")
        first_values = _pack_peer(first, proto, fail)
        second_values = _pack_peer(second, proto, fail)
        if direction == "out":
            src, dst, direction_value = first_values, second_values, PF_OUT
        else:
            src, dst, direction_value = second_values, first_values, PF_IN
        values = ((self._id_pack(state_id), ifname.encode(ENCODING), lan_addr, lan_port, gwy_addr, gwy_port,
                   ext_addr, ext_port) + src + dst
                  + (b"", 0, 0, 0, 0, expire, 0, 0, 0, 0, 0, 0, 0, 0, cid, af, proto, direction_value, 0, 0,
                     timeout, 0, 0))
        return self.codec.pack(values)


def parse_text(data, byte_order):
    """All records of a pfs text (bytes or str) as one block."""
    if isinstance(data, str):
        data = data.encode(ENCODING)
    return b"".join(PfsTextReader(io.BytesIO(data), byte_order)._runs())  # pylint: disable=protected-access
