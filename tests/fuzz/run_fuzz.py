"""Long mutation fuzzing of the dump readers (make fuzz).

    python tests/fuzz/run_fuzz.py [--inputs 100000] [--readers pfs-binary,pfs-text,native,auto]
                                  [--seed 1] [--timeout 5] [--failures DIR] [--json FILE]

For every reader: ``--inputs`` inputs, each a valid file from the collection's writers with
1-4 random mutations (tests/fuzz/harness.py), written to tmpfs and read completely.  An
input passes when it is read or refused with one of the collection's format errors; any
other exception, or a read longer than ``--timeout`` seconds, is a failure: the input is
saved under ``--failures`` with the traceback, and the exit status is 1.
"""

import argparse
import json
import os
import random
import signal
import sys
import tempfile
import time
import traceback

COLLECTIONS = os.environ.get("NETBSD_PF_COLLECTIONS")
if COLLECTIONS:
    sys.path.insert(0, COLLECTIONS)

# pylint: disable=wrong-import-position
from ansible_collections.netbsd.pf.tests.fuzz.harness import (  # noqa: E402
    READERS, check_input, mutate, mutations_for, scratch_dir, seed_files,
)


class InputTimeout(Exception):
    """A single input took longer than --timeout seconds: a hang, or close to one."""


def _alarm(_signum, _frame):
    raise InputTimeout()


def fuzz_reader(reader, seeds, inputs, rng, path, timeout, failures_dir):
    mutation_count = len(mutations_for(reader))
    counts = {"read": 0, "rejected": 0, "failed": 0}
    started = time.perf_counter()
    for number in range(inputs):
        choices = [(rng.randrange(mutation_count), rng.getrandbits(32)) for _mutation in range(rng.randint(1, 4))]
        data = mutate(rng.choice(seeds), reader, choices)
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            counts[check_input(path, data, reader)] += 1
        except Exception as exc:  # pylint: disable=broad-except
            counts["failed"] += 1
            name = os.path.join(failures_dir, "%s-%06d" % (reader, number))
            with open(name + ".input", "wb") as handle:
                handle.write(data)
            with open(name + ".txt", "w") as handle:
                handle.write("reader %s, mutations %r\n" % (reader, choices))
                handle.write("timeout\n" if isinstance(exc, InputTimeout) else traceback.format_exc())
            if counts["failed"] <= 5:
                print("  FAIL %s: %s (%s.input)" % (reader, type(exc).__name__, name), file=sys.stderr)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    seconds = time.perf_counter() - started
    counts.update(inputs=inputs, seconds=round(seconds, 2), inputs_per_s=round(inputs / seconds, 1))
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=100000, help="inputs per reader")
    parser.add_argument("--readers", default=",".join(READERS))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds one input may take")
    parser.add_argument("--failures", default=os.path.join("tests", "output", "fuzz-failures"))
    parser.add_argument("--json", help="write the figures here as JSON")
    args = parser.parse_args(argv)

    os.makedirs(args.failures, exist_ok=True)
    signal.signal(signal.SIGALRM, _alarm)
    seeds = seed_files()
    rng = random.Random(args.seed)
    results = {}
    print("| reader | inputs | read | rejected (clear error) | failed | inputs/s |")
    print("|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="pf-fuzz.", dir=scratch_dir()) as directory:
        path = os.path.join(directory, "input")
        for reader in args.readers.split(","):
            counts = fuzz_reader(reader, seeds[reader], args.inputs, rng, path, args.timeout, args.failures)
            results[reader] = counts
            print("| %s | %d | %d | %d | %d | %.0f |" % (reader, counts["inputs"], counts["read"], counts["rejected"],
                                                         counts["failed"], counts["inputs_per_s"]))
            sys.stdout.flush()
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"seed": args.seed, "readers": results}, handle, indent=1, sort_keys=True)
    failed = sum(counts["failed"] for counts in results.values())
    if failed:
        print("%d failing inputs saved in %s" % (failed, args.failures), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
