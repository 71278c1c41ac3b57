"""Security checks: dumps never world-readable (not even while written), no path escapes, files are data."""

import json
import os
import stat
import sys

import pytest

from ansible_collections.netbsd.pf.plugins.module_utils import operations
from ansible_collections.netbsd.pf.plugins.module_utils.formats import NATIVE, open_dump, write_dump
from ansible_collections.netbsd.pf.plugins.plugin_utils.host_dir import host_dir_name
from ansible_collections.netbsd.pf.tests.pfemu.generate import generate_records

ORDER = sys.byteorder


@pytest.fixture
def open_umask():
    """The most permissive umask: modes must come from the code, not from the environment."""
    previous = os.umask(0)
    yield
    os.umask(previous)


@pytest.mark.parametrize("fmt", ["native", "pfs_binary", "pfs_text"])
def test_dump_is_private_while_written_and_after(pfemu_kernel, tmp_path, monkeypatch, open_umask, fmt):
    pfemu_kernel.fill(50, seed=1)
    seen = []
    real_fsync = os.fsync

    def inspecting_fsync(fd):
        target = os.readlink("/proc/self/fd/%d" % fd)
        if target.endswith(".tmp"):
            seen.append(stat.S_IMODE(os.fstat(fd).st_mode))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", inspecting_fsync)
    path = str(tmp_path / "dump")
    operations.dump_states(path, fmt=fmt, lease_file=str(tmp_path / "lease"))
    assert seen and all(mode & 0o077 == 0 for mode in seen), seen
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_temp_file_is_private_from_its_first_byte(tmp_path, monkeypatch, open_umask):
    """mkstemp creates 0600 and fchmod runs before any record is written."""
    modes = []
    real_fdopen = os.fdopen

    def recording_fdopen(fd, *args, **kwargs):
        modes.append(stat.S_IMODE(os.fstat(fd).st_mode))
        return real_fdopen(fd, *args, **kwargs)

    monkeypatch.setattr(os, "fdopen", recording_fdopen)
    write_dump(str(tmp_path / "d"), NATIVE, [generate_records(3, seed=2, byte_order=ORDER)], ORDER, count=3)
    assert modes == [0o600]


@pytest.mark.parametrize("hostname", ["../../etc", "..", ".", "a/../../b", "/etc/passwd", "fw1/../..", "\x00x", "~root",
                                      "..\\..\\x", "fw1 ; rm -rf /", "{{ lookup('pipe', 'id') }}", ""])
def test_inventory_hostnames_cannot_leave_the_capture_directory(tmp_path, hostname):
    name = host_dir_name(hostname)
    assert "/" not in name and "\x00" not in name and name not in ("", ".", "..")
    base = os.path.realpath(str(tmp_path))
    assert os.path.dirname(os.path.realpath(os.path.join(base, name))) == base


def test_distinct_hostnames_get_distinct_directory_names():
    """D3: the encoding is injective (a/b and a_b, fw-ü and fw-ö used to share a directory)."""
    names = ["a/b", "a_b", "a%2Fb", "fw-ü", "fw-ö", "fw-_", "", "%", ".", "..", "%2E", "2001:db8::1", "2001_db8__1"]
    assert len({host_dir_name(name) for name in names}) == len(names)


HOSTILE_METADATA = {
    "hostname": "../../etc/passwd",
    "tool": "{{ lookup('pipe', 'touch /tmp/pwned') }}",
    "release": "$(touch /tmp/pwned)",
    "note": "{% raw %}x{% endraw %}\n`id`",
}


def test_native_header_is_data_in_inspect_and_convert(tmp_path):
    src = str(tmp_path / "hostile.pfstate")
    write_dump(src, NATIVE, [generate_records(4, seed=3, byte_order=ORDER)], ORDER, count=4, metadata=HOSTILE_METADATA)
    before = set(os.listdir(str(tmp_path)))
    info = operations.inspect_dump(src)
    assert info["header"]["metadata"]["hostname"] == "../../etc/passwd"
    assert info["header"]["metadata"]["tool"] == HOSTILE_METADATA["tool"]
    dest = str(tmp_path / "out.pfstate")
    result = operations.convert_dump(src, dest, "native")
    assert result["dest"] == dest
    assert set(os.listdir(str(tmp_path))) == before | {"out.pfstate"}    # nothing written from header values
    assert not os.path.exists("/tmp/pwned")
    with open_dump(dest) as reader:
        for key, value in HOSTILE_METADATA.items():
            assert reader.header["metadata"][key] == value
    json.dumps(info)        # module output: plain data


def test_fetched_capture_lands_inside_the_host_directory_only(tmp_path):
    """The fetched file name is the basename of the target path: a target path cannot climb out."""
    host_dir = os.path.join(str(tmp_path), host_dir_name("../fw1"))
    final = os.path.join(host_dir, os.path.basename("/var/db/pfstate/../../../etc/cron.d/x"))
    assert os.path.dirname(final) == host_dir
