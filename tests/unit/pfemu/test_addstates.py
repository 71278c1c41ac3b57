"""Section 5.5 (and 11, last bullet): DIOCADDSTATES."""

import ctypes
import errno
import sys

import pytest

from ansible_collections.netbsd.pf.tests.pfemu.kernel import KernelPanic


def _lan(n):
    return (bytes((10, 1, n // 256, n % 256)), 1024 + n)


def _errno_of(call, *args, **kwargs):
    with pytest.raises(OSError) as caught:
        call(*args, **kwargs)
    return caught.value.errno


def test_stops_at_first_error_without_rollback(pf):
    fd = pf.open()
    block = pf.record(lan=_lan(1)) + pf.record(lan=_lan(2), timeout=20) + pf.record(lan=_lan(3))
    arg = pf.states_arg(len(block), ctypes.addressof(pf.buffer(block)))
    assert _errno_of(pf.ioctl, fd, "DIOCADDSTATES", arg) == errno.EINVAL
    assert pf.states_len(arg) == len(block)
    states = pf.get_states(fd)
    assert [rec[24:28] for rec in states] == [_lan(1)[0]]


@pytest.mark.parametrize("timeout,ok", [(0, True), (19, True), (20, False), (21, False), (22, False), (23, True),
                                        (255, False)])
def test_timeout_index_validation(pf, timeout, ok):
    fd = pf.open()
    if ok:
        pf.add_states(fd, pf.record(timeout=timeout))
        assert pf.get_states(fd)[0][237] == timeout
    else:
        assert _errno_of(pf.add_states, fd, pf.record(timeout=timeout)) == errno.EINVAL


def test_state_limit_is_enomem(pf):
    fd = pf.open()
    pf.kernel.state_limit = 2
    assert _errno_of(pf.add_states, fd, b"".join(pf.record(lan=_lan(n)) for n in range(3))) == errno.ENOMEM
    assert pf.size_query(fd) == 2 * 240


def test_unlinked_states_still_count_against_the_limit(pf):
    fd = pf.open()
    pf.kernel.state_limit = 1
    pf.add_states(fd, pf.record(lan=_lan(1)))
    pf.kill(fd, "DIOCCLRSTATES")
    assert _errno_of(pf.add_states, fd, pf.record(lan=_lan(2))) == errno.ENOMEM
    pf.kernel.purge()
    pf.add_states(fd, pf.record(lan=_lan(2)))


def test_same_key_on_same_interface_is_enomem_not_eexist(pf):
    fd = pf.open()
    pf.add_states(fd, pf.record(ifname=b"wm0"))
    assert _errno_of(pf.add_states, fd, pf.record(ifname=b"wm0", state_id=b"\x01" * 8, gwy=_lan(99),
                                                  direction=1)) == errno.ENOMEM


def test_same_key_on_another_interface_joins_and_takes_its_gwy_and_direction(pf):
    fd = pf.open()
    pf.add_states(fd, pf.record(ifname=b"wm0", gwy=(b"\xc6\x33\x64\x01", 60000), direction=2))
    pf.add_states(fd, pf.record(ifname=b"wm1", gwy=(b"\xc6\x33\x64\x02", 61000), direction=1,
                                state_id=b"\x02" * 8))
    first, second = pf.get_states(fd)
    assert second[8:11] == b"wm1"
    assert second[48:66] == first[48:66] == b"\xc6\x33\x64\x01" + b"\0" * 12 + (60000).to_bytes(2, "big")
    assert second[234] == 2


def test_ipv4_key_compares_only_the_first_address_word(pf):
    fd = pf.open()
    pf.add_states(fd, pf.record(ifname=b"wm0"))
    junk = b"\x0a\x00\x00\x01" + b"\xee" * 12
    assert _errno_of(pf.add_states, fd, pf.record(ifname=b"wm0", lan=(junk, 1025), state_id=b"\x03" * 8)) == errno.ENOMEM


def test_other_address_families_compare_ports_only(pf):
    fd = pf.open()
    pf.add_states(fd, pf.record(af=7, lan=(b"\x01" * 16, 5), ext=(b"\x02" * 16, 6)))
    assert _errno_of(pf.add_states, fd, pf.record(af=7, lan=(b"\x03" * 16, 5), ext=(b"\x04" * 16, 6),
                                                  state_id=b"\x04" * 8)) == errno.ENOMEM
    pf.add_states(fd, pf.record(af=7, lan=(b"\x03" * 16, 5), ext=(b"\x04" * 16, 7), state_id=b"\x05" * 8))


def test_ext_gwy_collision_is_enomem(pf):
    fd = pf.open()
    nat = (b"\xc6\x33\x64\x01", 60000)
    pf.add_states(fd, pf.record(lan=_lan(1), gwy=nat))
    assert _errno_of(pf.add_states, fd, pf.record(lan=_lan(2), gwy=nat, state_id=b"\x06" * 8)) == errno.ENOMEM


def test_duplicate_id_and_creatorid_is_enomem(pf):
    fd = pf.open()
    pf.add_states(fd, pf.record(lan=_lan(1), state_id=b"\x07" * 8, creatorid=5))
    assert _errno_of(pf.add_states, fd, pf.record(lan=_lan(2), state_id=b"\x07" * 8, creatorid=5)) == errno.ENOMEM
    pf.add_states(fd, pf.record(lan=_lan(3), state_id=b"\x07" * 8, creatorid=6))


def test_zero_id_and_creatorid_get_a_kernel_id(pf):
    fd = pf.open()
    stateid = pf.kernel.stateid
    pf.add_states(fd, pf.record(lan=_lan(1)) + pf.record(lan=_lan(2)))
    first, second = pf.get_states(fd)
    assert first[0:8] == stateid.to_bytes(8, "big") and second[0:8] == (stateid + 1).to_bytes(8, "big")
    assert pf.field(first, "I", 228) == pf.kernel.hostid == pf.status(fd)["hostid"]
    assert pf.status(fd)["stateid"] == stateid + 2


def test_zero_id_with_a_creatorid_is_kept(pf):
    fd = pf.open()
    pf.add_states(fd, pf.record(creatorid=77))
    rec = pf.get_states(fd)[0]
    assert rec[0:8] == b"\0" * 8 and pf.field(rec, "I", 228) == 77


def test_import_resets_what_the_kernel_ignores(pf):
    fd = pf.open()
    pf.kernel.clock.advance(3)
    pf.add_states(fd, pf.record(state_id=b"\x08" * 8, creatorid=1, src=(4, 0, 0x1234), dst=(4, 0, 0)))
    rec = pf.get_states(fd)[0]
    assert pf.field(rec, "I", 176) == pf.field(rec, "I", 180) == pf.field(rec, "I", 184) == 0xFFFFFFFF
    assert pf.field(rec, "I", 188) == 0  # creation := now
    assert rec[196:228] == b"\0" * 32  # packets and bytes
    assert rec[235] == rec[236] == rec[238] == rec[239] == 0  # log, allow_opts, sync_flags, updates
    assert rec[96:104] == rec[128:136] == b"\0" * 8  # scrub data dropped
    assert rec[160:176] == b"\0" * 16  # rt_addr
    assert pf.field(rec, "I", 112) == 0x1234  # seqdiff kept
    assert rec[120:122] == bytes((4, 0x87))


def test_mss_is_byte_swapped_on_little_endian(pf):
    fd = pf.open()
    pf.add_states(fd, pf.record(src=(11, 1460, 0), dst=(0, 1380, 0)))
    rec = pf.get_states(fd)[0]
    if sys.byteorder == "little":
        assert (pf.field(rec, "H", 118), pf.field(rec, "H", 150)) == (46085, 25605)
    else:
        assert (pf.field(rec, "H", 118), pf.field(rec, "H", 150)) == (1460, 1380)


@pytest.mark.parametrize("expire,remaining", [(0, 86400), (100, 100), (86400, 86400), (90000, 90000)])
def test_expiry_is_now_plus_e_or_a_full_default_timeout(pf, expire, remaining):
    fd = pf.open()
    pf.add_states(fd, pf.record(timeout=2, expire=expire))
    assert pf.field(pf.get_states(fd)[0], "I", 192) == remaining


def test_expiry_uses_the_current_default_timeouts(pf):
    fd = pf.open()
    pf.kernel.timeouts[7] = 50
    pf.add_states(fd, pf.record(timeout=7, proto=17, expire=0))
    pf.kernel.timeouts[7] = 30
    assert pf.field(pf.get_states(fd)[0], "I", 192) == 30  # last activity = now, timeout read at export


def test_huge_expire_wraps_in_32_bits(pf):
    fd = pf.open()
    pf.add_states(fd, pf.record(timeout=7, proto=17, expire=0xFFFFFFFF))
    assert pf.field(pf.get_states(fd)[0], "I", 192) == 0  # now - (30 - E) mod 2^32 = now - 31


def test_until_packet_timeout_exports_zero_and_goes_at_next_purge(pf):
    fd = pf.open()
    pf.add_states(fd, pf.record(timeout=23, expire=500))
    assert pf.field(pf.get_states(fd)[0], "I", 192) == 0
    pf.kernel.purge()
    assert pf.size_query(fd) == 0


def test_partial_last_record_is_read_in_full(pf):
    fd = pf.open()
    block = pf.record(lan=_lan(1)) + pf.record(lan=_lan(2))
    pf.add_states(fd, block, ps_len=241)
    assert len(pf.get_states(fd)) == 2


def test_non_positive_ps_len_adds_nothing(pf):
    fd = pf.open()
    for ps_len in (0, -240):
        pf.add_states(fd, pf.record(), ps_len=ps_len)
    assert pf.size_query(fd) == 0


def test_unreadable_record_would_double_free_and_is_refused_loudly(pf):
    fd = pf.open()
    buf = pf.buffer(pf.record(lan=_lan(1)))
    arg = pf.states_arg(480, 0x10)  # unmapped
    with pytest.raises(KernelPanic, match="double free"):
        pf.ioctl(fd, "DIOCADDSTATES", arg)
    assert pf.kernel.panicked
    with pytest.raises(KernelPanic):
        pf.kernel.open(0)
    pf.kernel.reboot()
    assert pf.kernel.panicked is None
    del buf


def test_an_error_before_the_unreadable_record_prevents_the_double_free(pf):
    fd = pf.open()
    buf = pf.buffer(pf.record(timeout=99))
    arg = pf.states_arg(240 * 1000, ctypes.addressof(buf))
    with pytest.raises(OSError) as caught:
        pf.ioctl(fd, "DIOCADDSTATES", arg)
    assert caught.value.errno == errno.EINVAL


def test_interface_created_on_demand_with_a_15_character_name(pf):
    fd = pf.open()
    pf.add_states(fd, pf.record(ifname=b"averyverylongname"[:16]))
    rec = pf.get_states(fd)[0]
    assert rec[8:24] == b"averyverylongna\0"
    assert "averyverylongna" in pf.kernel.interfaces


def test_read_only_descriptor_gets_eacces(pf):
    import os  # pylint: disable=import-outside-toplevel
    fd = pf.open(os.O_RDONLY)
    assert _errno_of(pf.add_states, fd, pf.record()) == errno.EACCES


def test_works_while_locked_and_while_stopped(pf):
    fd = pf.open()
    pf.kernel.lock = True
    pf.kernel.running = False
    pf.add_states(fd, pf.record())
    assert pf.size_query(fd) == 240


def test_failed_id_insert_consumes_the_state_id(pf):
    fd = pf.open()
    stateid = pf.kernel.stateid
    pf.add_states(fd, pf.record(lan=_lan(1), state_id=stateid.to_bytes(8, "big"), creatorid=pf.kernel.hostid))
    assert _errno_of(pf.add_states, fd, pf.record(lan=_lan(2))) == errno.ENOMEM
    assert pf.kernel.stateid == stateid + 1


def test_round_trip_of_a_generated_table(pf):
    fd = pf.open()
    pf.kernel.state_limit = 5000
    pf.kernel.fill(2000, seed=8)
    dump = pf.kernel.export_all()
    pf.kill(fd, "DIOCCLRSTATES")
    pf.kernel.purge()
    pf.add_states(fd, dump)
    again = pf.kernel.export_all()
    assert len(again) == len(dump)
    for offset in range(0, len(dump), 240):
        assert again[offset:offset + 8] == dump[offset:offset + 8]
        assert again[offset + 24:offset + 90] == dump[offset + 24:offset + 90]
