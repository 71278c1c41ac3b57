"""pfemu: an emulator of the kernel side of NetBSD's /dev/pf (state-table requests).

``Kernel`` (kernel.py) is the model; ``inprocess`` plugs it into a test process;
``generate`` makes realistic kernel-made state records.
"""

from .kernel import EmulatorRefusal, Kernel, KernelBugRefused, KernelPanic, ManualClock, SystemClock

__all__ = ["EmulatorRefusal", "Kernel", "KernelBugRefused", "KernelPanic", "ManualClock", "SystemClock"]
