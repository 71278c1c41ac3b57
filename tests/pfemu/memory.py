"""User address spaces the emulated kernel copies in from and out to.

Both classes offer ``copyin(address, nbytes) -> bytes`` and ``copyout(address, data)``.
Either call raises ``OSError(EFAULT)`` without touching memory when any byte of the range is
not mapped with the needed permission, like copyin(9)/copyout(9) on an unmapped page.
"""

import ctypes
import errno
import os
import weakref

PAGE_SIZE = 4096


def _efault(address, nbytes):
    return OSError(errno.EFAULT, "%s (user range 0x%x+%d is not mapped)" % (os.strerror(errno.EFAULT), address, nbytes))


class HostMemory(object):
    """The calling process's real memory, with mappings taken from /proc/self/maps.

    A snapshot of the mappings is read once per ioctl (create one instance per call): a wrong
    pointer from the client then fails with EFAULT instead of crashing the test process.
    Without /proc (not Linux) every non-NULL address is trusted.
    """

    def __init__(self):
        self._readable = []
        self._writable = []
        self._checked = self._load_maps()

    def _load_maps(self):
        try:
            with open("/proc/self/maps") as maps:
                lines = maps.readlines()
        except OSError:
            return False
        for line in lines:
            fields = line.split()
            start, end = (int(bound, 16) for bound in fields[0].split("-"))
            if fields[1][0] == "r":
                self._readable.append((start, end))
            if fields[1][1] == "w":
                self._writable.append((start, end))
        self._readable = _merge(self._readable)
        self._writable = _merge(self._writable)
        return True

    def _check(self, ranges, address, nbytes):
        if address <= 0 or nbytes < 0:
            raise _efault(address, nbytes)
        if not self._checked:
            return
        end = address + nbytes
        for start, stop in ranges:
            if start <= address < stop:
                if end <= stop:
                    return
                break
        raise _efault(address, nbytes)

    def copyin(self, address, nbytes):
        if nbytes == 0:
            return b""
        self._check(self._readable, address, nbytes)
        return ctypes.string_at(address, nbytes)

    def copyout(self, address, data):
        nbytes = len(data)
        if nbytes == 0:
            return
        self._check(self._writable, address, nbytes)
        if isinstance(data, bytes):
            ctypes.memmove(address, data, nbytes)
        else:
            view = memoryview(data).cast("B")
            source = (ctypes.c_char * nbytes).from_buffer_copy(view) if view.readonly else (ctypes.c_char * nbytes).from_buffer(view)
            ctypes.memmove(address, source, nbytes)


def _merge(ranges):
    """Join adjacent mappings so a buffer spanning two of them is one valid range."""
    merged = []
    for start, end in sorted(ranges):
        if merged and merged[-1][1] == start:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


class UserBuffer(bytearray):
    """A bytearray that can be weakly referenced, so a dropped buffer becomes unmapped."""


class SimulatedMemory(object):
    """A fake user address space for a kernel of a foreign ABI (e.g. ILP32 or big-endian).

    ``alloc`` hands out page-aligned addresses below 4 GiB with an unmapped guard page after
    every buffer, so overruns fault like they would on a real system. A buffer stays mapped
    while the caller keeps a reference to it.
    """

    FIRST_ADDRESS = 0x10000

    def __init__(self):
        self._next = self.FIRST_ADDRESS
        self._mappings = {}  # start address -> (size, weakref to UserBuffer)

    def alloc(self, size):
        if size < 0:
            raise ValueError("negative allocation size")
        buffer = UserBuffer(size)
        address = self._next
        pages = (max(size, 1) + PAGE_SIZE - 1) // PAGE_SIZE
        self._next += (pages + 1) * PAGE_SIZE
        if self._next >= 1 << 32:
            raise MemoryError("simulated 32-bit user address space exhausted")
        self._mappings[address] = (size, weakref.ref(buffer))
        return address, buffer

    def _find(self, address, nbytes):
        for start in list(self._mappings):
            size, ref = self._mappings[start]
            buffer = ref()
            if buffer is None:
                del self._mappings[start]
                continue
            if start <= address and address + nbytes <= start + size:
                return buffer, address - start
        raise _efault(address, nbytes)

    def copyin(self, address, nbytes):
        if nbytes == 0:
            return b""
        buffer, offset = self._find(address, nbytes)
        return bytes(buffer[offset:offset + nbytes])

    def copyout(self, address, data):
        nbytes = len(data)
        if nbytes == 0:
            return
        buffer, offset = self._find(address, nbytes)
        buffer[offset:offset + nbytes] = data
