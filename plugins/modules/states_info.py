#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netbsd.pf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: states_info
short_description: Report pf status and the state table of a NetBSD host
version_added: 0.1.0
description:
  - Reads C(/dev/pf) through a read-only descriptor (C(DIOCGETSTATUS), C(DIOCGETLIMIT), C(DIOCGETSTATES), optionally C(DIOCGETTIMEOUT))
    and reports pf's status, the state limit, a summary of the state table and, on request, the states themselves.
  - Never changes anything. Works at any securelevel.
  - The state lock cannot be read from the kernel; RV(lock) is what the lease file of this collection says, clearly labelled as such.
  - Verifiers can compare RV(states) of two hosts (for example before a capture and after a restore) with O(filters) to narrow them.
options:
  states:
    description:
      - Also return the states, one dict per state, in kernel (insertion) order.
    type: bool
    default: false
  limit:
    description:
      - With O(states=true), return at most this many states; RV(states_truncated) says whether more matched.
      - V(0) means no limit. Large tables make large results, about 1 KB of JSON per state.
    type: int
    default: 1000
  timeouts:
    description:
      - Also return the global default timeouts (C(set timeout) in C(pf.conf)).
    type: bool
    default: false
  dump_dirs:
    description:
      - Directories that hold dumps. RV(stale_staged_files) lists the staged files (C(.NAME.pfstate-PID-XXXXXXXX.tmp)) that writers
        which are no longer running (killed, power loss) left in them. The next dump into the same directory removes them.
    type: list
    elements: path
    default: []
extends_documentation_fragment:
  - action_common_attributes
  - netbsd.pf.attributes.platform
  - netbsd.pf.common
  - netbsd.pf.transforms.filters
  - netbsd.pf.transforms.rename
  - netbsd.pf.firewall
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
notes:
  - O(filters) and O(rename) change only what is reported (RV(summary) and RV(states)); RV(summary.total_in_table) counts the whole table.
  - >-
    With NPF (O(firewall=npf)) the module reads one C(IOC_NPF_SAVE) and C(IOC_NPF_STATS) and returns RV(npf), RV(summary) of the
    connections and, with O(states=true), RV(connections) as text lines; O(timeouts), O(filters) and O(rename) are pf-only and
    refused. NPF refuses every request at securelevel 2 or higher, even reading.
seealso:
  - module: netbsd.pf.states_lock
  - module: netbsd.pf.states_dump
author:
  - netbsd.pf contributors (@netbsd-pf)
"""

EXAMPLES = r"""
- name: Status and a summary of the table
  netbsd.pf.states_info:
  register: pf
  become: true

- name: Fail early when the table would not fit on this host
  ansible.builtin.assert:
    that: pf.status.states < pf.state_limit

- name: The established TCP states to port 22, for a before/after comparison
  netbsd.pf.states_info:
    states: true
    limit: 0
    filters:
      protocols: [tcp]
      ports: [22]
  register: ssh_states
  become: true
"""

RETURN = r"""
firewall:
  description: V(npf) when NPF was read; absent for pf, whose result is unchanged.
  returned: when NPF was read
  type: str
  sample: npf
npf:
  description:
    - NPF's version, whether it filters (C(active)), its params, the number of rules, NAT rules and tables, and its 21
      statistics counters (C(stats)).
  returned: when NPF was read
  type: dict
  sample: {"version": 22, "active": true, "rules": 2, "nat_rules": 0, "tables": 0, "params": {"state.key.interface": 1}}
connections:
  description: With O(states=true) on NPF, the connections as text, one line each (at most O(limit)).
  returned: when NPF was read and O(states=true)
  type: list
  elements: str
connections_truncated:
  description: Whether RV(connections) lists fewer connections than the kernel holds.
  returned: when NPF was read and O(states=true)
  type: bool
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
read:
  description: States in the table (RV(summary.total_in_table)).
  returned: always
  type: int
  sample: 2048
count:
  description: States selected by O(filters) (RV(summary.count)).
  returned: always
  type: int
  sample: 2048
status:
  description: pf status (C(DIOCGETSTATUS)).
  returned: always
  type: dict
  contains:
    running:
      description: Whether pf is enabled.
      type: bool
      returned: always
    states:
      description: The kernel's state count; it includes states unlinked but not yet freed.
      type: int
      returned: always
    hostid:
      description: The host id (creator id of new states), 8 hex digits.
      type: str
      returned: always
    since:
      description: When pf was last started, stopped or cleared (seconds since the epoch).
      type: int
      returned: always
    state_locked_drops:
      description: Packets dropped because the table was locked (NetBSD counter 15, C(state-locked)).
      type: int
      returned: always
    counters:
      description: The reason counters by name.
      type: dict
      returned: always
  sample: {"running": true, "states": 2048, "hostid": "1e35049e", "since": 1714566000, "state_locked_drops": 0}
state_limit:
  description: The hard limit of the state pool (C(set limit states)).
  returned: always
  type: int
  sample: 10000
awaiting_purge:
  description:
    - States that still hold the state pool (and RV(status.states)) but that the kernel's purge thread will free when it
      reaches them (about C(1 + states / 10) states a second, never while the table is locked).
    - C(unlinked) are cleared, killed or expired states no longer shown by C(DIOCGETSTATES); C(expired) are shown states
      exported with expire 0 (expired, not yet reached; a restore drops them as expired); C(awaiting_purge) is their sum.
  returned: always
  type: dict
  sample: {"unlinked": 9000, "expired": 12, "awaiting_purge": 9012}
byte_order:
  description: Byte order of the kernel's records (that of the host).
  returned: always
  type: str
  sample: little
lock:
  description:
    - The lock as the lease file sees it (see M(netbsd.pf.states_lock) RV(netbsd.pf.states_lock#module:lock)); C(source) is always V(lease_file).
  returned: always
  type: dict
  sample: {"source": "lease_file", "state": "none", "locked_by_lease": false}
summary:
  description: Counts of the selected states.
  returned: always
  type: dict
  contains:
    count:
      description: States selected by O(filters).
      type: int
      returned: always
    total_in_table:
      description: States in the whole table, before O(filters).
      type: int
      returned: always
    created_by_other_hostids:
      description:
        - Selected states whose creator id is not RV(status.hostid), the host id pf has now.
        - Restored states keep the creator id they were dumped with, and NetBSD draws a new host id at every boot
          unless C(pf.conf) sets one (C(set hostid)), so after a reboot and a restore these are the restored states
          (plus any received from pfsync peers).
      type: int
      returned: always
  sample: {"count": 3, "total_in_table": 3, "by_interface": {"all": 3}, "by_protocol": {"tcp": 2, "udp": 1},
           "by_address_family": {"inet": 3}, "by_direction": {"out": 3}, "by_tcp_state": {"ESTABLISHED:ESTABLISHED": 2},
           "by_creatorid": {"1e35049e": 3}, "created_by_other_hostids": 0}
filtered:
  description: States left out by O(filters).
  returned: always
  type: int
  sample: 0
timeouts:
  description: Default timeouts in seconds by C(pf.conf) name.
  returned: when O(timeouts=true)
  type: dict
  sample: {"tcp.established": 86400, "udp.single": 30}
states:
  description: The selected states.
  returned: when O(states=true)
  type: list
  elements: dict
  sample: [{"id": "6b090ce800000000", "creatorid": "1e35049e", "af": "inet", "proto": "tcp", "direction": "out", "ifname": "all",
            "lan": {"address": "10.0.0.2", "port": 50312}, "gwy": {"address": "10.0.0.2", "port": 50312},
            "ext": {"address": "192.0.2.7", "port": 22}, "expire": 86390, "timeout_name": "tcp_established"}]
stale_staged_files:
  description: Staged files of dead writers found in O(dump_dirs), with the writer's pid, their size in bytes and mtime.
  returned: always
  type: list
  elements: dict
  sample: [{"path": "/var/db/pf/.states.pfstate.pfstate-4242-0c1f9a7e.tmp", "pid": 4242, "bytes": 7340032, "mtime": 1714566000.5}]
states_truncated:
  description: Whether O(limit) cut the list.
  returned: when O(states=true)
  type: bool
  sample: false
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.netbsd.pf.plugins.module_utils.argspec import TRANSFORM_ARGSPEC, module_argspec, transforms_from_params
from ansible_collections.netbsd.pf.plugins.module_utils.errors import PfStateError
from ansible_collections.netbsd.pf.plugins.module_utils.firewall import DEFAULT_NPF_DEVICE, FIREWALL_CHOICES, detect_firewall
from ansible_collections.netbsd.pf.plugins.module_utils.formats import stale_staged_files
from ansible_collections.netbsd.pf.plugins.module_utils.operations import table_info
from ansible_collections.netbsd.pf.plugins.module_utils.progress import timing


def argument_spec():
    return module_argspec(dict(
        states=dict(type="bool", default=False),
        limit=dict(type="int", default=1000),
        timeouts=dict(type="bool", default=False),
        dump_dirs=dict(type="list", elements="path", default=[]),
        firewall=dict(type="str", default="auto", choices=list(FIREWALL_CHOICES)),
        npf_device=dict(type="path", default=DEFAULT_NPF_DEVICE),
    ), TRANSFORM_ARGSPEC)


def _info_npf(module):
    """The NPF branch: configuration sizes, statistics and the connections of one SAVE."""
    # Only an NPF host loads the NPF workflows (a module's imports are compiled at every run).
    from ansible_collections.netbsd.pf.plugins.module_utils.npf_operations import npf_info  # pylint: disable=import-outside-toplevel
    params = module.params
    refused = [name for name in ("timeouts", "filters", "rename") if params[name]]
    if refused:
        module.fail_json(msg="%s: pf-only, not supported with firewall=npf" % ", ".join(refused))
    return npf_info(params["npf_device"], connections=params["states"], limit=params["limit"] or None)


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    started = time.monotonic()
    params = module.params
    if params["limit"] < 0:
        module.fail_json(msg="limit must be 0 (no limit) or a positive number of states, not %d" % params["limit"])
    try:
        transforms = transforms_from_params(params)
        if detect_firewall(params["firewall"], params["device"], params["npf_device"]) == "npf":
            result = _info_npf(module)
        else:
            result = table_info(params["device"], lease_file=params["lease_file"], timeouts=params["timeouts"],
                                states=params["states"], transforms=transforms, limit=params["limit"] or None)
    except PfStateError as exc:
        exc.do_fail(module)
    result["stale_staged_files"] = [entry for directory in params["dump_dirs"] for entry in stale_staged_files(directory)]
    result.update(timing(started, result["summary"]["total_in_table"]), read=result["summary"]["total_in_table"],
                  count=result["summary"]["count"])
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
