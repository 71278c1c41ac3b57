"""Client side of the emulated /dev/pf: runs inside an emulated host's Python.

Installed (together with a two-line ``sitecustomize.py``) into the site-packages
of each emulated host's virtualenv.  It patches ``os.open``, ``os.close`` and
``fcntl.ioctl`` so that opening ``/dev/pf`` (or ``/dev/npf``) connects to the host's
pfemu daemon over a Unix socket, and ioctls on that descriptor are carried out by the
daemon's kernel model (pfemu, or npfemu for /dev/npf).  The daemon reads and writes the
caller's memory (the buffers that pointer fields of the argument point to) through this
process, the way a kernel's copyin/copyout would, and maps NPF's replies into it the way
``uvm_mmap_anon`` does: anonymous pages made here with libc's mmap, owned by no Python
object, so the client's own ``munmap`` releases them.  Every other call passes through untouched.

Also the wire protocol shared with ``tests/pfemu/daemon.py`` and a small
control client used by the host's ``bin/reboot``.

Stdlib only, Python 3.8+: it runs in every emulated host's interpreter.
"""

import ctypes
import errno
import fcntl
import json
import os
import socket
import struct
import sys
import threading

CONFIG_NAME = "pfemu_shim.json"

# Wire protocol: every message is a header (kind, a, b) followed by an optional
# payload whose length is given by the header.
HEADER = struct.Struct("!BQQ")
MSG_OPEN = 1       # client: a = open flags; answer MSG_RESULT (a = errno)
MSG_IOCTL = 2      # client: a = request, b = argument length; payload argument + memory map
MSG_COPYIN = 3     # daemon: a = address, b = length; client answers MSG_DATA then MSG_COPIED
MSG_DATA = 4       # client: b = length; payload the bytes read (zeros from a faulting page on)
MSG_COPYOUT = 5    # daemon: a = address, b = length; payload to store (no answer; a fault fails the ioctl)
MSG_RESULT = 6     # daemon: a = errno (0 = success), b = payload length; payload argument / JSON
MSG_CONTROL = 7    # client: b = length; payload a JSON command; answer MSG_RESULT with JSON
MSG_REFUSED = 8    # daemon: b = length; payload why the kernel model refused (a real kernel would crash)
MSG_IOCTL_ADDRESS = 9  # client: a = request, b = integer argument (a user address); payload memory map
MSG_COPIED = 10    # client, after the MSG_DATA payload: a = errno of the copy (0 or EFAULT), b = bytes read before it
MSG_OPEN_NPF = 11  # client: a = open flags, for /dev/npf; answer MSG_RESULT (a = errno)
MSG_MAP_REPLY = 12  # daemon: b = length; payload the packed reply to map into the caller (nvlist_copyout)
MSG_MAPPED = 13    # client: a = address of the new mapping, b = errno (0 or ENOMEM)
REGION = struct.Struct("!QQB")   # start, end, REGION_READ | REGION_WRITE
REGION_READ = 1
REGION_WRITE = 2
COUNT = struct.Struct("!I")


def recv_exact_into(sock, view):
    """Fill the writable memoryview ``view`` from ``sock`` or raise ConnectionError."""
    received = 0
    total = len(view)
    while received < total:
        got = sock.recv_into(view[received:], total - received)
        if not got:
            raise ConnectionError(errno.ECONNRESET, "pfemu daemon closed the connection")
        received += got


def recv_exact(sock, size):
    buffer = bytearray(size)
    if size:
        recv_exact_into(sock, memoryview(buffer))
    return buffer


def _drain(sock, size):
    """Read and drop ``size`` bytes, keeping the stream in step."""
    scratch = memoryview(bytearray(min(size, 1 << 20)))
    while size:
        chunk = min(size, len(scratch))
        recv_exact_into(sock, scratch[:chunk])
        size -= chunk


def send_user_memory(sock, address, size):
    """Send ``size`` bytes of this process's memory at ``address``; return how many were readable.

    The kernel reads the memory for send(2) and answers EFAULT where a page faults (copyin
    semantics), so a bad page never crashes this process. What could not be read is sent as
    zeros: the receiver always gets ``size`` bytes.
    """
    view = memoryview((ctypes.c_char * size).from_address(address)).cast("B") if size else memoryview(b"")
    sent = 0
    while sent < size:
        try:
            sent += sock.send(view[sent:])
        except OSError as error:
            if error.errno != errno.EFAULT:
                raise
            break
    readable = sent
    while sent < size:
        chunk = min(size - sent, 1 << 20)
        sock.sendall(bytes(chunk))
        sent += chunk
    return readable


def recv_user_memory(sock, address, size):
    """Store the next ``size`` bytes of ``sock`` at ``address``; return how many landed before a fault.

    recv(2) writes with copyout semantics (EFAULT at a bad page, the bytes stay queued); the
    rest is read and dropped so that the stream stays in step.
    """
    view = memoryview((ctypes.c_char * size).from_address(address)).cast("B") if size else memoryview(b"")
    received = 0
    while received < size:
        try:
            got = sock.recv_into(view[received:], size - received)
        except OSError as error:
            if error.errno != errno.EFAULT:
                raise
            break
        if not got:
            raise ConnectionError(errno.ECONNRESET, "pfemu daemon closed the connection")
        received += got
    _drain(sock, size - received)
    return received


def send_message(sock, kind, a=0, b=0, payload=b""):
    sock.sendall(HEADER.pack(kind, a, b))
    if len(payload):
        sock.sendall(payload)


def recv_header(sock):
    return HEADER.unpack(bytes(recv_exact(sock, HEADER.size)))


def read_memory_map(path="/proc/self/maps"):
    """Readable/writable address ranges of this process, adjacent ones merged.

    The daemon checks copyin/copyout addresses against them and answers EFAULT
    instead of letting a bad pointer crash the caller.  Without /proc every
    address above the first page counts as valid.
    """
    try:
        with open(path, "r", encoding="ascii") as maps:
            lines = maps.read().splitlines()
    except OSError:
        return [(4096, 2 ** 64 - 1, REGION_READ | REGION_WRITE)]
    regions = []
    for line in lines:
        fields = line.split(None, 2)
        if len(fields) < 2:
            continue
        start, end = (int(part, 16) for part in fields[0].split("-"))
        access = (REGION_READ if fields[1][0] == "r" else 0) | (REGION_WRITE if fields[1][1] == "w" else 0)
        if not access:
            continue
        if regions and regions[-1][1] == start and regions[-1][2] == access:
            regions[-1] = (regions[-1][0], end, access)
        else:
            regions.append((start, end, access))
    return regions


def encode_memory_map(regions):
    return COUNT.pack(len(regions)) + b"".join(REGION.pack(*region) for region in regions)


# Every reply mapping made in this process: (address, length). A test's client script checks
# in /proc/self/maps that the collection's NpfDevice unmapped each one.
mapped_replies = []


def map_anonymous(data):
    """uvm_mmap_anon + copyout: ``round_page(len)`` fresh read/write pages holding ``data``; their address.

    Made with libc's mmap, not Python's mmap module, so no Python object owns (and later unmaps)
    the pages: like the kernel's mapping, they live until the process munmaps them.
    """
    import mmap  # pylint: disable=import-outside-toplevel
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
    size = -(-max(len(data), 1) // mmap.PAGESIZE) * mmap.PAGESIZE
    address = libc.mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
    if address is None or address == ctypes.c_void_p(-1).value:
        raise OSError(errno.ENOMEM, os.strerror(errno.ENOMEM))
    ctypes.memmove(address, bytes(data), len(data))
    mapped_replies.append((address, len(data)))
    return address


def load_config(directory=None):
    """The shim's configuration, a JSON file next to this module."""
    directory = directory or os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(directory, CONFIG_NAME), "r", encoding="utf-8") as config_file:
        return json.load(config_file)


def control(socket_path, command):
    """Send one control command (a dict) to a pfemu daemon and return its JSON answer."""
    payload = json.dumps(command).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(socket_path)
        send_message(sock, MSG_CONTROL, 0, len(payload), payload)
        kind, error, length = recv_header(sock)
        answer = json.loads(bytes(recv_exact(sock, length)).decode()) if length else {}
    if kind != MSG_RESULT:
        raise ConnectionError(errno.EPROTO, "unexpected answer from the pfemu daemon")
    if error:
        raise OSError(error, answer.get("error") or os.strerror(error))
    return answer


class EmulatorRefusal(RuntimeError):
    """The request would crash or corrupt a real NetBSD kernel; the emulator refused to model it."""


class _OpenDevice(object):
    """One emulated /dev/pf descriptor of this process (the fd is a connected Unix socket)."""

    def __init__(self, identity):
        self.identity = identity   # (st_dev, st_ino) of the socket, to spot a recycled fd number
        self.lock = threading.Lock()


class PfShim(object):
    """Patches os.open/os.close/fcntl.ioctl of this interpreter for /dev/pf and, if given, /dev/npf."""

    def __init__(self, socket_path, device_path="/dev/pf", npf_device_path=None):
        self.socket_path = socket_path
        self.device_path = device_path
        # The open message of each emulated device path.
        self.open_kinds = {device_path: MSG_OPEN}
        if npf_device_path:
            self.open_kinds[npf_device_path] = MSG_OPEN_NPF
        self.devices = {}
        self.registry_lock = threading.Lock()
        self.real_open = os.open
        self.real_close = os.close
        self.real_ioctl = fcntl.ioctl

    def install(self):
        os.open = self.open
        os.close = self.close
        fcntl.ioctl = self.ioctl
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._after_fork_in_child)

    def _after_fork_in_child(self):
        # Locks held by other threads at fork time would never be released in the child.
        self.registry_lock = threading.Lock()
        for device in self.devices.values():
            device.lock = threading.Lock()

    def _open_kind(self, path):
        """The open message for ``path`` if it is an emulated device, else None."""
        try:
            return self.open_kinds.get(os.path.normpath(os.fsdecode(path)))
        except TypeError:
            return None

    def _lookup(self, fd):
        """The emulated device behind ``fd``, or None (also when the fd number was recycled)."""
        if not isinstance(fd, int) or fd not in self.devices:
            return None
        device = self.devices[fd]
        try:
            stat = os.fstat(fd)
            identity = (stat.st_dev, stat.st_ino)
        except OSError:
            identity = None
        if identity != device.identity:
            with self.registry_lock:
                self.devices.pop(fd, None)
            return None
        return device

    def open(self, path, flags, mode=0o777, **kwargs):
        open_kind = self._open_kind(path)
        if open_kind is None or kwargs.get("dir_fd") is not None:
            return self.real_open(path, flags, mode, **kwargs)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.socket_path)
            send_message(sock, open_kind, flags & 0xFFFFFFFF)
            kind, error, length = recv_header(sock)
        except FileNotFoundError as error:
            sock.close()
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), path) from error
        except OSError as error:
            sock.close()
            raise OSError(errno.ENXIO, os.strerror(errno.ENXIO), path) from error
        if kind == MSG_REFUSED:
            reason = bytes(recv_exact(sock, length)).decode("utf-8", "replace")
            sock.close()
            raise EmulatorRefusal("pfemu: " + reason)
        if kind != MSG_RESULT or error:
            sock.close()
            error = error or errno.ENXIO
            raise OSError(error, os.strerror(error), path)
        stat = os.fstat(sock.fileno())
        with self.registry_lock:
            self.devices[sock.fileno()] = _OpenDevice((stat.st_dev, stat.st_ino))
        return sock.detach()

    def close(self, fd):
        if self._lookup(fd) is not None:
            with self.registry_lock:
                self.devices.pop(fd, None)
        return self.real_close(fd)

    def ioctl(self, fd, request, arg=0, mutate_flag=True):
        fd = fd if isinstance(fd, int) else _fileno(fd)
        device = self._lookup(fd)
        if device is None:
            return self.real_ioctl(fd, request, arg, mutate_flag)
        if isinstance(arg, int):
            self._call(fd, device, request, arg)
            return 0
        view = memoryview(arg.encode() if isinstance(arg, str) else arg).cast("B")
        data = view.tobytes()
        result = self._call(fd, device, request, data)
        size = min(len(result), len(data))
        if mutate_flag and not view.readonly:
            # Like fcntl.ioctl on a mutable buffer: the kernel's answer lands in the caller's buffer.
            view[:size] = result[:size]
            return 0
        return bytes(result[:size]) + data[size:]

    def _call(self, fd, device, request, data):
        """Run one ioctl in the daemon; ``data`` is the argument's bytes or an integer argument."""
        memory_map = encode_memory_map(read_memory_map())
        request &= 0xFFFFFFFFFFFFFFFF
        with device.lock:
            sock = socket.socket(fileno=fd)
            finished = False
            try:
                if isinstance(data, int):
                    send_message(sock, MSG_IOCTL_ADDRESS, request, data & 0xFFFFFFFFFFFFFFFF, memory_map)
                else:
                    send_message(sock, MSG_IOCTL, request, len(data), data + memory_map)
                answer_errno, result = self._serve(sock)
                finished = True
            except ConnectionError as error:
                raise OSError(errno.ENXIO, os.strerror(errno.ENXIO)) from error
            finally:
                if not finished:
                    # Left in the middle of an exchange (refusal aside): hang up, so that the
                    # daemon does not wait under its kernel lock for an answer that never comes.
                    _shutdown(sock)
                sock.detach()
        if isinstance(result, EmulatorRefusal):
            raise result
        if answer_errno:
            raise OSError(answer_errno, os.strerror(answer_errno))
        return result

    @staticmethod
    def _serve(sock):
        """Serve the daemon's copyin/copyout requests until it answers: (errno, argument or refusal)."""
        copyout_fault = False
        while True:
            kind, a, b = recv_header(sock)
            if kind == MSG_COPYIN:
                send_message(sock, MSG_DATA, 0, b)
                readable = send_user_memory(sock, a, b)
                send_message(sock, MSG_COPIED, 0 if readable == b else errno.EFAULT, readable)
            elif kind == MSG_COPYOUT:
                if copyout_fault:
                    _drain(sock, b)   # the kernel stopped at its first failed copyout
                elif recv_user_memory(sock, a, b) != b:
                    copyout_fault = True
            elif kind == MSG_MAP_REPLY:
                data = recv_exact(sock, b)
                try:
                    send_message(sock, MSG_MAPPED, map_anonymous(data), 0)
                except OSError:
                    send_message(sock, MSG_MAPPED, 0, errno.ENOMEM)
            elif kind == MSG_RESULT:
                result = recv_exact(sock, b)
                # A failed copyout fails the request with EFAULT; the argument is not copied back.
                return (errno.EFAULT if copyout_fault else a), result
            elif kind == MSG_REFUSED:
                reason = bytes(recv_exact(sock, b)).decode("utf-8", "replace")
                return 0, EmulatorRefusal("pfemu: " + reason)
            else:
                raise ConnectionError(errno.EPROTO, "unexpected message from the pfemu daemon")


def _shutdown(sock):
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _fileno(obj):
    try:
        return obj.fileno()
    except (AttributeError, ValueError, OSError):
        return None


_installed = []


def install_from_config(directory=None):
    """Install the shim as configured next to this module, once per interpreter.

    Called from the host venv's sitecustomize and from a .pth line (for Pythons
    whose stdlib ships a sitecustomize that shadows the venv's).
    """
    if _installed:
        return _installed[0]
    try:
        config = load_config(directory)
    except (OSError, ValueError):
        return None
    shim = PfShim(config["socket"], config.get("device", "/dev/pf"), config.get("npf_device"))
    shim.install()
    _installed.append(shim)
    return shim


def reboot_main(argv=None):
    """``bin/reboot`` of an emulated host: ask the daemon to reboot, return at once."""
    argv = sys.argv[1:] if argv is None else argv
    delay = float(argv[0]) if argv else 1.0
    config = load_config()
    try:
        control(config["socket"], {"command": "reboot", "delay": delay})
    except OSError as error:
        sys.stderr.write("reboot: %s\n" % error)
        return 1
    return 0
