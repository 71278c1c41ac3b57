"""The restore engine against the in-process pf emulator (tests/pfemu): every state in exactly one bucket."""

import errno
import fcntl
import functools
import json
import os
import struct
import sys
import random
import tracemalloc

import pytest

from ansible_collections.netbsd.pf.plugins.module_utils import lease as lease_mod
from ansible_collections.netbsd.pf.plugins.module_utils import restore as restore_mod
from ansible_collections.netbsd.pf.plugins.module_utils.formats import write_dump
from ansible_collections.netbsd.pf.plugins.module_utils.lease import arm_lease, read_lease
from ansible_collections.netbsd.pf.plugins.module_utils.pfdev import PfDevice
from ansible_collections.netbsd.pf.plugins.module_utils.records import RECORD_SIZE, StateCodec, ifname_bytes
from ansible_collections.netbsd.pf.plugins.module_utils.restore import (
    RestoreError, exclusive_restore, parse_timestamp, resolve_age, restore_file,
)
from ansible_collections.netbsd.pf.plugins.module_utils.views import keys_at, record_keys

ORDER = sys.byteorder
CODEC = StateCodec(ORDER)
CREATORID = 0x0BADCAFE
BUCKETS = ("restored", "already_present", "rejected", "expired", "filtered")


# --- helpers shared with test_flush and the module tests ------------------------------

def make_state(n, proto=6, ifname="all", direction=2, expire=3600, timeout=2, mss=1460, ident=True,
               lan=None, ext=None, gwy=None, af=2):
    """A state numbered n (TCP ESTABLISHED by default): unique id and lan host, same ext host."""
    lan_addr, lan_port = lan or ("10.%d.%d.%d" % (n >> 16 & 255, n >> 8 & 255, n & 255), 1024 + n % 60000)
    ext_addr, ext_port = ext or ("203.0.113.5", 443)
    gwy_addr, gwy_port = gwy or (lan_addr, lan_port)

    def addr(text):
        return bytes(int(part) for part in text.split(".")) + bytes(12)

    fields = dict(
        id=(n + 1).to_bytes(8, "big") if ident else bytes(8),
        ifname=ifname.encode("ascii"),
        lan_addr=addr(lan_addr), lan_port=struct.pack(">H", lan_port),
        gwy_addr=addr(gwy_addr), gwy_port=struct.pack(">H", gwy_port),
        ext_addr=addr(ext_addr), ext_port=struct.pack(">H", ext_port),
        src_seqlo=1000 + n, src_seqhi=66536 + n, src_max_win=4096, src_mss=mss, src_state=4, src_wscale=7,
        dst_seqlo=5000 + n, dst_seqhi=70536 + n, dst_max_win=2048, dst_mss=mss, dst_state=4, dst_wscale=7,
        rt_addr=bytes(16), rule=7, anchor=0xFFFFFFFF, nat_rule=0xFFFFFFFF, creation=120, expire=expire,
        packets0_lo=10, bytes0_lo=1000, creatorid=CREATORID if ident else 0, af=af, proto=proto,
        direction=direction, timeout=timeout,
    )
    return CODEC.from_dict(fields)


def write_states(path, records, fmt="pfs-binary", metadata=None):
    write_dump(str(path), fmt, [b"".join(records)], ORDER, metadata=metadata)
    return str(path)


def table():
    """The live table as field dicts, in kernel order."""
    with PfDevice() as device:
        block = bytes(device.get_states())
    return [CODEC.to_dict(block[i:i + RECORD_SIZE]) for i in range(0, len(block), RECORD_SIZE)]


def add_directly(records):
    """States put in by someone else (one DIOCADDSTATES per record)."""
    with PfDevice(writable=True) as device:
        for record in records:
            device.add_states(record)


def restore(path, tmp_path, **options):
    options.setdefault("lease_file", str(tmp_path / "lease"))
    options.setdefault("age", "none")
    return restore_file(str(path), **options)


def assert_balanced(report, total):
    assert report["total"] == total
    assert sum(report[bucket] for bucket in BUCKETS) == total


# --- the plain cases -------------------------------------------------------------------------

def test_restore_into_empty_table(pfemu_kernel, tmp_path):
    records = [make_state(n) for n in range(25)]
    report = restore(write_states(tmp_path / "d.bin", records), tmp_path)
    assert_balanced(report, 25)
    assert report["restored"] == 25
    live = table()
    assert [state["id"] for state in live] == [CODEC.to_dict(r)["id"] for r in records]   # array order kept
    assert all(state["rule"] == 0xFFFFFFFF for state in live)                              # default rule, as NetBSD
    assert pfemu_kernel.lock is False


def test_restore_twice_is_idempotent(pfemu_kernel, tmp_path):
    path = write_states(tmp_path / "d.bin", [make_state(n) for n in range(10)])
    restore(path, tmp_path)
    second = restore(path, tmp_path)
    assert_balanced(second, 10)
    assert (second["restored"], second["already_present"], second["rejected"]) == (0, 10, 0)
    assert second["add_calls"] == 0
    assert len(table()) == 10


def test_restore_into_table_holding_some(pfemu_kernel, tmp_path):
    records = [make_state(n) for n in range(12)]
    add_directly(records[3:6])
    report = restore(write_states(tmp_path / "d.bin", records), tmp_path, chunk_size=4)
    assert_balanced(report, 12)
    assert (report["restored"], report["already_present"], report["add_failures"], report["table_reads"]) == (9, 3, 0, 0)
    assert len(table()) == 12


def test_conflicts_are_predicted_not_discovered(pfemu_kernel, tmp_path):
    records = [make_state(n) for n in range(6)]
    # Same connection key with another id (the client reconnected), and a NAT ext/gwy collision.
    add_directly([make_state(100, lan=("10.0.0.1", 1025)),
                  make_state(101, lan=("192.168.9.9", 5000), gwy=("10.0.0.3", 1027))])
    report = restore(write_states(tmp_path / "d.bin", records), tmp_path)
    assert_balanced(report, 6)
    assert (report["restored"], report["rejected"], report["add_failures"]) == (4, 2, 0)
    assert sorted(item["record"] for item in report["rejected_states"]) == [2, 4]
    assert {item["category"] for item in report["rejected_states"]} == {"conflict"}


def test_on_conflict_fail_adds_nothing(pfemu_kernel, tmp_path):
    add_directly([make_state(100, lan=("10.0.0.1", 1025))])
    with pytest.raises(RestoreError, match="1 states conflict.*record 2"):
        restore(write_states(tmp_path / "d.bin", [make_state(n) for n in range(5)]), tmp_path, on_conflict="fail")
    assert len(table()) == 1
    assert pfemu_kernel.lock is False


# --- the ENOMEM path: states the prediction did not know about ------------------------------------

@pytest.mark.parametrize("positions", [(0,), (2,), (4,), (0, 2, 4), (0, 1, 2, 3, 4)])
def test_failed_chunk_is_settled_exactly(pfemu_kernel, tmp_path, monkeypatch, positions):
    """Rivals appear between the prediction and the add at given positions of every 5-record chunk."""
    records = [make_state(n) for n in range(15)]
    rivals = [n for n in range(15) if n % 5 in positions]
    real_plan = restore_mod.plan_restore

    def plan_then_race(*args, **kwargs):
        plan = real_plan(*args, **kwargs)
        add_directly([make_state(1000 + n, lan=("10.0.0.%d" % n, 1024 + n)) for n in rivals])
        return plan

    monkeypatch.setattr(restore_mod, "plan_restore", plan_then_race)
    report = restore(write_states(tmp_path / "d.bin", records), tmp_path, chunk_size=5)
    assert_balanced(report, 15)
    assert report["rejected"] == len(rivals)
    assert report["restored"] == 15 - len(rivals)
    # One chunk fails, the table read back settles every rival at once; the record the kernel stopped
    # at is rejected only after failing again alone.
    assert (report["add_failures"], report["table_reads"]) == (2, 1)
    assert sorted(item["record"] - 1 for item in report["rejected_states"]) == rivals
    assert all(item["category"] == "conflict" and "appeared during the restore" in item["reason"]
               for item in report["rejected_states"])
    restored_ids = set(state["id"] for state in table())
    for n, record in enumerate(records):
        assert (CODEC.to_dict(record)["id"] in restored_ids) == (n not in rivals)


def test_transient_enomem_loses_nothing(pfemu_kernel, tmp_path):
    """A chunk refused once (a pool briefly exhausted) is sent again: the failing record alone, then the rest."""
    pfemu_kernel.inject_fault("DIOCADDSTATES", 2, errno.ENOMEM)
    records = [make_state(n) for n in range(9)]
    report = restore(write_states(tmp_path / "d.bin", records), tmp_path, chunk_size=3)
    assert_balanced(report, 9)
    assert (report["restored"], report["rejected"]) == (9, 0)
    assert (report["add_calls"], report["add_failures"], report["table_reads"]) == (5, 1, 1)   # [0-2] [3-5]x [3] [4, 5] [6-8]
    assert [state["id"] for state in table()] == [CODEC.to_dict(r)["id"] for r in records]


def test_enomem_that_persists_alone_is_rejected_as_memory(pfemu_kernel, tmp_path, monkeypatch):
    pfemu_kernel.inject_fault("DIOCADDSTATES", 2, errno.ENOMEM)
    real_add = PfDevice.add_states
    calls = []

    def fail_again_alone(self, block, *args, **kwargs):
        calls.append(len(block))
        if len(calls) == 3:
            pfemu_kernel.inject_fault("DIOCADDSTATES", 1, errno.ENOMEM)
        return real_add(self, block, *args, **kwargs)

    monkeypatch.setattr(PfDevice, "add_states", fail_again_alone)
    report = restore(write_states(tmp_path / "d.bin", [make_state(n) for n in range(9)]), tmp_path, chunk_size=3)
    assert_balanced(report, 9)
    assert (report["restored"], report["rejected"]) == (8, 1)
    assert report["rejected_states"][0]["record"] == 4
    assert report["rejected_states"][0]["category"] == "memory"
    assert report["table_reads"] == 1       # the lone failure reuses the table read for the chunk: nothing changed


@pytest.mark.parametrize("chunk_size", [1, 4, 100])
def test_identical_rivals_are_already_present_not_restored(pfemu_kernel, tmp_path, monkeypatch, chunk_size):
    """Exact copies of records 0, 5 and 11 appear after the plan: counted as already present, none lost."""
    records = [make_state(n) for n in range(12)]
    rivals = [0, 5, 11]
    real_plan = restore_mod.plan_restore

    def plan_then_race(*args, **kwargs):
        plan = real_plan(*args, **kwargs)
        add_directly([records[n] for n in rivals])
        return plan

    monkeypatch.setattr(restore_mod, "plan_restore", plan_then_race)
    report = restore(write_states(tmp_path / "d.bin", records), tmp_path, chunk_size=chunk_size, fix_mss=False)
    assert_balanced(report, 12)
    assert (report["restored"], report["already_present"], report["rejected"]) == (9, 3, 0)
    assert report["appeared_during_restore"] == 3 and report["rejected_states"] == []
    assert sorted(state["id"] for state in table()) == sorted(CODEC.to_dict(r)["id"] for r in records)
    assert report["table_reads"] == 1       # the first failure's read settles the later rivals too
    assert report["summary_after"] == {("all", "tcp"): 9}      # what this restore added; the rivals are not its doing


def test_counts_survive_a_foreign_insert_during_the_failed_call(pfemu_kernel, tmp_path, monkeypatch):
    """The insert counter over-counts when someone else inserts during the call: the table caps it."""
    records = [make_state(n) for n in range(6)]
    real_plan = restore_mod.plan_restore
    real_add = PfDevice.add_states

    def plan_then_race(*args, **kwargs):
        plan = real_plan(*args, **kwargs)
        add_directly([records[2]])
        return plan

    seeds = iter(range(70, 90))

    def add_then_foreign_insert(self, block, *args, **kwargs):
        try:
            return real_add(self, block, *args, **kwargs)
        finally:
            pfemu_kernel.fill(1, seed=next(seeds))      # a new connection right after the call

    monkeypatch.setattr(restore_mod, "plan_restore", plan_then_race)
    monkeypatch.setattr(PfDevice, "add_states", add_then_foreign_insert)
    report = restore(write_states(tmp_path / "d.bin", records), tmp_path, chunk_size=6)
    assert_balanced(report, 6)
    assert (report["restored"], report["already_present"], report["rejected"]) == (5, 1, 0)
    assert report["appeared_during_restore"] == 1


def test_full_table_rejects_the_rest_without_more_calls(pfemu_kernel, tmp_path, monkeypatch):
    pfemu_kernel.state_limit = 20
    records = [make_state(n) for n in range(40)]
    real_plan = restore_mod.plan_restore

    def plan_then_fill(*args, **kwargs):
        plan = real_plan(*args, **kwargs)
        pfemu_kernel.fill(15, seed=5)           # room drops to 5 after the plan
        return plan

    monkeypatch.setattr(restore_mod, "plan_restore", plan_then_fill)
    # purge_wait 0: the fill leaves expired states that a real kernel's purge would free, and this kernel has no purge thread.
    report = restore(write_states(tmp_path / "d.bin", records[:18]), tmp_path, chunk_size=3, purge_wait=0)
    assert_balanced(report, 18)
    assert (report["restored"], report["rejected"], report["rejected_by_reason"]) == (5, 13, {"state limit": 13})
    # [0-2] [3-5]x (2 in) [5] alone: full; the 12 others are rejected without a call or a table read.
    assert (report["add_calls"], report["add_failures"], report["table_reads"]) == (3, 2, 1)


def test_plan_keeps_no_object_per_record():
    """Planning 20,000 states into a table of 20,000 stays far below the old ~1.4 KB per state."""
    count = 20000
    block = b"".join(make_state(n) for n in range(count))
    live = b"".join(make_state(n + count) for n in range(count))
    tracemalloc.start()
    try:
        plan = restore_mod.plan_restore(bytearray(block), ORDER, live)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(plan.to_add) == count
    assert peak / (2 * count) < 450, peak


def test_states_without_identity_travel_alone(pfemu_kernel, tmp_path):
    records = [make_state(n, ident=n not in (3, 4)) for n in range(7)]
    first = restore(write_states(tmp_path / "d.bin", records), tmp_path)
    assert first["restored"] == 7
    assert first["add_calls"] == 4          # [0, 1, 2], [3], [4], [5, 6]
    second = restore(str(tmp_path / "d.bin"), tmp_path)
    assert (second["restored"], second["already_present"]) == (0, 7)


# --- limit, ageing, damage, mss ---------------------------------------------------------------------

def test_state_limit_refuse(pfemu_kernel, tmp_path):
    pfemu_kernel.state_limit = 8
    add_directly([make_state(500 + n, lan=("172.16.0.%d" % n, 999)) for n in range(3)])
    with pytest.raises(RestoreError, match="room for 5"):
        restore(write_states(tmp_path / "d.bin", [make_state(n) for n in range(6)]), tmp_path)
    assert len(table()) == 3


def test_state_limit_fit_by_priority(pfemu_kernel, tmp_path):
    pfemu_kernel.state_limit = 4
    records = [
        make_state(0, proto=1, timeout=9, expire=15),      # icmp: last
        make_state(1, proto=17, timeout=8, expire=50),     # udp
        make_state(2, timeout=3, expire=800),              # tcp closing
        make_state(3, timeout=2, expire=100),              # tcp established, shorter
        make_state(4, timeout=2, expire=80000),            # tcp established, longer
        make_state(5, proto=47, timeout=13, expire=40),    # gre: other
    ]
    report = restore(write_states(tmp_path / "d.bin", records), tmp_path, limit_policy="fit")
    assert_balanced(report, 6)
    assert report["restored"] == 4
    assert sorted(item["record"] for item in report["rejected_states"]) == [1, 6]
    assert report["rejected_by_reason"] == {"state limit": 2}
    # Insertion order is the file's order, not the priority order.
    assert [state["id"] for state in table()] == [CODEC.to_dict(records[n])["id"] for n in (1, 2, 3, 4)]


def test_expired_states_are_dropped_never_sent_with_zero(pfemu_kernel, tmp_path):
    records = [make_state(0, expire=0), make_state(1, expire=30), make_state(2, expire=3600)]
    path = write_states(tmp_path / "d.bin", records)
    report = restore(path, tmp_path, age=60)
    assert_balanced(report, 3)
    assert (report["restored"], report["expired"]) == (1, 2)
    (state,) = table()
    assert state["expire"] == 3540


def test_age_auto_uses_native_capture_time(pfemu_kernel, tmp_path):
    import time
    path = write_states(tmp_path / "d.pfstate", [make_state(0, expire=100), make_state(1, expire=5000)], fmt="native",
                        metadata={"captured_at": time.time() - 200})
    report = restore(path, tmp_path, age="auto")
    assert report["age_source"] == "header"
    assert 199 <= report["age_seconds"] <= 202
    assert (report["restored"], report["expired"]) == (1, 1)
    assert 4798 <= table()[0]["expire"] <= 4801


def test_age_sources_in_order():
    assert resolve_age("auto", 1000, captured_at=900, header_captured_at=800) == (100, "captured_at", 900)
    assert resolve_age("auto", 1000, header_captured_at=800, file_mtime=990) == (200, "header", 800)
    assert resolve_age("auto", 1000, source_mtime=950, file_mtime=990) == (50, "controller file mtime", 950)
    assert resolve_age("auto", 1000, file_mtime=990) == (10, "file mtime", 990)
    assert resolve_age("auto", 1000, file_mtime=2000)[0] == 0
    assert resolve_age("none", 1000, captured_at=1) == (0, "none", None)
    assert resolve_age("45", 1000) == (45, "option", None)
    assert parse_timestamp("2024-05-01T12:30:00Z") == 1714566600
    assert parse_timestamp("2024-05-01T14:30:00+02:00") == 1714566600
    assert parse_timestamp("1714566600") == 1714566600
    with pytest.raises(ValueError):
        parse_timestamp("yesterday")


def test_corrupted_native_file_is_refused_with_nothing_added(pfemu_kernel, tmp_path):
    path = write_states(tmp_path / "d.pfstate", [make_state(n) for n in range(20)], fmt="native")
    data = bytearray(open(path, "rb").read())
    data[-7] ^= 0x40
    open(path, "wb").write(bytes(data))
    with pytest.raises(RestoreError, match="nothing was added"):
        restore(path, tmp_path)
    assert table() == []


def test_damaged_record_is_refused_with_nothing_added(pfemu_kernel, tmp_path):
    records = [make_state(n) for n in range(5)]
    records[3] = make_state(3, timeout=21)
    with pytest.raises(RestoreError, match="record 4: timeout index 21"):
        restore(write_states(tmp_path / "d.bin", records), tmp_path)
    assert table() == []


@pytest.mark.skipif(sys.byteorder != "little", reason="the mss swap only happens on little-endian kernels")
@pytest.mark.parametrize("fix_mss, expected", [(True, 1460), (False, 46085)])
def test_mss_survives_the_round_trip(pfemu_kernel, tmp_path, fix_mss, expected):
    report = restore(write_states(tmp_path / "d.bin", [make_state(0, mss=1460)]), tmp_path, fix_mss=fix_mss)
    assert report["mss_fixed"] is fix_mss
    (state,) = table()
    assert (state["src_mss"], state["dst_mss"]) == (expected, expected)


def test_filters_and_rename(pfemu_kernel, tmp_path):
    records = [make_state(0, ifname="wm0"), make_state(1, proto=17, timeout=8, ifname="wm0"), make_state(2, ifname="re0")]
    report = restore(write_states(tmp_path / "d.bin", records), tmp_path,
                     transforms={"filters": {"protocols": [6]}, "rename": {"wm0": "ixg0"}})
    assert_balanced(report, 3)
    assert (report["restored"], report["filtered"]) == (2, 1)
    assert sorted(state["ifname"].rstrip(b"\0") for state in table()) == [b"ixg0", b"re0"]


# --- check mode, lock, serialisation ----------------------------------------------------------------

def test_check_mode_predicts_the_real_counts(pfemu_kernel, tmp_path, private_restore_lock):
    pfemu_kernel.state_limit = 12
    records = [make_state(n, expire=10 if n % 7 == 0 else 900) for n in range(16)]
    add_directly(records[1:3] + [make_state(300, lan=("10.0.0.5", 1029))])
    path = write_states(tmp_path / "d.bin", records)
    predicted = restore(path, tmp_path, check_mode=True, age=20, limit_policy="fit")
    assert len(table()) == 3
    assert not os.path.exists(private_restore_lock)
    actual = restore(path, tmp_path, age=20, limit_policy="fit")
    for key in BUCKETS + ("total", "rejected_by_reason"):
        assert predicted[key] == actual[key], key
    assert predicted["summary_after"] == actual["summary_after"]


def test_lock_is_held_during_the_add_and_released(pfemu_kernel, tmp_path, monkeypatch):
    seen = []
    real_add = PfDevice.add_states

    def spy(self, block, *args, **kwargs):
        seen.append(pfemu_kernel.lock)
        return real_add(self, block, *args, **kwargs)

    monkeypatch.setattr(PfDevice, "add_states", spy)
    report = restore(write_states(tmp_path / "d.bin", [make_state(0)]), tmp_path)
    assert seen == [True]
    assert pfemu_kernel.lock is False
    assert report["lock"]["taken"] is True
    assert read_lease(str(tmp_path / "lease"))["state"] == "released"


def test_lock_none_leaves_the_table_alone(pfemu_kernel, tmp_path):
    report = restore(write_states(tmp_path / "d.bin", [make_state(0)]), tmp_path, lock="none")
    assert report["lock"] == {"mode": "none", "taken": False}
    assert not os.path.exists(str(tmp_path / "lease"))


def test_concurrent_restore_is_refused_after_timeout(pfemu_kernel, tmp_path, private_restore_lock):
    path = write_states(tmp_path / "d.bin", [make_state(0)])
    lock_path = private_restore_lock
    with exclusive_restore(lock_path, 0):
        with pytest.raises(RestoreError, match=r"another restore \(pid %d\)" % os.getpid()):
            restore(path, tmp_path, restore_lock_timeout=0)
    assert table() == []
    fd = os.open(lock_path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)     # released afterwards
    finally:
        os.close(fd)


def test_lease_from_before_the_last_boot_is_taken_over(pfemu_kernel, tmp_path, monkeypatch):
    """A states_lock lease (no watchdog) recorded before the boot guards nothing: the restore locks for itself."""
    lease_file = str(tmp_path / "lease")
    arm_lease(lease_file, 0, holder="netbsd.pf.states_lock")
    lease = read_lease(lease_file)
    lease["locked_at"] -= 3600                  # recorded an hour ago; the host booted a minute ago
    with open(lease_file, "w") as handle:
        json.dump(lease, handle)
    monkeypatch.setattr(lease_mod, "_seconds_since_boot", lambda: 60.0)
    seen = []
    real_add = PfDevice.add_states
    monkeypatch.setattr(PfDevice, "add_states", lambda self, block, **kw: seen.append(pfemu_kernel.lock) or real_add(self, block, **kw))
    report = restore(write_states(tmp_path / "d.bin", [make_state(0)]), tmp_path)
    assert report["lock"]["taken"] is True and seen == [True]
    assert any("before the last boot" in warning for warning in report["warnings"])
    assert read_lease(lease_file)["state"] == "released" and pfemu_kernel.lock is False


def test_lease_of_this_boot_is_left_alone(pfemu_kernel, tmp_path, monkeypatch):
    lease_file = str(tmp_path / "lease")
    arm_lease(lease_file, 0, holder="netbsd.pf.states_lock")
    monkeypatch.setattr(lease_mod, "_seconds_since_boot", lambda: 86400.0)
    report = restore(write_states(tmp_path / "d.bin", [make_state(0)]), tmp_path)
    assert report["lock"]["taken"] is False and report["lock"]["held_by_lease"] == read_lease(lease_file)["token"]
    assert read_lease(lease_file)["state"] == "held"


def _plan_peak_per_record(count, live):
    """The plan of ``count`` states into the table ``live`` ("empty", "the dump" or "other states"), and its peak per state."""
    block = bytearray(b"".join(make_state(n) for n in range(count)))
    live = {"empty": b"", "the dump": bytes(block),
            "other states": b"".join(make_state(count + n, ifname="wm0") for n in range(count))}[live]
    tracemalloc.start()
    try:
        plan = restore_mod.plan_restore(block, ORDER, live)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return plan, peak / count


def test_plan_into_an_empty_table_keeps_almost_nothing():
    """After a reboot the model holds the input's accepted records only, without their keys (about 300 bytes each before)."""
    plan, per_record = _plan_peak_per_record(20000, "empty")
    assert len(plan.to_add) == 20000
    assert per_record < 40, per_record


def test_plan_into_a_table_that_holds_the_dump_keeps_no_key():
    """A second restore of the same dump: the model of the live table holds no key either (about 350 bytes a state before)."""
    plan, per_record = _plan_peak_per_record(20000, "the dump")
    assert len(plan.to_add) == 0 and plan.outcome.counts["already_present"] == 20000
    assert per_record < 64, per_record


def test_plan_into_a_table_of_other_states_keeps_no_key():
    """A full table of other states and an input that is all new: the most the model holds (about 660 bytes a state before)."""
    plan, per_record = _plan_peak_per_record(10000, "other states")
    assert len(plan.to_add) == 10000
    assert per_record < 64, per_record


def _colliding_mix(seed, live_count=60, count=240):
    """A live table and a dump that meet it, and themselves, in every way the model tells apart."""
    rng = random.Random(seed)
    live = [make_state(n, ifname=rng.choice(("wm0", "wm1"))) for n in range(live_count)]
    records = []
    for n in range(count):
        other = rng.randrange(live_count + 40)
        kind = rng.randrange(40)                # a few collisions of each kind among many new states
        ifname = rng.choice(("wm0", "wm1"))
        if kind == 0 and other < live_count:
            records.append(live[other])                                     # already present
        elif kind == 1:
            records.append(make_state(other, ifname=ifname, lan=("192.0.2.%d" % (n % 250), 5000 + n)))  # same id
        elif kind == 2:
            taken = ("10.0.%d.%d" % (other >> 8, other & 255), 1024 + other % 60000)
            records.append(make_state(1000 + n, ifname=ifname, lan=taken))         # same connection
        elif kind == 3:
            records.append(make_state(other, ifname=ifname, ident=False))  # no identity
        elif kind == 4:
            taken = ("10.0.%d.%d" % (other >> 8, other & 255), 1024 + other % 60000)
            records.append(make_state(2000 + n, ifname=ifname, gwy=taken))         # same translation
        elif kind == 5:
            records.append(make_state(3000 + n, ifname=ifname, expire=0))
        else:
            records.append(make_state(4000 + n, ifname=ifname))
    # The same connections on the other interface (the kernel keys them per interface), translated apart.
    elsewhere = [make_state(5000 + n, ifname="wm1" if CODEC.to_dict(live[n])["ifname"].startswith(b"wm0") else "wm0",
                            lan=("10.0.0.%d" % n, 1024 + n), gwy=("198.51.100.%d" % n, 7000 + n)) for n in range(10)]
    return b"".join(live + elsewhere), b"".join(records)


class _DictModel:
    """The planner's model as plain dicts of packed keys (its semantics before the compact one): the oracle."""

    def __init__(self, byte_order, live=b"", own=b""):
        self.byte_order = byte_order
        self.live = live
        self.own = own
        self.by_ident = {}
        self.by_key1 = {}
        self.key1_elsewhere = {}
        self.by_key2 = {}
        for index, keys in enumerate(record_keys(live, byte_order)):
            self.insert(index, *keys[:4])

    def record(self, holder):
        block, index = (self.live, holder) if holder >= 0 else (self.own, ~holder)
        return block[index * RECORD_SIZE:(index + 1) * RECORD_SIZE]

    def insert(self, holder, ident, raw_ifname, key1, key2):
        if ident != bytes(12):
            self.by_ident[ident] = holder
        if key1 in self.by_key1:
            self.key1_elsewhere[key1 + ifname_bytes(raw_ifname)] = holder
        else:
            self.by_key1[key1] = holder
            self.by_key2.setdefault(key2, holder)

    def classify(self, ident, raw_ifname, key1, key2):
        if ident != bytes(12):
            twin = self.by_ident.get(ident)
            if twin is not None:
                twin_keys = next(record_keys(self.record(twin), self.byte_order))
                if twin_keys[2] == key1 and ifname_bytes(twin_keys[1]) == ifname_bytes(raw_ifname):
                    return restore_mod.ALREADY_PRESENT, twin
                return restore_mod.SAME_ID, twin
        first = self.by_key1.get(key1)
        if first is not None:
            name = ifname_bytes(raw_ifname)
            first_name = ifname_bytes(next(record_keys(self.record(first), self.byte_order))[1])
            holder = first if first_name == name else self.key1_elsewhere.get(key1 + name)
            if holder is None:
                return restore_mod.NEW, None
            return (restore_mod.ALREADY_PRESENT if ident == bytes(12) else restore_mod.SAME_CONNECTION), holder
        owner = self.by_key2.get(key2)
        if owner is not None:
            return restore_mod.SAME_TRANSLATION, owner
        return restore_mod.NEW, None

    def admit(self, holder, ident, raw_ifname, key1, key2):
        verdict, found = self.classify(ident, raw_ifname, key1, key2)
        if verdict == restore_mod.NEW:
            self.insert(holder, ident, raw_ifname, key1, key2)
        return verdict, found

    why = restore_mod.TableModel.why


def _hash_in_three(key):
    """Three hash values for all keys (and one tag): nearly every lookup meets other keys with its hash."""
    return hash(key) % 3


def _plan_with(monkeypatch, model, live, block, on_conflict="skip"):
    monkeypatch.setattr(restore_mod, "TableModel", model)
    try:
        result = restore_mod.plan_restore(bytearray(block), ORDER, live, age_seconds=1, on_conflict=on_conflict)
    except RestoreError as exc:
        return str(exc), exc.report
    return result.outcome.as_dict(), list(result.to_add), sorted(result.without_identity), bytes(result.block)


@pytest.mark.parametrize("key_hash", [hash, _hash_in_three], ids=["hash", "three-hashes"])
@pytest.mark.parametrize("seed", range(12))
def test_the_compact_model_plans_as_the_dict_model(monkeypatch, seed, key_hash):
    """Same plan, counts, reasons and bytes as plain dicts of keys, also when most keys share a hash."""
    live, block = _colliding_mix(seed)
    compact = functools.partial(restore_mod.TableModel, key_hash=key_hash)
    for on_conflict in ("skip", "fail"):
        planned = _plan_with(monkeypatch, compact, live, block, on_conflict)
        assert planned == _plan_with(monkeypatch, _DictModel, live, block, on_conflict)
    counts = planned[1]     # on_conflict=fail: the message and the report
    assert "conflict with the table" in planned[0] and counts["already_present"] and counts["expired"]


def test_the_mixes_meet_every_conflict():
    """The seeds of the equivalence test reach every reason (each seed some of them)."""
    reasons = set()
    for seed in range(12):
        live, block = _colliding_mix(seed)
        plan = restore_mod.plan_restore(bytearray(block), ORDER, live, age_seconds=1)
        reasons.update(state["reason"].split(" ")[0] for state in plan.outcome.rejected_states)
    assert reasons == {"id", "same", "translated"}


def _constant_hash(_key):
    return 0


def test_keys_with_equal_hashes_are_told_apart():
    """Every key hashes alike: only the keys recomputed from the holders' records tell the verdicts."""
    live = make_state(0, ifname="wm0")
    model = restore_mod.TableModel(ORDER, live, key_hash=_constant_hash)

    def verdict(record):
        return model.classify(*keys_at(record, ORDER, 0)[:4])[0]

    assert verdict(live) == restore_mod.ALREADY_PRESENT
    assert verdict(make_state(1, ifname="wm0")) == restore_mod.NEW
    assert verdict(make_state(0, ifname="wm0", lan=("192.0.2.1", 80))) == restore_mod.SAME_ID
    assert verdict(make_state(5, ifname="wm0", lan=("10.0.0.0", 1024))) == restore_mod.SAME_CONNECTION
    assert verdict(make_state(5, ifname="wm1", lan=("10.0.0.0", 1024))) == restore_mod.NEW
    assert verdict(make_state(0, ifname="wm0", ident=False)) == restore_mod.ALREADY_PRESENT
    assert verdict(make_state(6, ifname="wm0", gwy=("10.0.0.0", 1024))) == restore_mod.SAME_TRANSLATION


def test_the_key_index_grows_and_keeps_every_key():
    """An index sized for none (the rare keys used on several interfaces) takes any number of them."""
    block = b"".join(make_state(n) for n in range(300))
    model = restore_mod.TableModel(ORDER, b"", block)
    index = model.key1_elsewhere
    assert all(index.setdefault(model._key1_on_interface(~n), ~n) == ~n for n in range(300))
    assert all(index.find(model._key1_on_interface(~n))[0] == ~n for n in range(300))
    assert index.setdefault(model._key1_on_interface(~7), ~8) == ~7     # a key keeps its holder
    assert index.find(b"no such key")[0] is None
