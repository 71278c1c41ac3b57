"""netbsd.pf.states_convert through its main(): no device, files only."""

import json
import os
import struct
from functools import partial

import pytest

from ansible_collections.netbsd.pf.plugins.module_utils.formats import open_dump
from ansible_collections.netbsd.pf.plugins.module_utils.operations import dump_states
from ansible_collections.netbsd.pf.plugins.module_utils.records import swap_records
from ansible_collections.netbsd.pf.plugins.modules import states_convert
from ansible_collections.netbsd.pf.tests.unit.plugins.modules.module_runner import run_module


run = partial(run_module, states_convert.main)


def read(path):
    with open_dump(path) as reader:
        return b"".join(bytes(block) for block in reader.blocks()), reader.byte_order, reader.format


@pytest.fixture
def dump(pfemu_kernel, tmp_path):
    """A native dump of 250 states, written with the device, then the device is not needed any more."""
    pfemu_kernel.fill(250, seed=5)
    path = str(tmp_path / "src.pfstate")
    dump_states(path, lock="none", lease_file=str(tmp_path / "lease"))
    return path


def test_inspect_only(dump, capsys):
    result = run(capsys, src=dump)
    assert result["changed"] is False and result["src_format"] == "native"
    assert result["count"] == 250 == result["summary"]["count"]
    assert result["header"]["metadata"]["tool"] == "netbsd.pf.states_dump"
    assert result["sha256"] and result["bytes"] == os.path.getsize(dump)


def test_byte_order_swap_round_trip(dump, tmp_path, capsys):
    original, order = read(dump)[:2]
    other = "big" if order == "little" else "little"
    swapped = str(tmp_path / "swapped.bin")
    result = run(capsys, src=dump, dest=swapped, format="pfs_binary", byte_order=other)
    assert result["changed"] is True and (result["src_byte_order"], result["byte_order"]) == (order, other)
    block, swapped_order, fmt = read(swapped)
    assert (swapped_order, fmt) == (other, "pfs-binary")
    assert block == bytes(swap_records(original, order, other))
    with open(swapped, "rb") as handle:
        assert struct.unpack("<i" if other == "little" else ">i", handle.read(4))[0] == 250

    back = str(tmp_path / "back.pfstate")
    run(capsys, src=swapped, dest=back, byte_order=order)
    assert read(back)[0] == original


def test_default_output_order_is_the_inputs_not_the_hosts(dump, tmp_path, capsys):
    original, order = read(dump)[:2]
    other = "big" if order == "little" else "little"
    foreign = str(tmp_path / "foreign.pfstate")
    run(capsys, src=dump, dest=foreign, byte_order=other)
    out = str(tmp_path / "out.bin")
    result = run(capsys, src=foreign, dest=out, format="pfs-binary")
    assert result["byte_order"] == other
    records, out_order = read(out)[:2]
    assert out_order == other
    assert bytes(swap_records(records, other, order)) == original      # the same states, only byte-swapped


def test_output_is_deterministic(dump, tmp_path, capsys):
    first, second = str(tmp_path / "a.txt"), str(tmp_path / "b.txt")
    a = run(capsys, src=dump, dest=first, format="pfs_text")
    b = run(capsys, src=dump, dest=second, format="pfs_text")
    assert a["sha256"] == b["sha256"]
    assert run(capsys, src=dump, dest=first, format="pfs_text")["changed"] is False


def test_filters_and_rename(dump, tmp_path, capsys):
    dest = str(tmp_path / "v6.pfstate")
    result = run(capsys, src=dump, dest=dest, filters={"address_family": "inet6"}, rename={"all": "vlan7"})
    assert 0 < result["count"] < 250 and result["filtered"] == 250 - result["count"]
    inspected = run(capsys, src=dest)
    assert set(inspected["summary"]["by_address_family"]) == {"inet6"}
    assert "all" not in inspected["summary"]["by_interface"]


def test_check_mode_writes_nothing(dump, tmp_path, capsys):
    dest = str(tmp_path / "never.bin")
    result = run(capsys, check_mode=True, src=dump, dest=dest, format="pfs_binary")
    assert result["changed"] is True and not os.path.exists(dest)


def test_damaged_source_fails_cleanly(dump, tmp_path, capsys):
    damaged = str(tmp_path / "damaged.pfstate")
    data = bytearray(open(dump, "rb").read())
    data[-10] ^= 0xff
    open(damaged, "wb").write(bytes(data))
    dest = str(tmp_path / "out.bin")
    result = run(capsys, src=damaged, dest=dest, format="pfs_binary")
    assert result["failed"] is True and damaged in result["msg"]
    assert "Traceback" not in json.dumps(result) and not os.path.exists(dest)
    missing = run(capsys, src=str(tmp_path / "nope"))
    assert missing["failed"] is True and "does not exist" in missing["msg"]
