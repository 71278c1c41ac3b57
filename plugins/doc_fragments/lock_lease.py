# -*- coding: utf-8 -*-
# Copyright: netbsd.pf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):

    DOCUMENTATION = r"""
options:
  lease:
    description:
      - How many seconds the state table may stay locked before a watchdog unlocks it.
      - The watchdog is a separate, fully detached process started by the module. It does not depend on the module, the SSH session or
        Ansible's C(async) wrapper, so it unlocks the table even when the module is killed with C(SIGKILL) or the connection is lost.
      - Before unlocking, the watchdog reads O(lease_file). If the lease was released (an explicit unlock) or taken over by a newer
        lease (another locking task), it exits without touching the table.
      - V(0) disables the watchdog. This is dangerous; a table left locked drops every packet of every stateful rule until someone
        unlocks it or the host reboots.
    type: int
    default: 300
notes:
  - >-
    The state lock (C(DIOCSETLCK)) is a NetBSD extension of pf. While the table is locked the packet path ignores every existing state,
    so established connections stall, and packets that match a rule with C(keep state), C(modulate state) or C(synproxy) are dropped
    (counted as C(state-locked)); stateless rules still pass. States do not expire while locked; states whose timeout passed during the
    lock are purged soon after unlocking.
  - >-
    The lock blocks no ioctl (dumping, adding and clearing states all keep working), survives C(pfctl -d)/C(pfctl -e), is not tied to
    a process and cannot be read back from the kernel. Only an unlock or a reboot clears it.
  - >-
    If pf filters the SSH connection that carries Ansible with a stateful rule, that connection stalls as soon as the table is locked.
    Locking modules therefore return before the lock can bite, and keep it short, or hold it only right before a reboot.
"""
