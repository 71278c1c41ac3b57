#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netbsd.pf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: states_restore
short_description: Restore the pf state table of a NetBSD host from a dump
version_added: 0.1.0
description:
  - Reads a state dump (the collection's C(.pfstate) format, or a file written by NetBSD's C(pfs -b) or C(pfs -w)),
    verifies all of it, and adds its states to the running pf state table with C(DIOCADDSTATES).
  - Nothing is sent to the kernel before the whole file has been read and checked (checksums, header, every record),
    so a damaged or truncated dump adds nothing.
  - States already in the table are skipped, states that would collide with the table are reported as conflicts, states
    whose remaining time ran out since the capture are dropped, and every input state is accounted for in exactly one of
    RV(restored), RV(already_present), RV(rejected), RV(expired) and RV(filtered).
  - Running the same restore twice changes nothing the second time.
  - With O(src) the dump is taken from the controller; the action plugin copies it to a private temporary file on the
    target (mode C(0600)), which the module removes as soon as it has opened it, so that not even an interrupted
    C(ansible-playbook) (Ctrl-C, a dropped connection) leaves it behind; see O(pushed_copy).
author:
  - netbsd.pf contributors (@netbsd-pf)
options:
  path:
    description:
      - Dump file on the target.
      - Exactly one of O(path) and O(src) is required.
    type: path
  src:
    description:
      - Dump file on the controller; relative paths are searched like C(ansible.builtin.copy) does (the role's or
        playbook's C(files/) directory). Vault-encrypted files are decrypted.
      - Handled by the action plugin, which pushes the file and runs the module with O(path) set to the copy.
    type: path
  format:
    description:
      - Format of the dump. V(auto) recognises C(.pfstate) files by their magic, pfs text by its leading C(state) keyword
        and pfs binary files by their size.
      - V(pfs_binary) and V(pfs_text) are accepted as spellings of V(pfs-binary) and V(pfs-text).
    type: str
    choices: [auto, native, pfs-binary, pfs-text, pfs_binary, pfs_text]
    default: auto
  byte_order:
    description:
      - Byte order of the records of a C(pfs -b) file, which carries no marker of its own (reference section 7.2).
        Needed only when the size check cannot tell, or to restore a dump taken on a host of the other byte order.
      - The records are converted to the kernel's byte order before they are sent.
    type: str
    choices: [little, big]
  age:
    description:
      - How to account for the time between the capture and the restore.
      - V(auto) subtracts the seconds elapsed since the capture from every state's remaining lifetime. The capture time
        comes from O(captured_at) if given, else from the C(.pfstate) header, else (pfs files) from the modification time
        of the controller file (O(src)) or of the target file (O(path)); RV(age_source) says which was used.
      - V(none) restores the remaining lifetimes as dumped. A number subtracts that many seconds.
      - States whose time ran out are dropped and counted in RV(expired). They are never sent with a remaining time of 0,
        which the kernel would read as a fresh full timeout.
    type: str
    default: auto
  captured_at:
    description:
      - When the dump was taken, as seconds since the epoch or an ISO 8601 date-time (V(2024-05-01T12:30:00Z); UTC
        unless an offset is given). Overrides the time recorded in a C(.pfstate) header.
      - Useful for C(pfs) files, which record no time; their modification time is only a guess once they have been copied.
    type: str
  pushed_copy:
    description:
      - Set by the action plugin with O(src); there is no reason to set it by hand. A O(path) not named as the action plugin
        names its copy (C(ansible-tmp-*/netbsd-pf-restore-src.dump)) is refused, so a dump of one's own is never removed.
      - O(path) is the private copy the action plugin pushed into Ansible's remote temporary directory. The module removes
        it as soon as it has opened it (and reads on from the open descriptor), also when it is not a valid dump.
      - It also removes the copies that earlier pushes, interrupted before the module ran, left in other C(ansible-tmp-*)
        directories of the same remote temporary directory (files of the same name and owner not written for two minutes,
        and the C(states.dump) copies that version 0.1.0 left), and returns them in RV(removed_stale_copies).
    type: bool
    default: false
  source_mtime:
    description:
      - Modification time of the O(src) file on the controller, seconds since the epoch.
      - Set by the action plugin; there is no reason to set it by hand.
    type: float
  on_conflict:
    description:
      - What to do with states that the kernel would refuse because the table holds a different state with the same
        connection key on the same interface, the same id and creator, or a colliding translated (ext/gwy) key.
      - V(skip) restores everything else and lists the conflicts in RV(rejected_states).
      - V(fail) refuses the whole restore, before adding anything, and lists the conflicts.
    type: str
    choices: [skip, fail]
    default: skip
  limit_policy:
    description:
      - What to do when the states to add do not fit under the state limit (C(set limit states), C(DIOCGETLIMIT)),
        given how many states the table holds (C(DIOCGETSTATUS)).
      - V(refuse) fails before adding anything.
      - V(fit) restores as many as fit, in this order of priority, and rejects the rest with reason C(state limit)
        established TCP connections (timeout C(tcp.established)), other TCP states, UDP, other protocols, ICMP and ICMPv6;
        within each class the states with the longest remaining lifetime first.
    type: str
    choices: [refuse, fit]
    default: refuse
  chunk_size:
    description:
      - Number of states per C(DIOCADDSTATES) call.
      - When a call fails, the table is read back to find out which of its states got in.
    type: int
    default: 1000
  fix_mss:
    description:
      - NetBSD's import path byte-swaps each peer's MSS (C(ntohs)) although the export does not, so on little-endian hosts a
        plain dump/restore turns an MSS of 1460 into 46085 (reference section 8, item 1).
      - When V(true), the MSS of each record is pre-swapped on little-endian kernels so that the restored value equals the
        dumped one. On big-endian kernels nothing needs doing.
      - Set to V(false) only to reproduce C(pfs -R) exactly.
    type: bool
    default: true
  lock:
    description:
      - V(during) locks the state table (C(DIOCSETLCK)) from just before reading the table until the last state is added, so
        no new stateful connection can slip in between the conflict check and the add. The lock is guarded by a lease
        (O(lease), O(lease_file)) and released in all cases.
      - If the table is already locked under a lease (M(netbsd.pf.states_lock)), the restore leaves that lock alone.
      - V(none) does not lock; new connections created during the restore show up as conflicts or, if they appear
        between the check and the add, as states rejected by the kernel.
    type: str
    choices: [none, during]
    default: during
  restore_lock_file:
    description:
      - File that serialises restores on one host (an exclusive C(flock)). It must be the same for every restore on the host,
        whatever O(lease_file) each one names, so that two restores never add states at the same time; the default is
        C(/var/run/netbsd_pf_restore.lock). Set it only where /var/run is not the host's own (the inventory variable
        C(netbsd_pf_restore_lock_file), which the roles pass on).
      - A second restore waits for the first one, up to O(restore_lock_timeout) seconds.
      - Root writes this file, so it is never followed through a symbolic link, and it is refused in a directory that other
        users can write to unless that directory is sticky and the file belongs to the user running the module.
    type: path
  restore_lock_timeout:
    description:
      - Seconds to wait for another restore on the same host to finish; V(0) fails at once.
    type: int
    default: 60
  purge_wait:
    description:
      - NetBSD frees cleared, killed and expired states only when its purge thread reaches them, about
        C(1 + states / 10) states a second and never while the table is locked, and until then they still fill the
        state pool. After a flush of a full table (M(netbsd.pf.states_flush), a migration with a source flush) the
        kernel can refuse new states with C(ENOMEM) for a minute or more (10,000 cleared states take about 71 seconds).
      - When C(DIOCADDSTATES) fails at the state limit while such states are pending, the restore waits up to this many
        seconds in all for the purge, releasing the table lock it holds while it waits (the purge does not run while
        the table is locked) and taking it again after; RV(purge_wait) reports the waits.
      - The O(limit_policy) check counts pending states as free room when waiting is allowed.
      - V(0) never waits; pending states then count as occupied and states that do not fit are rejected.
      - The wait ends 15 seconds before the restore's lock lease (O(lease)) would run out.
    type: int
    default: 180
  npf_nat:
    description:
      - NPF only. What to do with connections that carry a NAT entry.
      - V(drop) leaves them out and counts them in RV(nat). On NetBSD 10 a restored NAT entry keeps an address length of 0,
        so while it lives every later C(IOC_NPF_SAVE) (C(npfctl save), C(npfctl list), the next dump) fails with C(ENOMEM).
      - V(keep) restores them when the running configuration has a NAT policy equal to the saved one (its C(nat-policy) id is
        mapped), with their port inside the port map; accept that saves fail until they expire.
    type: str
    choices: [drop, keep]
    default: drop
  npf_running:
    description:
      - NPF only. A load that carries connections replaces every running connection, and the running ones are newer than the
        snapshot.
      - V(merge) loads them again together with the snapshot's (RV(merged_running)); V(refuse) fails, loading nothing, when
        the running table holds connections the snapshot does not.
    type: str
    choices: [merge, refuse]
    default: merge
  npf_floating_interface:
    description:
      - NPF only, for a pf dump restored onto NPF (a migration). pf's floating states (interface C(all)) record no interface,
        NPF connections are bound to one. Name the interface to bind them to; unset, they are left out with the reason
        C(floating interface) unless the NPF host keys connections by neither interface nor direction.
    type: str
extends_documentation_fragment:
  - action_common_attributes
  - action_common_attributes.flow
  - action_common_attributes.files
  - netbsd.pf.attributes.platform
  - netbsd.pf.common
  - netbsd.pf.transforms.filters
  - netbsd.pf.transforms.rename
  - netbsd.pf.lock_lease
  - netbsd.pf.firewall
attributes:
  action:
    support: full
  async:
    support: none
  bypass_host_loop:
    support: none
  check_mode:
    support: full
    details: Reads the file and the table and predicts every count; adds nothing and takes no lock.
  diff_mode:
    support: full
    details: Number of states per interface and protocol before and after (predicted in check mode).
  safe_file_operations:
    support: none
  vault:
    support: full
    details: O(src) may be vault-encrypted.
notes:
  - Restored states are attached to the default rule, with creation time now and zeroed counters; rule numbers, counters,
    C(log) and source nodes are not restored by NetBSD's kernel. Their expiry follows the kernel's current default timeouts.
  - The kernel answers C(ENOMEM) for a duplicate, a collision and a full table alike, and stops at the first failing state
    of a call. The module predicts those cases; if one still happens (another process added a state in between), it reads
    the table back, counts the states that got in (the table's order tells its own, a run of consecutive positions, from
    identical copies added by someone else, which never count as restored), settles the rest of the plan against that table, sends the failing state
    again alone and rejects it only if it fails alone, with the reason. Once the table is at its state limit, the remaining
    states are rejected without further calls.
  - Needs a writable C(/dev/pf) (root). C(DIOCADDSTATES) is allowed at any securelevel.
  - >-
    With NPF (O(firewall=npf)) the dump is an NPF snapshot of M(netbsd.pf.states_dump), or a pf dump, whose states are converted
    to NPF connections (TCP, UDP, ICMPv4; RV(conversion) names every state that cannot be, with its reason). One
    C(IOC_NPF_LOAD) carries the running configuration, the snapshot's connections (validated, keys repaired, deduplicated)
    and the running connections (O(npf_running)), under NPF's 4 MiB cap (O(limit_policy=fit) keeps established TCP first).
    Every input record is in exactly one of RV(restored), RV(already_running), RV(unconvertible), RV(expired), RV(nat),
    RV(duplicate), RV(invalid), RV(over_limit) and RV(filtered). O(filters) and O(rename) apply to a pf dump (before the
    conversion) and are refused for an NPF snapshot; O(on_conflict=fail) and O(chunk_size) are pf-only.
    See docs/guide-npf.md.
seealso:
  - module: netbsd.pf.states_dump
  - module: netbsd.pf.states_flush
  - module: netbsd.pf.states_lock
"""

EXAMPLES = r"""
- name: Restore the states dumped before the reboot
  netbsd.pf.states_restore:
    path: /var/db/pf/states.pfstate

- name: Restore a pfs -b dump taken on the controller, onto renamed interfaces
  netbsd.pf.states_restore:
    src: dumps/{{ inventory_hostname }}.bin
    captured_at: "2024-05-01T12:30:00Z"
    rename:
      wm0: ixg0

- name: Only TCP states, refuse if anything conflicts, restore what fits
  netbsd.pf.states_restore:
    path: /var/db/pf/states.pfstate
    filters:
      protocols: [tcp]
    on_conflict: fail
    limit_policy: fit
  register: restored

- name: Show what could not be restored
  ansible.builtin.debug:
    var: restored.rejected_states
  when: restored.rejected > 0
"""

RETURN = r"""
firewall:
  description: V(npf) when the restore was onto NPF; absent for pf, whose result is unchanged.
  returned: when restoring onto NPF
  type: str
  sample: npf
source_kind:
  description: V(npf) for an NPF snapshot, V(pf) for a pf dump converted to NPF connections.
  returned: when restoring onto NPF
  type: str
loaded:
  description: Connections in the load (the snapshot's plus the running ones merged back).
  returned: when restoring onto NPF
  type: int
already_running:
  description: Connections of the dump the running table already holds (not loaded twice).
  returned: when restoring onto NPF
  type: int
merged_running:
  description: Running connections newer than the dump, loaded again so the load does not destroy them (O(npf_running)).
  returned: when restoring onto NPF
  type: int
unconvertible:
  description: pf states that cannot become NPF connections; RV(conversion) lists them with their reasons.
  returned: when restoring onto NPF
  type: int
nat:
  description: Connections left out because of their NAT entry (O(npf_nat)).
  returned: when restoring onto NPF
  type: int
duplicate:
  description: Connections whose key the kernel would see twice.
  returned: when restoring onto NPF
  type: int
invalid:
  description: Records the kernel would refuse (one would fail the whole load), left out.
  returned: when restoring onto NPF
  type: int
over_limit:
  description: Connections left out to keep the load under 4 MiB, or on interfaces beyond the 64 names NPF registers per boot or flush (O(limit_policy=fit)).
  returned: when restoring onto NPF
  type: int
repaired:
  description: Connections whose keys were repaired (NetBSD 10 exports the interface of a key as C(???)).
  returned: when restoring onto NPF
  type: int
accounted:
  description: Whether the counts add up to RV(read) (always true; a plan that does not add up is never loaded).
  returned: when restoring onto NPF
  type: bool
rejected_connections:
  description: The first 100 connections left out, with reason, why and whether they came from the dump or the running table.
  returned: when restoring onto NPF
  type: list
  elements: dict
conversion:
  description: For a pf dump, C(input), C(converted), C(unconvertible), C(reasons) (count per reason) and C(rejected) (the first
    100 states that could not be converted, each with its reason).
  returned: when a pf dump was restored onto NPF
  type: dict
  sample: {"input": 150, "converted": 80, "unconvertible": 70, "reasons": {"floating interface": 40, "protocol": 30}}
verified:
  description: Loaded connections found again by C(IOC_NPF_CONN_LOOKUP) (a sample of 16).
  returned: when restoring onto NPF
  type: int
duration:
  description: Seconds the module worked (see the README's table of the return values common to all modules).
  returned: success
  type: float
  sample: 0.412
states_per_second:
  description: RV(read) divided by RV(duration); V(null) when too fast to measure.
  returned: success
  type: int
  sample: 480000
path:
  description: The dump file restored (with O(src), the temporary copy on the target, removed afterwards).
  returned: success
  type: str
bytes:
  description: Size of RV(path).
  returned: success
  type: int
read:
  description: Number of states in the dump. Equals RV(restored) + RV(already_present) + RV(rejected) + RV(expired) + RV(filtered).
  returned: success
  type: int
count:
  description: States selected by O(filters), RV(read) - RV(filtered); each is restored, already present, rejected or expired.
  returned: success
  type: int
total:
  description: Deprecated alias of RV(read) (its name in 0.1.0), to be removed in 1.0.0.
  returned: success
  type: int
restored:
  description: States added to the table (in check mode, states that would be added).
  returned: success
  type: int
already_present:
  description:
    - States already in the table (same id and creator with the same key, or, for states without an id, the same key).
    - Includes RV(appeared_during_restore).
  returned: success
  type: int
appeared_during_restore:
  description:
    - Of RV(already_present), the states that an identical copy, added by someone else (a pfsync peer, another writer)
      while the restore ran, beat into the table. They are in the table; this restore did not add them.
  returned: success
  type: int
rejected:
  description:
    - States not restored because of a conflict, the state limit or a kernel error.
    - On NPF, the connections left out for any reason but expiry (RV(invalid), RV(nat), RV(duplicate), RV(over_limit),
      RV(unconvertible)); RV(already_present) equals RV(already_running) and RV(filtered) is 0, so the sum above holds on both.
  returned: success
  type: int
expired:
  description: States whose remaining lifetime ran out by the time of the restore (after ageing).
  returned: success
  type: int
filtered:
  description: States left out by O(filters).
  returned: success
  type: int
rejected_states:
  description: The first 100 rejected states, with the record number in the file, a category, the reason and the state.
  returned: success
  type: list
  elements: dict
  sample:
    - record: 2
      category: conflict
      reason: "same connection already in the table on all as out on all proto tcp 10.0.0.1:1025 -> 203.0.113.5:443 id 0000000000000065 cid 0badcafe"
      state: "out on all proto tcp 10.0.0.1:1025 -> 203.0.113.5:443 id 0000000000000002 cid 0badcafe"
rejected_by_reason:
  description:
    - Count of rejected states by category (C(conflict), C(state limit), C(memory), C(invalid), C(interface)).
  returned: success
  type: dict
  sample: {"conflict": 2}
rejected_states_truncated:
  description: Whether RV(rejected_states) lists fewer states than RV(rejected).
  returned: success
  type: bool
format:
  description: Format of the dump.
  returned: success
  type: str
  sample: native
byte_order:
  description: Byte order of the records in the dump.
  returned: success
  type: str
  sample: little
kernel_byte_order:
  description: Byte order of the target's kernel; records were converted to it.
  returned: success
  type: str
age_seconds:
  description: Seconds subtracted from every state's remaining lifetime.
  returned: success
  type: int
age_source:
  description: Where the capture time came from (C(captured_at), C(header), C(controller file mtime), C(file mtime)), C(option) for a fixed O(age), or C(none).
  returned: success
  type: str
captured_at:
  description: Capture time used for ageing, seconds since the epoch (null when not ageing by capture time).
  returned: success
  type: float
mss_fixed:
  description: Whether the MSS values were pre-swapped for a little-endian kernel.
  returned: success
  type: bool
state_limit:
  description: The kernel's state limit.
  returned: success
  type: int
states_before:
  description: States in the table before the restore (C(DIOCGETSTATUS), includes states not yet purged).
  returned: success
  type: int
states_after:
  description: States in the table after the restore (predicted in check mode).
  returned: success
  type: int
add_calls:
  description: Number of C(DIOCADDSTATES) calls made.
  returned: success
  type: int
add_failures:
  description: Calls the kernel refused (a chunk, or a state sent again alone).
  returned: success
  type: int
table_reads:
  description: Times the table was read back to settle a refused call; at most one per refused call, 0 when nothing failed.
  returned: success
  type: int
removed_stale_copies:
  description: Copies of earlier interrupted pushes that were removed (see O(pushed_copy)).
  returned: when O(pushed_copy=true)
  type: list
  elements: str
  sample: ["/home/admin/.ansible/tmp/ansible-tmp-1717000000.1-4242-1/netbsd-pf-restore-src.dump"]
states_awaiting_purge:
  description:
    - States holding the state pool that the kernel's purge will free, when the restore began. These are unlinked states
      C(DIOCGETSTATUS) still counts but C(DIOCGETSTATES) no longer shows, plus shown states exported with expire 0.
  returned: success
  type: int
purge_wait:
  description:
    - How the restore waited for the kernel's purge (O(purge_wait)), with the keys C(limit_seconds), C(waits),
      C(waited_seconds), C(freed_while_waiting), C(lock_released) (the table lock was released during a wait) and
      C(stopped) (why it does not or no longer waits, or null).
  returned: success, not in check mode
  type: dict
  sample: {"limit_seconds": 180, "waits": 3, "waited_seconds": 12.0, "freed_while_waiting": 3002, "lock_released": true, "stopped": null}
adaptive:
  description:
    - Adaptive timeouts of the target (C(adaptive.start), C(adaptive.end)) and what the restore did about them. With
      more default-rule states than C(start) the kernel scales every timeout by C((end - states) / (end - start)), but
      the import computes the last activity from the full timeout, so a restored state would die early. The restore
      adds the difference to each record's expire so it keeps the remaining time it was dumped with
      (C(compensated)); C(shortened) states would need more than their scaled timeout and got that instead.
  returned: success
  type: dict
  sample: {"start": 6000, "end": 12000, "default_rule_states_after": 9500, "scaling": true, "compensated": 9500, "shortened": 120, "shortened_by_max": 35}
expire_capped:
  description:
    - States whose remaining time in the file exceeded this host's timeout for them (a corrupt file, or a source with
      longer timeouts), given that timeout instead; the kernel's import would otherwise wrap the value and keep the
      state for decades or expire it on arrival. A warning gives the count. C(expire_capped_by_max) is the most seconds
      a state lost.
  returned: success
  type: int
  sample: 0
expire_capped_by_max:
  description: The most seconds of remaining time one capped state lost (see RV(expire_capped)).
  returned: success
  type: int
  sample: 0
lock:
  description:
    - Whether the table was locked for the restore.
    - C(ended) is present when the restore did not unlock the table at its end because its lease was no longer its own -
      V(taken_over) (another holder locked the table under a new lease during the restore, C(taken_over_by) names it; the
      table stays locked under that lease), V(released) (someone unlocked it) or V(expired) (the lease ran out and the
      watchdog unlocked it); a warning says the same.
  returned: success
  type: dict
  sample: {"mode": "during", "taken": true, "lease_seconds": 300}
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.netbsd.pf.plugins.module_utils.argspec import (
    LOCK_LEASE_ARGSPEC, TRANSFORM_ARGSPEC, check_lease, module_argspec, transforms_from_params,
)
from ansible_collections.netbsd.pf.plugins.module_utils.errors import PfStateError
from ansible_collections.netbsd.pf.plugins.module_utils.firewall import (
    DEFAULT_NPF_DEVICE, FIREWALL_CHOICES, NAT_CHOICES, RUNNING_CHOICES, detect_firewall,
)
from ansible_collections.netbsd.pf.plugins.module_utils.progress import timing
from ansible_collections.netbsd.pf.plugins.module_utils.pushed import PUSHED_NAME, is_pushed_copy, remove_stale_copies
from ansible_collections.netbsd.pf.plugins.module_utils.restore import (
    DEFAULT_CHUNK_SIZE, DEFAULT_PURGE_WAIT, restore_file,
)
from ansible_collections.netbsd.pf.plugins.module_utils.views import summary_text


def argument_spec():
    return module_argspec(dict(
        path=dict(type="path"),
        src=dict(type="path"),
        format=dict(type="str", default="auto", choices=["auto", "native", "pfs-binary", "pfs-text", "pfs_binary", "pfs_text"]),
        byte_order=dict(type="str", choices=["little", "big"]),
        age=dict(type="str", default="auto"),
        captured_at=dict(type="str"),
        source_mtime=dict(type="float"),
        pushed_copy=dict(type="bool", default=False),
        on_conflict=dict(type="str", default="skip", choices=["skip", "fail"]),
        limit_policy=dict(type="str", default="refuse", choices=["refuse", "fit"]),
        chunk_size=dict(type="int", default=DEFAULT_CHUNK_SIZE),
        fix_mss=dict(type="bool", default=True),
        lock=dict(type="str", default="during", choices=["none", "during"]),
        restore_lock_file=dict(type="path"),
        restore_lock_timeout=dict(type="int", default=60),
        purge_wait=dict(type="int", default=DEFAULT_PURGE_WAIT),
        firewall=dict(type="str", default="auto", choices=list(FIREWALL_CHOICES)),
        npf_device=dict(type="path", default=DEFAULT_NPF_DEVICE),
        npf_nat=dict(type="str", default="drop", choices=list(NAT_CHOICES)),
        npf_running=dict(type="str", default="merge", choices=list(RUNNING_CHOICES)),
        npf_floating_interface=dict(type="str"),
    ), TRANSFORM_ARGSPEC, LOCK_LEASE_ARGSPEC)


def _restore_npf(module, transforms):
    """The NPF branch: one planned IOC_NPF_LOAD of an NPF snapshot or of a pf dump converted."""
    # Only an NPF host loads the NPF workflows (a module's imports are compiled at every run).
    from ansible_collections.netbsd.pf.plugins.module_utils.npf_operations import restore_npf  # pylint: disable=import-outside-toplevel
    params = module.params
    if params["on_conflict"] == "fail":
        module.fail_json(msg="on_conflict=fail: pf-only, not supported with firewall=npf (see npf_running)")
    fmt = params["format"].replace("_", "-")
    return restore_npf(
        params["path"], device_path=params["npf_device"], age=params["age"], captured_at=params["captured_at"],
        source_mtime=params["source_mtime"], nat=params["npf_nat"], limit_policy=params["limit_policy"],
        running_conns=params["npf_running"], floating_interface=params["npf_floating_interface"],
        check_mode=module.check_mode, remove_after_open=params["pushed_copy"],
        restore_lock_file=params["restore_lock_file"], restore_lock_timeout=params["restore_lock_timeout"],
        fmt=None if fmt == "auto" else fmt, byte_order=params["byte_order"], transforms=transforms)


def _exit_npf(module, result, started, stale_copies):
    """The NPF result: its own diff (connections by interface and protocol)."""
    before, after = result.pop("diff_before"), result.pop("diff_after")
    result.update(timing(started, result["read"]))
    if module.params["pushed_copy"]:
        result["removed_stale_copies"] = stale_copies
    if module._diff:
        result["diff"] = {"before": before, "after": after, "before_header": "NPF connections (by interface, protocol)",
                          "after_header": "NPF connections after the restore"}
    module.exit_json(**result)


def _check_options(module):
    params = module.params
    if params["src"] and not params["path"]:
        module.fail_json(msg="src is handled by the netbsd.pf.states_restore action plugin, which was bypassed; "
                             "use path for a file on the target")
    if params["pushed_copy"] and params["path"] and not is_pushed_copy(params["path"]):
        # The copy is removed once opened: never a dump of the operator's, whatever the task says.
        module.fail_json(msg="pushed_copy is for the copy the states_restore action plugin pushes (ansible-tmp-*/%s); "
                             "%s is not one and would be removed: leave pushed_copy unset" % (PUSHED_NAME, params["path"]))
    age = params["age"]
    if age not in ("auto", "none") and not (age.isdigit()):
        module.fail_json(msg="age must be auto, none or a whole number of seconds, not %r" % age)
    if params["chunk_size"] < 1:
        module.fail_json(msg="chunk_size must be at least 1")
    if params["restore_lock_timeout"] < 0:
        module.fail_json(msg="restore_lock_timeout must not be negative")
    if params["purge_wait"] < 0:
        module.fail_json(msg="purge_wait must be 0 (never wait for the kernel's purge) or a number of seconds")


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        required_one_of=[("path", "src")],
        supports_check_mode=True,
    )
    started = time.monotonic()
    params = module.params
    stale_copies = []
    _check_options(module)
    if params["pushed_copy"] and params["path"]:
        try:
            stale_copies = remove_stale_copies(params["path"])
        except OSError as exc:
            module.warn("could not look for copies left by interrupted pushes: %s" % exc)
    try:
        check_lease(params["lease"])
        transforms = transforms_from_params(params)
        npf = detect_firewall(params["firewall"], params["device"], params["npf_device"],
                              discard_on_error=params["path"] if params["pushed_copy"] else None) == "npf"
        if npf:
            report = _restore_npf(module, transforms)
        else:
            report = restore_file(
                params["path"], fmt=params["format"].replace("_", "-"), byte_order=params["byte_order"],
                transforms=transforms, age=params["age"], captured_at=params["captured_at"],
                source_mtime=params["source_mtime"], on_conflict=params["on_conflict"],
                limit_policy=params["limit_policy"], chunk_size=params["chunk_size"], fix_mss=params["fix_mss"],
                lock=params["lock"], lease=params["lease"], lease_file=params["lease_file"],
                restore_lock_file=params["restore_lock_file"], restore_lock_timeout=params["restore_lock_timeout"],
                purge_wait=params["purge_wait"], check_mode=module.check_mode, device_path=params["device"],
                remove_after_open=params["pushed_copy"])
    except PfStateError as exc:
        exc.do_fail(module, path=params["path"])
    if npf:
        _exit_npf(module, report, started, stale_copies)
    for warning in report.pop("warnings", []):
        module.warn(warning)
    before = report.pop("summary_before")
    after = report.pop("summary_after")
    result = dict(report, changed=report["restored"] > 0, path=params["path"],
                  read=report["total"], count=report["total"] - report["filtered"])
    result.update(timing(started, report["total"]))
    if params["pushed_copy"]:
        result["removed_stale_copies"] = stale_copies
    if module._diff:
        result["diff"] = {"before": summary_text(before), "after": summary_text(after),
                          "before_header": "pf states (by interface, protocol)", "after_header": "pf states after the restore"}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
