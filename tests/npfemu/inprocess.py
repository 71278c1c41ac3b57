"""Plugging an emulated NPF kernel into a test process.

``make_syscalls(kernel)`` returns the Syscalls interface that ``NpfDevice`` takes
(open/close/ioctl/alloc plus read/munmap for the kernel's reply mappings) over a simulated
32-bit address space, so a kernel of any ABI (ILP32, big-endian) can be driven from here.
The address space counts reply mappings: ``syscalls.memory.live_replies`` must be empty
after every client call (the client unmaps each reply exactly once).
"""

import errno
import itertools
import os

from ..pfemu.memory import SimulatedMemory

DEVICE_PATH = "/dev/npf"


class ReplyMemory(SimulatedMemory):
    """A simulated address space where the kernel can also map replies (uvm_mmap_anon)."""

    def __init__(self):
        super(ReplyMemory, self).__init__()
        self.live_replies = {}  # address -> (length, buffer): mapped by the kernel, not yet unmapped
        self.unmapped = 0

    def map_reply(self, data):
        address, buffer = self.alloc(len(data))
        buffer[:] = data
        self.live_replies[address] = (len(data), buffer)
        return address

    def munmap(self, address, length):
        mapping = self.live_replies.get(address)
        if mapping is None or mapping[0] != length:
            raise OSError(errno.EINVAL, "munmap of 0x%x+%d: not a reply mapping" % (address, length))
        del self.live_replies[address]
        self.unmapped += 1


class EmulatedSyscalls(object):
    """Syscalls of an NpfDevice over an NpfKernel."""

    def __init__(self, kernel, device_path=DEVICE_PATH):
        self.kernel = kernel
        self.device_path = device_path
        self.memory = ReplyMemory()
        self._handles = {}
        self._numbers = itertools.count(3)
        self.requests = []  # request numbers in the order they were issued

    def open(self, path, flags):
        if os.path.normpath(path) != self.device_path:
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        handle = self.kernel.open(flags)
        fd = next(self._numbers)
        self._handles[fd] = handle
        return fd

    def close(self, fd):
        if self._handles.pop(fd, None) is None:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))

    def ioctl(self, fd, request, arg):
        handle = self._handles.get(fd)
        if handle is None:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        self.requests.append(request)
        self.kernel.ioctl(handle, request, arg, self.memory)

    def alloc(self, size):
        return self.memory.alloc(size)

    def read(self, address, length):
        return self.memory.copyin(address, length)

    def munmap(self, address, length):
        self.memory.munmap(address, length)


def make_syscalls(kernel):
    """Syscalls for ``NpfDevice(abi=..., syscalls=make_syscalls(kernel))``."""
    return EmulatedSyscalls(kernel)
