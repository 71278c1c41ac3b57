"""The convert pipeline streams (memory of one block, not of the table) and does no pass it need not (issue 13)."""

import hashlib
import os
import tracemalloc
import types

import pytest

from ansible_collections.netbsd.pf.plugins.module_utils import operations as ops
from ansible_collections.netbsd.pf.plugins.module_utils.formats import write_dump
from ansible_collections.netbsd.pf.tests.pfemu.generate import generate_records

# 7.2 and 14.4 MB of records, many reader blocks (4096 records, or 1 MiB of text, each): the text
# reader's transient columns of a block (about 14 MB, whatever the table) are at their full size.
SMALL, LARGE = 30000, 60000
STATES = LARGE


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Dumps of LARGE states by name, and of SMALL states by name + '-small'."""
    folder = tmp_path_factory.mktemp("sources")
    paths = {}
    for count, suffix in ((LARGE, ""), (SMALL, "-small")):
        records = generate_records(count, 13, "little", now=1700000000)
        for fmt, compress in (("pfs-binary", None), ("pfs-text", None), ("native", "none"), ("native", "zlib")):
            name = "%s-%s%s" % (fmt, compress, suffix)
            paths[name] = str(folder / name)
            write_dump(paths[name], fmt, [records], "little", count=count, compress=compress)
    return paths


def _peak_bytes(function):
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("source, target, compress", [
    ("pfs-binary-None", "pfs_text", True),
    ("pfs-text-None", "pfs_binary", True),
    ("pfs-binary-None", "native", False),
    ("native-zlib", "pfs_binary", True),
    ("pfs-text-None", "native", True),
])
def test_convert_holds_a_block_not_the_table(sources, tmp_path, source, target, compress):
    dest = str(tmp_path / "out")

    def convert(name):
        return lambda: ops.convert_dump(sources[name], dest, target, compress=compress)
    convert(source)()       # the codecs' bounded lookup caches fill up first: they are not what is measured
    small = _peak_bytes(convert(source + "-small"))
    growth = _peak_bytes(convert(source)) - small
    # Twice the states, the same blocks in flight: the peak must not grow with the table.
    table_growth = (LARGE - SMALL) * 240
    assert growth < table_growth * 0.2, "peak grew by %d bytes for %d more bytes of records" % (growth, table_growth)
    assert ops.convert_dump(dest, str(tmp_path / "back"), "pfs_binary")["count"] == LARGE


def test_a_source_damaged_after_its_first_blocks_leaves_dest_as_it_was(sources, tmp_path):
    damaged = str(tmp_path / "damaged.pfstate")
    with open(sources["native-none"], "rb") as handle:
        data = bytearray(handle.read())
    data[-100] ^= 0xff      # in the last record: found by the SHA-256 check after every block was streamed
    with open(damaged, "wb") as handle:
        handle.write(data)
    dest = tmp_path / "dest.bin"
    dest.write_bytes(b"the previous dump")
    with pytest.raises(ops.OperationError, match="damaged.pfstate: SHA-256 of the records does not match"):
        ops.convert_dump(damaged, str(dest), "pfs_binary")
    assert dest.read_bytes() == b"the previous dump"
    assert sorted(os.listdir(str(tmp_path))) == ["damaged.pfstate", "dest.bin"]      # no staged file left


def test_convert_again_to_the_same_content_leaves_the_file_alone(sources, tmp_path):
    for target in ("pfs_binary", "pfs_text", "native"):
        dest = str(tmp_path / target)
        first = ops.convert_dump(sources["pfs-binary-None"], dest, target, now=1)
        again = ops.convert_dump(sources["pfs-binary-None"], dest, target, now=2)
        assert first["changed"] and not again["changed"], target
        assert ops.file_sha256(dest)[1] == first["sha256"]
        assert (again["bytes"], again["sha256"]) == ops.file_sha256(dest), "the file left in place is reported"


def test_pfstate_dump_does_not_summarise_what_it_does_not_print(pfemu_kernel, tmp_path, monkeypatch, capsys):
    from ansible_collections.netbsd.pf.plugins.module_utils import pfstate_cli  # pylint: disable=import-outside-toplevel
    pfemu_kernel.fill(50, seed=3)

    def no_summary(*args, **kwargs):
        raise AssertionError("the command prints no summary: a pass over the table for nothing")
    path = str(tmp_path / "table.bin")
    with monkeypatch.context() as patched:
        patched.setattr(ops, "summarize", no_summary)
        assert pfstate_cli.main(["dump", "-F", "pfs_binary", "--lease-file", str(tmp_path / "lease"), path]) == 0
    assert "50 states written to %s" % path in capsys.readouterr().out
    # The module still reports the summary.
    result = ops.dump_states(str(tmp_path / "again.bin"), fmt="pfs_binary", lease_file=str(tmp_path / "lease"))
    assert sum(result["by_protocol"].values()) == 50


@pytest.mark.parametrize("fmt, compress", [("pfs-binary", None), ("native", "zlib"), ("native", "none")])
def test_a_file_whose_start_is_written_again_is_hashed_once(tmp_path, monkeypatch, fmt, compress):
    from ansible_collections.netbsd.pf.plugins.module_utils import formats  # pylint: disable=import-outside-toplevel
    real_sha256 = hashlib.sha256
    hashed = []

    class CountingHash:
        def __init__(self, data=b""):
            self.real = real_sha256(data)
            hashed.append(len(data))

        def update(self, data):
            hashed.append(len(memoryview(data).cast("B")))
            self.real.update(data)

        def hexdigest(self):
            return self.real.hexdigest()

    records = generate_records(3000, 5, "little", now=1700000000)
    path = str(tmp_path / "out")
    with monkeypatch.context() as patched:
        patched.setattr(formats, "hashlib", types.SimpleNamespace(sha256=CountingHash))
        # No count: the writers write the count (pfs binary) or the prelude (native) again at the end.
        size, sha256, _count = write_dump(path, fmt, [records[:240 * 1000], records[240 * 1000:]], "little",
                                          compress=compress)
    assert (size, sha256) == ops.file_sha256(path)
    # Once: the file from disk, plus at most the native prelude hashed before the writer said it comes again.
    assert size <= sum(hashed) <= size + 200, hashed
