"""operations: summaries, content identity, lock modes and conversions without Ansible."""

import os

import pytest

from ansible_collections.netbsd.pf.plugins.module_utils import operations as ops
from ansible_collections.netbsd.pf.plugins.module_utils import views
from ansible_collections.netbsd.pf.plugins.module_utils.argspec import OptionError
from ansible_collections.netbsd.pf.plugins.module_utils.lease import read_lease, release_lease
from ansible_collections.netbsd.pf.plugins.module_utils.records import StateCodec, swap_records


@pytest.fixture
def kernel(pfemu_kernel):
    pfemu_kernel.fill(400, seed=21)
    return pfemu_kernel


def test_summarize_matches_a_per_record_count(kernel):
    block = bytes(kernel.export_all())
    summary = views.summarize([block[:240 * 100], block[240 * 100:]], "little")
    codec = StateCodec("little")
    rows = [codec.to_dict(block[i:i + 240]) for i in range(0, len(block), 240)]
    assert summary["count"] == 400
    assert summary["by_protocol"]["tcp"] == sum(1 for r in rows if r["proto"] == 6)
    assert summary["by_address_family"].get("inet6", 0) == sum(1 for r in rows if r["af"] == 24)
    assert summary["by_direction"]["out"] == sum(1 for r in rows if r["direction"] == 2)
    established = sum(1 for r in rows if r["proto"] == 6 and r["src_state"] == 4 and r["dst_state"] == 4)
    assert summary["by_tcp_state"].get("ESTABLISHED:ESTABLISHED", 0) == established
    assert summary["by_creatorid"]["%08x" % kernel.hostid] == sum(1 for r in rows if r["creatorid"] == kernel.hostid)
    assert views.summarize([], "little")["count"] == 0


def test_summary_is_the_same_in_either_byte_order(kernel):
    block = bytes(kernel.export_all())
    assert views.summarize([block], "little") == views.summarize([swap_records(block, "little", "big")], "big")


def test_content_digest_ignores_capture_metadata_but_not_options(kernel, tmp_path):
    path = str(tmp_path / "d.pfstate")
    lease_file = str(tmp_path / "lease")
    first = ops.dump_states(path, lock="none", lease_file=lease_file, now=1000.0)
    assert ops.existing_content_digest(path, "native") == first["content_sha256"]
    assert ops.existing_content_digest(path, "pfs-binary") != first["content_sha256"]
    again = ops.dump_states(path, lock="none", lease_file=lease_file, now=2000.0)
    assert again["changed"] is False and again["sha256"] == first["sha256"]
    assert again["header"]["metadata"]["captured_at"] == 1000.0, "an unchanged dump keeps the old file"
    raw = ops.dump_states(path, lock="none", lease_file=lease_file, compress=False)
    assert raw["changed"] is True and raw["content_sha256"] != first["content_sha256"]


def test_take_snapshot_during_respects_a_lock_held_by_states_lock(kernel, tmp_path):
    lease_file = str(tmp_path / "lease")
    ops.lock_table("/dev/pf", 600, lease_file)
    snapshot = ops.take_snapshot("/dev/pf", "during", 300, lease_file)
    assert snapshot.lock_taken is False and kernel.lock is True, "the dump must not end someone else's lock"
    before, released = ops.unlock_table("/dev/pf", lease_file)
    assert before["locked_by_lease"] is True and released is True and kernel.lock is False


def test_hold_failure_unlocks(kernel, tmp_path, monkeypatch):
    lease_file = str(tmp_path / "lease")

    def boom(*args, **kwargs):
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(ops, "stage_dump", boom)
    with pytest.raises(ops.OperationError, match="Input/output error"):
        ops.dump_states(str(tmp_path / "d"), lock="hold", lease_file=lease_file)
    assert kernel.lock is False
    assert read_lease(lease_file)["state"] == "released"


def test_convert_is_byte_identical_whatever_the_running_host(kernel, tmp_path, monkeypatch):
    src = str(tmp_path / "src.pfstate")
    ops.dump_states(src, lock="none", lease_file=str(tmp_path / "lease"))
    outputs = []
    for host_order in ("little", "big"):
        monkeypatch.setattr(ops.sys, "byteorder", host_order)
        dest = str(tmp_path / ("out-%s.bin" % host_order))
        outputs.append(ops.convert_dump(src, dest, "pfs_binary")["sha256"])
    assert outputs[0] == outputs[1]
    monkeypatch.setattr(ops.sys, "byteorder", "big")
    assert ops.convert_dump(src, str(tmp_path / "h.bin"), "pfs_binary", byte_order="host")["byte_order"] == "big"


def test_unknown_format_and_bad_byte_order(tmp_path, kernel):
    with pytest.raises(OptionError, match="unknown dump format"):
        ops.dump_states(str(tmp_path / "x.bin"), fmt="pfs_json", lock="none", lease_file=str(tmp_path / "lease"))
    src = str(tmp_path / "src.bin")
    ops.dump_states(src, fmt="pfs_binary", lock="none", lease_file=str(tmp_path / "lease"))
    with pytest.raises(ops.OperationError, match="byte_order"):
        ops.convert_dump(src, str(tmp_path / "x"), "native", byte_order="middle")
    assert not os.path.exists(str(tmp_path / "x"))
    release_lease(str(tmp_path / "lease"))


@pytest.mark.parametrize("names", [("wm0", "vioif12", "pppoe0ab"), ("wm0", "tun123456", "bridge0"), ("a", "b" * 15)])
def test_brief_summary_counts_short_and_long_interface_names(names):
    """Names of up to 8 bytes are counted as one machine word; a longer one switches to the 16-byte fields."""
    codec = StateCodec("little")
    block = b"".join(codec.from_dict({"ifname": names[i % len(names)].encode(), "proto": 6 if i % 3 else 17, "af": 2})
                     for i in range(50))
    expected = dict((name, sum(1 for i in range(50) if names[i % len(names)] == name)) for name in names)
    brief = views.summarize([memoryview(block)], "little", brief=True)
    assert brief["by_interface"] == expected == views.summarize([block], "little")["by_interface"]
    assert brief["by_protocol"] == {"tcp": 33, "udp": 17} and brief["by_address_family"] == {"inet": 50}
    assert set(brief) == {"count", "by_interface", "by_protocol", "by_address_family"}


def test_snapshot_is_the_reply_buffer_not_a_copy(kernel, tmp_path):
    snapshot = ops.take_snapshot("/dev/pf", "during", 300, str(tmp_path / "lease"))
    assert isinstance(snapshot.block, memoryview) and snapshot.block.nbytes == 400 * 240
    assert bytes(snapshot.block) == bytes(kernel.export_all())
