"""Field-by-field checks of the NPF end-to-end test (tests/integration/npf/npf.yml), run on the controller.

    compare_npf.py reboot BEFORE.pfstate AFTER.pfstate EXPIRED
        every connection of BEFORE is in AFTER with the same fields, except the EXPIRED ones the
        restore dropped (as many as it reported, none in AFTER), and AFTER holds nothing else.
    compare_npf.py migrate PF_DUMP AFTER.pfstate FLOATING_INTERFACE RESULT.json
        AFTER holds exactly the connections the pf states convert to (NPF reference 5.2, 5.3),
        field by field, and the restore's result names every state that did not convert.
"""

import json
import os
import sys

from ansible_collections.netbsd.pf.plugins.module_utils.formats import open_dump
from ansible_collections.netbsd.pf.plugins.module_utils.npf_convert import convert_states
from ansible_collections.netbsd.pf.plugins.module_utils.npf_native import read_npf_file


def snapshot_of(path):
    with open(path, "rb") as handle:
        return read_npf_file(handle, os.path.getsize(path), path)[1]


def key_fields(key):
    return (key.proto, bytes(key.saddr), key.sport, bytes(key.daddr), key.dport, key.ifname, key.di)


def fields(conn):
    """Everything a connection carries that the kernel keeps, keys repaired as the restore repairs them."""
    conn.repair_keys(True)
    nat = None if conn.nat is None else (conn.nat.ifname, bytes(conn.nat.oaddr), conn.nat.oport, bytes(conn.nat.taddr),
                                         conn.nat.tport)
    return (conn.proto, conn.flags, conn.ifname, conn.alen, key_fields(conn.forw), key_fields(conn.back),
            conn.state.to_bytes("little"), nat)


def fail(message):
    print("compare_npf: " + message, file=sys.stderr)
    sys.exit(1)


def reboot(before_path, after_path, expired):
    before = {fields(conn) for conn in snapshot_of(before_path).connections}
    after = {fields(conn) for conn in snapshot_of(after_path).connections}
    if not before:
        fail("the dump before the reboot holds no connections")
    if after - before:
        fail("%d connections after the restore that were not there before" % len(after - before))
    if len(before - after) != int(expired):
        fail("%d connections missing after the restore, the restore reported %s expired"
             % (len(before - after), expired))
    print("reboot: %d of %d connections back field by field, %s expired" % (len(after), len(before), expired))


def migrate(pf_path, after_path, floating_interface, result_path):
    with open(result_path, encoding="utf-8") as handle:
        result = json.load(handle)
    with open_dump(pf_path) as reader:
        blocks, order = list(reader.blocks()), reader.byte_order
    conversion = convert_states(blocks, order, floating_interface=floating_interface)
    expected = {fields(conn) for conn in conversion.connections}
    after = {fields(conn) for conn in snapshot_of(after_path).connections}
    if after != expected:
        fail("NPF holds %d connections, %d expected from the pf states; %d missing, %d unexpected"
             % (len(after), len(expected), len(expected - after), len(after - expected)))
    summary = result["conversion"]
    named = {entry["index"] for entry in summary["rejected"]}
    converted = {conn.index for conn in conversion.connections}
    if summary["unconvertible"] != conversion.input - len(converted) or sum(summary["reasons"].values()) != \
            summary["unconvertible"]:
        fail("the result's unconvertible count %d does not add up" % summary["unconvertible"])
    if summary["unconvertible"] <= 100 and named | converted != set(range(conversion.input)):
        fail("states neither converted nor named: %s" % sorted(set(range(conversion.input)) - named - converted))
    if not all(entry["reason"] and entry["state"] for entry in summary["rejected"]):
        fail("a rejected state without its reason or description")
    print("migrate: %d of %d pf states are NPF connections field by field, %d named with a reason (%s)"
          % (len(after), conversion.input, summary["unconvertible"], ", ".join(sorted(summary["reasons"]))))


if __name__ == "__main__":
    if sys.argv[1:2] == ["reboot"] and len(sys.argv) == 5:
        reboot(*sys.argv[2:])
    elif sys.argv[1:2] == ["migrate"] and len(sys.argv) == 6:
        migrate(*sys.argv[2:])
    else:
        fail("usage: compare_npf.py reboot BEFORE AFTER EXPIRED | migrate PF_DUMP AFTER FLOATING_INTERFACE RESULT.json")
