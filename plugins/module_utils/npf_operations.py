# -*- coding: utf-8 -*-
# Copyright: netbsd.pf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The NPF workflows the modules call: dump, info and restore (which firewall runs: firewall.py).

Nothing here knows of Ansible. Expected failures raise NpfOperationError with a message that
names the file or device and what to change; nothing is written or loaded when one is raised.
Dumps are the native format version 2, kind npf (npf_native.py), staged and committed like the
pf dumps (formats.stage_written: temp file beside the target, 0600, fsync, rename). A restore
plans one IOC_NPF_LOAD (npf_restore.py) from an NPF snapshot, or from a pf dump converted by
npf_convert.py, and every input connection or state ends in exactly one count.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections
import hashlib
import os
import sys
import time

from ansible_collections.netbsd.pf.plugins.module_utils.errors import PfStateError
from ansible_collections.netbsd.pf.plugins.module_utils.firewall import DEFAULT_NPF_DEVICE, NAT_CHOICES, RUNNING_CHOICES, file_kind
from ansible_collections.netbsd.pf.plugins.module_utils.formats import open_regular, stage_written
from ansible_collections.netbsd.pf.plugins.module_utils.native import NativeFormatError
from ansible_collections.netbsd.pf.plugins.module_utils.npf_convert import convert_states, to_snapshot
from ansible_collections.netbsd.pf.plugins.module_utils.npf_native import read_npf_file, read_npf_header, write_npf_file
from ansible_collections.netbsd.pf.plugins.module_utils.npf_nvlist import encode
from ansible_collections.netbsd.pf.plugins.module_utils.npf_restore import (
    DROP_REASONS, NpfRestoreError, execute_plan, plan_restore,
)
from ansible_collections.netbsd.pf.plugins.module_utils.npf_snapshot import PROTOCOL_NAMES, NpfSnapshot, NpfSnapshotError
from ansible_collections.netbsd.pf.plugins.module_utils.npfdev import NpfDevice
from ansible_collections.netbsd.pf.plugins.module_utils.operations import (
    apply_transforms, backup_file, capture_metadata, file_sha256, start_detached,
)
from ansible_collections.netbsd.pf.plugins.module_utils.pushed import remove_quietly
from ansible_collections.netbsd.pf.plugins.module_utils.restore import (
    RestoreError, exclusive_restore, load_dump, parse_timestamp, resolve_age,
)
from ansible_collections.netbsd.pf.plugins.module_utils.transforms import TransformStats


class NpfOperationError(PfStateError):
    """An NPF operation that cannot be done as asked; the message says why and what to change."""


# --- reading the kernel ----------------------------------------------------------------

def _save(device_path):
    """(NpfSnapshot of the running NPF, device byte order), after the generation check."""
    with NpfDevice(device_path) as device:
        device.probe()
        reply = device.save()
        byte_order = device.abi.byte_order
    try:
        return NpfSnapshot(reply, byte_order, "IOC_NPF_SAVE of %s" % device_path), reply
    except NpfSnapshotError as exc:
        raise NpfOperationError("%s; the kernel's snapshot cannot be used" % exc)


def breakdown(connections):
    """Valid connections by interface, protocol and address family (the keys of the pf dump result)."""
    interfaces, protocols, families = collections.Counter(), collections.Counter(), collections.Counter()
    for conn in connections:
        if not conn.valid:
            continue
        interfaces[conn.ifname or "-"] += 1
        protocols[PROTOCOL_NAMES[conn.proto]] += 1
        families["inet" if conn.alen == 4 else "inet6"] += 1
    return {"by_interface": dict(interfaces), "by_protocol": dict(protocols), "by_address_family": dict(families)}


def summary_text(counts):
    """One line per interface and protocol, the diff form of the modules."""
    return "".join("%s %s\n" % (key, value) for key, value in sorted(counts.items()))


def _diff_counts(connections):
    counts = collections.Counter()
    for conn in connections:
        if conn.valid:
            counts["%s %s" % (conn.ifname or "-", PROTOCOL_NAMES[conn.proto])] += 1
    return counts


# --- dump ------------------------------------------------------------------------

def content_digest(byte_order, compression, packed_sha256):
    """Identity of an NPF dump: byte order, compression and the snapshot's SHA-256, all in the header."""
    return hashlib.sha256(("npf|%s|%s|%s" % (byte_order, compression, packed_sha256)).encode("ascii")).hexdigest()


def _existing_digest(path):
    if not os.path.isfile(path):
        return None
    try:
        with open_regular(path) as handle:
            header = read_npf_header(handle, os.fstat(handle.fileno()).st_size, path)
    except (ValueError, OSError):
        return None
    return content_digest(header["byte_order"], header["compression"], header["sha256"])


def dump_npf(path, device_path=DEFAULT_NPF_DEVICE, compress=True, backup=False, mode=0o600, check_mode=False,
             now=None, run_after=None):
    """Save the NPF state (configuration and connections) to ``path``; returns the states_dump result.

    The file is replaced atomically, and only when its content (byte order, compression, the
    snapshot) differs; in check mode the state is read and nothing is written. ``run_after``
    (an argv) is started detached once the file is in place (the reboot role's reboot).
    """
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise NpfOperationError("directory %s does not exist; create it first (for example with ansible.builtin.file)"
                                % directory)
    if os.path.isdir(path):
        raise NpfOperationError("%s is a directory; path must name the dump file" % path)
    snapshot, reply = _save(device_path)
    compression = "zlib" if compress else "none"
    packed = encode(reply, snapshot.byte_order)
    packed_sha256 = hashlib.sha256(packed).hexdigest()
    digest = content_digest(snapshot.byte_order, compression, packed_sha256)
    result = {"firewall": "npf", "path": path, "format": "native", "kind": "npf", "byte_order": snapshot.byte_order,
              "count": len(snapshot.connections), "read": len(snapshot.connections), "filtered": 0, "renamed": 0,
              "changed": _existing_digest(path) != digest, "content_sha256": digest,
              "npf_summary": snapshot.summary(), "lock": {"mode": "none", "taken": False}, "lock_window_ms": None}
    result.update(breakdown(snapshot.connections))
    if check_mode:
        return result
    if result["changed"]:
        try:
            staged, _fields = stage_written(path, lambda sink: write_npf_file(
                sink, reply, snapshot.byte_order, capture_metadata(None, now, firewall="npf"), compression=compression,
                packed=packed), mode)
            with staged:
                if backup and os.path.isfile(path):
                    result["backup_file"] = backup_file(path, now)
                staged.commit()
        except OSError as exc:
            raise NpfOperationError("cannot write %s: %s; the previous file (if any) is unchanged"
                                    % (path, os.strerror(exc.errno) if exc.errno else exc))
        result["bytes"], result["sha256"] = staged.size, staged.sha256
    else:
        result["bytes"], result["sha256"] = file_sha256(path)
    with open_regular(path) as handle:
        result["header"] = read_npf_header(handle, os.fstat(handle.fileno()).st_size, path)
    if run_after:
        result["run_after_pid"] = start_detached(run_after)
    return result


# --- info ------------------------------------------------------------------------

def npf_info(device_path=DEFAULT_NPF_DEVICE, connections=False, limit=None):
    """Version, whether NPF filters, configuration sizes, params, statistics and a summary of the connections."""
    snapshot, _reply = _save(device_path)
    with NpfDevice(device_path) as device:
        stats = device.stats()
    result = {
        "firewall": "npf", "byte_order": snapshot.byte_order,
        "npf": {"version": snapshot.version, "active": snapshot.active, "params": snapshot.params,
                "rules": len(snapshot.config["rules"]), "nat_rules": len(snapshot.config["nat"]),
                "tables": len(snapshot.config["tables"]), "stats": stats},
        "summary": dict(snapshot.summary(), count=len(snapshot.connections), total_in_table=len(snapshot.connections),
                        **breakdown(snapshot.connections)),
    }
    if connections:
        shown = snapshot.connections if limit is None else snapshot.connections[:limit]
        result["connections"] = [conn.to_text() for conn in shown]
        result["connections_truncated"] = len(shown) < len(snapshot.connections)
    return result


# --- restore ---------------------------------------------------------------------

def capture_time(path):
    """When the dump at ``path`` was captured (seconds since the epoch), from its header; None if unknown."""
    if file_kind(path) == "pf":
        try:
            return load_dump(path).header_captured_at
        except RestoreError as exc:
            raise NpfOperationError(str(exc))
    try:
        with open_regular(path) as handle:
            return _captured_at(read_npf_header(handle, os.fstat(handle.fileno()).st_size, path))
    except NativeFormatError as exc:
        raise NpfOperationError("refusing to restore %s, nothing was loaded: %s" % (path, exc))


def _read_snapshot(path, remove_after_open, refusal="refusing to restore %s, nothing was loaded"):
    try:
        handle = open_regular(path)
    except (OSError, ValueError) as exc:
        raise NpfOperationError("cannot read %s: %s" % (path, getattr(exc, "strerror", None) or exc))
    finally:
        if remove_after_open:
            remove_quietly(path)
    with handle:
        try:
            return read_npf_file(handle, os.fstat(handle.fileno()).st_size, path)
        except NativeFormatError as exc:
            raise NpfOperationError("%s: %s" % (refusal % path, exc))


def inspect_npf_file(path):
    """(what the header says, NpfSnapshot) of a native NPF snapshot file, read and checked whole."""
    header, snapshot = _read_snapshot(path, remove_after_open=False, refusal="cannot show %s")
    metadata = header.get("metadata") or {}
    info = {"file": path, "format": "native", "kind": "npf", "byte_order": snapshot.byte_order,
            "connections": len(snapshot.connections)}
    info.update((key, metadata[key]) for key in ("captured_at", "hostname") if key in metadata)
    return info, snapshot


class _Source:
    """What a restore loads: an NPF snapshot, and how the input became it."""

    def __init__(self, kind, snapshot, read, captured_at, conversion=None, fmt="native", filtered=0):
        self.kind = kind
        self.snapshot = snapshot
        self.read = read
        self.captured_at = captured_at
        self.conversion = conversion
        self.format = fmt
        self.filtered = filtered


def _captured_at(header):
    moment = (header.get("metadata") or {}).get("captured_at")
    try:
        return parse_timestamp(moment) if moment is not None else None
    except ValueError:
        return None


def _read_pf_dump(path, remove_after_open, fmt=None, byte_order=None):
    """A pf dump read and checked whole (pfs text is read in this host's byte order, the NPF kernel's)."""
    try:
        return load_dump(path, fmt, byte_order, text_byte_order=sys.byteorder, remove_after_open=remove_after_open)
    except RestoreError as exc:
        raise NpfOperationError(str(exc))


def _pf_source(path, dump, running, floating_interface, age_of, transforms=None):
    """The pf ``dump``, filtered and renamed by ``transforms``, converted for the NPF host ``running`` (NPF
    reference 5.2-5.4)."""
    age = age_of(dump.header_captured_at, dump.mtime)
    stats = TransformStats()
    blocks = list(apply_transforms([dump.block], transforms, stats))
    result = convert_states(blocks, dump.byte_order, nat_rules=running.config["nat"],
                            key_interface=bool(running.params.get("state.key.interface", 1)),
                            key_direction=bool(running.params.get("state.key.direction", 1)),
                            floating_interface=floating_interface, age=age[0] if age[1] != "none" else None)
    snapshot = to_snapshot(result, running, "%s (pf states converted for NPF)" % path)
    return _Source("pf", snapshot, stats.read, age, result, dump.format.replace("-", "_"), stats.filtered)


def restore_npf(path, device_path=DEFAULT_NPF_DEVICE, age="auto", captured_at=None, source_mtime=None, nat="drop",
                limit_policy="refuse", running_conns="merge", floating_interface=None, check_mode=False,
                remove_after_open=False, restore_lock_file=None, restore_lock_timeout=60, now=None, fmt=None,
                byte_order=None, transforms=None):
    """Restore the connections of ``path`` (an NPF snapshot, or a pf dump converted) into the running NPF.

    ``fmt``, ``byte_order`` and ``transforms`` (filters, rename) apply to a pf dump only. Returns the
    states_restore result: every input record is in exactly one of ``loaded``
    (less the running connections merged back), ``already_running``, ``unconvertible`` and the
    drop reasons; ``accounted`` says so. Nothing is loaded in check mode or on any error.
    """
    if nat not in NAT_CHOICES or running_conns not in RUNNING_CHOICES or limit_policy not in ("fit", "refuse"):
        raise NpfOperationError("npf_nat must be drop or keep, npf_running merge or refuse, limit_policy fit or refuse")
    now = time.time() if now is None else now
    try:
        option_captured = parse_timestamp(captured_at) if captured_at is not None else None
    except ValueError as exc:
        raise NpfOperationError("captured_at: %s" % exc)

    def age_of(header_captured, file_mtime):
        try:
            return resolve_age(age, now, option_captured, header_captured, source_mtime, file_mtime)
        except RestoreError as exc:
            raise NpfOperationError(str(exc))

    # The file is read (and a pushed copy removed) before the device is touched.
    try:
        kind = file_kind(path)
    except NpfOperationError:
        if remove_after_open:
            remove_quietly(path)
        raise
    if kind == "npf":
        if transforms and any(transforms.values()):
            if remove_after_open:
                remove_quietly(path)
            raise NpfOperationError("%s is an NPF snapshot: filters and rename apply to pf dumps only" % path)
        header, snapshot = _read_snapshot(path, remove_after_open)
        source = _Source("npf", snapshot, len(snapshot.connections), age_of(_captured_at(header), None))
        running, _reply = _save(device_path)
    else:
        dump = _read_pf_dump(path, remove_after_open, fmt, byte_order)
        running, _reply = _save(device_path)
        source = _pf_source(path, dump, running, floating_interface, age_of, transforms)
    try:
        plan = plan_restore(source.snapshot, running, age=source.captured_at[0] if kind == "npf" and
                            source.captured_at[1] != "none" else None, nat=nat, limit_policy=limit_policy,
                            running_conns=running_conns)
    except NpfRestoreError as exc:
        raise NpfOperationError("refusing to restore %s, nothing was loaded: %s" % (path, exc))
    if check_mode:
        report = dict(plan.as_dict(), verified=0, verify_failed=[])
    else:
        try:
            with exclusive_restore(restore_lock_file, restore_lock_timeout):
                with NpfDevice(device_path) as device:
                    report = execute_plan(device, plan)
        except RestoreError as exc:
            raise NpfOperationError(str(exc))
        except NpfRestoreError as exc:
            raise NpfOperationError("refusing to restore %s, nothing was loaded: %s" % (path, exc))
    return _restore_result(path, source, running, plan, report)


def _restore_result(path, source, running, plan, report):
    conversion = source.conversion.summary() if source.conversion else None
    # States that had expired before the conversion count as expired, like the snapshot's.
    expired_before = conversion["reasons"].get("expired", 0) if conversion else 0
    unconvertible = conversion["unconvertible"] - expired_before if conversion else 0
    result = dict(report)
    result["rejected_connections"] = result.pop("rejected")
    result.update({
        "firewall": "npf", "path": path, "source_kind": source.kind, "format": source.format,
        "read": source.read, "count": source.read - source.filtered, "filtered": source.filtered,
        "unconvertible": unconvertible, "expired": report["expired"] + expired_before,
        "restored": report["loaded"] - report["merged_running"],
        "age_seconds": source.captured_at[0], "age_source": source.captured_at[1],
        "captured_at": source.captured_at[2],
    })
    if conversion is not None:
        result["conversion"] = conversion
    dropped = sum(result[reason] for reason in DROP_REASONS)
    # pf's accounting, for roles and reports that work on both: read = restored + already_present
    # + rejected + expired + filtered.
    result.update(already_present=report["already_running"], rejected=dropped - result["expired"] + unconvertible)
    result["accounted"] = (result["restored"] + report["already_running"] + dropped + unconvertible
                           + source.filtered == source.read and plan.accounted())
    before = _diff_counts(running.connections)
    result["diff_before"] = summary_text(before)
    result["diff_after"] = summary_text(_diff_counts(plan.loaded) if plan.changes else before)
    return result
