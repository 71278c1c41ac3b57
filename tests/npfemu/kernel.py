"""An in-process model of the kernel side of NetBSD's /dev/npf (NPF reference sections 2, 3, 6).

Default generation "N20" (NetBSD 9.2+, 10, -current), modelled request by request: the kauth
gate, VERSION, SWITCH, STATS, and the nvlist requests LOAD, SAVE and CONN_LOOKUP with
copyin/copyout exactly as 2.3 and 2.4 describe (no reply and nothing written back on
error; a reply mapping the client must unmap). The 2020 export and import defects are
reproduced (3.6): exported keys say ``ifname "???"`` whenever they carry a direction;
imported NAT entries keep address length 0, so SAVE and CONN_LOOKUP fail with ENOMEM while
one lives, and their ports share one pool. Also reproduced, though the reference misses it:
exported keys carry a garbled ``proto`` (see ``_export_key``).

"N19" (NetBSD 9.0) and "P" (proplib, NetBSD 7/8) answer VERSION and unknown requests only,
which is what the client's generation probe needs; their other requests raise
``NotModelled``. Where a real kernel would panic or corrupt memory the model raises an
``EmulatorRefusal`` subclass, never an errno. It never imports plugins/.
"""

import errno
import struct
import time

from . import libnv

# NetBSD errno numbers (the ones above 34 differ from Linux's).
EPROGMISMATCH = 75
ENOTSUP = 86
ENAMETOOLONG = 63

NPF_VERSION = 22
IOC_VOID, IOC_OUT, IOC_IN = 0x20000000, 0x40000000, 0x80000000
DATA_LIMIT = 4 * 1024 * 1024
MAX_IFMAP = 64
MAX_TABLES = 128
MAX_RPROCS = 128
MAX_RULES = 1 << 20
STATS_COUNT = 21
CONN_CREATE, CONN_DESTROY, NAT_CREATE, NAT_DESTROY = 5, 6, 7, 8

CONN_ACTIVE = 0x4
PFIL_ALL = 0x3  # PFIL_IN | PFIL_OUT: the first packet's direction in a connection's flags
NPF_NAT_PORTMAP = 0x02
NPF_TABLE_CONST = 3
NPF_TABLE_TYPES = (1, 2, NPF_TABLE_CONST, 4)  # IPSET, LPM, CONST, IFADDR
NPF_CODE_BPF = 1
ALGS = ("icmp",)  # the only ALG module NetBSD has (rmind/npf's PPTP one is not in NetBSD, reference 7)
UINT64_MAX = (1 << 64) - 1
UNKNOWN_IFNAME = "???"

INT_MAX = (1 << 31) - 1
IOCPARM_MAX = 4096  # sys_ioctl: a longer argument is ENOTTY before any driver runs (NBPG)
# The parameters an N20 kernel registers: name -> (default, min, max) (npf_params.c, npf_conn.c,
# npf_conndb.c, npf_portmap.c, npf_state.c, npf_state_tcp.c). A LOAD naming another is ENOENT,
# a value outside the range EINVAL (npf_ctl.c npf_mk_params -> npf_param_check).
PARAMS = {
    "ip4.reassembly": (1, 0, 1), "ip6.reassembly": (0, 0, 1),
    "state.key.interface": (1, 0, 1), "state.key.direction": (1, 0, 1),
    "gc.step": (256, 1, INT_MAX), "gc.interval_min": (50, 10, 10000), "gc.interval_max": (5000, 10, 10000),
    "portmap.min_port": (1024, 1024, 65535), "portmap.max_port": (49151, 1024, 65535),
    "state.generic.timeout.closed": (0, 0, INT_MAX), "state.generic.timeout.new": (30, 0, INT_MAX),
    "state.generic.timeout.established": (60, 0, INT_MAX),
    "state.tcp.timeout.new": (30, 0, INT_MAX), "state.tcp.timeout.established": (86400, 0, INT_MAX),
    "state.tcp.timeout.half_close": (21600, 0, INT_MAX), "state.tcp.timeout.close": (10, 0, INT_MAX),
    "state.tcp.timeout.time_wait": (240, 0, INT_MAX), "state.tcp.strict_order_rst": (1, 0, 1),
    "state.tcp.max_ack_win": (66000, 0, INT_MAX),
}
PARAMS_DEFAULTS = dict((name, bounds[0]) for name, bounds in PARAMS.items())
# The timeout param of each NPF TCP state (npf_state_tcp_timeout), and of UDP/ICMP CLOSED/NEW/ESTABLISHED.
TCP_TIMEOUT_PARAMS = tuple("state.tcp.timeout." + name for name in (
    "close", "new", "new", "new", "established", "half_close", "half_close", "half_close", "half_close",
    "close", "close", "time_wait"))
GENERIC_TIMEOUT_PARAMS = tuple("state.generic.timeout." + name for name in ("closed", "new", "established"))


class EmulatorRefusal(Exception):
    """The request would make a real NetBSD kernel crash or corrupt memory; the model stops here."""


class KernelPanic(EmulatorRefusal):
    """The emulated machine would have crashed (descriptor pairs, NAT import on a DIAGNOSTIC kernel)."""


class WouldCorrupt(EmulatorRefusal):
    """Strict mode: a record the kernel accepts but that corrupts memory or panics it later (6.8)."""


class NotModelled(EmulatorRefusal):
    """A request this model does not implement for the selected generation."""


class ManualClock(object):
    """Seconds that only move when told to."""

    def __init__(self, start=None):
        self._now = time.time() if start is None else start

    def now(self):
        return self._now

    def advance(self, seconds):
        self._now += seconds


def _ioc(direction, number, length):
    return direction | ((length & 0x1FFF) << 16) | (ord("N") << 8) | number


def _num(nvl, key, default=0):
    """nvlist_get_number with a default: a pair of another type counts as absent (6.10)."""
    value = nvl.get(key) if isinstance(nvl, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _str(nvl, key):
    value = nvl.get(key) if isinstance(nvl, dict) else None
    return value if isinstance(value, str) else None


def _nvlist_array(nvl, key):
    """nvlist_exists_nvlist_array: a list of nvlists, or nothing (another type counts as absent, 6.10)."""
    value = nvl.get(key) if isinstance(nvl, dict) else None
    return value if isinstance(value, list) and value and all(isinstance(item, dict) for item in value) else []


def _bin(nvl, key):
    value = nvl.get(key) if isinstance(nvl, dict) else None
    return bytes(value) if isinstance(value, (bytes, bytearray)) else None


class Fail(Exception):
    """An errno from inside an operation (the handler's return value)."""

    def __init__(self, err, why=""):
        super(Fail, self).__init__(err, why)
        self.errno = err
        self.why = why


class Connection(object):
    __slots__ = ("flags", "proto", "ifid", "state", "alen", "forw", "back", "nat", "last", "order")

    def __init__(self):
        self.nat = None


class NatEntry(object):
    __slots__ = ("policy", "ifid", "alen", "oaddr", "oport", "taddr", "tport", "imported", "reserved_port")


class OpenFile(object):
    def __init__(self, flags):
        self.flags = flags


class NpfKernel(object):
    """The NPF kernel of one host. ``pointer_size``/``byte_order`` give the ABI of its processes."""

    def __init__(self, generation="N20", pointer_size=8, byte_order="little", clock=None, securelevel=0,
                 strict=True, diagnostic=False, save_workaround=True):
        if generation not in ("N20", "N19", "P"):
            raise ValueError("generation must be N20, N19 or P")
        self.generation = generation
        self.pointer_size = pointer_size
        self.byte_order = byte_order
        self.prefix = "<" if byte_order == "little" else ">"
        self.clock = clock or ManualClock()
        self.securelevel = securelevel
        self.strict = strict
        self.diagnostic = diagnostic
        self.save_workaround = save_workaround
        self.root = True
        ref = 24 if pointer_size == 8 else 12
        self.requests = {
            _ioc(IOC_OUT, 100, 4): "VERSION", _ioc(IOC_IN, 101, 4): "SWITCH",
            _ioc(IOC_IN | IOC_OUT, 102, ref): "LOAD", _ioc(IOC_IN, 103, 40 if pointer_size == 8 else 32): "TABLE",
            _ioc(IOC_IN, 104, pointer_size): "STATS",
            _ioc(IOC_OUT, 105, ref): "SAVE", _ioc(IOC_IN | IOC_OUT, 107, ref): "RULE",
            _ioc(IOC_IN | IOC_OUT, 108, ref): "CONN_LOOKUP",
        }
        if generation != "P":  # NetBSD npf_os.c 1.17 (2019) already dispatches it
            self.requests[_ioc(IOC_IN | IOC_OUT, 109, ref)] = "TABLE_REPLACE"
        self.reboot()

    # --- machine ---------------------------------------------------------------

    def reboot(self):
        """A fresh boot: no configuration, tracking off, NPF stopped, counters zero."""
        self.active = False
        self.tracking = False
        self.default_pass = True
        self.config = {"rules": [], "nat": [], "tables": [], "rprocs": [], "algs": []}
        self.params = dict(PARAMS_DEFAULTS)
        self.ifmap = []
        self.ifmap_off = 0  # npf_if.c: ids are ifmap_off + slot + 1; each flush adds 64
        self.conns = []
        self.conndb = {}
        self.port_pool = set()
        self.stats = [0] * STATS_COUNT
        self._order = 0

    def open(self, flags):
        self._kauth()
        return OpenFile(flags)

    def close(self, handle):
        pass

    def _kauth(self):
        if not self.root or self.securelevel > 1:
            raise OSError(errno.EPERM, "kauth: KAUTH_NETWORK_FIREWALL denied")

    def ioctl(self, handle, request, arg, memory):
        """sys_ioctl + npf_dev_ioctl: arg is the caller's argument buffer, written back only on success."""
        size = (request >> 16) & 0x1FFF
        if size > IOCPARM_MAX:
            raise OSError(errno.ENOTTY, "argument of %d bytes" % size)
        self._kauth()
        karg = bytearray(arg[:size]) if request & IOC_IN else bytearray(size)
        name = self.requests.get(request)
        if name is None:
            raise OSError(errno.EINVAL if self.generation == "N20" else errno.ENOTTY, "unknown NPF request")
        if name == "VERSION":
            struct.pack_into(self.prefix + "i", karg, 0, NPF_VERSION if self.generation != "P" else 19)
        elif self.generation != "N20":
            raise NotModelled("%s on generation %s" % (name, self.generation))
        elif name == "SWITCH":
            self._switch(struct.unpack_from(self.prefix + "i", karg)[0])
        elif name == "TABLE":
            raise NotModelled("IOC_NPF_TABLE (npfctl_table): implemented by NetBSD, not by this model")
        elif name == "STATS":
            address = struct.unpack_from(self.prefix + ("Q" if self.pointer_size == 8 else "I"), karg)[0]
            memory.copyout(address, struct.pack(self.prefix + "%dQ" % STATS_COUNT, *self.stats))
        else:
            self._nvlist_op(name, request, karg, memory)
        if request & IOC_OUT:
            arg[:size] = karg

    def _switch(self, on):
        if on:
            if self.active:
                raise OSError(errno.EEXIST, "already started")
            self.active = True
        else:
            self.active = False

    # --- nvlist transport (2.3, 2.4) ---------------------------------------------

    def _ref(self, karg):
        return struct.unpack_from(self.prefix + ("QQi" if self.pointer_size == 8 else "IIi"), karg)

    def _copyin(self, karg, memory):
        buf, length, flags = self._ref(karg)
        if length == 0:
            raise OSError(errno.EINVAL, "empty request")
        if length >= DATA_LIMIT:
            raise OSError(errno.E2BIG, "request of %d bytes" % length)
        packed = memory.copyin(buf, length)
        try:
            return libnv.unpack(packed, flags & 3, self.byte_order)
        except libnv.DescriptorPanic as exc:
            raise KernelPanic("libnv: %s" % exc)
        except libnv.UnpackError:
            raise OSError(errno.EINVAL, "request does not unpack")

    def _nvlist_op(self, name, request, karg, memory):
        try:
            req = self._copyin(karg, memory)
        except OSError:
            if name != "SAVE" or not self.save_workaround:
                raise
            req = {}  # NetBSD's "until the version bump" workaround: SAVE with an empty request
        # npfctl_run_op: dnvlist_get_number(req, "version", UINT64_MAX); that default means "absent"
        if _num(req, "version", UINT64_MAX) not in (NPF_VERSION, UINT64_MAX):
            raise OSError(EPROGMISMATCH, "version mismatch")
        response = {}
        try:
            if name == "LOAD":
                self._load(req)
            elif name == "SAVE":
                self._gc()
                response = self._save()
            elif name == "CONN_LOOKUP":
                response = self._conn_lookup(req)
            elif name == "TABLE_REPLACE" and _str(req, "name") is None:
                raise Fail(errno.EINVAL, "no table name")
            else:
                raise NotModelled(name)
        except Fail as exc:
            raise OSError(exc.errno, exc.why)
        response["errno"] = 0
        try:
            packed = libnv.pack(response, self.byte_order)
        except libnv.PackError as exc:
            raise OSError(errno.ENOMEM, "reply does not pack: %s" % exc)
        address = memory.map_reply(packed)
        struct.pack_into(self.prefix + ("QQi4x" if self.pointer_size == 8 else "IIi"), karg, 0, address,
                         len(packed), 0)

    # --- LOAD (3.6, 3.7) -----------------------------------------------------------

    def _ifid(self, name, registered):
        """npf_ifmap_register: an id; names need not exist; 64 names per epoch.

        A slot keeps 15 characters (strlcpy to IFNAMSIZ) but the lookup strcmp()s the whole
        given name, so a longer name never finds its slot and takes a new one each time.
        """
        if name in self.ifmap:
            return self.ifmap_off + self.ifmap.index(name) + 1
        if len(self.ifmap) >= MAX_IFMAP:
            raise Fail(errno.EINVAL, "interface map full")
        self.ifmap.append(name[:15])
        registered.append(name)
        return self.ifmap_off + len(self.ifmap)

    def _load(self, req):
        """npfctl_load: params, ALGs, tables, procedures, NAT rules, rules, connections, then the swap (3.7)."""
        flush = req.get("flush") is True
        params = self._checked_params(req)
        config = {"algs": _nvlist_array(req, "algs")}
        for alg in config["algs"]:
            if _str(alg, "name") not in ALGS:  # npf_alg_construct finds (or autoloads) no such module
                raise Fail(errno.EINVAL, "ALG %r" % _str(alg, "name"))
        for section, limit in (("tables", MAX_TABLES), ("rprocs", MAX_RPROCS), ("nat", MAX_RULES),
                               ("rules", MAX_RULES)):
            config[section] = _nvlist_array(req, section)
            if len(config[section]) > limit:
                raise Fail(errno.E2BIG, "too many %s" % section)
            if section == "tables":
                self._check_tables(config["tables"])
            elif section == "rprocs" and any(_str(rproc, "name") is None for rproc in config["rprocs"]):
                raise Fail(errno.EINVAL, "rule procedure without a name")  # npf_rproc_create
            elif section == "nat":
                self._check_rules(config["nat"], None, config["tables"])
            elif section == "rules":
                self._check_rules(config["rules"], [_str(rproc, "name") for rproc in config["rprocs"]], None)
        conn_list = _nvlist_array(req, "conn-list")
        policies = self._nat_policies(config["nat"], bool(conn_list))
        conns = self._import_all(conn_list, policies) if conn_list else None
        # The swap: nothing above changed the running state except interface names and counters.
        if conns is not None:
            for conn in self.conns:  # npf_conn_load: the old database is flushed through G/C
                self._release(conn)
            self.conns, self.conndb = conns
        elif not flush:
            self._inherit_nat(policies)
        self.config = config
        self.config["nat"] = [dict(rule, **{"nat-policy": policy}) for policy, rule in policies]
        self.params.update(params)
        self.default_pass = flush
        if flush:
            self.tracking = False
            self.ifmap = []
            self.ifmap_off += MAX_IFMAP
            self.port_pool = set()
        else:
            self.tracking = True

    @staticmethod
    def _checked_params(req):
        """npf_mk_params(validate): every pair a NUMBER (EINVAL), a registered name (ENOENT), in range (EINVAL).

        Values are read as a C int, the low 32 bits of the NUMBER.
        """
        params = req.get("params")
        if not isinstance(params, dict):
            return {}  # dnvlist_get_nvlist: absent, or of another type
        checked = {}
        for name, value in params.items():
            if not isinstance(value, int) or isinstance(value, bool):
                raise Fail(errno.EINVAL, "param %s is not a number" % name)
            if name not in PARAMS:
                raise Fail(errno.ENOENT, "invalid parameter `%s`" % name)
            value &= 0xFFFFFFFF
            value = value - (1 << 32) if value > INT_MAX else value
            _default, low, high = PARAMS[name]
            if not low <= value <= high:
                raise Fail(errno.EINVAL, "invalid parameter `%s` value %d" % (name, value))
            checked[name] = value
        return checked

    def _check_rules(self, rules, rprocs, tables):
        """npf_mk_singlerule per rule: its interface registered (npf_rule_alloc), its procedure among
        ``rprocs`` (None for NAT rules: they may have none), BPF code only; then unique names for
        rules (npf_mk_rules), a known table id for unnamed NAT rules (npf_mk_singlenat)."""
        names = set()
        for rule in rules:
            ifname = _str(rule, "ifname")
            if ifname is not None:
                self._ifid(ifname, [])
            rproc = _str(rule, "rproc")
            if rproc is not None and (rprocs is None or rproc not in rprocs):
                raise Fail(errno.EINVAL, "no rule procedure %r" % rproc)
            if _bin(rule, "code") is not None and _num(rule, "code-type", UINT64_MAX) != NPF_CODE_BPF:
                raise Fail(ENOTSUP, "rule code is not BPF")
            name = _str(rule, "name")
            if tables is None and name is not None:
                if name in names:
                    raise Fail(errno.EEXIST, "duplicate rule name")
                names.add(name)
            if tables is not None and name is None and "nat-table-id" in rule:
                if _num(rule, "nat-table-id", UINT64_MAX) not in [_num(table, "id") for table in tables]:
                    raise Fail(errno.EINVAL, "no table %r" % rule["nat-table-id"])

    @staticmethod
    def _check_tables(tables):
        """npf_mk_table per table: a name, then npf_table_check (id, type, name), then const data."""
        ids, names = set(), set()
        for table in tables:
            name = _str(table, "name")
            if name is None:
                raise Fail(errno.EINVAL, "table without name")
            table_id = _num(table, "id", UINT64_MAX)
            if table_id >= len(tables):
                raise Fail(errno.EINVAL, "table id %d not below the %d tables" % (table_id, len(tables)))
            if table_id in ids:
                raise Fail(errno.EEXIST, "duplicate table id %d" % table_id)
            table_type = _num(table, "type", UINT64_MAX)
            if table_type not in NPF_TABLE_TYPES:
                raise Fail(errno.EINVAL, "table type %d" % table_type)
            if len(name.encode()) >= 32:
                raise Fail(ENAMETOOLONG, "table name too long")
            if name in names:
                raise Fail(errno.EEXIST, "duplicate table")
            if table_type == NPF_TABLE_CONST and _bin(table, "data") is None:
                raise Fail(errno.EINVAL, "const table without data")
            ids.add(table_id)
            names.add(name)

    @staticmethod
    def _nat_policies(nat_rules, with_conns):
        """[(policy id, rule)]: request ids when loading connections, else 1, 2... in reverse order."""
        if with_conns:
            return [(_num(rule, "nat-policy"), rule) for rule in nat_rules]
        count = len(nat_rules)
        return [(count - index, rule) for index, rule in enumerate(nat_rules)]

    @staticmethod
    def _policy_fields(rule):
        return tuple(rule.get(field) for field in ("type", "flags", "nat-addr", "nat-mask", "nat-port",
                                                   "nat-table-id", "nat-algo"))

    def _inherit_nat(self, policies):
        """A config-only load keeps NAT connections whose policy compares equal; the others go."""
        old = dict((_num(rule, "nat-policy"), self._policy_fields(rule)) for rule in self.config["nat"])
        new = {}
        for policy, rule in policies:
            new.setdefault(self._policy_fields(rule), policy)
        for conn in list(self.conns):
            if conn.nat is None:
                continue
            fields = old.get(conn.nat.policy)
            if fields in new:
                conn.nat.policy = new[fields]
            else:
                self._destroy(conn)

    def _destroy(self, conn):
        self.conns.remove(conn)
        self.conndb.pop(conn.forw, None)
        self.conndb.pop(conn.back, None)
        self._release(conn)

    def _release(self, conn, pool=None):
        """npf_conn_destroy: counted, and its NAT entry gives its port back (npf_nat_destroy)."""
        self.stats[CONN_DESTROY] += 1
        if conn.nat is not None:
            self._release_nat(conn.nat, self.port_pool if pool is None else pool)

    def _release_nat(self, entry, pool):
        self.stats[NAT_DESTROY] += 1
        if entry.reserved_port is not None:
            pool.discard(entry.reserved_port)

    def _import_all(self, conn_list, policies):
        by_policy = dict(policies)
        conns, conndb, pool = [], {}, set(self.port_pool)
        registered = []
        for index, record in enumerate(conn_list):
            self.stats[CONN_CREATE] += 1
            try:
                conn = self._import(record, by_policy, pool, registered)
                for key in (conn.forw, conn.back):
                    if key in conndb:
                        raise Fail(errno.EINVAL, "duplicate key")
                    conndb[key] = conn
            except Fail as exc:
                self.stats[CONN_DESTROY] += 1
                for imported in conns:  # the new database is flushed through G/C (npf_mk_connlist)
                    self._release(imported, pool)
                raise Fail(errno.EINVAL, "connection %d: %s" % (index, exc.why))
            conn.order = index
            conns.append(conn)
        self.port_pool = pool
        return conns, conndb

    def _import(self, record, policies, pool, registered):
        conn = Connection()
        conn.alen = _num(record, "alen")
        conn.proto = _num(record, "proto")
        conn.flags = _num(record, "flags") & 0xF
        conn.last = self.clock.now()
        ifname = _str(record, "ifname")
        conn.ifid = self._ifid(ifname, registered) if ifname is not None else 0
        state = _bin(record, "state")
        if state is None or len(state) != 36:
            raise Fail(errno.EINVAL, "state is not a 36-byte binary")
        conn.state = state
        nat = record.get("nat")
        if isinstance(nat, dict):
            conn.nat = self._import_nat(nat, policies, pool, registered)
        try:
            conn.forw = self._key(record.get("forw-key"), registered)
            conn.back = self._key(record.get("back-key"), registered)
            if conn.forw[0] != conn.alen or conn.back[0] != conn.alen:
                raise Fail(errno.EINVAL, "key address length differs from alen")
        except Fail:
            if conn.nat is not None:
                self._release_nat(conn.nat, pool)
            raise
        if self.strict:
            self._undefined_behaviour(conn)
        return conn

    def _undefined_behaviour(self, conn):
        nst_state = struct.unpack_from(self.prefix + "I", conn.state)[0]
        problems = []
        if conn.alen not in (4, 16):
            problems.append("alen %d writes past the connection allocation" % conn.alen)
        if conn.proto not in (1, 6, 17):
            problems.append("protocol %d has no state tracking (DIAGNOSTIC panic in npf_state_etime)" % conn.proto)
        if conn.forw[1] != conn.proto or conn.back[1] != conn.proto:
            problems.append("key protocol differs from the connection's")
        if nst_state >= (12 if conn.proto == 6 else 3):
            problems.append("nst_state %d indexes past the timeout table" % nst_state)
        if conn.nat is not None and conn.nat.alen != conn.alen:
            problems.append("NAT alen %d differs from alen %d" % (conn.nat.alen, conn.alen))
        if problems:
            raise WouldCorrupt("; ".join(problems))

    def _import_nat(self, nat, policies, pool, registered):
        entry = NatEntry()
        entry.policy = _num(nat, "nat-policy", UINT64_MAX)
        if entry.policy not in policies:
            raise Fail(errno.EINVAL, "no NAT policy %d in the request" % entry.policy)
        ifname = _str(nat, "ifname")
        entry.ifid = self._ifid(ifname, registered) if ifname is not None else 0
        entry.alen = _num(nat, "alen")
        if not 1 <= entry.alen <= 16:
            raise Fail(errno.EINVAL, "NAT alen %d" % entry.alen)
        entry.oaddr, entry.taddr = _bin(nat, "oaddr"), _bin(nat, "taddr")
        if entry.oaddr is None or entry.taddr is None or len(entry.oaddr) != entry.alen \
                or len(entry.taddr) != entry.alen:
            raise Fail(errno.EINVAL, "NAT addresses are not alen bytes")
        entry.oport = _num(nat, "oport") & 0xFFFF
        entry.tport = _num(nat, "tport") & 0xFFFF
        entry.reserved_port = None
        if _num(policies[entry.policy], "flags") & NPF_NAT_PORTMAP and entry.tport:
            if self.diagnostic:
                raise KernelPanic("KASSERT: port map reservation with address length 0")
            port = struct.unpack(">H", struct.pack(self.prefix + "H", entry.tport))[0]
            if not self.params["portmap.min_port"] <= port <= self.params["portmap.max_port"]:
                raise Fail(errno.EINVAL, "NAT port %d outside the port map" % port)
            if port in pool:
                raise Fail(errno.EINVAL, "NAT port %d already taken" % port)
            pool.add(port)
            entry.reserved_port = port
        entry.imported = True  # nt_alen stays 0: the export of this entry fails (3.6)
        self.stats[NAT_CREATE] += 1
        return entry

    def _key(self, key, registered):
        """npf_connkey_import: (alen, proto, di, ifid, sport, dport, saddr, daddr)."""
        if not isinstance(key, dict):
            raise Fail(errno.EINVAL, "missing key")
        proto = _num(key, "proto")
        if proto >= 256:
            raise Fail(errno.EINVAL, "key proto %d" % proto)
        saddr, daddr = _bin(key, "saddr"), _bin(key, "daddr")
        if saddr is None or daddr is None or len(saddr) != len(daddr) or not 1 <= len(saddr) <= 16:
            raise Fail(errno.EINVAL, "key addresses")
        ifname = _str(key, "ifname")
        ifid = self._ifid(ifname, registered) if ifname is not None else 0
        return (len(saddr), proto, _num(key, "di") & 3, ifid, _num(key, "sport") & 0xFFFF,
                _num(key, "dport") & 0xFFFF, saddr, daddr)

    # --- SAVE and CONN_LOOKUP (3.3, 3.8) -----------------------------------------------

    def _timeout(self, conn):
        """npf_state_etime: the params in force name the timeout of the connection's state (3.4)."""
        nst_state = struct.unpack_from(self.prefix + "I", conn.state)[0]
        names = TCP_TIMEOUT_PARAMS if conn.proto == 6 else GENERIC_TIMEOUT_PARAMS
        return self.params[names[nst_state]] if nst_state < len(names) else 0

    def _gc(self):
        now = self.clock.now()
        for conn in list(self.conns):
            if now - conn.last > self._timeout(conn):
                self._destroy(conn)

    def _ifname(self, ifid):
        """npf_ifmap_copyname: ids left over from before a flush name nothing any more."""
        slot = ifid - self.ifmap_off - 1
        if not ifid or not 0 <= slot < MAX_IFMAP:
            return UNKNOWN_IFNAME
        return self.ifmap[slot] if slot < len(self.ifmap) else ""  # an unused slot holds an empty name

    def _export_key(self, key):
        alen, proto, di, ifid, sport, dport, saddr, daddr = key
        # npf_connkey_getkey reads the protocol from bits 16..23 of word 0, but setkey stored
        # it at bit 20 (npf_connkey.c 1.2, rmind/npf): the export mixes in the direction bits.
        word0 = (alen >> 2) << 28 | proto << 20 | di << 18 | ifid
        out = {"proto": (word0 >> 16) & 0xFF, "sport": sport, "dport": dport, "saddr": saddr, "daddr": daddr}
        # npf_connkey_getckey masks 20 bits, direction included: any di gives an unknown id (3.6).
        if di or ifid:
            out["ifname"] = UNKNOWN_IFNAME if di else self._ifname(ifid)
        if di:
            out["di"] = di
        return out

    def _export_conn(self, conn):
        out = {"flags": conn.flags, "proto": conn.proto}
        if conn.ifid:
            out["ifname"] = self._ifname(conn.ifid)
        out["state"] = conn.state
        out["forw-key"] = self._export_key(conn.forw)
        out["back-key"] = self._export_key(conn.back)
        out["alen"] = conn.alen
        if conn.nat is not None:
            nat = conn.nat
            out["nat"] = {"oaddr": b"" if nat.imported else nat.oaddr, "oport": nat.oport,
                          "taddr": b"" if nat.imported else nat.taddr, "tport": nat.tport, "nat-policy": nat.policy}
            if nat.ifid:
                out["nat"]["ifname"] = self._ifname(nat.ifid)
            out["nat"]["alen"] = 0 if nat.imported else nat.alen
        return out

    def _save(self):
        response = {"version": NPF_VERSION, "params": dict(self.params), "params-defaults": dict(PARAMS_DEFAULTS)}
        live = [conn for conn in self.conns if conn.flags & CONN_ACTIVE] if self.tracking else []
        if live:
            response["conn-list"] = [self._export_conn(conn) for conn in live]
        for section in ("rules", "nat", "tables", "rprocs", "algs"):
            items = self.config[section]
            if section == "tables":
                items = [{"name": t.get("name"), "type": _num(t, "type"), "id": _num(t, "id")} for t in items]
            if items:
                response[section] = items
        response["active"] = self.active
        return response

    def _conn_lookup(self, req):
        key = req.get("key")
        try:
            kernel_key = self._key(key, [])
        except Fail:
            raise Fail(errno.EINVAL, "bad key")
        self._gc()
        conn = self.conndb.get(kernel_key)  # the database itself: only packets check the tracking switch
        if conn is None or not conn.flags & CONN_ACTIVE:
            raise Fail(errno.ESRCH, "no connection")
        out = self._export_conn(conn)
        out["flow"] = 0 if kernel_key == conn.forw else 1
        return out

    # --- helpers for tests -----------------------------------------------------------

    def match_packet(self, ifname, di, proto, saddr, sport, daddr, dport):
        """The connection a packet would find, keyed as the running params compose keys, or None.

        npf_conn_lookup: tracking on, the key found, then npf_conn_check: ACTIVE and not expiring,
        and for a connection bound to an interface, the packet on that interface, travelling in
        the flow its direction gives (the first packet's direction, in the flags, is forward).
        Ports are host-order readings of network-order words, as in the nvlists.
        """
        packet_ifid = self.ifmap_off + self.ifmap.index(ifname) + 1 if ifname in self.ifmap else 0
        if self.params["state.key.interface"] and not packet_ifid:
            return None
        key = (len(saddr), proto, di if self.params["state.key.direction"] else 0,
               packet_ifid if self.params["state.key.interface"] else 0, sport, dport, bytes(saddr), bytes(daddr))
        conn = self.conndb.get(key) if self.tracking else None
        if conn is None or not conn.flags & CONN_ACTIVE:
            return None
        if conn.ifid:
            forward = key == conn.forw
            if forward != ((conn.flags & PFIL_ALL) == di) or conn.ifid != packet_ifid:
                return None
        return conn

    def add_connections(self, records):
        """Connections made by traffic: LOAD-form records imported beside the existing ones.

        Only while a configuration is loaded (tracking on): a kernel without one makes none.
        All or nothing, like LOAD; raises ValueError with the reason.
        """
        if not self.tracking:
            raise ValueError("NPF tracks no connections: no configuration is loaded")
        policies = dict(self._nat_policies(self.config["nat"], True))
        added, conndb, pool = [], dict(self.conndb), set(self.port_pool)
        for index, record in enumerate(records):
            try:
                conn = self._import(record, policies, pool, [])
            except Fail as exc:
                raise ValueError("connection %d: %s" % (index, exc.why))
            if conn.forw in conndb or conn.back in conndb:
                raise ValueError("connection %d: its key is taken" % index)
            conndb[conn.forw] = conndb[conn.back] = conn
            conn.flags |= CONN_ACTIVE
            conn.order = len(self.conns) + index
            added.append(conn)
        self.stats[CONN_CREATE] += len(added)
        self.conns.extend(added)
        self.conndb, self.port_pool = conndb, pool

    @property
    def connection_count(self):
        return len(self.conns)
