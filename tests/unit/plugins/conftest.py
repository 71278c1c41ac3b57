"""The NPF emulator (tests/npfemu) behind /dev/npf, for the tests of the NPF workflows and modules."""

import struct

import pytest

from ansible_collections.netbsd.pf.plugins.module_utils import npfdev
from ansible_collections.netbsd.pf.tests.npfemu import ManualClock, NpfKernel
from ansible_collections.netbsd.pf.tests.npfemu.generate import generate_connections
from ansible_collections.netbsd.pf.tests.npfemu.inprocess import make_syscalls

NPF_RULES = [{"name": "pass-wm0", "attr": 0x13, "ifname": "wm0"}, {"name": "pass-wm1", "attr": 0x13, "ifname": "wm1"}]
NPF_SWITCH_START = struct.pack("=i", 1)


class NpfHost:
    """An emulated NPF host: ``kernel``, ``device()`` (an NpfDevice as the modules open it), ``boot()``."""

    def __init__(self, kernel):
        self.kernel = kernel

    def device(self):
        return npfdev.NpfDevice()

    def boot(self, config=None, start=True):
        """An emulated reboot, then what rc.d npf does: load npf.conf, start filtering."""
        self.kernel.reboot()
        with self.device() as device:
            device.load(config or {"rules": NPF_RULES})
            if start:
                device._ioctl("IOC_NPF_SWITCH", bytearray(NPF_SWITCH_START))  # pylint: disable=protected-access

    def fill(self, count, seed=3, first=0):
        self.kernel.add_connections(generate_connections(count, seed=seed, first=first))


@pytest.fixture
def npfemu_host(monkeypatch):
    """A booted NPF host (pass rules on wm0/wm1, filtering) answering /dev/npf through NpfDevice's syscalls."""
    kernel = NpfKernel(clock=ManualClock(1700000000.0))
    monkeypatch.setattr(npfdev, "HostSyscalls", lambda: make_syscalls(kernel))
    host = NpfHost(kernel)
    host.boot()
    return host
