"""Throughput of the pfs text writer and reader (states/s, one process, one core).

Generates realistic kernel-made records (tests/pfemu/generate.py), writes them as
pfs text through PfsTextWriter into a file, reads the file back with
PfsTextReader, and checks that the text read back prints to the same bytes.

    python bench/bench_text.py [--records 1000000] [--block-records 4096] [--byte-order little]

Run it where ``ansible_collections.netbsd.pf`` imports: from a checkout laid out
as .../ansible_collections/netbsd/pf, or with PYTHONPATH set to a folder that
holds ansible_collections/netbsd/pf (``make copy`` builds one in build/).
Besides wall time it prints CPU time of this process, which other load on the
machine disturbs less; the load average is printed for the record.
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pfbench import import_collection  # noqa: E402  pylint: disable=wrong-import-position

import_collection()

# pylint: disable=wrong-import-position
from ansible_collections.netbsd.pf.plugins.module_utils.pfs_text import PfsTextReader, PfsTextWriter, format_block  # noqa: E402
from ansible_collections.netbsd.pf.tests.pfemu.generate import generate_records  # noqa: E402

RECORD_SIZE = 240


def _timed(function):
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def _report(name, count, wall, cpu):
    print("%-6s %9d states  wall %7.2f s  %9.0f states/s   cpu %7.2f s  %9.0f states/s"
          % (name, count, wall, count / wall, cpu, count / cpu))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--records", type=int, default=1000000)
    parser.add_argument("--block-records", type=int, default=4096)
    parser.add_argument("--byte-order", choices=("little", "big"), default=sys.byteorder)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    print("load average %.2f %.2f %.2f; Python %s" % (os.getloadavg() + (sys.version.split()[0],)))
    records = generate_records(args.records, args.seed, args.byte_order, now=1700000000)
    step = args.block_records * RECORD_SIZE
    blocks = [records[start:start + step] for start in range(0, len(records), step)]

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "states.txt")

        def write():
            with open(path, "wb") as handle:
                writer = PfsTextWriter(handle, args.byte_order)
                for block in blocks:
                    writer.write_block(block)
            return writer.count

        written, wall, cpu = _timed(write)
        _report("write", written, wall, cpu)
        print("       %d bytes of text, %.1f bytes a state" % (os.path.getsize(path), os.path.getsize(path) / written))

        def read():
            with open(path, "rb") as handle:
                return list(PfsTextReader(handle, args.byte_order, args.block_records))

        read_blocks, wall, cpu = _timed(read)
        count = sum(len(block) for block in read_blocks) // RECORD_SIZE
        _report("read", count, wall, cpu)

        with open(path, "rb") as handle:
            text = handle.read()
    again = "".join(format_block(block, args.byte_order) for block in read_blocks).encode("latin-1")
    if count != args.records or again != text:
        sys.exit("MISMATCH: the text read back does not print to the same bytes")
    print("check  read back prints to the same %d bytes" % len(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
