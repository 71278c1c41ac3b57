"""How every module and the pfstate command fail: one handler of the root error, the partial result in fail_json."""

import ast
import builtins
import errno
import glob
import importlib
import os

import pytest

from ansible_collections.netbsd.pf.plugins.module_utils import pfstate_cli
from ansible_collections.netbsd.pf.plugins.module_utils.errors import PfStateError
from ansible_collections.netbsd.pf.plugins.module_utils.operations import OperationError
from ansible_collections.netbsd.pf.plugins.module_utils.pfdev import PfError
from ansible_collections.netbsd.pf.plugins.modules import states_restore
from ansible_collections.netbsd.pf.tests.unit.plugins.module_utils.test_restore import make_state, table, write_states
from ansible_collections.netbsd.pf.tests.unit.plugins.modules.module_runner import run_module

MODULES_DIR = os.path.join(os.path.dirname(states_restore.__file__))
MODULE_NAMES = sorted(os.path.basename(path)[:-3] for path in glob.glob(os.path.join(MODULES_DIR, "states_*.py")))


def dotted(node):
    """The dotted name of a Name/Attribute node (ast.unparse is Python 3.9+, and units run on 3.8 too)."""
    if isinstance(node, ast.Attribute):
        return dotted(node.value) + "." + node.attr
    return node.id


def is_do_fail_of_module(statement):
    """Whether a statement is ``exc.do_fail(module, ...)``."""
    call = getattr(statement, "value", None)
    return (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "do_fail"
            and dotted(call.func.value) == "exc" and bool(call.args) and getattr(call.args[0], "id", "") == "module")


def handlers(module):
    """(enclosing function, caught names, handler node) of every except clause in ``module``'s source."""
    with open(module.__file__) as source:
        tree = ast.parse(source.read())
    found = []
    for function in ast.walk(tree):
        if isinstance(function, ast.FunctionDef):
            for node in ast.walk(function):
                if isinstance(node, ast.ExceptHandler):
                    caught = node.type.elts if isinstance(node.type, ast.Tuple) else [node.type]
                    found.append((function.name, [dotted(name) for name in caught], node))
    return found


def domain_errors(module, names):
    """The names of ``names`` that catch errors of the collection (resolved in ``module``)."""
    def classes(name):
        first, _dot, rest = name.partition(".")
        value = vars(module)[first] if first in vars(module) else getattr(builtins, first)
        for attribute in filter(None, rest.split(".")):
            value = getattr(value, attribute)
        return value if isinstance(value, tuple) else (value,)
    return [name for name in names if any(issubclass(cls, PfStateError) for cls in classes(name))]


def test_there_are_six_modules():
    assert MODULE_NAMES == ["states_convert", "states_dump", "states_flush", "states_info", "states_lock", "states_restore"]


@pytest.mark.parametrize("name", MODULE_NAMES)
def test_each_module_has_one_except_of_the_root_that_fails_with_it(name):
    module = importlib.import_module("ansible_collections.netbsd.pf.plugins.modules." + name)
    catching = [(function, names, node) for function, names, node in handlers(module) if domain_errors(module, names)]
    assert [(function, names) for function, names, _node in catching] == [("main", ["PfStateError"])]
    body = catching[0][2].body
    assert len(body) == 1 and is_do_fail_of_module(body[0]), ast.dump(body[0])


def test_pfstate_has_one_handler_of_the_root():
    catching = [(function, names) for function, names, _node in handlers(pfstate_cli) if domain_errors(pfstate_cli, names)]
    # _read_for_show turns a damaged file's error into one that names the file; main reports every error.
    assert catching == [("_read_for_show", ["DUMP_ERRORS"]), ("main", ["PfStateError"])]


def test_restore_failing_mid_way_returns_its_counts(pfemu_kernel, tmp_path, capsys):
    path = write_states(tmp_path / "d.bin", [make_state(n) for n in range(30)])
    pfemu_kernel.inject_fault("DIOCADDSTATES", 3, errno.EFAULT)
    result = run_module(states_restore.main, capsys, tmp_path, path=path, age="none", chunk_size=10)
    assert result["failed"] is True
    assert result["msg"].startswith("DIOCADDSTATES failed: ") and "20 states were restored before the failure" in result["msg"]
    assert (result["total"], result["restored"]) == (30, 20)
    assert len(table()) == 20


def _with_result(error, result):
    error.result = result
    return error


def _raising(error):
    def operation(*_args, **_kwargs):
        raise error
    return operation


# Module, the operation its main() calls, arguments, and the error that operation raises mid-way with what it
# had done (no operation of these five has a partial result today: this is the path one would take).
MID_WAY_FAILURES = [
    ("states_dump", "dump_states", {"path": "d.pfstate"}, _with_result(OperationError("run_after failed"), {"count": 7})),
    ("states_convert", "inspect_dump", {"src": "d.pfstate"}, _with_result(OperationError("d.pfstate: truncated"), {"read": 5})),
    ("states_info", "table_info", {}, _with_result(OperationError("lost the table"), {"stale_staged_files": []})),
    ("states_lock", "lock_table", {}, _with_result(OperationError("cannot lock the table safely"), {"previous": {}})),
    ("states_flush", "flush_states", {"all": True}, _with_result(PfError(errno.EPERM, "DIOCCLRSTATES"), {"removed": 1})),
]


@pytest.mark.parametrize("name, operation, arguments, error", MID_WAY_FAILURES, ids=[case[0] for case in MID_WAY_FAILURES])
def test_a_failure_carries_its_partial_result_into_fail_json(pfemu_kernel, tmp_path, capsys, monkeypatch,
                                                             name, operation, arguments, error):
    module = importlib.import_module("ansible_collections.netbsd.pf.plugins.modules." + name)
    monkeypatch.setattr(module, operation, _raising(error))
    result = run_module(module.main, capsys, tmp_path, **arguments)
    assert result["failed"] is True
    for key, value in error.result.items():
        assert result[key] == value
    assert result["msg"].startswith(str(error))
    if name == "states_flush":
        assert result["msg"].endswith("only after a reboot with a lower one")
