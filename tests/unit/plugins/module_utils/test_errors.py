"""errors: one root under every error of module_utils, its partial result and its fail_json arguments."""

import errno
import importlib
import inspect
import pkgutil

from ansible_collections.netbsd.pf.plugins import module_utils
from ansible_collections.netbsd.pf.plugins.module_utils.errors import PfStateError
from ansible_collections.netbsd.pf.plugins.module_utils.operations import DUMP_ERRORS, OperationError
from ansible_collections.netbsd.pf.plugins.module_utils.pfdev import PfError
from ansible_collections.netbsd.pf.plugins.module_utils.restore import RestoreError

# Not errors: they unwind a lock or the command on a signal, and no `except Exception` may swallow them.
UNWINDING = {"LockInterrupted", "_Terminated"}
# The errors that were ValueErrors before the root existed; code that catches ValueError still catches them.
VALUE_ERRORS = {"RecordError", "TextFormatError", "NativeFormatError", "BinaryFormatError", "DumpFormatError",
                "TransformError", "TransformOptionError", "OptionError", "SelectionError", "NpfSnapshotError",
                "NvlistError", "NvlistDescriptorError"}


def defined_classes():
    """(module name, class) of every class defined in plugins/module_utils."""
    for info in pkgutil.iter_modules(module_utils.__path__):
        module = importlib.import_module("%s.%s" % (module_utils.__name__, info.name))
        for _name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__:
                yield info.name, cls


def test_every_exception_class_derives_from_the_root():
    exceptions = [(module, cls) for module, cls in defined_classes() if issubclass(cls, BaseException)]
    assert len(exceptions) >= 20, exceptions
    outside = ["%s.%s" % (module, cls.__name__) for module, cls in exceptions
               if not issubclass(cls, PfStateError) and cls.__name__ not in UNWINDING]
    assert outside == []
    unwinding = set(cls.__name__ for _module, cls in exceptions if not issubclass(cls, Exception))
    assert unwinding == UNWINDING


def test_the_former_value_errors_stay_value_errors():
    classes = dict((cls.__name__, cls) for _module, cls in defined_classes() if issubclass(cls, BaseException))
    assert VALUE_ERRORS <= set(classes)
    assert set(name for name, cls in classes.items() if issubclass(cls, ValueError)) == VALUE_ERRORS


def test_only_the_dump_errors_lack_their_file_name():
    lacking = set(cls for _module, cls in defined_classes()
                  if isinstance(cls, type) and issubclass(cls, PfStateError) and cls.message_lacks_file)
    assert lacking == set(DUMP_ERRORS)


def test_fail_arguments_carry_the_partial_result_and_the_message():
    error = OperationError("no room", result={"written": 3, "msg_hint": "x"})
    assert error.fail_arguments() == {"msg": "no room", "written": 3, "msg_hint": "x"}
    assert str(error) == "no room" and error.args == ("no room",)
    assert OperationError("plain").fail_arguments() == {"msg": "plain"}
    assert OperationError("plain").result is None


def test_the_file_goes_first_only_when_the_message_lacks_it():
    damaged = DUMP_ERRORS[0]("bad magic")
    assert damaged.message("/d.pfstate") == "/d.pfstate: bad magic"
    assert damaged.message() == "bad magic"
    assert OperationError("/d.pfstate: cannot write").message("/d.pfstate") == "/d.pfstate: cannot write"
    assert OperationError("refused").fail_arguments(hint="; why") == {"msg": "refused; why"}


def test_restore_error_report_is_the_root_result():
    counts = {"restored": 20, "total": 30}
    error = RestoreError("DIOCADDSTATES failed", counts)
    assert error.report is counts and error.result is counts
    assert error.fail_arguments() == {"msg": "DIOCADDSTATES failed", "restored": 20, "total": 30}
    assert RestoreError("refused").report is None


def test_pf_error_keeps_its_attributes_and_message():
    error = PfError(errno.EPERM, "DIOCKILLSTATES")
    assert isinstance(error, PfStateError)
    assert (error.errno, error.request, error.added, error.result) == (errno.EPERM, "DIOCKILLSTATES", None, None)
    assert str(error).startswith("DIOCKILLSTATES: ") and str(error).endswith("(EPERM)")


def test_do_fail_hands_everything_to_fail_json():
    calls = []

    class Module:
        def fail_json(self, **arguments):
            calls.append(arguments)

    RestoreError("stopped", {"restored": 2}).do_fail(Module(), path="/d.bin", hint="!")
    assert calls == [{"msg": "stopped!", "restored": 2}]
