"""The netbsd.pf.states_dump action plugin's fetch (fetch_to): private files from the first byte.

Controller code: ansible-test runs these on the controller's Pythons only.
"""

import hashlib
import os
import stat

import pytest

from ansible_collections.netbsd.pf.plugins.action import states_dump as states_dump_action


class _Loader(object):
    @staticmethod
    def path_dwim(path):
        return path


class _PlayContext(object):
    remote_addr = "192.0.2.1"


def _action(transfer):
    """The action plugin with ansible.builtin.fetch replaced by ``transfer(remote, local)``."""
    action = states_dump_action.ActionModule.__new__(states_dump_action.ActionModule)
    action._loader = _Loader()
    action._play_context = _PlayContext()
    action._run_builtin_fetch = lambda remote, local, task_vars: transfer(remote, local)
    return action


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
