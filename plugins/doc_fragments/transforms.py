# -*- coding: utf-8 -*-
# Copyright: netbsd.pf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):

    # netbsd.pf.transforms.filters and netbsd.pf.transforms.rename, each a plain string literal
    # (ansible-test's yamllint reads every fragment attribute as one).
    FILTERS = r"""
options:
  filters:
    description:
      - Keep only the states that match every criterion given here; criteria left out match everything.
      - Within one criterion a state matches if it matches any of the listed values.
    type: dict
    suboptions:
      interfaces:
        description:
          - Interface names the state is bound to, as pf reports them.
          - Floating states (the default unless rules use C(if-bound)) carry the interface name C(all).
        type: list
        elements: str
      protocols:
        description:
          - IP protocols, by NetBSD name from C(/etc/protocols) (for example V(tcp), V(udp), V(icmp), V(ipv6-icmp)) or by number.
          - Names are resolved with a table built into the collection, never with the local C(/etc/protocols), so results do not depend on
            the machine that runs the module.
        type: list
        elements: str
      address_family:
        description:
          - Keep only IPv4 (V(inet)) or only IPv6 (V(inet6)) states.
        type: str
        choices: [inet, inet6]
      networks:
        description:
          - Networks in CIDR notation (V(192.0.2.0/24), V(2001:db8::/32)); a single address is a host network.
          - A state matches when its lan, gwy or ext address is inside any of them.
        type: list
        elements: str
      ports:
        description:
          - Port numbers; a state matches when its lan, gwy or ext port is one of them.
          - Only TCP and UDP states have ports; ICMP states carry the ICMP id in the port field and can match too.
        type: list
        elements: int
      direction:
        description:
          - Keep only states created by inbound (V(in)) or outbound (V(out)) packets.
        type: str
        choices: [in, out]
"""

    RENAME = r"""
options:
  rename:
    description:
      - Map of interface names, old name to new name, applied to the records that pass O(filters).
      - Use it when the interfaces of the firewall changed names, for example moving from V(wm0) to V(ixg0) on new hardware.
      - Interface names are at most 15 bytes long (C(IFNAMSIZ) - 1). States bound to interfaces not in the map keep their name.
    type: dict
"""
