"""Install an offline stand-in for the get-pip script ansible-test downloads.

ansible-test bootstraps pip into each virtual environment it creates with a
get-pip script fetched from a host that CI cannot reach.  It looks for a cached
copy at ~/.ansible/test/cache/get_pip_<pip version>.py first, so this writes a
script there that does the same job with what every CPython ships: ensurepip,
then a pip install from the package index of the packages ansible-test asked
for (at the pinned pip version).

Run with the project venv's Python, which has ansible-test installed.
"""

import os
import types

from ansible_test._internal.python_requirements import get_venv_packages
from ansible_test._util.target.common.constants import (
    CONTROLLER_PYTHON_VERSIONS,
    REMOTE_ONLY_PYTHON_VERSIONS,
)

BOOTSTRAP = '''\
"""Offline replacement for get-pip.py, written by netbsd.pf tools/install-get-pip-bootstrap.py."""
import subprocess
import sys

# get-pip.py options that pip install does not know.
GET_PIP_ONLY_OPTIONS = {"--no-setuptools", "--no-wheel"}

subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"])
pip_arguments = [arg for arg in sys.argv[1:] if arg not in GET_PIP_ONLY_OPTIONS]
subprocess.check_call([sys.executable, "-m", "pip", "install"] + pip_arguments)
'''


def main():
    cache_dir = os.path.expanduser("~/.ansible/test/cache")
    os.makedirs(cache_dir, exist_ok=True)
    pip_versions = {
        get_venv_packages(types.SimpleNamespace(version=version))["pip"]
        for version in REMOTE_ONLY_PYTHON_VERSIONS + CONTROLLER_PYTHON_VERSIONS
    }
    for pip_version in sorted(pip_versions):
        path = os.path.join(cache_dir, "get_pip_%s.py" % pip_version.replace(".", "_"))
        with open(path, "w", encoding="utf-8") as script:
            script.write(BOOTSTRAP)
        print("get-pip bootstrap for pip %s: %s" % (pip_version, path))


if __name__ == "__main__":
    main()
