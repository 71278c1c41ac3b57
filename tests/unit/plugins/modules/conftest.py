"""Fixtures shared by the module tests."""

import pytest

from ansible.module_utils import _internal


@pytest.fixture(autouse=True)
def module_side_warnings(monkeypatch):
    """Run modules as on a target: their warnings go into the result.

    Tests that import controller code (action plugins) flip ansible's
    process-wide is_controller flag, after which module.warn() goes to the
    controller's display instead of the result, making results depend on test order.
    """
    monkeypatch.setattr(_internal, "is_controller", False)
