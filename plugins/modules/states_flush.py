#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netbsd.pf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: states_flush
short_description: Remove states from the pf state table of a NetBSD host
version_added: 0.1.0
description:
  - Removes every state (O(all=true)), the states bound to one interface (O(interface) alone, C(DIOCCLRSTATES)), or the
    states that match criteria like C(pfctl -k) (C(DIOCKILLSTATES)).
  - Typical use is the end of a migration, to clear the old firewall once its states live on the new one.
  - Returns the exact number of states removed, counted from the table before and after; the kernel's own count is
    modulo 256.
  - An empty selection is refused; say O(all=true) to remove everything.
  - O(filters) selects states the way M(netbsd.pf.states_dump), M(netbsd.pf.states_restore) and M(netbsd.pf.states_info) do. Such a
    selection cannot be sent to the kernel as one request, so each selected state is removed by a C(DIOCKILLSTATES) keyed exactly to
    it; every such call walks the whole table, so prefer the kernel criteria (O(interface), O(protocol), O(source)...) to remove many
    thousands of states. O(filters) and the kernel criteria can be combined; a state must match both.
author:
  - netbsd.pf contributors (@netbsd-pf)
options:
  all:
    description:
      - Remove every state, floating or bound. Cannot be combined with any other criterion.
    type: bool
    default: false
  interface:
    description:
      - Only states bound to this interface. Floating states (the default unless rules use C(if-bound)) carry the name
        C(all), so V(wm0) does not remove them; V(all) removes exactly the floating ones.
    type: str
  address_family:
    description:
      - Only IPv4 (V(inet)) or IPv6 (V(inet6)) states. Implied by O(source) and O(destination).
    type: str
    choices: [inet, inet6]
  protocol:
    description:
      - Only states of this IP protocol, by NetBSD name (V(tcp), V(udp), V(icmp), V(ipv6-icmp)) or number.
    type: str
  source:
    description:
      - Only states whose source address is in this network (CIDR; a bare address is a host).
      - As in the kernel, the source of an outbound state is its lan (internal) host, the source of an inbound state its
        ext (external) host.
    type: str
  destination:
    description:
      - Only states whose destination address is in this network; the ext host of outbound states, the lan host of inbound ones.
    type: str
  source_port:
    description:
      - Only states whose source port is this port (V(53)) or in this inclusive range (V(1024-65535)).
    type: str
  destination_port:
    description:
      - Only states whose destination port is this port or in this inclusive range.
    type: str
extends_documentation_fragment:
  - action_common_attributes
  - netbsd.pf.attributes.platform
  - netbsd.pf.common
  - netbsd.pf.transforms.filters
attributes:
  check_mode:
    support: full
    details: Reads the table and counts the states the kernel would remove, with the kernel's matching rules.
  diff_mode:
    support: full
    details: Number of states per interface and protocol before and after.
notes:
  - Needs a writable C(/dev/pf) (root). At securelevel 2 and above the kernel refuses to remove states (C(EPERM)); only a
    reboot with a lower securelevel lifts that.
  - Removed states are unlinked at once and freed by pf's purge thread; the purge does not run while the table is
    locked, so C(DIOCGETSTATUS) may count them a little longer.
  - States of an address family other than inet and inet6 never match DIOCKILLSTATES criteria; O(all) and O(interface)
    remove them.
seealso:
  - module: netbsd.pf.states_restore
  - module: netbsd.pf.states_info
"""

EXAMPLES = r"""
- name: Clear the old firewall after the migration
  netbsd.pf.states_flush:
    all: true

- name: Remove the states of one customer network
  netbsd.pf.states_flush:
    source: 192.0.2.0/24

- name: Remove the outbound states that touch a decommissioned network, whichever side it is on
  netbsd.pf.states_flush:
    filters:
      networks: [198.51.100.0/24]
      direction: out

- name: How many DNS states would go?
  netbsd.pf.states_flush:
    protocol: udp
    destination_port: "53"
  check_mode: true
  register: dns
"""

RETURN = r"""
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
read:
  description: States in the table read before the removal.
  returned: success
  type: int
count:
  description: States that matched the selection in the table read before the removal.
  returned: success
  type: int
filtered:
  description: States left out by the selection, RV(read) - RV(count).
  returned: success
  type: int
removed:
  description: States removed (in check mode, states that would be removed).
  returned: success
  type: int
  sample: 1234
matched:
  description: Deprecated alias of RV(count) (its name in 0.1.0), to be removed in 1.0.0.
  returned: success
  type: int
states_before:
  description: States in the table before.
  returned: success
  type: int
states_after:
  description: States in the table after (predicted in check mode).
  returned: success
  type: int
request:
  description: The ioctl used, C(DIOCCLRSTATES) or C(DIOCKILLSTATES).
  returned: success
  type: str
selection:
  description: The selection in words.
  returned: success
  type: str
  sample: "from 192.0.2.0/24"
kernel_count:
  description: The count the kernel reported, which is the real count modulo 256 (null in check mode).
  returned: success
  type: int
lock:
  description:
    - The lock as O(lease_file) sees it (see M(netbsd.pf.states_lock) RV(netbsd.pf.states_lock#module:lock)). A lock does not stop the removal;
      states removed while the table is locked are freed once it is unlocked.
  returned: success
  type: dict
  sample: {"source": "lease_file", "state": "none", "locked_by_lease": false}
awaiting_purge:
  description:
    - States removed from the table but not yet freed (predicted in check mode). NetBSD frees a removed state only when
      its purge thread reaches it, about C(1 + states / 10) states a second and never while the table is locked; until
      then it still counts in C(DIOCGETSTATUS) and in the state limit (10,000 cleared states take about 71 seconds).
    - A restore right after the flush waits for them (M(netbsd.pf.states_restore) option O(netbsd.pf.states_restore#module:purge_wait)).
  returned: success
  type: int
  sample: 10000
"""

import errno
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.netbsd.pf.plugins.module_utils.argspec import TRANSFORM_ARGSPEC, module_argspec, transforms_from_params
from ansible_collections.netbsd.pf.plugins.module_utils.errors import PfStateError
from ansible_collections.netbsd.pf.plugins.module_utils.flush import Selection, SelectionError, flush_states
from ansible_collections.netbsd.pf.plugins.module_utils.lease import lease_view
from ansible_collections.netbsd.pf.plugins.module_utils.pfdev import PfDevice, PfError
from ansible_collections.netbsd.pf.plugins.module_utils.progress import timing
from ansible_collections.netbsd.pf.plugins.module_utils.views import merged_counts, summarize_views, summary_text
from ansible_collections.netbsd.pf.plugins.module_utils.transforms import state_filter_from

CRITERIA = ("filters", "interface", "address_family", "protocol", "source", "destination", "source_port", "destination_port")


def argument_spec():
    return module_argspec(dict(
        all=dict(type="bool", default=False),
        interface=dict(type="str"),
        address_family=dict(type="str", choices=["inet", "inet6"]),
        protocol=dict(type="str"),
        source=dict(type="str"),
        destination=dict(type="str"),
        source_port=dict(type="str"),
        destination_port=dict(type="str"),
        filters=TRANSFORM_ARGSPEC["filters"],
    ))


def _hint(exc):
    """What the message of a refused removal does not say: why the kernel refused (EPERM)."""
    if isinstance(exc, PfError) and exc.errno == errno.EPERM:
        return "; states cannot be removed at securelevel 2 or above (sysctl kern.securelevel), only after a reboot with a lower one"
    return ""


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        mutually_exclusive=[("all", criterion) for criterion in CRITERIA],
        required_one_of=[("all",) + CRITERIA],
        supports_check_mode=True,
    )
    started = time.monotonic()
    params = module.params
    try:
        state_filter = state_filter_from(transforms_from_params(params), SelectionError)
        selection = Selection(all_states=params["all"], interface=params["interface"], address_family=params["address_family"],
                              protocol=params["protocol"], source=params["source"], destination=params["destination"],
                              source_port=params["source_port"], destination_port=params["destination_port"],
                              state_filter=state_filter)
        with PfDevice(params["device"], writable=not module.check_mode) as device:
            result = flush_states(device, selection, check_mode=module.check_mode)
        result["lock"] = lease_view(params["lease_file"])
    except PfStateError as exc:
        exc.do_fail(module, hint=_hint(exc))
    before_views = result.pop("views_before")
    removed_views = result.pop("removed_views")
    if result["kernel_count"] is not None and result["kernel_count"] != result["removed"] % 256:
        module.warn("the kernel removed %d states modulo 256 but %d of the selected states disappeared: the table changed "
                    "during the call (new or expiring states)" % (result["kernel_count"], result["removed"]))
    result["changed"] = result["removed"] > 0
    result.update(timing(started, result["states_before"]), read=result["states_before"], count=result["matched"],
                  filtered=result["states_before"] - result["matched"])
    if module._diff:
        before = summarize_views(before_views)
        after = merged_counts(before, [])
        for key, count in summarize_views(removed_views).items():
            after[key] -= count
            if not after[key]:
                del after[key]
        result["diff"] = {"before": summary_text(before), "after": summary_text(after)}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
