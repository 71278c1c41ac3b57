"""Compare a table read before a dump with the table restored from it (states_info output, JSON lists).

Usage: compare_states.py BEFORE.json AFTER.json EXPIRED
Every state of BEFORE must be in AFTER (by id and creatorid) unless it expired
(at most EXPIRED missing), with every field equal except what NetBSD's import
resets (rule numbers, creation, packet and byte counters, scrub data) and
expire, which may only have shrunk.  mss must survive (fix_mss).  AFTER must hold nothing else.
"""

import json
import sys

RESET_ON_IMPORT = {"rule", "creation", "packets", "bytes", "expire"}
# Scrub data is never imported (reference 5.5 step 3): the peers lose it.
SCRUB_FIELDS = {"pfss_flags", "pfss_ttl", "pfss_ts_mod", "scrub"}


def comparable(state, field):
    value = state.get(field)
    if field in ("src", "dst") and isinstance(value, dict):
        return dict((key, item) for key, item in value.items() if key not in SCRUB_FIELDS)
    return value


def main(before_path, after_path, expired):
    before = json.load(open(before_path))
    after = json.load(open(after_path))
    restored = dict(((s["id"], s["creatorid"]), s) for s in after)
    problems, missing = [], 0
    for state in before:
        twin = restored.pop((state["id"], state["creatorid"]), None)
        if twin is None:
            missing += 1
            continue
        for field in sorted(set(state) | set(twin)):
            if field not in RESET_ON_IMPORT and comparable(state, field) != comparable(twin, field):
                problems.append("state %s: %s %r became %r" % (state["id"], field, comparable(state, field), comparable(twin, field)))
        if not 0 < twin["expire"] <= state["expire"]:
            problems.append("state %s: expire %d became %d" % (state["id"], state["expire"], twin["expire"]))
    if missing != expired:
        problems.append("%d dumped states are missing, the restore reported %d expired" % (missing, expired))
    if restored:
        problems.append("%d states in the table were not in the dump" % len(restored))
    for problem in problems[:5]:
        print(problem)
    print("%d states compared, %d missing (expired), %d problems" % (len(before), missing, len(problems)))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
