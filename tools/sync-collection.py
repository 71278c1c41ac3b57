"""Mirror the collection's source files into build/ansible_collections/netbsd/pf/.

ansible-test only runs inside a directory named ansible_collections/NS/NAME/
and refuses a symlink to one, so the checkout is copied there.  The file set
is what git would commit: tracked files plus untracked files that are not
ignored (work in progress is tested too; .venv, build/, caches are not).
Files are copied only when size or mtime changed, and files that left the
source are removed from the copy, except ansible-test's own tests/output/
and the copy's .git/.

Usage: python tools/sync-collection.py DEST
"""

import os
import shutil
import subprocess
import sys

# Not mirrored from the source: ansible-test's output and the copy's own git
# repository (see ensure_git_repository).
KEPT_IN_COPY = ("tests/output", ".git")


def source_files(root):
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root, check=True, stdout=subprocess.PIPE,
    ).stdout.decode("utf-8")
    # Tracked files deleted in the work tree are still listed by git.
    return {path for path in listing.split("\0") if path and os.path.isfile(os.path.join(root, path))}


def is_current(source, dest):
    try:
        src_stat, dest_stat = os.stat(source), os.stat(dest)
    except FileNotFoundError:
        return False
    return (src_stat.st_size, int(src_stat.st_mtime), src_stat.st_mode) == (
        dest_stat.st_size, int(dest_stat.st_mtime), dest_stat.st_mode)


def walk_copy(dest):
    """Walk the copy deepest directories first, skipping those in KEPT_IN_COPY."""
    pruned = []
    for directory, subdirs, files in os.walk(dest):
        relative = os.path.relpath(directory, dest)
        subdirs[:] = [name for name in subdirs
                      if os.path.normpath(os.path.join(relative, name)) not in KEPT_IN_COPY]
        pruned.append((directory, relative, files))
    return reversed(pruned)


def remove_stale(dest, wanted):
    """Remove files that left the source, then the directories left empty."""
    removed = 0
    for directory, relative, files in walk_copy(dest):
        for name in files:
            if os.path.normpath(os.path.join(relative, name)) not in wanted:
                os.remove(os.path.join(directory, name))
                removed += 1
        if directory != dest and not os.listdir(directory):
            os.rmdir(directory)
    return removed


def ensure_git_repository(dest):
    # ansible-test takes its file list from the nearest enclosing git work
    # tree; without a repository of its own the copy would be seen as part of
    # the checkout, where build/ is ignored, and every test would be skipped.
    # An empty repository makes git list the copy's files as untracked ones.
    if not os.path.isfile(os.path.join(dest, ".git", "HEAD")):
        subprocess.run(["git", "init", "--quiet", dest], check=True)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__.strip().splitlines()[-1])
    root = os.getcwd()
    dest = os.path.abspath(sys.argv[1])
    wanted = source_files(root)
    copied = 0
    for path in sorted(wanted):
        target = os.path.join(dest, path)
        if not is_current(os.path.join(root, path), target):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            try:
                shutil.copy2(os.path.join(root, path), target)
            except FileNotFoundError:
                # Deleted since git listed it (an editor's temporary file).
                wanted.discard(path)
                continue
            copied += 1
    removed = remove_stale(dest, wanted)
    ensure_git_repository(dest)
    print("%s: %d files, %d copied, %d removed" % (os.path.relpath(dest, root), len(wanted), copied, removed))


if __name__ == "__main__":
    main()
