"""Random but valid pfsync_state records for the module_utils tests and the codec benchmark."""

import random
import struct

from ansible_collections.netbsd.pf.plugins.module_utils.abi import AF_INET, AF_INET6
from ansible_collections.netbsd.pf.plugins.module_utils.records import FIELD_NAMES, StateCodec

IFNAMES = [b"all", b"wm0", b"re0", b"vioif0", b"pppoe0", b"tap0123456789ab", b"npflog0"]
PROTOS = [6, 6, 6, 17, 17, 1, 58, 47, 50, 112, 253, 39]


def _peer(rng, proto, text_safe):
    if proto == 6:
        state = rng.randint(0, 11)
        values = {"seqlo": rng.getrandbits(32), "seqhi": rng.getrandbits(32),
                  "seqdiff": rng.choice([0, rng.getrandbits(32)]), "max_win": rng.getrandbits(16),
                  "mss": rng.choice([0, 1460, rng.getrandbits(16)]), "wscale": rng.getrandbits(8)}
    else:
        state = rng.randint(0, 255) if proto in (1, 58) else rng.randint(0, 3)
        values = {}
    values["state"] = state
    if rng.random() < 0.3:
        values.update(scrub_flag=1, pfss_flags=rng.getrandbits(16), pfss_ttl=rng.getrandbits(8),
                      pfss_ts_mod=rng.getrandbits(32))
    elif not text_safe and rng.random() < 0.3:
        values.update(scrub_flag=0, pfss_flags=1, pfss_ttl=64, pfss_ts_mod=rng.getrandbits(32))
    return values


def random_fields(rng, text_safe=True):
    """Field dict (records.FIELD_NAMES); text_safe keeps to what the pfs text format can carry."""
    af = rng.choice([AF_INET, AF_INET, AF_INET6])
    proto = rng.choice(PROTOS)

    def addr():
        if af == AF_INET:
            return bytes(rng.getrandbits(8) for _byte in range(4)) + bytes(12)
        return rng.choice([bytes(16), bytes(15) + b"\1", bytes(10) + b"\xff\xff" + bytes(rng.getrandbits(8) for _byte in range(4)),
                           bytes(rng.getrandbits(8) if rng.random() < 0.6 else 0 for _byte in range(16))])

    def port():
        return struct.pack(">H", rng.getrandbits(16))

    fields = {
        "id": bytes(rng.getrandbits(8) for _byte in range(8)), "ifname": rng.choice(IFNAMES),
        "lan_addr": addr(), "lan_port": port(), "ext_addr": addr(), "ext_port": port(),
        "creatorid": rng.getrandbits(32), "af": af, "proto": proto, "direction": rng.choice([1, 2]),
        "expire": rng.getrandbits(32), "timeout": rng.randint(0, 255),
    }
    if rng.random() < 0.3:
        fields["gwy_addr"], fields["gwy_port"] = addr(), port()
    else:
        fields["gwy_addr"], fields["gwy_port"] = fields["lan_addr"], fields["lan_port"]
    for prefix in ("src_", "dst_"):
        for key, value in _peer(rng, proto, text_safe).items():
            fields[prefix + key] = value
    if not text_safe:
        for name in FIELD_NAMES[FIELD_NAMES.index("rule"):FIELD_NAMES.index("creatorid")]:
            fields[name] = rng.getrandbits(32)
        fields["rt_addr"] = addr()
        fields.update(log=rng.getrandbits(8), allow_opts=1, sync_flags=4, direction=rng.choice([0, 1, 2]))
    return fields


def random_block(count, byte_order="little", seed=1, text_safe=True):
    rng = random.Random(seed)
    codec = StateCodec(byte_order)
    return b"".join(codec.from_dict(random_fields(rng, text_safe)) for _state in range(count))
