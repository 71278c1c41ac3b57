# -*- coding: utf-8 -*-
# Copyright: netbsd.pf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The copy of a controller dump that the states_restore action plugin pushes (``src``).

The action plugin pushes it as ``<remote_tmp>/ansible-tmp-.../PUSHED_NAME`` and
removes that directory afterwards, but an interrupted ansible-playbook (Ctrl-C,
a dropped connection) never gets there.  So the module removes the copy as soon
as it has opened it (``restore.load_dump(remove_after_open=True)``), and removes
the copies that pushes interrupted before the module ran left in sibling
temporary directories (``remove_stale_copies``).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import stat
import time

PUSHED_NAME = "netbsd-pf-restore-src.dump"
# The name collection 0.1.0 pushed under: its leftovers are removed too.
LEGACY_PUSHED_NAME = "states.dump"
# Ansible names its remote temporary directories ansible-tmp-<time>-<pid>-<random>.
TEMP_DIR_PREFIX = "ansible-tmp-"
# A push in progress writes its copy continuously and the module opens it a few seconds after
# the last write; a copy untouched for this long belongs to a run that was interrupted.
STALE_SECONDS = 120


def is_pushed_copy(path):
    """Whether ``path`` is named as the action plugin names its push: ``.../ansible-tmp-*/PUSHED_NAME``."""
    directory, name = os.path.split(os.path.abspath(path))
    return name == PUSHED_NAME and os.path.basename(directory).startswith(TEMP_DIR_PREFIX)


def remove_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def remove_stale_copies(pushed_path, now=None):
    """Remove PUSHED_NAME (and LEGACY_PUSHED_NAME) copies older than STALE_SECONDS beside ``pushed_path``'s temporary directory.

    Only regular files owned by the owner of the temporary directory holding
    ``pushed_path`` (the connection user), in directories named like Ansible's;
    a directory left empty is removed too.  Returns the removed paths.
    """
    own_dir = os.path.dirname(os.path.abspath(pushed_path))
    if not os.path.basename(own_dir).startswith(TEMP_DIR_PREFIX):
        return []
    remote_tmp = os.path.dirname(own_dir)
    owner = os.lstat(own_dir).st_uid
    deadline = (time.time() if now is None else now) - STALE_SECONDS
    removed = []
    for name in sorted(os.listdir(remote_tmp)):
        directory = os.path.join(remote_tmp, name)
        if not name.startswith(TEMP_DIR_PREFIX) or directory == own_dir:
            continue
        for candidate in (os.path.join(directory, PUSHED_NAME), os.path.join(directory, LEGACY_PUSHED_NAME)):
            try:
                info = os.lstat(candidate)
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode) and info.st_uid == owner and info.st_mtime < deadline:
                os.unlink(candidate)
                removed.append(candidate)
        if removed and os.path.dirname(removed[-1]) == directory:
            try:
                os.rmdir(directory)
            except OSError:
                pass        # Ansible's own files are still there
    return removed
