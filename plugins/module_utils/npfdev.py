# -*- coding: utf-8 -*-
# Copyright: netbsd.pf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Client of NetBSD's /dev/npf (NPF reference sections 2 and 6.1).

Supported: the NPF of NetBSD 9.2 and later, 10.x and -current (NPF_VERSION 22 with the 2020
code, "N20" in the reference). The version probe recognises and refuses the proplib
generation (NetBSD 7 and 8) and the 2019 code of NetBSD 9.0 ("N19"), which also says 22.

Requests that carry an nvlist pass an ``nvlist_ref_t``: the request is packed into memory of
our own; on success the kernel maps its reply into this process and writes its address and
length back into the argument, and the reply must be read and then unmapped exactly once.
On failure the kernel returns the errno alone and maps nothing.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import os
import struct

from ansible_collections.netbsd.pf.plugins.module_utils.abi import IOC_IN, IOC_INOUT, IOC_OUT, IOCPARM_MASK, Abi
from ansible_collections.netbsd.pf.plugins.module_utils import pfdev
from ansible_collections.netbsd.pf.plugins.module_utils.errors import PfStateError
from ansible_collections.netbsd.pf.plugins.module_utils.npf_nvlist import NvlistError, decode, encode

NPF_VERSION = 22
NPF_PROPLIB_VERSIONS = (17, 19)
NPF_IOC_GROUP = ord("N")
# NPF_IOCTL_DATA_LIMIT: the kernel refuses requests of this many packed bytes or more.
NPF_REQUEST_LIMIT = 4 * 1024 * 1024
# A reply is only ever what the kernel packed: refuse absurd lengths before reading them.
NPF_REPLY_LIMIT = 1 << 31
NPF_STATS_COUNT = 21
NPF_STATS_NAMES = (
    "pass_default", "pass_ruleset", "pass_conn", "block_default", "block_ruleset", "conn_create", "conn_destroy",
    "nat_create", "nat_destroy", "invalid_state", "invalid_state_tcp1", "invalid_state_tcp2", "invalid_state_tcp3",
    "race_conn", "race_nat", "fragments", "reassembly", "reassfail", "error", "nbuf_noncontig", "nbuf_contig_fail",
)

# NetBSD's errno numbers (sys/errno.h). The low ones equal Linux's; 63, 75 and 86 do not, so
# replies are named from this table and never from the controller's os.strerror().
EPERM, ENOENT, ESRCH, EIO, E2BIG, ENOMEM, EFAULT, EBADF, EACCES, EEXIST = 1, 2, 3, 5, 7, 12, 14, 9, 13, 17
ENXIO, EINVAL, ENOTTY, ENAMETOOLONG, EPROGMISMATCH, ENOTSUP = 6, 22, 25, 63, 75, 86
NETBSD_ERRNO_NAMES = {
    EPERM: "EPERM", ENOENT: "ENOENT", ESRCH: "ESRCH", EIO: "EIO", ENXIO: "ENXIO", E2BIG: "E2BIG", EBADF: "EBADF",
    ENOMEM: "ENOMEM", EACCES: "EACCES", EFAULT: "EFAULT", EEXIST: "EEXIST", EINVAL: "EINVAL", ENOTTY: "ENOTTY",
    ENAMETOOLONG: "ENAMETOOLONG", EPROGMISMATCH: "EPROGMISMATCH", ENOTSUP: "ENOTSUP",
}

_GENERIC_MESSAGES = {
    EPERM: "refused by kauth: NPF needs root, and securelevel 2 or higher refuses every NPF request, "
           "even reading",
    EFAULT: "the kernel could not copy the argument or the request (bad address)",
    ENOTTY: "the kernel does not know this request (not an NPF device, or an NPF older than NetBSD 9.2)",
    EPROGMISMATCH: "the kernel's NPF version differs from the request's (%d)" % NPF_VERSION,
    EBADF: "the /dev/npf descriptor is not open",
}
_REQUEST_MESSAGES = {
    ("open", ENOENT): "no /dev/npf: NPF is not in the kernel or the device node is missing "
                      "(cd /dev && sh MAKEDEV npf; or load the npf module)",
    ("open", ENXIO): "no /dev/npf: NPF is not in the kernel (add 'pseudo-device npf' or load the npf module)",
    ("open", EACCES): "permission denied opening /dev/npf (run as root)",
    ("open", EPERM): "refused opening /dev/npf by kauth: run as root, at securelevel 1 or lower",
    ("IOC_NPF_LOAD", E2BIG): "the request is 4 MiB or larger, or has too many rules, tables or procedures",
    ("IOC_NPF_LOAD", EINVAL): "the kernel refused the configuration or one connection record (or a 65th interface "
                              "name since the last boot or flush); one bad record fails the whole load and nothing "
                              "was changed",
    ("IOC_NPF_LOAD", EEXIST): "the configuration has two rules or two tables of the same name",
    ("IOC_NPF_LOAD", ENOTSUP): "a rule carries code of a type other than BPF",
    ("IOC_NPF_LOAD", ENAMETOOLONG): "a table name is 32 characters or longer",
    ("IOC_NPF_SAVE", ENOMEM): "the kernel could not pack its state; on NetBSD 10 this happens while any "
                              "connection restored with a NAT entry lives (its addresses were imported with "
                              "length 0) and lasts until those connections expire",
    ("IOC_NPF_SAVE", EINVAL): "the kernel refused the save request (a kernel without NetBSD's empty-request "
                              "workaround)",
    ("IOC_NPF_CONN_LOOKUP", ESRCH): "no active connection has this key",
    ("IOC_NPF_CONN_LOOKUP", EINVAL): "the lookup key is missing or malformed",
    ("IOC_NPF_CONN_LOOKUP", ENOMEM): "the kernel could not pack the connection (a connection restored with a "
                                     "NAT entry on NetBSD 10)",
    ("IOC_NPF_SWITCH", EEXIST): "NPF is already started",
    ("IOC_NPF_SWITCH", ENOENT): "no packet filter hooks to attach to",
}


class NpfError(PfStateError):
    """A /dev/npf operation failed: .errno (NetBSD number or None), .request (ioctl name or "open")."""

    def __init__(self, err, request, message=None):
        self.errno = err
        self.request = request
        if message is None:
            message = (_REQUEST_MESSAGES.get((request, err)) or _GENERIC_MESSAGES.get(err)
                       or "failed with NetBSD errno %s" % err)
        if err:
            message = "%s (%s)" % (message, NETBSD_ERRNO_NAMES.get(err, "errno %d" % err))
        super(NpfError, self).__init__("%s: %s" % (request, message))


class NpfUnsupported(NpfError):
    """The kernel runs an NPF generation this collection does not drive (reference 6.1)."""

    def __init__(self, generation, message):
        self.generation = generation
        super(NpfUnsupported, self).__init__(None, "IOC_NPF_VERSION", message)


def _ioc(direction, number, length):
    return direction | ((length & IOCPARM_MASK) << 16) | (NPF_IOC_GROUP << 8) | number


def npf_ioctls(abi):
    """Request numbers for ``abi`` (nvlist_ref_t is 3 words: buf, len, flags)."""
    ref_size = 24 if abi.pointer_size == 8 else 12
    return {
        "IOC_NPF_VERSION": _ioc(IOC_OUT, 100, 4),
        "IOC_NPF_SWITCH": _ioc(IOC_IN, 101, 4),
        "IOC_NPF_LOAD": _ioc(IOC_INOUT, 102, ref_size),
        "IOC_NPF_STATS": _ioc(IOC_IN, 104, abi.pointer_size),
        "IOC_NPF_SAVE": _ioc(IOC_OUT, 105, ref_size),
        "IOC_NPF_CONN_LOOKUP": _ioc(IOC_INOUT, 108, ref_size),
        # Number 106 is unused since NetBSD 7: the N20 dispatcher answers EINVAL, older ones ENOTTY.
        "probe": _ioc(IOC_INOUT, 106, ref_size),
    }


class HostSyscalls(pfdev.HostSyscalls):
    """pf's real system calls, plus reading and unmapping the reply NPF maps into the caller."""

    def read(self, address, length):
        return ctypes.string_at(address, length)

    def munmap(self, address, length):
        # The process's own symbols include libc's: no library lookup that could fail.
        libc = ctypes.CDLL(None, use_errno=True)
        libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
        if libc.munmap(address, length) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))


class NpfDevice:
    """An open /dev/npf. Opened read-only, as npfctl does: NPF checks kauth, not the open mode."""

    def __init__(self, path="/dev/npf", abi=None, syscalls=None):
        self.abi = abi or Abi.host()
        self.syscalls = syscalls or HostSyscalls()
        self.path = path
        self.ioctls = npf_ioctls(self.abi)
        self._ref_format = self.abi.prefix + ("QQi4x" if self.abi.pointer_size == 8 else "IIi")
        self._int_format = self.abi.prefix + "i"
        try:
            self.fd = self.syscalls.open(path, os.O_RDONLY)
        except OSError as exc:
            message = _REQUEST_MESSAGES.get(("open", exc.errno))
            raise NpfError(exc.errno, "open", "%s: %s" % (path, message) if message else
                           "%s: %s" % (path, os.strerror(exc.errno)))

    def close(self):
        if self.fd is not None:
            fd, self.fd = self.fd, None
            self.syscalls.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _ioctl(self, name, arg):
        if self.fd is None:
            raise NpfError(EBADF, name, "the device is closed")
        try:
            self.syscalls.ioctl(self.fd, self.ioctls[name], arg)
        except OSError as exc:
            raise NpfError(exc.errno, name)

    # --- plain requests ------------------------------------------------------

    def version(self):
        arg = bytearray(4)
        self._ioctl("IOC_NPF_VERSION", arg)
        return struct.unpack(self._int_format, arg)[0]

    def probe(self):
        """Check that the kernel runs the supported generation; returns NPF_VERSION or raises NpfUnsupported."""
        version = self.version()
        if version in NPF_PROPLIB_VERSIONS:
            raise NpfUnsupported("proplib", "the kernel runs NPF version %d (NetBSD 7 or 8, proplib transport), "
                                            "which this collection does not support: it needs NetBSD 9.2 or later "
                                            "(NPF version %d)" % (version, NPF_VERSION))
        if version != NPF_VERSION:
            raise NpfUnsupported("unknown", "the kernel runs NPF version %d; this collection supports version %d "
                                            "(NetBSD 9.2 to 10 and -current)" % (version, NPF_VERSION))
        try:
            self._ioctl("probe", bytearray(struct.calcsize(self._ref_format)))
        except NpfError as exc:
            if exc.errno == EINVAL:
                return version
            if exc.errno == ENOTTY:
                raise NpfUnsupported("2019", "the kernel runs the 2019 NPF code of NetBSD 9.0 (version %d, but "
                                             "another connection record and error convention), which this "
                                             "collection does not support: upgrade to NetBSD 9.2 or later"
                                     % version)
            raise
        raise NpfUnsupported("unknown", "the kernel accepted an unused NPF request number: not an NPF this "
                                        "collection knows")

    def stats(self):
        """The 21 NPF statistics counters by name."""
        size = NPF_STATS_COUNT * 8
        address, memory = self.syscalls.alloc(size)
        arg = bytearray(struct.pack(self.abi.prefix + self.abi.pointer_code, address))
        self._ioctl("IOC_NPF_STATS", arg)
        values = struct.unpack_from(self.abi.prefix + "%dQ" % NPF_STATS_COUNT, memoryview(memory).cast("B")[:size])
        return dict(zip(NPF_STATS_NAMES, values))

    # --- nvlist requests -----------------------------------------------------

    def _nvlist_request(self, name, request):
        """Send ``request`` (a dict, or None for an empty argument) and return the reply dict."""
        keep = None
        if request is None:
            arg = bytearray(struct.calcsize(self._ref_format))
        else:
            request = dict(request)
            request.setdefault("version", NPF_VERSION)
            request["operation"] = self.ioctls[name]
            packed = encode(request, self.abi.byte_order)
            if len(packed) >= NPF_REQUEST_LIMIT:
                raise NpfError(E2BIG, name, "the request packs to %d bytes; the kernel refuses %d bytes or more"
                               % (len(packed), NPF_REQUEST_LIMIT))
            address, keep = self.syscalls.alloc(len(packed))
            memoryview(keep).cast("B")[:len(packed)] = packed
            arg = bytearray(struct.pack(self._ref_format, address, len(packed), 0))
        self._ioctl(name, arg)
        del keep
        reply_address, reply_length = struct.unpack(self._ref_format, arg)[:2]
        if not reply_address or not reply_length:
            raise NpfError(None, name, "the kernel reported success but returned no reply")
        try:
            if reply_length > NPF_REPLY_LIMIT:
                raise NpfError(None, name, "the kernel's reply claims %d bytes" % reply_length)
            packed_reply = self.syscalls.read(reply_address, reply_length)
        finally:
            self.syscalls.munmap(reply_address, reply_length)
        try:
            reply = decode(packed_reply, source="%s reply" % name)
        except NvlistError as exc:
            raise NpfError(None, name, str(exc))
        err = reply.get("errno", 0)
        if err:
            raise NpfError(err, name)
        return reply

    def save(self):
        """The whole NPF state (configuration and connections) as the kernel exports it."""
        return self._nvlist_request("IOC_NPF_SAVE", None)

    def load(self, config):
        """Replace the whole configuration (and, if it carries conn-list, every connection)."""
        return self._nvlist_request("IOC_NPF_LOAD", config)

    def conn_lookup(self, key):
        """The active connection that has ``key`` (a key dict as in reference 3.3), with its ``flow``."""
        return self._nvlist_request("IOC_NPF_CONN_LOOKUP", {"key": key})
