"""Plugging an emulated kernel into the current process, for unit tests.

Two ways:

* ``PfDeviceRouter(kernel).install(monkeypatch)`` replaces ``os.open``, ``os.close`` and
  ``fcntl.ioctl``: opening "/dev/pf" gives a real, unique descriptor (on /dev/null, same access
  mode) whose ioctls go to the kernel, which copies in and out at the real user addresses found
  in the argument structs. Every other path and descriptor goes to the real functions. This is
  for a kernel of the host's ABI.
* ``make_syscalls(kernel)`` returns an object with the Syscalls interface of
  docs/architecture.md (open/close/ioctl/alloc) over a simulated 32-bit address space, for a
  kernel of any ABI (ILP32, big-endian) that the host cannot run natively.
"""

import errno
import fcntl
import itertools
import os

from .memory import HostMemory, SimulatedMemory

DEVICE_PATH = "/dev/pf"


def _is_device(path, device_path):
    try:
        path = os.fspath(path)
    except TypeError:
        return False
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    return os.path.normpath(path) == device_path


class PfDeviceRouter(object):
    """Routes the descriptors of /dev/pf to a Kernel; everything else to the real system calls."""

    def __init__(self, kernel, device_path=DEVICE_PATH):
        self.kernel = kernel
        self.device_path = device_path
        self._real_open = os.open
        self._real_close = os.close
        self._real_ioctl = fcntl.ioctl
        self._handles = {}  # real fd -> kernel OpenFile

    def install(self, monkeypatch):
        monkeypatch.setattr(os, "open", self.open)
        monkeypatch.setattr(os, "close", self.close)
        monkeypatch.setattr(fcntl, "ioctl", self.ioctl)

    @property
    def open_descriptors(self):
        return sorted(self._handles)

    def open(self, path, flags, mode=0o777, *args, **kwargs):
        if kwargs.get("dir_fd") is not None or not _is_device(path, self.device_path):
            return self._real_open(path, flags, mode, *args, **kwargs)
        handle = self.kernel.open(flags)
        fd = self._real_open(os.devnull, (flags & os.O_ACCMODE) | os.O_CLOEXEC)
        self._handles[fd] = handle
        return fd

    def close(self, fd):
        handle = self._handles.pop(fd, None)
        if handle is not None:
            try:
                self.kernel.close(handle)
            except OSError:
                pass  # a descriptor from before a reboot: the process still owns the fd
        self._real_close(fd)

    def close_all(self):
        for fd in list(self._handles):
            self.close(fd)

    def ioctl(self, fd, request, arg=0, mutate_flag=True):
        number = fd if isinstance(fd, int) else fd.fileno()
        handle = self._handles.get(number)
        if handle is None:
            return self._real_ioctl(fd, request, arg, mutate_flag)
        memory = HostMemory()
        if isinstance(arg, int):
            self.kernel.ioctl(handle, request, arg, memory)
            return 0
        if isinstance(arg, str):
            arg = arg.encode()
        view = memoryview(arg).cast("B")
        try:
            if mutate_flag and not view.readonly:
                self.kernel.ioctl(handle, request, view, memory)
                return 0
            copy = bytearray(view)
        finally:
            view.release()  # a traceback must not keep the caller's buffer exported
        self.kernel.ioctl(handle, request, copy, memory)
        return bytes(copy)


class EmulatedSyscalls(object):
    """The Syscalls interface of docs/architecture.md over a Kernel and a simulated address space."""

    def __init__(self, kernel, device_path=DEVICE_PATH):
        self.kernel = kernel
        self.device_path = device_path
        self.memory = SimulatedMemory()
        self._handles = {}
        self._numbers = itertools.count(3)

    def open(self, path, flags):
        if not _is_device(path, self.device_path):
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        handle = self.kernel.open(flags)
        fd = next(self._numbers)
        self._handles[fd] = handle
        return fd

    def close(self, fd):
        handle = self._handles.pop(fd, None)
        if handle is None:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        self.kernel.close(handle)

    def ioctl(self, fd, request, arg):
        handle = self._handles.get(fd)
        if handle is None:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        self.kernel.ioctl(handle, request, arg, self.memory)

    def alloc(self, size):
        return self.memory.alloc(size)


def make_syscalls(kernel):
    """Syscalls for a client (``PfDevice(..., abi=..., syscalls=make_syscalls(kernel))``)."""
    return EmulatedSyscalls(kernel)
