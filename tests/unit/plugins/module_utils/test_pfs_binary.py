import io

import pytest

from ansible_collections.netbsd.pf.plugins.module_utils.pfs_binary import (
    BinaryFormatError, PfsBinaryReader, PfsBinaryWriter, infer_layout,
)
from ansible_collections.netbsd.pf.plugins.module_utils.records import swap_records
from ansible_collections.netbsd.pf.tests.unit.plugins.module_utils.statefactory import random_block


def write(block, order, count=None):
    out = io.BytesIO()
    writer = PfsBinaryWriter(out, order, count)
    writer.write_block(block)
    writer.close()
    return out.getvalue()


@pytest.mark.parametrize("order", ["little", "big"])
@pytest.mark.parametrize("declared", [True, False])
def test_layout_is_count_then_records(order, declared):
    block = random_block(3, order)
    data = write(block, order, 3 if declared else None)
    assert data == (3).to_bytes(4, order) + block


def test_empty_table_is_empty_file_and_reads_as_no_states():
    assert write(b"", "little") == b""
    reader = PfsBinaryReader(io.BytesIO(b""), 0)
    assert reader.count == 0 and list(reader) == []


def test_golden_file_reads():
    import os
    path = os.path.join(os.path.dirname(__file__), "fixtures", "golden", "mixed-s1-n7.bin")
    with open(path, "rb") as handle:
        data = handle.read()
    reader = PfsBinaryReader(io.BytesIO(data), len(data), host_order="big")
    assert reader.byte_order == "little" and reader.count == 7
    assert b"".join(reader) == data[4:]


def test_foreign_order_detected_and_trailing_bytes_reported():
    block = random_block(5, "big")
    data = write(block, "big") + b"junk"
    reader = PfsBinaryReader(io.BytesIO(data), len(data), host_order="little", block_records=2)
    assert (reader.byte_order, reader.count, reader.trailing_bytes) == ("big", 5, 4)
    assert b"".join(reader) == block
    assert swap_records(block, "big") != block


def test_truncated_file_says_expected_and_actual_size():
    data = write(random_block(4, "little"), "little")[:-100]
    with pytest.raises(BinaryFormatError, match="count 4 needs 964 bytes, file has 864"):
        infer_layout(len(data), data[:4], byte_order="little")
    with pytest.raises(BinaryFormatError, match="truncated"):
        PfsBinaryReader(io.BytesIO(data), len(data))


def test_too_short_and_negative():
    with pytest.raises(BinaryFormatError, match="too short"):
        infer_layout(2, b"\0\0")
    with pytest.raises(BinaryFormatError, match="negative"):
        infer_layout(244, b"\xff\xff\xff\xff")
