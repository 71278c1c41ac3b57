"""Lock leases: the watchdog's decisions (injected clock) and the real detached process."""

import json
import os
import time

import pytest

from ansible_collections.netbsd.pf.plugins.module_utils import lease as lease_mod
from ansible_collections.netbsd.pf.plugins.module_utils.lease import (
    EXPIRED, HELD, RELEASED, UNLOCK_FAILED, LeaseError, Watchdog, arm_lease, lease_view, read_lease, release_lease,
)
from ansible_collections.netbsd.pf.plugins.module_utils.pfdev import PfError


class FakeTime:
    """Clock and sleep for Watchdog: sleeping advances the clock; hooks run at given times."""

    def __init__(self, start=1000.0):
        self.now = start
        self.sleeps = []
        self.hooks = []

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds
        for when, hook in list(self.hooks):
            if self.now >= when:
                self.hooks.remove((when, hook))
                hook()


def write_lease(path, **fields):
    lease = {"version": 1, "token": "t0", "state": HELD, "deadline": 1010.0}
    lease.update(fields)
    with open(path, "w") as handle:
        json.dump(lease, handle)


@pytest.fixture
def lease_file(tmp_path):
    return str(tmp_path / "lock.lease")


def make_watchdog(lease_file, fake, unlocks, deadline=1010.0, fail=0):
    def unlock():
        if len(unlocks) < fail:
            unlocks.append("failed")
            raise PfError(5, "DIOCSETLCK")
        unlocks.append("unlocked")
    return Watchdog(lease_file, "t0", deadline, unlock, clock=fake.clock, sleep=fake.sleep, poll=2.0)


def test_unlocks_at_the_deadline_and_records_it(lease_file):
    write_lease(lease_file)
    fake, unlocks = FakeTime(), []
    assert make_watchdog(lease_file, fake, unlocks).run() == "unlocked"
    assert unlocks == ["unlocked"]
    assert fake.now == 1010.0 and max(fake.sleeps) <= 2.0
    lease = read_lease(lease_file)
    assert lease["state"] == EXPIRED and lease["unlocked_by"] == "watchdog"


def test_release_stops_it_without_unlocking(lease_file):
    write_lease(lease_file)
    fake, unlocks = FakeTime(), []
    fake.hooks.append((1004.0, lambda: release_lease(lease_file, "t0")))
    assert make_watchdog(lease_file, fake, unlocks).run() == "released"
    assert unlocks == [] and fake.now < 1010.0


def test_takeover_stops_it_without_unlocking(lease_file):
    write_lease(lease_file)
    fake, unlocks = FakeTime(), []
    fake.hooks.append((1002.0, lambda: write_lease(lease_file, token="t1", deadline=5000.0)))
    assert make_watchdog(lease_file, fake, unlocks).run() == "taken_over"
    assert unlocks == []
    assert read_lease(lease_file)["token"] == "t1"


@pytest.mark.parametrize("damage", ["missing", "garbage"])
def test_unreadable_lease_file_still_unlocks(lease_file, damage):
    if damage == "garbage":
        with open(lease_file, "w") as handle:
            handle.write('{"token": "t0", "sta')
    fake, unlocks = FakeTime(), []
    assert make_watchdog(lease_file, fake, unlocks).run() == "unlocked"
    assert unlocks == ["unlocked"]


def test_unlock_errors_are_retried_then_recorded(lease_file):
    write_lease(lease_file)
    fake, unlocks = FakeTime(), []
    assert make_watchdog(lease_file, fake, unlocks, fail=2).run() == "unlocked"
    assert unlocks == ["failed", "failed", "unlocked"]
    write_lease(lease_file)
    fake, unlocks = FakeTime(), []
    assert make_watchdog(lease_file, fake, unlocks, fail=99).run() == "unlock_failed"
    assert len(unlocks) == lease_mod.UNLOCK_ATTEMPTS
    lease = read_lease(lease_file)
    assert lease["state"] == UNLOCK_FAILED and "DIOCSETLCK" in lease["error"]


def test_arm_starts_a_detached_watchdog_that_exits_on_release(lease_file):
    token = arm_lease(lease_file, 600, "/nonexistent/pf", holder="test")
    lease = read_lease(lease_file)
    pid = lease["watchdog_pid"]
    assert lease["token"] == token and lease["state"] == HELD and lease["holder"] == "test"
    assert 599 < lease["deadline"] - time.time() <= 600
    assert os.stat(lease_file).st_mode & 0o777 == 0o600
    # Detached: not our child, in a session of its own.
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    assert os.getsid(pid) != os.getsid(0)
    assert os.getsid(pid) != pid, "not a session leader: it can never acquire a controlling terminal"
    assert lease_view(lease_file)["locked_by_lease"] is True
    assert release_lease(lease_file, token) is True
    assert release_lease(lease_file, token) is False
    assert read_lease(lease_file)["state"] == RELEASED
    assert lease_view(lease_file)["locked_by_lease"] is False
    deadline = time.time() + lease_mod.POLL_SECONDS + 3
    while time.time() < deadline and _alive(pid):
        time.sleep(0.2)
    assert not _alive(pid), "the watchdog should exit within one poll interval of the release"


def test_a_new_lease_takes_over(lease_file):
    first = arm_lease(lease_file, 600, "/nonexistent/pf")
    second = arm_lease(lease_file, 600, "/nonexistent/pf")
    assert first != second
    assert release_lease(lease_file, first) is False, "an old token must not release the new lease"
    assert release_lease(lease_file) is True


def test_lease_zero_has_no_watchdog(lease_file):
    arm_lease(lease_file, 0)
    view = lease_view(lease_file)
    assert view["deadline"] is None and view["watchdog_pid"] is None
    assert view["locked_by_lease"] is True and "no watchdog" in view["message"]
    release_lease(lease_file)


def test_views_of_odd_lease_files(lease_file, tmp_path):
    assert lease_view(lease_file)["state"] == "none"
    write_lease(lease_file, deadline=time.time() - 5, watchdog_pid=None)
    view = lease_view(lease_file)
    assert view["locked_by_lease"] is None and "may still be locked" in view["message"]
    with pytest.raises(LeaseError, match="lease must be 0"):
        arm_lease(lease_file, -1)
    with pytest.raises(LeaseError, match="choose a writable lease_file"):
        arm_lease(str(tmp_path / "no" / "such" / "dir" / "lease"), 10)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    # A zombie is not ours to reap; /proc tells whether it still runs.
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
