import errno
import os
import stat

import pytest
from hypothesis import given, settings, strategies as st

from ansible_collections.netbsd.pf.plugins.module_utils import formats
from ansible_collections.netbsd.pf.plugins.module_utils.formats import (
    NATIVE, PFS_BINARY, PFS_TEXT, DumpFormatError, detect_format, open_dump, write_dump,
)
from ansible_collections.netbsd.pf.plugins.module_utils.pfs_text import TextFormatError
from ansible_collections.netbsd.pf.plugins.module_utils.records import StateCodec
from ansible_collections.netbsd.pf.tests.unit.plugins.module_utils.golden import golden_copy
from ansible_collections.netbsd.pf.tests.unit.plugins.module_utils.statefactory import random_block, random_fields

import random

GOLDEN = os.path.join(os.path.dirname(__file__), "fixtures", "golden")


def blocks_of(block, size=7):
    return [block[i:i + size * 240] for i in range(0, len(block), size * 240)]


@pytest.mark.parametrize("fmt", [NATIVE, PFS_BINARY, PFS_TEXT])
@pytest.mark.parametrize("order", ["little", "big"])
def test_write_detect_read(tmp_path, fmt, order):
    block = random_block(20, order, seed=6)
    path = str(tmp_path / "dump")
    size, digest, count = write_dump(path, fmt, blocks_of(block), order, count=20, metadata={"source_host": "a"})
    assert count == 20 and size == os.path.getsize(path) and len(digest) == 64
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert detect_format(path) == fmt
    with open_dump(path, byte_order=order) as dump:
        assert dump.format == fmt and dump.byte_order == order
        assert b"".join(dump.blocks()) == block
        assert dump.verify() == 20 and dump.count == 20
        assert (dump.header is not None) == (fmt == NATIVE)


def test_detect_golden_and_empty(tmp_path):
    assert detect_format(os.path.join(GOLDEN, "scrub.bin")) == PFS_BINARY
    assert detect_format(os.path.join(GOLDEN, "scrub.txt")) == PFS_TEXT
    assert detect_format(golden_copy(tmp_path, "layout-free.txt")) == PFS_TEXT
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert detect_format(str(empty)) == PFS_BINARY
    with open_dump(str(empty)) as dump:
        assert dump.count == 0 and list(dump.blocks()) == []


def test_detect_rejects_unknown_with_what_was_seen(tmp_path):
    junk = tmp_path / "junk"
    junk.write_bytes(b"hello world, not a dump\n")
    with pytest.raises(DumpFormatError) as info:
        detect_format(str(junk))
    message = str(info.value)
    assert "unknown dump format" in message and "b'hello world" in message and "pfs binary" in message


def test_text_errors_surface_from_open_dump(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"state in on all proto tcp from\n")
    with open_dump(str(bad)) as dump:
        with pytest.raises(TextFormatError, match="line 1"):
            dump.verify()


def test_atomic_write_failure_keeps_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "table.pfstate"
    path.write_bytes(b"old contents")

    def failing_blocks():
        yield random_block(2)
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        write_dump(str(path), NATIVE, failing_blocks(), "little")
    assert path.read_bytes() == b"old contents"
    assert os.listdir(str(tmp_path)) == ["table.pfstate"]
    with pytest.raises(DumpFormatError, match="expected 5 states, got 2"):
        write_dump(str(path), PFS_TEXT, [random_block(2)], "little", count=5)
    assert path.read_bytes() == b"old contents" and os.listdir(str(tmp_path)) == ["table.pfstate"]


def test_temp_file_is_never_world_readable(tmp_path, monkeypatch):
    modes = []
    real_fdopen = os.fdopen

    def spy(fd, *args, **kwargs):
        modes.append(stat.S_IMODE(os.fstat(fd).st_mode))
        return real_fdopen(fd, *args, **kwargs)

    monkeypatch.setattr(formats.os, "fdopen", spy)
    write_dump(str(tmp_path / "x"), PFS_BINARY, [random_block(1)], "little")
    assert modes == [0o600]


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=0, max_value=2 ** 32), st.sampled_from(["little", "big"]),
       st.integers(min_value=0, max_value=6))
def test_random_states_survive_every_format(tmp_path_factory, seed, order, count):
    rng = random.Random(seed)
    codec = StateCodec(order)
    block = b"".join(codec.from_dict(random_fields(rng)) for _state in range(count))
    directory = tmp_path_factory.mktemp("rt")
    for fmt in (NATIVE, PFS_BINARY, PFS_TEXT):
        path = str(directory / fmt)
        write_dump(path, fmt, [block], order, count=count)
        with open_dump(path, fmt=fmt, byte_order=order) as dump:
            assert b"".join(dump.blocks()) == block, fmt


def _sha256_of(path):
    import hashlib
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


@pytest.mark.parametrize("fmt, compress", [(NATIVE, "zlib"), (NATIVE, "none"), (PFS_BINARY, None), (PFS_TEXT, None)])
def test_staged_dump_is_hashed_while_written(tmp_path, fmt, compress):
    """The SHA-256 reported is the file's, whether the writer went straight through or rewrote its prelude."""
    import hashlib
    block = random_block(40, "little", seed=12)
    path = str(tmp_path / "d")
    records_sha256 = hashlib.sha256(block).hexdigest() if fmt == NATIVE else None
    with formats.stage_dump(path, fmt, [block], "little", count=40, compress=compress,
                            records_sha256=records_sha256) as staged:
        assert not os.path.exists(path) and os.path.exists(staged.temp_path)
        staged.commit()
    assert staged.sha256 == _sha256_of(path) and staged.size == os.path.getsize(path) and staged.count == 40
    assert os.listdir(str(tmp_path)) == ["d"]
    with open_dump(path) as reader:
        assert reader.verify() == 40
        if fmt != PFS_TEXT:         # the text form does not carry every field
            assert b"".join(reader.blocks()) == block


def test_large_writes_are_hashed_beside_the_write(tmp_path, monkeypatch):
    """Blocks over the threshold take the two-thread path; the digest must still be the file's, in order."""
    monkeypatch.setattr(formats, "_PARALLEL_HASH_BYTES", 240 * 16)
    block = bytes(range(240)) * 100
    path = str(tmp_path / "d")
    size, sha256, count = write_dump(path, PFS_BINARY, [block[:240 * 30], block[240 * 30:]], "little", count=100)
    assert (size, sha256, count) == (4 + 240 * 100, _sha256_of(path), 100)


def test_staged_dump_compares_with_the_existing_file_and_can_be_dropped(tmp_path):
    block = random_block(10, "little", seed=13)
    path = str(tmp_path / "d")
    with formats.stage_dump(path, PFS_BINARY, [block], "little", count=10) as staged:
        assert staged.same_as_existing() is False, "no file yet"
        staged.commit()
    with formats.stage_dump(path, PFS_BINARY, [block], "little", count=10) as same:
        assert same.same_as_existing() is True
    other = bytearray(block)
    other[-1] ^= 1      # same size, last byte differs
    with formats.stage_dump(path, PFS_BINARY, [bytes(other)], "little", count=10) as differs:
        assert differs.same_as_existing() is False
        differs.discard()
        assert differs.temp_path is None
    assert os.listdir(str(tmp_path)) == ["d"] and _sha256_of(path) == staged.sha256


def test_text_is_formatted_in_slices(tmp_path, monkeypatch):
    """A whole table is never formatted into one string: the text writer gets bounded slices."""
    seen = []
    real = formats.PfsTextWriter.write_block

    def recording(writer, block):
        seen.append(len(block) // 240)
        return real(writer, block)
    monkeypatch.setattr(formats.PfsTextWriter, "write_block", recording)
    monkeypatch.setitem(formats._SLICE_RECORDS, PFS_TEXT, 4)
    write_dump(str(tmp_path / "t"), PFS_TEXT, [random_block(10, "little", seed=14)], "little", count=10)
    assert seen == [4, 4, 2]


def test_a_parent_symlink_repointed_during_the_dump_changes_nothing_but_the_directory_it_began_in(tmp_path):
    """The staged file is created, renamed and removed through the directory opened when the dump began.

    A symlinked parent re-pointed between staging and rename must neither strand the staged file nor
    let the rename reach into the new target: the dump lands whole in the directory it began in.
    """
    began, other = tmp_path / "began", tmp_path / "other"
    began.mkdir()
    other.mkdir()
    link = tmp_path / "dumps"
    link.symlink_to(began)
    block = random_block(20, "little", seed=14)

    def write_and_repoint(sink):
        writer = formats.PfsBinaryWriter(sink, "little", 20)
        writer.write_block(block)
        link.unlink()
        link.symlink_to(other)
        return writer

    staged, _writer = formats.stage_written(str(link / "states.pfs"), write_and_repoint)
    with staged:
        staged.commit()
    assert os.listdir(str(other)) == []
    assert os.listdir(str(began)) == ["states.pfs"]
    with open_dump(str(began / "states.pfs")) as reader:
        assert b"".join(reader.blocks()) == block
    assert staged.sha256 == _sha256_of(str(began / "states.pfs"))


def test_a_parent_symlink_repointed_before_a_discard_leaves_no_staged_file(tmp_path):
    began, other = tmp_path / "began", tmp_path / "other"
    began.mkdir()
    other.mkdir()
    link = tmp_path / "dumps"
    link.symlink_to(began)

    def write_then_fail(sink):
        sink.write(b"partial")
        link.unlink()
        link.symlink_to(other)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OSError):
        formats.stage_written(str(link / "states.pfs"), write_then_fail)
    assert os.listdir(str(began)) == [] and os.listdir(str(other)) == []
