"""The files of fixtures/golden/, printed or read by NetBSD's own pfs(8), byte-exact.

ansible-test's line-endings sanity test refuses CR bytes anywhere in the tree, yet
layout-free.txt exists to show that the reader takes CRLF line ends.  Such a file is
stored as NAME.escaped with every CR byte written as the two characters \\r (the
samples hold no other backslash); read_golden(NAME) gives back the bytes pfs read.
"""

import os

GOLDEN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "golden")
ESCAPED = ".escaped"


def golden_names(suffix):
    """Sorted names of the golden files ending in ``suffix`` (".txt", ".bin"), escaped ones included."""
    names = (name[:-len(ESCAPED)] if name.endswith(ESCAPED) else name for name in os.listdir(GOLDEN_DIR))
    return sorted(name for name in names if name.endswith(suffix))


def read_golden(name):
    """The exact bytes of the golden file ``name``."""
    path = os.path.join(GOLDEN_DIR, name)
    if os.path.exists(path):
        with open(path, "rb") as handle:
            return handle.read()
    with open(path + ESCAPED, "rb") as handle:
        return handle.read().replace(b"\\r", b"\r")


def golden_copy(directory, name):
    """Path of a byte-exact copy of ``name`` written into ``directory``, for code that opens files."""
    path = os.path.join(str(directory), name)
    with open(path, "wb") as handle:
        handle.write(read_golden(name))
    return path
