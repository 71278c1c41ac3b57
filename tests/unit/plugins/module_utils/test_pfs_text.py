import glob
import io
import os

import pytest

from ansible_collections.netbsd.pf.plugins.module_utils.pfs_text import (
    PfsTextReader, TextFormatError, _Lines, format_block, format_record, parse_text,
)
from ansible_collections.netbsd.pf.plugins.module_utils.records import StateCodec
from ansible_collections.netbsd.pf.tests.unit.plugins.module_utils.golden import golden_names, read_golden
from ansible_collections.netbsd.pf.tests.unit.plugins.module_utils.statefactory import random_block

GOLDEN = os.path.join(os.path.dirname(__file__), "fixtures", "golden")
PAIRS = sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(GOLDEN, "*.bin")))
# bytes of a record the text format does not carry
NOT_IN_TEXT = set(range(160, 192)) | set(range(196, 228)) | {235, 236, 238, 239}


def read(name):
    return read_golden(name)


def text_view(block):
    """What of a block survives text: drop untextable bytes, and scrub values of peers without scrub_flag 1."""
    out = bytearray(block)
    for start in range(0, len(out), 240):
        for offset in NOT_IN_TEXT:
            out[start + offset] = 0
        for peer in (96, 128):
            if out[start + peer + 3] != 1:
                out[start + peer:start + peer + 8] = bytes(8)
    return bytes(out)


@pytest.mark.parametrize("name", PAIRS)
def test_writer_is_byte_identical_to_pfs(name):
    assert format_block(read(name + ".bin")[4:], "little").encode("latin-1") == read(name + ".txt")


@pytest.mark.parametrize("name", PAIRS)
def test_reader_reads_what_pfs_printed(name):
    records = read(name + ".bin")[4:]
    assert text_view(parse_text(read(name + ".txt"), "little")) == text_view(records)


def test_layout_free_parses_like_printed():
    free = parse_text(read("layout-free.txt"), "little")
    printed = parse_text(read("layout-free.printed.txt"), "little")
    assert free == printed and len(free) == 3 * 240
    assert format_block(free, "little").encode("latin-1") == read("layout-free.printed.txt")


BASE = ("state out on wm0 proto tcp from 10.0.0.1:[49152] to 192.0.2.10:[443] id 70 cid 2 expire 3 timeout 2 "
        "src state ESTABLISHED seq [1000:2000] max_win 512 wscale 3 no-scrub "
        "dst state ESTABLISHED seq [3000:4000] max_win 1024 wscale 7 no-scrub\n")


def one(text, order="little"):
    block = parse_text(text, order)
    assert len(block) == 240
    return StateCodec(order).to_dict(block)


def test_quirk_mss_in_both_positions():
    printed = one(BASE.replace("max_win 512 wscale 3", "max_win 512 mss 1460 wscale 3"))
    grammar = one(BASE.replace("max_win 512 wscale 3", "max_win 512 wscale 3 mss 1460"))
    assert printed == grammar and printed["src_mss"] == 1460


def test_quirk_seq_with_diff():
    state = one(BASE.replace("[1000:2000]", "[1000:2000,77]"))
    assert (state["src_seqlo"], state["src_seqhi"], state["src_seqdiff"]) == (1000, 2000, 77)


def test_quirk_scrub_printed_and_grammar_forms():
    printed = one(BASE.replace("wscale 3 no-scrub", "wscale 3 scrub flags 1ttl 64mod 123456"))
    grammar = one(BASE.replace("wscale 3 no-scrub", "wscale 3 scrub flags 1 mode 123456 ttl 64"))
    spaced = one(BASE.replace("wscale 3 no-scrub", "wscale 3 scrub flags 1 ttl 64 mod 123456"))
    assert printed == grammar == spaced
    assert (printed["src_scrub_flag"], printed["src_pfss_flags"], printed["src_pfss_ttl"],
            printed["src_pfss_ts_mod"]) == (1, 1, 64, 123456)


def test_quirk_missing_peer_state():
    synproxy = one(BASE.replace("src state ESTABLISHED seq", "src  seq"))
    assert synproxy["src_state"] == 11
    udp = one("state in on all proto udp from 10.0.0.1:[1] to 10.0.0.2:[2] id 1 cid 1 expire 1 timeout 8 "
              "src  no-scrub dst state SINGLE no-scrub")
    assert udp["dst_state"] == 3 and udp["src_state"] == 1  # 'in': text src is the dst record


def test_quirk_numeric_states_proto_numbers_and_keyword_interface():
    state = one(BASE.replace("proto tcp", "proto 6").replace("on wm0", "on state")
                .replace("src state ESTABLISHED", "src state 4"))
    assert state["proto"] == 6 and state["ifname"].rstrip(b"\0") == b"state" and state["src_state"] == 4


def test_quirk_direction_in_swaps_peers_and_inout_prints_in():
    out = one(BASE)
    inward = one(BASE.replace("state out", "state in"))
    assert out["src_wscale"] == 3 and inward["dst_wscale"] == 3 and inward["direction"] == 1
    codec = StateCodec("little")
    fields = dict(out, direction=0)
    assert format_block(codec.from_dict(fields), "little").startswith("state in on wm0")


def test_no_leak_between_states():
    with_mss = BASE.replace("max_win 512 wscale 3", "max_win 512 mss 1460 wscale 3")
    block = parse_text(with_mss + BASE, "little")
    second = StateCodec("little").to_dict(block[240:])
    assert second["src_mss"] == 0


def test_id_and_cid_follow_byte_order():
    little, big = one(BASE, "little"), one(BASE, "big")
    assert little["id"] == (70).to_bytes(8, "little") and big["id"] == (70).to_bytes(8, "big")
    assert little["creatorid"] == big["creatorid"] == 2


def test_special_protocol_names_and_unknown_af_text():
    printed = format_block(StateCodec("little").from_dict(dict(one(BASE), proto=107)), "little")
    assert " proto a/n " in printed and one(printed)["proto"] == 107
    unknown_af = format_block(StateCodec("little").from_dict(dict(one(BASE), af=0)), "little")
    assert "from ?:[49152] to ?:[443]" in unknown_af


@pytest.mark.parametrize("change,message", [
    (("cid 2", "cid 4294967296"), "cid 4294967296 out of range"),
    (("expire 3", "expire 4294967296"), "expire"),
    (("timeout 2", "timeout 256"), "timeout 256 out of range"),
    (("max_win 512", "max_win 65536"), "max_win 65536 out of range"),
    (("wscale 3", "wscale 256"), "wscale 256 out of range"),
    (("[49152]", "[65536]"), "port 65536 out of range"),
    (("[1000:2000]", "[1000-2000]"), "invalid seq number"),
    (("proto tcp", "proto nosuch"), "unknown protocol"),
    (("ESTABLISHED seq [1000", "BOGUS seq [1000"), "invalid peer state 'BOGUS'"),
    (("10.0.0.1:", "10.0.0.300:"), "not a valid inet address"),
    (("on wm0", "on abcdefghijklmnop"), "longer than 15"),
    (("no-scrub dst", "dst"), "expected 'no-scrub' or 'scrub'"),
])
def test_errors_name_the_line(change, message):
    text = "\n" + BASE.replace(*change)
    with pytest.raises(TextFormatError) as info:
        parse_text(text, "little")
    assert str(info.value).startswith("line 2")
    assert message in str(info.value)


def test_error_at_end_of_file():
    with pytest.raises(TextFormatError, match="unexpected end of file"):
        parse_text(BASE[:60], "little")


def test_state_over_lines_with_crlf_tabs_and_no_final_newline():
    text = BASE.strip().replace(" src ", "\r\n\t src\t").replace(" dst ", "\n\n dst ")
    assert parse_text(text, "little") == parse_text(BASE, "little")


def test_reader_streams_blocks_and_counts():
    block = random_block(25, "little", seed=11)
    text = format_block(block, "little").encode("latin-1")
    reader = PfsTextReader(text.splitlines(True), "little", block_records=10)
    blocks = list(reader)
    assert [len(b) // 240 for b in blocks] == [10, 10, 5] and reader.count == 25
    assert b"".join(blocks) == block


@pytest.mark.parametrize("order", ["little", "big"])
def test_random_round_trip(order):
    block = random_block(300, order, seed=4)
    assert parse_text(format_block(block, order), order) == block


# --- fast paths against the general ones ------------------------------------------

def general_only(monkeypatch):
    """Make the reader's chunk fast path refuse everything: every line goes to the tokenizer."""
    monkeypatch.setattr(PfsTextReader, "_fast_run", lambda self, chunk: None)


def generated_text(count, order, seed):
    from ansible_collections.netbsd.pf.tests.pfemu.generate import generate_records
    block = generate_records(count, seed, order, now=1700000000)
    return block, format_block(block, order).encode("latin-1")


@pytest.mark.parametrize("order", ["little", "big"])
def test_writer_matches_format_record_on_generated_records(order):
    block, text = generated_text(3000, order, seed=5)
    codec = StateCodec(order)
    slow = "".join(format_record(values, codec.id_number(values[0])) for values in codec.iter_unpack(block))
    assert text.decode("latin-1") == slow
    mixed = random_block(500, order, seed=8)
    assert format_block(mixed, order) == "".join(
        format_record(values, codec.id_number(values[0])) for values in codec.iter_unpack(mixed))


@pytest.mark.parametrize("order", ["little", "big"])
def test_reader_fast_path_matches_tokenizer_on_generated_records(monkeypatch, order):
    _block, text = generated_text(3000, order, seed=6)
    text += format_block(random_block(500, order, seed=9), order).encode("latin-1")
    fast = parse_text(text, order)
    general_only(monkeypatch)
    assert parse_text(text, order) == fast and len(fast) == 3500 * 240


@pytest.mark.parametrize("name", golden_names(".txt"))
def test_reader_fast_path_matches_tokenizer_on_golden_files(monkeypatch, name):
    fast = parse_text(read(name), "little")
    general_only(monkeypatch)
    assert parse_text(read(name), "little") == fast


def test_fast_path_takes_the_printed_form_in_chunks(monkeypatch):
    _block, text = generated_text(200, "little", seed=3)
    calls = []
    original = PfsTextReader._fast_run

    def counting(self, chunk):
        calls.append(chunk.count(b"\n"))
        return original(self, chunk)
    monkeypatch.setattr(PfsTextReader, "_fast_run", counting)
    assert len(parse_text(text, "little")) == 200 * 240
    assert calls == [200]


@pytest.mark.parametrize("odd", [
    BASE.replace("id 70", "id 070"),                               # leading zero: not JSON
    BASE.replace("\n", "\r\n"),
    BASE.replace(" src ", "\t src "),
    BASE.replace("max_win 512 wscale 3", "max_win 512 wscale 3 mss 1460"),
    BASE.replace("wscale 3 no-scrub", "wscale 3 scrub flags 1 mode 9 ttl 64"),
    BASE.replace("proto tcp", "proto TCP"),
    BASE.replace("ESTABLISHED seq [1000", "4 seq [1000"),
    "\n" + BASE,
])
def test_lines_the_fast_path_refuses_read_as_the_tokenizer_reads_them(monkeypatch, odd):
    text = (BASE * 5 + odd + BASE * 5).encode("latin-1")
    fast = parse_text(text, "little")
    general_only(monkeypatch)
    assert parse_text(text, "little") == fast and len(fast) == 11 * 240


def test_error_after_fast_chunks_names_its_line(monkeypatch):
    monkeypatch.setattr(_Lines, "CHUNK_BYTES", 4096)
    _block, text = generated_text(100, "little", seed=2)
    lines = text.splitlines(True)
    lines[57] = lines[57].replace(b" cid ", b" cid 99999999999 x ")
    with pytest.raises(TextFormatError) as info:
        b"".join(PfsTextReader(io.BytesIO(b"".join(lines)), "little"))
    assert str(info.value).startswith("line 58")


def test_state_spanning_two_chunks(monkeypatch):
    monkeypatch.setattr(_Lines, "CHUNK_BYTES", 300)
    text = (BASE * 3).replace(" src ", "\n src ").encode("latin-1")
    assert b"".join(PfsTextReader(io.BytesIO(text), "little")) == parse_text(BASE * 3, "little")


def test_out_of_range_values_in_the_printed_form_leave_the_fast_path():
    for change, message in [(("id 70", "id 18446744073709551616"), "id"), (("timeout 2", "timeout 256"), "timeout"),
                            (("[49152]", "[65536]"), "port 65536"), (("max_win 512", "max_win 65536"), "max_win")]:
        with pytest.raises(TextFormatError, match=message):
            parse_text(BASE * 3 + BASE.replace(*change), "little")


# --- columnar fast path ---------------------------------------------------------------

def fast_chunk(text, order="little"):
    """Records of `text` taken by the fast path as one chunk (None: it refused the chunk)."""
    return PfsTextReader(io.BytesIO(b""), order)._fast_run(text)


@pytest.mark.parametrize("order", ["little", "big"])
def test_fast_path_takes_every_printed_shape_in_one_chunk(monkeypatch, order):
    # generated (every protocol, NAT/rdr, IPv6, synproxy, mss, seqdiff, scrub) and random records
    _block, text = generated_text(2000, order, seed=12)
    text += format_block(random_block(500, order, seed=13), order).encode("latin-1")
    fast = fast_chunk(text, order)
    general_only(monkeypatch)
    assert fast is not None and fast == parse_text(text, order)


@pytest.mark.parametrize("name", PAIRS)
def test_fast_path_takes_golden_files_in_one_chunk(monkeypatch, name):
    text = read(name + ".txt")
    fast = fast_chunk(text)
    general_only(monkeypatch)
    assert fast is not None and fast == parse_text(text, "little")


def test_fast_path_peer_swap_and_rare_fields_land_in_the_right_peer():
    rare = (BASE.replace("state out", "state in").replace("[1000:2000]", "[1000:2000,77]")
            .replace("max_win 1024 wscale 7 no-scrub", "max_win 1024 mss 1460 wscale 7 scrub flags 3ttl 64mod 99"))
    fields = StateCodec("little").to_dict(fast_chunk((BASE + rare).encode("latin-1"))[240:])
    # 'in': the text's src peer is the record's dst
    assert (fields["dst_seqlo"], fields["dst_seqdiff"], fields["dst_mss"], fields["dst_scrub_flag"]) == (1000, 77, 0, 0)
    assert (fields["src_seqlo"], fields["src_mss"], fields["src_scrub_flag"], fields["src_pfss_flags"],
            fields["src_pfss_ttl"], fields["src_pfss_ts_mod"]) == (3000, 1460, 1, 3, 64, 99)


@pytest.mark.parametrize("change,message", [
    (("192.0.2.10:[443]", "2001:db8::10:[443]"), "not of the same family"),
    (("[443] id", "[443] using 2001:db8::1:[80] id"), "not of the same family"),
    (("10.0.0.1:", "10:0.0.1:"), "not a valid inet address"),
    (("10.0.0.1:[49152] to 192.0.2.10:", "::ffff:10.0.0.300:[49152] to ::1:"), "not a valid inet6 address"),
])
def test_fast_path_leaves_bad_addresses_to_the_tokenizer(change, message):
    bad = BASE.replace(*change).encode("latin-1")
    assert fast_chunk(BASE.encode("latin-1") * 3 + bad) is None
    with pytest.raises(TextFormatError, match=message) as info:
        parse_text(BASE * 3 + BASE.replace(*change), "little")
    assert str(info.value).startswith("line 4")


def test_fast_path_ipv6_spellings_it_does_not_parse_in_c_match_the_tokenizer(monkeypatch):
    lines = [BASE.replace("10.0.0.1:", address + ":").replace("192.0.2.10:", "::1:")
             for address in ("::ffff:10.1.2.3", "::10.1.2.3", "0:0:0:0:0:0:0:1", "FD00::A", "1:0:0:2::3")]
    text = "".join(lines).encode("latin-1")
    fast = fast_chunk(text)
    general_only(monkeypatch)
    assert fast is not None and fast == parse_text(text, "little")
