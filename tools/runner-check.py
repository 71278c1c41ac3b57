"""Run a playbook through ansible-runner, the engine AWX and Automation Platform use, and check
what a job template would show: the job's status and rc, its artifacts and its event stream.

    python tools/runner-check.py COLLECTIONS_PATH PLAYBOOK WORK_DIR [--extra-var NAME=VALUE ...]

The playbook runs from its own directory as the job's project, on localhost with this Python;
WORK_DIR becomes the private data directory (env/, inventory/, artifacts/).  Exits 1 naming what
is missing when the job did not succeed or its events do not show every task of the play.
"""

import argparse
import json
import os
import shutil
import sys

import ansible_runner


def write_private_data(work_dir, collections_path, extra_vars):
    shutil.rmtree(work_dir, ignore_errors=True)
    os.makedirs(os.path.join(work_dir, "env"))
    os.makedirs(os.path.join(work_dir, "inventory"))
    with open(os.path.join(work_dir, "env", "envvars"), "w", encoding="utf-8") as handle:
        json.dump({"ANSIBLE_COLLECTIONS_PATH": collections_path, "ANSIBLE_NOCOLOR": "1"}, handle)
    with open(os.path.join(work_dir, "env", "extravars"), "w", encoding="utf-8") as handle:
        json.dump(extra_vars, handle)
    with open(os.path.join(work_dir, "inventory", "hosts"), "w", encoding="utf-8") as handle:
        handle.write("localhost ansible_connection=local ansible_python_interpreter=%s\n" % sys.executable)


def check(runner):
    problems = []
    if runner.status != "successful" or runner.rc != 0:
        problems.append("the job ended %s with rc %s" % (runner.status, runner.rc))
    events = list(runner.events)
    started = [event["event_data"]["task"] for event in events if event["event"] == "playbook_on_task_start"]
    finished = {event["event_data"]["task"] for event in events if event["event"] == "runner_on_ok"}
    unfinished = [task for task in started if task not in finished]
    if not started:
        problems.append("the event stream shows no task")
    if unfinished:
        problems.append("no runner_on_ok event for: %s" % ", ".join(unfinished))
    if not any(event["event"] == "playbook_on_stats" for event in events):
        problems.append("the event stream has no playbook_on_stats")
    artifacts = runner.config.artifact_dir
    for name in ("status", "rc", "stdout", "job_events"):
        if not os.path.exists(os.path.join(artifacts, name)):
            problems.append("artifact %s missing in %s" % (name, artifacts))
    return problems, len(events), len(started)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("collections_path")
    parser.add_argument("playbook")
    parser.add_argument("work_dir")
    parser.add_argument("--extra-var", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args()
    extra_vars = dict(item.split("=", 1) for item in args.extra_var)
    work_dir = os.path.abspath(args.work_dir)
    write_private_data(work_dir, os.path.abspath(args.collections_path), extra_vars)
    playbook = os.path.abspath(args.playbook)
    # The job runs the ansible-playbook installed beside this Python, as AWX runs the image's own.
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    runner = ansible_runner.run(private_data_dir=work_dir, project_dir=os.path.dirname(playbook),
                                playbook=os.path.basename(playbook), quiet=True)
    problems, events, tasks = check(runner)
    if problems:
        sys.exit("ansible-runner: %s (artifacts in %s)" % ("; ".join(problems), runner.config.artifact_dir))
    print("ansible-runner: job %s %s, rc %d, %d tasks ok, %d events; artifacts in %s" % (
        runner.config.ident, runner.status, runner.rc, tasks, events, runner.config.artifact_dir))


if __name__ == "__main__":
    main()
