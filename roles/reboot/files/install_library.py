# -*- coding: utf-8 -*-
# Copyright: netbsd.pf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Install the pfstate command's library on the target: unpack the bundle, byte-compile it.

Usage: PYTHON install_library.py BUNDLE_ZIP DEST_DIR

Run by the reboot role with the Python the pfstate command runs with, so that the
bytecode matches it (.pyc files are specific to a Python version; from the zip
itself Python compiled every module at every start of the command: 100-140 ms).
The zip (bundle_module_utils.py) is unpacked into a new folder next to DEST_DIR
named after its SHA-256 (DEST_DIR-<sha256 prefix>), compiled there, and DEST_DIR,
a symbolic link, is renamed over to point at it: the command sees the old library
or the new one, never a half-installed one or none. The same zip again leaves
everything as it is; folders of earlier bundles (DEST_DIR-<16 hex digits>, real
folders only) and half-unpacked ones of an install that was killed are removed.
The folder of DEST_DIR must belong to root or the installing user and be sticky if
others can write to it (root imports the library at boot: whoever could rename
entries there could swap it). Prints "installed" or "unchanged"; on an error, a
message naming the file on stderr and exit status 1.
Python 3.8+, standard library only.
"""

from __future__ import absolute_import, division, print_function

import compileall
import hashlib
import os
import re
import shutil
import stat
import sys
import tempfile
import zipfile


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _unpack(bundle, folder):
    """Extract ``bundle`` into ``folder``, refusing any name that would land outside it."""
    with zipfile.ZipFile(bundle) as archive:
        for name in archive.namelist():
            parts = name.split("/")
            if name.startswith("/") or ".." in parts or "\\" in name:
                raise ValueError("%s: unsafe name in the bundle: %r" % (bundle, name))
        archive.extractall(folder)


def _check_parent(parent):
    """Refuse a folder that another user owns, or that others can write to without the sticky bit."""
    info = os.lstat(parent)
    if not stat.S_ISDIR(info.st_mode):
        raise ValueError("%s is not a directory" % parent)
    if info.st_uid not in (0, os.geteuid()):
        raise ValueError("%s is owned by uid %d, neither root nor this user: it could swap the library; "
                         "choose another reboot_lib_dir" % (parent, info.st_uid))
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX:
        raise ValueError("%s can be written by other users and is not sticky: anyone could swap the library; "
                         "choose another reboot_lib_dir" % parent)


def _remove_leftovers(parent, link_name, version):
    """Remove the folders of earlier bundles and the staging folders of killed installs, nothing else."""
    # DEST_DIR-<sha256 prefix> (an earlier bundle), .DEST_DIR-<sha256 prefix>-XXXX (mkdtemp's staging folder)
    ours = re.compile(r"(%s-[0-9a-f]{16}|\.%s-[0-9a-f]{16}-.+)\Z" % (re.escape(link_name), re.escape(link_name)))
    for name in os.listdir(parent):
        path = os.path.join(parent, name)
        if name == version or not ours.match(name):
            continue
        if stat.S_ISDIR(os.lstat(path).st_mode):
            shutil.rmtree(path)


def install(bundle, dest):
    """Install ``bundle`` behind the symbolic link ``dest``; returns True when something changed."""
    dest = os.path.abspath(dest)
    parent, link_name = os.path.split(dest)
    _check_parent(parent)
    version = "%s-%s" % (link_name, _sha256(bundle)[:16])
    if os.path.islink(dest) and os.readlink(dest) == version and os.path.isdir(os.path.join(parent, version)):
        return False
    staged = tempfile.mkdtemp(prefix=".%s-" % version, dir=parent)
    try:
        _unpack(bundle, staged)
        if not compileall.compile_dir(staged, quiet=1):
            raise ValueError("%s: a module of the bundle does not compile with Python %s" % (bundle, sys.version.split()[0]))
        os.chmod(staged, 0o755)
        if os.path.isdir(os.path.join(parent, version)):
            shutil.rmtree(os.path.join(parent, version))     # left by an install that stopped half-way
        os.rename(staged, os.path.join(parent, version))
        staged = None
    finally:
        if staged:
            shutil.rmtree(staged, ignore_errors=True)
    new_link = os.path.join(parent, ".%s.new" % link_name)
    if os.path.lexists(new_link):
        os.unlink(new_link)
    os.symlink(version, new_link)
    os.rename(new_link, dest)
    _remove_leftovers(parent, link_name, version)
    return True


def main(argv):
    if len(argv) != 2:
        sys.stderr.write("usage: install_library.py BUNDLE_ZIP DEST_DIR\n")
        return 2
    try:
        changed = install(argv[0], argv[1])
    except (OSError, IOError, ValueError, zipfile.BadZipfile) as exc:
        sys.stderr.write("install_library: %s\n" % exc)
        return 1
    print("installed" if changed else "unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
