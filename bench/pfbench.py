"""Benchmarks of the netbsd.pf library against the in-process pf emulator.

    python bench/pfbench.py [--sizes 10000,100000,1000000] [--runs-small 5] [--runs-large 3] [--out DIR] [--dump-only]

Each run is a child process (``pfbench.py child ...``) that fills an emulated kernel of the
host ABI (tests/pfemu Kernel behind the patched os.open/fcntl.ioctl, like the unit-test
fixture), then measures every case once with a hot page cache.  The parent prints the median
of the runs per case and writes everything as JSON (bench/results/).

Memory: the emulator's own table (records plus its key dictionaries) lives in the same
process as the code under test.  Before each case the child resets the kernel's peak-RSS
mark (``echo 5 > /proc/self/clear_refs``, Linux >= 4.0) and reads VmRSS; the figure reported
is VmHWM after the case minus that baseline: the memory the case itself added at its peak.

Emulator time: ``Kernel.ioctl`` is wrapped to add up the time spent inside the emulated
kernel per request, so restore figures can be split into library and emulator shares (the
emulator inserts states one at a time in Python; a real kernel does that in C).
"""

import argparse
import ctypes
import gc
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def import_collection():
    """Put the directory holding ansible_collections/netbsd/pf on sys.path: NETBSD_PF_COLLECTIONS
    (set by bench/run.sh), else what tools/collections-path.sh finds for this checkout."""
    collections = os.environ.get("NETBSD_PF_COLLECTIONS") or subprocess.run(
        [os.path.join(REPO, "tools", "collections-path.sh")], check=True,
        stdout=subprocess.PIPE, universal_newlines=True).stdout.strip()
    sys.path.insert(0, collections)


RECORD_SIZE = 240
_LIBC = ctypes.CDLL(None)
# A fixed mmap threshold: glibc would otherwise raise it after every large free and keep
# later big buffers on the heap, where freed memory stays resident and blurs the baseline.
CHILD_ENVIRONMENT = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
DUMP_CASES = (
    # (case name, format option, compress)
    ("pfs_binary", "pfs_binary", False),
    ("pfs_text", "pfs_text", False),
    ("native_zlib", "native", True),
    ("native_raw", "native", False),
)
CONVERSIONS = (
    # (case name, source dump case, target format option, compress)
    ("pfs_binary->native_zlib", "pfs_binary", "native", True),
    ("native_zlib->pfs_text", "native_zlib", "pfs_text", False),
    ("pfs_text->pfs_binary", "pfs_text", "pfs_binary", False),
    ("native_raw->native_zlib", "native_raw", "native", True),
)


# --- child: one run at one size ------------------------------------------------------------

def _status_kib(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError("no %s in /proc/self/status" % field)


class MemoryProbe:
    """Peak RSS added by a piece of work, on top of what the process already holds."""

    def __init__(self):
        gc.collect()
        _LIBC.malloc_trim(0)    # give freed heap pages back, so the baseline holds only live data
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")   # reset VmHWM to the current RSS
        self.baseline_kib = _status_kib("VmRSS")

    def added_mib(self):
        return (_status_kib("VmHWM") - self.baseline_kib) / 1024.0


class _Setattr:
    """The one method of pytest's monkeypatch that PfDeviceRouter.install uses."""

    @staticmethod
    def setattr(target, name, value):
        setattr(target, name, value)


def _timed_kernel(kernel, emulator_seconds):
    """Wrap kernel.ioctl to add up the time spent in the emulator per request name."""
    ioctl = kernel.ioctl
    names = kernel.layout.requests

    def timed_ioctl(handle, request, arg, memory):
        started = time.perf_counter()
        try:
            return ioctl(handle, request, arg, memory)
        finally:
            name = names.get(request, hex(request))
            emulator_seconds[name] = emulator_seconds.get(name, 0.0) + time.perf_counter() - started

    kernel.ioctl = timed_ioctl
    return kernel


def _warm_page_cache(workdir, size):
    """Write and delete a scratch file of four times ``size`` bytes.

    In a virtual machine the first use of a guest page is several times slower than later
    uses (the hypervisor backs it on first touch): 240 MB written to a new file take ~1 s
    the first time and ~0.12 s on pages that were used and freed before.  A long-running
    host has touched all its memory; warming up enough pages for the reply buffer, the
    emulator's own copy and the file keeps that effect off whichever case comes first.
    """
    scratch = os.path.join(workdir, "warm-up")
    chunk = b"\0" * (1 << 20)
    with open(scratch, "wb") as handle:
        for _offset in range(0, 4 * size + len(chunk), len(chunk)):
            handle.write(chunk)
    os.unlink(scratch)


def _beside_a_fork(work):
    """work() while a forked child that only waits shares this process's memory."""
    child = os.fork()
    if child == 0:
        try:
            signal.pause()
        finally:
            os._exit(0)
    try:
        return work()
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)


def _measure(work):
    """(seconds, peak MiB added, result of work())."""
    probe = MemoryProbe()
    started = time.perf_counter()
    result = work()
    return time.perf_counter() - started, probe.added_mib(), result


def run_child(states, seed, workdir, dump_only=False):
    # pylint: disable=too-many-locals,import-outside-toplevel
    import_collection()
    from ansible_collections.netbsd.pf.plugins.module_utils import operations, restore
    from ansible_collections.netbsd.pf.plugins.module_utils.formats import open_dump
    from ansible_collections.netbsd.pf.plugins.module_utils.pfdev import PfDevice
    from ansible_collections.netbsd.pf.tests.pfemu.inprocess import PfDeviceRouter
    from ansible_collections.netbsd.pf.tests.pfemu.kernel import Kernel
    from ansible_collections.netbsd.pf.tests.pfemu.structs import host_abi

    result = {"states": states, "cases": {}}
    cases = result["cases"]
    emulator = {}

    def new_kernel():
        return _timed_kernel(Kernel(abi=host_abi(), seed=seed, state_limit=2 * states), emulator)

    started = time.perf_counter()
    kernel = new_kernel()
    kernel.fill(states, seed=seed)
    router = PfDeviceRouter(kernel)
    router.install(_Setattr)
    gc.collect()
    result["fill_seconds"] = time.perf_counter() - started
    result["rss_after_fill_mib"] = _status_kib("VmRSS") / 1024.0
    result["table_mib"] = states * RECORD_SIZE / 1048576.0
    lease_file = os.path.join(workdir, "lease")
    lock_file = os.path.join(workdir, "restore.lock")
    _warm_page_cache(workdir, states * RECORD_SIZE)

    def add_case(name, seconds, peak_mib, count, **extra):
        emulator_share = sum(emulator.values())
        case = {"seconds": seconds, "states_per_s": count / seconds if seconds else None, "peak_rss_added_mib": peak_mib,
                "emulator_seconds": emulator_share, "library_seconds": seconds - emulator_share,
                "emulator_setlck_seconds": emulator.get("DIOCSETLCK", 0.0)}
        emulator.clear()
        case.update(extra)
        cases[name] = case

    # The bare copy the lock window is compared with: size query + DIOCGETSTATES + reading the view.
    with PfDevice("/dev/pf") as device:
        emulator.clear()
        seconds, peak, view = _measure(device.get_states)
        add_case("bare_getstates", seconds, peak, len(view) // RECORD_SIZE)
        del view
        # The same beside a forked child, which is what a locked dump runs next to: the lease
        # watchdog is a fork of the dumping process, so while it lives every page the emulator
        # writes to (it patches creation/expire of each record it exports) is copied on write.
        # A kernel's table is not in the dumping process; this is the like-for-like baseline.
        emulator.clear()
        seconds, peak, view = _measure(lambda: _beside_a_fork(device.get_states))
        add_case("bare_getstates_beside_a_fork", seconds, peak, len(view) // RECORD_SIZE)
        del view
        # What the emulator itself adds while copying out: it slices its table (a Python copy of the
        # whole reply) where a kernel would memcpy.  Measured into a buffer that is already resident.
        size = device.state_table_size()
        address, memory = device.syscalls.alloc(size + RECORD_SIZE)
        arg = device._states_arg(size + RECORD_SIZE, address)  # pylint: disable=protected-access
        device._ioctl("DIOCGETSTATES", arg)  # pylint: disable=protected-access
        emulator.clear()
        seconds, peak, _none = _measure(lambda: device._ioctl("DIOCGETSTATES", arg))  # pylint: disable=protected-access
        add_case("emulator_copyout_transient", seconds, peak, states)
        del memory

    paths = {}
    for name, fmt, compress in DUMP_CASES:
        path = paths[name] = os.path.join(workdir, "dump." + name)
        if os.path.exists(path):
            os.unlink(path)
        seconds, peak, dumped = _measure(lambda: operations.dump_states(
            path, fmt=fmt, compress=compress, lock="during", lease=60, lease_file=lease_file))
        add_case("dump/" + name, seconds, peak, dumped["count"], bytes=dumped["bytes"],
                 lock_window_ms=dumped["lock_window_ms"])

    # The cp floor: best of three, with and without an fsync of the copy (the dump fsyncs its file).
    copy_path = os.path.join(workdir, "cp.copy")
    for name, commands in (("cp_binary_size", [["cp", paths["pfs_binary"], copy_path]]),
                           ("cp_fsync_binary_size", [["cp", paths["pfs_binary"], copy_path], ["sync", copy_path]])):
        timings = []
        for _attempt in range(3):
            started = time.perf_counter()
            for command in commands:
                subprocess.run(command, check=True)
            timings.append(time.perf_counter() - started)
            os.unlink(copy_path)
        cases[name] = {"seconds": min(timings), "bytes": os.path.getsize(paths["pfs_binary"])}

    if dump_only:
        result["child_max_rss_mib"] = _status_kib("VmHWM") / 1024.0
        return result

    def read_verify(path):
        with open_dump(path) as reader:
            return reader.verify()

    for name, _fmt, _compress in DUMP_CASES:
        seconds, peak, count = _measure(lambda: read_verify(paths[name]))
        add_case("read_verify/" + name, seconds, peak, count)
        seconds, peak, loaded = _measure(lambda: restore.load_dump(paths[name], text_byte_order=sys.byteorder))
        add_case("load_for_restore/" + name, seconds, peak, len(loaded.block) // RECORD_SIZE)
        del loaded

    for name, source, fmt, compress in CONVERSIONS:
        dest = os.path.join(workdir, "convert.out")
        if os.path.exists(dest):
            os.unlink(dest)
        seconds, peak, converted = _measure(lambda: operations.convert_dump(paths[source], dest, fmt, compress=compress))
        add_case("convert/" + name, seconds, peak, converted["count"], bytes=converted["bytes"])
    os.unlink(dest)

    # Restores go into fresh kernels: drop the filled one first (its memory is the baseline no more).
    router.kernel = None
    del kernel
    half_path = os.path.join(workdir, "half.pfs_binary")
    with open(paths["pfs_binary"], "rb") as whole, open(half_path, "wb") as half:
        header = whole.read(4)
        count = states // 2
        half.write(count.to_bytes(4, sys.byteorder) if header else b"")
        half.write(whole.read(count * RECORD_SIZE))

    def restore_into(target, path):
        router.kernel = target
        return restore.restore_file(path, fmt="pfs-binary", age="none", lock="during", lease=60, lease_file=lease_file,
                                    restore_lock_file=lock_file)

    for name, prefill in (("restore/empty_table", None), ("restore/half_present", half_path)):
        target = new_kernel()
        if prefill:
            restore_into(target, prefill)
        emulator.clear()
        seconds, peak, report = _measure(lambda: restore_into(target, paths["pfs_binary"]))
        add_case(name, seconds, peak, states, restored=report["restored"], skipped=report.get("skipped"),
                 rejected=report.get("rejected"), states_after=report["states_after"], add_calls=report["add_calls"])
        router.kernel = None
        del target
        gc.collect()
    result["child_max_rss_mib"] = _status_kib("VmHWM") / 1024.0
    return result


# --- parent: runs, medians, tables -------------------------------------------------------------

def machine_facts():
    model = "unknown"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu_model": model, "cpus_online": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)), "loadavg_at_start": os.getloadavg(),
        "memory_mib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 1048576,
        "python": platform.python_version(), "implementation": platform.python_implementation(),
        "kernel": platform.release(), "byte_order": sys.byteorder,
    }


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def aggregate(runs):
    cases = {}
    for name in runs[0]["cases"]:
        entries = [run["cases"][name] for run in runs]
        merged = {}
        for key in entries[0]:
            if all(isinstance(entry.get(key), (int, float)) for entry in entries):
                merged[key] = _median([entry[key] for entry in entries])
            else:
                merged[key] = entries[0][key]
        merged["runs"] = len(entries)
        cases[name] = merged
    return cases


def targets(size, cases):
    """The targets of docs/performance.md for one size (meaningful at 1M states).

    "library" figures leave out what only the emulator costs: its time inside DIOCGETSTATES
    (per-record Python where a kernel copies with memcpy) and the transient copy of the whole
    reply it makes while copying out.
    """
    dump = cases["dump/pfs_binary"]
    table_mib = size * RECORD_SIZE / 1048576.0
    cp_seconds = cases["cp_binary_size"]["seconds"]
    transient = cases["emulator_copyout_transient"]["peak_rss_added_mib"]
    goals = {
        "binary_dump_vs_cp": {"ratio": dump["seconds"] / cp_seconds, "target": 1.5},
        "binary_dump_library_vs_cp": {"ratio": dump["library_seconds"] / cp_seconds, "target": 1.5},
        "binary_dump_library_vs_cp_fsync": {
            "ratio": dump["library_seconds"] / cases["cp_fsync_binary_size"]["seconds"], "target": 1.5},
        "lock_window_vs_bare_copy": {"ratio": dump["lock_window_ms"] / 1000.0 / cases["bare_getstates"]["seconds"],
                                     "target": 1.2},
        "lock_window_vs_bare_copy_beside_a_fork": {
            "ratio": dump["lock_window_ms"] / 1000.0 / cases["bare_getstates_beside_a_fork"]["seconds"], "target": 1.2},
        "binary_dump_peak_rss_vs_table": {"ratio": dump["peak_rss_added_mib"] / table_mib, "target": 1.3},
        "binary_dump_library_peak_rss_vs_table": {"ratio": (dump["peak_rss_added_mib"] - transient) / table_mib,
                                                  "target": 1.3},
        "text_dump_states_per_s": {"value": cases["dump/pfs_text"]["states_per_s"], "target": 250000},
    }
    if "read_verify/pfs_text" in cases:
        goals["text_parse_states_per_s"] = {"value": cases["read_verify/pfs_text"]["states_per_s"], "target": 250000}
    return goals


def _fmt(value, digits=3):
    if value is None:
        return "-"
    if isinstance(value, float):
        return ("%.*f" % (digits, value)) if abs(value) < 1000 else "{:,.0f}".format(value)
    return "{:,}".format(value) if isinstance(value, int) else str(value)


def print_table(size, cases, goals):
    print("\n## %s states (median of %d runs)\n" % ("{:,}".format(size), next(iter(cases.values()))["runs"]))
    print("| case | seconds | states/s | peak RSS added MiB | emulator s | library s | bytes | lock window ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, case in cases.items():
        print("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
            name, _fmt(case.get("seconds")), _fmt(case.get("states_per_s"), 0), _fmt(case.get("peak_rss_added_mib"), 1),
            _fmt(case.get("emulator_seconds")), _fmt(case.get("library_seconds")), _fmt(case.get("bytes")),
            _fmt(case.get("lock_window_ms"), 1)))
    print("\n| target | measured | goal | met |\n|---|---:|---:|---|")
    for name, goal in goals.items():
        if "ratio" in goal:
            met = "yes" if goal["ratio"] <= goal["target"] else "no"
            print("| %s | %.2fx | <= %.1fx | %s |" % (name, goal["ratio"], goal["target"], met))
        else:
            met = "yes" if goal["value"] >= goal["target"] else "no"
            print("| %s | %s | >= %s | %s |" % (name, _fmt(goal["value"], 0), _fmt(goal["target"]), met))
    sys.stdout.flush()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", nargs="?", default="parent", choices=("parent", "child"))
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--runs-small", type=int, default=5, help="runs below 1M states")
    parser.add_argument("--runs-large", type=int, default=3, help="runs at 1M states and more")
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--states", type=int, help="child: table size")
    parser.add_argument("--workdir", help="child: scratch directory")
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "results"))
    parser.add_argument("--dump-only", action="store_true", help="only the dump cases (and their cp and lock baselines)")
    args = parser.parse_args(argv)

    if args.mode == "child":
        json.dump(run_child(args.states, args.seed, args.workdir, args.dump_only), sys.stdout)
        return 0

    os.makedirs(args.out, exist_ok=True)
    report = {"machine": machine_facts(), "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "sizes": {}}
    print("# netbsd.pf benchmarks: %(cpu_model)s, %(cpus_usable)d usable cores, Python %(python)s" % report["machine"])
    for size in [int(s) for s in args.sizes.split(",")]:
        runs = []
        for run in range(args.runs_large if size >= 1000000 else args.runs_small):
            workdir = tempfile.mkdtemp(prefix="pfbench.", dir=args.out)
            try:
                child = subprocess.run([sys.executable, os.path.abspath(__file__), "child", "--states", str(size),
                                        "--seed", str(args.seed + run), "--workdir", workdir]
                                       + (["--dump-only"] if args.dump_only else []),
                                       check=True, stdout=subprocess.PIPE, env=CHILD_ENVIRONMENT)
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
            runs.append(json.loads(child.stdout))
            print("  %s states, run %d: fill %.1f s, child peak RSS %.0f MiB" % (
                "{:,}".format(size), run + 1, runs[-1]["fill_seconds"], runs[-1]["child_max_rss_mib"]), file=sys.stderr)
        cases = aggregate(runs)
        goals = targets(size, cases)
        report["sizes"][str(size)] = {"cases": cases, "targets": goals, "runs": runs}
        print_table(size, cases, goals)
    report["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    path = os.path.join(args.out, "bench-%s.json" % time.strftime("%Y%m%d-%H%M%S"))
    with open(path, "w") as handle:
        json.dump(report, handle, indent=1, sort_keys=True)
    shutil.copyfile(path, os.path.join(args.out, "latest.json"))
    print("\nJSON: %s" % path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
