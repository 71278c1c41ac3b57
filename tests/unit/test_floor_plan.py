"""docs/architecture.md's floor plan of plugins/module_utils is the one the code has.

The imports are read from the code (tools/import_graph.py, every import statement, also those
inside functions); the floors are read from the plan's table.  A file imports only files on
lower floors, each file sits on the floor its imports give it, and every file is in the plan.
Names the architecture and reliability docs cite as ``Class.method`` or ``module.name`` exist.
"""

import ast
import importlib.util
import os
import re

import pytest

COLLECTION_ROOT = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODULE_UTILS = os.path.join(COLLECTION_ROOT, "plugins", "module_utils")
PLAN = os.path.join(COLLECTION_ROOT, "docs", "architecture.md")
# A row of the floor-plan table: | floor | `file.py`[, `other.py`...] | ...
PLAN_ROW = re.compile(r"^\|\s*(\d+)\s*\|([^|]*\.py`[^|]*)\|", re.MULTILINE)
FILE_NAME = re.compile(r"`(\w+\.py)`")
CITED = re.compile(r"`([A-Za-z_]\w*)\.(?!py`)([A-Za-z_]\w*)(?:\(\))?`")


def _tool():
    spec = importlib.util.spec_from_file_location("import_graph", os.path.join(COLLECTION_ROOT, "tools", "import_graph.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def graph():
    return _tool().import_graph(COLLECTION_ROOT)


@pytest.fixture(scope="module")
def documented():
    with open(PLAN, encoding="utf-8") as handle:
        rows = [(int(floor), name) for floor, cell in PLAN_ROW.findall(handle.read()) for name in FILE_NAME.findall(cell)]
    names = [name for floor, name in rows]
    assert len(names) == len(set(names)), "a file is in the floor plan twice"
    return dict((name, floor) for floor, name in rows)


def test_every_file_is_in_the_plan_and_nothing_else(graph, documented):
    assert sorted(documented) == sorted(graph)


def test_no_import_runs_up_or_sideways(graph, documented):
    wrong = ["%s (floor %d) imports %s (floor %d)" % (name, documented[name], dep, documented[dep])
             for name, deps in graph.items() for dep in deps if documented[dep] >= documented[name]]
    assert not wrong


def test_each_file_is_on_the_floor_its_imports_give_it(graph, documented):
    computed = _tool().floors(graph)
    assert dict((name, documented[name]) for name in graph) == computed


def test_a_cycle_is_named():
    with pytest.raises(ValueError, match="import cycle: a.py -> b.py -> a.py"):
        _tool().floors({"a.py": ["b.py"], "b.py": ["a.py"]})


def test_the_plan_covers_every_file(graph):
    """tools/import_graph.py reads the top-level files: a sub-package needs it extended before it can be planned."""
    subpackages = [name for name in os.listdir(MODULE_UTILS)
                   if os.path.isdir(os.path.join(MODULE_UTILS, name)) and name != "__pycache__"]
    assert not subpackages, "extend tools/import_graph.py to sub-packages first"
    assert graph


def _class_attributes(node):
    """Methods, nested classes, class variables and the ``self.x`` a class's methods assign."""
    for item in ast.walk(node):
        if isinstance(item, (ast.FunctionDef, ast.ClassDef)) and item is not node:
            yield item.name
        elif isinstance(item, ast.Name) and isinstance(item.ctx, ast.Store):
            yield item.id
        elif isinstance(item, ast.Attribute) and isinstance(item.ctx, ast.Store) and getattr(item.value, "id", "") == "self":
            yield item.attr


def _defined_names():
    """{module name: names it defines}, and {class name: its attributes}, over module_utils."""
    modules, classes = {}, {}
    for file_name in os.listdir(MODULE_UTILS):
        if not file_name.endswith(".py"):
            continue
        with open(os.path.join(MODULE_UTILS, file_name), encoding="utf-8") as handle:
            tree = ast.parse(handle.read())
        names = modules.setdefault(file_name[:-3], set())
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Assign):
                names.update(target.id for target in node.targets if isinstance(target, ast.Name))
            elif isinstance(node, ast.ImportFrom):
                names.update(alias.asname or alias.name for alias in node.names)
            if isinstance(node, ast.ClassDef):
                classes.setdefault(node.name, set()).update(_class_attributes(node))
    return modules, classes


@pytest.mark.parametrize("doc", ["architecture.md", "reliability.md"])
def test_cited_code_names_exist(doc):
    modules, classes = _defined_names()
    with open(os.path.join(COLLECTION_ROOT, "docs", doc), encoding="utf-8") as handle:
        cited = CITED.findall(handle.read())
    missing = ["%s.%s" % (owner, name) for owner, name in cited
               if (owner in modules and name not in modules[owner]) or (owner in classes and name not in classes[owner])]
    assert not missing, "%s cites names the code does not have" % doc
