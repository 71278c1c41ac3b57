"""Command line of the pf emulator: ``python -m tests.pfemu ...`` from the repository root.

    fleet up N [--flavour local|ssh] [--states K] [--seed S] [--paramiko-hosts M] [--clock manual|system]
               [--limit L] [--abi ABI] [--hostid random|fixed] [--abi-hosts ABI,...] [--userland-cache C]
               [--firewall pf|npf|both|SPEC,...] [--npf-connections K] [--dir D]
    fleet down [--dir D]
    fleet status [--dir D]
    fleet states HOST [--dir D]      (the host's table in pfs text)
    reboot HOST [--delay SECONDS] [--wait]
    fill HOST --states K [--seed S]
    ctl HOST status | lock on|off | securelevel N | limit N | running on|off
             | fault REQUEST [--nth N] [--errno E] | advance SECONDS | grow N | purge
             | npf-fill N [--seed S] | npf-config pass|none|FILE.json | npf-boot
    userland ABI... [--cache C]      build (once) and check the userlands of hosts of other ABIs
    daemon --host-dir DIR ...        (started by ``fleet up``)
"""

import argparse
import base64
import errno
import importlib
import json
import os
import sys
import time

from . import daemon
from . import userland
from .fleet import DEFAULT_FLEET_DIR, REPO_ROOT, Fleet, FleetError

# Exit status of ``userland`` when this machine cannot build or run the userland (a test tier skips).
EXIT_UNAVAILABLE = 3


def _errno_value(text):
    """An errno given as a number or a name (ENOMEM)."""
    if text.isdigit():
        return int(text)
    try:
        return getattr(errno, text.upper())
    except AttributeError as error:
        raise argparse.ArgumentTypeError("unknown errno %r" % text) from error


def _on_off(text):
    if text not in ("on", "off"):
        raise argparse.ArgumentTypeError("expected on or off")
    return 1 if text == "on" else 0


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m tests.pfemu", description=__doc__.splitlines()[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", default=DEFAULT_FLEET_DIR, help="fleet directory (default: %(default)s)")
    commands = parser.add_subparsers(dest="command", required=True)

    fleet = commands.add_parser("fleet", help="create, inspect or remove a fleet of emulated hosts")
    fleet_commands = fleet.add_subparsers(dest="fleet_command", required=True)
    up = fleet_commands.add_parser("up", help="create N hosts (replacing any previous fleet in --dir)", parents=[common])
    up.add_argument("count", type=int)
    up.add_argument("--flavour", choices=("local", "ssh"), default="local")
    up.add_argument("--states", type=int, default=0, help="states to generate on every host")
    up.add_argument("--seed", type=int, default=0)
    up.add_argument("--paramiko-hosts", type=int, default=0, help="ssh flavour: the last M hosts use paramiko_ssh")
    up.add_argument("--abi", default="lp64-le")
    up.add_argument("--limit", type=int, help="state limit (default: max(10000, 2 * --states))")
    up.add_argument("--clock", choices=("manual", "system"), default="manual",
                    help="kernel time: manual (moves only with `ctl HOST advance` and reboots) or system")
    up.add_argument("--hostid", choices=("random", "fixed"), default="random",
                    help="random: a new pf hostid at every emulated boot, like stock NetBSD; fixed: one per host "
                         "that survives reboots, like `set hostid` in pf.conf")
    up.add_argument("--abi-hosts", type=_abi_list, default=[],
                    help="comma-separated ABIs (ilp32-le, lp64-be) of the last hosts, each running the real "
                         "Python of a Debian userland of that ABI (root; built once into --userland-cache)")
    up.add_argument("--userland-cache", help="where the userlands are cached (default: %s)"
                    % userland.default_cache_dir())
    _add_npf_up_options(up)
    fleet_commands.add_parser("down", help="stop everything the fleet started (idempotent)", parents=[common])
    fleet_commands.add_parser("status", help="print every host's status as JSON", parents=[common])
    states = fleet_commands.add_parser("states", help="print one host's state table in pfs text", parents=[common])
    states.add_argument("host")

    reboot = commands.add_parser("reboot", help="reboot one emulated host", parents=[common])
    reboot.add_argument("host")
    reboot.add_argument("--delay", type=float, default=0.0)
    reboot.add_argument("--wait", action="store_true", help="return once the host is up again")

    fill = commands.add_parser("fill", help="add generated states to one host", parents=[common])
    fill.add_argument("host")
    fill.add_argument("--states", type=int, required=True)
    fill.add_argument("--seed", type=int, default=0)

    ctl = commands.add_parser("ctl", help="inspect or change one host's kernel", parents=[common])
    ctl.add_argument("host")
    knobs = ctl.add_subparsers(dest="knob", required=True)
    knobs.add_parser("status")
    knobs.add_parser("purge", help="run the purge thread once")
    knobs.add_parser("lock", help="set the DIOCSETLCK state lock").add_argument("value", type=_on_off)
    knobs.add_parser("running", help="pf enabled or not").add_argument("value", type=_on_off)
    knobs.add_parser("securelevel").add_argument("level", type=int)
    knobs.add_parser("limit", help="state limit").add_argument("states", type=int)
    knobs.add_parser("advance", help="advance the kernel clock").add_argument("seconds", type=float)
    knobs.add_parser("grow", help="add states right before the next DIOCGETSTATES").add_argument("count", type=int)
    _add_npf_knobs(knobs)
    fault = knobs.add_parser("fault", help="make the nth next REQUEST fail with ERRNO")
    fault.add_argument("request", help="request name, e.g. DIOCADDSTATES")
    fault.add_argument("--nth", type=int, default=1)
    fault.add_argument("--errno", type=_errno_value, default=errno.EIO)

    userland_command = commands.add_parser("userland", help="build (once) and check userlands of other ABIs")
    userland_command.add_argument("abis", nargs="+", metavar="ABI")
    userland_command.add_argument("--cache", help="default: %s" % userland.default_cache_dir())

    daemon_command = commands.add_parser("daemon", help="run one host's daemon (used by fleet up)", add_help=False)
    daemon_command.add_argument("daemon_args", nargs=argparse.REMAINDER)
    return parser


def _add_npf_up_options(up):
    up.add_argument("--firewall", default="pf",
                    help="pf, npf or both on every host, or one per host, comma-separated (pf,npf,both)")
    up.add_argument("--npf-connections", type=int, default=0, help="connections to generate on every NPF host")


def _add_npf_knobs(knobs):
    npf_fill = knobs.add_parser("npf-fill", help="add N connections made by traffic to the host's NPF")
    npf_fill.add_argument("count", type=int)
    npf_fill.add_argument("--seed", type=int, default=0)
    knobs.add_parser("npf-config", help="the NPF configuration rc.d/npf loads at the next boots: a preset "
                     "(pass, none) or a JSON file (the LOAD nvlist, binaries as {\"hex\": ...})").add_argument("config")
    knobs.add_parser("npf-boot", help="run what rc.d/npf does at boot now (load the configuration, start NPF)")


def _npf_ctl_command(options):
    if options.knob == "npf-fill":
        return {"command": "npf-fill", "count": options.count, "seed": options.seed}
    if options.knob == "npf-boot":
        return {"command": "npf-boot"}
    if options.config in daemon.NPF_BOOT_PRESETS:
        return {"command": "npf-config", "preset": options.config}
    try:
        with open(options.config, encoding="utf-8") as config_file:
            return {"command": "npf-config", "config": json.load(config_file)}
    except (OSError, ValueError) as error:
        raise FleetError("%s: not a preset (%s) nor a readable JSON file: %s"
                         % (options.config, ", ".join(sorted(daemon.NPF_BOOT_PRESETS)), error)) from error


def _abi_list(text):
    return [abi for abi in text.split(",") if abi]


def _userlands(options):
    """Print the root of each asked userland; EXIT_UNAVAILABLE with the reason when one cannot be had."""
    for abi in options.abis:
        try:
            if not userland.needs_userland(abi):
                print("%s: the Pythons of this machine" % abi)
                continue
            started = time.monotonic()
            root = userland.ensure(abi, options.cache, log=print)
            probed = userland.probe(root)
        except userland.UserlandUnavailable as error:
            print("pfemu: no userland of ABI %s: %s" % (abi, error), file=sys.stderr)
            return EXIT_UNAVAILABLE
        print("%s: %s (Python %s, ready in %.1f s)" % (abi, root, probed["version"], time.monotonic() - started))
    return 0


def _ctl_command(options):
    knob = options.knob
    if knob.startswith("npf-"):
        return _npf_ctl_command(options)
    if knob in ("status", "purge"):
        return {"command": knob}
    if knob in ("lock", "running"):
        return {"command": knob, "value": options.value}
    if knob == "securelevel":
        return {"command": knob, "level": options.level}
    if knob == "limit":
        return {"command": knob, "states": options.states}
    if knob == "advance":
        return {"command": knob, "seconds": options.seconds}
    if knob == "grow":
        return {"command": knob, "count": options.count}
    return {"command": "fault", "request": options.request, "nth": options.nth, "errno": options.errno}


def _reboot(fleet, options):
    before = fleet.control(options.host, {"command": "status"})["boot_time"]
    answer = fleet.control(options.host, {"command": "reboot", "delay": options.delay})
    if options.wait:
        while True:
            time.sleep(0.2)
            status = fleet.control(options.host, {"command": "status"})
            if not status["rebooting"] and status["boot_time"] != before:
                return status
    return answer


def _collection_pfs_text():
    """The collection's pfs text writer, from ANSIBLE_COLLECTIONS_PATH (first entry) or the build/ copy.

    `fleet states` prints what a pfs_text dump of the host would hold, so that the two can be
    compared line for line; the kernel model itself never imports the collection.
    """
    root = (os.environ.get("ANSIBLE_COLLECTIONS_PATH") or "").split(os.pathsep)[0] or os.path.join(REPO_ROOT, "build")
    if not os.path.isdir(os.path.join(root, "ansible_collections", "netbsd", "pf")):
        raise FleetError("fleet states needs the collection's pfs text writer: no ansible_collections/netbsd/pf in %s "
                         "(run `make copy` or set ANSIBLE_COLLECTIONS_PATH)" % root)
    if root not in sys.path:
        sys.path.insert(0, root)
    return importlib.import_module("ansible_collections.netbsd.pf.plugins.module_utils.pfs_text")


def _print_states(fleet, host):
    answer = fleet.control(host, {"command": "states"})
    pfs_text = _collection_pfs_text()
    # shown: interface names pfs text cannot carry are escaped for the reader instead of refused.
    sys.stdout.write(pfs_text.format_block(base64.b64decode(answer["records"]), answer["byte_order"], shown=True))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["daemon"]:
        return daemon.main(argv[1:])
    options = build_parser().parse_args(argv)
    if options.command == "userland":
        return _userlands(options)
    fleet = Fleet(options.dir)
    try:
        if options.command == "fleet" and options.fleet_command == "up":
            started = time.monotonic()
            state = fleet.up(options.count, flavour=options.flavour, states=options.states, seed=options.seed,
                             paramiko_hosts=options.paramiko_hosts, abi=options.abi, state_limit=options.limit,
                             clock=options.clock, hostid=options.hostid, abi_hosts=options.abi_hosts,
                             userland_cache=options.userland_cache, firewall=options.firewall,
                             npf_connections=options.npf_connections)
            print("fleet of %d %s hosts up in %.1f s; inventory: %s" % (
                len(state["hosts"]), options.flavour, time.monotonic() - started, fleet.inventory_path()))
            return 0
        if options.command == "fleet" and options.fleet_command == "down":
            started = time.monotonic()
            fleet.down()
            print("fleet in %s down in %.1f s" % (fleet.dir, time.monotonic() - started))
            return 0
        if options.command == "fleet" and options.fleet_command == "states":
            _print_states(fleet, options.host)
            return 0
        if options.command == "fleet":
            report = fleet.status()
            if report is None:
                print("no fleet in %s" % fleet.dir, file=sys.stderr)
                return 1
            answer = report
        elif options.command == "reboot":
            answer = _reboot(fleet, options)
        elif options.command == "fill":
            answer = fleet.control(options.host, {"command": "fill", "count": options.states, "seed": options.seed})
        else:
            answer = fleet.control(options.host, _ctl_command(options))
    except FleetError as error:
        print("pfemu: %s" % error, file=sys.stderr)
        return 1
    except OSError as error:
        print("pfemu: %s" % error, file=sys.stderr)
        return 1
    print(json.dumps(answer, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
