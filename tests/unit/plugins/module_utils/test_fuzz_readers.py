"""Property tests: every dump reader answers any input with a read or one of its own clear errors.

The long run of the same harness is tests/fuzz/run_fuzz.py (make fuzz).
"""

import os
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ansible_collections.netbsd.pf.plugins.module_utils.formats import MAGIC
from ansible_collections.netbsd.pf.tests.fuzz.harness import (
    AUTO, MAX_INPUT, NATIVE, PFS_BINARY, PFS_TEXT, READERS, check_input, mutate, seed_files, read_everything,
)

SEEDS = seed_files()
FUZZ = settings(max_examples=120, deadline=2000, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


@pytest.fixture(scope="module")
def scratch():
    with tempfile.TemporaryDirectory(prefix="pf-fuzz.") as directory:
        yield os.path.join(directory, "input")


@pytest.mark.parametrize("reader", READERS)
def test_seed_files_are_read(scratch, reader):
    """The unmutated inputs are valid: the mutations below start from real files."""
    for data in SEEDS[reader]:
        assert check_input(scratch, data, reader) == "read"


mutation_lists = st.lists(st.tuples(st.integers(0, 63), st.integers(0, 2 ** 32)), min_size=1, max_size=4)


@pytest.mark.parametrize("reader", READERS)
@FUZZ
@given(data=st.data(), choices=mutation_lists)
def test_mutated_files_read_or_fail_clearly(scratch, reader, data, choices):
    seed = data.draw(st.sampled_from(SEEDS[reader]), label="seed file")
    check_input(scratch, mutate(seed, reader, choices), reader)


# Random bytes, alone or behind the start of each format, so they reach past the first checks.
PREFIXES = (b"", MAGIC, b"state ", b"\x01\x00\x00\x00", b"\x00\x00\x00\x01")


@pytest.mark.parametrize("reader", READERS)
@FUZZ
@given(prefix=st.sampled_from(PREFIXES), body=st.binary(max_size=2048))
def test_random_bytes_read_or_fail_clearly(scratch, reader, prefix, body):
    check_input(scratch, prefix + body, reader)


@FUZZ
@given(lines=st.lists(st.text(alphabet=st.sampled_from(list("state {}:.0123456789abcdefx[]/ \t<->@ ")), max_size=200),
                      max_size=8))
def test_pfs_text_garbage_lines(scratch, lines):
    check_input(scratch, "\n".join(lines).encode("ascii"), PFS_TEXT)


def test_huge_pfs_binary_count_is_refused_without_reading(scratch):
    """A count of 2^31-1 on a tiny file names the truncation; nothing tries to allocate 480 GB."""
    data = (0x7FFFFFFF).to_bytes(4, "little") + SEEDS[PFS_BINARY][2][4:]
    assert check_input(scratch, data, PFS_BINARY) == "rejected"


def test_native_header_with_template_markup_is_data(scratch):
    """Metadata with Jinja markup is read back verbatim, never rendered."""
    native = next(data for data in SEEDS[NATIVE] if b"{{ 7 * 7 }}" in data)
    with open(scratch, "wb") as handle:
        handle.write(native)
    from ansible_collections.netbsd.pf.plugins.module_utils.formats import open_dump  # pylint: disable=import-outside-toplevel
    with open_dump(scratch) as reader:
        assert reader.header["metadata"]["note"] == "{{ 7 * 7 }}"
    assert read_everything(scratch, AUTO) >= 0


def test_inputs_stay_bounded():
    assert all(len(mutate(data, reader, [(2, 1), (5, 2)])) <= MAX_INPUT for reader in (PFS_BINARY, NATIVE)
               for data in SEEDS[reader])


def test_pfs_text_number_beyond_python_digit_limit(scratch):
    text = next(data for data in SEEDS[PFS_TEXT] if b" expire " in data)
    check_input(scratch, text.replace(b" expire ", b" expire " + b"9" * 5000, 1), PFS_TEXT)
