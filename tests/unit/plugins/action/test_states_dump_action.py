"""The netbsd.pf.states_dump action plugin's fetch (fetch_to): private files from the first byte.

Controller code: ansible-test runs these on the controller's Pythons only.
"""

import hashlib
import os
import stat
from types import SimpleNamespace

import pytest

from ansible_collections.netbsd.pf.plugins.action import states_dump as states_dump_action


class _Loader(object):
    @staticmethod
    def path_dwim(path):
        return path


class _PlayContext(object):
    remote_addr = "192.0.2.1"


def _action(transfer, args=None, module_result=None, delegate_to=None, become=None):
    """The action plugin with the connection's file copy replaced by ``transfer(remote, local)``
    and the module's run by ``module_result``; every module run is recorded in ``action.modules_run``."""
    action = states_dump_action.ActionModule.__new__(states_dump_action.ActionModule)
    action._loader = _Loader()
    action._play_context = _PlayContext()
    action._task = SimpleNamespace(args=dict(args or {}), async_val=0, check_mode=False, delegate_to=delegate_to,
                                   action="netbsd.pf.states_dump")
    action._connection = SimpleNamespace(_shell=SimpleNamespace(tmpdir="/tmp/ansible-tmp-test"), become=become,
                                         fetch_file=transfer)
    action.modules_run = []

    def execute_module(module_name, module_args, task_vars):
        action.modules_run.append(module_name)
        return dict(module_result or {})
    action._execute_module = execute_module
    return action


def _write(content):
    def transfer(remote, local):
        with open(local, "wb") as handle:
            handle.write(content)
        return {"changed": True}
    return transfer


DUMP_RESULT = {"changed": True, "path": "/var/db/pfstate/fw1.pfstate", "count": 3, "sha256": hashlib.sha256(b"x").hexdigest()}


@pytest.fixture
def open_umask():
    previous = os.umask(0)
    yield
    os.umask(previous)


def test_fetched_dump_is_private_from_the_first_byte(tmp_path, open_umask):
    """R4: under umask 0, an existing 0755 host directory and a transport that truncates like shutil.copyfile."""
    content = b"states" * 1000
    base = tmp_path / "captures"
    (base / "fw1").mkdir(parents=True)
    os.chmod(str(base), 0o755)      # a directory others can write to is refused (attack round 2)
    os.chmod(str(base / "fw1"), 0o755)
    seen = []

    def transfer(remote, local):
        seen.append(stat.S_IMODE(os.stat(local).st_mode))
        with open(local, "wb") as handle:
            handle.write(content)
        return {"changed": True}

    final = _action(transfer)._fetch("/var/db/pf.pfstate", hashlib.sha256(content).hexdigest(), str(base),
                                     {"inventory_hostname": "fw1"})
    assert final == str(base / "fw1" / "pf.pfstate") and open(final, "rb").read() == content
    assert seen == [0o600], "the .part file must be 0600 before the transfer writes into it"
    assert stat.S_IMODE(os.stat(final).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(str(base / "fw1")).st_mode) == 0o700, "an existing host directory is made private"
    assert os.umask(0) == 0, "the caller's umask is restored"


def test_fetch_creates_missing_directories_private(tmp_path, open_umask):
    base = tmp_path / "a" / "b"
    created = []

    def transfer(remote, local):
        created.append(local)
        with open(local, "wb") as handle:
            handle.write(b"x")
        return {"changed": True}

    _action(transfer)._fetch("/var/db/pf.pfstate", hashlib.sha256(b"x").hexdigest(), str(base),
                             {"inventory_hostname": "fw2"})
    for directory in (tmp_path / "a", base, base / "fw2"):
        assert stat.S_IMODE(os.stat(str(directory)).st_mode) == 0o700, directory


def test_fetch_with_a_wrong_checksum_leaves_nothing(tmp_path, open_umask):
    def transfer(remote, local):
        with open(local, "wb") as handle:
            handle.write(b"tampered")
        return {"changed": True}

    with pytest.raises(states_dump_action._FetchError, match="SHA-256 mismatch"):
        _action(transfer)._fetch("/var/db/pf.pfstate", "0" * 64, str(tmp_path), {"inventory_hostname": "fw3"})
    assert os.listdir(str(tmp_path / "fw3")) == []


def test_host_directory_owned_by_another_user_is_refused(tmp_path, open_umask, monkeypatch):
    """D12: a host directory someone else created (and could swap captures in) is refused, not chmod-ed and used."""
    host_dir = tmp_path / "fw1"
    host_dir.mkdir()
    os.chmod(str(host_dir), 0o777)
    monkeypatch.setattr(states_dump_action.os, "geteuid", lambda: os.stat(str(host_dir)).st_uid + 1)
    with pytest.raises(states_dump_action._FetchError, match=r"fw1 is owned by uid \d+, not by the controller user"):
        _action(_write(b"x"))._fetch("/var/db/pf.pfstate", hashlib.sha256(b"x").hexdigest(), str(tmp_path),
                                     {"inventory_hostname": "fw1"})
    assert os.listdir(str(host_dir)) == []
    assert stat.S_IMODE(os.stat(str(host_dir)).st_mode) == 0o777, "the refused directory is left as it was"


def test_host_directory_that_is_a_symlink_is_refused(tmp_path, open_umask):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "captures").mkdir(mode=0o755)
    os.chmod(str(tmp_path / "captures"), 0o755)
    os.symlink(str(elsewhere), str(tmp_path / "captures" / "fw1"))
    with pytest.raises(states_dump_action._FetchError, match="fw1 is not a directory"):
        _action(_write(b"x"))._fetch("/var/db/pf.pfstate", hashlib.sha256(b"x").hexdigest(), str(tmp_path / "captures"),
                                     {"inventory_hostname": "fw1"})
    assert os.listdir(str(elsewhere)) == []


@pytest.mark.parametrize("hostname, directory", [("2001:db8::1", "2001%3Adb8%3A%3A1"), ("fw-münchen", "fw-m%C3%BCnchen")])
def test_fetch_uses_the_host_dir_filter_encoding(tmp_path, open_umask, hostname, directory):
    """D3: the action plugin and the roles (filter netbsd.pf.host_dir) name a host's directory alike."""
    final = _action(_write(b"x"))._fetch("/var/db/pf.pfstate", hashlib.sha256(b"x").hexdigest(), str(tmp_path),
                                         {"inventory_hostname": hostname})
    assert final == str(tmp_path / directory / "pf.pfstate")


def test_hosts_whose_names_sanitise_alike_get_their_own_directories(tmp_path, open_umask):
    """D3: fw-ü and fw-ö used to share fw-_ (one capture silently overwrote the other)."""
    first = _action(_write(b"u"))._fetch("/d/states.pfstate", hashlib.sha256(b"u").hexdigest(), str(tmp_path),
                                         {"inventory_hostname": "fw-ü"})
    second = _action(_write(b"o"))._fetch("/d/states.pfstate", hashlib.sha256(b"o").hexdigest(), str(tmp_path),
                                          {"inventory_hostname": "fw-ö"})
    assert first != second
    assert open(first, "rb").read() == b"u" and open(second, "rb").read() == b"o"


def test_delegated_dump_lands_in_the_delegated_hosts_directory(tmp_path, open_umask):
    """The dump comes from the host the module ran on (migrate dumps its source with delegate_to)."""
    final = _action(_write(b"x"), delegate_to="fw-source")._fetch(
        "/d/s.pfstate", hashlib.sha256(b"x").hexdigest(), str(tmp_path), {"inventory_hostname": "fw-destination"})
    assert final == str(tmp_path / "fw-source" / "s.pfstate")


@pytest.mark.parametrize("case", ["under a regular file", "read-only directory"])
def test_controller_failure_is_a_message_and_keeps_the_module_result(tmp_path, open_umask, case, monkeypatch):
    """D5: fetch_to under a regular file / on a read-only file system: a clear msg, the module's result kept."""
    if case == "under a regular file":
        (tmp_path / "file").write_bytes(b"")
        fetch_to = str(tmp_path / "file" / "captures")
        expected = "Not a directory"
    else:
        fetch_to = str(tmp_path / "captures")

        def read_only_makedirs(path, *args, **kwargs):
            raise OSError(30, "Read-only file system", path)
        monkeypatch.setattr(states_dump_action.os, "makedirs", read_only_makedirs)
        expected = "Read-only file system"
    action = _action(_write(b"x"), args={"path": DUMP_RESULT["path"], "fetch_to": fetch_to}, module_result=DUMP_RESULT)
    result = action.run(task_vars={"inventory_hostname": "fw1"})
    assert result["failed"] is True and "exception" not in result
    assert result["msg"].startswith("the dump was written on the target (/var/db/pfstate/fw1.pfstate) but not fetched: ")
    assert expected in result["msg"] and "captures" in result["msg"]
    for key, value in DUMP_RESULT.items():
        assert result[key] == value, "the module's result is kept"


def test_base_directory_created_by_another_host_at_the_same_moment(tmp_path, open_umask, monkeypatch):
    """Workers of two hosts both find fetch_to missing and both create it: the second must not fail."""
    base = tmp_path / "captures"
    real_makedirs = os.makedirs

    def racing_makedirs(path, *args, **kwargs):
        if path == str(base) and not base.exists():
            real_makedirs(path, 0o700)      # the other worker wins the race
        return real_makedirs(path, *args, **kwargs)

    monkeypatch.setattr(states_dump_action.os, "makedirs", racing_makedirs)
    final = _action(_write(b"x"))._fetch("/d/s.pfstate", hashlib.sha256(b"x").hexdigest(), str(base),
                                         {"inventory_hostname": "fw2"})
    assert open(final, "rb").read() == b"x"


def test_fetch_is_one_copy_through_the_connection_without_a_stat_module(tmp_path, open_umask):
    """Speed (issue 13): no ansible.builtin.fetch, whose stat module on the target (for a SHA-1) was one more module
    round trip per host; the module's SHA-256 checks the copy."""
    copied = []

    def transfer(remote, local):
        copied.append(remote)
        return _write(b"x")(remote, local)

    action = _action(transfer, args={"path": DUMP_RESULT["path"], "fetch_to": str(tmp_path)}, module_result=DUMP_RESULT)
    action._run_builtin_fetch = lambda *args: pytest.fail("ansible.builtin.fetch used without become")
    result = action.run(task_vars={"inventory_hostname": "fw1"})
    assert "failed" not in result and open(result["fetched"], "rb").read() == b"x"
    assert action.modules_run == ["netbsd.pf.states_dump"] and copied == [DUMP_RESULT["path"]]


def test_fetch_under_become_goes_through_builtin_fetch(tmp_path, open_umask):
    """Under become the connection user may not read the dump: ansible.builtin.fetch reads it through the become user."""
    action = _action(lambda remote, local: pytest.fail("direct copy under become"), become=object())
    fetched = []

    def builtin_fetch(remote, local, task_vars):
        fetched.append(remote)
        return _write(b"x")(remote, local)
    action._run_builtin_fetch = builtin_fetch
    final = action._fetch("/d/s.pfstate", hashlib.sha256(b"x").hexdigest(), str(tmp_path), {"inventory_hostname": "fw1"})
    assert fetched == ["/d/s.pfstate"] and open(final, "rb").read() == b"x"


def test_failed_builtin_fetch_under_become_is_a_message(tmp_path, open_umask):
    action = _action(None, args={"path": DUMP_RESULT["path"], "fetch_to": str(tmp_path)}, module_result=DUMP_RESULT,
                     become=object())
    action._run_builtin_fetch = lambda remote, local, task_vars: {"failed": True, "msg": "file not found"}
    result = action.run(task_vars={"inventory_hostname": "fw1"})
    assert result["failed"] is True and result["msg"].endswith("but not fetched: file not found")
    assert os.listdir(str(tmp_path / "fw1")) == []


def test_no_remote_temporary_directory_is_made_before_the_module_runs():
    """Speed: the fetch puts nothing on the target, so ActionBase.run must not make a remote tmp dir
    up front (one round trip, and one more to remove it, even with pipelining)."""
    assert _action(None)._early_needs_tmp_path() is False
