"""A pf host never loads the NPF workflows: a module's imports are compiled from Ansible's zip at every run.

Each entry point is imported in a fresh interpreter, which then lists the NPF modules it holds.
"""

import json
import os
import subprocess
import sys

import pytest

NPF_WORKFLOW_MODULES = ("npf_operations", "npf_restore", "npf_convert", "npf_snapshot", "npf_native")
PREFIX = "ansible_collections.netbsd.pf.plugins."
PROBE = """import json, sys
import %s
print(json.dumps(sorted(name for name in sys.modules if name.startswith(%r))))
"""


def loaded_modules(entry_point):
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join(path for path in sys.path if path))
    output = subprocess.check_output([sys.executable, "-c", PROBE % (PREFIX + entry_point, PREFIX)], env=environment)
    return set(name.rsplit(".", 1)[1] for name in json.loads(output.decode()))


@pytest.mark.parametrize("entry_point", ["modules.states_dump", "modules.states_info", "modules.states_restore",
                                         "module_utils.pfstate_cli"])
def test_pf_entry_points_do_not_import_the_npf_workflows(entry_point):
    loaded = loaded_modules(entry_point)
    assert "firewall" in loaded, "the entry point no longer detects the firewall through firewall.py"
    assert loaded.isdisjoint(NPF_WORKFLOW_MODULES), sorted(loaded.intersection(NPF_WORKFLOW_MODULES))
