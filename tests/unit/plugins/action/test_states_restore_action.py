"""The netbsd.pf.states_restore action plugin's push (src), with the transport replaced (controller code)."""

import posixpath
from types import SimpleNamespace

from ansible.errors import AnsibleConnectionFailure

from ansible_collections.netbsd.pf.plugins.action import states_restore as states_restore_action
from ansible_collections.netbsd.pf.plugins.module_utils.pushed import PUSHED_NAME

REMOTE_TMP = "/home/admin/.ansible/tmp/ansible-tmp-1-2-3"


class _Recorder(object):
    def __init__(self, transfer_error=None):
        self.transfer_error = transfer_error
        self.calls = []


def _action(tmp_path, recorder, src_name="fw1.pfstate"):
    src = tmp_path / src_name
    if not src.exists():
        src.write_bytes(b"dump")
    action = states_restore_action.ActionModule.__new__(states_restore_action.ActionModule)
    action._task = SimpleNamespace(args={"src": str(src), "age": "none"}, async_val=0, check_mode=False,
                                   action="netbsd.pf.states_restore")
    action._connection = SimpleNamespace(_shell=SimpleNamespace(tmpdir=None, join_path=posixpath.join))
    action._loader = SimpleNamespace(get_real_file=lambda path, decrypt: path,
                                     cleanup_tmp_file=lambda path: recorder.calls.append(("cleanup", path)))
    action._find_needle = lambda dirname, needle: needle
    action._make_tmp_path = lambda: REMOTE_TMP

    def transfer(local, remote):
        recorder.calls.append(("transfer", local, remote))
        if recorder.transfer_error:
            raise recorder.transfer_error

    action._transfer_file = transfer
    action._remote_chmod = lambda paths, mode: recorder.calls.append(("chmod", paths, mode))
    action._remove_tmp_path = lambda path, force=False: recorder.calls.append(("remove", path))

    def execute(module_name, module_args, task_vars):
        recorder.calls.append(("module", module_args))
        return {"changed": True, "restored": 1}

    action._execute_module = execute
    return action


def test_the_module_is_told_to_remove_the_pushed_copy_once_opened(tmp_path):
    """D9: the module gets pushed_copy=true and the copy's well-known name (to find leftovers of interrupted pushes)."""
    recorder = _Recorder()
    result = _action(tmp_path, recorder).run(task_vars={})
    assert result["restored"] == 1 and not result.get("failed")
    pushed = posixpath.join(REMOTE_TMP, PUSHED_NAME)
    module_args = [call[1] for call in recorder.calls if call[0] == "module"][0]
    assert module_args["path"] == pushed and module_args["pushed_copy"] is True and "src" not in module_args
    assert ("chmod", [pushed], "0600") in recorder.calls
    assert recorder.calls[-2:] == [("remove", REMOTE_TMP), ("cleanup", str(tmp_path / "fw1.pfstate"))]


def test_a_failed_push_is_a_message_and_removes_the_temporary_directory(tmp_path):
    """D5: a controller-side failure is a clear msg (no exception), and what was pushed is removed."""
    recorder = _Recorder(transfer_error=AnsibleConnectionFailure("sftp: No space left on device"))
    result = _action(tmp_path, recorder).run(task_vars={})
    assert result["failed"] is True and "exception" not in result
    assert result["msg"].startswith("cannot push %s to the target (nothing was restored): " % (tmp_path / "fw1.pfstate"))
    assert "No space left on device" in result["msg"]
    assert not [call for call in recorder.calls if call[0] == "module"]
    assert ("remove", REMOTE_TMP) in recorder.calls


def test_an_unreadable_src_is_a_message(tmp_path):
    recorder = _Recorder()
    action = _action(tmp_path, recorder)
    action._task.args["src"] = str(tmp_path / "missing.pfstate")
    result = action.run(task_vars={})
    assert result["failed"] is True and "missing.pfstate" in result["msg"] and "No such file" in result["msg"]
    assert recorder.calls == []


def test_a_failed_cleanup_keeps_the_modules_result(tmp_path):
    """D5: the connection dropping after the module ran is a warning, not an exception that loses the counts."""
    recorder = _Recorder()
    action = _action(tmp_path, recorder)

    def dropped(path, force=False):
        raise AnsibleConnectionFailure("ssh: connection reset")

    action._remove_tmp_path = dropped
    result = action.run(task_vars={})
    assert result["restored"] == 1 and not result.get("failed")
    assert "connection reset" in result["warnings"][0] and REMOTE_TMP in result["warnings"][0]
