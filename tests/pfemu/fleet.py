"""Fleets of emulated NetBSD firewalls: create, describe and tear down.

A fleet is a directory (default ``tests/output/pfemu-fleet``) holding one
directory per emulated host plus an Ansible inventory::

    <fleet>/fleet.json                   what was created (read by ``down``)
    <fleet>/inventory/hosts.yml          Ansible inventory, group ``pfemu``
    <fleet>/ssh/                         fleet key, known_hosts (ssh flavour)
    <fleet>/hosts/<name>/venv/           the host's Python, with the /dev/pf shim
    <fleet>/hosts/<name>/run/            daemon socket, pid files, boottime, logs
    <fleet>/hosts/<name>/var/db/pfstate/ dump directory
    <fleet>/hosts/<name>/var/run/        lock lease, restore lock; emptied at every emulated boot
    <fleet>/hosts/<name>/etc/rc.d/       rc scripts, run at every emulated boot
    <fleet>/hosts/<name>/bin/            reboot, shutdown (-r), sysctl (kern.boottime)
    <fleet>/hosts/<name>/tmp/            remote_tmp and async dir

Flavours: ``local`` (ansible_connection local, no root needed) and ``ssh``
(root: every host in its own network namespace with its own sshd, reached
through ``ip netns exec NS nc 127.0.0.1 22``; the last ``--paramiko-hosts``
hosts use the paramiko_ssh connection plugin).

Firewalls (``--firewall pf|npf|both``, or one per host: ``pf,npf,both``): a host
running NPF gets ``/dev/npf`` from an npfemu kernel in its daemon, an
``etc/rc.d/npf`` that loads ``etc/npf.conf.json`` and starts NPF at every boot
(the "pass" configuration unless ``ctl HOST npf-config`` changes it), and the
inventory variable ``pfemu_firewall``.

Hosts of other ABIs (``--abi-hosts ilp32-le,lp64-be``): the last hosts of the
fleet run the real Python of a Debian userland of that ABI (``userland.py``)
through ``<fleet>/hosts/<name>/interpreter/python``, a wrapper that chroots into
the userland with the fleet directory mounted at its own path, and their
daemon's kernel has the same ABI (request numbers, layouts, byte order).
"""

import errno
import glob
import hashlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
import zlib

import yaml

from . import daemon, userland
from .shim import pfemu_shim

PACKAGE_ROOT = os.path.dirname(os.path.abspath(__file__))
# The directory from which this package is importable under its current name
# (the repository root for ``tests.pfemu``, the collections dir's parent otherwise).
IMPORT_ROOT = os.path.abspath(os.path.join(PACKAGE_ROOT, *[os.pardir] * len(__package__.split("."))))
REPO_ROOT = os.path.dirname(os.path.dirname(PACKAGE_ROOT))
DEFAULT_FLEET_DIR = os.path.join(REPO_ROOT, "tests", "output", "pfemu-fleet")
SHIM_FILES = ("pfemu_shim.py", "sitecustomize.py")
STATE_FILE = "fleet.json"
SSHD = "/usr/sbin/sshd"
STARTUP_TIMEOUT = 15.0
QEMU_BINFMT_PREFIX = "/usr/libexec/qemu-binfmt/"


class FleetError(Exception):
    """A fleet operation failed; the message says what to do."""


# ---------------------------------------------------------------------------
# Pythons

def find_pythons():
    """Real interpreter binaries of pyenv's CPython 3.8..3.13, oldest first.

    pyenv's shims exit 127 outside ``pyenv global``, so the binaries are used
    directly.  Without pyenv every host gets the Python running this code.
    """
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    found = {}
    for binary in glob.glob(os.path.join(root, "versions", "3.*", "bin", "python3.*")):
        match = re.search(r"/versions/(3)\.(\d+)\.(\d+)/bin/python3\.(\d+)$", binary)
        if match and match.group(2) == match.group(4) and 8 <= int(match.group(2)) <= 13 and os.access(binary, os.X_OK):
            minor, patch = int(match.group(2)), int(match.group(3))
            if minor not in found or found[minor][0] < patch:
                found[minor] = (patch, binary)
    return [found[minor][1] for minor in sorted(found)] or [os.path.realpath(sys.executable)]


# ---------------------------------------------------------------------------
# Fleet state

class Fleet(object):
    """A fleet directory and the record of what was created in it."""

    def __init__(self, directory=None):
        self.dir = os.path.abspath(directory or DEFAULT_FLEET_DIR)
        self.fleet_id = hashlib.sha1(self.dir.encode()).hexdigest()[:6]
        self.state_path = os.path.join(self.dir, STATE_FILE)

    # record ------------------------------------------------------------------
    def load(self):
        try:
            with open(self.state_path, encoding="utf-8") as state_file:
                return json.load(state_file)
        except FileNotFoundError:
            return None
        except ValueError:
            return {"hosts": []}

    def save(self, state):
        temporary = self.state_path + ".tmp"
        with open(temporary, "w", encoding="utf-8") as state_file:
            json.dump(state, state_file, indent=2)
        os.rename(temporary, self.state_path)

    def host_dir(self, name):
        return os.path.join(self.dir, "hosts", name)

    def netns_name(self, name):
        return "pfemu-%s-%s" % (self.fleet_id, name)

    def host(self, name):
        state = self.load()
        for host in (state or {}).get("hosts", []):
            if host["name"] == name:
                return host
        raise FleetError("no host %r in the fleet at %s (fleet up first?)" % (name, self.dir))

    def socket_path(self, name):
        return os.path.join(self.host_dir(name), "run", daemon.SOCKET_NAME)

    def control(self, name, command):
        self.host(name)
        try:
            return pfemu_shim.control(self.socket_path(name), command)
        except (ConnectionError, FileNotFoundError) as error:
            raise FleetError("the daemon of %s does not answer (%s)" % (name, error)) from error

    # up ------------------------------------------------------------------------
    def up(self, count, flavour="local", states=0, seed=0, paramiko_hosts=0, abi="lp64-le", state_limit=None,
           clock="manual", hostid="random", abi_hosts=(), userland_cache=None, firewall="pf", npf_connections=0):
        """``hostid``: "random" draws a new pf hostid at every emulated boot, like stock NetBSD (pfattach() in
        pf_ioctl.c: ``pf_status.hostid = cprng_fast32()``); "fixed" gives each host one that survives reboots,
        like ``set hostid`` in pf.conf (pfctl's DIOCSETHOSTID at every boot).
        ``abi_hosts``: the ABIs of the last hosts, which run the Python of a userland of that ABI.
        ``firewall``: pf, npf or both for every host, or a comma-separated list of one per host;
        ``npf_connections``: connections to generate on every host that runs NPF."""
        firewalls = host_firewalls(firewall, count)
        if flavour not in ("local", "ssh"):
            raise FleetError("unknown flavour %r (local or ssh)" % flavour)
        if flavour == "ssh":
            _check_ssh_prerequisites()
        if paramiko_hosts and flavour != "ssh":
            raise FleetError("--paramiko-hosts needs --flavour ssh")
        if hostid not in ("random", "fixed"):
            raise FleetError("unknown hostid mode %r (random or fixed)" % hostid)
        if len(abi_hosts) > count:
            raise FleetError("%d --abi-hosts for a fleet of %d hosts" % (len(abi_hosts), count))
        userlands = self._userlands(abi_hosts, userland_cache)
        hosts_dir = os.path.join(self.dir, "hosts")
        if self.load() is not None or os.path.isdir(hosts_dir):
            self.down()
        # The hosts start empty: an rc.d script or a dump left by the last fleet would act at the first boot.
        shutil.rmtree(hosts_dir, ignore_errors=True)
        try:
            state = self._up(count, flavour, states, seed, paramiko_hosts, abi, state_limit, clock, hostid,
                             [abi] * (count - len(abi_hosts)) + list(abi_hosts), userlands, firewalls)
            self._boot_npf(state, npf_connections, seed)
            return state
        except BaseException:
            self.down()
            raise

    @staticmethod
    def _userlands(abis, cache_dir):
        """The userland root of every ABI in ``abis`` that the Pythons of this machine do not have."""
        roots = {}
        for abi in abis:
            try:
                if abi not in roots and userland.needs_userland(abi):
                    roots[abi] = userland.ensure(abi, cache_dir, log=print)
            except userland.UserlandUnavailable as error:
                raise FleetError("no host of ABI %s: %s" % (abi, error)) from error
        return roots

    def _up(self, count, flavour, states, seed, paramiko_hosts, abi, state_limit, clock, hostid, host_abis,
            userlands, firewalls):
        os.makedirs(os.path.join(self.dir, "inventory"), exist_ok=True)
        pythons = find_pythons()
        names = ["fw%d" % index for index in range(1, count + 1)]
        state = {
            "flavour": flavour, "fleet_id": self.fleet_id, "seed": seed, "abi": abi, "clock": clock,
            "created": time.time(),
            "hosts": [{"name": name, "dir": self.host_dir(name),
                       "python": userland.ROOT_PYTHON if host_abis[index] in userlands
                       else pythons[index % len(pythons)],
                       "abi": host_abis[index], "userland": userlands.get(host_abis[index]),
                       # Each host its own seed, so that no two hosts draw the same hostids.
                       "seed": _host_seed(seed, name),
                       "hostid": _host_seed(seed, name) if hostid == "fixed" else None,
                       "netns": self.netns_name(name) if flavour == "ssh" else None,
                       "firewall": firewalls[index],
                       "connection": ("paramiko_ssh" if index >= count - paramiko_hosts else "ssh")
                       if flavour == "ssh" else "local"}
                      for index, name in enumerate(names)],
        }
        # Recorded before anything is created, so that ``down`` can clean up a half-built fleet.
        self.save(state)
        if flavour == "ssh":
            self._make_fleet_key()
        # Twice the table: adaptive timeouts (60%..120% of the limit, as pfctl sets them) stay off.
        limit = state_limit or max(10000, 2 * states)
        for host in state["hosts"]:
            self._make_host(host)
            self._start_daemon(host, abi=host["abi"], state_limit=limit, clock=clock)
            if flavour == "ssh":
                self._start_sshd(host)
        for host in state["hosts"]:
            self._wait_for_daemon(host)
            if states and host["firewall"] != "npf":
                self.control(host["name"], {"command": "fill", "count": states, "seed": seed + host["seed"]})
        if flavour == "ssh":
            self._write_known_hosts(state)
            for host in state["hosts"]:
                self._wait_for_sshd(host)
        self._write_inventory(state)
        return state

    def _boot_npf(self, state, npf_connections, seed):
        """The first boot's rc.d/npf (the daemon runs etc/rc.d only at emulated reboots), then traffic."""
        for host in state["hosts"]:
            if host["firewall"] == "pf":
                continue
            self.control(host["name"], {"command": "npf-boot"})
            if npf_connections:
                self.control(host["name"], {"command": "npf-fill", "count": npf_connections,
                                            "seed": seed + host["seed"]})

    def _make_host(self, host):
        base = host["dir"]
        for sub in ("run", "var/db/pfstate", "var/run", "etc/rc.d", "bin", "tmp/ansible", "tmp/async"):
            os.makedirs(os.path.join(base, sub), exist_ok=True)
        venv = os.path.join(base, "venv")
        python = os.path.join(venv, "bin", "python")
        if host["userland"]:
            # The venv is made and run inside the userland, where its links to /usr/bin/python3 lead.
            userland.prepare_mount_points(host["userland"], self.dir)
            interpreter = os.path.join(base, "interpreter", "python")
            os.makedirs(os.path.dirname(interpreter), exist_ok=True)
            _write_executable(interpreter, userland.wrapper_script(host["userland"], self.dir, python))
            venv_command = ["/bin/sh", "-c", userland.wrapper_script(host["userland"], self.dir, host["python"]),
                            "python"]
            python = interpreter
        else:
            venv_command = [host["python"]]
        created = subprocess.run(venv_command + ["-m", "venv", "--without-pip", venv], check=False,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, universal_newlines=True)
        if created.returncode:
            raise FleetError("the venv of %s could not be made: %s" % (host["name"], created.stderr.strip()))
        site_packages = glob.glob(os.path.join(venv, "lib", "python3*", "site-packages"))[0]
        for name in SHIM_FILES:
            shutil.copyfile(os.path.join(PACKAGE_ROOT, "shim", name), os.path.join(site_packages, name))
        # Debian-built Pythons ship their own sitecustomize in the stdlib, which shadows
        # ours; a .pth line loads the shim there too (installing twice is a no-op).
        with open(os.path.join(site_packages, "pfemu_shim.pth"), "w", encoding="utf-8") as pth:
            pth.write("import pfemu_shim; pfemu_shim.install_from_config()\n")
        with open(os.path.join(site_packages, pfemu_shim.CONFIG_NAME), "w", encoding="utf-8") as config:
            json.dump({"socket": os.path.join(base, "run", daemon.SOCKET_NAME), "device": "/dev/pf",
                       "npf_device": "/dev/npf"}, config)
        _write_executable(os.path.join(base, "bin", "reboot"),
                          "#!%s\n# Emulated reboot: asks this host's pfemu daemon to reboot in DELAY (1) seconds.\n"
                          "import sys\nimport pfemu_shim\nsys.exit(pfemu_shim.reboot_main())\n" % python)
        _write_executable(os.path.join(base, "bin", "shutdown"), _SHUTDOWN_SCRIPT % {"python": python})
        _write_executable(os.path.join(base, "bin", "sysctl"), _SYSCTL_SCRIPT % {
            "boottime": os.path.join(base, "run", daemon.BOOTTIME_NAME)})
        if host.get("firewall", "pf") != "pf":
            self._make_npf_boot(host, python)

    @staticmethod
    def _make_npf_boot(host, python):
        """etc/rc.d/npf (sorts before the collection's pfstate, as rcorder puts npf before it) and npf.conf."""
        base = host["dir"]
        with open(os.path.join(base, "etc", daemon.NPF_BOOT_CONFIG_NAME), "w", encoding="utf-8") as config_file:
            json.dump({"name": "pass", "config": daemon.NPF_BOOT_PRESETS["pass"]}, config_file, indent=1)
        _write_executable(os.path.join(base, "etc", "rc.d", "npf"), _NPF_RC_SCRIPT % {"python": python})

    def _start_daemon(self, host, abi, state_limit, clock):
        command = [sys.executable, "-m", __package__, "daemon", "--host-dir", host["dir"], "--abi", abi,
                   "--state-limit", str(state_limit), "--seed", str(host["seed"]), "--clock", clock,
                   "--firewall", host.get("firewall", "pf")]
        if host["hostid"] is not None:
            command += ["--hostid", str(host["hostid"])]
        if host["netns"]:
            command += ["--netns", host["netns"]]
        environment = dict(os.environ, PYTHONPATH=IMPORT_ROOT)
        with open(os.path.join(host["dir"], "run", "daemon.log"), "ab") as log:
            process = subprocess.Popen(command, cwd=IMPORT_ROOT, env=environment, stdin=subprocess.DEVNULL,
                                       stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        host["daemon_pid"] = process.pid

    def _wait_for_daemon(self, host):
        deadline = time.monotonic() + STARTUP_TIMEOUT
        path = self.socket_path(host["name"])
        while time.monotonic() < deadline:
            if os.path.exists(os.path.join(host["dir"], "run", daemon.BOOTTIME_NAME)) and os.path.exists(path):
                try:
                    pfemu_shim.control(path, {"command": "status"})
                    return
                except OSError:
                    pass
            if _process_exited(host.get("daemon_pid")):
                break
            time.sleep(0.05)
        raise FleetError("daemon of %s did not start; see %s" % (
            host["name"], os.path.join(host["dir"], "run", "daemon.log")))

    # ssh flavour ------------------------------------------------------------------
    def _make_fleet_key(self):
        ssh_dir = os.path.join(self.dir, "ssh")
        os.makedirs(ssh_dir, mode=0o700, exist_ok=True)
        key = os.path.join(ssh_dir, "id_ed25519")
        if not os.path.exists(key):
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pfemu-fleet", "-f", key])
        shutil.copyfile(key + ".pub", os.path.join(ssh_dir, "authorized_keys"))

    def _start_sshd(self, host):
        ssh_dir = os.path.join(host["dir"], "ssh")
        os.makedirs(ssh_dir, mode=0o700, exist_ok=True)
        host_key = os.path.join(ssh_dir, "ssh_host_ed25519_key")
        if not os.path.exists(host_key):
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", host["name"], "-f", host_key])
        config = os.path.join(ssh_dir, "sshd_config")
        with open(config, "w", encoding="utf-8") as config_file:
            config_file.write(_SSHD_CONFIG % {
                "host_key": host_key, "pid_file": os.path.join(host["dir"], "run", "sshd.pid"),
                "authorized_keys": os.path.join(self.dir, "ssh", "authorized_keys")})
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        netns = host["netns"]
        _run(["ip", "netns", "add", netns])
        _run(["ip", "-n", netns, "link", "set", "lo", "up"])
        # The boot_id file must exist for the bind mount; the daemon rewrites it in place at every boot.
        boot_id = os.path.join(host["dir"], "run", daemon.BOOT_ID_NAME)
        if not os.path.exists(boot_id):
            open(boot_id, "a", encoding="utf-8").close()
        _run(["ip", "netns", "exec", netns, "unshare", "--mount", "--propagation", "private",
              "sh", "-c", _SSHD_NAMESPACE_SCRIPT, "sshd-namespace", boot_id, os.path.join(host["dir"], "bin", "shutdown"),
              SSHD, config, os.path.join(ssh_dir, "sshd.log")] + _shutdown_commands())

    def _wait_for_sshd(self, host):
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            probe = subprocess.run(["ip", "netns", "exec", host["netns"], "nc", "-z", "-w", "1", "127.0.0.1", "22"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
            if probe.returncode == 0:
                return
            time.sleep(0.05)
        raise FleetError("sshd of %s did not start; see %s" % (host["name"], os.path.join(host["dir"], "ssh", "sshd.log")))

    def _write_known_hosts(self, state):
        with open(os.path.join(self.dir, "ssh", "known_hosts"), "w", encoding="utf-8") as known_hosts:
            for host in state["hosts"]:
                with open(os.path.join(host["dir"], "ssh", "ssh_host_ed25519_key.pub"), encoding="utf-8") as public_key:
                    key_type, key = public_key.read().split()[:2]
                known_hosts.write("%s %s %s\n" % (self.ansible_host(host), key_type, key))

    def ansible_host(self, host):
        return "%s.%s.pfemu.invalid" % (host["name"], self.fleet_id)

    # inventory ---------------------------------------------------------------------
    def host_vars(self, host):
        base = host["dir"]
        variables = {
            "ansible_python_interpreter": os.path.join(base, "interpreter", "python") if host.get("userland")
            else os.path.join(base, "venv", "bin", "python"),
            "ansible_remote_tmp": os.path.join(base, "tmp", "ansible"),
            "ansible_async_dir": os.path.join(base, "tmp", "async"),
            "netbsd_pf_state_dir": os.path.join(base, "var", "db", "pfstate"),
            # Where the modules' default (/var/run/netbsd_pf_lock.lease) is on NetBSD:
            # a lease taken before a reboot is gone after it.
            "netbsd_pf_lease_file": os.path.join(base, "var", "run", "netbsd_pf_lock.lease"),
            # One restore lock per emulated host, as /var/run/netbsd_pf_restore.lock is per real host.
            "netbsd_pf_restore_lock_file": os.path.join(base, "var", "run", "netbsd_pf_restore.lock"),
            "netbsd_pf_rc_dir": os.path.join(base, "etc", "rc.d"),
            "netbsd_pf_bin_dir": os.path.join(base, "bin"),
            "netbsd_pf_reboot_command": os.path.join(base, "bin", "reboot"),
            "netbsd_pf_boot_time_command": os.path.join(base, "bin", "sysctl") + " -n kern.boottime",
            "pfemu_host_dir": base,
            "pfemu_python": os.path.basename(host["python"]),
            "pfemu_abi": host.get("abi", "lp64-le"),
            "pfemu_socket": self.socket_path(host["name"]),
            # What the host runs: pf, npf or both (its /dev/pf, /dev/npf).
            "pfemu_firewall": host.get("firewall", "pf"),
        }
        if host["hostid"] is not None:
            # Only a fixed hostid is known in advance; a random one is in DIOCGETSTATUS (`ctl HOST status`).
            variables["pfemu_hostid"] = host["hostid"]
        proxy = "ip netns exec %s nc 127.0.0.1 22" % host["netns"]
        if host["connection"] == "local":
            variables["ansible_connection"] = "local"
        else:
            variables.update({
                "ansible_connection": host["connection"],
                "ansible_host": self.ansible_host(host),
                "ansible_user": "root",
                "ansible_ssh_private_key_file": os.path.join(self.dir, "ssh", "id_ed25519"),
                "pfemu_netns": host["netns"],
            })
            if host["connection"] == "paramiko_ssh":
                # paramiko only reads ~/.ssh/known_hosts; the fleet's keys are fresh anyway.
                variables["ansible_paramiko_proxy_command"] = proxy
                variables["ansible_paramiko_host_key_checking"] = False
            else:
                variables["ansible_ssh_common_args"] = (
                    "-o ProxyCommand='%s' -o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes "
                    "-o IdentitiesOnly=yes" % (proxy, os.path.join(self.dir, "ssh", "known_hosts")))
        return variables

    def _write_inventory(self, state):
        fleet_vars = {
            "pfemu_fleet_dir": self.dir, "pfemu_flavour": state["flavour"],
            # ``{{ ansible_playbook_python }} -m {{ pfemu_package }} --dir ...`` run in pfemu_import_root
            # is this fleet's command line (e.g. ctl HOST status, from a task delegated to localhost).
            "pfemu_package": __package__, "pfemu_import_root": IMPORT_ROOT,
        }
        inventory = {"all": {"children": {"pfemu": {"vars": fleet_vars, "hosts": {
            host["name"]: self.host_vars(host) for host in state["hosts"]}}}}}
        with open(self.inventory_path(), "w", encoding="utf-8") as inventory_file:
            inventory_file.write("# Written by `python -m tests.pfemu fleet up`; rewritten at every fleet up.\n")
            yaml.safe_dump(inventory, inventory_file, default_flow_style=False, sort_keys=False)

    def inventory_path(self):
        return os.path.join(self.dir, "inventory", "hosts.yml")

    # down ------------------------------------------------------------------------------
    def down(self):
        """Stop everything this fleet started; safe to repeat and on a half-built fleet."""
        state = self.load() or {"hosts": []}
        names = {host["name"] for host in state["hosts"]}
        names.update(os.path.basename(path) for path in glob.glob(os.path.join(self.dir, "hosts", "*")))
        for name in sorted(names):
            run_dir = os.path.join(self.host_dir(name), "run")
            _stop_pidfile(os.path.join(run_dir, daemon.PID_NAME), must_mention=self.host_dir(name))
            _stop_pidfile(os.path.join(run_dir, "sshd.pid"), must_mention=self.host_dir(name))
        _kill_processes_under(self.dir)
        for netns in self._namespaces():
            for pid in _netns_pids(netns):
                _kill(pid, signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", netns], check=False, stderr=subprocess.DEVNULL)
        for name in names:
            for leftover in (daemon.SOCKET_NAME, daemon.PID_NAME, "sshd.pid", daemon.BOOTTIME_NAME, daemon.BOOT_ID_NAME):
                try:
                    os.unlink(os.path.join(self.host_dir(name), "run", leftover))
                except FileNotFoundError:
                    pass
        try:
            os.unlink(self.state_path)
        except FileNotFoundError:
            pass

    def _namespaces(self):
        if not shutil.which("ip"):
            return []
        listing = subprocess.run(["ip", "netns", "list"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                 universal_newlines=True, check=False).stdout
        prefix = "pfemu-%s-" % self.fleet_id
        return [line.split()[0] for line in listing.splitlines() if line.startswith(prefix)]

    # status --------------------------------------------------------------------------------
    def status(self):
        state = self.load()
        if state is None:
            return None
        report = {"dir": self.dir, "flavour": state.get("flavour"), "inventory": self.inventory_path(), "hosts": []}
        for host in state["hosts"]:
            entry = {"name": host["name"], "connection": host.get("connection"),
                     "python": os.path.basename(host.get("python", ""))}
            try:
                entry.update(pfemu_shim.control(self.socket_path(host["name"]), {"command": "status"}))
            except (OSError, ValueError) as error:
                entry["error"] = "daemon not answering: %s" % error
            report["hosts"].append(entry)
        return report


_SSHD_CONFIG = """\
# sshd of one emulated pfemu host (runs in its own network namespace)
ListenAddress 127.0.0.1
Port 22
HostKey %(host_key)s
PidFile %(pid_file)s
AuthorizedKeysFile %(authorized_keys)s
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
Subsystem sftp internal-sftp
"""

# ansible.builtin.reboot without reboot_command looks for "shutdown" in these directories on the
# target (its search_paths default) and reads a Linux host's boot from boot_id: sshd of an ssh
# fleet host runs in a mount namespace of its own where both are the emulated host's, so a
# playbook written for a real firewall reboots the emulated host, never the test machine.
REBOOT_SEARCH_PATHS = ("/sbin", "/bin", "/usr/sbin", "/usr/bin", "/usr/local/sbin")
LINUX_BOOT_ID = "/proc/sys/kernel/random/boot_id"

_SSHD_NAMESPACE_SCRIPT = """\
set -e
boot_id=$1 shutdown=$2 sshd=$3 config=$4 log=$5
shift 5
mount --bind "$boot_id" %s
for target in "$@"; do mount --bind "$shutdown" "$target"; done
exec "$sshd" -f "$config" -E "$log"
""" % LINUX_BOOT_ID


def _shutdown_commands():
    """The files a `shutdown` of REBOOT_SEARCH_PATHS runs (symbolic links resolved: a bind mount follows them)."""
    found = set()
    for directory in REBOOT_SEARCH_PATHS:
        candidate = os.path.join(directory, "shutdown")
        if os.path.exists(candidate):
            found.add(os.path.realpath(candidate))
    return sorted(found)


_SHUTDOWN_SCRIPT = """\
#!%(python)s
# Emulated shutdown(8): "-r" asks this host's pfemu daemon to reboot (in 1 s; time and message
# are ignored); anything else is refused. The ssh flavour mounts it over the machine's shutdown.
import sys
import pfemu_shim
if "-r" not in sys.argv[1:]:
    sys.stderr.write("shutdown: only -r (reboot) is emulated\\n")
    sys.exit(1)
sys.exit(pfemu_shim.reboot_main([]))
"""

_NPF_RC_SCRIPT = """\
#!%(python)s
# rc.d/npf of an emulated NetBSD host: at boot, `npfctl reload` of the host's npf.conf
# (etc/npf.conf.json, set with `ctl HOST npf-config`) and `npfctl start`, in its daemon.
import sys
import pfemu_shim
if sys.argv[1:2] == ["start"]:
    print(pfemu_shim.control(pfemu_shim.load_config()["socket"], {"command": "npf-boot"})["npf"])
"""

_SYSCTL_SCRIPT = """\
#!/bin/sh
# sysctl of an emulated NetBSD host: knows only kern.boottime, which the pfemu
# daemon publishes once the host is up (after its rc scripts ran).
case "$1" in
    -n) shift; prefix= ;;
    *) prefix="$1 = " ;;
esac
if [ "$1" != kern.boottime ]; then
    echo "sysctl: $1: not emulated" >&2
    exit 1
fi
if [ ! -s %(boottime)s ]; then
    echo "sysctl: kern.boottime: host is rebooting" >&2
    exit 1
fi
printf '%%s' "$prefix"
cat %(boottime)s
"""


def host_firewalls(spec, count):
    """The firewall of each of ``count`` hosts from ``pf``/``npf``/``both`` or one of them per host, comma-separated."""
    names = [name.strip() for name in spec.split(",")] if isinstance(spec, str) else list(spec)
    unknown = sorted(set(names) - set(daemon.FIREWALLS))
    if unknown:
        raise FleetError("unknown firewall %s (%s)" % (", ".join(unknown), "|".join(daemon.FIREWALLS)))
    if len(names) == 1:
        return names * count
    if len(names) != count:
        raise FleetError("--firewall names %d hosts' firewalls for a fleet of %d hosts" % (len(names), count))
    return names


def _host_seed(seed, name):
    return zlib.crc32(("%d:%s" % (seed, name)).encode()) or 1


def _write_executable(path, text):
    with open(path, "w", encoding="utf-8") as script:
        script.write(text)
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def _run(command):
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                            check=False)
    if result.returncode:
        raise FleetError("%s failed (%d): %s" % (" ".join(command), result.returncode, result.stderr.strip()))
    return result.stdout


def _check_ssh_prerequisites():
    if os.geteuid() != 0:
        raise FleetError("the ssh flavour needs root (network namespaces, sshd)")
    missing = [tool for tool in (SSHD, "ip", "nc", "ssh-keygen") if not shutil.which(tool)]
    if missing:
        raise FleetError("missing %s: apt-get install -y openssh-server netcat-openbsd iproute2" % ", ".join(missing))


def _process_exited(pid):
    """True once ``pid`` is gone or a zombie (whoever its parent is)."""
    if not pid:
        return True
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        with open("/proc/%d/stat" % pid, encoding="utf-8") as stat_file:
            return stat_file.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as cmdline:
            return [part.decode(errors="replace") for part in cmdline.read().split(b"\0") if part]
    except OSError:
        return []


def _kill(pid, signum):
    try:
        os.kill(pid, signum)
    except OSError as error:
        if error.errno != errno.ESRCH:
            raise


def _stop_pidfile(path, must_mention):
    """SIGTERM the process of a pid file (if it still is ours), SIGKILL it after 3 s."""
    try:
        with open(path, encoding="utf-8") as pid_file:
            pid = int(pid_file.read().split()[0])
    except (OSError, ValueError, IndexError):
        return
    if not any(must_mention in part for part in _cmdline(pid)):
        return
    _kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and not _process_exited(pid):
        time.sleep(0.05)
    if not _process_exited(pid):
        _kill(pid, signal.SIGKILL)


def _kill_processes_under(directory):
    """SIGKILL leftovers of the emulated hosts: processes run from the fleet dir.

    That is, whose executable (argv[0]) lives in the fleet, like modules and lease
    watchdogs run by a host's venv Python, or which are a daemon of this fleet.
    """
    prefix = directory.rstrip("/") + "/"
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in (os.getpid(), os.getppid()):
            continue
        argv = _cmdline(int(entry))
        if argv[:1] and argv[0].startswith(QEMU_BINFMT_PREFIX):
            argv = argv[1:]   # qemu-user's binfmt_misc launcher, then the guest's argv
        if argv and (argv[0].startswith(prefix) or (
                "daemon" in argv and "--host-dir" in argv and any(part.startswith(prefix) for part in argv))):
            _kill(int(entry), signal.SIGKILL)


def _netns_pids(netns):
    result = subprocess.run(["ip", "netns", "pids", netns], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            universal_newlines=True, check=False)
    return [int(pid) for pid in result.stdout.split() if pid.isdigit()]
