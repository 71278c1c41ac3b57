"""``pfstate dump`` against the in-process pf emulator: the library's share against ``cp`` + fsync.

    python bench/bench_dump_cli.py [--states 1000000] [--rounds 3]

Fills an emulated kernel (tests/pfemu, host ABI) behind the patched os.open/fcntl.ioctl, as
bench/pfbench.py does, then per round runs ``pfstate_cli.main(["dump", ...])`` for pfs binary
native (zlib, the default) and native --no-compress, each followed by ``cp`` and ``cp`` + ``sync FILE`` of the file it
wrote.  The emulator's time (its DIOCGETSTATES is per-record Python; a kernel's is a memcpy)
is taken out: "library" is the command's wall time less the time spent in the emulator, the
figure the issue's "within 3x cp + fsync" target is judged on.  The command's start-up is
not included (bench/bench_cli.py measures that).  Wall times: run on a quiet machine.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# pylint: disable=wrong-import-position
from pfbench import RECORD_SIZE, _Setattr, _timed_kernel, _warm_page_cache, import_collection  # noqa: E402

# Native dumps are compressed (zlib) unless --no-compress.
CASES = (("pfs_binary", ["-F", "pfs_binary"]), ("native zlib", ["-F", "native"]),
         ("native plain", ["-F", "native", "--no-compress"]))


def _seconds(argv):
    started = time.perf_counter()
    subprocess.run(argv, check=True)
    return time.perf_counter() - started


def main(argv=None):
    # pylint: disable=too-many-locals,import-outside-toplevel
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--states", type=int, default=1000000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    import_collection()
    from ansible_collections.netbsd.pf.plugins.module_utils import pfstate_cli
    from ansible_collections.netbsd.pf.tests.pfemu.inprocess import PfDeviceRouter
    from ansible_collections.netbsd.pf.tests.pfemu.kernel import Kernel
    from ansible_collections.netbsd.pf.tests.pfemu.structs import host_abi

    emulator = {}
    kernel = _timed_kernel(Kernel(abi=host_abi(), seed=1, state_limit=2 * args.states), emulator)
    kernel.fill(args.states, seed=1)
    PfDeviceRouter(kernel).install(_Setattr)
    print("load average %.2f %.2f %.2f; %d states; %d rounds" % (os.getloadavg() + (args.states, args.rounds)))
    samples = {}
    with tempfile.TemporaryDirectory(prefix="pfdump.") as folder:
        _warm_page_cache(folder, args.states * RECORD_SIZE)
        lease_file = os.path.join(folder, "lease")
        for _round in range(args.rounds):
            for name, options in CASES:
                path = os.path.join(folder, name.replace(" ", "_"))
                emulator.clear()
                started = time.perf_counter()
                if pfstate_cli.main(["-q", "dump"] + options + ["--lease-file", lease_file, path]) != 0:
                    raise SystemExit("pfstate dump failed")
                wall = time.perf_counter() - started
                library = wall - sum(emulator.values())
                copy = os.path.join(folder, "copy")
                cp = _seconds(["cp", path, copy])
                os.unlink(copy)
                cp_fsync = _seconds(["sh", "-c", 'cp "$1" "$2" && sync "$2"', "sh", path, copy])
                os.unlink(copy)
                samples.setdefault(name, []).append((wall, library, cp, cp_fsync, os.path.getsize(path)))
                os.unlink(path)
    print("%-12s %8s %9s %8s %11s %12s %14s" % ("case", "wall s", "library s", "cp s", "cp+fsync s", "lib/cp+fsync",
                                                "wall/cp+fsync"))
    for name, runs in samples.items():
        wall, library, cp, cp_fsync = (statistics.median(run[i] for run in runs) for i in range(4))
        ratio = statistics.median(run[1] / run[3] for run in runs)
        print("%-12s %8.3f %9.3f %8.3f %11.3f %11.2fx %13.2fx" % (
            name, wall, library, cp, cp_fsync, ratio, statistics.median(run[0] / run[3] for run in runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
