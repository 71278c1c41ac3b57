"""The libnv packed format of plugins/module_utils/npf_nvlist.py (NPF reference 3.2)."""

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.netbsd.pf.plugins.module_utils.npf_nvlist import (
    NvlistDescriptorError, NvlistError, byte_order_of, decode, encode,
)
from ansible_collections.netbsd.pf.tests.npfemu import libnv

# The reference's worked example: {"a": 1, "n": {}, "b": true}, little-endian, 130 bytes.
WORKED_EXAMPLE = bytes.fromhex("".join((
    "6c0000", "0000000000000000", "6f00000000000000",
    "03", "0200", "0800000000000000", "0000000000000000", "6100", "0100000000000000",
    "05", "0200", "1300000000000000", "0000000000000000", "6e00",
    "6c0000", "0000000000000000", "2a00000000000000",
    "ff", "0100", "0000000000000000", "0000000000000000", "00",
    "02", "0200", "0100000000000000", "0000000000000000", "6200", "01")))

EVERY_TYPE = {
    "null": None, "bool": True, "number": 2 ** 64 - 1, "string": "wm0", "binary": b"\x00\x01",
    "nested": {"inner": {"deep": 1}, "after": "x"},
    "bools": [True, False], "numbers": [1, 2, 3], "strings": ["a", "", "bc"],
    "lists": [{"x": 1}, {}, {"y": [{"z": b"!"}]}],
    "empty": {}, "tail": 7,
}


def test_worked_example_byte_for_byte():
    assert encode({"a": 1, "n": {}, "b": True}) == WORKED_EXAMPLE
    assert decode(WORKED_EXAMPLE) == {"a": 1, "n": {}, "b": True}


def test_nested_datasize_follows_nvlist_size_walk():
    # "n" is not empty: nvlist_size() walks its pair "a" (19+2+8) and then on past the
    # child to the parent's "b" (19+2+1): 19 + 29 + 22 = 70.
    packed = encode({"n": {"a": 1}, "b": True})
    assert struct.unpack_from("<Q", packed, 19 + 3)[0] == 70


@pytest.mark.parametrize("order", ["little", "big"])
def test_every_type_round_trips_and_matches_the_kernel_packer(order):
    packed = encode(EVERY_TYPE, order)
    assert packed == libnv.pack(EVERY_TYPE, order)  # the emulator's independent libnv
    assert decode(packed) == EVERY_TYPE
    assert byte_order_of(packed) == order
    assert bool(packed[2] & 0x80) == (order == "big")


def test_foreign_order_arrays_decode_here_though_libnv_fails():
    packed = encode({"numbers": [1, 2]}, "big")
    assert decode(packed) == {"numbers": [1, 2]}
    with pytest.raises(libnv.UnpackError):
        libnv.unpack(packed, 0, "little")


@pytest.mark.parametrize("value, message", [
    ({"x": []}, "no empty arrays"),
    ({"x": -1}, "out of the unsigned 64-bit range"),
    ({"x": 2 ** 64}, "out of the unsigned 64-bit range"),
    ({"x": [1, "a"]}, "only dicts"),
    ({"x": b""}, "empty BINARY"),
    ({"x": "a\0b"}, "NUL"),
    ({"n" * 2048: 1}, "pair name"),
    ({"x": 1.5}, "no nvlist type"),
])
def test_encode_refuses_what_libnv_cannot_pack(value, message):
    with pytest.raises(NvlistError, match=message):
        encode(value)


def _pair(kind, name, data=b"", nitems=0, datasize=None, namesize=None):
    raw = name + b"\0"
    return struct.pack("<BHQQ", kind, len(raw) if namesize is None else namesize,
                       len(data) if datasize is None else datasize, nitems) + raw + data


def _buffer(*pairs, flags=0, descriptors=0, size_delta=0, magic=0x6C):
    body = b"".join(pairs)
    return struct.pack("<BBBQQ", magic, 0, flags, descriptors, len(body) + size_delta) + body


MALFORMED = [
    (b"", "truncated list header"),
    (_buffer(magic=0x6D), "bad magic"),
    (_buffer(flags=0x04), "unknown header flags"),
    (_buffer(descriptors=1), "file descriptors"),
    (_buffer(_pair(3, b"a", bytes(8)), size_delta=1), "header size"),
    (_buffer(_pair(13, b"a")), "unknown pair type 13"),
    (_buffer(_pair(1, b"a", namesize=0)), "name size 0"),
    (_buffer(_pair(1, b"a", namesize=2049)), "name size 2049"),
    (_buffer(_pair(1, b"a", namesize=200)), "runs past the end"),
    (_buffer(_pair(1, b"ab", namesize=2)), "NUL-terminated"),
    (_buffer(_pair(3, b"a", bytes(8), datasize=9)), "runs past the end"),
    (_buffer(_pair(1, b"a", datasize=0) + b"\0"), "truncated pair header"),
    (_buffer(_pair(1, b"a", b"\0")), "must be 0"),
    (_buffer(_pair(2, b"a", b"\2")), "0 or 1"),
    (_buffer(_pair(3, b"a", bytes(7))), "must be 8"),
    (_buffer(_pair(4, b"a", b"ab")), "NUL-terminated exactly"),
    (_buffer(_pair(4, b"a", b"a\0b\0")), "NUL-terminated exactly"),
    (_buffer(_pair(4, b"a", b"")), "NUL-terminated exactly"),
    (_buffer(_pair(7, b"a", b"")), "empty"),
    (_buffer(_pair(9, b"a", bytes(16), nitems=3)), "does not hold 3 items"),
    (_buffer(_pair(9, b"a", b"", nitems=0)), "no items"),
    (_buffer(_pair(8, b"a", b"\0\2", nitems=2)), "neither 0 nor 1"),
    (_buffer(_pair(10, b"a", b"x\0y", nitems=2)), "exactly 2 NUL-terminated"),
    (_buffer(_pair(3, b"a", bytes(8), nitems=1)), "item count"),
    (_buffer(_pair(11, b"a", nitems=0)), "item count 0 impossible"),
    (_buffer(_pair(11, b"a", nitems=10 ** 6)), "impossible"),
    (_buffer(_pair(255, b"")), "NVLIST_UP outside"),
    (_buffer(_pair(254, b"")), "NVLIST_ARRAY_NEXT outside"),
    (_buffer(_pair(3, b"a", bytes(8)), _pair(3, b"a", bytes(8))), "repeated"),
    (_buffer(_pair(3, b"a", bytes(8)), _pair(3, b"A", bytes(8)), flags=1), "repeated"),
    (_buffer(_pair(5, b"n", datasize=0)), "data size 0"),
]


@pytest.mark.parametrize("data, message", MALFORMED)
def test_malformed_buffers_fail_with_a_clear_message(data, message):
    with pytest.raises(NvlistError, match=message) as caught:
        decode(data, source="saved.npf")
    assert str(caught.value).startswith("saved.npf: not a valid packed nvlist at byte ")


def test_missing_terminator_is_an_error_though_the_kernel_accepts_it():
    packed = encode({"n": {"a": 1}})[:-20]
    packed = bytearray(packed)
    struct.pack_into("<Q", packed, 11, len(packed) - 19)
    struct.pack_into("<Q", packed, 19 + 21 + 11, len(packed) - 40 - 19)
    with pytest.raises(NvlistError, match="terminator missing"):
        decode(bytes(packed))
    assert libnv.unpack(bytes(packed)) == {"n": {"a": 1}}


def test_depth_and_size_limits():
    deep = {}
    for dummy_level in range(40):
        deep = {"d": deep}
    with pytest.raises(NvlistError, match="deeper than"):
        encode(deep)
    packed = libnv.pack(deep)  # the emulator's packer has no limit: a hostile file
    with pytest.raises(NvlistError, match="deeper than 32"):
        decode(packed)
    assert decode(packed, max_depth=64) == deep
    with pytest.raises(NvlistError, match="more than the 100 allowed"):
        decode(encode({"x": b"y" * 200}), max_size=100)


def test_descriptors_are_refused_with_their_own_error():
    with pytest.raises(NvlistDescriptorError, match="descriptors are never valid"):
        decode(_buffer(_pair(6, b"fd", bytes(8))))


def test_other_header_flags_of_the_nested_lists_are_refused():
    packed = bytearray(encode({"n": {"a": 1}}))
    packed[19 + 21 + 2] = 0x80
    with pytest.raises(NvlistError, match="other byte order"):
        decode(bytes(packed))


names = st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), min_size=1, max_size=6)
leaves = (st.none() | st.booleans() | st.integers(0, 2 ** 64 - 1) | names | st.binary(min_size=1, max_size=8)
          | st.lists(st.booleans(), min_size=1, max_size=3) | st.lists(st.integers(0, 9), min_size=1, max_size=3)
          | st.lists(names, min_size=1, max_size=3))
documents = st.recursive(st.dictionaries(names, leaves, max_size=4), lambda children: st.dictionaries(
    names, children | st.lists(children, min_size=1, max_size=2), max_size=4), max_leaves=12)


@settings(max_examples=150, deadline=None)
@given(documents, st.sampled_from(["little", "big"]))
def test_property_round_trip_and_identity_with_the_kernel_packer(document, order):
    packed = encode(document, order)
    assert decode(packed) == document
    assert packed == libnv.pack(document, order)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_property_mutated_buffers_fail_only_with_nvlisterror(data):
    packed = bytearray(encode(EVERY_TYPE, data.draw(st.sampled_from(["little", "big"]))))
    for dummy_mutation in range(data.draw(st.integers(1, 4))):
        packed[data.draw(st.integers(0, len(packed) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(packed)))
    try:
        decode(bytes(packed[:cut]))
    except NvlistError:
        pass
