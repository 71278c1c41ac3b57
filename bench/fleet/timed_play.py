# Copyright: netbsd.pf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run one ansible-playbook and measure the controller: wall time, CPU and memory.

    timed_play.py RESULT.json EXCLUDE -- COMMAND...

The command runs in a session of its own. Every 0.2 s the RSS of the processes of that session
is summed, leaving out the processes whose command line contains EXCLUDE (the fleet's hosts
directory: on a local-flavour fleet the modules run on this machine too, and they are the
targets' share, not the controller's). At the end: wall seconds, CPU seconds of the whole tree
(user + sys, targets included), the peak of that sum ("controller RSS, all processes", shared
pages counted once per process) and the peak RSS of the largest single process (getrusage).
"""

import json
import os
import resource
import subprocess
import sys
import time

PAGE = os.sysconf("SC_PAGE_SIZE")


def session_rss(session, exclude):
    """Summed RSS in bytes of the processes of ``session`` whose command line lacks ``exclude``."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % pid, "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
            if int(fields[3]) != session:    # field 6 of stat: the session id
                continue
            with open("/proc/%s/cmdline" % pid, "rb") as handle:
                if exclude in handle.read():
                    continue
        except (OSError, IndexError, ValueError):
            continue    # the process ended while being read
        total += int(fields[21]) * PAGE
    return total


def main():
    result_path, exclude = sys.argv[1], sys.argv[2].encode()
    command = sys.argv[sys.argv.index("--") + 1:]
    started = time.monotonic()
    child = subprocess.Popen(command, start_new_session=True)
    peak_sum = 0
    while child.poll() is None:
        peak_sum = max(peak_sum, session_rss(child.pid, exclude))
        time.sleep(0.2)
    wall = time.monotonic() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(result_path, "w") as handle:
        json.dump({"rc": child.returncode, "wall_seconds": wall, "cpu_seconds": usage.ru_utime + usage.ru_stime,
                   "controller_rss_sum_mib": peak_sum / 2.0 ** 20,
                   "largest_process_rss_mib": usage.ru_maxrss / 1024.0}, handle)
    return child.returncode


if __name__ == "__main__":
    sys.exit(main())
