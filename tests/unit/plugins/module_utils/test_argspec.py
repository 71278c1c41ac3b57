"""argspec: the shared option specs and their normalisation."""

import pytest

from ansible_collections.netbsd.pf.plugins.module_utils.argspec import (
    COMMON_ARGSPEC, FORMAT_CHOICES, LOCK_LEASE_ARGSPEC, TRANSFORM_ARGSPEC, OptionError, TransformOptionError,
    canonical_format, check_lease, transforms_from_params, module_argspec,
)
from ansible_collections.netbsd.pf.plugins.module_utils.transforms import StateFilter


def test_specs_have_the_agreed_names():
    assert set(TRANSFORM_ARGSPEC) == {"filters", "rename"}
    assert set(TRANSFORM_ARGSPEC["filters"]["options"]) == {
        "interfaces", "protocols", "address_family", "networks", "ports", "direction"}
    assert LOCK_LEASE_ARGSPEC["lease"]["default"] == 300
    assert COMMON_ARGSPEC["lease_file"]["default"] == "/var/run/netbsd_pf_lock.lease"
    assert COMMON_ARGSPEC["device"]["default"] == "/dev/pf"


def test_module_argspec_merges_the_common_options_and_refuses_a_name_twice():
    spec = module_argspec(dict(path=dict(type="path")), TRANSFORM_ARGSPEC)
    assert set(spec) == {"device", "lease_file", "filters", "rename", "path"}
    with pytest.raises(ValueError, match="lease_file"):
        module_argspec(dict(lease_file=dict(type="path")))


def test_nothing_given_means_no_transform():
    assert transforms_from_params({"filters": None, "rename": None}) == {"filters": None, "rename": None}
    # What AnsibleModule makes of an empty filters dict: every suboption None.
    empty = dict.fromkeys(TRANSFORM_ARGSPEC["filters"]["options"])
    assert transforms_from_params({"filters": empty, "rename": {}}) == {"filters": None, "rename": None}


def test_protocols_become_numbers_and_feed_state_filter():
    result = transforms_from_params({"filters": {"protocols": ["TCP", "17", "ipv6-icmp"], "ports": [22, 53],
                                                 "interfaces": None, "direction": "in"}, "rename": {"wm0": "ixg0"}})
    assert result == {"filters": {"protocols": [6, 17, 58], "ports": [22, 53], "direction": "in"}, "rename": {"wm0": "ixg0"}}
    assert StateFilter(**result["filters"]).active


@pytest.mark.parametrize("params,message", [
    ({"filters": {"protocols": ["nosuch"]}}, "filters.protocols"),
    ({"filters": {"protocols": ["300"]}}, "out of range"),
    ({"filters": {"ports": [70000]}}, "filters.ports"),
    ({"rename": {"wm0": ""}}, "non-empty"),
    ({"rename": {"wm0": "a_very_long_interface_name"}}, "longer than 15"),
])
def test_bad_values_name_the_option(params, message):
    with pytest.raises(TransformOptionError, match=message):
        transforms_from_params(params)


def test_canonical_format_takes_both_spellings_and_refuses_others():
    assert [canonical_format(name) for name in FORMAT_CHOICES] == ["native", "pfs-binary", "pfs-text", "pfs-binary", "pfs-text"]
    with pytest.raises(OptionError, match="unknown dump format 'pfs_json'; use native, pfs_binary or pfs_text"):
        canonical_format("pfs_json")


def test_check_lease_refuses_a_negative_lease_only():
    for lease in (0, 1, 300):
        check_lease(lease)
    with pytest.raises(OptionError, match=r"^lease must be 0 \(no watchdog, dangerous\) or a number of seconds, not -5$"):
        check_lease(-5)
