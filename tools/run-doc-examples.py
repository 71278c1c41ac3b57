"""Run the YAML examples of README.md and docs/*.md (the `examples` tier).

Every ```yaml fence must follow a marker line (an HTML comment, invisible in
the rendered docs) saying what kind of example it is:

  <!-- example: fleet -->               a playbook, run against an emulated fleet
  <!-- example: fleet --check -->       the same, first with --check --diff (a rehearsal
                                        that must pass too), then for real
  <!-- example: fleet-tasks -->         a task list, wrapped into a play on
                                        `firewalls` and run against the fleet
  <!-- example: syntax (REASON) -->     a playbook that needs a real NetBSD:
                                        --syntax-check and ansible-lint only
  <!-- example: tasks (REASON) -->      a task list, wrapped into a play:
                                        --syntax-check and ansible-lint only
  <!-- example: inventory -->           an inventory file or group_vars of the
                                        `firewalls` group, loaded by ansible-inventory
  <!-- example: file (REASON) -->       another YAML file (not Ansible): parsed only

Every playbook (run or not) also goes through --syntax-check and ansible-lint.
A fresh fleet (hosts fw1, fw2; `python -m tests.pfemu fleet up`) serves the
examples of each Markdown file in their order, so a file's later examples see
what its earlier ones left (captures, dumps). The inventory maps the names the
docs use onto it: group `firewalls` = fw1, fw2; fw-old and fw-a are fw1,
fw-new and fw-b are fw2. Paths that would write outside the fleet are play or
role variables in the docs, overridden here (extra_vars()); lock-taking modules
get the fleet host's lease file through module_defaults added to each play.
An example that still creates one of the real firewall's paths (REAL_PATHS)
on this machine fails.

Prints one line per example (file:line, kind, result, seconds) and
"N passed, N failed"; exits 1 when any example failed.

Usage: python tools/run-doc-examples.py [--flavour local|ssh] [--work DIR] [MARKDOWN...]
Needs ANSIBLE_COLLECTIONS_PATH (or build/ from `make copy`) holding netbsd.pf.
"""

import argparse
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent

MARKER = re.compile(r"^\s*<!--\s*example:\s*(?P<kind>[a-z-]+)\s*(?P<check>--check\s*)?"
                    r"(?:\((?P<reason>[^)]*)\))?\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
KINDS = {"fleet", "fleet-tasks", "syntax", "tasks", "inventory", "file"}
KINDS_NEEDING_REASON = {"syntax", "file"}
RUN_KINDS = {"fleet", "fleet-tasks"}
TASK_KINDS = {"fleet-tasks", "tasks"}

# Names the docs use for hosts, and the fleet host each one stands for.
HOST_ALIASES = {"fw-old": "fw1", "fw-a": "fw1", "fw-new": "fw2", "fw-b": "fw2"}
FLEET_SIZE = 2
FLEET_STATES = 40
# A hung example fails the tier instead of hanging it (the slowest, a fleet reboot, takes about a minute).
COMMAND_TIMEOUT = 300

# Modules whose lock lease file defaults to /var/run/netbsd_pf_lock.lease; a
# play cannot take module_defaults from the inventory, so the runner adds them.
LEASE_MODULES = ("states_dump", "states_info", "states_lock", "states_restore")
# On a delegated task the lease file must be the delegate's, not the play host's.
LEASE_FILE = ("{{ hostvars[ansible_delegated_vars.keys() | first].netbsd_pf_lease_file"
              " if ansible_delegated_vars is defined and ansible_delegated_vars"
              " else netbsd_pf_lease_file }}")


# What the examples would write on a real firewall or controller; none may appear here.
REAL_PATHS = ("/var/run/netbsd_pf_lock.lease", "/var/db/pf", "/var/db/pfstate", "/srv/pf-captures")


def extra_vars(work):
    """Variables of the examples that name paths or commands of a real firewall."""
    return {
        # /srv/pf-captures on the controller (README.md, docs/roles.md)
        "capture_dir": str(work / "srv-pf-captures"),
        "restore_capture_dir": str(work / "srv-pf-captures"),
        # dump folders and files on the firewall (docs/guide-*.md)
        "dump_dir": "{{ netbsd_pf_state_dir }}",
        "dump_on_target": "{{ netbsd_pf_state_dir }}/migration.pfstate",
        # the traffic switch of the migration guide (ifconfig carp0 ...)
        "traffic_switch_command": "true",
        # an emulated reboot takes well under a second: poll for it every second, not every 5
        "reboot_poll_interval": 1,
        # the fleet runs as the user that started it, without sudo
        "ansible_become": False,
    }


@dataclasses.dataclass
class Example:
    path: Path
    line: int          # line of the opening fence, 1-based
    kind: str
    reason: str
    text: str
    check_first: bool = False

    @property
    def where(self):
        return f"{shown(self.path)}:{self.line}"

    @property
    def stem(self):
        return f"{self.path.stem}-L{self.line}"


def shown(path):
    """A path as the checkout sees it."""
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


class MarkerError(Exception):
    pass


def extract(path):
    """The YAML fences of a Markdown file with their markers; MarkerError lists the unmarked."""
    lines = path.read_text(encoding="utf-8").splitlines()
    examples, errors = [], []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        indent, fence, info = opening["indent"], opening["fence"], opening["info"].strip()
        body, end = [], index + 1
        while end < len(lines):
            closing = FENCE.match(lines[end])
            if closing and closing["fence"].startswith(fence[0] * len(fence)) and not closing["info"].strip():
                break
            body.append(lines[end][len(indent):] if lines[end].startswith(indent) else lines[end].lstrip())
            end += 1
        language = info.split()[0].lower() if info else ""
        if language in ("yaml", "yml"):
            before = index - 1
            while before >= 0 and not lines[before].strip():
                before -= 1
            marker = MARKER.match(lines[before]) if before >= 0 else None
            where = f"{shown(path)}:{index + 1}"
            if not marker:
                errors.append(f"{where}: yaml fence without an '<!-- example: KIND -->' line before it")
            elif marker["kind"] not in KINDS:
                errors.append(f"{where}: unknown example kind {marker['kind']!r} (one of {', '.join(sorted(KINDS))})")
            elif marker["check"] and marker["kind"] not in RUN_KINDS:
                errors.append(f"{where}: --check only goes with a kind that runs ({', '.join(sorted(RUN_KINDS))})")
            elif marker["kind"] in KINDS_NEEDING_REASON and not (marker["reason"] or "").strip():
                errors.append(f"{where}: kind {marker['kind']!r} needs a reason: <!-- example: {marker['kind']} (why) -->")
            else:
                examples.append(Example(path, index + 1, marker["kind"], (marker["reason"] or "").strip(),
                                        textwrap.dedent("\n".join(body) + "\n"), bool(marker["check"])))
        index = end + 1
    if errors:
        raise MarkerError("\n".join(errors))
    return examples


def linted_text(example):
    """The example as a playbook file, as written in the docs (task lists indented under a play)."""
    text = example.text
    if example.kind in TASK_KINDS:
        header = f"- name: Example {example.where}\n  hosts: firewalls\n  gather_facts: false\n  tasks:\n"
        text = header + "".join(f"    {line}" if line.strip() else line for line in text.splitlines(True))
    return text if text.startswith("---") else "---\n" + text


def run_text(example):
    """The playbook that runs: lock-taking modules get the fleet host's lease file."""
    plays = yaml.safe_load(linted_text(example))
    if not isinstance(plays, list) or not plays:
        raise ValueError("not a YAML list of plays or tasks")
    for play in plays:
        defaults = play.setdefault("module_defaults", {})
        for module in LEASE_MODULES:
            defaults.setdefault(f"netbsd.pf.{module}", {}).setdefault("lease_file", LEASE_FILE)
    return yaml.safe_dump(plays, sort_keys=False, width=120)


class Runner:
    def __init__(self, work, flavour, collections):
        self.work = work
        self.flavour = flavour
        self.playbooks = work / "playbooks"
        self.fleet_dir = work / "fleet"
        # The Ansible commands of this Python's virtualenv, whatever PATH says.
        path = os.pathsep.join((str(Path(sys.executable).parent), os.environ.get("PATH", "")))
        self.env = dict(os.environ, PATH=path, ANSIBLE_COLLECTIONS_PATH=str(collections), ANSIBLE_NOCOLOR="1",
                        ANSIBLE_FORCE_COLOR="0", ANSIBLE_RETRY_FILES_ENABLED="0")
        self.logs = work / "logs"
        self.fleet_up = False
        self.lint_process = None
        self.lint_started = None
        self.findings = None

    def prepare(self):
        if self.work.exists():
            self.pfemu("fleet", "down", "--dir", str(self.fleet_dir), check=False)
            shutil.rmtree(self.work)
        for folder in (self.playbooks / "tasks", self.logs, self.work / "inventory"):
            folder.mkdir(parents=True)
        # What docs/guide-reboot.md and README.md point reboot_maintenance_tasks at.
        (self.playbooks / "tasks" / "upgrade.yml").write_text(
            "---\n- name: Stand-in for the maintenance of the examples (upgrade, configuration)\n"
            "  ansible.builtin.debug:\n    msg: maintenance of {{ inventory_hostname }}\n")
        (self.work / "extra-vars.json").write_text(json.dumps(extra_vars(self.work), indent=2))
        (self.work / ".ansible-lint").write_text("profile: production\noffline: true\n")
        self.write_inventory(None)

    def pfemu(self, *args, check=True):
        return subprocess.run([sys.executable, "-m", "tests.pfemu", *args], cwd=ROOT, env=self.env, check=check,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def start_fleet(self):
        """A fresh fleet (replacing the last one), and the inventory that maps the docs' names onto it."""
        self.pfemu("fleet", "up", str(FLEET_SIZE), "--flavour", self.flavour, "--states", str(FLEET_STATES),
                   "--seed", "1", "--dir", str(self.fleet_dir))
        self.fleet_up = True
        fleet = yaml.safe_load((self.fleet_dir / "inventory" / "hosts.yml").read_text())["all"]["children"]["pfemu"]
        self.write_inventory(fleet)

    def stop_fleet(self):
        if self.fleet_up:
            self.pfemu("fleet", "down", "--dir", str(self.fleet_dir), check=False)
            self.fleet_up = False

    def write_inventory(self, fleet):
        hosts = fleet["hosts"] if fleet else {f"fw{number}": {} for number in range(1, FLEET_SIZE + 1)}
        inventory = {"all": {
            "vars": dict(fleet.get("vars", {})) if fleet else {},
            "hosts": {alias: dict(hosts[host]) for alias, host in HOST_ALIASES.items()},
            "children": {"firewalls": {"hosts": hosts}},
        }}
        controller = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
        inventory["all"]["hosts"]["localhost"] = controller
        (self.work / "inventory" / "hosts.yml").write_text(yaml.safe_dump(inventory, sort_keys=False))

    def ansible(self, example, *command):
        log = self.logs / f"{example.stem}.log"
        with log.open("a") as output:
            output.write(f"$ {' '.join(command)}\n")
            output.flush()
            try:
                result = subprocess.run(command, cwd=self.playbooks, env=self.env, stdout=output,
                                        stderr=subprocess.STDOUT, text=True, check=False, timeout=COMMAND_TIMEOUT)
            except subprocess.TimeoutExpired:
                output.write(f"\n(killed after {COMMAND_TIMEOUT} s)\n")
                return False
        return result.returncode == 0

    def start_lint(self, examples):
        """Write every playbook as the docs show it and start one ansible-lint run over them all.

        It runs while the fleet runs the examples (half a minute saved); lint_findings() waits for it.
        """
        names = []
        for example in examples:
            if example.kind not in ("inventory", "file"):
                playbook = self.playbooks / f"{example.stem}.yml"
                playbook.write_text(linted_text(example))
                names.append(playbook.name)
        self.lint_started = time.monotonic()
        self.lint_process = subprocess.Popen(
            ["ansible-lint", "--nocolor", "-f", "pep8", "-c", str(self.work / ".ansible-lint"),
             "--project-dir", str(self.work), *names], cwd=self.playbooks, env=self.env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def stop_lint(self):
        if self.lint_process and self.lint_process.poll() is None:
            self.lint_process.kill()
            self.lint_process.communicate()

    def lint_findings(self, playbook):
        """ansible-lint's findings for one playbook (production profile)."""
        if self.findings is None:
            stdout, stderr = self.lint_process.communicate()
            self.findings = {}
            for line in stdout.splitlines():
                self.findings.setdefault(line.partition(":")[0], []).append(line)
            if self.lint_process.returncode != 0 and not self.findings:
                sys.exit(f"ansible-lint failed without naming a playbook:\n{stderr}")
            print(f"(ansible-lint of every playbook example: {time.monotonic() - self.lint_started:.1f}s)",
                  flush=True)
        return self.findings.get(playbook, [])

    def check(self, example):
        """Run one example; returns an error message, or None when it passed."""
        if example.kind == "file":
            data = yaml.safe_load(example.text)
            return None if isinstance(data, dict) and data else "not a YAML mapping"
        if example.kind == "inventory":
            return self.check_inventory(example)
        playbook = self.playbooks / f"{example.stem}.yml"
        inventory = str(self.work / "inventory" / "hosts.yml")
        command = ["ansible-playbook", "-i", inventory, "-e", f"@{self.work / 'extra-vars.json'}"]
        if not self.ansible(example, *command, "--syntax-check", playbook.name):
            return "ansible-playbook --syntax-check failed"
        if example.kind in RUN_KINDS:
            run_playbook = self.playbooks / f"{example.stem}.run.yml"
            run_playbook.write_text(run_text(example))
            if example.check_first and not self.ansible(example, *command, "--check", "--diff", run_playbook.name):
                return "ansible-playbook --check --diff failed"
            present_before = {path for path in REAL_PATHS if os.path.lexists(path)}
            succeeded = self.ansible(example, *command, run_playbook.name)
            created = [path for path in REAL_PATHS if os.path.lexists(path) and path not in present_before]
            if created:
                return f"wrote outside the fleet: {', '.join(created)} (make the path a variable the runner overrides)"
            if not succeeded:
                return "ansible-playbook failed"
        findings = self.lint_findings(playbook.name)
        if findings:
            with (self.logs / f"{example.stem}.log").open("a") as log:
                log.write("ansible-lint (production profile):\n" + "\n".join(findings) + "\n")
            return "ansible-lint failed"
        return None

    def check_inventory(self, example):
        """An inventory file is loaded as it is; group_vars are those of `firewalls`."""
        data = yaml.safe_load(example.text)
        if not isinstance(data, dict) or not data:
            return "not a YAML mapping"
        folder = self.work / "inventories" / example.stem
        folder.mkdir(parents=True)
        is_inventory = all(isinstance(group, dict) and {"hosts", "children", "vars"} & group.keys()
                           for group in data.values())
        if is_inventory:
            (folder / "hosts.yml").write_text(example.text)
            expected = {}
        else:
            (folder / "hosts.yml").write_text("firewalls:\n  hosts:\n    fw1:\n")
            (folder / "group_vars").mkdir()
            (folder / "group_vars" / "firewalls.yml").write_text(example.text)
            expected = data
        listing = subprocess.run(["ansible-inventory", "-i", str(folder / "hosts.yml"), "--list"], env=self.env,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
        (self.logs / f"{example.stem}.log").write_text(listing.stdout)
        if listing.returncode != 0 or "[WARNING]" in listing.stdout:
            return "ansible-inventory did not load it cleanly"
        loaded = json.loads(listing.stdout[listing.stdout.index("{"):])
        if is_inventory and not loaded.get("firewalls", {}).get("hosts"):
            return "no host in group firewalls"
        host_vars = loaded.get("_meta", {}).get("hostvars", {}).get("fw1", {})
        missing = [name for name in expected if host_vars.get(name) != expected[name]]
        return f"variables not loaded for the group: {', '.join(missing)}" if missing else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("markdown", nargs="*", type=Path, help="default: README.md and docs/*.md")
    parser.add_argument("--flavour", choices=("local", "ssh"), default="local",
                        help="emulated fleet: local connection (default) or sshd in network namespaces (root)")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "doc-examples")
    arguments = parser.parse_args()

    collections = subprocess.run([str(ROOT / "tools" / "collections-path.sh")], stdout=subprocess.PIPE,
                                 text=True, check=True).stdout.strip()
    files = arguments.markdown or [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    examples_by_file, marker_errors = [], []   # one list of examples per Markdown file
    for path in files:
        try:
            examples_by_file.append(extract(path.resolve()))
        except MarkerError as error:
            marker_errors.append(str(error))
    if marker_errors:
        print("\n".join(marker_errors), file=sys.stderr)
        print("every ```yaml fence needs a marker (docs/testing.md, 'Examples in the docs')", file=sys.stderr)
        return 1

    # A CI cancel or `timeout` sends SIGTERM: leave through `finally`, which takes the fleet down.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    runner = Runner(arguments.work.resolve(), arguments.flavour, collections)
    runner.prepare()
    runner.start_lint([example for examples in examples_by_file for example in examples])
    passed = failed = 0
    try:
        for examples in examples_by_file:
            if any(example.kind in RUN_KINDS for example in examples):
                runner.start_fleet()
            for example in examples:
                started = time.monotonic()
                try:
                    error = runner.check(example)
                except (ValueError, yaml.YAMLError) as problem:
                    error = f"cannot read the example: {problem}"
                seconds = time.monotonic() - started
                label = example.kind + (" --check" if example.check_first else "") + (
                    f" ({example.reason})" if example.reason else "")
                print(f"{example.where:28} {label[:60]:60} {'ok' if error is None else 'FAILED':6} {seconds:5.1f}s",
                      flush=True)
                if error is None:
                    passed += 1
                else:
                    failed += 1
                    log = runner.logs / f"{example.stem}.log"
                    print(f"    {error}; log: {log}", flush=True)
                    if log.exists():
                        for line in log.read_text().splitlines()[-25:]:
                            print(f"    | {line}")
            runner.stop_fleet()
    finally:
        runner.stop_fleet()
        runner.stop_lint()
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
