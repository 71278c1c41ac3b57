"""The netbsd.pf.host_dir filter: one injective, path-safe name per inventory host (controller code)."""

import os

import pytest
from hypothesis import given, settings, strategies as st

from ansible.errors import AnsibleFilterError

from ansible_collections.netbsd.pf.plugins.filter.host_dir import FilterModule
from ansible_collections.netbsd.pf.plugins.plugin_utils.host_dir import host_dir_decode, host_dir_name

host_dir = FilterModule().filters()["host_dir"]
SAFE = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-%")


@pytest.mark.parametrize("name, expected", [
    ("fw1", "fw1"), ("fw_1.example.org", "fw_1.example.org"), ("2001:db8::1", "2001%3Adb8%3A%3A1"),
    ("fw-münchen", "fw-m%C3%BCnchen"), ("fw-ü", "fw-%C3%BC"), ("fw-ö", "fw-%C3%B6"), ("a%b", "a%25b"),
    ("", "%"), (".", "%2E"), ("..", "%2E."), (".hidden", "%2Ehidden"), ("../etc", "%2E.%2Fetc"), ("fw*[1]", "fw%2A%5B1%5D"),
])
def test_documented_encoding(name, expected):
    assert host_dir(name) == expected


def test_a_non_string_is_refused_with_a_message():
    with pytest.raises(AnsibleFilterError, match="expects a host name"):
        host_dir(["fw1"])


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.text(max_size=40))
def test_every_name_decodes_back_and_is_one_safe_path_component(name):
    encoded = host_dir_name(name)
    assert host_dir_decode(encoded) == name
    assert set(encoded) <= SAFE and encoded not in ("", ".", "..") and not encoded.startswith(".")
    assert os.path.basename(os.path.join("/captures", encoded)) == encoded


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.text(max_size=12), st.text(max_size=12))
def test_different_names_never_share_a_directory(first, second):
    if first != second:
        assert host_dir_name(first) != host_dir_name(second)
