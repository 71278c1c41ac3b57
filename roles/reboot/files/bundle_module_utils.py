# -*- coding: utf-8 -*-
# Copyright: netbsd.pf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pack the collection's module_utils into one zip for the pfstate command (runs on the controller).

Usage: python bundle_module_utils.py MODULE_UTILS_DIR

Writes ``module_utils.zip`` into a new temporary directory and prints its path.
The archive holds the Python sources only (no caches) under
``ansible_collections/netbsd/pf/plugins/module_utils/``, sub-packages included
(every ``*.py`` of every folder but ``__pycache__`` and hidden ones), with an
entry for every directory (zipimport finds namespace packages only through
those), so that ``sys.path.insert(0, ZIP)`` is enough to import from it.
Entries are sorted and dated 1980-01-01, so the same sources give the same bytes
and an unchanged library is not copied again.  On the target the reboot role
unpacks it and byte-compiles it with the target's Python (install_library.py):
from the zip itself Python would compile every module at every start.
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


def _source_tree(source_dir):
    """Yield (relative folder, file names) of the folders holding the library, sorted, caches left out."""
    for folder, subfolders, files in os.walk(source_dir):
        subfolders[:] = sorted(name for name in subfolders if name != "__pycache__" and not name.startswith("."))
        yield os.path.relpath(folder, source_dir), sorted(name for name in files if name.endswith(".py"))


def write_bundle(source_dir, zip_path):
    parts = PACKAGE.split("/")
    with zipfile.ZipFile(zip_path, "w") as bundle:
        for depth in range(1, len(parts)):
            bundle.writestr(_entry("/".join(parts[:depth]) + "/", 0o40755), b"")
        for folder, names in _source_tree(source_dir):
            prefix = PACKAGE + "/" if folder == "." else "%s/%s/" % (PACKAGE, folder.replace(os.sep, "/"))
            bundle.writestr(_entry(prefix, 0o40755), b"")
            for name in names:
                with open(os.path.join(source_dir, folder, name), "rb") as source:
                    bundle.writestr(_entry(prefix + name, 0o100644), source.read(), zipfile.ZIP_DEFLATED)


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
