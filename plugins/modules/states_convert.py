#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netbsd.pf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: states_convert
short_description: Inspect or convert pf state dumps between formats and byte orders
version_added: 0.1.0
description:
  - Reads the state dump O(src) (C(.pfstate), C(pfs -b) binary or C(pfs) text) and either reports what it holds (no O(dest)) or
    writes it to O(dest) in O(format), with O(filters), O(rename) and a target O(byte_order).
  - Never touches C(/dev/pf), so it runs anywhere Python runs, including the controller with C(delegate_to=localhost).
  - The output is byte-identical whatever machine runs the conversion. Its byte order is the input's unless O(byte_order) says
    otherwise, never silently the running host's. (A V(native) header also records when the conversion happened.)
  - Use it to move dumps between little-endian (amd64, aarch64, i386) and big-endian (sparc64, powerpc) firewalls, or to turn a
    dump into C(pfs) text for reading.
options:
  src:
    description:
      - The dump to read.
    type: path
    required: true
  src_format:
    description:
      - Format of O(src); detected from its content when not given.
    type: str
    choices: [native, pfs_binary, pfs_text, pfs-binary, pfs-text]
  src_byte_order:
    description:
      - Byte order of the host that wrote a C(pfs) dump (C(pfs) text prints host-order ids; C(pfs) binary has no byte-order mark).
      - Needed for C(pfs) text from a host of the other byte order than the one running this module; for C(pfs) binary the order is
        inferred from the record count and only needed when that is ambiguous. V(native) files record their byte order.
    type: str
    choices: [little, big]
  dest:
    description:
      - File to write. Without it the module only inspects O(src).
      - Written atomically (temporary file, C(fsync), rename) and only when its content differs.
    type: path
  format:
    description:
      - Format to write O(dest) in; see M(netbsd.pf.states_dump) for what each format is.
    type: str
    default: native
    choices: [native, pfs_binary, pfs_text, pfs-binary, pfs-text]
  byte_order:
    description:
      - Byte order of the records in O(dest). V(host) is the byte order of the machine running the module (on the controller with
        C(delegate_to=localhost), that of the controller). Default is the input's.
    type: str
    choices: [little, big, host]
  compress:
    description:
      - Compress the records of a V(native) O(dest).
    type: bool
    default: true
  mode:
    description:
      - Permissions of O(dest).
    type: raw
    default: '0600'
extends_documentation_fragment:
  - action_common_attributes
  - action_common_attributes.files
  - files
  - netbsd.pf.common
  - netbsd.pf.transforms.filters
  - netbsd.pf.transforms.rename
attributes:
  check_mode:
    support: full
    details: Reads O(src) and reports whether O(dest) would change; writes nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
  safe_file_operations:
    support: full
  vault:
    support: none
notes:
  - C(changed) is true when O(dest) did not hold the same content (format, byte order, compression and records) before.
seealso:
  - module: netbsd.pf.states_dump
  - module: netbsd.pf.states_restore
author:
  - netbsd.pf contributors (@netbsd-pf)
"""

EXAMPLES = r"""
- name: What is in a fetched dump?
  netbsd.pf.states_convert:
    src: "{{ playbook_dir }}/captures/fw1/states.pfstate"
  delegate_to: localhost
  register: capture

- name: Prepare the dump of an amd64 firewall for its sparc64 replacement, with the new interface names
  netbsd.pf.states_convert:
    src: "{{ playbook_dir }}/captures/fw1/states.pfstate"
    dest: "{{ playbook_dir }}/captures/fw1/states-sparc64.pfstate"
    byte_order: big
    rename:
      wm0: hme0
      wm1: hme1
  delegate_to: localhost

- name: Readable copy in the pfs text format
  netbsd.pf.states_convert:
    src: /var/db/pf/states.pfstate
    dest: /var/db/pf/states.txt
    format: pfs_text
"""

RETURN = r"""
duration:
  description: Seconds the module worked (see the README's table of the return values common to all modules).
  returned: always
  type: float
  sample: 0.412
states_per_second:
  description: RV(read) divided by RV(duration); V(null) when too fast to measure.
  returned: always
  type: int
  sample: 480000
path:
  description: The file written, O(dest); without O(dest) the file inspected, O(src).
  returned: always
  type: str
  sample: /var/db/pf/states.txt
src_format:
  description: Format of O(src).
  returned: always
  type: str
  sample: native
src_byte_order:
  description: Byte order of the records in O(src).
  returned: always
  type: str
  sample: little
header:
  description: Header of a V(native) O(src), with its capture metadata.
  returned: when O(dest) is not given and O(src) is V(native)
  type: dict
  sample: {"format_version": 1, "byte_order": "little", "count": 2048, "metadata": {"hostname": "fw1", "release": "10.0"}}
summary:
  description: Counts of the states of O(src) after O(filters), as in M(netbsd.pf.states_info).
  returned: when O(dest) is not given
  type: dict
  sample: {"count": 2048, "by_interface": {"all": 2048}, "by_protocol": {"tcp": 2000, "udp": 48}}
count:
  description: States written to O(dest) (or, without O(dest), selected in O(src)).
  returned: always
  type: int
  sample: 2048
read:
  description: States read from O(src).
  returned: always
  type: int
  sample: 2048
filtered:
  description: States left out by O(filters).
  returned: always
  type: int
  sample: 0
renamed:
  description: States whose interface O(rename) changed.
  returned: when O(dest) is given
  type: int
  sample: 0
format:
  description: Format of RV(path).
  returned: always
  type: str
  sample: pfs_binary
byte_order:
  description: Byte order of the records in RV(path).
  returned: always
  type: str
  sample: big
bytes:
  description: Size of RV(path).
  returned: unless check mode
  type: int
  sample: 491524
sha256:
  description: SHA-256 of RV(path).
  returned: unless check mode
  type: str
  sample: 109c9333cb918e723909dfdab5bddea5d8290335f96ec4513438071a03bdef8b
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.netbsd.pf.plugins.module_utils.argspec import (
    FORMAT_CHOICES, TRANSFORM_ARGSPEC, creation_mode, module_argspec, transforms_from_params,
)
from ansible_collections.netbsd.pf.plugins.module_utils.errors import PfStateError
from ansible_collections.netbsd.pf.plugins.module_utils.operations import convert_dump, inspect_dump
from ansible_collections.netbsd.pf.plugins.module_utils.progress import timing


def argument_spec():
    # The common options (device, lease_file) are accepted for module_defaults of the group and unused here.
    return module_argspec(dict(
        src=dict(type="path", required=True),
        src_format=dict(type="str", choices=list(FORMAT_CHOICES)),
        src_byte_order=dict(type="str", choices=["little", "big"]),
        dest=dict(type="path"),
        format=dict(type="str", default="native", choices=list(FORMAT_CHOICES)),
        byte_order=dict(type="str", choices=["little", "big", "host"]),
        compress=dict(type="bool", default=True),
        mode=dict(type="raw", default="0600"),
    ), TRANSFORM_ARGSPEC)


def main():
    module = AnsibleModule(argument_spec=argument_spec(), add_file_common_args=True, supports_check_mode=True)
    started = time.monotonic()
    params = module.params
    try:
        transforms = transforms_from_params(params)
        if params["dest"] is None:
            result = inspect_dump(params["src"], params["src_format"], params["src_byte_order"], transforms)
            result.update(timing(started, result["read"]), path=params["src"], format=result["src_format"])
            module.exit_json(changed=False, **result)
        result = convert_dump(
            params["src"], params["dest"], params["format"], src_format=params["src_format"],
            text_byte_order=params["src_byte_order"], byte_order=params["byte_order"], compress=params["compress"],
            transforms=transforms, mode=creation_mode(params["mode"]), check_mode=module.check_mode)
    except PfStateError as exc:
        exc.do_fail(module, path=params["src"])
    if not module.check_mode:
        file_args = module.load_file_common_arguments(params, path=params["dest"])
        result["changed"] = module.set_fs_attributes_if_different(file_args, result["changed"])
    result.update(timing(started, result["read"]), path=params["dest"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
