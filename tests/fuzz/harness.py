"""What the fuzzers feed the dump readers, and what counts as a correct answer.

A reader given any bytes must either read them (every block a whole number of 240-byte
records, the count it reports equal to what it yielded) or raise one of the collection's
own format errors (ALLOWED_ERRORS), whose message is shown to the user.  Anything else
(IndexError, struct.error, OverflowError, UnicodeDecodeError, MemoryError, a hang) is a bug.

Inputs start from valid files made by the collection's writers (records from the pf
emulator's generator, both byte orders, pfs golden samples) and are mutated: truncation,
bit flips, huge or negative counts in either byte order, inserted garbage, duplicated or
deleted slices, and for text garbage lines, over-long fields and dropped tokens.
"""

import os
import random
import struct
import sys
import tempfile

from ansible_collections.netbsd.pf.plugins.module_utils.formats import (
    NATIVE, PFS_BINARY, PFS_TEXT, DumpFormatError, detect_format, open_dump, write_dump,
)
from ansible_collections.netbsd.pf.plugins.module_utils.native import NativeFormatError
from ansible_collections.netbsd.pf.plugins.module_utils.pfs_binary import BinaryFormatError
from ansible_collections.netbsd.pf.plugins.module_utils.pfs_text import TextFormatError
from ansible_collections.netbsd.pf.plugins.module_utils.records import RecordError
from ansible_collections.netbsd.pf.tests.pfemu.generate import generate_records
from ansible_collections.netbsd.pf.tests.unit.plugins.module_utils.golden import golden_names, read_golden

RECORD_SIZE = 240
ALLOWED_ERRORS = (DumpFormatError, NativeFormatError, BinaryFormatError, TextFormatError, RecordError)
AUTO = "auto"
READERS = (PFS_BINARY, PFS_TEXT, NATIVE, AUTO)
# Big enough to hold a few records of every format, small enough to keep an input fast.
MAX_INPUT = 1 << 16
HUGE_INTS = (0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x7FFFFFFF // RECORD_SIZE + 1, 1 << 31 - 1, 0x01000000)
TEXT_GARBAGE = (b"state", b"{", b"}", b"\x00", b"\xff\xfe", b"tcp", b"9" * 40, b"-1", b"::", b"1.2.3.4:99999",
                b"scrub", b"peer", b"id:", b"\r\n", b"state state", b"expire", b"%s", b"{{ lookup('pipe','id') }}")


def seed_files():
    """{reader: [valid file bytes]}: every writer, both byte orders, 0/1/5 records, the golden samples."""
    seeds = {PFS_BINARY: [], PFS_TEXT: [], NATIVE: []}
    with tempfile.TemporaryDirectory(prefix="pf-fuzz-seeds.") as directory:
        path = os.path.join(directory, "seed")
        for count in (0, 1, 5):
            for order in ("little", "big"):
                block = generate_records(count, seed=count * 7 + len(order), byte_order=order, now=1700000000)
                for fmt, compress in ((PFS_BINARY, None), (PFS_TEXT, None), (NATIVE, "zlib"), (NATIVE, "none")):
                    write_dump(path, fmt, [block], order, count=count, compress=compress,
                               metadata={"hostname": "fw1", "note": "{{ 7 * 7 }}"} if fmt == NATIVE else None)
                    with open(path, "rb") as handle:
                        seeds[fmt].append(handle.read())
    for kind, suffix in ((PFS_BINARY, ".bin"), (PFS_TEXT, ".txt")):
        seeds[kind].extend(read_golden(name)[:MAX_INPUT] for name in golden_names(suffix))
    seeds[AUTO] = seeds[PFS_BINARY] + seeds[PFS_TEXT] + seeds[NATIVE]
    return seeds


def read_everything(path, reader):
    """Read the file at ``path`` with ``reader`` the way restore and inspect do; returns the record count."""
    if reader == AUTO:
        detect_format(path)
        dump = open_dump(path)
    else:
        dump = open_dump(path, reader, byte_order="little" if reader == PFS_TEXT else None)
    with dump:
        verified = dump.verify()
        total = 0
        for block in dump.blocks():
            if len(block) % RECORD_SIZE:
                raise AssertionError("%s reader yielded a block of %d bytes" % (reader, len(block)))
            total += len(block) // RECORD_SIZE
        if verified != total:
            raise AssertionError("%s reader: verify() counted %d, blocks() yielded %d" % (reader, verified, total))
    return total


# --- mutations: (rng, data) -> data -------------------------------------------------------

def truncate(rng, data):
    return data[:rng.randrange(len(data) + 1)]


def flip_bits(rng, data):
    if not data:
        return data
    out = bytearray(data)
    for _flip in range(rng.randint(1, 8)):
        out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def huge_count(rng, data):
    """A huge, negative or off-by-one integer where a count or length lives (or anywhere), either byte order."""
    value = rng.choice(HUGE_INTS + (len(data) // RECORD_SIZE + 1, rng.getrandbits(32)))
    packed = struct.pack(rng.choice("<>") + "I", value & 0xFFFFFFFF)
    if rng.random() < 0.3:
        packed = struct.pack(rng.choice("<>") + "Q", value)
    offset = rng.choice((0, 0, 12, 16, 20, 24, 28, 32, 40, 64, rng.randrange(max(1, len(data)))))
    return data[:offset] + packed + data[offset + len(packed):]


def swap_byte_order(rng, data):
    """Reverse every 4-byte word of a region: the other byte order's count and fields."""
    start = rng.choice((0, rng.randrange(max(1, len(data)))))
    end = min(len(data), start + 4 * rng.randint(1, 64))
    region = bytearray(data[start:end])
    for index in range(0, len(region) - 3, 4):
        region[index:index + 4] = region[index:index + 4][::-1]
    return data[:start] + bytes(region) + data[end:]


def insert_garbage(rng, data):
    offset = rng.randrange(len(data) + 1)
    garbage = bytes(rng.getrandbits(8) for _byte in range(rng.choice((1, 3, 17, 240, 241))))
    return data[:offset] + garbage + data[offset:]


def duplicate_slice(rng, data):
    if not data:
        return data
    start = rng.randrange(len(data))
    piece = data[start:start + rng.choice((4, 240, 480, rng.randint(1, 4096)))]
    offset = rng.randrange(len(data) + 1)
    return data[:offset] + piece + data[offset:]


def delete_slice(rng, data):
    if not data:
        return data
    start = rng.randrange(len(data))
    return data[:start] + data[start + rng.choice((1, 4, 240, rng.randint(1, 2048))):]


def _lines(data):
    return data.split(b"\n")


def garbage_line(rng, data):
    lines = _lines(data)
    line = b" ".join(rng.choice(TEXT_GARBAGE) for _word in range(rng.randint(1, 6)))
    lines.insert(rng.randrange(len(lines) + 1), line)
    return b"\n".join(lines)


def overlong_field(rng, data):
    """Replace one token with a very long one: digits, name characters or an address-looking run."""
    tokens = data.split(b" ")
    if not tokens:
        return data
    index = rng.randrange(len(tokens))
    length = rng.choice((17, 64, 300, 4000))
    tokens[index] = rng.choice((b"9" * length, b"x" * length, b"1." * (length // 2), b"f:" * (length // 2)))
    return b" ".join(tokens)


def drop_token(rng, data):
    tokens = data.split(b" ")
    if len(tokens) > 1:
        del tokens[rng.randrange(len(tokens))]
    return b" ".join(tokens)


def swap_numbers(rng, data):
    """Put an out-of-range number where a number is: ports, ttl, wscale, seq, ages, counters."""
    tokens = data.split(b" ")
    numeric = [i for i, token in enumerate(tokens) if token[:1].isdigit()]
    if not numeric:
        return data
    index = rng.choice(numeric)
    tokens[index] = rng.choice((b"65536", b"4294967296", b"18446744073709551616", b"-1", b"0x10", b"1e9", b"256", b"00"))
    return b" ".join(tokens)


BINARY_MUTATIONS = (truncate, flip_bits, huge_count, swap_byte_order, insert_garbage, duplicate_slice, delete_slice)
TEXT_MUTATIONS = (truncate, flip_bits, insert_garbage, duplicate_slice, delete_slice, garbage_line, overlong_field,
                  drop_token, swap_numbers)


def mutations_for(reader):
    return TEXT_MUTATIONS if reader == PFS_TEXT else BINARY_MUTATIONS + (TEXT_MUTATIONS[5:] if reader == AUTO else ())


def mutate(data, reader, choices):
    """Apply the mutations named by ``choices`` ((mutation index, rng seed) pairs) to ``data``."""
    mutations = mutations_for(reader)
    for index, seed in choices:
        data = mutations[index % len(mutations)](random.Random(seed), data)
    return data[:MAX_INPUT]


def check_input(path, data, reader):
    """Write ``data`` to ``path`` and read it; returns "read" or "rejected"; any other exception propagates."""
    with open(path, "wb") as handle:
        handle.write(data)
    try:
        read_everything(path, reader)
    except ALLOWED_ERRORS as exc:
        if not str(exc):
            raise AssertionError("%s raised %s without a message" % (reader, type(exc).__name__))
        return "rejected"
    return "read"


def scratch_dir():
    """A directory for fuzz inputs: tmpfs if there is one (no disk writes), else the default temp dir."""
    return "/dev/shm" if sys.platform.startswith("linux") and os.access("/dev/shm", os.W_OK) else None
