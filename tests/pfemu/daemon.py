"""The pfemu daemon: one process per emulated host, holding its kernel model.

Each Ansible task is a new process on the target, so the pf state of an emulated
host has to outlive them: it lives here.  The daemon serves a Unix socket in the
host's ``run/`` directory.  A connection is either

* a device session (the host's shim opened ``/dev/pf``): the connection is the
  descriptor; each ioctl runs in the kernel model, and whatever the model reads
  from or writes to user addresses is fetched from / stored into the calling
  process over the same connection (see ``ClientMemory``), or
* an NPF device session (``/dev/npf``, on a host that runs NPF): the same, served by
  the host's npfemu kernel, which also maps each reply into the calling process
  (``ClientMemory.map_reply``), or
* one control command (JSON), from the fleet CLI or the host's ``bin/reboot``.

A host runs pf, NPF or both (``--firewall``); opening the device of a firewall the host
does not run fails with ENXIO, as a device node without its driver does on NetBSD.

Like NetBSD's purge thread it visits part of the state table once a second of its clock, and it
emulates a reboot: kernel reset, ``var/run`` emptied (like rc.d/cleanvar), the
host's ``etc/rc.d`` scripts, and only then a new ``kern.boottime``.  The host's
``run/`` directory (this daemon's socket, pid and logs) is not its /var/run and
is left alone.
"""

import argparse
import base64
import bisect
import errno
import json
import logging
import os
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import time

from ..npfemu.kernel import EmulatorRefusal as NpfRefusal
from ..npfemu.kernel import Fail as NpfFailure
from ..npfemu.kernel import NpfKernel
from ..npfemu import generate as npf_generate
from .kernel import EmulatorRefusal, Kernel, ManualClock, SystemClock
from .shim.pfemu_shim import (
    COUNT, MSG_CONTROL, MSG_COPIED, MSG_COPYIN, MSG_COPYOUT, MSG_DATA, MSG_IOCTL, MSG_IOCTL_ADDRESS, MSG_MAP_REPLY,
    MSG_MAPPED, MSG_OPEN, MSG_OPEN_NPF, MSG_REFUSED, MSG_RESULT, REGION, REGION_READ, REGION_WRITE, recv_exact,
    recv_header, send_message,
)

LOG = logging.getLogger("pfemu.daemon")
SOCKET_NAME = "pf.sock"
PID_NAME = "daemon.pid"
BOOTTIME_NAME = "boottime"
# The ssh flavour bind-mounts this file over /proc/sys/kernel/random/boot_id in the host's mount
# namespace, where ansible.builtin.reboot reads a Linux boot: rewritten in place (same inode).
BOOT_ID_NAME = "boot_id"
PURGE_INTERVAL = 1.0
MAX_CATCH_UP_TICKS = 3600
RC_SCRIPT_TIMEOUT = 300
# How long the daemon waits for a client in the middle of an ioctl (copyin data, reading a
# copyout) before it hangs up: a stuck client must not hold the kernel lock forever.
CLIENT_TIMEOUT = 30.0
REFUSALS_KEPT = 20
FIREWALLS = ("pf", "npf", "both")
# The NPF configuration rc.d/npf loads at boot (what npf.conf and `npfctl start` give), in the host's etc/.
NPF_BOOT_CONFIG_NAME = "npf.conf.json"
# NPF_RULE_* of net/npf.h.
NPF_RULE_PASS, NPF_RULE_GROUP, NPF_RULE_FINAL, NPF_RULE_STATEFUL = 0x1, 0x2, 0x4, 0x8
NPF_RULE_IN, NPF_RULE_OUT = 0x10000000, 0x20000000
# Boot configurations by name: "pass" is npfctl's rendering of `group default { pass stateful all }`
# (the rules are kept, not evaluated, by the model); "none" is npf=NO: nothing loaded, NPF stopped.
NPF_BOOT_PRESETS = {
    "pass": {"rules": [
        {"name": "default", "attr": NPF_RULE_GROUP | NPF_RULE_IN | NPF_RULE_OUT, "prio": 0, "skip-to": 2},
        {"attr": NPF_RULE_PASS | NPF_RULE_STATEFUL | NPF_RULE_FINAL | NPF_RULE_IN | NPF_RULE_OUT, "prio": 0,
         "skip-to": 0},
    ]},
    "none": None,
}


class ClientGone(Exception):
    """The process that issued the ioctl went away in the middle of it."""


class ClientMemory(object):
    """The user address space of the process blocked in an ioctl, as the kernel model sees it.

    copyin/copyout are checked against the memory map the client sent with the ioctl (EFAULT
    instead of a crashed client). A copyin reads exactly the bytes the kernel model asks for,
    never more: NetBSD copies in only the request's buffers (sys_ioctl() in sys_generic.c for
    the argument, the DIOCADDSTATES loop of pfioctl() for the records), and a page listed
    readable can still fault (Linux's ``[vvar]``). The client reports such a fault and the
    copyin fails with EFAULT, as copyin(9) does. Copyouts are streamed without waiting for an
    answer; the client fails the ioctl with EFAULT if one of them faults, as pfioctl()'s
    DIOCGETSTATES loop does at its first failed copyout (no modelled request has a side effect
    after a copyout).
    """

    def __init__(self, sock, regions):
        self.sock = sock
        self.spans = {access: _spans(regions, access) for access in (REGION_READ, REGION_WRITE)}
        self.replies_mapped = 0

    def _check(self, address, size, access):
        """Raise EFAULT unless [address, address + size) lies in one span with ``access``."""
        starts, ends = self.spans[access]
        index = bisect.bisect_right(starts, address) - 1
        if index < 0 or address + size > ends[index]:
            raise OSError(errno.EFAULT, os.strerror(errno.EFAULT))

    def copyin(self, address, size):
        if size == 0:
            return b""
        self._check(address, size, REGION_READ)
        try:
            send_message(self.sock, MSG_COPYIN, address, size)
            kind, _unused, length = recv_header(self.sock)
            if kind != MSG_DATA or length != size:
                raise ClientGone("protocol error during copyin")
            data = recv_exact(self.sock, size)
            kind, error, _readable = recv_header(self.sock)
            if kind != MSG_COPIED:
                raise ClientGone("protocol error during copyin")
        except OSError as error:
            raise ClientGone(str(error)) from error
        if error:
            raise OSError(errno.EFAULT, "%s (user range 0x%x+%d faulted)" % (os.strerror(errno.EFAULT), address, size))
        return bytes(data)

    def copyout(self, address, data):
        data = memoryview(data).cast("B")
        if not len(data):
            return
        self._check(address, len(data), REGION_WRITE)
        try:
            send_message(self.sock, MSG_COPYOUT, address, len(data), data)
        except OSError as error:
            raise ClientGone(str(error)) from error

    def map_reply(self, data):
        """nvlist_copyout's uvm_mmap_anon: the client maps fresh pages holding ``data``; their address."""
        try:
            send_message(self.sock, MSG_MAP_REPLY, 0, len(data), bytes(data))
            kind, address, error = recv_header(self.sock)
        except OSError as error:
            raise ClientGone(str(error)) from error
        if kind != MSG_MAPPED:
            raise ClientGone("protocol error during a reply mapping")
        if error:
            raise OSError(errno.ENOMEM, "the reply could not be mapped into the caller")
        self.replies_mapped += 1
        return address


def _spans(regions, access):
    """Start and end lists of the maximal address ranges with ``access``, sorted."""
    starts, ends = [], []
    for start, end, flags in sorted(regions):
        if not flags & access:
            continue
        if ends and ends[-1] == start:
            ends[-1] = end
        else:
            starts.append(start)
            ends.append(end)
    return starts, ends


def decode_memory_map(payload):
    (count,) = COUNT.unpack_from(payload, 0)
    return [REGION.unpack_from(payload, COUNT.size + index * REGION.size) for index in range(count)]


class EmulatedHost(object):
    """One emulated NetBSD host: its kernel, boot time, reboot and rc scripts."""

    def __init__(self, host_dir, kernel, netns=None, firewall="pf", npf_kernel=None):
        self.host_dir = os.path.abspath(host_dir)
        self.run_dir = os.path.join(self.host_dir, "run")
        self.var_run_dir = os.path.join(self.host_dir, "var", "run")
        self.rc_dir = os.path.join(self.host_dir, "etc", "rc.d")
        self.kernel = kernel
        self.netns = netns
        self.firewall = firewall
        self.npf_kernel = npf_kernel
        # NPF's own locks (npf_config_lock and the connection database) are not pf's.
        self.npf_lock = threading.Lock()
        self.npf_replies_mapped = 0
        # Serialises the kernel model like pf_consistency_lock plus the big kernel lock.
        self.kernel_lock = threading.Lock()
        self.rebooting = False
        self.refusals = []
        self.client_timeout = CLIENT_TIMEOUT
        # The clock second up to which the purge thread has ticked (see purge_forever).
        self.purged_second = int(kernel.clock.now())
        self.sessions = {}
        self.sessions_lock = threading.Lock()
        self.stopping = threading.Event()

    # boot time -------------------------------------------------------------
    def boottime_path(self):
        return os.path.join(self.run_dir, BOOTTIME_NAME)

    def publish_boot_time(self):
        """Write kern.boottime where the host's sysctl reads it (atomically)."""
        text = time.strftime("%a %b %e %H:%M:%S %Y", time.localtime(self.kernel.boot_time)) + "\n"
        temporary = self.boottime_path() + ".tmp"
        with open(temporary, "w", encoding="utf-8") as boottime_file:
            boottime_file.write(text)
        os.rename(temporary, self.boottime_path())
        with open(os.path.join(self.run_dir, BOOT_ID_NAME), "w", encoding="utf-8") as boot_id_file:
            boot_id_file.write(text)

    # sessions ----------------------------------------------------------------
    def register(self, session):
        with self.sessions_lock:
            self.sessions[id(session)] = session

    def unregister(self, session):
        with self.sessions_lock:
            self.sessions.pop(id(session), None)

    # purge thread ------------------------------------------------------------
    def purge_forever(self):
        """pf_purge_thread() (NetBSD pf.c): one purge tick per second of the kernel's clock.

        On the system clock that is one tick a second; a manual clock ticks only when advanced
        (the ``advance`` command runs one tick per second it advances).  After a stall the
        missed seconds are ticked at the current time, at most MAX_CATCH_UP_TICKS of them.
        """
        while not self.stopping.wait(PURGE_INTERVAL):
            with self.kernel_lock:
                second = int(self.kernel.clock.now())
                for _tick in range(min(second - self.purged_second, MAX_CATCH_UP_TICKS)):
                    self.kernel.purge_tick()
                self.purged_second = max(second, self.purged_second)

    def advance_clock(self, seconds):
        """Advance the clock with the purge ticking once per whole second on the way (caller holds kernel_lock)."""
        whole = int(seconds)
        skipped = max(0, whole - MAX_CATCH_UP_TICKS)
        self.kernel.clock.advance(skipped + (seconds - whole))
        self.kernel.run_purge(whole - skipped)
        self.purged_second = int(self.kernel.clock.now())

    # status ------------------------------------------------------------------
    def status(self):
        """What DIOCGETSTATUS would say, plus the emulator's knobs and its refusals."""
        kernel = self.kernel
        with self.kernel_lock:
            answer = {
                "running": kernel.running, "states": kernel.states, "hostid": kernel.hostid,
                # Not in DIOCGETSTATUS: the states DIOCGETSTATES lists (``states`` also counts
                # the unlinked ones the purge has not freed yet).
                "linked_states": kernel.linked_states,
                "state_limit": kernel.state_limit, "lock": kernel.lock, "securelevel": kernel.securelevel,
                "boot_time": kernel.boot_time, "now": kernel.clock.now(), "abi": kernel.abi,
                "panicked": kernel.panicked,
            }
        answer.update(rebooting=self.rebooting, sessions=len(self.sessions), refusals=list(self.refusals),
                      pid=os.getpid(), socket=os.path.join(self.run_dir, SOCKET_NAME), firewall=self.firewall)
        if self.npf_kernel is not None:
            answer["npf"] = self.npf_status()
        return answer

    # NPF ---------------------------------------------------------------------
    def npf_status(self):
        npf = self.npf_kernel
        with self.npf_lock:
            return {"active": npf.active, "tracking": npf.tracking, "connections": npf.connection_count,
                    "nat_connections": sum(1 for conn in npf.conns if conn.nat is not None),
                    "rules": len(npf.config["rules"]), "nat_policies": len(npf.config["nat"]),
                    "params": dict(npf.params), "securelevel": npf.securelevel,
                    "replies_mapped": self.npf_replies_mapped, "boot_config": self.npf_boot_config_name()}

    def npf_boot_config_path(self):
        return os.path.join(self.host_dir, "etc", NPF_BOOT_CONFIG_NAME)

    def npf_boot_config_name(self):
        try:
            with open(self.npf_boot_config_path(), encoding="utf-8") as config_file:
                return json.load(config_file).get("name", "custom")
        except FileNotFoundError:
            return "none"

    def set_npf_boot_config(self, command):
        """What the next boot's rc.d/npf loads: a preset by name, or a configuration given as JSON."""
        if "preset" in command:
            name = command["preset"]
            if name not in NPF_BOOT_PRESETS:
                raise ValueError("unknown NPF boot configuration %r (%s)" % (name, ", ".join(sorted(NPF_BOOT_PRESETS))))
            config = NPF_BOOT_PRESETS[name]
        else:
            name, config = "custom", command["config"]
            if not isinstance(config, dict):
                raise ValueError("an NPF configuration is a JSON object (the LOAD nvlist, bytes as {\"hex\": ...})")
            # Refused now, not at the next boot: a scratch kernel of this host loads it first.
            scratch = NpfKernel(pointer_size=self.npf_kernel.pointer_size, byte_order=self.npf_kernel.byte_order)
            try:
                scratch._load(_from_json(config))   # pylint: disable=protected-access
            except (NpfFailure, NpfRefusal, ValueError, TypeError, AttributeError) as failure:
                reason = getattr(failure, "why", None) or failure
                raise ValueError("the NPF kernel refuses this configuration: %s" % reason) from failure
        path = self.npf_boot_config_path()
        if config is None:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            return
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "w", encoding="utf-8") as config_file:
            json.dump({"name": name, "config": config}, config_file, indent=1)
        os.rename(path + ".tmp", path)

    def npf_boot(self):
        """rc.d/npf start at boot: `npfctl reload` of the boot configuration, then `npfctl start`."""
        try:
            with open(self.npf_boot_config_path(), encoding="utf-8") as config_file:
                config = _from_json(json.load(config_file)["config"])
        except FileNotFoundError:
            return {"loaded": False}
        npf = self.npf_kernel
        with self.npf_lock:
            npf._load(dict(config))   # pylint: disable=protected-access  # the kernel side of LOAD, as npfctl's
            if not npf.active:
                npf._switch(1)        # pylint: disable=protected-access
        return {"loaded": True}

    def npf_fill(self, count, seed):
        """``count`` connections made by traffic (needs a loaded configuration)."""
        npf = self.npf_kernel
        with self.npf_lock:
            records = npf_generate.generate_connections(count, seed, npf.byte_order, first=npf.connection_count)
            npf.add_connections(records)

    def record_refusal(self, refusal):
        """The client did something that would crash or corrupt a real kernel: keep it for the tests."""
        LOG.error("refused: %s", refusal)
        self.refusals = (self.refusals + ["%s: %s" % (type(refusal).__name__, refusal)])[-REFUSALS_KEPT:]

    # reboot ------------------------------------------------------------------
    def schedule_reboot(self, delay):
        if self.rebooting:
            return False
        self.rebooting = True
        worker = threading.Thread(target=self._reboot, args=(delay, time.monotonic()), name="reboot", daemon=True)
        worker.start()
        return True

    def _reboot(self, delay, requested):
        time.sleep(delay)
        LOG.info("rebooting")
        try:
            os.unlink(self.boottime_path())
        except FileNotFoundError:
            pass
        self._set_link("down")
        with self.kernel_lock:
            if isinstance(self.kernel.clock, ManualClock):
                # A reboot takes time on any clock, and kern.boottime must change.
                self.kernel.clock.advance(max(1.0, time.monotonic() - requested))
            self.kernel.reboot()
            self.purged_second = int(self.kernel.clock.now())
        if self.npf_kernel is not None:
            with self.npf_lock:
                self.npf_kernel.reboot()
        self._kill_session_holders()
        self.clean_var_run()
        self.run_rc_scripts()
        self.publish_boot_time()
        self._set_link("up")
        self.rebooting = False
        LOG.info("up again, boot time %s", self.kernel.boot_time)

    def _set_link(self, state):
        """Cut the host's network namespace off while it reboots (ssh flavour)."""
        if self.netns:
            subprocess.run(["ip", "-n", self.netns, "link", "set", "lo", state], check=False)

    def _kill_session_holders(self):
        """A reboot ends every process; those that still hold /dev/pf open are killed."""
        with self.sessions_lock:
            pids = {session.peer_pid for session in self.sessions.values() if session.peer_pid}
        for pid in pids - {os.getpid()}:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def clean_var_run(self):
        """Remove everything but directories under var/run, as NetBSD's rc.d/cleanvar does at boot."""
        for directory, subdirectories, files in os.walk(self.var_run_dir):
            # os.walk lists a symlink to a directory with the directories; find ! -type d does not.
            links = [name for name in subdirectories if os.path.islink(os.path.join(directory, name))]
            for name in files + links:
                try:
                    os.unlink(os.path.join(directory, name))
                except FileNotFoundError:
                    pass

    def run_rc_scripts(self):
        """Run every executable in etc/rc.d with ``start``, in sorted order, like rc(8)."""
        if not os.path.isdir(self.rc_dir):
            return
        environment = dict(os.environ)
        environment["PATH"] = os.pathsep.join([
            os.path.join(self.host_dir, "bin"), os.path.join(self.host_dir, "venv", "bin"),
            "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin",
        ])
        environment.pop("PYTHONPATH", None)
        environment.pop("VIRTUAL_ENV", None)
        with open(os.path.join(self.run_dir, "rc.log"), "ab") as log:
            for name in sorted(os.listdir(self.rc_dir)):
                script = os.path.join(self.rc_dir, name)
                if not (os.path.isfile(script) and os.access(script, os.X_OK)):
                    continue
                log.write(("=== %s start (%s)\n" % (name, time.ctime())).encode())
                log.flush()
                try:
                    result = subprocess.run([script, "start"], stdout=log, stderr=subprocess.STDOUT, cwd="/",
                                            env=environment, timeout=RC_SCRIPT_TIMEOUT, check=False)
                    log.write(("=== %s exit %d\n" % (name, result.returncode)).encode())
                except (OSError, subprocess.TimeoutExpired) as error:
                    log.write(("=== %s failed: %s\n" % (name, error)).encode())

    # control commands --------------------------------------------------------
    def control(self, command):
        name = command.get("command")
        if name == "status":
            return self.status()
        if name == "reboot":
            return {"scheduled": self.schedule_reboot(float(command.get("delay", 1.0)))}
        if name == "states":
            # The table as DIOCGETSTATES returns it, for `fleet states` (records in the ABI's byte order).
            with self.kernel_lock:
                records = self.kernel.export_all()
                byte_order = self.kernel.layout.byte_order
            return {"byte_order": byte_order, "records": base64.b64encode(records).decode("ascii")}
        if name.startswith("npf"):
            return self.npf_control(name, command)
        with self.kernel_lock:
            if name == "fill":
                self.kernel.fill(int(command["count"]), seed=int(command.get("seed", 0)))
            elif name == "securelevel":
                self.kernel.set_securelevel(int(command["level"]))
                if self.npf_kernel is not None:   # kern.securelevel is the whole host's: NPF's kauth reads it too
                    with self.npf_lock:
                        self.npf_kernel.securelevel = int(command["level"])
            elif name == "limit":
                self.kernel.state_limit = int(command["states"])
            elif name == "lock":
                self.kernel.lock = int(command["value"])
            elif name == "fault":
                self.kernel.inject_fault(command["request"], int(command.get("nth", 1)),
                                         int(command.get("errno", errno.EIO)))
            elif name == "advance":
                self.advance_clock(float(command["seconds"]))
            elif name == "grow":
                self.kernel.grow_before_next_fetch(int(command["count"]))
            elif name == "purge":
                self.kernel.purge()
            elif name == "running":
                self.kernel.running = bool(command["value"])
            else:
                raise ValueError("unknown control command %r" % (name,))
        return self.status()

    def npf_control(self, name, command):
        if self.npf_kernel is None:
            raise OSError(errno.ENXIO, "this host does not run NPF (firewall %s)" % self.firewall)
        if name == "npf-boot":
            answer = self.npf_boot()
        elif name == "npf-config":
            self.set_npf_boot_config(command)
            answer = {}
        elif name == "npf-fill":
            self.npf_fill(int(command["count"]), int(command.get("seed", 0)))
            answer = {}
        else:
            raise ValueError("unknown control command %r" % (name,))
        answer.update(self.status())
        return answer


def _from_json(value):
    """A configuration from its JSON form: {"hex": "..."} is a binary (nvlist type BINARY)."""
    if isinstance(value, dict):
        if set(value) == {"hex"}:
            return bytes.fromhex(value["hex"])
        return {key: _from_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_from_json(item) for item in value]
    return value


class Session(socketserver.BaseRequestHandler):
    """One connection: a /dev/pf descriptor or a single control command."""

    peer_pid = None
    kernel_handle = None

    def handle(self):
        host = self.server.host
        sock = self.request
        try:
            kind, a, b = recv_header(sock)
        except OSError:
            return
        if kind == MSG_CONTROL:
            self._control(host, sock, recv_exact(sock, b))
        elif kind in (MSG_OPEN, MSG_OPEN_NPF):
            self.peer_pid = _peer_pid(sock)
            if kind == MSG_OPEN:
                kernel = host.kernel if host.firewall != "npf" else None
                lock = host.kernel_lock
            else:
                kernel, lock = host.npf_kernel, host.npf_lock
            if self._open(host, sock, int(a), kernel, lock):
                host.register(self)
                try:
                    self._serve_ioctls(host, sock, kernel, lock)
                finally:
                    host.unregister(self)
                    with lock:
                        try:
                            kernel.close(self.kernel_handle)
                        except (OSError, EmulatorRefusal, NpfRefusal):
                            pass   # opened before a reboot or a panic: already gone

    def _open(self, host, sock, flags, kernel, lock):
        try:
            if kernel is None:
                raise OSError(errno.ENXIO, "no such device on this host")
            with lock:
                self.kernel_handle = kernel.open(flags)
            send_message(sock, MSG_RESULT)
            return True
        except OSError as failure:
            send_message(sock, MSG_RESULT, failure.errno or errno.ENXIO)
        except (EmulatorRefusal, NpfRefusal) as refusal:
            _refuse(host, sock, refusal)
        return False

    def _serve_ioctls(self, host, sock, kernel, lock):
        while True:
            sock.settimeout(None)   # an open descriptor may stay idle for as long as its process likes
            try:
                kind, request, value = recv_header(sock)
                if kind not in (MSG_IOCTL, MSG_IOCTL_ADDRESS):
                    return
                length = value if kind == MSG_IOCTL else 0
                payload = recv_exact(sock, length + COUNT.size)
                (count,) = COUNT.unpack_from(payload, length)
                payload += recv_exact(sock, count * REGION.size)
            except OSError:
                return
            # An integer argument is a user address the kernel copies the struct from and to.
            arg = payload[:length] if kind == MSG_IOCTL else value
            sock.settimeout(host.client_timeout)
            memory = ClientMemory(sock, decode_memory_map(memoryview(payload)[length:]))
            try:
                with lock:
                    try:
                        kernel.ioctl(self.kernel_handle, request, arg, memory)
                    finally:
                        if memory.replies_mapped:   # only NPF sessions map replies, under npf_lock
                            host.npf_replies_mapped += memory.replies_mapped
                if kind == MSG_IOCTL:
                    send_message(sock, MSG_RESULT, 0, len(arg), arg)
                else:
                    send_message(sock, MSG_RESULT)
            except ClientGone:
                return
            except OSError as failure:
                if not _answer(sock, MSG_RESULT, failure.errno or errno.EIO):
                    return
            except (EmulatorRefusal, NpfRefusal) as refusal:
                if not _refuse(host, sock, refusal):
                    return

    @staticmethod
    def _control(host, sock, payload):
        try:
            answer, error = host.control(json.loads(bytes(payload).decode())), 0
        except OSError as failure:
            answer, error = {"error": str(failure)}, failure.errno or errno.EIO
        except (KeyError, ValueError, TypeError) as failure:
            answer, error = {"error": "bad control command: %s" % failure}, errno.EINVAL
        except Exception as failure:  # pylint: disable=broad-except  # report it, keep serving
            LOG.exception("control command failed")
            answer, error = {"error": "%s: %s" % (type(failure).__name__, failure)}, errno.EIO
        body = json.dumps(answer).encode()
        try:
            send_message(sock, MSG_RESULT, error, len(body), body)
        except OSError:
            pass


def _answer(sock, kind, error, payload=b""):
    """Send an answer; False when the client is gone."""
    try:
        send_message(sock, kind, error, len(payload), payload)
        return True
    except OSError:
        return False


def _refuse(host, sock, refusal):
    host.record_refusal(refusal)
    return _answer(sock, MSG_REFUSED, 0, str(refusal).encode())


def _peer_pid(sock):
    try:
        credentials = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return struct.unpack("3i", credentials)[0]
    except (AttributeError, OSError):
        return None


class DaemonServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path, host):
        self.host = host
        super().__init__(path, Session)


CLOCKS = {"manual": ManualClock, "system": SystemClock}


def serve(host_dir, kernel_options, clock="manual", netns=None, firewall="pf"):
    """Run the daemon of one host until SIGTERM."""
    kernel = Kernel(clock=CLOCKS[clock](), **kernel_options)
    npf_kernel = None
    if firewall != "pf":
        # One clock for both firewalls of a host; NPF's processes have the host's ABI.
        npf_kernel = NpfKernel(pointer_size=kernel.layout.pointer_size, byte_order=kernel.layout.byte_order,
                               clock=kernel.clock, securelevel=kernel.securelevel)
    host = EmulatedHost(host_dir, kernel, netns=netns, firewall=firewall, npf_kernel=npf_kernel)
    os.makedirs(host.run_dir, exist_ok=True)
    socket_path = os.path.join(host.run_dir, SOCKET_NAME)
    try:
        os.unlink(socket_path)
    except FileNotFoundError:
        pass
    server = DaemonServer(socket_path, host)

    def terminate(_signum, _frame):
        host.stopping.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)
    host.publish_boot_time()
    with open(os.path.join(host.run_dir, PID_NAME), "w", encoding="utf-8") as pid_file:
        pid_file.write("%d\n" % os.getpid())
    threading.Thread(target=host.purge_forever, name="purge", daemon=True).start()
    LOG.info("serving %s", socket_path)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
        for name in (SOCKET_NAME, PID_NAME):
            try:
                os.unlink(os.path.join(host.run_dir, name))
            except FileNotFoundError:
                pass


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tests.pfemu daemon", description=__doc__.splitlines()[0])
    parser.add_argument("--host-dir", required=True)
    parser.add_argument("--abi", default="lp64-le")
    parser.add_argument("--state-limit", type=int, default=10000)
    parser.add_argument("--hostid", type=lambda text: int(text, 0))
    parser.add_argument("--securelevel", type=int, default=0)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="manual",
                        help="manual: kernel time moves only with `ctl HOST advance` and reboots; system: real time")
    parser.add_argument("--netns")
    parser.add_argument("--firewall", choices=FIREWALLS, default="pf",
                        help="the packet filters of this host: /dev/pf, /dev/npf or both")
    options = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    serve(options.host_dir, {"abi": options.abi, "state_limit": options.state_limit, "hostid": options.hostid,
                             "securelevel": options.securelevel, "seed": options.seed},
          clock=options.clock, netns=options.netns, firewall=options.firewall)
    return 0


if __name__ == "__main__":
    sys.exit(main())
