# -*- coding: utf-8 -*-
# Copyright: netbsd.pf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: host_dir
short_description: Encode an inventory host name as a safe, unique file or directory name
version_added: 0.2.0
description:
  - Turns an inventory host name (C(2001:db8::1), C(fw-münchen), C(../etc)) into a name that can be used as one path
    component on the controller. The roles of this collection and the O(netbsd.pf.states_dump#module:fetch_to) option
    of M(netbsd.pf.states_dump) build every controller path of a host with it, so they all agree.
  - Every byte of the UTF-8 form of the name outside C([A-Za-z0-9._-]) becomes C(%XX) (two upper-case hexadecimal
    digits); C(%) itself is encoded as C(%25). A leading C(.) is encoded as C(%2E), so the result is never C(.), C(..)
    or a hidden name, and the empty name becomes C(%).
  - The encoding is injective, two different host names never give the same result (C(fw-ü) is C(fw-%C3%BC), C(fw-ö)
    is C(fw-%C3%B6)), and it can be decoded like a URL path component. Names made of letters, digits, C(.), C(_) and
    C(-) stay as they are.
  - The result contains no C(/) and no glob metacharacter (C(*), C(?), C([)), so it can also be used in file name
    patterns.
  - Host names that differ only in case still collide on a case-insensitive file system (macOS, Windows shares).
options:
  _input:
    description: The host name, usually C(inventory_hostname).
    type: str
    required: true
author:
  - netbsd.pf contributors (@netbsd-pf)
seealso:
  - module: netbsd.pf.states_dump
"""

EXAMPLES = r"""
- name: Point at the latest capture of this host
  ansible.builtin.file:
    src: "{{ capture_name }}"
    dest: "{{ capture_dir }}/{{ inventory_hostname | netbsd.pf.host_dir }}/latest"
    state: link
  delegate_to: localhost

# "2001:db8::1" -> "2001%3Adb8%3A%3A1", "fw-münchen" -> "fw-m%C3%BCnchen", "fw_1" -> "fw_1"
- name: Show the directory name of a host
  ansible.builtin.debug:
    msg: "{{ '2001:db8::1' | netbsd.pf.host_dir }}"
"""

RETURN = r"""
_value:
  description: The encoded name, one path component made of C([A-Za-z0-9._%-]).
  type: str
"""

from ansible.errors import AnsibleFilterError
from ansible.module_utils.six import string_types

from ansible_collections.netbsd.pf.plugins.plugin_utils.host_dir import host_dir_name


def host_dir(name):
    if not isinstance(name, string_types):
        raise AnsibleFilterError("netbsd.pf.host_dir expects a host name (a string), got %s" % type(name).__name__)
    return host_dir_name(name)


class FilterModule(object):

    def filters(self):
        return {"host_dir": host_dir}
