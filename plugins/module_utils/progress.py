# -*- coding: utf-8 -*-
# Copyright: netbsd.pf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""How long the work took, and how it is going while it runs.

Operations that handle many states take an optional ``progress`` callable,
``progress(phase, done, total)``: ``phase`` a word ("reading", "writing",
"adding"), ``done`` the states handled so far in that phase, ``total`` the
states the phase will handle (None when unknown).  Modules pass none; the
``pfstate`` command passes a ProgressBar when stderr is a terminal.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.netbsd.pf.plugins.module_utils.abi import RECORD_SIZE

# Slices handed to writers when progress is reported: small enough for a bar that moves, large enough to cost nothing.
PROGRESS_SLICE_RECORDS = 16384


def timing(started, states=None, now=None):
    """The ``duration`` (seconds) and, when ``states`` were handled, ``states_per_second`` of a module result."""
    duration = max(0.0, (time.monotonic() if now is None else now) - started)
    result = {"duration": round(duration, 3)}
    if states is not None:
        result["states_per_second"] = int(states / duration) if duration > 0 else None
    return result


def reported_blocks(blocks, progress, phase, total=None):
    """``blocks`` passed through unchanged, reporting the states seen so far after each one."""
    done = 0
    for block in blocks:
        yield block
        done += len(block) // RECORD_SIZE
        progress(phase, done, total)


def reported_slices(block, progress, phase):
    """One block as slices of PROGRESS_SLICE_RECORDS records, reporting after each."""
    total = len(block) // RECORD_SIZE
    view = memoryview(block)
    step = PROGRESS_SLICE_RECORDS * RECORD_SIZE
    slices = (view[start:start + step] for start in range(0, len(view), step))
    return reported_blocks(slices, progress, phase, total)


class ProgressBar:
    """A one-line bar on a terminal: phase, percentage, states, states/s and ETA.

    Nothing is drawn for work that ends within ``delay`` seconds, nor more often
    than every ``interval`` seconds; ``close()`` ends the line if one was drawn.
    """

    WIDTH = 24

    def __init__(self, stream, delay=1.0, interval=0.2, clock=time.monotonic):
        self.stream = stream
        self.delay = delay
        self.interval = interval
        self.clock = clock
        self._started = clock()
        self._phase = None
        self._phase_started = None
        self._reported_at = self._started
        self._drawn_at = None
        self._line_length = 0

    def __call__(self, phase, done, total=None):
        now = self.clock()
        if phase != self._phase:
            # The phase began when the previous one last reported (or when the bar was made), not at its own first report.
            self._phase, self._phase_started = phase, self._reported_at
        self._reported_at = now
        if now - self._started < self.delay:
            return
        finished = total is not None and done >= total
        if self._drawn_at is not None and now - self._drawn_at < self.interval and not finished:
            return
        self._drawn_at = now
        self._draw(self.line(phase, done, total, now - self._phase_started))

    def line(self, phase, done, total, elapsed):
        rate = done / elapsed if elapsed > 0 else None
        parts = [phase]
        if total:
            filled = min(self.WIDTH, self.WIDTH * done // total)
            parts.append("[%s%s] %3d%%" % ("#" * filled, "-" * (self.WIDTH - filled), 100 * done // total))
            parts.append("%d/%d states" % (done, total))
        else:
            parts.append("%d states" % done)
        if rate:
            parts.append("%d states/s" % rate)
            if total:
                parts.append("ETA %s" % _clock_text((total - done) / rate))
        return " ".join(parts)

    def _draw(self, text):
        padding = " " * max(0, self._line_length - len(text))
        self.stream.write("\r" + text + padding)
        self.stream.flush()
        self._line_length = len(text)

    def close(self):
        if self._line_length:
            self.stream.write("\n")
            self.stream.flush()
            self._line_length = 0


def _clock_text(seconds):
    seconds = int(seconds + 0.5)
    if seconds >= 3600:
        return "%d:%02d:%02d" % (seconds // 3600, seconds // 60 % 60, seconds % 60)
    return "%d:%02d" % (seconds // 60, seconds % 60)
