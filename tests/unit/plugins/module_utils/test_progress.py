"""Progress: the bar pfstate draws on a terminal, and the timing the modules report."""

import io
from functools import partial

import pytest

from ansible_collections.netbsd.pf.plugins.module_utils import pfstate_cli
from ansible_collections.netbsd.pf.plugins.module_utils.pfdev import PfDevice
from ansible_collections.netbsd.pf.plugins.module_utils.progress import ProgressBar, timing


class FakeClock:
    """A clock that moves ``step`` seconds every time it is read."""

    def __init__(self, step):
        self.now = 1000.0
        self.step = step

    def __call__(self):
        self.now += self.step
        return self.now


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_nothing_is_drawn_for_work_under_a_second():
    stream = io.StringIO()
    progress_bar = ProgressBar(stream, clock=FakeClock(0.1))
    for done in range(0, 5000, 1000):
        progress_bar("writing", done, 5000)
    progress_bar.close()
    assert stream.getvalue() == ""


def test_longer_work_shows_rate_and_eta_and_ends_its_line():
    stream = io.StringIO()
    clock = FakeClock(0.5)
    progress_bar = ProgressBar(stream, clock=clock)
    for done in (1000, 2000, 3000, 4000):
        progress_bar("adding", done, 8000)
    drawn = stream.getvalue()
    assert drawn.startswith("\radding [")
    last = drawn.split("\r")[-1]
    assert "50%" in last and "4000/8000 states" in last and "states/s" in last and "ETA 0:" in last
    progress_bar.close()
    assert stream.getvalue().endswith("\n") and stream.getvalue().count("\n") == 1


def test_unknown_total_shows_count_and_rate_without_eta():
    line = ProgressBar(io.StringIO()).line("reading", 3000, None, 2.0)
    assert line == "reading 3000 states 1500 states/s"


def test_timing_of_a_module_result():
    assert timing(10.0, 500, now=12.0) == {"duration": 2.0, "states_per_second": 250}
    assert timing(10.0, 500, now=10.0) == {"duration": 0.0, "states_per_second": None}
    assert timing(10.0, now=10.25) == {"duration": 0.25}


def _fresh_start(kernel, tmp_path, command):
    """A table to restore into, or no output file (an unchanged dump is not rewritten, so nothing would be written)."""
    for name in ("again.pfstate", "t.bin"):
        if (tmp_path / name).exists():
            (tmp_path / name).unlink()
    if command == "restore":
        with PfDevice(writable=True) as device:
            device.clear_states()
        kernel.purge()


@pytest.fixture
def slow_bar(monkeypatch):
    """pfstate's bar on a clock that makes every step look slow, so that it draws."""
    monkeypatch.setattr(pfstate_cli, "ProgressBar", partial(ProgressBar, clock=FakeClock(1.0), interval=0))


@pytest.mark.parametrize("command", ["dump", "restore", "convert"])
def test_pfstate_draws_the_bar_on_a_terminal_only(pfemu_kernel, tmp_path, capsys, monkeypatch, slow_bar, command):
    pfemu_kernel.fill(9000, seed=5)
    lease = str(tmp_path / "lease")
    dump = str(tmp_path / "t.pfstate")
    assert pfstate_cli.main(["dump", "--lease-file", lease, dump]) == 0
    argv = {"dump": ["dump", "--lease-file", lease, str(tmp_path / "again.pfstate")],
            "restore": ["restore", "--lease-file", lease, "--age", "none", dump],
            "convert": ["convert", "-F", "pfs_binary", dump, str(tmp_path / "t.bin")]}[command]
    capsys.readouterr()
    fresh_start = partial(_fresh_start, pfemu_kernel, tmp_path, command)
    fresh_start()
    assert pfstate_cli.main(argv) in (0, 3)
    assert "states/s" not in capsys.readouterr().err, "stderr is not a terminal: no bar"

    terminal = Terminal()
    monkeypatch.setattr(pfstate_cli.sys, "stderr", terminal)
    fresh_start()
    assert pfstate_cli.main(argv) in (0, 3)
    drawn = terminal.getvalue()
    assert "states/s" in drawn and "ETA" in drawn and drawn.endswith("\n")
    assert ("adding" in drawn) == (command == "restore") and ("writing" in drawn) == (command != "restore")
    assert "\r" not in capsys.readouterr().out, "the bar stays on stderr"

    terminal.seek(0)
    terminal.truncate()
    fresh_start()
    assert pfstate_cli.main(["-q"] + argv) in (0, 3)
    assert "states/s" not in terminal.getvalue(), "--quiet draws no bar"
