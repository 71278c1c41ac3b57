"""netbsd.pf.states_info through its main(), against the in-process pf emulator."""

from functools import partial

import pytest

from ansible_collections.netbsd.pf.plugins.modules import states_info
from ansible_collections.netbsd.pf.tests.unit.plugins.modules.module_runner import run_module


run = partial(run_module, states_info.main)


@pytest.fixture
def kernel(pfemu_kernel):
    pfemu_kernel.fill(200, seed=11)
    return pfemu_kernel


def test_status_and_summary(kernel, tmp_path, capsys, pfemu_router):
    result = run(capsys, tmp_path, timeouts=True)
    assert result["changed"] is False
    assert result["status"]["states"] == 200 and result["status"]["running"] is True
    assert result["status"]["hostid"] == "%08x" % kernel.hostid
    assert result["state_limit"] == 10000
    assert result["summary"]["count"] == 200 == result["summary"]["total_in_table"]
    assert sum(result["summary"]["by_address_family"].values()) == 200
    assert result["timeouts"]["tcp.established"] == 86400
    assert result["lock"]["source"] == "lease_file" and result["lock"]["state"] == "none"
    assert "states" not in result


def test_states_with_filters_and_limit(kernel, tmp_path, capsys):
    result = run(capsys, tmp_path, states=True, limit=5, filters={"protocols": ["udp"]})
    udp = result["summary"]["count"]
    assert 5 < udp < 200 and result["filtered"] == 200 - udp
    assert len(result["states"]) == 5 and result["states_truncated"] is True
    assert all(state["proto"] == "udp" for state in result["states"])
    everything = run(capsys, tmp_path, states=True, limit=0)
    assert len(everything["states"]) == 200 and everything["states_truncated"] is False


def test_opens_the_device_read_only(kernel, tmp_path, capsys, monkeypatch):
    import os
    flags_seen = []
    real_open = os.open

    def spy(path, flags, *args, **kwargs):
        if path == "/dev/pf":
            flags_seen.append(flags)
        return real_open(path, flags, *args, **kwargs)
    monkeypatch.setattr(os, "open", spy)
    run(capsys, tmp_path)
    assert flags_seen and all(flags & (os.O_WRONLY | os.O_RDWR) == 0 for flags in flags_seen)


def test_negative_limit_is_refused(kernel, tmp_path, capsys):
    result = run(capsys, tmp_path, states=True, limit=-1)
    assert result["failed"] is True and "limit" in result["msg"]


def test_counts_the_states_another_hostid_created(kernel, tmp_path, capsys):
    from ansible_collections.netbsd.pf.plugins.module_utils.pfdev import PfDevice
    before_reboot = kernel.export_all()
    old_hostid = kernel.hostid
    kernel.reboot()   # stock NetBSD draws a new hostid at every boot (pf.conf without `set hostid`)
    assert kernel.hostid != old_hostid
    kernel.fill(30, seed=12)
    with PfDevice(writable=True) as device:
        device.add_states(before_reboot)   # a restore keeps each state's dumped creatorid
    result = run(capsys, tmp_path)
    assert result["status"]["hostid"] == "%08x" % kernel.hostid
    by_creatorid = result["summary"]["by_creatorid"]
    assert by_creatorid["%08x" % old_hostid] > 150   # the generator gives a few states to pfsync peers
    assert result["summary"]["created_by_other_hostids"] == 230 - by_creatorid["%08x" % kernel.hostid] >= 200
