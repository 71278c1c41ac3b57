#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netbsd.pf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: states_lock
short_description: Lock or unlock the pf state table of a NetBSD host, under a lease
version_added: 0.1.0
description:
  - Sets or clears NetBSD's pf state lock (C(DIOCSETLCK), what C(pfs -l) and C(pfs -u) do).
  - Locking first arms a lease (O(lease)) - a detached watchdog process that unlocks the table when the lease runs out -
    and then locks the table. Locking again renews the lease; unlocking clears the lock and releases the lease.
  - The kernel has no way to read the lock back. This module knows whether the table is locked only through O(lease_file),
    which records the locks taken by this collection; see RV(lock).
  - Use M(netbsd.pf.states_dump) with O(netbsd.pf.states_dump#module:lock=hold) to lock, dump and hand the host to a reboot in one task.
options:
  state:
    description:
      - V(locked) arms or renews the lease and locks the table.
      - V(unlocked) clears the lock, whoever set it, and releases the lease.
    type: str
    choices: [locked, unlocked]
    default: locked
extends_documentation_fragment:
  - action_common_attributes
  - netbsd.pf.attributes.platform
  - netbsd.pf.common
  - netbsd.pf.lock_lease
attributes:
  check_mode:
    support: full
    details: Reports what would change; neither the kernel nor the lease file is touched.
  diff_mode:
    support: none
notes:
  - >-
    C(changed) for V(locked) is always true: every run arms a new lease (a new deadline), and a lock cannot be read back to compare.
    For V(unlocked) it is true when O(lease_file) shows a lease in force; a lock set by other tools (C(pfs -l)) is cleared too,
    but cannot be seen, so that run reports C(changed=false).
  - The lock is global and not tied to a process; unlocking here also ends a lock taken by M(netbsd.pf.states_dump) or C(pfs).
seealso:
  - module: netbsd.pf.states_dump
  - module: netbsd.pf.states_info
author:
  - netbsd.pf contributors (@netbsd-pf)
"""

EXAMPLES = r"""
- name: Freeze the state table for at most two minutes
  netbsd.pf.states_lock:
    state: locked
    lease: 120
  become: true

- name: Unlock it again
  netbsd.pf.states_lock:
    state: unlocked
  become: true

- name: Lock under a site-specific lease file (every module, role and pfstate run on the host must name the same one)
  netbsd.pf.states_lock:
    state: locked
    lease: 30
    lease_file: /var/run/pf/netbsd_pf_lock.lease
  become: true
"""

RETURN = r"""
duration:
  description: Seconds the module worked (see the README's table of the return values common to all modules).
  returned: always
  type: float
  sample: 0.412
lock:
  description:
    - What O(lease_file) says about the lock after the task, never a reading of the kernel.
    - RV(lock.locked_by_lease) is V(true) while a lease is in force, V(false) after a release or expiry, V(null) when unknown.
  returned: always
  type: dict
  sample: {"source": "lease_file", "state": "held", "locked_by_lease": true, "token": "3f9c0a5d2e7b1c44", "seconds": 120,
           "deadline": 1714566720.5, "watchdog_pid": 4242, "holder": "netbsd.pf.states_lock"}
  contains:
    locked_by_lease:
      description: Whether the lease file shows the table locked by this collection.
      type: bool
      returned: always
    state:
      description: V(held), V(released), V(expired) (the watchdog unlocked), V(unlock_failed), V(none) (no lease file) or V(unreadable).
      type: str
      returned: always
    deadline:
      description: When the watchdog unlocks, in seconds since the epoch; V(null) with O(lease=0).
      type: float
      returned: when a lease was recorded
    watchdog_pid:
      description: Process id of the watchdog.
      type: int
      returned: when a lease was recorded
previous:
  description: The lease file's view before the task.
  returned: always
  type: dict
  sample: {"source": "lease_file", "state": "none", "locked_by_lease": false}
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.netbsd.pf.plugins.module_utils.argspec import LOCK_LEASE_ARGSPEC, check_lease, module_argspec
from ansible_collections.netbsd.pf.plugins.module_utils.errors import PfStateError
from ansible_collections.netbsd.pf.plugins.module_utils.lease import lease_view
from ansible_collections.netbsd.pf.plugins.module_utils.operations import lock_table, unlock_table
from ansible_collections.netbsd.pf.plugins.module_utils.progress import timing


def argument_spec():
    return module_argspec(dict(state=dict(type="str", default="locked", choices=["locked", "unlocked"])), LOCK_LEASE_ARGSPEC)


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    started = time.monotonic()
    params = module.params
    try:
        check_lease(params["lease"])
        previous = lease_view(params["lease_file"])
        if params["state"] == "locked":
            if params["lease"] == 0:
                module.warn("lease=0: no watchdog will unlock the table; only states_lock state=unlocked or a reboot will")
            lock = previous if module.check_mode else lock_table(params["device"], params["lease"], params["lease_file"])
            changed = True
        else:
            # True and None (a lease whose watchdog vanished) both mean "may be locked".
            changed = previous.get("locked_by_lease") is not False
            if module.check_mode:
                lock = previous
            else:
                unlock_table(params["device"], params["lease_file"])
                lock = lease_view(params["lease_file"])
    except PfStateError as exc:
        exc.do_fail(module)
    module.exit_json(changed=changed, lock=lock, previous=previous, **timing(started))


if __name__ == "__main__":
    main()
