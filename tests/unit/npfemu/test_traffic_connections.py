"""Connections made by traffic (``ctl HOST npf-fill``): generated records and ``add_connections``."""

import pytest

from ansible_collections.netbsd.pf.tests.npfemu.generate import generate_connections
from ansible_collections.netbsd.pf.tests.npfemu.kernel import NpfKernel


def running(npf, conns=()):
    """What rc.d/npf leaves: a configuration loaded (tracking on), optionally with connections."""
    pairs = [(3, "version", 22), (11, "rules", [[(3, "attr", 0x3000000D)]])]
    if conns:
        pairs.append((11, "conn-list", [npf.pairs(conn) for conn in conns]))
    # In the kernel's own byte order: libnv refuses foreign-endian nvlist arrays.
    npf.nvlist_call("LOAD", npf.nvlist(pairs, order="<" if npf.kernel.byte_order == "little" else ">"))


@pytest.mark.parametrize("byte_order", ["little", "big"])
def test_generated_connections_load_on_a_strict_kernel_and_match_packets(make_npf, byte_order):
    kernel = NpfKernel(byte_order=byte_order)
    npf = make_npf(kernel)
    records = generate_connections(40, seed=5, byte_order=byte_order)
    running(npf, records)   # strict: a record with undefined behaviour would raise WouldCorrupt
    assert kernel.connection_count == 40
    assert {record["proto"] for record in records} == {6, 17}
    assert {record["alen"] for record in records} == {4, 16}
    for record in records:
        forw = record["forw-key"]
        assert kernel.match_packet(forw["ifname"], forw["di"], record["proto"], forw["saddr"], forw["sport"],
                                   forw["daddr"], forw["dport"]) is not None


def test_added_connections_join_the_running_ones_and_save_exports_them(npf_kernel, npf):
    running(npf, generate_connections(10, seed=1))
    npf_kernel.add_connections(generate_connections(15, seed=2, first=10))
    assert npf_kernel.connection_count == 25
    assert len(npf.save()["conn-list"]) == 25


def test_adding_is_all_or_nothing_and_needs_a_configuration(npf_kernel, npf):
    with pytest.raises(ValueError, match="no configuration"):
        npf_kernel.add_connections(generate_connections(1))
    running(npf, generate_connections(10, seed=1))
    # The same numbers again: the 4th record's keys are taken, nothing of the batch stays.
    clash = generate_connections(3, seed=7, first=100) + generate_connections(1, seed=1)
    with pytest.raises(ValueError, match="connection 3: its key is taken"):
        npf_kernel.add_connections(clash)
    assert npf_kernel.connection_count == 10
