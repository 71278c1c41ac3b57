"""The NPF workflows: plugins/module_utils/npf_operations.py against the NPF emulator behind /dev/npf."""

import os
import stat

import pytest

from ansible_collections.netbsd.pf.plugins.module_utils.firewall import FirewallError, detect_firewall
from ansible_collections.netbsd.pf.plugins.module_utils.npf_native import read_npf_file
from ansible_collections.netbsd.pf.plugins.module_utils.npf_operations import (
    NpfOperationError, dump_npf, npf_info, restore_npf,
)
from ansible_collections.netbsd.pf.plugins.module_utils.formats import write_dump
from ansible_collections.netbsd.pf.plugins.module_utils.npf_snapshot import NpfSnapshot
from ansible_collections.netbsd.pf.plugins.module_utils.npfdev import NpfError
from ansible_collections.netbsd.pf.tests.pfemu.generate import generate_records

DROPS = ("invalid", "expired", "nat", "duplicate", "over_limit")


def adds_up(result):
    """Both accountings: NPF's reasons, and pf's (what roles that work on both firewalls read)."""
    dropped = sum(result[reason] for reason in DROPS)
    npf = result["restored"] + result["already_running"] + dropped + result["unconvertible"] + result["filtered"]
    pf = result["restored"] + result["already_present"] + result["rejected"] + result["expired"] + result["filtered"]
    return npf == pf == result["read"]


def connections(host):
    with host.device() as device:
        snapshot = NpfSnapshot(device.save(), "little", "test")
    for conn in snapshot.connections:
        conn.repair_keys(True)
    return sorted((c.proto, c.ifname, c.flags, c.alen, bytes(c.forw.saddr), c.forw.sport, bytes(c.forw.daddr),
                   c.forw.dport, c.forw.di, c.back.ifname, c.state.to_bytes("little")) for c in snapshot.connections)


def test_auto_picks_the_only_firewall_present(npfemu_host, tmp_path):
    assert detect_firewall("auto", pf_device=str(tmp_path / "no-pf")) == "npf"


def test_auto_picks_pf_on_a_pf_host(pfemu_router, tmp_path):
    assert detect_firewall("auto", npf_device=str(tmp_path / "no-npf")) == "pf"


def test_auto_refuses_two_active_firewalls_and_none(npfemu_host, pfemu_router, tmp_path):
    with pytest.raises(FirewallError, match="cannot choose: /dev/pf is active and /dev/npf is active"):
        detect_firewall("auto")
    pushed = tmp_path / "pushed.pfstate"
    pushed.write_bytes(b"x")
    with pytest.raises(FirewallError, match="found no packet filter"):
        detect_firewall("auto", pf_device=str(tmp_path / "a"), npf_device=str(tmp_path / "b"),
                        discard_on_error=str(pushed))
    assert not pushed.exists()
    npfemu_host.boot(start=False)
    assert detect_firewall("auto") == "pf"
    assert detect_firewall("npf") == "npf"


def test_dump_writes_a_private_native_npf_file_and_is_idempotent(npfemu_host, tmp_path):
    npfemu_host.fill(40)
    path = str(tmp_path / "npf.pfstate")
    checked = dump_npf(path, check_mode=True)
    assert checked["changed"] and not os.path.exists(path) and checked["count"] == 40
    result = dump_npf(path)
    assert result["changed"] and result["count"] == 40 == sum(result["by_protocol"].values())
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert result["header"]["kind"] == "npf" and result["header"]["metadata"]["firewall"] == "npf"
    with open(path, "rb") as handle:
        header, snapshot = read_npf_file(handle, os.path.getsize(path), path)
    assert len(snapshot.connections) == 40 and header["sha256"] == result["header"]["sha256"]
    again = dump_npf(path)
    assert not again["changed"] and again["sha256"] == result["sha256"]
    assert os.listdir(str(tmp_path)) == ["npf.pfstate"]


def test_dump_refuses_a_missing_directory(npfemu_host, tmp_path):
    with pytest.raises(NpfOperationError, match="does not exist; create it first"):
        dump_npf(str(tmp_path / "missing" / "npf.pfstate"))


def test_info_counts_add_up(npfemu_host):
    npfemu_host.fill(25)
    info = npf_info(connections=True, limit=5)
    assert info["npf"]["active"] is True and info["npf"]["version"] == 22 and info["npf"]["rules"] == 2
    assert info["summary"]["connections"] == 25 == info["summary"]["valid"] + info["summary"]["invalid"]
    assert len(info["connections"]) == 5 and info["connections_truncated"]


def test_reboot_restore_gives_back_every_connection_field_by_field(npfemu_host, tmp_path):
    npfemu_host.fill(60)
    before = connections(npfemu_host)
    path = str(tmp_path / "npf.pfstate")
    dump_npf(path)
    npfemu_host.boot()
    assert connections(npfemu_host) == []
    checked = restore_npf(path, check_mode=True)
    assert checked["changed"] and checked["restored"] == 60 and connections(npfemu_host) == []
    result = restore_npf(path)
    assert result["changed"] and result["restored"] == 60 == result["read"] and result["repaired"] == 60
    assert adds_up(result) and result["accounted"] and result["verify_failed"] == []
    assert connections(npfemu_host) == before
    again = restore_npf(path)
    assert not again["changed"] and again["already_running"] == 60 and adds_up(again)


def test_restore_merges_connections_newer_than_the_snapshot(npfemu_host, tmp_path):
    npfemu_host.fill(10)
    path = str(tmp_path / "npf.pfstate")
    dump_npf(path)
    npfemu_host.boot()
    npfemu_host.fill(4, seed=8, first=500)
    result = restore_npf(path)
    assert result["restored"] == 10 and result["merged_running"] == 4 and adds_up(result)
    assert npfemu_host.kernel.connection_count == 14
    npfemu_host.boot()
    npfemu_host.fill(2, seed=8, first=900)
    with pytest.raises(NpfOperationError, match="nothing was loaded: .*2 connections that the snapshot does not hold"):
        restore_npf(path, running_conns="refuse")
    assert npfemu_host.kernel.connection_count == 2


def test_restore_ages_the_snapshot_by_its_capture_time(npfemu_host, tmp_path):
    npfemu_host.fill(30)
    path = str(tmp_path / "npf.pfstate")
    dump_npf(path, now=1700000000.0)
    npfemu_host.boot()
    # UDP connections (60 s in NPF) expire after 100 s, established TCP (86400 s) does not.
    result = restore_npf(path, now=1700000100.0)
    assert result["age_source"] == "header" and result["age_seconds"] == 100
    assert result["expired"] > 0 and result["restored"] == 30 - result["expired"] and adds_up(result)


def test_a_damaged_snapshot_loads_nothing(npfemu_host, tmp_path):
    npfemu_host.fill(5)
    path = str(tmp_path / "npf.pfstate")
    dump_npf(path)
    with open(path, "r+b") as handle:
        handle.seek(-3, os.SEEK_END)
        handle.write(b"\xff\xff\xff")
    npfemu_host.boot()
    with pytest.raises(NpfOperationError, match="refusing to restore .*npf.pfstate, nothing was loaded"):
        restore_npf(path)
    assert npfemu_host.kernel.connection_count == 0


def test_pf_dump_migrates_to_npf_and_names_what_it_cannot_keep(npfemu_host, tmp_path):
    path = str(tmp_path / "pf.pfstate")
    write_dump(path, "native", [generate_records(150, seed=5, now=1700000000, interfaces=("wm0", "wm1"),
                                                 floating_share=0.3)], "little")
    result = restore_npf(path, age="none")
    conversion = result["conversion"]
    assert result["source_kind"] == "pf" and result["read"] == 150 == conversion["input"]
    # States already expired in the pf dump count as expired, the others that did not convert as unconvertible.
    assert result["unconvertible"] + result["expired"] == conversion["unconvertible"]
    assert result["unconvertible"] > 0 and result["expired"] == conversion["reasons"]["expired"]
    assert len(conversion["rejected"]) == conversion["unconvertible"]
    assert adds_up(result) and result["accounted"]
    assert npfemu_host.kernel.connection_count == result["restored"] > 0


def test_pf_dump_filtered_and_renamed_before_the_conversion(npfemu_host, tmp_path):
    path = str(tmp_path / "pf.pfstate")
    write_dump(path, "native", [generate_records(150, seed=5, now=1700000000, interfaces=("em0", "em1"),
                                                 floating_share=0.3)], "little")
    transforms = {"filters": {"protocols": [6]}, "rename": {"em0": "wm0", "em1": "wm1"}}
    result = restore_npf(path, age="none", transforms=transforms)
    assert result["filtered"] > 0 and result["count"] == result["read"] - result["filtered"] == result["conversion"]["input"]
    assert adds_up(result) and result["accounted"] and result["restored"] > 0
    with npfemu_host.device() as device:
        loaded = NpfSnapshot(device.save(), "little", "test").connections
    assert {conn.proto for conn in loaded} == {6} and {conn.ifname for conn in loaded} <= {"wm0", "wm1"}
    npfemu_host.boot()
    dump_npf(str(tmp_path / "npf.pfstate"))
    with pytest.raises(NpfOperationError, match="filters and rename apply to pf dumps only"):
        restore_npf(str(tmp_path / "npf.pfstate"), transforms=transforms)


@pytest.mark.parametrize("damaged", [False, True])
def test_a_pushed_copy_is_removed_before_the_device_is_touched(npfemu_host, tmp_path, damaged):
    npfemu_host.fill(5)
    path = str(tmp_path / "pushed.pfstate")
    dump_npf(path)
    if damaged:
        with open(path, "r+b") as handle:
            handle.truncate(100)
    with pytest.raises((NpfOperationError, NpfError)):
        restore_npf(path, device_path=str(tmp_path / "no-npf"), remove_after_open=True)
    assert not os.path.exists(path)
