"""npfemu: an emulator of the kernel side of NetBSD's /dev/npf (NPF reference sections 2, 3 and 6).

``NpfKernel`` (kernel.py) is the model, ``libnv`` the kernel's nvlist packer and unpacker,
``inprocess`` plugs a kernel into a test process.
"""

from .kernel import EmulatorRefusal, KernelPanic, ManualClock, NotModelled, NpfKernel, WouldCorrupt

__all__ = ["EmulatorRefusal", "KernelPanic", "ManualClock", "NotModelled", "NpfKernel", "WouldCorrupt"]
