"""Profile one benchmark case with cProfile (stdlib) against the in-process emulator.

    python bench/profile_case.py dump pfs_binary|pfs_text|native_zlib|native_raw [--states N]
    python bench/profile_case.py parse pfs_text [--states N]

Prints the 25 most expensive functions by cumulative and by own time.
"""

import argparse
import cProfile
import os
import pstats
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pfbench import DUMP_CASES, RECORD_SIZE, _Setattr, _warm_page_cache, import_collection  # noqa: E402  pylint: disable=wrong-import-position


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("dump", "parse"))
    parser.add_argument("case", choices=[case[0] for case in DUMP_CASES])
    parser.add_argument("--states", type=int, default=100000)
    args = parser.parse_args()
    import_collection()
    # pylint: disable=import-outside-toplevel
    from ansible_collections.netbsd.pf.plugins.module_utils import operations
    from ansible_collections.netbsd.pf.plugins.module_utils.formats import open_dump
    from ansible_collections.netbsd.pf.tests.pfemu.inprocess import PfDeviceRouter
    from ansible_collections.netbsd.pf.tests.pfemu.kernel import Kernel
    from ansible_collections.netbsd.pf.tests.pfemu.structs import host_abi

    kernel = Kernel(abi=host_abi(), seed=1, state_limit=2 * args.states)
    kernel.fill(args.states, seed=1)
    PfDeviceRouter(kernel).install(_Setattr)
    _name, fmt, compress = next(case for case in DUMP_CASES if case[0] == args.case)
    with tempfile.TemporaryDirectory(prefix="pfprofile.") as directory:
        path = os.path.join(directory, "dump")
        lease_file = os.path.join(directory, "lease")
        _warm_page_cache(directory, args.states * RECORD_SIZE)

        def dump():
            return operations.dump_states(path, fmt=fmt, compress=compress, lock="during", lease=60, lease_file=lease_file)

        def parse():
            with open_dump(path) as reader:
                return reader.verify()

        dump()      # a first, unmeasured dump: warms the page cache and, for parse, makes the file
        profiler = cProfile.Profile()
        profiler.runcall(dump if args.what == "dump" else parse)
    stats = pstats.Stats(profiler)
    stats.sort_stats("cumulative").print_stats(25)
    stats.sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
