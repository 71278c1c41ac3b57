"""Running a module's main() in-process, the way every module test here does."""

import json

import pytest
from ansible.module_utils.testing import patch_module_args


def run_module(main, capsys, tmp_path=None, check_mode=False, diff=False, **args):
    """The JSON result of ``main()`` run with module arguments ``args``; the module must exit.

    With ``tmp_path`` the lease file defaults to one inside it, so no test reaches /var/run.
    """
    if tmp_path is not None:
        args.setdefault("lease_file", str(tmp_path / "lease"))
    args["_ansible_check_mode"] = check_mode
    args["_ansible_diff"] = diff
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            main()
    return json.loads(capsys.readouterr().out)
