"""Attack round, second front: the controller (fetch_to, retention, latest, reports), the reboot role's
target side (library install, rc.d script) and hostile pfs binary records (docs/reliability.md,
"Attack round, second front").

Controller code and role files: these run on the controller's Python only.
"""

import hashlib
import json
import os
import re
import struct
import subprocess
import sys
import zipfile
from types import SimpleNamespace

import pytest
import yaml

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
    action._connection = SimpleNamespace(_shell=SimpleNamespace(tmpdir="/tmp/ansible-tmp-test"), become=None,
                                         fetch_file=transfer)
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


# --- the capture role's retention and latest link (run as the role renders them) ---------------

ROLES = os.path.join(os.path.dirname(__file__), "..", "..", "..", "roles")


def _task(role, tasks_file, name):
    with open(os.path.join(ROLES, role, "tasks", tasks_file)) as handle:
        return next(task for task in yaml.safe_load(handle) if task.get("name") == name)


def _role_vars(role):
    path = os.path.join(ROLES, role, "vars", "main.yml")
    if not os.path.exists(path):
        return {}
    with open(path) as handle:
        return yaml.safe_load(handle) or {}


_RENDER_WITH_LOOKUPS = """
import json, sys
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import init_plugin_loader
from ansible.template import Templar, trust_as_template
init_plugin_loader([])
job = json.load(sys.stdin)
sys.stdout.write(json.dumps(Templar(loader=DataLoader(), variables=job["variables"]).template(trust_as_template(job["text"]))))
"""


def _render(text, variables):
    """``text`` rendered by Ansible's templar; lookups need the plugin loader, whose collection finder must not
    be installed in this test process (later imports of the collection would fail): those render in a child."""
    if "query(" in text:
        child = subprocess.run([sys.executable, "-c", _RENDER_WITH_LOOKUPS], input=json.dumps(
            {"text": text, "variables": variables}), capture_output=True, text=True, timeout=60, check=True)
        return json.loads(child.stdout)
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar, trust_as_template
    return Templar(loader=DataLoader(), variables=variables).template(trust_as_template(text))


def _sh(command):
    return subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, timeout=30, check=False)


CAPTURES_OF_FW = ["fw-20261201T000000Z.pfstate", "fw-20261202T000000Z.pfstate", "fw-20261203T000000Z.pfstate"]
NOT_CAPTURES_OF_FW = [
    "fw-1-20261130T000000Z.pfstate",        # host fw-1, whose encoded name starts with fw's
    "fw-2-20261130T000000Z.pfs",            # host fw-2
    "fw-20261130T000000Z-reboot.pfstate",   # the reboot role's dump
    "fw-2024-keep-before-upgrade-Z.pfs",    # the operator's own file, capture-like
    "fw-1Z.pfstate",
]


def _fill(directory):
    for name in CAPTURES_OF_FW + NOT_CAPTURES_OF_FW:
        (directory / name).write_bytes(b"x")


def test_target_retention_removes_only_this_hosts_captures(tmp_path):
    _fill(tmp_path)
    task = _task("capture", "retention.yml", "Remove the oldest captures on the target")
    variables = dict(_role_vars("capture"), capture_state_dir=str(tmp_path), capture_host_name="fw",
                     capture_keep_on_target=1)
    ran = _sh(_render(task["ansible.builtin.raw"], variables))
    assert ran.returncode == 0, ran.stderr
    assert sorted(os.listdir(str(tmp_path))) == sorted(CAPTURES_OF_FW[-1:] + NOT_CAPTURES_OF_FW)


def _controller_step(host_dir, keep=1, name="fw-20261203T000000Z.pfstate"):
    task = _task("capture", "capture.yml", "Point latest at this capture and remove the oldest captures on the controller")
    variables = dict(_role_vars("capture"), capture_dir=str(host_dir.parent), capture_host_name=host_dir.name,
                     capture_name=name, capture_keep=keep)
    variables["capture_host_dir"] = _render(task["vars"]["capture_host_dir"], variables)
    variables["capture_oldest"] = _render(task["vars"]["capture_oldest"], variables)
    return _sh(_render(task["ansible.builtin.raw"], variables))


def test_controller_retention_removes_only_this_hosts_captures(tmp_path):
    host_dir = tmp_path / "fw"
    host_dir.mkdir()
    _fill(host_dir)
    ran = _controller_step(host_dir)
    assert ran.returncode == 0, ran.stderr
    assert sorted(os.listdir(str(host_dir))) == sorted(CAPTURES_OF_FW[-1:] + NOT_CAPTURES_OF_FW + ["latest"])
    assert os.readlink(str(host_dir / "latest")) == CAPTURES_OF_FW[-1]


@pytest.mark.parametrize("latest", ["directory", "link to a directory"])
def test_latest_that_is_not_a_link_to_a_capture_fails_and_changes_nothing(tmp_path, latest):
    """mv -f onto a directory (or a link to one) moves the new link into it and reports success."""
    host_dir = tmp_path / "fw"
    host_dir.mkdir()
    (host_dir / CAPTURES_OF_FW[-1]).write_bytes(b"x")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    if latest == "directory":
        (host_dir / "latest").mkdir()
        inside = host_dir / "latest"
    else:
        os.symlink(str(elsewhere), str(host_dir / "latest"))
        inside = elsewhere
    ran = _controller_step(host_dir, keep=0)
    assert ran.returncode != 0 and "latest" in ran.stderr and "not a link" in ran.stderr, (ran.returncode, ran.stderr)
    assert os.listdir(str(inside)) == [], "nothing was put into the directory latest names"


def test_latest_moves_over_a_dangling_link_and_a_stale_new_link(tmp_path):
    """A capture removed by hand leaves latest dangling; a kill between ln and mv leaves .latest.new."""
    host_dir = tmp_path / "fw"
    host_dir.mkdir()
    (host_dir / CAPTURES_OF_FW[-1]).write_bytes(b"x")
    os.symlink("fw-20200101T000000Z.pfstate", str(host_dir / "latest"))
    os.symlink(str(tmp_path), str(host_dir / ".latest.new"))
    ran = _controller_step(host_dir, keep=0)
    assert ran.returncode == 0, ran.stderr
    assert os.readlink(str(host_dir / "latest")) == CAPTURES_OF_FW[-1]
    assert sorted(os.listdir(str(tmp_path))) == ["fw"], "the stale link's target directory is untouched"


# --- the fleet reports: values from inventory names and (possibly hostile) targets ------------

HOSTILE_HOST = "<img src=x onerror=alert(1)>|fw`*_[x](javascript:alert(2))"
HOSTILE_TARGET_ROW = {      # what a compromised target's module could return, copied into the row
    "host": HOSTILE_HOST, "result": "ok", "firewall": "<script>alert(3)</script>", "states": "<b>7</b>",
    "bytes": "1|2", "lock_ms": "<i>3</i>", "duration": "0.5", "file": "/c/fw/<svg onload=alert(4)>.pfstate",
    "sha256": "x", "msg": ""}
FAILED_ROW = {"host": "fw2", "result": "failed", "states": None, "bytes": None, "lock_ms": None, "duration": None,
              "file": None, "msg": "cannot open re0\n| <script>alert(5)</script> | `x`"}


def _template(role, name, variables):
    with open(os.path.join(ROLES, role, "templates", name)) as handle:
        return _render(handle.read(), variables)


def _capture_report_variables():
    hosts = [HOSTILE_HOST, "fw2"]
    return {"ansible_play_hosts_all": hosts, "capture_dir": "/srv/<caps>|`x`",
            "hostvars": {HOSTILE_HOST: {"capture_row": HOSTILE_TARGET_ROW}, "fw2": {"capture_row": FAILED_ROW}},
            "capture_ok_rows": [HOSTILE_TARGET_ROW]}


def _table_rows(markdown):
    return [line for line in markdown.splitlines() if line.startswith("| ") and not line.startswith("| Host ")]


def _unescaped_pipes(line):
    return len(re.findall(r"(?<!\\)(?:\\\\)*\|", line))      # a | after an even number of backslashes


def _unescaped_link(markdown):
    return re.search(r"(?<!\\)(?:\\\\)*\]\(", markdown)


def test_html_capture_report_escapes_every_value():
    html = _template("capture", "capture-report.html.j2", _capture_report_variables())
    for tag in ("<img", "<script", "<svg onload", "<b>7", "<i>3"):
        assert tag not in html, tag
    assert "&lt;script&gt;alert(3)" in html and "&lt;img src=x" in html


def test_markdown_capture_report_keeps_one_row_per_host_and_no_html():
    markdown = _template("capture", "capture-report.md.j2", _capture_report_variables())
    rows = _table_rows(markdown)
    assert len(rows) == 2, markdown
    assert all(_unescaped_pipes(row) == 9 for row in rows), rows
    for tag in ("<img", "<script", "<svg", "<b>", "<caps>"):
        assert tag not in markdown, tag
    assert not _unescaped_link(markdown)


def test_markdown_reboot_report_keeps_one_row_per_host_and_no_html():
    row = {"host": HOSTILE_HOST, "result": "ok", "dumped": "<b>1</b>", "restored": "1|2", "already_present": 0,
           "expired": 0, "rejected": 0, "table": "\n| x |", "downtime": 3}
    variables = {"ansible_play_hosts_all": [HOSTILE_HOST, "fw|2"], "ansible_play_hosts": [HOSTILE_HOST],
                 "hostvars": {HOSTILE_HOST: {"reboot_row": row}, "fw|2": {}}}
    markdown = _template("reboot", "reboot-report.md.j2", variables)
    rows = _table_rows(markdown)
    assert len(rows) == 2, markdown
    assert all(_unescaped_pipes(line) == 10 for line in rows), rows
    for tag in ("<img", "<b>"):
        assert tag not in markdown, tag
    assert not _unescaped_link(markdown)


# --- hostile pfs binary records (reference 5.5: what DIOCADDSTATES does with each field) -------

def _hostile_block(index, offset, data, count=10):
    from ansible_collections.netbsd.pf.tests.unit.reliability.test_matrix import records
    block = bytearray(records(count, seed=5, first_stateid=1000))
    start = index * 240 + offset
    block[start:start + len(data)] = data
    return bytes(block)


def _restore_block(tmp_path, block):
    from ansible_collections.netbsd.pf.tests.unit.reliability.test_matrix import dump_file, run_restore
    return run_restore(dump_file(tmp_path, block), tmp_path)


def _table_records():
    from ansible_collections.netbsd.pf.tests.unit.reliability.test_matrix import table
    block = table()
    return [block[offset:offset + 240] for offset in range(0, len(block), 240)]


def _assert_accounted(report, total=10):
    from ansible_collections.netbsd.pf.plugins.module_utils.restore import BUCKETS
    assert report["total"] == total and sum(report[bucket] for bucket in BUCKETS) == total, report
    assert report["restored"] == len(_table_records()), "restored = what the table holds"


def _field(name):
    from ansible_collections.netbsd.pf.plugins.module_utils import records
    return getattr(records, name)


@pytest.mark.parametrize("field, data, message", [
    ("OFF_AF", b"\x00", "record 6: address family 0 is neither inet"),
    ("OFF_AF", b"\x07", "record 6: address family 7 is neither inet"),
    ("OFF_TIMEOUT", b"\x14", "record 6: timeout index 20 is not one the kernel accepts"),
    ("OFF_TIMEOUT", b"\xff", "record 6: timeout index 255 is not one the kernel accepts"),
    ("OFF_IFNAME", b"A" * 16, "record 6: interface name is not NUL-terminated within 16 bytes"),
], ids=["af 0", "af 7", "timeout 20", "timeout 255", "ifname without NUL"])
def test_a_record_the_kernel_would_refuse_or_misread_refuses_the_file(pfemu_kernel, tmp_path, field, data, message):
    from ansible_collections.netbsd.pf.plugins.module_utils.restore import RestoreError
    with pytest.raises(RestoreError, match="nothing was added: damaged records .*" + message):
        _restore_block(tmp_path, _hostile_block(5, _field(field), data))
    assert _table_records() == []


@pytest.mark.parametrize("field, offset, data", [
    ("OFF_PROTO", 0, b"\x00"), ("OFF_PROTO", 0, b"\xff"), ("OFF_SRC", 24, b"\xc8"), ("OFF_DST", 24, b"\xff"),
], ids=["proto 0", "proto 255", "src state 200", "dst state 255"])
def test_fields_the_kernel_takes_as_given_are_restored_and_counted(pfemu_kernel, tmp_path, field, offset, data):
    """Reference 5.5: proto and the peers' states are copied, not validated."""
    report = _restore_block(tmp_path, _hostile_block(5, _field(field) + offset, data))
    assert report["restored"] == 10
    _assert_accounted(report)


def test_duplicate_ids_inside_the_file_are_rejected_by_record(pfemu_kernel, tmp_path):
    block = bytearray(_hostile_block(0, 0, b""))
    ident = slice(2 * 240, 2 * 240 + 8)
    creator = slice(2 * 240 + _field("OFF_CREATORID"), 2 * 240 + _field("OFF_CREATORID") + 4)
    block[5 * 240:5 * 240 + 8] = block[ident]
    block[5 * 240 + _field("OFF_CREATORID"):5 * 240 + _field("OFF_CREATORID") + 4] = block[creator]
    report = _restore_block(tmp_path, bytes(block))
    assert (report["restored"], report["rejected"]) == (9, 1)
    assert [(entry["record"], entry["category"]) for entry in report["rejected_states"]] == [(6, "conflict")]
    assert "id and creatorid already used" in report["rejected_states"][0]["reason"]
    _assert_accounted(report)


def test_id_and_creatorid_zero_get_the_kernels_and_a_second_restore_adds_nothing(pfemu_kernel, tmp_path):
    block = bytearray(_hostile_block(5, 0, b"\0" * 8))
    block[5 * 240 + _field("OFF_CREATORID"):5 * 240 + _field("OFF_CREATORID") + 4] = b"\0" * 4
    first = _restore_block(tmp_path, bytes(block))
    assert first["restored"] == 10
    second = _restore_block(tmp_path, bytes(block))
    assert (second["restored"], second["already_present"]) == (0, 10) and len(_table_records()) == 10


def _expire_of(record):
    return struct.unpack_from(("<" if sys.byteorder == "little" else ">") + "I", record, _field("OFF_EXPIRE"))[0]


@pytest.mark.parametrize("beyond", [1000, 0xfffffff0 - 86400], ids=["timeout + 1000 s", "near 2**32"])
def test_expire_beyond_the_timeout_is_capped_at_the_timeout(pfemu_kernel, tmp_path, beyond):
    """The import puts the last activity at now - (timeout - expire) in 32-bit unsigned arithmetic: an expire past
    the timeout wraps, and the state lives for decades or is dead on arrival while the report says restored."""
    from ansible_collections.netbsd.pf.plugins.module_utils.pfdev import PfDevice
    with PfDevice() as device:
        timeouts = device.get_timeouts()
    block = bytearray(_hostile_block(0, 0, b""))
    timeout_index = block[5 * 240 + _field("OFF_TIMEOUT")]
    struct.pack_into(("<" if sys.byteorder == "little" else ">") + "I", block, 5 * 240 + _field("OFF_EXPIRE"),
                     timeouts[timeout_index] + beyond)
    report = _restore_block(tmp_path, bytes(block))
    assert report["restored"] == 10
    _assert_accounted(report)
    for record in _table_records():
        assert 0 < _expire_of(record) <= timeouts[record[_field("OFF_TIMEOUT")]], "alive, and no longer than its timeout"
    assert report["expire_capped"] == 1
    assert any("1 state" in warning and "capped" in warning for warning in report["warnings"]), report["warnings"]


def test_until_packet_timeout_is_counted_expired_not_restored(pfemu_kernel, tmp_path):
    """Timeout 23 (PFTM_UNTIL_PACKET) is accepted, but pf_state_expires() gives 0: purged at once (reference 5.5)."""
    report = _restore_block(tmp_path, _hostile_block(5, _field("OFF_TIMEOUT"), b"\x17"))
    assert (report["restored"], report["expired"]) == (9, 1)
    _assert_accounted(report)
    assert all(record[_field("OFF_TIMEOUT")] != 23 for record in _table_records())


# --- the reboot role on the target: library install and the rc.d script -------------------------

def _small_bundle(tmp_path, text="VALUE = 1\n"):
    path = str(tmp_path / ("bundle-%d.zip" % len(os.listdir(str(tmp_path)))))
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("pkg/__init__.py", text)
    return path


def _install_library(bundle_path, dest):
    return subprocess.run([sys.executable, os.path.join(ROLES, "reboot", "files", "install_library.py"), bundle_path, dest],
                          capture_output=True, text=True, timeout=60, check=False)


def test_library_install_refuses_a_directory_others_can_write_to(tmp_path):
    """Anyone who can write to the install directory can swap the unpacked library (run as root at boot)."""
    lib = tmp_path / "lib"
    lib.mkdir()
    os.chmod(str(lib), 0o777)
    ran = _install_library(_small_bundle(tmp_path), str(lib / "library"))
    assert ran.returncode == 1 and "can be written by other users and is not sticky" in ran.stderr, ran.stderr
    assert ran.stderr.count("\n") == 1 and os.listdir(str(lib)) == []


@needs_root
def test_library_install_refuses_a_directory_of_another_user(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir(mode=0o755)
    os.chown(str(lib), OTHER_UID, OTHER_UID)
    ran = _install_library(_small_bundle(tmp_path), str(lib / "library"))
    assert ran.returncode == 1 and "is owned by uid 65534" in ran.stderr, ran.stderr
    assert os.listdir(str(lib)) == []


def test_library_install_after_a_kill_removes_the_half_unpacked_folder(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir(mode=0o755)
    os.chmod(str(lib), 0o755)
    bundle_path = _small_bundle(tmp_path)
    assert _install_library(bundle_path, str(lib / "library")).returncode == 0
    stale = lib / ".library-0123456789abcdef-k1ll3d"      # a kill during unpacking or compiling
    (stale / "pkg").mkdir(parents=True)
    ran = _install_library(_small_bundle(tmp_path, "VALUE = 2\n"), str(lib / "library"))
    assert ran.returncode == 0 and ran.stdout == "installed\n", ran.stderr
    assert not stale.exists()


def test_library_cleanup_removes_only_its_own_folders(tmp_path):
    """Only <link>-<16 hex> folders of earlier bundles go; a look-alike name, a file or a link stays (a link to a
    directory made rmtree fail after the switch)."""
    lib = tmp_path / "lib"
    lib.mkdir(mode=0o755)
    os.chmod(str(lib), 0o755)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "keep").mkdir(parents=True)
    (lib / "library-notes").mkdir()
    (lib / "library-readme.txt").write_text("x")
    os.symlink(str(elsewhere), str(lib / "library-0123456789abcdef"))
    first = _install_library(_small_bundle(tmp_path), str(lib / "library"))
    assert first.returncode == 0, first.stderr
    old_version = os.readlink(str(lib / "library"))
    second = _install_library(_small_bundle(tmp_path, "VALUE = 2\n"), str(lib / "library"))
    assert second.returncode == 0, second.stderr
    left = sorted(os.listdir(str(lib)))
    assert old_version not in left and os.readlink(str(lib / "library")) in left
    assert {"library-notes", "library-readme.txt", "library-0123456789abcdef"} <= set(left)
    assert (elsewhere / "keep").is_dir()


def _rc_script(tmp_path, dump_path, **overrides):
    variables = {"ansible_managed": "test", "reboot_boot_firewall": "pf", "reboot_bin_dir": str(tmp_path / "bin"),
                 "reboot_dump_path": str(dump_path), "reboot_boot_max_age": 3600, "reboot_lease": 600,
                 "reboot_lease_file": str(tmp_path / "lease")}
    variables.update(overrides)
    script = tmp_path / "pfstate.rc"
    script.write_text(_template("reboot", "pfstate.rc.j2", variables))
    command = tmp_path / "fake-pfstate"
    command.write_text("#!/bin/sh\necho \"$@\" >> %s\n" % (tmp_path / "calls"))
    os.chmod(str(command), 0o755)
    return script, command


def _boot(tmp_path, dump_path, **overrides):
    script, command = _rc_script(tmp_path, dump_path, **overrides)
    ran = subprocess.run(["/bin/sh", str(script), "start"], capture_output=True, text=True, timeout=30, check=False,
                         env=dict(os.environ, pfstate_command=str(command)), cwd=str(tmp_path))
    calls = (tmp_path / "calls").read_text() if (tmp_path / "calls").exists() else ""
    return ran, calls


def _state_dir(tmp_path):
    directory = tmp_path / "state"
    directory.mkdir(mode=0o700)
    os.chmod(str(directory), 0o700)
    return directory


def test_boot_restores_a_private_dump(tmp_path):
    dump = _state_dir(tmp_path) / "boot.pfstate"
    dump.write_bytes(b"x")
    os.chmod(str(dump), 0o600)
    ran, calls = _boot(tmp_path, dump)
    assert ran.returncode == 0 and "restore" in calls and str(dump) in calls, (ran.stderr, calls)


def test_boot_without_a_dump_says_so_and_restores_nothing(tmp_path):
    ran, calls = _boot(tmp_path, _state_dir(tmp_path) / "boot.pfstate")
    assert ran.returncode == 0 and calls == ""
    assert "no saved states" in ran.stdout + ran.stderr


@pytest.mark.parametrize("attack", ["symlink", "world-writable", "another user", "directory", "fifo"])
def test_boot_refuses_a_dump_someone_else_could_have_planted(tmp_path, attack):
    """Root restores the file at boot: a link, a file others could write, a file of another user are not the
    dump pfstate wrote (0600, root's) and are refused with a message, nothing restored."""
    if attack == "another user" and os.geteuid() != 0:
        pytest.skip("chown to another user needs root")
    dump = _state_dir(tmp_path) / "boot.pfstate"
    planted = tmp_path / "planted"
    planted.write_bytes(b"x")
    os.chmod(str(planted), 0o600)
    if attack == "symlink":
        os.symlink(str(planted), str(dump))
    elif attack == "directory":
        dump.mkdir()
    elif attack == "fifo":
        os.mkfifo(str(dump), 0o600)
    else:
        dump.write_bytes(b"x")
        os.chmod(str(dump), 0o666 if attack == "world-writable" else 0o600)
        if attack == "another user":
            os.chown(str(dump), OTHER_UID, OTHER_UID)
    ran, calls = _boot(tmp_path, dump)
    assert calls == "", "nothing restored"
    assert ran.returncode == 0 and "not restored" in ran.stdout + ran.stderr, (ran.stdout, ran.stderr)


# --- states_restore src: what the controller pushes ---------------------------------------------

def _restore_action(src, calls):
    import posixpath
    from ansible.parsing.dataloader import DataLoader
    from ansible_collections.netbsd.pf.plugins.action import states_restore as states_restore_action
    action = states_restore_action.ActionModule.__new__(states_restore_action.ActionModule)
    action._task = SimpleNamespace(args={"src": src, "age": "none"}, async_val=0, check_mode=False,
                                   action="netbsd.pf.states_restore")
    action._connection = SimpleNamespace(_shell=SimpleNamespace(tmpdir=None, join_path=posixpath.join))
    action._loader = DataLoader()       # the real one: it reads the start of src (vault check)
    action._find_needle = lambda dirname, needle: needle
    action._make_tmp_path = lambda: "/tmp/ansible-tmp-test"

    def transfer(local, remote):       # a transport reads the whole file
        with open(local, "rb") as handle:
            if len(handle.read(1 << 20)) == 1 << 20 and handle.read(1):
                raise AssertionError("an endless source was pushed")
        calls.append("transfer")
    action._transfer_file = transfer
    action._remote_chmod = lambda paths, mode: None
    action._remove_tmp_path = lambda path, force=False: None
    action._execute_module = lambda module_name, module_args, task_vars: calls.append("module") or {"restored": 0}
    return action


@pytest.mark.parametrize("kind", ["fifo", "character device", "directory"])
def test_src_that_is_not_a_regular_file_is_refused_at_once(tmp_path, deadline, kind):
    """Held: a FIFO could hang the play (the vault check reads src), /dev/zero be pushed forever; the loader
    accepts regular files only, so the task fails at once naming src, nothing pushed."""
    if kind == "fifo":
        src = str(tmp_path / "fw1.pfstate")
        os.mkfifo(src)
    elif kind == "character device":
        src = "/dev/zero"
    else:
        src = str(tmp_path)
    calls = []
    result = _restore_action(src, calls).run(task_vars={})
    assert result.get("failed") is True and "exception" not in result, result
    assert result["msg"].startswith("Could not find or access '%s' on the Ansible Controller" % src)
    assert calls == []


def _reboot_dir_check(capture_dir_stat, host_dir_stat):
    task = _task("reboot", "restore.yml", "Refuse a capture directory that another user could swap")
    variables = {"reboot_capture_dir": "/srv/caps", "reboot_host_dir": "/srv/caps/fw1",
                 "reboot_dir_stats": {"results": [{"stat": capture_dir_stat}, {"stat": host_dir_stat}]},
                 "reboot_controller_uid": "1000"}
    for name, expression in task["vars"].items():
        if name != "reboot_controller_uid":
            variables[name] = _render(expression, variables)
    holds = all(_render("{{ %s }}" % condition, variables) for condition in task["ansible.builtin.assert"]["that"])
    return holds, _render(task["ansible.builtin.assert"]["fail_msg"], variables)


def _dir(uid, mode):
    return {"exists": True, "isdir": True, "uid": uid, "mode": "%04o" % mode, "wgrp": bool(mode & 0o020),
            "woth": bool(mode & 0o002)}


@pytest.mark.parametrize("capture_dir, accepted, message", [
    (_dir(1000, 0o700), True, ""),
    (_dir(0, 0o1777), True, ""),
    ({"exists": False}, True, ""),
    (_dir(1000, 0o777), False, "/srv/caps can be written by other users and is not sticky"),
    (_dir(0, 0o775), False, "/srv/caps can be written by other users and is not sticky"),
    (_dir(65534, 0o755), False, "/srv/caps is owned by uid 65534, neither root nor the controller user"),
], ids=["own 0700", "root 1777 (/tmp)", "missing", "own 0777", "root 0775", "another user's"])
def test_reboot_role_refuses_a_capture_dir_that_could_swap_the_host_directory(capture_dir, accepted, message):
    holds, fail_msg = _reboot_dir_check(capture_dir, {"exists": False})
    assert holds is accepted
    if message:
        assert fail_msg.startswith(message), fail_msg


@pytest.mark.parametrize("content", ["empty", "truncated", "native cut short"])
def test_boot_restore_of_an_empty_or_truncated_dump_is_one_line_and_restores_nothing(
        pfemu_kernel, tmp_path, capsys, content):
    """What rc.d start runs (pfstate restore --age auto --max-age ...) on a dump a crash cut short."""
    from ansible_collections.netbsd.pf.plugins.module_utils import pfstate_cli
    from ansible_collections.netbsd.pf.plugins.module_utils.formats import NATIVE, write_dump
    from ansible_collections.netbsd.pf.tests.unit.reliability.test_matrix import ORDER, dump_file, records
    block = records(10, seed=5, first_stateid=1000)
    if content == "native cut short":
        path = str(tmp_path / "boot.pfstate")
        write_dump(path, NATIVE, [block], ORDER, count=10)
    else:
        path = dump_file(tmp_path, block)
    size = {"empty": 0, "truncated": 4 + 240 * 6 + 100, "native cut short": os.path.getsize(path) - 300}[content]
    with open(path, "r+b") as handle:
        handle.truncate(size)
    status = pfstate_cli.main(["restore", "--age", "auto", "--max-age", "3600", "--lease-file", str(tmp_path / "lease"),
                               "--restore-lock-file", str(tmp_path / "restore.lock"), path])
    err = capsys.readouterr().err
    assert _table_records() == [], "nothing restored"
    if content == "empty":
        assert status == 0, err     # pfs writes a 0-byte file for an empty table: nothing to restore
    else:
        assert status == 1 and err.count("\n") == 1 and path in err and "Traceback" not in err, err


def test_a_host_name_too_long_for_a_file_name_is_a_message_that_keeps_the_module_result(tmp_path):
    """Held: 100 x 'ü' is 900 characters once encoded; the task fails with the reason, the module's result kept."""
    action = _dump_action(_writer(b"x"))
    action._task.args = {"path": "/var/db/pfstate/s.pfstate", "fetch_to": str(tmp_path)}
    action._execute_module = lambda module_name, module_args, task_vars: {
        "changed": True, "path": "/var/db/pfstate/s.pfstate", "count": 1, "sha256": hashlib.sha256(b"x").hexdigest()}
    result = action.run(task_vars={"inventory_hostname": "ü" * 100})
    assert result["failed"] is True and "File name too long" in result["msg"] and result["count"] == 1, result


# --- the restore role: which controller file it pushes ------------------------------------------

def _stat_module(path, follow):
    """What ansible.builtin.stat returns for the fields the roles read."""
    try:
        info = os.stat(path) if follow else os.lstat(path)
    except OSError:
        return {"exists": False}
    import stat as stat_module
    result = {"exists": True, "path": path, "isdir": stat_module.S_ISDIR(info.st_mode),
              "isreg": stat_module.S_ISREG(info.st_mode), "islnk": stat_module.S_ISLNK(info.st_mode),
              "uid": info.st_uid, "mode": "%04o" % stat_module.S_IMODE(info.st_mode),
              "wgrp": bool(info.st_mode & 0o020), "woth": bool(info.st_mode & 0o002)}
    if result["islnk"]:
        result["lnk_source"] = os.path.realpath(path)
    return result


_IN_CHILD = """
import json, sys
from ansible.plugins.loader import init_plugin_loader
init_plugin_loader([sys.argv[1]])
from ansible_collections.netbsd.pf.tests.unit.reliability import test_attack_controller as tests
sys.stdout.write(json.dumps(getattr(tests, sys.argv[2])(*json.load(sys.stdin))))
"""


def _in_child(function, *args):
    """``function(*args)`` in a child process whose plugin loader knows this collection (its filters)."""
    collections_root = os.path.join(ROLES, "..", "..", "..", "..")
    child = subprocess.run([sys.executable, "-c", _IN_CHILD, collections_root, function.__name__], input=json.dumps(args),
                           capture_output=True, text=True, timeout=120, check=False)
    assert child.returncode == 0, child.stderr
    return json.loads(child.stdout)


def _run_restore_role(variables):
    """The restore role's tasks up to the push: stat, assert, and the src states_restore would push.
    Returns ("pushed", src) or ("failed", message).  Run it with _in_child (netbsd.pf.host_dir)."""
    import copy
    with open(os.path.join(ROLES, "restore", "defaults", "main.yml")) as handle:
        scope = dict(yaml.safe_load(handle), playbook_dir="/nonexistent", inventory_hostname="fw1")
    scope.update(_role_vars("restore"), **variables)
    from ansible.template import trust_as_template
    scope = {name: trust_as_template(value) if isinstance(value, str) and "{{" in value else value
             for name, value in scope.items()}       # defaults refer to each other, rendered when used
    for task in _task_list("restore", "main.yml"):
        task = copy.deepcopy(task)
        local = dict(scope)
        for name, expression in (task.get("vars") or {}).items():
            local[name] = _render(expression, local) if isinstance(expression, str) else expression
        if "ansible.builtin.stat" in task:
            args = task["ansible.builtin.stat"]
            items = [_render(item, local) for item in task["loop"]] if "loop" in task else [None]
            results = []
            for item in items:
                local["item"] = item
                follow = args.get("follow", False)
                follow = _render(follow, local) if isinstance(follow, str) else follow
                results.append({"item": item, "stat": _stat_module(_render(args["path"], local), follow)})
            scope[task["register"]] = {"results": results} if "loop" in task else results[0]
        elif "ansible.builtin.assert" in task:
            args = task["ansible.builtin.assert"]
            for condition in args["that"]:
                if not _render("{{ %s }}" % condition, local):
                    return "failed", _render(args["fail_msg"], local)
        elif "netbsd.pf.states_restore" in task:
            return "pushed", _render(task["netbsd.pf.states_restore"]["src"], local)
    raise AssertionError("the role never reached the restore")


def _task_list(role, tasks_file):
    with open(os.path.join(ROLES, role, "tasks", tasks_file)) as handle:
        return yaml.safe_load(handle)


def _capture_tree(tmp_path):
    captures = tmp_path / "captures"
    host_dir = captures / "fw1"
    host_dir.mkdir(parents=True, mode=0o700)
    os.chmod(str(captures), 0o700)
    os.chmod(str(host_dir), 0o700)
    (host_dir / "fw1-20261203T000000Z.pfstate").write_bytes(b"dump")
    os.symlink("fw1-20261203T000000Z.pfstate", str(host_dir / "latest"))
    secret = tmp_path / "secret"
    secret.write_bytes(b"controller secret")
    return captures, host_dir, secret


def test_restore_role_pushes_the_latest_capture(tmp_path):
    captures, host_dir = _capture_tree(tmp_path)[:2]
    outcome, src = _in_child(_run_restore_role, {"restore_capture_dir": str(captures)})
    assert outcome == "pushed" and os.path.realpath(src) == str(host_dir / "fw1-20261203T000000Z.pfstate")


@pytest.mark.parametrize("attack", ["restore_capture ../../secret", "restore_capture absolute",
                                    "latest links out of the host directory", "restore_source_host ../.."])
def test_restore_role_never_pushes_a_file_outside_the_host_directory(tmp_path, attack):
    """An inventory variable or a planted latest must not send a controller file (keys, vault files) to a target."""
    captures, host_dir, secret = _capture_tree(tmp_path)
    variables = {"restore_capture_dir": str(captures)}
    if attack == "restore_capture ../../secret":
        variables["restore_capture"] = "../../secret"
    elif attack == "restore_capture absolute":
        variables["restore_capture"] = str(secret)
    elif attack == "restore_source_host ../..":
        variables["restore_source_host"] = "../.."
        variables["restore_capture"] = "secret"
    else:
        os.unlink(str(host_dir / "latest"))
        os.symlink(str(secret), str(host_dir / "latest"))
    outcome, message = _in_child(_run_restore_role, variables)
    assert outcome == "failed", message
    assert "restore_capture" in message or "latest" in message or "No capture" in message, message


@needs_root
def test_restore_role_refuses_a_host_directory_of_another_user(tmp_path):
    captures, host_dir = _capture_tree(tmp_path)[:2]
    os.chown(str(host_dir), OTHER_UID, OTHER_UID)
    outcome, message = _in_child(_run_restore_role, {"restore_capture_dir": str(captures)})
    assert outcome == "failed" and "owned by uid 65534" in message, message


HOSTILE_PATH_PART = "x\"$(touch pwned)`touch pwned`'y"       # run in tmp_path: a command would create tmp_path/pwned


@pytest.mark.parametrize("firewall", ["pf", "npf"])
def test_rc_script_takes_inventory_paths_literally(tmp_path, firewall):
    """netbsd_pf_state_dir / lease file / restore lock file from a hostile inventory, run as root at boot."""
    state_dir = _state_dir(tmp_path) / HOSTILE_PATH_PART
    state_dir.mkdir(mode=0o700)
    dump = state_dir / "boot.pfstate"
    dump.write_bytes(b"x")
    os.chmod(str(dump), 0o600)
    lease = str(tmp_path / HOSTILE_PATH_PART)
    ran, calls = _boot(tmp_path, dump, reboot_boot_firewall=firewall, reboot_lease_file=lease,
                       netbsd_pf_restore_lock_file=lease)
    assert not (tmp_path / "pwned").exists(), "a command of the inventory ran"
    assert ran.returncode == 0 and str(dump) in calls, (ran.stderr, calls)
    assert calls.count(lease) == (2 if firewall == "pf" else 1), calls


def test_pfstate_launcher_takes_the_library_path_literally(tmp_path):
    import ast
    library = str(tmp_path) + '/lib"); import os; os.system("touch pwned"); ("'
    variables = {"ansible_managed": "test", "reboot_python": sys.executable, "reboot_lib_path": library}
    launcher = _template("reboot", "pfstate.py.j2", variables)
    tree = ast.parse(launcher)
    inserts = [node for node in ast.walk(tree) if isinstance(node, ast.Call) and ast.unparse(node.func) == "sys.path.insert"]
    assert len(inserts) == 1 and ast.literal_eval(inserts[0].args[1]) == library
    assert "os.system" not in [ast.unparse(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)]


@pytest.mark.parametrize("python", ["/usr/bin/python3\nimport os", "python3", "/usr/bin/env -S python3 -I"])
def test_reboot_role_refuses_a_python_the_shebang_cannot_carry(python):
    """The launcher's first line is #!reboot_python: a newline would make the rest a line of the program."""
    task = _task("reboot", "boot_restore.yml", "Refuse a reboot_python the pfstate command cannot start with")
    conditions = task["ansible.builtin.assert"]["that"]
    assert not all(_render("{{ %s }}" % condition, {"reboot_python": python}) for condition in conditions)
    for accepted in ("/usr/pkg/bin/python3.12", "/usr/bin/env python3"):
        assert all(_render("{{ %s }}" % condition, {"reboot_python": accepted}) for condition in conditions)


@pytest.mark.parametrize("side", ["target", "controller"])
def test_retention_removes_a_capture_named_link_not_its_target(tmp_path, side):
    """Held: the oldest 'capture' is a link to a file elsewhere: the link goes, the file stays."""
    host_dir = tmp_path / "fw"
    host_dir.mkdir()
    _fill(host_dir)
    important = tmp_path / "important"
    important.write_bytes(b"keep me")
    os.symlink(str(important), str(host_dir / "fw-20261130T000000Z.pfstate"))
    if side == "target":
        task = _task("capture", "retention.yml", "Remove the oldest captures on the target")
        ran = _sh(_render(task["ansible.builtin.raw"], dict(_role_vars("capture"), capture_state_dir=str(host_dir),
                                                            capture_host_name="fw", capture_keep_on_target=1)))
    else:
        ran = _controller_step(host_dir)
    assert ran.returncode == 0, ran.stderr
    assert not os.path.lexists(str(host_dir / "fw-20261130T000000Z.pfstate")) and important.read_bytes() == b"keep me"


def test_library_install_refuses_a_folder_that_is_a_link(tmp_path):
    """reboot_lib_dir a link (to a folder others could write to) is refused, nothing unpacked through it."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(str(elsewhere), str(tmp_path / "lib"))
    ran = _install_library(_small_bundle(tmp_path), str(tmp_path / "lib" / "library"))
    assert ran.returncode == 1 and "is not a directory" in ran.stderr and os.listdir(str(elsewhere)) == [], ran.stderr
