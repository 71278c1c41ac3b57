# -*- coding: utf-8 -*-
# Copyright: netbsd.pf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Argument specs shared by the netbsd.pf modules.

The option names and types here are documented once, in the doc fragments
``netbsd.pf.common``, ``netbsd.pf.transforms`` and ``netbsd.pf.lock_lease``; a
module that merges one of these specs must also extend the matching fragment.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.netbsd.pf.plugins.module_utils.abi import MAX_IFNAME_LEN, protocol_number
from ansible_collections.netbsd.pf.plugins.module_utils.errors import PfStateError
from ansible_collections.netbsd.pf.plugins.module_utils.formats import FORMATS

DEFAULT_LEASE_SECONDS = 300
DEFAULT_LEASE_FILE = "/var/run/netbsd_pf_lock.lease"
DEFAULT_DEVICE = "/dev/pf"
# Option spellings accepted for the dump formats (the underscores and formats.py's hyphens).
FORMAT_CHOICES = ("native", "pfs_binary", "pfs_text", "pfs-binary", "pfs-text")

# Every member of the netbsd.pf.states action group accepts these, so that
# module_defaults for group/netbsd.pf.states never makes a member fail on an
# unsupported parameter.
COMMON_ARGSPEC = dict(
    device=dict(type="path", default=DEFAULT_DEVICE),
    lease_file=dict(type="path", default=DEFAULT_LEASE_FILE),
)

FILTERS_SUBOPTIONS = dict(
    interfaces=dict(type="list", elements="str"),
    protocols=dict(type="list", elements="str"),
    address_family=dict(type="str", choices=["inet", "inet6"]),
    networks=dict(type="list", elements="str"),
    ports=dict(type="list", elements="int"),
    direction=dict(type="str", choices=["in", "out"]),
)

TRANSFORM_ARGSPEC = dict(
    filters=dict(type="dict", options=FILTERS_SUBOPTIONS),
    rename=dict(type="dict"),
)

LOCK_LEASE_ARGSPEC = dict(
    lease=dict(type="int", default=DEFAULT_LEASE_SECONDS),
)


def module_argspec(own, *shared):
    """``own`` merged with COMMON_ARGSPEC and the ``shared`` specs; a name defined twice is a programming error."""
    spec = dict(COMMON_ARGSPEC)
    for part in shared + (own,):
        clash = set(spec) & set(part)
        if clash:
            raise ValueError("options defined twice: %s" % ", ".join(sorted(clash)))
        spec.update(part)
    return spec


def creation_mode(mode):
    """The numeric mode a dump is created with, so it is never readable beyond ``mode``, not even briefly.

    ``mode`` is the module's raw ``mode`` option; a symbolic mode creates the file
    0600 and is applied by set_fs_attributes_if_different afterwards.
    """
    if isinstance(mode, int):
        numeric = mode
    else:
        try:
            numeric = int(str(mode), 8)
        except ValueError:
            return 0o600
    # fchmod would take -1 as 07777 (world-writable, setuid) and drop bits above 07777 silently.
    if not 0 <= numeric <= 0o7777:
        raise OptionError("mode %r is not a file mode (0 to 07777 in octal, or symbolic such as u=rw,g=r)" % (mode,))
    return numeric


class OptionError(PfStateError, ValueError):
    """An option value that passed the argspec but cannot be used (the message says why)."""


class TransformOptionError(OptionError):
    """A filters/rename option that passed the argspec but makes no sense (the message says why)."""


def canonical_format(name):
    """formats.py's name for an option value (pfs_binary -> pfs-binary)."""
    fmt = name.replace("_", "-")
    if fmt not in FORMATS:
        raise OptionError("unknown dump format %r; use native, pfs_binary or pfs_text" % name)
    return fmt


def check_lease(lease):
    """Refuse a negative ``lease`` option (0 means no watchdog)."""
    if lease < 0:
        raise OptionError("lease must be 0 (no watchdog, dangerous) or a number of seconds, not %d" % lease)


def transforms_from_params(params):
    """Normalised filters and rename from module params.

    Returns a dict with keys ``filters`` (dict of the criteria that were given,
    protocols as numbers, or None when nothing is filtered) and ``rename``
    (dict old -> new interface name, or None), which is what
    ``operations`` hands to ``module_utils.transforms``.
    Raises TransformOptionError with a message meant for fail_json.
    """
    return {
        "filters": _normalise_filters(params.get("filters")),
        "rename": _normalise_rename(params.get("rename")),
    }


def _normalise_filters(filters):
    if not filters:
        return None
    given = dict((key, value) for key, value in filters.items() if value not in (None, []))
    if "protocols" in given:
        given["protocols"] = [_protocol_number(value) for value in given["protocols"]]
    for port in given.get("ports", ()):
        if not 0 <= port <= 65535:
            raise TransformOptionError("filters.ports: %d is not a port number (0..65535)" % port)
    return given or None


def _protocol_number(value):
    try:
        return protocol_number(str(value).strip())
    except ValueError as exc:
        raise TransformOptionError("filters.protocols: %s; use a NetBSD protocol name such as tcp, udp, icmp, ipv6-icmp or a number 0..255" % exc)


def _normalise_rename(rename):
    if not rename:
        return None
    result = {}
    for old, new in rename.items():
        if not isinstance(new, str) or not new or not old:
            raise TransformOptionError("rename: %r -> %r: both interface names must be non-empty strings" % (old, new))
        for name in (old, new):
            if len(name.encode("utf-8")) > MAX_IFNAME_LEN:
                raise TransformOptionError("rename: interface name %r is longer than %d bytes (IFNAMSIZ - 1)" % (name, MAX_IFNAME_LEN))
        result[str(old)] = new
    return result
