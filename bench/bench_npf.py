"""NPF save and restore of N connections (default 5,000, what one 4 MiB load holds) in process.

    python bench/bench_npf.py [--connections 5000] [--rounds 3]

An NPF emulator (tests/npfemu, host ABI) behind ``npfdev.HostSyscalls``, booted with pass
rules and filled with connections as traffic makes them (TCP established and UDP, 20% IPv6).
Per round: ``npf_operations.dump_npf`` (one SAVE, decode, native file with zlib, staged and
committed), an emulated reboot with the configuration reloaded, then ``restore_npf`` (read and
check the file, plan, one LOAD, 16 lookups). The emulator's time (its ioctls are Python, a
kernel's are not) is taken out: "library" is the wall time less the time inside the emulator.
Prints medians, and the counts of the last restore.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# pylint: disable=wrong-import-position
from pfbench import import_collection  # noqa: E402


def main(argv=None):
    # pylint: disable=too-many-locals,import-outside-toplevel
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args(argv)
    import_collection()
    from ansible_collections.netbsd.pf.plugins.module_utils import npfdev
    from ansible_collections.netbsd.pf.plugins.module_utils.npf_operations import dump_npf, restore_npf
    from ansible_collections.netbsd.pf.tests.npfemu import NpfKernel
    from ansible_collections.netbsd.pf.tests.npfemu.generate import generate_connections
    from ansible_collections.netbsd.pf.tests.npfemu.inprocess import make_syscalls

    kernel = NpfKernel()
    in_kernel = [0.0]
    real_ioctl = kernel.ioctl

    def timed_ioctl(*args):
        started = time.perf_counter()
        try:
            return real_ioctl(*args)
        finally:
            in_kernel[0] += time.perf_counter() - started

    kernel.ioctl = timed_ioctl
    npfdev.HostSyscalls = lambda: make_syscalls(kernel)
    rules = {"rules": [{"name": "pass-wm0", "attr": 0x13, "ifname": "wm0"},
                       {"name": "pass-wm1", "attr": 0x13, "ifname": "wm1"}]}

    def boot():
        kernel.reboot()
        with npfdev.NpfDevice() as device:
            device.load(rules)

    def measured(call):
        in_kernel[0] = 0.0
        started, cpu = time.perf_counter(), time.process_time()
        result = call()
        wall = time.perf_counter() - started
        return result, wall, wall - in_kernel[0], time.process_time() - cpu

    figures = {"dump": [], "restore": []}
    with tempfile.TemporaryDirectory(prefix="bench-npf.") as work:
        path = os.path.join(work, "npf.pfstate")
        boot()
        kernel.add_connections(generate_connections(options.connections, seed=1))
        for _round in range(options.rounds):
            dumped, wall, library, cpu = measured(lambda: dump_npf(path))
            figures["dump"].append((wall, library, cpu))
            boot()
            restored, wall, library, cpu = measured(lambda: restore_npf(path, limit_policy="fit",
                                                                        restore_lock_file=os.path.join(work, "lock")))
            figures["restore"].append((wall, library, cpu))
            os.unlink(path)
    print("%d connections, %d bytes in the native file (zlib), load request %d bytes, %d rounds"
          % (options.connections, dumped["bytes"], restored["request_size"], options.rounds))
    print("restore: %d restored, %d over the 4 MiB cap, %d expired, %d invalid, verified %d"
          % (restored["restored"], restored["over_limit"], restored["expired"], restored["invalid"],
             restored["verified"]))
    print("| path | wall s | library s (emulator taken out) | connections/s (library) |")
    print("|---|---:|---:|---:|")
    for name, count in (("dump (SAVE + file)", dumped["count"]), ("restore (file + plan + LOAD)", restored["read"])):
        rows = figures[name.split()[0]]
        wall = statistics.median(row[0] for row in rows)
        library = statistics.median(row[1] for row in rows)
        print("| %s | %.3f | %.3f | %d |" % (name, wall, library, count / library if library else 0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
