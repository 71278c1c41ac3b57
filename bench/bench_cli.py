"""The ``pfstate`` command as a whole process: CPU time, wall time and peak RSS per path.

    python bench/bench_cli.py [--states 100000] [--rounds 3] [--tree NAME=COLLECTIONS_DIR ...]

Each case runs the real command (a launcher like the reboot role's, ``main(sys.argv[1:])``)
in a child process and reads the child's own rusage (``os.wait4``): user+sys CPU seconds and
peak RSS.  ``cp``, ``cp`` + ``sync FILE`` and ``cat`` of the same bytes run in the same round
as floors.  With several ``--tree`` options (e.g. ``before=/tmp/old/build after=build``) the
rounds alternate between the trees, so both see the same load; each figure is the median over
the rounds.  Start-up is ``import`` of the command (``pfstate_cli``) and of a module
(``states_dump``) against a bare interpreter.  CPU time is what the figures of record use:
on a shared machine wall time carries the other jobs' load.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pfbench import REPO, import_collection  # noqa: E402  pylint: disable=wrong-import-position

RECORD_SIZE = 240
LAUNCHER = """import sys
sys.path.insert(0, %r)
from ansible_collections.netbsd.pf.plugins.module_utils.pfstate_cli import main
sys.exit(main(sys.argv[1:]))
"""
PYTHON = sys.executable   # run it as the real interpreter (a venv link), not a pyenv shim: a shim adds its own start-up


def _run(argv, stdout=subprocess.DEVNULL):
    """(wall s, cpu s, peak RSS MiB) of one child process; fails loudly on a non-zero exit."""
    wall = time.perf_counter()
    child = subprocess.Popen(argv, stdout=stdout, stderr=subprocess.PIPE)
    _pid, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - wall
    child.returncode = os.waitstatus_to_exitcode(status)
    errors = child.stderr.read().decode(errors="replace")
    child.stderr.close()
    if child.returncode:
        raise SystemExit("%s exited %d: %s" % (" ".join(argv), child.returncode, errors))
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024.0


def _inputs(folder, states, seed):
    """pfs binary, pfs text and native raw files of ``states`` generated records."""
    from ansible_collections.netbsd.pf.plugins.module_utils.formats import write_dump  # pylint: disable=import-outside-toplevel
    from ansible_collections.netbsd.pf.tests.pfemu.generate import generate_records  # pylint: disable=import-outside-toplevel
    records = generate_records(states, seed, sys.byteorder, now=1700000000)
    paths = {}
    for name, fmt in (("bin", "pfs-binary"), ("txt", "pfs-text"), ("native", "native")):
        paths[name] = os.path.join(folder, "in." + name)
        write_dump(paths[name], fmt, [records], sys.byteorder, count=states, compress="none")
    return paths


def _cases(launcher, paths, out):
    """(name, argv, states/s counts) of one round's command cases."""
    pfstate = [PYTHON, launcher, "-q", "convert"]
    return [
        ("print bin->text", pfstate + [paths["bin"], out, "-F", "pfs_text"], True),
        ("parse text->bin", pfstate + [paths["txt"], out, "-F", "pfs_binary"], True),
        ("bin->bin", pfstate + [paths["bin"], out, "-F", "pfs_binary"], True),
        ("bin->native zlib", pfstate + [paths["bin"], out, "-F", "native"], True),
        ("bin->native plain", pfstate + [paths["bin"], out, "-F", "native", "--no-compress"], True),
        ("native->bin", pfstate + [paths["native"], out, "-F", "pfs_binary"], True),
    ]


# The text codec alone, in a process of its own (start-up included): what the command adds is the rest.
CODEC_PRINT = """import sys; sys.path.insert(0, %r)
from ansible_collections.netbsd.pf.plugins.module_utils.pfs_text import format_block
with open(%r, "rb") as handle:
    handle.read(4)
    for block in iter(lambda: handle.read(4096 * 240), b""):
        format_block(block, sys.byteorder)
"""
CODEC_PARSE = """import sys; sys.path.insert(0, %r)
from ansible_collections.netbsd.pf.plugins.module_utils.pfs_text import PfsTextReader
with open(%r, "rb") as handle:
    for block in PfsTextReader(handle, sys.byteorder):
        pass
"""


def _codec(collections, paths):
    return [("codec print", [PYTHON, "-c", CODEC_PRINT % (collections, paths["bin"])]),
            ("codec parse", [PYTHON, "-c", CODEC_PARSE % (collections, paths["txt"])])]


def _floors(paths, out):
    return [
        ("cp bin", ["cp", paths["bin"], out]),
        ("cp+fsync bin", ["sh", "-c", 'cp "$1" "$2" && sync "$2"', "sh", paths["bin"], out]),
        ("cat text", ["cat", paths["txt"]]),
        ("python -c pass", [PYTHON, "-c", "pass"]),
    ]


def _imports(collections, bundle, library):
    def importing(path, module):
        return [PYTHON, "-c", "import sys; sys.path.insert(0, %r); import ansible_collections.netbsd.pf.plugins.%s"
                % (path, module)]
    return [
        ("import pfstate_cli", importing(collections, "module_utils.pfstate_cli")),
        ("import pfstate_cli from zip", importing(bundle, "module_utils.pfstate_cli")),
        ("import pfstate_cli from installed library", importing(library, "module_utils.pfstate_cli")),
        ("import states_dump", importing(collections, "modules.states_dump")),
    ]


def _prepare(collections, folder, name):
    """Byte-compile the tree (as an installed collection is) and bundle its module_utils like the reboot role
    (a zip: Python compiles its modules at every start, it cannot cache bytecode there), and install the zip
    as the role does on a target (unpacked and byte-compiled); returns the zip and the installed library."""
    plugins = os.path.join(collections, "ansible_collections", "netbsd", "pf", "plugins")
    subprocess.run([PYTHON, "-m", "compileall", "-q", plugins], check=True, stdout=subprocess.DEVNULL)
    bundle = subprocess.run([PYTHON, os.path.join(REPO, "roles", "reboot", "files", "bundle_module_utils.py"),
                             os.path.join(plugins, "module_utils")], check=True, stdout=subprocess.PIPE,
                            universal_newlines=True).stdout.strip()
    target = os.path.join(folder, "module_utils-%s.zip" % name)
    os.rename(bundle, target)
    os.rmdir(os.path.dirname(bundle))
    library = os.path.join(folder, "library-%s" % name)
    subprocess.run([PYTHON, os.path.join(REPO, "roles", "reboot", "files", "install_library.py"), target, library],
                   check=True, stdout=subprocess.DEVNULL)
    return target, library


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--states", type=int, default=100000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--tree", action="append", metavar="NAME=DIR",
                        help="a folder holding ansible_collections/netbsd/pf (default: this checkout's, as 'this')")
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "results"))
    parser.add_argument("--make-inputs", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    import_collection()
    if args.make_inputs:
        print(json.dumps(_inputs(args.make_inputs, args.states, args.seed)))
        return 0
    trees = [tuple(spec.split("=", 1)) for spec in args.tree] if args.tree else [("this", sys.path[0])]
    table_mib = args.states * RECORD_SIZE / 1048576.0
    print("load average %.2f %.2f %.2f; %d states (%.1f MiB of records); %d rounds; Python %s"
          % (os.getloadavg() + (args.states, table_mib, args.rounds, sys.version.split()[0])))
    samples = {}
    with tempfile.TemporaryDirectory() as folder:
        # Made by a child: a child forked from a big parent would report the parent's peak RSS as its own.
        paths = json.loads(subprocess.run([PYTHON, os.path.abspath(__file__), "--make-inputs", folder, "--states",
                                           str(args.states), "--seed", str(args.seed)],
                                          check=True, stdout=subprocess.PIPE).stdout)
        out = os.path.join(folder, "out")
        launchers = {}
        bundles = dict((name, _prepare(os.path.abspath(collections), folder, name)) for name, collections in trees)
        for name, collections in trees:
            launchers[name] = os.path.join(folder, "pfstate-%s.py" % name)
            with open(launchers[name], "w", encoding="utf-8") as handle:
                handle.write(LAUNCHER % os.path.abspath(collections))
        for _round in range(args.rounds):
            for tree, collections in trees:
                for case, argv, _rate in _cases(launchers[tree], paths, out) + [
                        (case, argv, False) for case, argv in _imports(os.path.abspath(collections), *bundles[tree])] + [
                        (case, argv, True) for case, argv in _codec(os.path.abspath(collections), paths)]:
                    samples.setdefault((tree, case), []).append(_run(argv))
                    if os.path.exists(out):
                        os.unlink(out)
            for case, argv in _floors(paths, out):
                samples.setdefault(("floor", case), []).append(_run(argv))
                if os.path.exists(out):
                    os.unlink(out)
    floors = dict((case, statistics.median(s[1] for s in runs)) for (tree, case), runs in samples.items() if tree == "floor")
    floors_wall = dict((case, statistics.median(s[0] for s in runs)) for (tree, case), runs in samples.items() if tree == "floor")
    rows = []
    print("%-8s %-28s %7s %7s %9s %8s %9s %-21s %s" % (
        "tree", "case", "cpu s", "wall s", "cpu st/s", "RSS MiB", "added/tbl", "cpu/floor", "cpu/codec alone"))
    for (tree, case), runs in samples.items():
        wall = statistics.median(s[0] for s in runs)
        cpu = statistics.median(s[1] for s in runs)
        rss = max(s[2] for s in runs)
        floor = {"print": "cat text", "parse": "cat text", "codec": "cat text"}.get(case.split()[0], "cp+fsync bin")
        if case.startswith("import"):
            floor = "python -c pass"
        # Peak RSS over that of importing the command: what the records cost, the interpreter aside.
        start_up = max(s[2] for s in samples.get((tree, "import pfstate_cli"), [(0, 0, 0)]))
        row = {"tree": tree, "case": case, "cpu_s": cpu, "wall_s": wall, "peak_rss_mib": rss,
               "rss_added_per_table": (rss - start_up) / table_mib, "states": args.states}
        if tree != "floor" and not case.startswith("import"):
            row["cpu_states_per_s"] = args.states / cpu
            row["cpu_ratio_to_" + floor.replace(" ", "_")] = cpu / floors[floor]
            row["wall_ratio_to_" + floor.replace(" ", "_")] = wall / floors_wall[floor]
        codec = samples.get((tree, "codec " + case.split()[0]))
        if codec and not case.startswith("codec"):
            row["cpu_ratio_to_codec_alone"] = cpu / statistics.median(s[1] for s in codec)
        if case.startswith("import"):
            row["added_ms"] = (cpu - floors[floor]) * 1000
        rows.append(row)
        if tree == "floor":
            # A child's peak RSS starts at its parent's (Linux keeps the pre-exec peak): not cp's own.
            del row["peak_rss_mib"], row["rss_added_per_table"]
        is_floor = tree == "floor"
        print("%-8s %-28s %7.3f %7.3f %9s %8s %9s %-21s %s" % (
            tree, case, cpu, wall, "%.0f" % row["cpu_states_per_s"] if "cpu_states_per_s" in row else "",
            "-" if is_floor else "%.1f" % rss, "-" if is_floor else "%.2f" % row["rss_added_per_table"],
            "" if is_floor else "%.1fx %s" % (cpu / floors[floor], floor),
            "%.2fx" % row["cpu_ratio_to_codec_alone"] if "cpu_ratio_to_codec_alone" in row else ""))
    os.makedirs(args.out, exist_ok=True)
    result_path = os.path.join(args.out, "cli-%d-%s.json" % (args.states, time.strftime("%Y%m%dT%H%M%S")))
    with open(result_path, "w", encoding="utf-8") as handle:
        json.dump({"load_average": os.getloadavg(), "states": args.states, "rounds": args.rounds, "rows": rows},
                  handle, indent=1)
    print("results: %s" % result_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
