"""The emulated reboot of one host: /var/run is emptied like NetBSD's rc.d/cleanvar before rc.d runs."""

import os
import stat

from ansible_collections.netbsd.pf.tests.pfemu.daemon import BOOTTIME_NAME, SOCKET_NAME, EmulatedHost
from ansible_collections.netbsd.pf.tests.pfemu.kernel import Kernel, ManualClock

RC_SCRIPT = """#!/bin/sh
# Records what an rc.d script finds in /var/run at boot.
ls -A %(var_run)s %(var_run)s/sub > %(seen)s
"""


def _host(tmp_path):
    host = EmulatedHost(str(tmp_path), Kernel(clock=ManualClock()))
    for directory in (host.run_dir, os.path.join(host.var_run_dir, "sub"), host.rc_dir):
        os.makedirs(directory)
    return host


def test_reboot_empties_var_run_before_the_rc_scripts_and_keeps_the_daemon_files(tmp_path):
    host = _host(tmp_path)
    lease = os.path.join(host.var_run_dir, "netbsd_pf_lock.lease")
    for path in (lease, os.path.join(host.var_run_dir, "sub", "nested.pid")):
        with open(path, "w", encoding="utf-8") as leftover:
            leftover.write("before the reboot\n")
    os.symlink(os.path.join(host.var_run_dir, "sub"), os.path.join(host.var_run_dir, "link-to-sub"))
    daemon_socket = os.path.join(host.run_dir, SOCKET_NAME)
    with open(daemon_socket, "w", encoding="utf-8"):
        pass
    seen = str(tmp_path / "seen-by-rc")
    script = os.path.join(host.rc_dir, "pfstate")
    with open(script, "w", encoding="utf-8") as rc_file:
        rc_file.write(RC_SCRIPT % {"var_run": host.var_run_dir, "seen": seen})
    os.chmod(script, stat.S_IRWXU)
    host.rebooting = True

    host._reboot(0, 0)  # pylint: disable=protected-access

    with open(seen, encoding="utf-8") as listing:
        assert listing.read().split() == ["%s:" % host.var_run_dir, "sub", "%s/sub:" % host.var_run_dir]
    assert os.path.isdir(os.path.join(host.var_run_dir, "sub"))
    assert os.path.exists(daemon_socket)
    assert os.path.exists(os.path.join(host.run_dir, BOOTTIME_NAME))
    assert not host.rebooting


def test_a_host_without_var_run_still_boots(tmp_path):
    host = EmulatedHost(str(tmp_path), Kernel(clock=ManualClock()))
    os.makedirs(host.run_dir)
    host.rebooting = True

    host._reboot(0, 0)  # pylint: disable=protected-access

    assert not host.rebooting
