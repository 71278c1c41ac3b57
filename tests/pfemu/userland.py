"""Debian userlands of other ABIs: real Pythons for emulated hosts of those ABIs.

The target-side code runs on every NetBSD port; these userlands let it run on a
32-bit little-endian and a 64-bit big-endian CPython against the fleet:

    ilp32-le   Debian i386, run natively (x86-64 kernels run i386 binaries)
    lp64-be    Debian s390x, run by qemu-user-static through binfmt_misc

Each is built once with mmdebstrap (Debian's packages only) into a cache outside
the repository (``$XDG_CACHE_HOME/netbsd-pf/userlands``, else
``~/.cache/netbsd-pf/userlands``) and reused by every fleet.  An emulated host
of such an ABI runs its interpreter in that root through a wrapper (see
``wrapper_script``) that chroots in a private mount namespace where the fleet
directory, /proc, /dev and /tmp of the machine are bind-mounted, so the
module files Ansible writes and the daemon's socket are where the host expects them.

How the daemon reaches the guest's memory: the shim in the guest Python serves
copyin/copyout itself (ctypes at the guest's own addresses, checked against the
guest's /proc/self/maps, which qemu-user rewrites for the guest), so the daemon
never has to translate guest addresses into the qemu process's address space.
"""

import os
import shlex
import shutil
import subprocess
import time

from .structs import ABIS, host_abi

SUITE = "bookworm"
DEBIAN_ARCHITECTURES = {"ilp32-le": "i386", "lp64-be": "s390x"}
# binfmt_misc entry (and the qemu-user-static file that defines it) per foreign architecture.
QEMU_BINFMT = {"s390x": "qemu-s390x"}
BINFMT_DIR = "/proc/sys/fs/binfmt_misc"
BINFMT_DEFINITIONS = "/usr/lib/binfmt.d"
READY_MARK = ".pfemu-userland-ready"
ROOT_PYTHON = "/usr/bin/python3"
BUILD_TIMEOUT = 900
PROBE = "import ctypes, sys; print(ctypes.sizeof(ctypes.c_void_p), sys.byteorder, sys.version.split()[0])"


class UserlandUnavailable(Exception):
    """A userland of the asked ABI cannot be built or run here; the message says why."""


def default_cache_dir():
    cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache_home, "netbsd-pf", "userlands")


def needs_userland(abi):
    """False for the ABI of the Python running this code (its own interpreters serve it)."""
    if abi not in ABIS:
        raise UserlandUnavailable("unknown ABI %r (expected one of %s)" % (abi, ", ".join(sorted(ABIS))))
    return abi != host_abi()


def root_path(abi, cache_dir=None):
    return os.path.join(cache_dir or default_cache_dir(), "%s-%s" % (SUITE, _architecture(abi)))


def _architecture(abi):
    try:
        return DEBIAN_ARCHITECTURES[abi]
    except KeyError:
        raise UserlandUnavailable(
            "no Debian %s architecture for ABI %s (supported: %s)"
            % (SUITE, abi, ", ".join(sorted(DEBIAN_ARCHITECTURES)))) from None


def ensure(abi, cache_dir=None, log=None):
    """The root of a working userland of ``abi``, built first if it is not cached yet."""
    architecture = _architecture(abi)
    if os.geteuid() != 0:
        raise UserlandUnavailable("building and entering a userland needs root (mmdebstrap, chroot, mounts)")
    _ensure_binfmt(architecture)
    root = root_path(abi, cache_dir)
    if not os.path.exists(os.path.join(root, READY_MARK)):
        _build(architecture, root, log)
    probed = probe(root)
    if probed["abi"] != abi:
        raise UserlandUnavailable("the Python of %s reports ABI %s, not %s" % (root, probed["abi"], abi))
    return root


def probe(root):
    """Pointer size, byte order and version of the userland's Python, run in its root."""
    result = subprocess.run(["chroot", root, ROOT_PYTHON, "-c", PROBE], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True, timeout=120, check=False)
    if result.returncode:
        raise UserlandUnavailable("the Python of %s does not run: %s" % (root, result.stderr.strip()[-400:]))
    pointer_size, byte_order, version = result.stdout.split()
    width = "lp64" if pointer_size == "8" else "ilp32"
    return {"abi": width + ("-le" if byte_order == "little" else "-be"), "version": version}


def _build(architecture, root, log):
    if not shutil.which("mmdebstrap"):
        raise UserlandUnavailable("mmdebstrap is missing: apt-get install mmdebstrap qemu-user-static")
    partial = root + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(os.path.dirname(root), exist_ok=True)
    started = time.monotonic()
    command = ["mmdebstrap", "--quiet", "--variant=apt", "--include=python3", "--architectures=" + architecture,
               SUITE, partial]
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                            timeout=BUILD_TIMEOUT, check=False)
    if result.returncode:
        shutil.rmtree(partial, ignore_errors=True)
        raise UserlandUnavailable("%s failed (%d): %s" % (" ".join(command), result.returncode,
                                                          result.stdout.strip()[-800:]))
    with open(os.path.join(partial, READY_MARK), "w", encoding="utf-8") as mark:
        mark.write("%s %s built in %.0f s\n" % (SUITE, architecture, time.monotonic() - started))
    shutil.rmtree(root, ignore_errors=True)
    os.rename(partial, root)
    if log:
        log("built the %s %s userland in %s in %.0f s" % (SUITE, architecture, root, time.monotonic() - started))


def _ensure_binfmt(architecture):
    """Register qemu-user for a foreign architecture with binfmt_misc (once per boot)."""
    name = QEMU_BINFMT.get(architecture)
    if name is None:
        return
    if not os.path.exists(os.path.join(BINFMT_DIR, "register")):
        mounted = subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", BINFMT_DIR],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, check=False)
        if mounted.returncode:
            raise UserlandUnavailable("binfmt_misc is not available (%s)" % mounted.stdout.strip())
    if os.path.exists(os.path.join(BINFMT_DIR, name)):
        return
    definition = os.path.join(BINFMT_DEFINITIONS, name + ".conf")
    try:
        with open(definition, encoding="ascii") as definition_file:
            entry = definition_file.read().strip()
    except OSError:
        raise UserlandUnavailable("%s is missing: apt-get install qemu-user-static" % definition) from None
    try:
        with open(os.path.join(BINFMT_DIR, "register"), "w", encoding="ascii") as register:
            register.write(entry)
    except OSError as error:
        raise UserlandUnavailable("cannot register %s with binfmt_misc: %s" % (name, error)) from None


def wrapper_script(root, fleet_dir, interpreter):
    """A /bin/sh script that runs ``interpreter`` (a path inside ``root``) with its arguments in ``root``.

    A private mount namespace per run (``unshare --mount``) keeps the bind mounts
    out of the machine's; the fleet directory is mounted at its own path, so every
    path of the host (module files, dumps, the daemon's socket) is the same inside.
    The userland's ready mark at / tells that the script already runs inside it.
    """
    return (
        "#!/bin/sh\n"
        "# The Python of an emulated host of another ABI, run in the userland %(root)s.\n"
        "# A command run by a module of the host already is in there (where / is no mount point to unshare).\n"
        "[ -e /%(mark)s ] && exec %(interpreter)s \"$@\"\n"
        "exec unshare --mount --propagation private /bin/sh -c '\n"
        "root=$1 fleet=$2; shift 2\n"
        "for dir in /proc /dev /tmp \"$fleet\"; do mount --rbind \"$dir\" \"$root$dir\" || exit 1; done\n"
        "exec chroot \"$root\" \"$@\"' sh %(root)s %(fleet)s %(interpreter)s \"$@\"\n"
        % {"root": shlex.quote(root), "mark": READY_MARK, "fleet": shlex.quote(fleet_dir),
           "interpreter": shlex.quote(interpreter)})


def prepare_mount_points(root, fleet_dir):
    """The fleet directory's mount point inside the root (the others exist in every Debian root)."""
    os.makedirs(root + fleet_dir, exist_ok=True)
