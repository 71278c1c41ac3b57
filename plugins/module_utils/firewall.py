# -*- coding: utf-8 -*-
# Copyright: netbsd.pf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which firewall a host runs, pf (/dev/pf) or NPF (/dev/npf), for ``firewall: auto``; which one a file is for.

Its own small layer so that a pf run never loads the NPF workflows (npf_operations.py and
the NPF codecs under it): modules and ``pfstate`` import those only in their NPF branch.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import struct

from ansible_collections.netbsd.pf.plugins.module_utils.errors import PfStateError
from ansible_collections.netbsd.pf.plugins.module_utils.formats import open_regular
from ansible_collections.netbsd.pf.plugins.module_utils.native import MAGIC, NPF_FORMAT_VERSION
from ansible_collections.netbsd.pf.plugins.module_utils.npfdev import ENOENT, ENXIO, NpfDevice, NpfError, NpfUnsupported
from ansible_collections.netbsd.pf.plugins.module_utils.pfdev import PfDevice, PfError
from ansible_collections.netbsd.pf.plugins.module_utils.pushed import remove_quietly

FIREWALL_CHOICES = ("auto", "pf", "npf")
DEFAULT_NPF_DEVICE = "/dev/npf"
# The NPF restore's choices, here so that modules can declare them without loading the NPF layer.
NAT_CHOICES = ("drop", "keep")
RUNNING_CHOICES = ("merge", "refuse")
# open() of a device node without its driver (ENXIO), or no node at all (ENOENT): that firewall is absent.
_ABSENT_ERRNOS = (ENOENT, ENXIO, 19)        # 19: ENODEV, the same on NetBSD and Linux
_VERSION_FIELD = struct.Struct(">8sH")


class FirewallError(PfStateError):
    """Which firewall cannot be told (firewall=auto, an unreadable file); the message says what to set or fix."""


def _pf_presence(device_path, activity):
    """"absent", "present" (``activity`` False), "active", "inactive" (not enabled), or "unknown" (unreadable)."""
    try:
        with PfDevice(device_path) as device:
            if not activity:
                return "present"
            return "active" if device.get_status()["running"] else "inactive"
    except PfError as exc:
        return "absent" if exc.errno in _ABSENT_ERRNOS else "unknown"


def _npf_presence(device_path, activity):
    try:
        with NpfDevice(device_path) as device:
            if not activity:
                return "present"
            device.probe()
            return "active" if device.save().get("active") is True else "inactive"
    except NpfUnsupported:
        return "inactive"           # an NPF generation this collection cannot drive
    except NpfError as exc:
        return "absent" if exc.errno in _ABSENT_ERRNOS else "unknown"


def detect_firewall(firewall="auto", pf_device="/dev/pf", npf_device=DEFAULT_NPF_DEVICE, discard_on_error=None):
    """``firewall`` itself unless "auto"; then the one whose device is present, or of two the one filtering.

    Neither device present, or both present and both (or neither) filtering, is an error that
    asks for an explicit choice: guessing would dump or replace the wrong table. The file
    ``discard_on_error`` (a pushed copy) is removed when that error is raised.
    """
    try:
        return _detect_firewall(firewall, pf_device, npf_device)
    except FirewallError:
        if discard_on_error:
            remove_quietly(discard_on_error)
        raise


def _detect_firewall(firewall, pf_device, npf_device):
    if firewall in ("pf", "npf"):
        return firewall
    if firewall != "auto":
        raise FirewallError("firewall must be auto, pf or npf, not %r" % (firewall,))
    # Opening tells presence; whether a firewall filters is read only when both are present
    # (for NPF that is a whole SAVE).
    seen = {"pf": _pf_presence(pf_device, False), "npf": _npf_presence(npf_device, False)}
    present = [name for name in ("pf", "npf") if seen[name] != "absent"]
    if len(present) == 1:
        return present[0]
    if not present:
        raise FirewallError("firewall=auto found no packet filter: neither %s nor %s is present (no pf or NPF in "
                            "the kernel); load one, or set firewall and device explicitly" % (pf_device, npf_device))
    seen = {"pf": _pf_presence(pf_device, True), "npf": _npf_presence(npf_device, True)}
    active = [name for name in present if seen[name] == "active"]
    if len(active) == 1:
        return active[0]
    raise FirewallError("firewall=auto cannot choose: %s is %s and %s is %s; set firewall to pf or npf" % (
        pf_device, seen["pf"], npf_device, seen["npf"]))


def file_kind(path):
    """"npf" for a native NPF snapshot, "pf" for anything else (a pf dump of any format, checked later)."""
    try:
        with open_regular(path) as handle:
            magic, version = _VERSION_FIELD.unpack(handle.read(_VERSION_FIELD.size).ljust(_VERSION_FIELD.size, b"\0"))
    except (OSError, ValueError) as exc:
        raise FirewallError("cannot read %s: %s" % (path, getattr(exc, "strerror", None) or exc))
    return "npf" if magic == MAGIC and version == NPF_FORMAT_VERSION else "pf"
