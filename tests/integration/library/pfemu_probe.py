# -*- coding: utf-8 -*-
# Copyright: netbsd.pf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test helper module: what the collection's /dev/pf client reads on a host."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: pfemu_probe
short_description: Read pf status and the state table size through the collection's /dev/pf client
description:
  - Integration-test helper. Opens O(device) read-only with C(PfDevice), issues DIOCGETSTATUS and
    DIOCGETSTATES and reports what came back, so a test can compare it with what the emulated kernel holds.
options:
  device:
    description: Path of the pf device.
    type: str
    default: /dev/pf
author: netbsd.pf contributors
"""

RETURN = r"""
status:
  description: The decoded C(struct pf_status) (C(PfDevice.get_status())).
  type: dict
  returned: success
fetched_states:
  description: Number of states one DIOCGETSTATES returned.
  type: int
  returned: success
python:
  description: Version of the Python the module ran on.
  type: str
  returned: success
"""

import platform

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.netbsd.pf.plugins.module_utils.abi import RECORD_SIZE
from ansible_collections.netbsd.pf.plugins.module_utils.pfdev import PfDevice, PfError


def main():
    module = AnsibleModule(argument_spec={"device": {"type": "str", "default": "/dev/pf"}}, supports_check_mode=True)
    try:
        with PfDevice(module.params["device"]) as device:
            status = device.get_status()
            fetched = len(device.get_states()) // RECORD_SIZE
    except PfError as error:
        module.fail_json(msg=str(error), errno=error.errno, request=error.request)
    module.exit_json(changed=False, status=status, fetched_states=fetched, python=platform.python_version())


if __name__ == "__main__":
    main()
