"""The options every member of the netbsd.pf.states action group shares, as module_defaults hands them out.

Ansible merges ``module_defaults: {group/netbsd.pf.states: {...}}`` into the
arguments of every module listed in the group in meta/runtime.yml; a member
that rejects one of them fails the whole play.  Each test here runs one member
with those group defaults, on a pf device that exists only at the path the
defaults name, and checks that the member used that device and lease file.
"""

import os
import pytest
import yaml

from ansible_collections.netbsd.pf.plugins.module_utils.argspec import COMMON_ARGSPEC
from ansible_collections.netbsd.pf.plugins.module_utils.lease import lease_view
from ansible_collections.netbsd.pf.plugins.modules import (
    states_convert, states_dump, states_flush, states_info, states_lock, states_restore,
)
from ansible_collections.netbsd.pf.tests.pfemu.inprocess import PfDeviceRouter
from ansible_collections.netbsd.pf.tests.pfemu.kernel import Kernel
from ansible_collections.netbsd.pf.tests.pfemu.structs import host_abi
from ansible_collections.netbsd.pf.tests.unit.plugins.modules.module_runner import run_module

RUNTIME = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "meta", "runtime.yml")
MEMBERS = {"states_convert": states_convert, "states_dump": states_dump, "states_flush": states_flush,
           "states_info": states_info, "states_lock": states_lock, "states_restore": states_restore}


@pytest.fixture
def host(tmp_path, monkeypatch):
    """A kernel behind a private device path (not /dev/pf) and the group defaults that point at it and at a private lease file."""
    device = str(tmp_path / "dev" / "pf")
    router = PfDeviceRouter(Kernel(abi=host_abi(), seed=7), device_path=device)
    router.install(monkeypatch)
    router.kernel.fill(40, seed=3)
    defaults = {"device": device, "lease_file": str(tmp_path / "run" / "netbsd_pf_lock.lease")}
    os.makedirs(os.path.dirname(defaults["lease_file"]), mode=0o700)
    yield router.kernel, defaults
    router.close_all()


def with_group_defaults(name, defaults, capsys, check_mode=False, **args):
    """Run member ``name`` the way module_defaults for group/netbsd.pf.states would: defaults first, task args over them."""
    merged = dict(defaults, **args)
    return run_module(MEMBERS[name].main, capsys, check_mode=check_mode, **merged)


def test_the_group_lists_the_six_members_and_each_declares_the_common_options():
    with open(RUNTIME, encoding="utf-8") as runtime:
        group = yaml.safe_load(runtime)["action_groups"]["states"]
    assert sorted(group) == sorted(MEMBERS)
    for name in group:
        spec = MEMBERS[name].argument_spec()
        for option, definition in COMMON_ARGSPEC.items():
            assert spec[option] == definition, "%s: %s" % (name, option)


def test_dump_reads_the_device_and_locks_under_the_lease_file(host, tmp_path, capsys):
    kernel, defaults = host
    result = with_group_defaults("states_dump", defaults, capsys, path=str(tmp_path / "s.pfstate"), lock="hold", lease=60)
    assert result.get("failed") is not True, result.get("msg")
    assert result["count"] == 40 and kernel.lock is True
    assert lease_view(defaults["lease_file"])["locked_by_lease"] is True
    with_group_defaults("states_lock", defaults, capsys, state="unlocked")
    assert kernel.lock is False


def test_restore_adds_to_the_device_under_the_lease_file(host, tmp_path, capsys):
    kernel, defaults = host
    dump = str(tmp_path / "s.pfstate")
    assert with_group_defaults("states_dump", defaults, capsys, path=dump)["count"] == 40
    flushed = with_group_defaults("states_flush", defaults, capsys, all=True)
    assert flushed["removed"] == 40
    result = with_group_defaults("states_restore", defaults, capsys, path=dump, age="none")
    assert result.get("failed") is not True, result.get("msg")
    assert result["restored"] + result["expired"] == 40 and result["restored"] > 30
    assert lease_view(defaults["lease_file"])["state"] == "released", "the restore's lease lived in the group's lease file"


def test_info_and_flush_report_the_lock_of_the_lease_file(host, capsys):
    kernel, defaults = host
    with_group_defaults("states_lock", defaults, capsys, state="locked", lease=60)
    assert kernel.lock is True
    info = with_group_defaults("states_info", defaults, capsys)
    assert info["status"]["states"] == 40
    assert info["lock"]["locked_by_lease"] is True
    flushed = with_group_defaults("states_flush", defaults, capsys, check_mode=True, all=True)
    assert flushed.get("failed") is not True, flushed.get("msg")
    assert flushed["removed"] == 40 and flushed["lock"]["locked_by_lease"] is True
    unlocked = with_group_defaults("states_lock", defaults, capsys, state="unlocked")
    assert unlocked["changed"] is True and kernel.lock is False


def test_convert_accepts_the_group_defaults_and_touches_neither(host, tmp_path, capsys):
    _kernel, defaults = host
    dump = str(tmp_path / "s.pfstate")
    with_group_defaults("states_dump", defaults, capsys, path=dump, lock="none")
    result = with_group_defaults("states_convert", defaults, capsys, src=dump, dest=str(tmp_path / "s.txt"), format="pfs_text")
    assert result.get("failed") is not True, result.get("msg")
    assert result["count"] == 40
    assert not os.path.exists(defaults["lease_file"]), "convert never locks, so it never writes a lease"


def test_default_device_is_dev_pf(tmp_path, capsys):
    """Without the group defaults the members open /dev/pf, which this test machine does not have."""
    result = run_module(states_info.main, capsys, tmp_path)
    assert result["failed"] is True and "/dev/pf" in result["msg"]


def test_common_return_values(host, tmp_path, capsys):
    """The names of the README's table of common return values, the same in every member that has the thing."""
    _kernel, defaults = host
    dump = str(tmp_path / "s.pfstate")
    results = {"states_dump": with_group_defaults("states_dump", defaults, capsys, path=dump, filters={"protocols": ["tcp"]})}
    results["states_convert"] = with_group_defaults("states_convert", defaults, capsys, src=dump, dest=str(tmp_path / "s.bin"),
                                                    format="pfs_binary")
    results["states_info"] = with_group_defaults("states_info", defaults, capsys, filters={"protocols": ["tcp"]})
    results["states_flush"] = with_group_defaults("states_flush", defaults, capsys, check_mode=True, protocol="tcp")
    results["states_restore"] = with_group_defaults("states_restore", defaults, capsys, check_mode=True, path=dump)
    results["states_lock"] = with_group_defaults("states_lock", defaults, capsys, state="unlocked")
    tcp = results["states_info"]["count"]
    assert 0 < tcp < 40
    for name, result in results.items():
        assert result.get("failed") is not True, (name, result.get("msg"))
        assert isinstance(result["duration"], float) and 0 <= result["duration"] < 60, name
        if name == "states_lock":
            continue
        assert result["states_per_second"] is None or result["states_per_second"] > 0, name
        expected_read = tcp if name in ("states_convert", "states_restore") else 40
        assert (result["read"], result["count"], result["filtered"]) == (expected_read, tcp, expected_read - tcp), name
    for name in ("states_dump", "states_convert", "states_restore"):
        result = results[name]
        assert result["path"] and result["bytes"] == os.path.getsize(result["path"]), name
        assert result["format"] in ("native", "pfs_binary", "pfs_text") and result["byte_order"] in ("little", "big"), name
    assert results["states_restore"]["total"] == results["states_restore"]["read"], "deprecated alias kept"
    assert results["states_flush"]["matched"] == results["states_flush"]["count"], "deprecated alias kept"
    inspected = with_group_defaults("states_convert", defaults, capsys, src=dump)
    assert (inspected["path"], inspected["format"], inspected["bytes"]) == (dump, "native", os.path.getsize(dump))
