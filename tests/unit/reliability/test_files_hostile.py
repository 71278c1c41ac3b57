"""Issue 10, files and hostile input: private files, staged files of dead writers, non-regular
sources, and hostile native metadata and payloads (each test failed before its fix)."""

import hashlib
import json
import os
import signal
import stat
import struct
import subprocess
import sys
import textwrap
import zlib

import pytest

from ansible_collections.netbsd.pf.plugins.module_utils import native, operations, pfstate_cli
from ansible_collections.netbsd.pf.plugins.module_utils.formats import (
    NATIVE, PFS_BINARY, PFS_TEXT, copy_private, open_dump, stale_staged_files, write_dump,
)
from ansible_collections.netbsd.pf.plugins.module_utils.records import OFF_IFNAME
from ansible_collections.netbsd.pf.plugins.modules import states_convert, states_info, states_restore
from ansible_collections.netbsd.pf.tests.pfemu.generate import generate_records
from ansible_collections.netbsd.pf.tests.unit.plugins.modules.module_runner import run_module

ORDER = sys.byteorder
RECORD_SIZE = 240


@pytest.fixture
def open_umask():
    previous = os.umask(0)
    yield
    os.umask(previous)


# --- D7: every file created 0600 from its first byte -------------------------------------

_WATCH = {"dir": None, "seen": {}, "busy": False}


def _first_modes_hook(event, args):
    """Audit hook: the first mode each new '~' backup is seen with, checked at every audited call."""
    if _WATCH["dir"] is None or _WATCH["busy"]:
        return
    _WATCH["busy"] = True
    try:
        for name in os.listdir(_WATCH["dir"]):
            if name.endswith("~") and name not in _WATCH["seen"]:
                _WATCH["seen"][name] = stat.S_IMODE(os.lstat(os.path.join(_WATCH["dir"], name)).st_mode)
    except OSError:
        pass
    finally:
        _WATCH["busy"] = False


sys.addaudithook(_first_modes_hook)


@pytest.fixture
def watched_dir(tmp_path):
    _WATCH.update(dir=str(tmp_path), seen={})
    yield _WATCH["seen"]
    _WATCH["dir"] = None


def test_backup_is_private_from_its_first_byte(pfemu_kernel, tmp_path, open_umask, watched_dir):
    path = str(tmp_path / "states.pfstate")
    lease = str(tmp_path / "lease")
    pfemu_kernel.fill(40, seed=3)
    operations.dump_states(path, lease_file=lease)
    pfemu_kernel.fill(10, seed=4)
    result = operations.dump_states(path, lease_file=lease, backup=True)
    backup = os.path.basename(result["backup_file"])
    assert watched_dir.get(backup) == 0o600, watched_dir
    assert stat.S_IMODE(os.stat(result["backup_file"]).st_mode) == 0o600
    assert os.path.getsize(result["backup_file"]) > 0


def test_backup_never_follows_a_planted_symlink(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    src = tmp_path / "d"
    src.write_bytes(b"dump")
    os.symlink(str(victim), str(tmp_path / "d.bak~"))
    with pytest.raises(OSError):
        copy_private(str(src), str(tmp_path / "d.bak~"))
    assert victim.read_bytes() == b"keep"


# --- D13: staged files of dead writers -------------------------------------------------

_KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys
    from ansible_collections.netbsd.pf.plugins.module_utils.formats import write_dump
    def blocks():
        yield bytes(240 * 4096)
        os.kill(os.getpid(), signal.SIGKILL)
        yield bytes(240)
    write_dump(sys.argv[1], "pfs-binary", blocks(), "little")
""")


def test_next_dump_removes_the_staged_file_of_a_killed_writer(tmp_path):
    path = str(tmp_path / "states.pfs")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    child = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, path], env=env)
    assert child.wait(timeout=60) == -signal.SIGKILL
    left = [name for name in os.listdir(str(tmp_path)) if name.endswith(".tmp")]
    assert len(left) == 1 and ".pfstate-%d-" % child.pid in left[0], left
    assert [entry["pid"] for entry in stale_staged_files(str(tmp_path))] == [child.pid]

    live = tmp_path / (".other.pfstate-%d-0123abcd.tmp" % os.getpid())     # a writer still running
    live.write_bytes(b"x")
    foreign = tmp_path / ".user.file.12345.tmp"                             # not a staged file of ours
    foreign.write_bytes(b"x")
    write_dump(path, PFS_BINARY, [generate_records(2, seed=1, byte_order=ORDER)], ORDER, count=2)
    assert sorted(os.listdir(str(tmp_path))) == sorted([live.name, foreign.name, "states.pfs"])
    assert stale_staged_files(str(tmp_path)) == []


def test_states_info_reports_staged_files_of_dead_writers(pfemu_kernel, tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / (".states.pfstate.pfstate-%d-0c1f9a7e.tmp" % dead.pid)
    stale.write_bytes(b"x" * 1000)
    (tmp_path / (".states.pfstate.pfstate-%d-0c1f9a7f.tmp" % os.getpid())).write_bytes(b"x")
    result = run_module(states_info.main, capsys, tmp_path, dump_dirs=[str(tmp_path), str(tmp_path / "missing")])
    assert [(entry["path"], entry["pid"], entry["bytes"]) for entry in result["stale_staged_files"]] == [
        (str(stale), dead.pid, 1000)]


# --- D11: a FIFO, a device or a directory as the source -----------------------------------

@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
def test_show_refuses_a_source_that_is_not_a_regular_file(tmp_path, capsys, deadline, kind):
    if kind == "fifo":
        source = str(tmp_path / "pipe")
        os.mkfifo(source)
        expected = "a FIFO"
    elif kind == "device":
        source, expected = "/dev/zero", "a character device"
    else:
        source, expected = str(tmp_path), "a directory"
    assert pfstate_cli.main(["show", source]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and source in err and expected in err and "Traceback" not in err, err


# --- D1, D14: hostile native metadata ---------------------------------------------------------

def native_file(path, metadata, count=0, payload=b"", compression=0, sha256=None):
    """A .pfstate file with a correct CRC around whatever metadata bytes and payload it is given."""
    if sha256 is None:
        sha256 = hashlib.sha256(payload if not compression else zlib.decompress(payload)).digest()
    head = native.PRELUDE.pack(native.MAGIC, 1, native.BYTE_ORDER_CODES[ORDER], compression, 240, 0, count,
                               len(payload), sha256, len(metadata), 0)
    crc = zlib.crc32(head[:-4] + metadata) & 0xffffffff
    with open(path, "wb") as handle:
        handle.write(head[:-4] + struct.pack(">I", crc) + metadata + payload)
    return path


HOSTILE_METADATA = {
    "array": (b"[1,2]", "must be a JSON object"),
    "nested": (b"[" * 200000 + b"]" * 200000, "nested deeper"),
    "nan": (b'{"captured_at": NaN}', "NaN"),
    "infinity": (b'{"captured_at": Infinity}', "Infinity"),
    "overflow": (b'{"captured_at": 1e999}', "too large"),
    "huge": (b'{"captured_at": 1e300}', "outside the years"),
    "words": (b'{"captured_at": "yesterday"}', "'yesterday': not an ISO 8601"),
    "d14": (b'{"captured_at": "2024-02-30T25:61Z"}', "2024-02-30"),
    "hour": (b'{"captured_at": "2024-02-28T25:01Z"}', "not a time of day"),
    "type": (b'{"hostname": ["fw1"]}', "hostname must be a string"),
    "bytes": (b'\xff\xfe{}', "not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_METADATA))
def test_pfstate_show_refuses_hostile_metadata_in_one_line(tmp_path, capsys, case):
    metadata, reason = HOSTILE_METADATA[case]
    path = native_file(str(tmp_path / "hostile.pfstate"), metadata)
    assert pfstate_cli.main(["show", path]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and path in err and reason in err and "Traceback" not in err, err


@pytest.mark.parametrize("case", ["array", "nested", "nan", "d14"])
def test_modules_fail_cleanly_on_hostile_metadata(pfemu_kernel, tmp_path, capsys, case):
    metadata, reason = HOSTILE_METADATA[case]
    path = native_file(str(tmp_path / "hostile.pfstate"), metadata)
    dest = str(tmp_path / "out.pfs")
    for main, args in ((states_convert.main, dict(src=path)), (states_convert.main, dict(src=path, dest=dest)),
                       (states_restore.main, dict(path=path, lease_file=str(tmp_path / "lease")))):
        result = run_module(main, capsys, **args)
        assert result.get("failed") and path in result["msg"] and reason in result["msg"], result
        assert "Traceback" not in json.dumps(result) and "MODULE FAILURE" not in result["msg"]
    assert not os.path.exists(dest)


def test_valid_metadata_still_reads(tmp_path):
    metadata = json.dumps({"captured_at": "2024-02-29T23:59:60+05:30", "captured_at_utc": "2024-02-29T18:29:59Z",
                           "converted_at": 1714566000.5, "extra": {"free": [1, {"form": None}]}}).encode()
    with open_dump(native_file(str(tmp_path / "ok.pfstate"), metadata)) as reader:
        assert reader.header["metadata"]["extra"] == {"free": [1, {"form": None}]}


# --- D2: decompression bounded by what the file can hold ----------------------------------------

@pytest.fixture(scope="module")
def zeros_64mib():
    compressor = zlib.compressobj(9)
    chunk = bytes(1 << 20)
    return b"".join(compressor.compress(chunk) for _mebibyte in range(64)) + compressor.flush()


@pytest.mark.parametrize("count", [2 ** 63, native.MAX_RECORDS, 1000000])
def test_compressed_bomb_is_refused_before_anything_is_spooled(tmp_path, monkeypatch, capsys, zeros_64mib, count):
    def no_spool(*args, **kwargs):
        raise AssertionError("spooled a payload that cannot be a state table")
    monkeypatch.setattr(native.tempfile, "TemporaryFile", no_spool)
    path = native_file(str(tmp_path / "bomb.pfstate"), b"{}", count=count, payload=zeros_64mib, compression=1,
                       sha256=bytes(32))
    assert pfstate_cli.main(["show", path]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and path in err and "Traceback" not in err, err
    assert ("no NetBSD state table holds more" in err) if count > native.MAX_RECORDS else ("cannot hold more" in err)


def test_a_real_compressed_dump_is_within_the_bound(tmp_path):
    block = generate_records(2000, seed=9, byte_order=ORDER)
    path = str(tmp_path / "real.pfstate")
    write_dump(path, NATIVE, [block], ORDER, count=2000)
    with open_dump(path) as reader:
        assert b"".join(bytes(b) for b in reader.blocks()) == block


# --- D10: interface names that a terminal or pfs text would change -------------------------------

def with_ifnames(names, seed=11):
    """Generated records whose interface names are ``names`` (bytes, NUL-padded to 16)."""
    block = bytearray(generate_records(len(names), seed=seed, byte_order=ORDER))
    for index, name in enumerate(names):
        start = index * RECORD_SIZE + OFF_IFNAME
        block[start:start + 16] = name.ljust(16, b"\0")
    return bytes(block)


HOSTILE_NAMES = [b"wm\n0", b"re0\x1b[2J", b"vlan 10"]


def test_show_escapes_names_a_terminal_would_act_on(tmp_path, capsys):
    path = str(tmp_path / "states.pfs")
    write_dump(path, PFS_BINARY, [with_ifnames(HOSTILE_NAMES)], ORDER, count=3)
    for argv in (["show", path], ["show", "-l", path]):
        assert pfstate_cli.main(argv) == 0
        out = capsys.readouterr().out
        assert "\x1b" not in out and "wm\n0" not in out and "vlan 10" not in out, out
        assert "wm\\x0a0" in out and "re0\\x1b[2J" in out and "vlan\\x2010" in out, out
    lines = [line for line in out.splitlines() if line]
    assert len(lines) == 3 and all(line.startswith("state ") for line in lines)


@pytest.mark.parametrize("position", [0, 1, 2])
def test_pfs_text_refuses_a_name_it_cannot_carry_and_says_which_state(tmp_path, capsys, position):
    names = [b"wm0", b"wm1", b"wm2"]
    names[position] = HOSTILE_NAMES[position]
    source = str(tmp_path / "states.pfs")
    write_dump(source, PFS_BINARY, [with_ifnames(names)], ORDER, count=3)
    dest = str(tmp_path / "states.txt")
    assert pfstate_cli.main(["convert", "-F", "pfs-text", source, dest]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and dest in err and "state %d (id " % (position + 1) in err, err
    assert "cannot carry" in err and "Traceback" not in err
    result = run_module(states_convert.main, capsys, src=source, dest=dest, format="pfs_text")
    assert result["failed"] and dest in result["msg"] and "state %d (id " % (position + 1) in result["msg"], result
    assert sorted(os.listdir(str(tmp_path))) == ["states.pfs"]


def test_a_name_of_sixteen_characters_is_refused_too(tmp_path):
    with pytest.raises(Exception, match="16 characters long"):
        write_dump(str(tmp_path / "t"), PFS_TEXT, [with_ifnames([b"x" * 16])], ORDER, count=1)
    assert os.listdir(str(tmp_path)) == []


# --- issue 11, item 5: the empty interface name pfs prints as "on  proto" -------------------------

@pytest.mark.parametrize("names", [[b""], [b"", b"proto", b"wm0"], [b"proto", b""]])
def test_empty_interface_name_round_trips_byte_identical(tmp_path, names):
    block = with_ifnames(names)
    text_path = str(tmp_path / "states.txt")
    write_dump(text_path, PFS_TEXT, [block], ORDER, count=len(names))
    with open(text_path, "rb") as handle:
        text = handle.read()
    assert text.count(b" on  proto ") == names.count(b"")
    with open_dump(text_path, PFS_TEXT, ORDER) as reader:
        read_back = b"".join(bytes(chunk) for chunk in reader.blocks())
    again = str(tmp_path / "again.txt")
    write_dump(again, PFS_TEXT, [read_back], ORDER, count=len(names))
    with open(again, "rb") as handle:
        assert handle.read() == text
    for index, name in enumerate(names):
        start = index * RECORD_SIZE + OFF_IFNAME
        assert read_back[start:start + 16] == name.ljust(16, b"\0")


def test_empty_interface_name_in_free_layout(tmp_path):
    """The tokenizer (not the printed-form fast path): 'on', a line break, then 'proto'."""
    path = str(tmp_path / "states.txt")
    write_dump(path, PFS_TEXT, [with_ifnames([b"", b"wm0"])], ORDER, count=2)
    with open(path, "rb") as handle:
        printed = handle.read()
    with open(path, "wb") as handle:
        handle.write(b"\t" + printed.replace(b" on  proto ", b" on\r\n   proto "))
    with open_dump(path, PFS_TEXT, ORDER) as reader:
        read_back = b"".join(bytes(chunk) for chunk in reader.blocks())
    again = str(tmp_path / "again.txt")
    write_dump(again, PFS_TEXT, [read_back], ORDER, count=2)
    with open(again, "rb") as handle:
        assert handle.read() == printed


def test_states_restore_refuses_an_impossible_captured_at_option(pfemu_kernel, tmp_path, capsys):
    path = str(tmp_path / "states.pfs")
    write_dump(path, PFS_BINARY, [generate_records(3, seed=2, byte_order=ORDER)], ORDER, count=3)
    result = run_module(states_restore.main, capsys, tmp_path, path=path, captured_at="2024-02-30T25:61Z")
    assert result.get("failed") and "2024-02-30T25:61Z" in result["msg"], result
    assert pfemu_kernel.linked_states == 0
