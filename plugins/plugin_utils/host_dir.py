# -*- coding: utf-8 -*-
# Copyright: netbsd.pf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one encoding of an inventory host name into a controller file name (filter netbsd.pf.host_dir).

Bytes of the name's UTF-8 form in ``[A-Za-z0-9._-]`` are kept, every other byte
becomes ``%XX`` (two upper-case hex digits), ``%`` itself included, so the
encoding can be read back and two different names never share a directory.  A
leading ``.`` is escaped too (no hidden names, never ``.`` or ``..``), and the
empty name is ``%``, which no other name yields (every other ``%`` is followed
by two hex digits).  The result contains no ``/`` and no glob metacharacter.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible.module_utils.common.text.converters import to_text

_KEPT = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
_ESCAPE = re.compile(r"%([0-9A-F]{2})")


def host_dir_name(name):
    """The file-name-safe, injective encoding of ``name`` (see the module docstring)."""
    raw = to_text(name, errors="surrogate_or_strict").encode("utf-8", "surrogatepass")
    if not raw:
        return "%"
    parts = []
    for position, byte in enumerate(bytearray(raw)):
        if byte in _KEPT and not (position == 0 and byte == 0x2E):
            parts.append(chr(byte))
        else:
            parts.append("%%%02X" % byte)
    return "".join(parts)


def host_dir_decode(encoded):
    """The host name ``host_dir_name`` encoded (for tests and tools that list capture directories)."""
    if encoded == "%":
        return ""
    return _ESCAPE.sub(lambda match: chr(int(match.group(1), 16)), encoded).encode("latin-1").decode("utf-8", "surrogatepass")
