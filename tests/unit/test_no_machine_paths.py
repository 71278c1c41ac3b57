"""The repository names no absolute path of the machine it was written on.

Everything must work from any checkout with nothing set: an entry point that falls back to one
machine's folder (as seven once did with a collections path) works only there.  The forbidden
strings are this checkout's own absolute path, the ``collections`` folder beside it, and the paths
of the machine the project grew up on.
"""

import os

import pytest

COLLECTION_ROOT = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", ".."))
# Not the project's files: the copy ansible-test works on, virtualenvs, test and bench output.
SKIPPED_DIRS = {".git", "build", "collections", "__pycache__", ".pytest_cache", ".hypothesis", "output", "results"}
# Built from parts so that this file does not name them itself.
KNOWN_MACHINE_PATHS = (os.sep + os.path.join("work", "main") + os.sep, os.sep + os.path.join("work", "collections"))


def _checkouts():
    """The collection root, and the checkout it was copied from when it is the Makefile's copy."""
    roots = [COLLECTION_ROOT]
    parts = COLLECTION_ROOT.split(os.sep)
    if parts[-4:] == ["build", "ansible_collections", "netbsd", "pf"]:
        roots.append(os.sep.join(parts[:-4]))
    return roots


def _forbidden():
    strings = set(KNOWN_MACHINE_PATHS)
    for root in _checkouts():
        strings.add(root + "/")
        strings.add(os.path.join(os.path.dirname(root), "collections"))
    return sorted(strings)


def _project_files():
    for directory, subdirs, files in os.walk(COLLECTION_ROOT):
        subdirs[:] = [name for name in subdirs if name not in SKIPPED_DIRS and not name.startswith(".venv")
                      and not (directory == os.path.join(COLLECTION_ROOT, "tools") and name == "bin")]
        for name in files:
            if not name.endswith((".pyc", ".tar.gz")):
                yield os.path.join(directory, name)


def test_checkout_paths_are_detected():
    assert COLLECTION_ROOT + "/" in _forbidden()


@pytest.mark.parametrize("forbidden", _forbidden())
def test_no_file_names_a_machine_path(forbidden):
    offenders = []
    for path in _project_files():
        with open(path, "rb") as handle:
            if forbidden.encode() in handle.read():
                offenders.append(os.path.relpath(path, COLLECTION_ROOT))
    assert not offenders, "%s names %s: compute the path from the checkout instead" % (", ".join(offenders), forbidden)
