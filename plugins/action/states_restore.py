# -*- coding: utf-8 -*-
# Copyright: netbsd.pf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of netbsd.pf.states_restore: pushes a controller-side dump (src) to the target.

The dump goes into Ansible's private remote temporary directory with mode
0600, the module runs with ``path`` pointing at it and ``pushed_copy`` set, so
it removes the copy as soon as it has opened it (and the copies that earlier
interrupted pushes left), and the directory is removed afterwards whatever
happened.  The controller file's modification time travels along as
``source_mtime`` so that ``age: auto`` can age pfs files, which carry no
capture time of their own.  A failure on the controller side (reading src,
the push) fails the task with a message.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible.errors import AnsibleError
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase

from ansible_collections.netbsd.pf.plugins.module_utils.pushed import PUSHED_NAME

MODULE = "netbsd.pf.states_restore"


class ActionModule(ActionBase):

    TRANSFERS_FILES = True

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        del tmp
        module_args = dict(self._task.args)
        src = module_args.pop("src", None)
        if src is None:
            result.update(self._execute_module(module_name=MODULE, module_args=module_args, task_vars=task_vars))
            return result
        if module_args.get("path"):
            result.update(failed=True, msg="parameters are mutually exclusive: path|src")
            return result

        try:
            local_path = self._find_needle("files", src)
            source_mtime = os.stat(local_path).st_mtime
            real_path = self._loader.get_real_file(local_path, decrypt=True)
        except AnsibleError as exc:
            result.update(failed=True, msg=to_text(exc))
            return result
        except (OSError, IOError) as exc:
            result.update(failed=True, msg="cannot read src %s: %s" % (src, to_text(exc.strerror or exc)))
            return result

        try:
            remote_tmp = self._make_tmp_path()
            try:
                remote_path = self._connection._shell.join_path(remote_tmp, PUSHED_NAME)
                try:
                    self._transfer_file(real_path, remote_path)
                    self._remote_chmod([remote_path], "0600")
                except AnsibleError as exc:
                    result.update(failed=True, msg="cannot push %s to the target (nothing was restored): %s" % (local_path, to_text(exc)))
                    return result
                module_args.update(path=remote_path, pushed_copy=True)
                module_args.setdefault("source_mtime", source_mtime)
                result.update(self._execute_module(module_name=MODULE, module_args=module_args, task_vars=task_vars))
            finally:
                self._remove_temporary_directory(remote_tmp, result)
        finally:
            self._loader.cleanup_tmp_file(real_path)
        result["src"] = local_path
        return result

    def _remove_temporary_directory(self, remote_tmp, result):
        """Remove the push's directory; a failure (the connection dropped) is a warning that keeps the module's result."""
        try:
            self._remove_tmp_path(remote_tmp, force=True)
        except AnsibleError as exc:
            result.setdefault("warnings", []).append(
                "could not remove the temporary directory %s on the target: %s (the module removes the pushed copy "
                "as soon as it has opened it)" % (remote_tmp, to_text(exc)))
