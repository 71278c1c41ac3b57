# -*- coding: utf-8 -*-
# Copyright: netbsd.pf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The root of every error the collection raises on purpose.

Each domain error (PfError, LeaseError, the file format errors, RestoreError...)
derives from ``PfStateError``, so a module has one ``except PfStateError`` and
the ``pfstate`` command one handler.  The errors that report a bad value also
derive from ValueError, as they always did.  This module imports nothing of the
collection: it is the bottom floor.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class PfStateError(Exception):
    """An expected failure whose message says what is wrong; ``result`` holds what was done before it (or None).

    ``result`` is a partial module result (a dict of counts and lists) that a
    module returns with the failure, so a task that fails mid-way still tells
    what it changed.
    """

    # True for errors about a file's content whose message does not name the file
    # (the dump format errors): a caller that knows the file puts its name first.
    message_lacks_file = False
    result = None

    def __init__(self, *args, result=None):
        super(PfStateError, self).__init__(*args)
        if result is not None:
            self.result = result

    def message(self, path=None, hint=""):
        """The message for a user: ``path`` first when the error does not name its file, then ``hint``."""
        text = str(self)
        if path and self.message_lacks_file:
            text = "%s: %s" % (path, text)
        return text + hint

    def fail_arguments(self, path=None, hint=""):
        """The keyword arguments of ``AnsibleModule.fail_json``: the partial result and ``msg``."""
        arguments = dict(self.result or {})
        arguments["msg"] = self.message(path, hint)
        return arguments

    def do_fail(self, module, path=None, hint=""):
        """Fail ``module`` (an AnsibleModule) with this error; does not return."""
        module.fail_json(**self.fail_arguments(path, hint))
