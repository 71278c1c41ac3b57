"""copyin/copyout across the shim: the daemon reads no byte the kernel would not copy in, a fault is
the kernel's fault for that request, and no client can wedge its host.

A real daemon (in this process) serves a client process that runs the host shim, with raw request
numbers. The client maps two pages of a one-page file: /proc/self/maps lists both as readable and
writable, but the second lies past the end of the file and every access to it faults (like
Linux's ``[vvar]`` page, which a read-ahead once ran into and hung the host).
"""

import errno
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from ansible_collections.netbsd.pf.tests.pfemu import daemon
from ansible_collections.netbsd.pf.tests.pfemu.kernel import Kernel, ManualClock
from ansible_collections.netbsd.pf.tests.pfemu.shim import pfemu_shim
from ansible_collections.netbsd.pf.tests.pfemu.structs import host_abi

CLIENT_TIMEOUT = 30  # a hang fails the test instead of blocking the suite
SHIM_DIR = os.path.dirname(os.path.abspath(pfemu_shim.__file__))

CLIENT_PRELUDE = """
import ctypes, errno, fcntl, json, mmap, os, struct, sys, tempfile
sys.path.insert(0, %(shim_dir)r)
import pfemu_shim
pfemu_shim.PfShim(%(socket)r).install()
LP64 = ctypes.sizeof(ctypes.c_void_p) == 8
DIOCGETSTATUS = 0xC1A84415
DIOCGETSTATES = 0xC0104419 if LP64 else 0xC0084419
DIOCADDSTATES = 0xC0104438 if LP64 else 0xC0084438
PAGE = mmap.PAGESIZE
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
backing = tempfile.TemporaryFile()
backing.truncate(PAGE)
# Page 0 is the file's only page; page 1 is past its end: any access to it faults.
mapping = libc.mmap(None, 2 * PAGE, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED, backing.fileno(), 0)
assert mapping and mapping != ctypes.c_void_p(-1).value, "mmap failed"
FAULTING_PAGE = mapping + PAGE

def record(port):
    rec = bytearray(240)
    rec[8:11] = b"all"
    rec[24:28], rec[40:42] = bytes((10, 0, 0, 1)), port.to_bytes(2, "big")
    rec[48:52], rec[64:66] = bytes((10, 0, 0, 1)), port.to_bytes(2, "big")
    rec[72:76], rec[88:90] = bytes((198, 51, 100, 7)), (443).to_bytes(2, "big")
    rec[232:238] = bytes((2, 6, 2, 0, 0, 2))   # af inet, tcp, out, log, allow_opts, timeout established
    return bytes(rec)

def states_arg(length, address):
    return bytearray(struct.pack("=i4xQ" if LP64 else "=iI", length, address))

def states(fd):
    arg = bytearray(424)
    fcntl.ioctl(fd, DIOCGETSTATUS, arg)
    return struct.unpack_from("=I", arg, 372)[0]

def attempt(call):
    try:
        call()
        return 0
    except OSError as error:
        return error.errno
    except RuntimeError as error:
        return type(error).__name__
"""


class Host(object):
    """An emulated host's daemon served from this process; ``run`` executes a shim client."""

    def __init__(self, tmp_path):
        self.host = daemon.EmulatedHost(str(tmp_path), Kernel(abi=host_abi(), clock=ManualClock()))
        os.makedirs(self.host.run_dir)
        self.socket_path = os.path.join(self.host.run_dir, daemon.SOCKET_NAME)
        self.server = daemon.DaemonServer(self.socket_path, self.host)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def run(self, body):
        script = CLIENT_PRELUDE % {"shim_dir": SHIM_DIR, "socket": self.socket_path} + textwrap.dedent(body)
        try:
            result = subprocess.run([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    universal_newlines=True, timeout=CLIENT_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            result = None
        assert result is not None, "the shim client hung for %d s: the emulated host is wedged" % CLIENT_TIMEOUT
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(name="host")
def emulated_host(tmp_path):
    host = Host(tmp_path)
    yield host
    host.stop()


def test_copyin_reads_only_the_request_buffer_even_next_to_a_faulting_page(host):
    seen = host.run("""
        fd = os.open("/dev/pf", os.O_RDWR)
        address = FAULTING_PAGE - 240          # one record, ending where the faulting page begins
        ctypes.memmove(address, record(1025), 240)
        added = attempt(lambda: fcntl.ioctl(fd, DIOCADDSTATES, states_arg(240, address)))
        print(json.dumps({"added": added, "states": states(fd)}))
    """)
    assert seen == {"added": 0, "states": 1}
    assert host.host.kernel.states == 1 and not host.host.refusals


def test_argument_struct_in_a_faulting_page_is_efault_and_the_descriptor_goes_on(host):
    seen = host.run("""
        fd = os.open("/dev/pf", os.O_RDWR)
        # An integer argument is the user address sys_ioctl copies the struct in from.
        status = attempt(lambda: fcntl.ioctl(fd, DIOCGETSTATUS, FAULTING_PAGE))
        straddling = attempt(lambda: fcntl.ioctl(fd, DIOCGETSTATUS, FAULTING_PAGE - 200))
        print(json.dumps({"status": status, "straddling": straddling, "states": states(fd)}))
    """)
    assert seen == {"status": errno.EFAULT, "straddling": errno.EFAULT, "states": 0}


def test_getstates_copyout_into_a_faulting_page_is_efault_after_the_records_before_it(host):
    seen = host.run("""
        fd = os.open("/dev/pf", os.O_RDWR)
        block = ctypes.create_string_buffer(record(1025) + record(1026), 480)
        fcntl.ioctl(fd, DIOCADDSTATES, states_arg(480, ctypes.addressof(block)))
        address = FAULTING_PAGE - 240          # room for the first record only
        arg = states_arg(480, address)
        fetched = attempt(lambda: fcntl.ioctl(fd, DIOCGETSTATES, arg))
        first = ctypes.string_at(address, 240)
        print(json.dumps({"fetched": fetched, "arg_unchanged": arg == states_arg(480, address),
                          "first_port": int.from_bytes(first[40:42], "big"), "states": states(fd)}))
    """)
    assert seen == {"fetched": errno.EFAULT, "arg_unchanged": True, "first_port": 1025, "states": 2}


def test_addstates_copyin_fault_is_the_kernels_double_free(host):
    seen = host.run("""
        fd = os.open("/dev/pf", os.O_RDWR)
        address = FAULTING_PAGE - 240          # the second record is in the faulting page
        ctypes.memmove(address, record(1025), 240)
        print(json.dumps({"added": attempt(lambda: fcntl.ioctl(fd, DIOCADDSTATES, states_arg(480, address)))}))
    """)
    assert seen == {"added": "EmulatorRefusal"}
    kernel = host.host.kernel
    assert kernel.panicked and "record 1" in host.host.refusals[-1]
    # pf_ioctl.c added the first record before the failed copyin of the second one.
    assert kernel.states == 1


def test_a_client_that_stops_answering_does_not_wedge_its_host(host):
    host.host.client_timeout = 1.0
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stuck.connect(host.socket_path)
    pfemu_shim.send_message(stuck, pfemu_shim.MSG_OPEN, os.O_RDWR)
    assert pfemu_shim.recv_header(stuck)[:2] == (pfemu_shim.MSG_RESULT, 0)
    request = 0xC0104438 if host.host.kernel.layout.pointer_size == 8 else 0xC0084438
    argument = host.host.kernel.layout.pfioc_states.pack(240, 0x10000)
    memory_map = pfemu_shim.encode_memory_map([(0x10000, 0x11000, pfemu_shim.REGION_READ)])
    pfemu_shim.send_message(stuck, pfemu_shim.MSG_IOCTL, request, len(argument), argument + memory_map)
    # The daemon now waits, under the kernel lock, for bytes this client never sends.
    assert pfemu_shim.recv_header(stuck)[0] == pfemu_shim.MSG_COPYIN
    started = time.monotonic()
    seen = host.run("""
        print(json.dumps({"states": states(os.open("/dev/pf", os.O_RDONLY))}))
    """)
    assert seen == {"states": 0} and time.monotonic() - started < 30
    stuck.settimeout(5)
    assert stuck.recv(1) == b""   # the daemon hung up on the silent client
    stuck.close()
