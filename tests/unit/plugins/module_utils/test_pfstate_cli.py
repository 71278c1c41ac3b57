"""The pfstate command end to end: main(argv) against the emulated kernel behind /dev/pf."""

import errno
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile

import pytest

from ansible_collections.netbsd.pf.plugins.module_utils import operations, pfstate_cli
from ansible_collections.netbsd.pf.plugins.module_utils.formats import NATIVE, PFS_BINARY, PFS_TEXT, open_dump
from ansible_collections.netbsd.pf.plugins.module_utils.lease import read_lease
from ansible_collections.netbsd.pf.plugins.module_utils.pfdev import PfDevice
from ansible_collections.netbsd.pf.plugins.module_utils.views import state_views


@pytest.fixture
def lease_file(tmp_path):
    return str(tmp_path / "lock.lease")


@pytest.fixture
def filled(pfemu_kernel):
    pfemu_kernel.fill(300, seed=7)
    return pfemu_kernel


def run(*argv):
    return pfstate_cli.main([str(arg) for arg in argv])


def restore_counts(output):
    """{'restored': n, 'already present': n, ...} from the summary line of pfstate restore."""
    match = re.search(r"(\d+) restored, (\d+) already present, (\d+) rejected, (\d+) expired, (\d+) filtered out of (\d+)", output)
    assert match, output
    return dict(zip(("restored", "already_present", "rejected", "expired", "filtered", "total"), map(int, match.groups())))


def live_keys():
    with PfDevice() as device:
        block = bytes(device.get_states())
    return sorted((view.key1, view.key2, view.ifname) for view in state_views(block, _host_order()))


def _host_order():
    return sys.byteorder


@pytest.mark.parametrize("fmt", [NATIVE, PFS_BINARY, PFS_TEXT])
def test_dump_flush_restore_gives_the_same_table(filled, tmp_path, lease_file, capsys, fmt):
    path = tmp_path / "table.dump"
    before = live_keys()
    assert run("dump", "-F", fmt, "--lease-file", lease_file, path) == 0
    assert "300 states written to %s" % path in capsys.readouterr().out
    with open_dump(str(path)) as reader:
        assert reader.format == fmt
    PfDevice(writable=True).clear_states()
    assert live_keys() == []

    assert run("restore", "--lease-file", lease_file, path) == 0
    counts = restore_counts(capsys.readouterr().out)
    # generated tables hold a few states already at the end of their life: those are not restored
    assert counts["restored"] + counts["expired"] == 300 and counts["rejected"] == 0 and counts["expired"] < 30
    after = live_keys()
    assert len(after) == counts["restored"] and set(after) <= set(before)
    assert filled.lock == 0


def test_second_restore_finds_everything_present(filled, tmp_path, lease_file, capsys):
    path = tmp_path / "table.pfstate"
    assert run("dump", "--lease-file", lease_file, path) == 0
    capsys.readouterr()
    assert run("restore", "--lease-file", lease_file, path) == 0
    counts = restore_counts(capsys.readouterr().out)
    assert counts["restored"] == 0 and counts["already_present"] + counts["expired"] == 300


def test_dump_during_unlocks_and_releases_the_lease(filled, tmp_path, lease_file):
    assert run("dump", "--lock", "during", "--lease-file", lease_file, tmp_path / "d") == 0
    assert filled.lock == 0
    assert read_lease(lease_file)["state"] == "released"


def test_dump_hold_keeps_the_lock_under_a_lease(filled, tmp_path, lease_file, capsys):
    assert run("dump", "--lock", "hold", "--lease", 30, "--lease-file", lease_file, tmp_path / "d") == 0
    assert filled.lock != 0
    lease = read_lease(lease_file)
    assert lease["state"] == "held" and lease["seconds"] == 30
    assert "stays locked" in capsys.readouterr().err
    assert run("unlock", "--lease-file", lease_file) == 0
    assert filled.lock == 0
    assert read_lease(lease_file)["state"] == "released"


def test_failed_dump_never_leaves_the_table_locked(filled, tmp_path, lease_file, capsys, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "d"))

    monkeypatch.setattr(operations, "store_dump", disk_full)
    assert run("dump", "--lock", "hold", "--lease-file", lease_file, tmp_path / "d") == 1
    assert filled.lock == 0
    assert read_lease(lease_file)["state"] == "released"
    assert "No space left on device" in capsys.readouterr().err


def test_hold_without_lease_is_refused(filled, tmp_path, lease_file, capsys):
    assert run("dump", "--lock", "hold", "--lease", 0, "--lease-file", lease_file, tmp_path / "d") == 1
    assert filled.lock == 0
    assert "needs a lease" in capsys.readouterr().err


def test_lock_and_unlock(filled, lease_file, capsys):
    assert run("lock", "--lease", 60, "--lease-file", lease_file) == 0
    assert filled.lock != 0
    assert run("lock", "--lease", 0, "--lease-file", lease_file) == 1
    assert run("unlock", "--lease-file", lease_file) == 0
    assert filled.lock == 0
    assert "lease released" in capsys.readouterr().out


def test_restore_skips_a_stale_capture(filled, tmp_path, lease_file, capsys):
    path = tmp_path / "old.pfs"
    assert run("dump", "-F", PFS_BINARY, "--lease-file", lease_file, path) == 0
    os.utime(str(path), (1, 1))
    PfDevice(writable=True).clear_states()
    assert run("restore", "--max-age", 3600, "--lease-file", lease_file, path) == 0
    assert "not restoring" in capsys.readouterr().err
    assert live_keys() == []


def test_restore_with_rename_and_filter(filled, tmp_path, lease_file, capsys):
    path = tmp_path / "udp.pfstate"
    assert run("dump", "-p", "udp", "--lease-file", lease_file, path) == 0
    with open_dump(str(path)) as reader:
        assert 0 < reader.count < 300
    PfDevice(writable=True).clear_states()
    assert run("restore", "--rename", "all=wm9", "--lease-file", lease_file, path) == 0
    names = set(ifname for _k1, _k2, ifname in live_keys())
    assert "wm9" in names and "all" not in names
    assert len(live_keys()) == restore_counts(capsys.readouterr().out)["restored"] > 0


def test_show_file_and_table(filled, tmp_path, lease_file, capsys):
    path = tmp_path / "t.pfstate"
    assert run("dump", "--lease-file", lease_file, path) == 0
    capsys.readouterr()
    assert run("show", "--json", path) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["states"] == 300 and shown["format"] == NATIVE and "captured_at" in shown
    assert sum(shown["by_interface_protocol"].values()) == 300
    assert run("show", "--lease-file", lease_file) == 0
    out = capsys.readouterr().out
    assert "states: 300" in out
    assert run("show", "-l", path) == 0
    assert len(capsys.readouterr().out.splitlines()) == 300


def test_convert_byte_order_round_trip(filled, tmp_path, lease_file, capsys):
    native = tmp_path / "t.pfstate"
    other = "big" if _host_order() == "little" else "little"
    assert run("dump", "--lease-file", lease_file, native) == 0
    assert run("convert", "-T", other, native, tmp_path / "swapped.pfstate") == 0
    with open_dump(str(tmp_path / "swapped.pfstate")) as reader:
        assert reader.byte_order == other and reader.count == 300
    assert run("convert", "-T", _host_order(), "-F", "pfs_binary", tmp_path / "swapped.pfstate", tmp_path / "back.pfs") == 0
    PfDevice(writable=True).clear_states()
    capsys.readouterr()
    assert run("restore", "--lease-file", lease_file, tmp_path / "back.pfs") == 0
    assert len(live_keys()) == restore_counts(capsys.readouterr().out)["restored"] > 250


def test_no_compress_writes_native_records_as_they_are(filled, tmp_path):
    packed, plain, converted = tmp_path / "packed.pfstate", tmp_path / "plain.pfstate", tmp_path / "converted.pfstate"
    assert run("dump", "--lock", "none", packed) == 0
    assert run("dump", "--no-compress", "--lock", "none", plain) == 0
    assert run("convert", "--no-compress", packed, converted) == 0
    with open_dump(str(packed)) as reader:
        assert reader.header["compression"] == "zlib"
        records = b"".join(reader.blocks())
    for path in (plain, converted):
        with open_dump(str(path)) as reader:
            assert reader.header["compression"] == "none" and b"".join(reader.blocks()) == records
    assert os.path.getsize(str(plain)) > 2 * os.path.getsize(str(packed))


@pytest.mark.parametrize("command", ["dump", "convert"])
def test_no_compress_is_refused_for_pfs_formats(filled, tmp_path, capsys, command):
    source = tmp_path / "source.pfstate"
    assert run("dump", "--lock", "none", source) == 0
    capsys.readouterr()
    files = [tmp_path / "out.pfs"] if command == "dump" else [source, tmp_path / "out.pfs"]
    assert run(command, "--no-compress", "-F", "pfs_binary", *files) == 1
    assert "--no-compress applies to the native format only" in capsys.readouterr().err
    assert not (tmp_path / "out.pfs").exists() and filled.lock == 0


def test_usage_and_missing_files(pfemu_kernel, tmp_path, capsys):
    assert run("frobnicate") == 2
    assert run("restore", tmp_path / "missing") == 1
    assert "missing" in capsys.readouterr().err
    assert run("dump", tmp_path / "no-such-dir" / "d") == 1
    assert "does not exist" in capsys.readouterr().err


# --- installed by the reboot role: module_utils as one zip --------------------------------

COLLECTION_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(pfstate_cli.__file__))))
BUNDLER = os.path.join(COLLECTION_ROOT, "roles", "reboot", "files", "bundle_module_utils.py")


def bundle_module_utils():
    module_utils = os.path.dirname(os.path.abspath(pfstate_cli.__file__))
    output = subprocess.check_output([sys.executable, BUNDLER, module_utils])
    return output.decode().strip()


def test_the_reboot_role_bundle_holds_the_sources_only_and_is_reproducible():
    first, second = bundle_module_utils(), bundle_module_utils()
    try:
        with open(first, "rb") as one, open(second, "rb") as other:
            assert one.read() == other.read()
        with zipfile.ZipFile(first) as bundle:
            names = bundle.namelist()
        package = "ansible_collections/netbsd/pf/plugins/module_utils/"
        assert package + "pfstate_cli.py" in names and package + "__init__.py" in names
        assert all(name.endswith((".py", "/")) and "__pycache__" not in name for name in names)
        # zipimport finds the namespace packages above module_utils only through directory entries
        assert {"ansible_collections/", "ansible_collections/netbsd/pf/plugins/", package} <= set(names)
    finally:
        for path in (first, second):
            shutil.rmtree(os.path.dirname(path))


def test_pfstate_runs_from_the_bundle_alone(tmp_path):
    """What the reboot role's launcher does, in an isolated interpreter that sees nothing else of the collection."""
    bundle = bundle_module_utils()
    try:
        launcher = (
            "import sys; sys.path.insert(0, sys.argv[1]);"
            "from ansible_collections.netbsd.pf.plugins.module_utils import pfstate_cli;"
            "print(pfstate_cli.__file__); sys.exit(pfstate_cli.main(['--help']))")
        result = subprocess.run([sys.executable, "-I", "-c", launcher, bundle], cwd=str(tmp_path),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
        output = result.stdout.decode()
        assert result.returncode == 0, result.stderr.decode()
        assert output.startswith(os.path.join(bundle, "ansible_collections", "netbsd", "pf", "plugins", "module_utils", "pfstate_cli.py"))
        assert "usage: pfstate" in output
    finally:
        shutil.rmtree(os.path.dirname(bundle))
