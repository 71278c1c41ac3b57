# -*- coding: utf-8 -*-
# Copyright: netbsd.pf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of netbsd.pf.states_dump: runs the module, then fetches the dump (fetch_to).

The file lands in ``<fetch_to>/<host | netbsd.pf.host_dir>/<basename of path>``,
where host is the host the module ran on (the delegated host under
``delegate_to``): directories mode 0700, the host directory refused unless the
controller user owns it (whoever owns it could swap captures) and set to 0700 on
every run, the file 0600 from its first byte (umask 077 and a 0600 ``.part``
file created before the transfer), moved into place only after its SHA-256
matched the one the module computed on the target.  Every directory above the
host directory must belong to root or the controller user and be sticky if
others can write to it (else they could swap the host directory); the host
directory is then held open and the copy hashed and renamed through that
descriptor, and a copy replaced after the transfer or after its check is refused.  The transfer is the
connection's own file copy, checked by that SHA-256 alone: ansible.builtin.fetch
would first run a stat module on the target for a SHA-1 of the file (one more
module round trip per host) and hash the copy twice more.  Under become, where the
connection user may not read the file, it is ansible.builtin.fetch (which slurps
it through the become user).  A failure on the controller side fails the task
with a message and keeps the module's result.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os
import stat

from ansible.errors import AnsibleError
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase

from ansible_collections.netbsd.pf.plugins.plugin_utils.host_dir import host_dir_name

MODULE = "netbsd.pf.states_dump"


def _sha256_of(handle):
    digest = hashlib.sha256()
    for chunk in iter(lambda: handle.read(1 << 20), b""):
        digest.update(chunk)
    return digest.hexdigest()


def _unlink_if_present(name, dir_fd):
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def _os_error_text(exc):
    return "%s: %s" % (exc.filename, exc.strerror) if exc.filename else to_text(exc.strerror or exc)


def check_private_directory(path):
    """Refuse ``path`` unless it is a real directory (no symlink) owned by the controller user."""
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise _FetchError("%s is not a directory" % path)
    if info.st_uid != os.geteuid():
        raise _FetchError("%s is owned by uid %d, not by the controller user (uid %d): whoever owns it could swap "
                          "the captures in it; remove it or choose another fetch_to" % (path, info.st_uid, os.geteuid()))


def check_trusted_ancestors(path):
    """Refuse ``path`` (a real path) if another user could rename or replace a directory on the way to it.

    Each existing directory from ``/`` down to ``path`` must belong to root or the controller user, and
    one that others can write to must be sticky (like /tmp): otherwise its owner, or anyone, could swap
    the host directory below it for one of theirs between the checks and the transfer.
    """
    current = os.sep
    for component in [""] + [part for part in path.split(os.sep) if part]:
        current = os.path.join(current, component)
        try:
            info = os.lstat(current)
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(info.st_mode):
            raise _FetchError("%s: Not a directory (%s is not one)" % (path, current))
        if info.st_uid not in (0, os.geteuid()):
            raise _FetchError("%s is owned by uid %d, neither root nor the controller user (uid %d): it could swap the "
                              "host directories below it; choose another fetch_to" % (current, info.st_uid, os.geteuid()))
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX:
            raise _FetchError("%s can be written by other users and is not sticky: anyone could swap the host "
                              "directories below it; choose another fetch_to" % current)


class ActionModule(ActionBase):

    # Nothing is put on the target: no remote temporary directory before the module runs (with
    # pipelining that would be a round trip of its own, and one more to remove it).
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        del tmp
        task_vars = task_vars or {}
        module_args = dict(self._task.args)
        fetch_to = module_args.pop("fetch_to", None)
        result.update(self._execute_module(module_name=MODULE, module_args=module_args, task_vars=task_vars))
        if fetch_to is None or result.get("failed") or self._task.check_mode:
            return result
        try:
            result["fetched"] = self._fetch(result["path"], result["sha256"], fetch_to, task_vars)
        except (_FetchError, AnsibleError) as exc:
            reason = to_text(exc)
        except (OSError, IOError) as exc:
            reason = _os_error_text(exc)
        else:
            return result
        result.update(failed=True, msg="the dump was written on the target (%s) but not fetched: %s" % (result["path"], reason))
        return result

    def _host_name(self, task_vars):
        """The host whose dump this is: the delegated host under delegate_to, else the inventory host."""
        return self._task.delegate_to or task_vars.get("inventory_hostname", self._play_context.remote_addr)

    def _fetch(self, remote_path, expected_sha256, fetch_to, task_vars):
        base = os.path.realpath(self._loader.path_dwim(os.path.expanduser(fetch_to)))
        host_dir = os.path.join(base, host_dir_name(self._host_name(task_vars)))
        final = os.path.join(host_dir, os.path.basename(remote_path))
        partial = final + ".part"
        # Dumps hold every connection of the firewall: nothing created here may be readable by
        # others, not even for a moment.  umask 077 covers whatever the transport creates; the
        # .part file is also created 0600 before the transfer (transports keep an existing file's mode).
        previous_umask = os.umask(0o077)
        host_fd = None
        created_partial = False
        try:
            check_trusted_ancestors(base)
            # exist_ok: the workers of other hosts create the same base directory at the same moment.
            os.makedirs(base, 0o700, exist_ok=True)
            check_trusted_ancestors(base)
            if not os.path.lexists(host_dir):
                os.mkdir(host_dir, 0o700)
            check_private_directory(host_dir)
            # From here on the host directory is the one checked, held open: the names below are
            # looked up in it, whatever happens to its path.
            host_fd = os.open(host_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            if os.fstat(host_fd).st_ino != os.lstat(host_dir).st_ino:
                raise _FetchError("%s was replaced while it was checked" % host_dir)
            os.fchmod(host_fd, 0o700)
            partial_name, final_name = os.path.basename(partial), os.path.basename(final)
            _unlink_if_present(partial_name, host_fd)
            os.close(os.open(partial_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=host_fd))
            created_partial = True
            self._transfer(remote_path, partial, task_vars)
            self._check_and_place(host_fd, partial_name, final_name, expected_sha256)
            created_partial = False
        finally:
            os.umask(previous_umask)
            if created_partial:
                _unlink_if_present(partial_name, host_fd)
            if host_fd is not None:
                os.close(host_fd)
        return final

    @staticmethod
    def _check_and_place(host_fd, partial_name, final_name, expected_sha256):
        """Hash the fetched copy through one descriptor and rename exactly that file into place."""
        try:
            fd = os.open(partial_name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=host_fd)
        except OSError as exc:
            raise _FetchError("the fetched copy %s cannot be opened (%s): it was replaced after the transfer"
                              % (partial_name, exc.strerror))
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise _FetchError("the fetched copy %s is not a regular file" % partial_name)
            os.fchmod(handle.fileno(), 0o600)
            actual = _sha256_of(handle)
            if actual != expected_sha256:
                raise _FetchError("SHA-256 mismatch: the target reported %s, the fetched copy is %s" % (expected_sha256, actual))
            os.rename(partial_name, final_name, src_dir_fd=host_fd, dst_dir_fd=host_fd)
            placed = os.stat(final_name, dir_fd=host_fd, follow_symlinks=False)
            if (placed.st_dev, placed.st_ino) != (info.st_dev, info.st_ino):
                _unlink_if_present(final_name, host_fd)
                raise _FetchError("the fetched copy was replaced between its SHA-256 check and its move into place; "
                                  "nothing was kept")

    def _transfer(self, remote_path, local_path, task_vars):
        """Copy the target's file to ``local_path``; the caller checks its SHA-256."""
        if not self._connection.become:
            self._connection.fetch_file(remote_path, local_path)
            return
        fetched = self._run_builtin_fetch(remote_path, local_path, task_vars)
        if fetched.get("failed"):
            raise _FetchError(fetched.get("msg", "ansible.builtin.fetch failed"))

    def _run_builtin_fetch(self, remote_path, local_path, task_vars):
        task = self._task.copy()
        task.args = dict(src=remote_path, dest=local_path, flat=True, fail_on_missing=True, validate_checksum=True)
        action = self._shared_loader_obj.action_loader.get(
            "ansible.builtin.fetch", task=task, connection=self._connection, play_context=self._play_context,
            loader=self._loader, templar=self._templar, shared_loader_obj=self._shared_loader_obj)
        return action.run(task_vars=task_vars)


class _FetchError(Exception):
    pass
