"""The reboot role's pfstate library: bundled on the controller (bundle_module_utils.py), unpacked and
byte-compiled on the target (install_library.py), imported from there by the launcher."""

import os
import subprocess
import sys
import zipfile

import pytest

from ansible_collections.netbsd.pf.plugins.module_utils import pfstate_cli

MODULE_UTILS = os.path.dirname(os.path.abspath(pfstate_cli.__file__))
ROLE_FILES = os.path.join(os.path.dirname(os.path.dirname(MODULE_UTILS)), "roles", "reboot", "files")
PACKAGE = "ansible_collections/netbsd/pf/plugins/module_utils/"


def bundle(source, tmp_path):
    """Run the bundler on ``source``; returns the zip, moved into tmp_path."""
    made = subprocess.check_output([sys.executable, os.path.join(ROLE_FILES, "bundle_module_utils.py"), source]).decode().strip()
    target = str(tmp_path / ("bundle-%d.zip" % len(os.listdir(str(tmp_path)))))
    os.rename(made, target)
    os.rmdir(os.path.dirname(made))
    return target


def install(zip_path, dest):
    return subprocess.run([sys.executable, os.path.join(ROLE_FILES, "install_library.py"), zip_path, dest],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, check=False)


def test_a_sub_package_of_module_utils_is_bundled(tmp_path):
    """A future sub-package must not silently break the command: its files and folder entry are in the zip."""
    source = tmp_path / "module_utils"
    (source / "sub" / "__pycache__").mkdir(parents=True)
    (source / "__init__.py").write_text("")
    (source / "top.py").write_text("from .sub.inner import VALUE\n")
    (source / "sub" / "inner.py").write_text("VALUE = 42\n")
    (source / "sub" / "__pycache__" / "inner.cpython-311.pyc").write_bytes(b"stale")
    with zipfile.ZipFile(bundle(str(source), tmp_path)) as archive:
        names = archive.namelist()
    assert PACKAGE + "sub/" in names and PACKAGE + "sub/inner.py" in names
    assert not [name for name in names if "__pycache__" in name]
    probe = "import sys; sys.path.insert(0, sys.argv[1]); from ansible_collections.netbsd.pf.plugins.module_utils import top; print(top.VALUE)"
    result = subprocess.run([sys.executable, "-I", "-c", probe, str(tmp_path / "bundle-1.zip")], cwd=str(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, check=False)
    assert result.stdout.strip() == "42", result.stderr


def test_installed_library_is_byte_compiled_and_the_command_imports_no_source(tmp_path):
    """Item 2 of issue 13: the command imports bytecode made at install time, it compiles nothing at start."""
    dest = str(tmp_path / "lib" / "library")
    os.mkdir(str(tmp_path / "lib"))
    result = install(bundle(MODULE_UTILS, tmp_path), dest)
    assert (result.returncode, result.stdout) == (0, "installed\n"), result.stderr
    assert os.path.islink(dest)
    cached = os.listdir(os.path.join(dest, PACKAGE, "__pycache__"))
    assert "pfstate_cli.%s.pyc" % sys.implementation.cache_tag in cached
    # Every module the command imports from the library has bytecode that is valid for its source
    # (a .pyc records the source's mtime and size; a stale or missing one means compiling at every start).
    probe = ("import os, struct, sys; sys.path.insert(0, sys.argv[1]);"
             "from ansible_collections.netbsd.pf.plugins.module_utils import pfstate_cli;"
             "mods = [m for m in list(sys.modules.values()) if (getattr(m, '__file__', None) or '').startswith(sys.argv[1])];"
             "fresh = lambda m: os.path.exists(m.__spec__.cached) and struct.unpack('<4xIII', open(m.__spec__.cached, 'rb').read(16))[1:]"
             " == (int(os.stat(m.__file__).st_mtime) & 0xFFFFFFFF, os.stat(m.__file__).st_size);"
             "print(len(mods), sum(1 for m in mods if not fresh(m)))")
    probed = subprocess.run([sys.executable, "-I", "-B", "-c", probe, dest], cwd=str(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, check=False)
    imported, without_bytecode = probed.stdout.split()
    assert int(imported) > 5 and without_bytecode == "0", probed.stderr[-2000:]


def test_the_same_bundle_again_changes_nothing_and_a_new_one_replaces_the_old(tmp_path):
    source = tmp_path / "module_utils"
    source.mkdir()
    (source / "one.py").write_text("A = 1\n")
    first = bundle(str(source), tmp_path)
    dest = str(tmp_path / "library")
    assert install(first, dest).stdout == "installed\n"
    old_version = os.readlink(dest)
    assert install(first, dest).stdout == "unchanged\n"
    (source / "one.py").write_text("A = 2\n")
    assert install(bundle(str(source), tmp_path), dest).stdout == "installed\n"
    assert os.readlink(dest) != old_version and not os.path.exists(str(tmp_path / old_version))
    with open(os.path.join(dest, PACKAGE, "one.py")) as handle:
        assert handle.read() == "A = 2\n"


@pytest.mark.parametrize("bad_name, why", [("../escape.py", "unsafe name"), (PACKAGE + "broken.py", "does not compile")])
def test_a_bad_bundle_is_refused_with_its_name_and_the_installed_library_is_kept(tmp_path, bad_name, why):
    source = tmp_path / "module_utils"
    source.mkdir()
    (source / "one.py").write_text("A = 1\n")
    dest = str(tmp_path / "library")
    assert install(bundle(str(source), tmp_path), dest).returncode == 0
    installed = os.readlink(dest)
    bad = str(tmp_path / "bad.zip")
    with zipfile.ZipFile(bad, "w") as archive:
        archive.writestr(bad_name, "def (:\n")
    result = install(bad, dest)
    assert result.returncode == 1 and result.stderr.startswith("install_library: %s: " % bad) and why in result.stderr
    assert "Traceback" not in result.stderr
    assert os.readlink(dest) == installed
    assert sorted(os.listdir(str(tmp_path))) == sorted(["bad.zip", "bundle-1.zip", "library", installed, "module_utils"])
