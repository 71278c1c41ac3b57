"""NPF snapshots in the native file (format version 2, kind npf): plugins/module_utils/npf_native.py."""

import importlib.util
import io
import os
import struct
import zlib

import pytest

from ansible_collections.netbsd.pf.plugins.module_utils import native
from ansible_collections.netbsd.pf.plugins.module_utils.abi import Abi
from ansible_collections.netbsd.pf.plugins.module_utils.npf_native import read_npf_file, write_npf_file
from ansible_collections.netbsd.pf.plugins.module_utils.npf_snapshot import port_to_word
from ansible_collections.netbsd.pf.plugins.module_utils.npfdev import NpfDevice
from ansible_collections.netbsd.pf.tests.npfemu import ManualClock, NpfKernel
from ansible_collections.netbsd.pf.tests.npfemu.inprocess import make_syscalls

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def saved_reply(order):
    kernel = NpfKernel(byte_order=order, clock=ManualClock(1000.0))
    abi = Abi(8, True, order)
    with NpfDevice(abi=abi, syscalls=make_syscalls(kernel)) as device:
        prefix = "<" if order == "little" else ">"
        conns = []
        for sport in (1028, 1029):
            key = {"proto": 6, "sport": port_to_word(sport, order), "dport": port_to_word(443, order),
                   "saddr": b"\x0a\x00\x00\x05", "daddr": b"\xc6\x33\x64\x07", "ifname": "wm0", "di": 2}
            back = dict(key, sport=key["dport"], dport=key["sport"], saddr=key["daddr"], daddr=key["saddr"], di=1)
            conns.append({"flags": 6, "proto": 6, "ifname": "wm0", "state": struct.pack(prefix + "I", 4) + bytes(32),
                          "forw-key": key, "back-key": back, "alen": 4})
        device.load({"rules": [{"name": "pass", "ifname": "wm0"}], "conn-list": conns})
        return device.save()


def written(order="little", compression="zlib"):
    out = io.BytesIO()
    write_npf_file(out, saved_reply(order), order, {"source_host": "fw1"}, compression=compression)
    return out.getvalue()


@pytest.mark.parametrize("order", ["little", "big"])
@pytest.mark.parametrize("compression", ["zlib", "none"])
def test_round_trip_keeps_every_connection(order, compression):
    data = written(order, compression)
    header, snapshot = read_npf_file(io.BytesIO(data), len(data), "fw1.pfstate")
    assert (header["kind"], header["format_version"], header["byte_order"], header["count"]) == ("npf", 2, order, 2)
    assert header["metadata"]["source_host"] == "fw1"
    reply = saved_reply(order)
    assert [conn.to_nvlist(order) for conn in snapshot.connections] == reply["conn-list"]
    assert snapshot.config["rules"] == reply["rules"] and snapshot.params == reply["params"]


def test_the_0_1_0_reader_refuses_an_npf_file_with_a_clear_error():
    spec = importlib.util.spec_from_file_location("native_0_1_0", os.path.join(FIXTURES, "native_0_1_0.py"))
    old = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(old)
    data = written()
    with pytest.raises(old.NativeFormatError, match=r"unsupported \.pfstate format version 2"):
        old.NativeReader(io.BytesIO(data), len(data))


def test_the_pf_reader_names_the_npf_kind():
    data = written()
    with pytest.raises(native.NativeFormatError, match="unsupported kind, the file holds an NPF snapshot"):
        native.NativeReader(io.BytesIO(data), len(data))


def test_a_pf_file_is_not_read_as_an_npf_snapshot():
    out = io.BytesIO()
    writer = native.NativeWriter(out, "little")
    writer.write_block(bytes(240))
    writer.close()
    data = out.getvalue()
    with pytest.raises(native.NativeFormatError, match="pf1.pfstate: format version 1 holds pf states"):
        read_npf_file(io.BytesIO(data), len(data), "pf1.pfstate")


@pytest.mark.parametrize("damage, message", [
    (lambda data: data[:-1], "header says"),
    (lambda data: data + b"\0", "header says"),
    (lambda data: data[:-5] + bytes([data[-5] ^ 0xFF]) + data[-4:], "compressed payload|SHA-256"),
    (lambda data: data[:20] + bytes([data[20] ^ 1]) + data[21:], "checksum mismatch"),
])
def test_damaged_files_are_refused_with_the_reason(damage, message):
    data = damage(written())
    with pytest.raises(native.NativeFormatError, match="fw1.pfstate: .*(%s)" % message):
        read_npf_file(io.BytesIO(data), len(data), "fw1.pfstate")


def test_a_damaged_uncompressed_snapshot_fails_its_checksum():
    data = bytearray(written(compression="none"))
    data[-30] ^= 0x40
    with pytest.raises(native.NativeFormatError, match="SHA-256"):
        read_npf_file(io.BytesIO(bytes(data)), len(data), "fw1.pfstate")


def test_a_compression_bomb_stops_at_the_inflation_bound():
    out = io.BytesIO()
    write_npf_file(out, saved_reply("little"), "little")
    data = out.getvalue()
    bomb = zlib.compress(bytes(64 << 20), 9)  # 64 MiB of zeros in about 64 KiB
    meta_len = struct.unpack_from(">I", data, 64)[0]
    head = bytearray(data[:72 + meta_len])
    struct.pack_into(">Q", head, 24, len(bomb))
    struct.pack_into(">I", head, 68, zlib.crc32(bytes(head[:68]) + bytes(head[72:])) & 0xffffffff)
    forged = bytes(head) + bomb
    with pytest.raises(native.NativeFormatError, match="truncated, too large"):
        read_npf_file(io.BytesIO(forged), len(forged), "bomb.pfstate")
