# -*- coding: utf-8 -*-
# Copyright: netbsd.pf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):

    # The choice between pf and NPF of states_dump, states_restore and states_info (docs/guide-npf.md).
    DOCUMENTATION = r"""
options:
  firewall:
    description:
      - Which packet filter's state to work on.
      - V(auto) opens O(device) and O(npf_device). When only one of them is present (the other gives C(ENOENT) or
        C(ENXIO)) that one is used; when both are, the one that filters (pf enabled, NPF started) is used. Neither present,
        or both filtering, or both stopped, fails with a message asking for V(pf) or V(npf).
      - V(pf) and V(npf) skip the detection. With V(pf) the module behaves exactly as it did before NPF support.
      - On a kernel built with NPF as a module, opening O(npf_device) loads it; set V(pf) on pf hosts where that matters.
    type: str
    choices: [auto, pf, npf]
    default: auto
  npf_device:
    description:
      - The NPF device to open (NetBSD 9.2 or later, NPF version 22). Older NPF generations are detected and refused.
    type: path
    default: /dev/npf
"""
