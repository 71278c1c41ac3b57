import io
import os

import pytest

from ansible_collections.netbsd.pf.plugins.module_utils import native
from ansible_collections.netbsd.pf.plugins.module_utils.native import NativeFormatError, NativeReader, NativeWriter
from ansible_collections.netbsd.pf.tests.unit.plugins.module_utils.statefactory import random_block

META = {"source_host": "fw1", "netbsd_release": "10.0", "machine": "amd64", "captured_at": "2024-06-01T00:00:00Z"}


def make(block, compression="zlib", order="little", blocks=4):
    out = io.BytesIO()
    writer = NativeWriter(out, order, META, compression=compression)
    step = max(1, len(block) // 240 // blocks) * 240
    for start in range(0, len(block), step):
        writer.write_block(block[start:start + step])
    writer.close()
    return out.getvalue()


def reader(data, block_records=7):
    return NativeReader(io.BytesIO(data), len(data), block_records)


@pytest.mark.parametrize("compression", ["zlib", "none"])
@pytest.mark.parametrize("order", ["little", "big"])
def test_round_trip(compression, order):
    block = random_block(40, order, seed=8, text_safe=False)
    dump = reader(make(block, compression, order))
    assert dump.count == 40 and dump.byte_order == order
    assert dump.header["metadata"]["source_host"] == "fw1"
    assert dump.verify() == 40
    assert b"".join(dump.blocks()) == block


def test_empty():
    dump = reader(make(b""))
    assert dump.count == 0 and list(dump.blocks()) == []


def test_prelude_layout():
    data = make(random_block(2), "none")
    assert data[:8] == b"\x89PFSTAT\n" and data[8:10] == b"\x00\x01" and data[10] == 1 and data[11] == 0
    assert int.from_bytes(data[12:14], "big") == 240 and int.from_bytes(data[16:24], "big") == 2


@pytest.mark.parametrize("compression", ["zlib", "none"])
def test_flipped_payload_byte_detected_before_any_record(compression):
    data = bytearray(make(random_block(40, seed=2), compression))
    data[-30] ^= 0x01
    dump = reader(bytes(data))
    with pytest.raises(NativeFormatError, match="SHA-256|corrupt"):
        next(iter(dump.blocks(verify=True)))


def test_flipped_header_byte():
    data = bytearray(make(random_block(3)))
    data[native.PRELUDE_SIZE + 3] ^= 0x20      # inside the metadata
    with pytest.raises(NativeFormatError, match="header checksum"):
        reader(bytes(data))


def test_truncation_and_trailing_garbage():
    data = make(random_block(10))
    with pytest.raises(NativeFormatError, match="truncated .pfstate file: header promises"):
        reader(data[:-5])
    with pytest.raises(NativeFormatError, match="3 bytes of trailing garbage"):
        reader(data + b"xyz")
    with pytest.raises(NativeFormatError, match="truncated .pfstate header"):
        reader(data[:20])


def test_wrong_magic_version_record_size():
    data = make(random_block(1))
    with pytest.raises(NativeFormatError, match="bad magic"):
        reader(b"X" + data[1:])
    with pytest.raises(NativeFormatError, match="unsupported .pfstate format version 2"):
        reader(data[:8] + b"\x00\x02" + data[10:])
    with pytest.raises(NativeFormatError, match="record size 232"):
        reader(data[:12] + (232).to_bytes(2, "big") + data[14:])


def test_count_mismatch_detected():
    data = bytearray(make(random_block(5), "zlib"))
    data[23] = 4          # count 5 -> 4, then fix the header CRC so only the payload check can tell
    import zlib
    meta_len = int.from_bytes(data[64:68], "big")
    crc = zlib.crc32(bytes(data[:68]) + bytes(data[72:72 + meta_len]))
    data[68:72] = crc.to_bytes(4, "big")
    with pytest.raises(NativeFormatError, match="announces 4 records, payload holds more"):
        reader(bytes(data)).verify()


class _WriteOnlyInOrder(io.BytesIO):
    """A file that refuses to seek back: what a writer with a final first prelude must never need."""

    def seek(self, offset, whence=0):
        if whence == 0 and offset < self.tell():
            raise AssertionError("the writer went back to offset %d" % offset)
        return super(_WriteOnlyInOrder, self).seek(offset, whence)


@pytest.mark.parametrize("compression", ["zlib", "none"])
def test_declared_count_and_digest_give_the_same_file(compression):
    import hashlib
    block = random_block(30, "little", seed=4, text_safe=False)
    expected = make(block, compression, blocks=1)
    out = io.BytesIO() if compression == "zlib" else _WriteOnlyInOrder()
    writer = NativeWriter(out, "little", META, compression=compression, count=30,
                          records_sha256=hashlib.sha256(block).hexdigest())
    writer.write_block(block)
    writer.close()
    assert out.getvalue() == expected
    assert writer.records_sha256 == hashlib.sha256(block).hexdigest() == reader(expected).header["sha256"]


def test_declared_count_is_checked():
    import hashlib
    block = random_block(3, "little", seed=4)
    writer = NativeWriter(io.BytesIO(), "little", META, compression="none", count=4,
                          records_sha256=hashlib.sha256(block).hexdigest())
    writer.write_block(block)
    with pytest.raises(ValueError, match="declared 4 records but 3"):
        writer.close()


def _zlib_bomb(count, inflated):
    """A valid native header for ``count`` records whose zlib payload inflates to ``inflated`` zero bytes."""
    import zlib
    compressor = zlib.compressobj(9)
    payload = b"".join(compressor.compress(bytes(1 << 20)) for _mebibyte in range(inflated >> 20)) + compressor.flush()
    data = bytearray(make(random_block(count), "zlib"))
    meta_len = int.from_bytes(data[64:68], "big")
    data[24:32] = len(payload).to_bytes(8, "big")
    crc = zlib.crc32(bytes(data[:68]) + bytes(data[72:72 + meta_len]))
    data[68:72] = crc.to_bytes(4, "big")
    return bytes(data[:72 + meta_len]) + payload


def test_zlib_bomb_is_refused_without_inflating_it(monkeypatch):
    """R3: 256 MiB of zeros compress to ~250 KiB; the reader must stop after count * 240 bytes, in small steps."""
    import zlib
    data = _zlib_bomb(5, 256 << 20)
    largest = []
    real = zlib.decompressobj

    class Recording(object):
        def __init__(self):
            self._inner = real()

        def decompress(self, chunk, max_length=0):
            assert max_length > 0, "decompression without an output bound"
            out = self._inner.decompress(chunk, max_length)
            largest.append(len(out))
            return out

        def __getattr__(self, name):
            return getattr(self._inner, name)

    monkeypatch.setattr(native.zlib, "decompressobj", Recording)
    with pytest.raises(NativeFormatError, match="announces 5 records, payload holds more"):
        reader(data).verify()
    assert max(largest) <= 7 * 240


def test_bounded_decompression_reads_every_record_through_unconsumed_tail():
    """Output bounded to one block per step still yields the whole payload (many steps per input chunk)."""
    block = random_block(300, "little", seed=6, text_safe=False)
    dump = reader(make(block, "zlib", blocks=1))
    assert dump.verify() == 300
    assert b"".join(dump.blocks()) == block


def test_verified_zlib_blocks_decompress_once(monkeypatch):
    """blocks(verify=True) checks the whole file first, then hands out the spooled records: one inflate pass."""
    import zlib
    block = random_block(50, "little", seed=9, text_safe=False)
    dump = reader(make(block, "zlib"))
    passes = []
    real = zlib.decompressobj

    def counting():
        passes.append(1)
        return real()
    monkeypatch.setattr(native.zlib, "decompressobj", counting)
    blocks = dump.blocks()
    assert dump.verified and len(passes) == 1
    assert b"".join(blocks) == block and len(passes) == 1
    assert all(len(b) <= 7 * 240 for b in dump.blocks(verify=False))


def test_damaged_zlib_payload_fails_before_any_block_and_leaves_no_spool(tmp_path, monkeypatch):
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    data = bytearray(make(random_block(50, "little", seed=9), "zlib"))
    data[-20] ^= 0xff
    with pytest.raises(NativeFormatError):
        reader(bytes(data)).blocks()
    assert os.listdir(str(tmp_path)) == []
