# -*- coding: utf-8 -*-
# Copyright: netbsd.pf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pack the collection's module_utils into one zip for the pfstate command (runs on the controller).

Usage: python bundle_module_utils.py MODULE_UTILS_DIR

Writes ``module_utils.zip`` into a new temporary directory and prints its path.
The archive holds the Python sources only (no caches) under
``ansible_collections/netbsd/pf/plugins/module_utils/``, with an entry for every
directory (zipimport finds namespace packages only through those), so that
``sys.path.insert(0, ZIP)`` is all the pfstate launcher needs: Python imports
from a zip natively.  Entries are sorted and dated 1980-01-01, so the same
sources give the same bytes and an unchanged library is not copied again.
"""

from __future__ import absolute_import, division, print_function

import os
import sys
import tempfile
import zipfile

PACKAGE = "ansible_collections/netbsd/pf/plugins/module_utils"
FIXED_DATE = (1980, 1, 1, 0, 0, 0)


def _entry(name, mode):
    info = zipfile.ZipInfo(name, date_time=FIXED_DATE)
    info.external_attr = mode << 16
    return info


def write_bundle(source_dir, zip_path):
    parts = PACKAGE.split("/")
    with zipfile.ZipFile(zip_path, "w") as bundle:
        for depth in range(1, len(parts) + 1):
            bundle.writestr(_entry("/".join(parts[:depth]) + "/", 0o40755), b"")
        for name in sorted(os.listdir(source_dir)):
            if name.endswith(".py"):
                with open(os.path.join(source_dir, name), "rb") as source:
                    bundle.writestr(_entry(PACKAGE + "/" + name, 0o100644), source.read(), zipfile.ZIP_DEFLATED)


def main(argv):
    if len(argv) != 1:
        sys.stderr.write("usage: bundle_module_utils.py MODULE_UTILS_DIR\n")
        return 2
    zip_path = os.path.join(tempfile.mkdtemp(prefix="netbsd-pf-"), "module_utils.zip")
    write_bundle(argv[0], zip_path)
    print(zip_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
