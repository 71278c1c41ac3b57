# -*- coding: utf-8 -*-
# Copyright: netbsd.pf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):

    # Options every member of the netbsd.pf.states action group accepts, so that
    # module_defaults for group/netbsd.pf.states can set them once for all six.
    DOCUMENTATION = r"""
options:
  device:
    description:
      - The pf device to open.
      - Every module of the C(netbsd.pf.states) action group accepts it, so it can be set once with
        C(module_defaults) for C(group/netbsd.pf.states). M(netbsd.pf.states_convert) never opens the device and ignores it.
    type: path
    default: /dev/pf
  lease_file:
    description:
      - File that records the current lease (token, deadline, owner process).
      - It is the only record of who locked the table; the kernel has no way to read the lock back.
      - Give every host its own path when several hosts share a file system (test fleets, jails), and give every module, role and
        C(pfstate) run on a host the same one; C(module_defaults) for C(group/netbsd.pf.states) does that for the modules.
      - Modules that lock (M(netbsd.pf.states_dump), M(netbsd.pf.states_restore), M(netbsd.pf.states_lock)) record their lease here;
        M(netbsd.pf.states_info) and M(netbsd.pf.states_flush) report the lock from it (their C(lock) return value).
        M(netbsd.pf.states_convert) never locks and ignores it.
      - Root writes this file, so it is never followed through a symbolic link and is created exclusively (mode 0600); it is
        refused if it has other hard links, or if its directory can be written by other users and is not sticky (or is
        sticky and the file belongs to someone else).
      - A task that locked the table unlocks it at its end only while its own lease is still the one recorded here; if
        another task took the lease over meanwhile, the table stays locked under that lease.
    type: path
    default: /var/run/netbsd_pf_lock.lease
"""
