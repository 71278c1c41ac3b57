"""Attack round, second front: the controller (fetch_to, retention, latest, reports), the reboot role's
target side (library install, rc.d script) and hostile pfs binary records (docs/reliability.md,
"Attack round, second front").

Controller code and role files: these run on the controller's Python only.
"""

import hashlib
import os
import stat
from types import SimpleNamespace

import pytest

from ansible_collections.netbsd.pf.plugins.action import states_dump as states_dump_action

OTHER_UID = 65534


class _Loader(object):
    @staticmethod
    def path_dwim(path):
        return path


def _dump_action(transfer):
    action = states_dump_action.ActionModule.__new__(states_dump_action.ActionModule)
    action._loader = _Loader()
    action._play_context = SimpleNamespace(remote_addr="192.0.2.1")
    action._task = SimpleNamespace(args={}, async_val=0, check_mode=False, delegate_to=None,
                                   action="netbsd.pf.states_dump")
    action._connection = SimpleNamespace(become=None, fetch_file=transfer)
    return action


def _writer(content):
    def transfer(remote, local):
        with open(local, "wb") as handle:
            handle.write(content)
    return transfer


def _fetch(base, content=b"dump", transfer=None, host="fw1"):
    return _dump_action(transfer or _writer(content))._fetch(
        "/var/db/pfstate/s.pfstate", hashlib.sha256(content).hexdigest(), str(base), {"inventory_hostname": host})


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


# --- fetch_to: the directories above the host directory ---------------------------------------

@pytest.mark.parametrize("depth", [0, 1], ids=["fetch_to itself", "its parent"])
def test_fetch_to_writable_by_others_and_not_sticky_is_refused(tmp_path, depth):
    """Anyone who can write to a directory above the host directory can rename the host directory
    away and put a link to theirs in its place between the check and the transfer."""
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(str(shared), 0o777)
    base = shared if depth == 0 else shared / "captures"
    with pytest.raises(states_dump_action._FetchError, match="shared can be written by other users and is not sticky"):
        _fetch(base)
    assert not (shared / "fw1").exists() and not (shared / "captures" / "fw1").exists()


def test_fetch_to_in_a_sticky_world_writable_directory_is_accepted(tmp_path):
    """/tmp-like directories: the sticky bit keeps others from renaming our entries."""
    shared = tmp_path / "sticky"
    shared.mkdir()
    os.chmod(str(shared), 0o1777)
    final = _fetch(shared / "captures")
    assert open(final, "rb").read() == b"dump"


@needs_root
def test_fetch_to_owned_by_another_user_is_refused(tmp_path):
    base = tmp_path / "captures"
    base.mkdir(mode=0o755)
    os.chown(str(base), OTHER_UID, OTHER_UID)
    with pytest.raises(states_dump_action._FetchError,
                       match=r"captures is owned by uid 65534, neither root nor the controller user"):
        _fetch(base)
    assert os.listdir(str(base)) == []


def test_host_directory_swapped_during_the_transfer_keeps_nothing(tmp_path):
    """The host directory renamed away and replaced by a link to another directory while the
    transport runs: nothing is placed through the link."""
    base = tmp_path / "captures"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def swapping_transfer(remote, local):
        os.rename(str(base / "fw1"), str(base / "fw1.moved"))
        os.symlink(str(elsewhere), str(base / "fw1"))
        _writer(b"dump")(remote, local)

    with pytest.raises(states_dump_action._FetchError):
        _fetch(base, transfer=swapping_transfer)
    assert sorted(os.listdir(str(elsewhere))) in ([], ["s.pfstate.part"]), "no capture placed through the link"
    assert not (elsewhere / "s.pfstate").exists()


def test_fetched_copy_replaced_after_the_transfer_is_refused(tmp_path):
    """The .part file replaced by a link (to a file with the right content) after the transfer."""
    base = tmp_path / "captures"
    decoy = tmp_path / "decoy"
    decoy.write_bytes(b"dump")

    def replacing_transfer(remote, local):
        _writer(b"dump")(remote, local)
        os.unlink(local)
        os.symlink(str(decoy), local)

    with pytest.raises(states_dump_action._FetchError, match="replaced after the transfer"):
        _fetch(base, transfer=replacing_transfer)
    assert not (base / "fw1" / "s.pfstate").exists()


def test_fetched_copy_replaced_between_checksum_and_rename_is_not_kept(tmp_path, monkeypatch):
    base = tmp_path / "captures"
    real_rename = os.rename

    def swap_then_rename(src, dst, **kwargs):
        if str(src).endswith(".part"):      # someone puts another file at the checked name first
            planted = str(base / "fw1" / "planted")
            with open(planted, "wb") as handle:
                handle.write(b"planted")
            real_rename(planted, str(base / "fw1" / os.path.basename(str(src))))
        return real_rename(src, dst, **kwargs)

    monkeypatch.setattr(states_dump_action.os, "rename", swap_then_rename)
    with pytest.raises(states_dump_action._FetchError, match="replaced between its SHA-256 check"):
        _fetch(base)
    assert not (base / "fw1" / "s.pfstate").exists()
