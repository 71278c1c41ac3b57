"""The import graph of plugins/module_utils, read from the code: files, floors, edges.

A file's floor is 0 when it imports no other file of module_utils, else one more than the
highest floor it imports.  docs/architecture.md documents a floor per file and
tests/unit/test_floor_plan.py checks the two agree.  Run from anywhere:

    python3 tools/import_graph.py [CHECKOUT]       # a table, then every edge
"""

import ast
import os
import sys

PACKAGE = "ansible_collections.netbsd.pf.plugins.module_utils"
MODULE_UTILS = os.path.join("plugins", "module_utils")


def _imported_names(tree):
    """Every module_utils module an AST imports, at top level or inside functions."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == PACKAGE:
                # from ...module_utils import restore as restore_mod
                for alias in node.names:
                    yield alias.name
            elif node.module.startswith(PACKAGE + "."):
                yield node.module[len(PACKAGE) + 1:].split(".")[0]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(PACKAGE + "."):
                    yield alias.name[len(PACKAGE) + 1:].split(".")[0]


def import_graph(checkout):
    """{file name: sorted file names it imports} for every module_utils/*.py but __init__.py."""
    directory = os.path.join(checkout, MODULE_UTILS)
    files = sorted(name for name in os.listdir(directory) if name.endswith(".py") and name != "__init__.py")
    graph = {}
    for name in files:
        with open(os.path.join(directory, name), encoding="utf-8") as handle:
            tree = ast.parse(handle.read(), name)
        imported = set(module + ".py" for module in _imported_names(tree))
        graph[name] = sorted(imported & set(files) - {name})
    return graph


def floors(graph):
    """{file: floor}; raises ValueError naming a cycle if there is one."""
    floor = {}

    def visit(name, path):
        if name in path:
            raise ValueError("import cycle: " + " -> ".join(path[path.index(name):] + [name]))
        if name not in floor:
            floor[name] = 1 + max((visit(dep, path + [name]) for dep in graph[name]), default=-1)
        return floor[name]

    for name in graph:
        visit(name, [])
    return floor


def line_count(checkout, name):
    with open(os.path.join(checkout, MODULE_UTILS, name), encoding="utf-8") as handle:
        return len(handle.readlines())


def main(argv):
    checkout = argv[1] if len(argv) > 1 else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    graph = import_graph(checkout)
    floor = floors(graph)
    edges = sum(len(deps) for deps in graph.values())
    print("%d files, %d floors, %d edges" % (len(graph), max(floor.values()) + 1, edges))
    for level in range(max(floor.values()) + 1):
        names = sorted(name for name in graph if floor[name] == level)
        print("floor %d: %s" % (level, ", ".join("%s (%d)" % (name, line_count(checkout, name)) for name in names)))
    for name in sorted(graph, key=lambda n: (floor[n], n)):
        if graph[name]:
            print("%s -> %s" % (name, ", ".join(graph[name])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
