# -*- coding: utf-8 -*-
# Copyright: netbsd.pf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of netbsd.pf.states_dump: runs the module, then fetches the dump (fetch_to).

The file lands in ``<fetch_to>/<inventory_hostname>/<basename of path>``:
directories mode 0700 (the host directory is set to 0700 on every run), the
file 0600 from its first byte (umask 077 and a 0600 ``.part`` file created
before the transfer), moved into place only after its
SHA-256 matched the one the module computed on the target.  The transfer
itself is ansible.builtin.fetch (which handles become and large files).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os
import re

from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase

MODULE = "netbsd.pf.states_dump"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_host_dir(name):
    """A directory name for an inventory host that can never leave its parent (no '/', no '..')."""
    cleaned = _UNSAFE.sub("_", to_text(name))
    if cleaned.strip(".") == "":
        cleaned = "_" + cleaned
    return cleaned


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ActionModule(ActionBase):

    TRANSFERS_FILES = True

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
        except _FetchError as exc:
            result.update(failed=True, msg="the dump was written on the target (%s) but not fetched: %s" % (result["path"], exc))
        return result

    def _fetch(self, remote_path, expected_sha256, fetch_to, task_vars):
        base = os.path.realpath(self._loader.path_dwim(os.path.expanduser(fetch_to)))
        host_dir = os.path.join(base, safe_host_dir(task_vars.get("inventory_hostname", self._play_context.remote_addr)))
        if os.path.dirname(os.path.realpath(host_dir)) != base:
            raise _FetchError("host directory %s would leave %s" % (host_dir, base))
        final = os.path.join(host_dir, os.path.basename(remote_path))
        partial = final + ".part"
        # Dumps hold every connection of the firewall: nothing created here may be readable by
        # others, not even for a moment.  umask 077 covers whatever the transport creates; the
        # .part file is also created 0600 before the transfer (transports keep an existing file's mode).
        previous_umask = os.umask(0o077)
        try:
            if not os.path.isdir(base):
                os.makedirs(base, 0o700)
            if not os.path.isdir(host_dir):
                os.mkdir(host_dir, 0o700)
            os.chmod(host_dir, 0o700)
            if os.path.lexists(partial):
                os.unlink(partial)
            os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            fetched = self._run_builtin_fetch(remote_path, partial, task_vars)
            if fetched.get("failed"):
                raise _FetchError(fetched.get("msg", "ansible.builtin.fetch failed"))
            os.chmod(partial, 0o600)
            actual = _sha256(partial)
            if actual != expected_sha256:
                raise _FetchError("SHA-256 mismatch: the target reported %s, the fetched copy is %s" % (expected_sha256, actual))
            os.rename(partial, final)
        finally:
            os.umask(previous_umask)
            if os.path.lexists(partial):
                os.unlink(partial)
        return final

    def _run_builtin_fetch(self, remote_path, local_path, task_vars):
        task = self._task.copy()
        task.args = dict(src=remote_path, dest=local_path, flat=True, fail_on_missing=True, validate_checksum=True)
        action = self._shared_loader_obj.action_loader.get(
            "ansible.builtin.fetch", task=task, connection=self._connection, play_context=self._play_context,
            loader=self._loader, templar=self._templar, shared_loader_obj=self._shared_loader_obj)
        return action.run(task_vars=task_vars)


class _FetchError(Exception):
    pass
