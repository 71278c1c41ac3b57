# -*- coding: utf-8 -*-
# Copyright: netbsd.pf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``pfstate`` command: save, restore, show and convert the pf state table by hand.

An everyday replacement for pfs(8) built on the same code as the modules, with
what pfs lacks: a self-checking file format (pfs binary and text are read and
written too), restores that skip states already in the table and account for
every record, ageing by the time since the capture, and a state lock that is
never left behind: every lock is taken under a lease (a detached watchdog
unlocks the table when it runs out) and a failing command unlocks at once.

``main(argv)`` returns the exit status:

* 0  success (also a restore skipped on purpose by ``--max-age``)
* 1  failure (device, file or kernel error); the message says what to do
* 2  usage error
* 3  restore finished but the kernel refused some states (listed on stderr)

The reboot role installs this module with the rest of module_utils as one zip
(imported from directly, stdlib only) and a short launcher as ``pfstate``; the
rc.d script of the same role calls ``pfstate restore`` at boot and
``pfstate dump --lock hold`` at shutdown.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import json
import re
import signal
import sys
import time

from ansible_collections.netbsd.pf.plugins.module_utils.abi import Abi
from ansible_collections.netbsd.pf.plugins.module_utils.argspec import (
    DEFAULT_LEASE_FILE, DEFAULT_LEASE_SECONDS, FORMAT_CHOICES, canonical_format,
)
from ansible_collections.netbsd.pf.plugins.module_utils.errors import PfStateError
# npf_operations (the NPF workflows and codecs) is imported by the NPF commands alone: a pf host never loads it.
from ansible_collections.netbsd.pf.plugins.module_utils.firewall import DEFAULT_NPF_DEVICE, detect_firewall, file_kind
from ansible_collections.netbsd.pf.plugins.module_utils.formats import NATIVE, open_dump
from ansible_collections.netbsd.pf.plugins.module_utils.lease import lease_view
from ansible_collections.netbsd.pf.plugins.module_utils.operations import DUMP_ERRORS, convert_dump, dump_states, lock_table, unlock_table
from ansible_collections.netbsd.pf.plugins.module_utils.pfdev import PfDevice
from ansible_collections.netbsd.pf.plugins.module_utils.pfs_text import format_block, shown_text
from ansible_collections.netbsd.pf.plugins.module_utils.progress import ProgressBar
from ansible_collections.netbsd.pf.plugins.module_utils.records import record_count
from ansible_collections.netbsd.pf.plugins.module_utils.restore import (
    DEFAULT_PURGE_WAIT, load_dump, resolve_age, restore_file,
)
from ansible_collections.netbsd.pf.plugins.module_utils.views import state_views, summarize_views

PROG = "pfstate"
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INCOMPLETE = 3
DEFAULT_DEVICE = "/dev/pf"
# What a terminal would act on (newlines, ESC sequences, C1 controls): printed as escapes.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


class CommandError(PfStateError):
    """An expected failure: printed as ``pfstate: message``, exit status 1."""


class _Terminated(BaseException):
    """SIGTERM or SIGHUP arrived: unwind (and unlock) like for Ctrl-C."""


def _terminate(signum, frame):
    raise _Terminated(signum)


# --- dump -------------------------------------------------------------------------------

def _transforms(args, rename=None):
    filters = dict((key, value) for key, value in (
        ("interfaces", args.interface), ("protocols", args.proto), ("address_family", args.family),
        ("networks", args.network), ("ports", args.port)) if value)
    return {"filters": filters or None, "rename": rename}


def _written(result, path):
    """How a file was stored: rewritten, or left alone because it already held the same states."""
    if result.get("changed", True):
        return "written to %s, %d bytes" % (path, result["bytes"])
    return "already in %s (same content, file left alone)" % path


def _npf_chosen(args):
    """Whether this command works on NPF (--firewall npf, or auto finding NPF)."""
    return args.firewall != "pf" and detect_firewall(args.firewall, args.device, args.npf_device) == "npf"


def cmd_dump_npf(args):
    """NPF: one SAVE into a native NPF file; NPF has no table lock, so --lock is not used."""
    from ansible_collections.netbsd.pf.plugins.module_utils.npf_operations import dump_npf  # pylint: disable=import-outside-toplevel
    if args.format != NATIVE or _transforms(args).get("filters"):
        raise CommandError("NPF is saved whole in the native format: --format and the state selection are pf-only")
    result = dump_npf(args.file, device_path=args.npf_device, compress=args.compress)
    _say(args, "%d NPF connections %s (native, kind npf)" % (result["count"], _written(result, args.file)))
    return EXIT_OK


def _check_compress(args):
    if not args.compress and canonical_format(args.format) != NATIVE:
        raise CommandError("--no-compress applies to the native format only (pfs formats are never compressed)")


def cmd_dump(args):
    if _npf_chosen(args):
        return cmd_dump_npf(args)
    if args.lock == "hold" and not args.lease:
        raise CommandError("--lock hold needs a lease (--lease SECONDS > 0): nothing else would ever unlock the table")
    _check_compress(args)
    result = dump_states(args.file, fmt=args.format, compress=args.compress, transforms=_transforms(args), lock=args.lock, lease=args.lease,
                         lease_file=args.lease_file, device_path=args.device, progress=args.progress, summary=False)
    _end_progress(args)
    window = result.get("lock_window_ms")
    _say(args, "%d states %s (%s)%s" % (
        result["count"], _written(result, args.file), args.format,
        "" if window is None or args.lock == "hold" else ", table locked for %.1f ms" % window))
    if args.lock == "hold":
        _say(args, "the state table stays locked; the lease unlocks it in %d s unless the host reboots first "
                   "(pfstate unlock ends it now)" % args.lease, always=True)
    return EXIT_OK


# --- restore ------------------------------------------------------------------------------

def _input_format(args):
    return canonical_format(args.format) if args.format else None


def _rename_map(pairs):
    mapping = {}
    for pair in pairs or ():
        old, sep, new = pair.partition("=")
        if not sep or not old or not new:
            raise CommandError("--rename takes OLD=NEW (interface names), not %r" % pair)
        mapping[old] = new
    return mapping or None


def cmd_restore_npf(args):
    """NPF: one planned load of an NPF snapshot, or of a pf dump converted (docs/guide-npf.md)."""
    from ansible_collections.netbsd.pf.plugins.module_utils.npf_operations import (  # pylint: disable=import-outside-toplevel
        capture_time, restore_npf,
    )
    if args.max_age is not None:
        captured = capture_time(args.file)
        if captured is not None and time.time() - captured > args.max_age:
            _say(args, "not restoring %s: captured %d s ago, more than --max-age %d s"
                 % (args.file, time.time() - captured, args.max_age), always=True)
            return EXIT_OK
    report = restore_npf(args.file, device_path=args.npf_device, age=args.age, limit_policy=args.limit_policy,
                         restore_lock_file=args.restore_lock_file, check_mode=args.dry_run,
                         fmt=_input_format(args), byte_order=args.byte_order,
                         transforms=_transforms(args, _rename_map(args.rename)))
    _say(args, "%s%d restored, %d already running, %d rejected, %d expired, %d filtered out of %d in %s (aged %d s)" % (
        "would be: " if args.dry_run else "", report["restored"], report["already_running"], report["rejected"],
        report["expired"], report["filtered"], report["read"], args.file, report["age_seconds"]))
    for rejected in report["rejected_connections"]:
        _warn("not restored (%s): %s: %s" % (rejected["reason"], rejected["connection"], rejected["why"]))
    return EXIT_OK


def cmd_restore(args):
    if _npf_chosen(args):
        return cmd_restore_npf(args)
    if args.max_age is not None:
        dump = load_dump(args.file, _input_format(args))
        _seconds, source, captured = resolve_age("auto", time.time(), header_captured_at=dump.header_captured_at,
                                                 file_mtime=dump.mtime)
        if captured is not None and time.time() - captured > args.max_age:
            _say(args, "not restoring %s: captured %d s ago (%s), more than --max-age %d s"
                 % (args.file, time.time() - captured, source, args.max_age), always=True)
            return EXIT_OK
    report = restore_file(
        args.file, fmt=_input_format(args), byte_order=args.byte_order, transforms=_transforms(args, _rename_map(args.rename)),
        age=args.age, on_conflict=args.on_conflict, limit_policy=args.limit_policy, lock=args.lock,
        lease=args.lease, lease_file=args.lease_file, restore_lock_file=args.restore_lock_file, check_mode=args.dry_run,
        device_path=args.device, progress=args.progress, purge_wait=args.purge_wait)
    _end_progress(args)
    for warning in report.get("warnings", ()):
        _warn(warning)
    _say(args, "%s%d restored, %d already present, %d rejected, %d expired, %d filtered out of %d states in %s (aged %d s)" % (
        "would be: " if args.dry_run else "", report["restored"], report["already_present"], report["rejected"],
        report["expired"], report["filtered"], report["total"], args.file, report["age_seconds"]))
    for rejected in report.get("rejected_states", ()):
        _warn("rejected record %d (%s): %s" % (rejected["record"], rejected["state"], rejected["reason"]))
    if report.get("rejected_states_truncated"):
        _warn("more rejected states not listed")
    return EXIT_INCOMPLETE if report["rejected"] else EXIT_OK


# --- show, convert, lock, unlock ---------------------------------------------------------------

def _read_for_show(args):
    """The records of the file to show and what to say about it; errors name the file."""
    try:
        with open_dump(args.file, _input_format(args), args.byte_order) as reader:
            block = b"".join(bytes(chunk) for chunk in reader.blocks(verify=True))
            info = {"file": args.file, "format": reader.format, "byte_order": reader.byte_order,
                    "states": record_count(block)}
            metadata = (reader.header or {}).get("metadata") or {}
    except DUMP_ERRORS as exc:
        message = str(exc)
        raise CommandError(message if message.startswith(args.file) else "%s: %s" % (args.file, message))
    for key in ("captured_at", "hostname"):
        if key in metadata:
            info[key] = metadata[key]
    return block, info


def cmd_show_npf(args):
    """An NPF snapshot file: its header and counts, or every connection (--list) as npf_snapshot prints them."""
    from ansible_collections.netbsd.pf.plugins.module_utils.npf_operations import inspect_npf_file  # pylint: disable=import-outside-toplevel
    info, snapshot = inspect_npf_file(args.file)
    if args.list:
        sys.stdout.write(snapshot.to_text())
        return EXIT_OK
    summary = snapshot.summary()
    if args.json:
        info["summary"] = summary
        sys.stdout.write(json.dumps(info, indent=2, sort_keys=True, default=str) + "\n")
        return EXIT_OK
    for key in sorted(info):
        _out("%s: %s" % (key, info[key]))
    _out("valid: %d, invalid: %d" % (summary["valid"], summary["invalid"]))
    for name, count in sorted(summary["by_state"].items()):
        _out("  %-26s %8d" % (name, count))
    return EXIT_OK


def cmd_show(args):
    if args.file and not args.format and file_kind(args.file) == "npf":
        return cmd_show_npf(args)
    if args.file:
        block, info = _read_for_show(args)
        byte_order = info["byte_order"]
    else:
        byte_order = Abi.host().byte_order
        with PfDevice(args.device) as device:
            block = device.get_states()     # a view of the reply buffer: no copy of the table
            status = device.get_status()
            info = {"device": args.device, "byte_order": byte_order, "states": record_count(block),
                    "running": status["running"], "state_limit": device.get_limit(),
                    "lock": lease_view(args.lease_file)}
    if args.list:
        sys.stdout.write(format_block(block, byte_order, shown=True))
        return EXIT_OK
    counts = summarize_views(state_views(block, byte_order))
    if args.json:
        info["by_interface_protocol"] = dict(("%s %s" % key, count) for key, count in sorted(counts.items()))
        sys.stdout.write(json.dumps(info, indent=2, sort_keys=True, default=str) + "\n")
        return EXIT_OK
    for key in sorted(info):
        if key == "lock":
            lock = info[key]
            if lock.get("locked_by_lease"):
                _out("lock: held under lease %s (%s s left)" % (lock.get("token"), lock.get("remaining_seconds")))
            else:
                _out("lock: %s" % (lock.get("message") or lock.get("state")))
        elif key == "captured_at" and not isinstance(info[key], str):
            # The header checked it: epoch seconds, or else an ISO 8601 string shown as it is.
            _out("captured_at: %s" % time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(info[key])))
        else:
            _out("%s: %s" % (key, info[key]))
    for (ifname, proto), count in sorted(counts.items()):
        _out("  %-16s %-10s %8d" % (shown_text(ifname), proto, count))
    return EXIT_OK


def cmd_convert(args):
    _check_compress(args)
    result = convert_dump(args.source, args.dest, args.format, byte_order=args.to_byte_order, compress=args.compress,
                          src_format=canonical_format(args.from_format) if args.from_format else None,
                          text_byte_order=args.byte_order, progress=args.progress)
    _end_progress(args)
    _say(args, "%d states of %s %s (%s, %s-endian)" % (
        result["count"], args.source, _written(result, args.dest), args.format, result["byte_order"]))
    return EXIT_OK


def cmd_lock(args):
    if not args.lease:
        raise CommandError("refusing to lock without a lease (--lease SECONDS > 0): nothing would ever unlock the table")
    lock_table(args.device, args.lease, args.lease_file, holder=PROG)
    _say(args, "state table locked; the lease unlocks it in %d s (pfstate unlock ends it now)" % args.lease)
    return EXIT_OK


def cmd_unlock(args):
    _before, released = unlock_table(args.device, args.lease_file)
    _say(args, "state table unlocked%s" % ("; lease released" if released else ""))
    return EXIT_OK


# --- command line ---------------------------------------------------------------------------

# Output goes through the streams directly: ansible-test's pylint forbids print() in module_utils.
def _out(text, stream=None):
    (stream or sys.stdout).write(_CONTROL.sub(lambda match: "\\x%02x" % ord(match.group()), text) + "\n")


def _say(args, message, always=False):
    if always or not args.quiet:
        _out(message, sys.stderr if always else sys.stdout)


def _progress_bar(args):
    """A ProgressBar on stderr for the long commands, when stderr is a terminal and output is wanted; else None."""
    if args.command not in ("dump", "restore", "convert") or args.quiet:
        return None
    isatty = getattr(sys.stderr, "isatty", None)
    return ProgressBar(sys.stderr) if isatty is not None and isatty() else None


def _end_progress(args):
    """End the bar's line before anything else is printed."""
    if args.progress is not None:
        args.progress.close()


def _warn(message):
    _out("%s: warning: %s" % (PROG, message), sys.stderr)


def _positive_int(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def _add_filter_options(parser):
    group = parser.add_argument_group("state selection (every given criterion must match)")
    group.add_argument("-i", "--interface", action="append", metavar="IF", help="interface name (repeatable); floating states are on 'all'")
    group.add_argument("-p", "--proto", action="append", metavar="PROTO", help="protocol name or number (repeatable)")
    group.add_argument("--family", choices=("inet", "inet6"), help="address family")
    group.add_argument("--network", action="append", metavar="CIDR", help="network matched against lan, gwy or ext (repeatable)")
    group.add_argument("--port", action="append", type=int, metavar="PORT", help="port of lan, gwy or ext (repeatable)")


def _add_compress_option(parser):
    parser.add_argument("--no-compress", dest="compress", action="store_false",
                        help="write a native file without zlib: about 3x the bytes, written several times faster")


def _add_lease_options(parser):
    parser.add_argument("--lease", type=_positive_int, default=DEFAULT_LEASE_SECONDS, metavar="SECONDS",
                        help="a watchdog unlocks the table after this many seconds (default %(default)s)")
    parser.add_argument("--lease-file", default=DEFAULT_LEASE_FILE, metavar="FILE",
                        help="lease record shared with the netbsd.pf modules (default %(default)s)")


def build_parser():
    parser = argparse.ArgumentParser(
        prog=PROG, description="Save, restore, show and convert the pf(4) state table of NetBSD (a pfs(8) replacement).",
        epilog="Exit status: 0 success, 1 failure, 2 usage error, 3 restore with states refused by the kernel.")
    parser.add_argument("-d", "--device", default=DEFAULT_DEVICE, help="pf device (default %(default)s)")
    parser.add_argument("--firewall", choices=("pf", "npf", "auto"), default="pf",
                        help="dump and restore pf's states (the default), NPF's connections, or those of the one "
                             "present and filtering (auto)")
    parser.add_argument("--npf-device", default=DEFAULT_NPF_DEVICE, help="NPF device (default %(default)s)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print errors and warnings only")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    dump = commands.add_parser("dump", help="write the state table to a file (like pfs -W)")
    dump.add_argument("file", help="output file (pfstate show -l prints the table as pfs text)")
    dump.add_argument("-F", "--format", choices=FORMAT_CHOICES, default=NATIVE, help="file format (default %(default)s)")
    _add_compress_option(dump)
    dump.add_argument("-L", "--lock", choices=("during", "hold", "none"), default="during",
                      help="lock the table while reading it (during, the default), keep it locked for a reboot "
                           "that follows (hold, needs a lease), or not at all (none)")
    _add_lease_options(dump)
    _add_filter_options(dump)
    dump.set_defaults(handler=cmd_dump)

    restore = commands.add_parser("restore", help="add the states of a file to the table (like pfs -R)")
    restore.add_argument("file")
    restore.add_argument("-F", "--format", choices=FORMAT_CHOICES, help="file format (default: detected)")
    restore.add_argument("-B", "--byte-order", choices=("little", "big"), help="byte order of a pfs binary file (default: detected)")
    restore.add_argument("--age", default="auto", help="seconds to take off every state, auto (time since the capture) or none")
    restore.add_argument("--max-age", type=_positive_int, metavar="SECONDS",
                         help="do nothing (exit 0) when the capture is older than this (used at boot)")
    restore.add_argument("--on-conflict", choices=("skip", "fail"), default="skip",
                         help="states colliding with different ones in the table: skip them or add nothing")
    restore.add_argument("--limit-policy", choices=("refuse", "fit"), default="refuse",
                         help="when the state limit leaves too little room: add nothing, or add the most valuable states")
    restore.add_argument("-L", "--lock", choices=("during", "none"), default="during", help="lock the table while adding")
    restore.add_argument("--purge-wait", type=_positive_int, default=DEFAULT_PURGE_WAIT, metavar="SECONDS",
                         help="at the state limit with removed states not yet freed, wait this long for the kernel's "
                              "purge, the table unlocked meanwhile (0: never wait; default %(default)s)")
    restore.add_argument("--rename", action="append", metavar="OLD=NEW", help="rename an interface (repeatable)")
    restore.add_argument("-n", "--dry-run", action="store_true", help="only say what would happen")
    restore.add_argument("--restore-lock-file", metavar="FILE",
                         help="lock that serialises restores on this host, the same for every restore whatever its "
                              "lease file (default /var/run/netbsd_pf_restore.lock)")
    _add_lease_options(restore)
    _add_filter_options(restore)
    restore.set_defaults(handler=cmd_restore)

    show = commands.add_parser("show", help="summarise the table, a dump file or an NPF snapshot file")
    show.add_argument("file", nargs="?", help="dump file (default: the live table)")
    show.add_argument("-F", "--format", choices=FORMAT_CHOICES, help="file format (default: detected)")
    show.add_argument("-B", "--byte-order", choices=("little", "big"), help="byte order of a pfs binary file")
    show.add_argument("-l", "--list", action="store_true", help="print every state, as pfs prints them")
    show.add_argument("--json", action="store_true", help="machine-readable summary")
    show.add_argument("--lease-file", default=DEFAULT_LEASE_FILE, metavar="FILE", help="lease record to report on")
    show.set_defaults(handler=cmd_show)

    convert = commands.add_parser("convert", help="rewrite a dump in another format or byte order")
    convert.add_argument("source")
    convert.add_argument("dest", help="output file")
    convert.add_argument("--from-format", choices=FORMAT_CHOICES, help="format of SOURCE (default: detected)")
    convert.add_argument("-B", "--byte-order", choices=("little", "big"), help="byte order in which to read a pfs text SOURCE")
    convert.add_argument("-F", "--format", choices=FORMAT_CHOICES, default=NATIVE, help="format of DEST (default %(default)s)")
    convert.add_argument("-T", "--to-byte-order", choices=("little", "big"),
                         help="byte order of DEST (default: that of SOURCE); the host that restores it must have it")
    _add_compress_option(convert)
    convert.set_defaults(handler=cmd_convert)

    lock = commands.add_parser("lock", help="lock the state table under a lease (like pfs -l, but it cannot be forgotten)")
    _add_lease_options(lock)
    lock.set_defaults(handler=cmd_lock)

    unlock = commands.add_parser("unlock", help="unlock the state table and release the lease (like pfs -u)")
    unlock.add_argument("--lease-file", default=DEFAULT_LEASE_FILE, metavar="FILE", help="lease record to release")
    unlock.set_defaults(handler=cmd_unlock)
    return parser


def main(argv=None):
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    previous = {}
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) == signal.SIG_IGN:
            continue            # nohup: the command goes on, as the caller asked
        try:
            previous[signum] = signal.signal(signum, _terminate)
        except ValueError:      # not the main thread (tests): the defaults stay
            pass
    args.progress = _progress_bar(args)
    try:
        return args.handler(args)
    except PfStateError as exc:
        _end_progress(args)
        _out("%s: %s" % (PROG, exc), sys.stderr)
        return EXIT_FAILURE
    except (IOError, OSError) as exc:
        _end_progress(args)
        where = " %s" % exc.filename if getattr(exc, "filename", None) else ""
        _out("%s:%s %s" % (PROG, where, exc.strerror or exc), sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        _end_progress(args)
        _out("%s: interrupted" % PROG, sys.stderr)
        return 128 + signal.SIGINT
    except _Terminated as exc:
        _end_progress(args)
        _out("%s: terminated by signal %d" % (PROG, exc.args[0]), sys.stderr)
        return 128 + exc.args[0]
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
