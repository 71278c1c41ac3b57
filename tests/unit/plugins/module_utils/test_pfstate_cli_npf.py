"""The pfstate command on NPF (--firewall npf|auto): what the reboot role's rc.d script runs at shutdown and boot."""

import os
import re
import time

from ansible_collections.netbsd.pf.plugins.module_utils import pfstate_cli


def run(*argv):
    return pfstate_cli.main([str(arg) for arg in argv])


def test_dump_reboot_restore(npfemu_host, tmp_path, capsys):
    npfemu_host.fill(30)
    path = tmp_path / "boot.pfstate"
    assert run("--firewall", "npf", "dump", path) == 0
    assert "30 NPF connections written to %s" % path in capsys.readouterr().out
    npfemu_host.boot()
    lock = tmp_path / "restore.lock"
    assert run("--firewall", "auto", "-d", tmp_path / "no-pf", "restore", "--max-age", 3600,
               "--restore-lock-file", lock, path) == 0
    out = capsys.readouterr().out
    assert re.search(r"^30 restored, 0 already running, 0 rejected, 0 expired, 0 filtered out of 30 in ", out, re.M), out
    assert npfemu_host.kernel.connection_count == 30
    assert run("--firewall", "npf", "restore", "--restore-lock-file", lock, path) == 0
    assert "0 restored, 30 already running" in capsys.readouterr().out


def test_max_age_skips_an_old_snapshot(npfemu_host, tmp_path, capsys):
    npfemu_host.fill(5)
    path = tmp_path / "boot.pfstate"
    assert run("--firewall", "npf", "dump", path) == 0
    old = time.time() - 7200
    os.utime(str(path), (old, old))     # the header's capture time counts, not the file's
    npfemu_host.boot()
    assert run("--firewall", "npf", "restore", "--max-age", 10, "--restore-lock-file", tmp_path / "l", path) == 0
    assert npfemu_host.kernel.connection_count == 5
    npfemu_host.boot()
    time.sleep(1.1)
    assert run("--firewall", "npf", "restore", "--max-age", 1, "--restore-lock-file", tmp_path / "l", path) == 0
    said = capsys.readouterr()
    assert "not restoring" in said.out + said.err and npfemu_host.kernel.connection_count == 0


def test_errors_are_one_line_without_traceback(npfemu_host, tmp_path, capsys):
    bad = tmp_path / "bad.pfstate"
    bad.write_bytes(b"\x89PFSTAT\n\x00\x02" + bytes(80))
    assert run("--firewall", "npf", "restore", "--restore-lock-file", tmp_path / "l", bad) == 1
    err = capsys.readouterr().err
    assert err.startswith("pfstate: refusing to restore %s, nothing was loaded" % bad) and "Traceback" not in err
    assert run("--firewall", "npf", "dump", "-F", "pfs_text", tmp_path / "x") == 1
    assert "--format and the state selection are pf-only" in capsys.readouterr().err


def test_show_reads_an_npf_snapshot_file(npfemu_host, tmp_path, capsys):
    npfemu_host.fill(12)
    path = tmp_path / "boot.pfstate"
    assert run("--firewall", "npf", "dump", path) == 0
    capsys.readouterr()
    assert run("show", path) == 0
    out = capsys.readouterr().out
    assert "kind: npf" in out and "connections: 12" in out and "valid: 12, invalid: 0" in out
    assert run("show", "--list", path) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("# 12 connections (12 valid, 0 invalid)") and len(lines) == 3 + 12
    assert run("show", "--json", path) == 0
    assert '"valid": 12' in capsys.readouterr().out


def test_show_of_a_damaged_npf_file_names_it(npfemu_host, tmp_path, capsys):
    npfemu_host.fill(3)
    path = tmp_path / "boot.pfstate"
    assert run("--firewall", "npf", "dump", path) == 0
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xff
    path.write_bytes(bytes(data))
    capsys.readouterr()
    assert run("show", path) == 1
    err = capsys.readouterr().err
    assert err.startswith("pfstate: cannot show %s: " % path) and "Traceback" not in err
