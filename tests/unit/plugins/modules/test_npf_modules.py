"""states_dump, states_restore and states_info with firewall=auto|npf, against the NPF emulator behind /dev/npf."""

import os
from functools import partial

from ansible_collections.netbsd.pf.plugins.modules import states_dump, states_info, states_restore
from ansible_collections.netbsd.pf.tests.unit.plugins.modules.module_runner import run_module

DROPS = ("invalid", "expired", "nat", "duplicate", "over_limit")
dump = partial(run_module, states_dump.main)
restore = partial(run_module, states_restore.main)
info = partial(run_module, states_info.main)


def adds_up(result):
    npf = (result["restored"] + result["already_running"] + result["unconvertible"] + result["filtered"]
           + sum(result[reason] for reason in DROPS))
    pf = result["restored"] + result["already_present"] + result["rejected"] + result["expired"] + result["filtered"]
    return npf == pf == result["read"]


def test_auto_on_an_npf_host_dumps_reboots_and_restores(npfemu_host, tmp_path, capsys):
    npfemu_host.fill(50)
    path = str(tmp_path / "npf.pfstate")
    checked = dump(capsys, tmp_path, check_mode=True, path=path)
    assert checked["changed"] and checked["firewall"] == "npf" and not os.path.exists(path)
    dumped = dump(capsys, tmp_path, path=path)
    assert dumped["changed"] and dumped["count"] == 50 and dumped["header"]["kind"] == "npf"
    assert dumped["npf_summary"]["keys_need_repair"] == 50
    npfemu_host.boot()
    predicted = restore(capsys, tmp_path, check_mode=True, diff=True, path=path)
    assert predicted["changed"] and predicted["restored"] == 50 and npfemu_host.kernel.connection_count == 0
    assert predicted["diff"]["before"] == "" and "wm0 tcp" in predicted["diff"]["after"]
    restored = restore(capsys, tmp_path, path=path)
    assert restored["changed"] and restored["restored"] == 50 == restored["read"] and adds_up(restored)
    assert npfemu_host.kernel.connection_count == 50 and restored["verify_failed"] == []
    again = restore(capsys, tmp_path, path=path)
    assert not again["changed"] and again["already_running"] == 50 and adds_up(again)
    state = info(capsys, tmp_path, states=True, limit=3)
    assert state["firewall"] == "npf" and state["summary"]["connections"] == 50 == state["read"]
    assert len(state["connections"]) == 3 and state["connections_truncated"]


def test_pf_only_options_are_refused_on_npf(npfemu_host, tmp_path, capsys):
    result = dump(capsys, tmp_path, path=str(tmp_path / "x"), format="pfs_binary", lock="hold")
    assert result["failed"] and "format=pfs_binary, lock=hold: not supported with firewall=npf" in result["msg"]
    assert not os.path.exists(str(tmp_path / "x"))
    result = info(capsys, tmp_path, timeouts=True)
    assert result["failed"] and "timeouts: pf-only" in result["msg"]


def test_a_damaged_npf_file_fails_cleanly_and_loads_nothing(npfemu_host, tmp_path, capsys):
    path = tmp_path / "npf.pfstate"
    path.write_bytes(b"\x89PFSTAT\n\x00\x02" + bytes(100))
    result = restore(capsys, tmp_path, path=str(path), firewall="npf")
    assert result["failed"] and "refusing to restore %s, nothing was loaded" % path in result["msg"]
    assert "Traceback" not in result["msg"] and npfemu_host.kernel.connection_count == 0


def test_auto_refuses_to_guess_between_two_active_firewalls(npfemu_host, pfemu_router, tmp_path, capsys):
    result = info(capsys, tmp_path)
    assert result["failed"] and "set firewall to pf or npf" in result["msg"]
    pf = info(capsys, tmp_path, firewall="pf")
    assert "firewall" not in pf and pf["status"]["running"] is True


def test_pf_results_are_unchanged_by_auto(pfemu_kernel, tmp_path, capsys):
    pfemu_kernel.fill(30, seed=4)
    path = str(tmp_path / "pf.pfstate")
    auto = dump(capsys, tmp_path, path=path, check_mode=True)
    explicit = dump(capsys, tmp_path, path=path, check_mode=True, firewall="pf")
    for result in (auto, explicit):
        for key in ("duration", "states_per_second"):
            result.pop(key)
        result.pop("invocation", None)      # the arguments differ; ansible-core 2.21 no longer returns them
    assert auto == explicit and "firewall" not in auto and auto["count"] == 30
