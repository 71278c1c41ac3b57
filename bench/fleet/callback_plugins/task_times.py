# -*- coding: utf-8 -*-
# Copyright: netbsd.pf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Bench-only callback: where the playbook's time goes, task by task.

For every task: how many host results it produced (ok, changed, skipped, failed) and the
wall time from its start to the start of the next task (linear strategy: the whole fleet's
share of it). Written as JSON to $BENCH_TASK_TIMES when set; a summary is printed at the end.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
    name: task_times
    type: aggregate
    short_description: wall time and result counts per task (netbsd.pf fleet bench)
    description: Prints and saves the wall time of every task and how many hosts ran or skipped it.
    requirements: []
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "task_times"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super(CallbackModule, self).__init__()
        self._tasks = []
        self._started = time.monotonic()

    def _close_current(self):
        if self._tasks and self._tasks[-1]["seconds"] is None:
            self._tasks[-1]["seconds"] = time.monotonic() - self._tasks[-1]["start"]

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._close_current()
        self._tasks.append({"task": task.get_name(), "start": time.monotonic(), "seconds": None,
                            "ran": 0, "skipped": 0, "failed": 0})

    v2_playbook_on_handler_task_start = v2_playbook_on_task_start

    def _count(self, key):
        if self._tasks:
            self._tasks[-1][key] += 1

    def v2_runner_on_ok(self, result):
        self._count("ran")

    def v2_runner_on_skipped(self, result):
        self._count("skipped")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._count("failed")

    def v2_runner_on_unreachable(self, result):
        self._count("failed")

    def v2_playbook_on_stats(self, stats):
        self._close_current()
        total = time.monotonic() - self._started
        rows = [{k: v for k, v in row.items() if k != "start"} for row in self._tasks]
        for row in rows:
            self._display.display("%7.2f s  ran %3d  skipped %3d  %s" % (row["seconds"], row["ran"], row["skipped"], row["task"]))
        self._display.display("%7.2f s  total" % total)
        path = os.environ.get("BENCH_TASK_TIMES")
        if path:
            with open(path, "w") as handle:
                json.dump({"total_seconds": total, "tasks": rows}, handle, indent=1)
