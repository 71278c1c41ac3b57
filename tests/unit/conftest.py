"""Shared fixtures: the pf emulator (tests/pfemu) plugged into the test process."""

import signal

import pytest

from ansible_collections.netbsd.pf.plugins.module_utils import restore
from ansible_collections.netbsd.pf.tests.pfemu.inprocess import PfDeviceRouter, make_syscalls
from ansible_collections.netbsd.pf.tests.pfemu.kernel import Kernel
from ansible_collections.netbsd.pf.tests.pfemu.structs import host_abi


@pytest.fixture
def pfemu_router(monkeypatch):
    """The PfDeviceRouter behind /dev/pf (os.open/os.close/fcntl.ioctl patched); ``.kernel`` is the Kernel."""
    router = PfDeviceRouter(Kernel(abi=host_abi(), seed=20240601))
    router.install(monkeypatch)
    yield router
    router.close_all()


@pytest.fixture
def pfemu_kernel(pfemu_router):
    """A Kernel of the host's ABI that answers the ioctls on descriptors of /dev/pf."""
    return pfemu_router.kernel


@pytest.fixture
def pfemu_syscalls():
    """Factory: ``pfemu_syscalls(Kernel(abi="ilp32-be"))`` gives Syscalls for a client of that ABI."""
    return make_syscalls


@pytest.fixture(autouse=True)
def private_restore_lock(tmp_path, monkeypatch):
    """The host-wide restore lock (/var/run/netbsd_pf_restore.lock by default) in the test's own directory."""
    path = str(tmp_path / "netbsd_pf_restore.lock")
    monkeypatch.setattr(restore, "DEFAULT_RESTORE_LOCK_FILE", path, raising=False)
    return path


@pytest.fixture
def deadline():
    """Turn a hang (a FIFO opened, a device read forever) into a failure after 5 s."""
    def hung(signum, frame):
        raise TimeoutError("no answer within 5 s")
    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(5)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)
