#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netbsd.pf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: states_dump
short_description: Dump the pf state table of a NetBSD host to a file
version_added: 0.1.0
description:
  - Reads the state table (C(DIOCGETSTATES)) and writes it to O(path) on the target, optionally filtered and with interfaces renamed.
  - The file is written atomically (temporary file in the same directory, C(fsync), rename, directory C(fsync)); a failed dump leaves
    the previous file untouched and no temporary file behind.
  - With O(fetch_to) the action plugin copies the dump to the controller afterwards and checks its SHA-256.
  - The dump can be restored with M(netbsd.pf.states_restore), inspected or converted with M(netbsd.pf.states_convert), and the
    C(pfs_binary) format also with NetBSD's C(pfs -b -r).
options:
  path:
    description:
      - Dump file on the target. Its directory must exist.
    type: path
    required: true
  format:
    description:
      - V(native) is this collection's C(.pfstate) format - a versioned header (record count, byte order, SHA-256 of the records,
        capture metadata - host name, NetBSD release and machine, capture time, hostid) followed by the records, compressed by default.
        Only this format lets M(netbsd.pf.states_restore) age the states by the time since the capture without being told.
      - V(pfs_binary) is what C(pfs -b -w) writes (a host-order count and the raw records, nothing for an empty table); NetBSD's
        C(pfs -b -r) can read it back.
      - V(pfs_text) is what C(pfs -w) writes. C(pfs) itself cannot restore it (its parser loads nothing); this collection can.
      - The hyphenated spellings V(pfs-binary) and V(pfs-text) are accepted too.
    type: str
    default: native
    choices: [native, pfs_binary, pfs_text, pfs-binary, pfs-text]
  compress:
    description:
      - Compress the records of a V(native) dump with zlib. Ignored by the other formats.
    type: bool
    default: true
  lock:
    description:
      - V(during), the default, locks the table around the single C(DIOCGETSTATES) copy only - not while filtering, encoding or writing -
        so the size query and the copy agree and no state changes under the copy. The window is reported in RV(lock_window_ms),
        typically milliseconds; stateful packets arriving in it are dropped and retransmitted.
      - V(none) never locks; use it where even a few milliseconds of dropped packets matter more than a snapshot of one instant.
      - V(hold) locks the table and leaves it locked when the module returns, guarded by the lease, so that no state changes between
        the dump and a reboot or a move to another firewall. Combine it with O(run_after).
      - V(during) and V(hold) are guarded by O(lease), so a SIGKILLed module or a lost connection cannot leave the table locked.
        A table already locked under a lease (M(netbsd.pf.states_lock)) stays locked with V(during).
    type: str
    default: during
    choices: [none, during, hold]
  backup:
    description:
      - Keep the previous dump as C(PATH.PID.YYYY-MM-DD@HH:MM:SS~) before replacing it.
    type: bool
    default: false
  run_after:
    description:
      - Command (argument list, no shell) started fully detached - its own session, standard streams on C(/dev/null) - once the dump
        is safely written, while the O(lock=hold) lock is held. The module returns right after starting it.
      - This is how to lock, dump and reboot in one task. Once the lock bites, the SSH connection that carries Ansible may stall if pf
        filters it with a stateful rule, so nothing may depend on a second task.
      - Requires O(lock=hold).
    type: list
    elements: str
  fetch_to:
    description:
      - Directory on the controller to fetch the dump into, as C(FETCH_TO/HOST/BASENAME_OF_PATH), where C(HOST) is the name of
        the host the module ran on (the delegated host with C(delegate_to)) encoded by the P(netbsd.pf.host_dir#filter) filter,
        so no inventory name can escape O(fetch_to) and two hosts never share a directory.
      - Directories are created with mode C(0700), the file written with mode C(0600); its SHA-256 is checked against RV(sha256).
        A host directory that is a symbolic link or is owned by another user than the controller's is refused (whoever owns
        it could swap the captures).
      - Handled by the action plugin; nothing is fetched in check mode. When the fetch fails, the task fails with a message
        and still returns the module's result (the dump is on the target).
    type: path
  mode:
    description:
      - Permissions of the dump file. State tables reveal who talks to whom; keep them private.
    type: raw
    default: '0600'
extends_documentation_fragment:
  - action_common_attributes
  - action_common_attributes.flow
  - action_common_attributes.files
  - files
  - netbsd.pf.attributes.platform
  - netbsd.pf.common
  - netbsd.pf.transforms.filters
  - netbsd.pf.transforms.rename
  - netbsd.pf.lock_lease
  - netbsd.pf.firewall
attributes:
  check_mode:
    support: full
    details: Reads the table without locking it and reports the counts and whether the file would change; writes nothing.
  diff_mode:
    support: none
  action:
    support: full
  async:
    support: none
  bypass_host_loop:
    support: none
  safe_file_operations:
    support: full
  vault:
    support: none
notes:
  - >-
    C(changed) compares content, not bytes - format, byte order, compression and the records after O(filters) and O(rename).
    The capture metadata of a V(native) header (time, host) is left out, otherwise every dump would differ. When the content is the
    same the file is not rewritten. On a live firewall the records themselves change all the time (expiry, counters, sequence numbers),
    so expect C(changed=true) there.
  - >-
    An existing V(native) file is judged by its header (CRC-checked, with the SHA-256 of its records), and its payload is read
    back against that header (decompressed as a stream, nothing stored); a file whose payload was damaged behind an intact
    header counts as changed and is rewritten. Inspecting a dump
    (M(netbsd.pf.states_convert) without O(netbsd.pf.states_convert#module:dest), or C(pfstate show FILE)) verifies it end to end.
    pfs files are compared byte by byte with the new dump.
  - O(owner), O(group) and the other file attributes are applied after the atomic rename.
  - >-
    With NPF (O(firewall=npf)) the whole NPF state - configuration and every connection - is saved with one C(IOC_NPF_SAVE)
    into a V(native) file of format version 2, kind C(npf), which older readers refuse as an unsupported kind. NPF has no
    table lock; one SAVE is one consistent snapshot, so O(lock) is not used. O(lock=hold) is accepted only with O(run_after),
    which then starts once the file is written (nothing is locked); O(filters), O(rename) and the pfs formats are refused.
    See the NPF guide (docs/guide-npf.md).
seealso:
  - module: netbsd.pf.states_restore
  - module: netbsd.pf.states_convert
  - module: netbsd.pf.states_lock
author:
  - netbsd.pf contributors (@netbsd-pf)
"""

EXAMPLES = r"""
- name: Dump the table and keep a copy on the controller
  netbsd.pf.states_dump:
    path: /var/db/pf/states.pfstate
    fetch_to: "{{ playbook_dir }}/captures"
  become: true
  register: dump

- name: Only the IPv4 TCP states of the outside interface, in the format of pfs -b
  netbsd.pf.states_dump:
    path: /var/db/pf/wan-tcp.pfs
    format: pfs_binary
    filters:
      interfaces: [wm0]
      protocols: [tcp]
      address_family: inet
  become: true

- name: Lock, dump and reboot in one task (the lease unlocks the table if the reboot never comes)
  netbsd.pf.states_dump:
    path: /var/db/pf/reboot.pfstate
    lock: hold
    lease: 600
    run_after: [/sbin/shutdown, -r, now, "pf states saved"]
  become: true
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
  description: The dump file.
  returned: always
  type: str
  sample: /var/db/pf/states.pfstate
format:
  description: The format written.
  returned: always
  type: str
  sample: native
byte_order:
  description: Byte order of the records (the target's).
  returned: always
  type: str
  sample: little
count:
  description: States in the dump.
  returned: always
  type: int
  sample: 2048
read:
  description: States read from the kernel.
  returned: always
  type: int
  sample: 2050
filtered:
  description: States left out by O(filters).
  returned: always
  type: int
  sample: 2
expired_awaiting_purge:
  description:
    - States of the dump exported with expire 0 by the kernel (expired, but not yet reached by the purge thread). They are
      kept in the file; M(netbsd.pf.states_restore) drops them and counts them as expired.
  returned: always
  type: int
  sample: 0
renamed:
  description: States whose interface was renamed by O(rename).
  returned: always
  type: int
  sample: 0
bytes:
  description: Size of the file.
  returned: unless check mode
  type: int
  sample: 165231
sha256:
  description: SHA-256 of the file, as written.
  returned: unless check mode
  type: str
  sample: 498351907145f74bcaeaaa4ac6092699d92cc7c2515748aabaa87a96bb750161
content_sha256:
  description:
    - Identity of the content, the basis of C(changed).
    - For pfs formats the SHA-256 of the file. For V(native) a SHA-256 over byte order, compression and the SHA-256 of the records
      (the one in the header), so it can be compared with an existing file without compressing the new dump.
  returned: always
  type: str
  sample: 290ac202f2e599361268ee5781fd3beb5f0d41648057c6f1b958cb7251d90a7c
header:
  description: The header of a V(native) dump, with its capture metadata.
  returned: when O(format=native), unless check mode
  type: dict
  sample: {"format_version": 1, "byte_order": "little", "compression": "zlib", "count": 2048,
           "metadata": {"captured_at": 1714566000.5, "captured_at_utc": "2024-05-01T12:20:00Z", "hostname": "fw1",
                        "release": "10.0", "machine": "amd64", "hostid": "1e35049e"}}
lock_window_ms:
  description:
    - How long the table was locked, in milliseconds - the C(DIOCGETSTATES) copy for O(lock=during), from locking to the end of the
      module for O(lock=hold). V(null) when nothing was locked.
  returned: always
  type: float
  sample: 3.2
lock:
  description: The lock mode used and, for O(lock=hold), the lease file's view of the lease now in force.
  returned: always
  type: dict
  sample: {"mode": "during", "taken": true}
by_interface:
  description: States in the dump by interface (V(all) for floating states).
  returned: always
  type: dict
  sample: {"all": 2000, "wm0": 48}
by_protocol:
  description: States in the dump by protocol name.
  returned: always
  type: dict
  sample: {"tcp": 1500, "udp": 500, "icmp": 48}
by_address_family:
  description: States in the dump by address family.
  returned: always
  type: dict
  sample: {"inet": 2000, "inet6": 48}
backup_file:
  description: The copy of the previous dump made by O(backup).
  returned: when O(backup=true) and a previous file was replaced
  type: str
  sample: /var/db/pf/states.pfstate.4242.2024-05-01@12:20:00~
run_after_pid:
  description: Process id of the O(run_after) command.
  returned: when O(run_after) was given and the dump was written
  type: int
  sample: 4321
firewall:
  description: V(npf) when the NPF state was dumped; absent for pf, whose result is unchanged.
  returned: when the dump is of NPF
  type: str
  sample: npf
npf_summary:
  description:
    - The NPF snapshot's counts - C(connections) = C(valid) + C(invalid), by protocol and state, NAT connections,
      C(keys_need_repair) (keys NetBSD 10 exported with the C(???) interface, repaired by the restore).
  returned: when the dump is of NPF
  type: dict
  sample: {"connections": 60, "valid": 60, "invalid": 0, "nat": 0, "keys_need_repair": 60}
fetched:
  description: Where the action plugin stored the dump on the controller.
  returned: when O(fetch_to) was given, unless check mode
  type: str
  sample: /home/admin/captures/fw1/states.pfstate
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.netbsd.pf.plugins.module_utils.argspec import (
    FORMAT_CHOICES, LOCK_LEASE_ARGSPEC, TRANSFORM_ARGSPEC, check_lease, creation_mode, module_argspec, transforms_from_params,
)
from ansible_collections.netbsd.pf.plugins.module_utils.errors import PfStateError
from ansible_collections.netbsd.pf.plugins.module_utils.firewall import DEFAULT_NPF_DEVICE, FIREWALL_CHOICES, detect_firewall
from ansible_collections.netbsd.pf.plugins.module_utils.operations import LOCK_MODES, dump_states
from ansible_collections.netbsd.pf.plugins.module_utils.progress import timing


def argument_spec():
    return module_argspec(dict(
        path=dict(type="path", required=True),
        format=dict(type="str", default="native", choices=list(FORMAT_CHOICES)),
        compress=dict(type="bool", default=True),
        lock=dict(type="str", default="during", choices=list(LOCK_MODES)),
        backup=dict(type="bool", default=False),
        run_after=dict(type="list", elements="str"),
        fetch_to=dict(type="path"),
        mode=dict(type="raw", default="0600"),
        firewall=dict(type="str", default="auto", choices=list(FIREWALL_CHOICES)),
        npf_device=dict(type="path", default=DEFAULT_NPF_DEVICE),
    ), TRANSFORM_ARGSPEC, LOCK_LEASE_ARGSPEC)


def _dump_npf(module):
    """The NPF branch: one SAVE into a native NPF file; the pf-only options are refused, not ignored."""
    # Only an NPF host loads the NPF workflows (a module's imports are compiled at every run).
    from ansible_collections.netbsd.pf.plugins.module_utils.npf_operations import dump_npf  # pylint: disable=import-outside-toplevel
    params = module.params
    # lock=hold is how run_after is asked for (the reboot role); NPF needs no lock for it.
    refused = [name for name, value in (("format=%s" % params["format"], params["format"] != "native"),
                                        ("lock=hold", params["lock"] == "hold" and not params["run_after"]),
                                        ("filters", params["filters"]), ("rename", params["rename"])) if value]
    if refused:
        module.fail_json(msg="%s: not supported with firewall=npf (NPF is saved whole, in the native format, by one "
                             "request that needs no table lock)" % ", ".join(refused))
    return dump_npf(params["path"], device_path=params["npf_device"], compress=params["compress"],
                    backup=params["backup"], mode=creation_mode(params["mode"]), check_mode=module.check_mode,
                    run_after=params["run_after"])


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        add_file_common_args=True,
        supports_check_mode=True,
    )
    started = time.monotonic()
    params = module.params
    if params["run_after"] is not None and (not params["run_after"] or params["lock"] != "hold"):
        module.fail_json(msg="run_after needs a non-empty command and lock=hold (the command runs while the table stays locked)")
    if params["lock"] != "none" and params["lease"] == 0:
        module.warn("lease=0: no watchdog guards the lock; a killed module could leave the table locked")
    try:
        check_lease(params["lease"])
        transforms = transforms_from_params(params)
        if detect_firewall(params["firewall"], params["device"], params["npf_device"]) == "npf":
            result = _dump_npf(module)
        else:
            result = dump_states(
                params["path"], fmt=params["format"], compress=params["compress"], transforms=transforms,
                lock=params["lock"], lease=params["lease"], lease_file=params["lease_file"], backup=params["backup"],
                mode=creation_mode(params["mode"]), check_mode=module.check_mode, device_path=params["device"],
                run_after=params["run_after"])
    except PfStateError as exc:
        exc.do_fail(module, path=params["path"])
    if not module.check_mode:
        file_args = module.load_file_common_arguments(params)
        result["changed"] = module.set_fs_attributes_if_different(file_args, result["changed"])
    result.update(timing(started, result["read"]))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
