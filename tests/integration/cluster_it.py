"""Process-level cluster harness for etcd or cairn (same flags), plus a
client workload that records a history for linearize.py.

* ``Cluster(binary, n)``: N members on 127.0.0.1, client and peer ports
  picked free; after start-up, ``ss -ltnp`` must show the member's own PID on
  both of its ports (``Member.assert_owned``), and every request this module
  sends goes to a port of a member it started itself.
* member faults: ``kill9``, ``sigstop``/``sigcont``, ``start`` again on the
  same data dir and ports; ``member_add``/``member_remove`` through etcdctl;
  ``leader()``/``wait_leader()`` through Maintenance.Status (bounded).
* ``Workload``: client threads (bounded count and duration) doing
  get/put/delete/compare-and-set on a few keys, each op recorded with
  monotonic-ns invoke/return times (errors and timeouts: indeterminate);
  watcher threads that resume from last revision + 1 on another member after
  an error; ``finish()`` writes a sentinel into the watched range, waits
  (bounded) for the watchers to see it, reads the whole write log (a watch
  from revision 1) and returns a ``linearize.History``.
* ``cluster_supported(binary)``: False (with the reason) while the binary
  refuses a multi-member --initial-cluster ("replication is not built yet").
* network partitions (``Partitioner``) need root and ``ip netns``; see there.
"""

import os
import random
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid

import grpc

from cairn_it import (ETCDCTL_BIN, _listeners, _tmp_root, is_etcd,
                      pick_free_ports, port_is_free, rpc_pb2, rpc_pb2_grpc)
import linearize

START_TIMEOUT = 30.0
RPC_TIMEOUT = 1.0


class ClusterError(RuntimeError):
    pass


# --------------------------------------------------------------------------
# members
# --------------------------------------------------------------------------

class Member:
    def __init__(self, cluster, name, client_port, peer_port, state="new",
                 host="127.0.0.1", netns=None):
        self.cluster = cluster
        self.host = host                   # the member's IP
        self.netns = netns                 # network namespace (Partitioner)
        self.name = name
        self.client_port = client_port
        self.peer_port = peer_port
        self.state = state                 # --initial-cluster-state
        self.initial_cluster = None        # set by the cluster
        self.dir = os.path.join(cluster.root, name)
        self.data_dir = os.path.join(self.dir, "data")
        self.log_path = os.path.join(self.dir, "member.log")
        os.makedirs(self.dir, exist_ok=True)
        self.proc = None
        self.stopped = False               # SIGSTOPped by us
        self.id = None                     # raft member id (from Status)
        self.extra_args = []               # this member's own extra flags
        self._log = None

    @property
    def client_url(self):
        return "http://%s:%d" % (self.host, self.client_port)

    @property
    def peer_url(self):
        return "%s://%s:%d" % (self.cluster.peer_scheme, self.host, self.peer_port)

    @property
    def endpoint(self):
        return "%s:%d" % (self.host, self.client_port)

    def listeners(self, port):
        """(ss lines, PIDs) listening on port, in the member's namespace."""
        if self.netns is None:
            return _listeners(port)
        out = subprocess.run(
            ["ip", "netns", "exec", self.netns, "ss", "-ltnpH", "sport = :%d" % port],
            capture_output=True, text=True, timeout=10, check=False).stdout
        lines = [l for l in out.splitlines() if l.strip()]
        return lines, set(int(p) for p in re.findall(r"pid=(\d+)", out))

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def cmdline(self):
        c = self.cluster
        return [c.binary,
                "--name", self.name,
                "--data-dir", self.data_dir,
                "--listen-client-urls", self.client_url,
                "--advertise-client-urls", self.client_url,
                "--listen-peer-urls", self.peer_url,
                "--initial-advertise-peer-urls", self.peer_url,
                "--initial-cluster", self.initial_cluster,
                "--initial-cluster-state", self.state,
                "--initial-cluster-token", c.token,
                "--heartbeat-interval", str(c.heartbeat),
                "--election-timeout", str(c.election)] + list(c.extra_args) \
            + list(self.extra_args)

    def log_tail(self, n=30):
        try:
            with open(self.log_path, "rb") as f:
                return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-n:])
        except OSError:
            return "<no log>"

    def spawn(self):
        if self.running():
            raise ClusterError("%s already running (pid %d)" % (self.name, self.pid))
        for p in (self.client_port, self.peer_port):
            if self.listeners(p)[0] or (self.netns is None and not port_is_free(p)):
                raise ClusterError("%s: port %d is taken by someone else: %r"
                                   % (self.name, p, self.listeners(p)[0]))
        self._log = open(self.log_path, "ab")
        self._log.write(("\n=== start: %s\n" % " ".join(self.cmdline())).encode())
        self._log.flush()
        self.proc = subprocess.Popen(
            (["ip", "netns", "exec", self.netns] if self.netns else [])
            + self.cmdline(), stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, cwd=self.dir, start_new_session=True)
        self.stopped = False

    def owned(self):
        """True if both ports are listened on by our process (and only it)."""
        if not self.running():
            return False
        for p in (self.client_port, self.peer_port):
            lines, pids = self.listeners(p)
            if pids and pids != {self.proc.pid}:
                self._kill()
                raise ClusterError("%s: port %d is owned by someone else: %r"
                                   % (self.name, p, lines))
            if pids != {self.proc.pid}:
                return False
        return True

    def assert_owned(self):
        for p in (self.client_port, self.peer_port):
            lines, pids = self.listeners(p)
            if pids != {self.proc.pid}:
                raise ClusterError("%s: listener on %d is %r, expected pid %d"
                                   % (self.name, p, lines, self.proc.pid))

    def wait_ready(self, timeout=START_TIMEOUT):
        """Bounded wait for our PID on both ports and a Status answer."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if not self.running():
                raise ClusterError("%s exited with %s during start-up\n%s"
                                   % (self.name, self.proc.returncode, self.log_tail()))
            if self.owned():
                try:
                    st = self.status(timeout=1.0)
                    self.id = st.header.member_id
                    self.assert_owned()
                    return st
                except grpc.RpcError as e:
                    last = e
            time.sleep(0.05)
        raise ClusterError("%s not ready after %.0fs (%r)\n%s"
                           % (self.name, timeout, last, self.log_tail()))

    def start(self, timeout=START_TIMEOUT):
        """(Re)start on the same data dir and ports; waits until ready."""
        self.spawn()
        return self.wait_ready(timeout)

    def status(self, timeout=RPC_TIMEOUT):
        if not self.running() or self.stopped:
            raise ClusterError("%s is not serving" % self.name)
        with grpc.insecure_channel(self.endpoint) as ch:
            return rpc_pb2_grpc.MaintenanceStub(ch).Status(
                rpc_pb2.StatusRequest(), timeout=timeout)

    # -- faults ------------------------------------------------------------
    def kill9(self):
        if self.running():
            if self.stopped:
                self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=15)
        self.stopped = False
        self._close_log()

    def sigstop(self):
        if self.running():
            self.proc.send_signal(signal.SIGSTOP)
            self.stopped = True

    def sigcont(self):
        if self.running():
            self.proc.send_signal(signal.SIGCONT)
        self.stopped = False

    def stop(self, timeout=15):
        if self.running():
            if self.stopped:
                self.sigcont()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._kill()
        self._close_log()
        return self.proc.returncode if self.proc else None

    def _kill(self):
        if self.running():
            self.proc.kill()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass

    def _close_log(self):
        if self._log is not None:
            self._log.close()
            self._log = None

    def __repr__(self):
        return "<Member %s pid=%s %s>" % (self.name, self.pid, self.endpoint)


# --------------------------------------------------------------------------
# cluster
# --------------------------------------------------------------------------

class Cluster:
    def __init__(self, binary, n=3, heartbeat=50, election=500, extra_args=(),
                 net=None, peer_scheme="http"):
        """net: a Partitioner; members then run in its namespaces.
        peer_scheme: "https" for peer TLS (flags through extra_args)."""
        if n < 1:
            raise ValueError("n >= 1")
        self.net = net
        self.peer_scheme = peer_scheme
        self.binary = str(binary)
        self.heartbeat, self.election = heartbeat, election
        self.extra_args = list(extra_args)
        self.token = "cit-" + uuid.uuid4().hex[:12]
        self.root = tempfile.mkdtemp(prefix="cairn-cluster-", dir=_tmp_root())
        if net is None:
            ports = pick_free_ports(2 * n)
            self.members = [Member(self, "m%d" % i, ports[2 * i], ports[2 * i + 1])
                            for i in range(n)]
        else:
            # each member alone in its namespace: fixed ports are free there
            self.members = [Member(self, "m%d" % i, 2379, 2380, host=h, netns=ns)
                            for i, (ns, h) in enumerate(net.add_hosts(n))]
        ic = ",".join("%s=%s" % (m.name, m.peer_url) for m in self.members)
        for m in self.members:
            m.initial_cluster = ic

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cleanup()

    def start(self, timeout=START_TIMEOUT):
        """Start every member at once (a new cluster needs a quorum to serve)."""
        for m in self.members:
            m.spawn()
        for m in self.members:
            m.wait_ready(timeout)
        self.wait_leader(timeout)
        return self

    def live(self):
        return [m for m in self.members if m.running() and not m.stopped]

    def by_id(self, mid):
        for m in self.members:
            if m.id == mid:
                return m
        return None

    def leader(self):
        """The member that a majority of the live members name as leader."""
        votes = {}
        for m in self.live():
            try:
                st = m.status(timeout=RPC_TIMEOUT)
            except (grpc.RpcError, ClusterError):
                continue
            m.id = st.header.member_id
            if st.leader:
                votes[st.leader] = votes.get(st.leader, 0) + 1
        for lid, v in votes.items():
            if v > len(self.members) // 2 and self.by_id(lid) is not None:
                ld = self.by_id(lid)
                if ld in self.live():
                    return ld
        return None

    def wait_leader(self, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ld = self.leader()
            if ld is not None:
                return ld
            time.sleep(0.1)
        raise ClusterError("no leader after %.0fs; logs:\n%s" % (
            timeout, "\n".join("--- %s\n%s" % (m.name, m.log_tail(10))
                               for m in self.members)))

    def followers(self, leader=None):
        leader = leader or self.wait_leader()
        return [m for m in self.live() if m is not leader]

    def endpoints(self):
        return [m.endpoint for m in self.members]

    # -- membership (etcdctl) ------------------------------------------------
    def etcdctl(self, *args, via=None, timeout=15):
        via = via or self.wait_leader()
        cp = subprocess.run([ETCDCTL_BIN, "--endpoints", via.client_url,
                             "--command-timeout", "5s"] + list(args),
                            capture_output=True, text=True, timeout=timeout,
                            env=dict(os.environ, ETCDCTL_API="3"))
        if cp.returncode != 0:
            raise ClusterError("etcdctl %s: %s%s" % (" ".join(args), cp.stdout, cp.stderr))
        return cp.stdout

    def member_add(self, timeout=START_TIMEOUT):
        """Add a member through etcdctl and start it (state existing)."""
        if self.net is None:
            cp, pp = pick_free_ports(2)
            m = Member(self, "m%d" % len(self.members), cp, pp, state="existing")
        else:
            (ns, h), = self.net.add_hosts(1)
            m = Member(self, "m%d" % len(self.members), 2379, 2380,
                       state="existing", host=h, netns=ns)
        # etcd refuses (before proposing anything) until every voting member
        # has been connected to the leader for 5 s: "unhealthy cluster"
        deadline = time.monotonic() + 20
        while True:
            try:
                out = self.etcdctl("member", "add", m.name, "--peer-urls", m.peer_url)
                break
            except ClusterError as e:
                if "unhealthy cluster" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        mo = re.search(r'ETCD_INITIAL_CLUSTER="([^"]*)"', out)
        if not mo:
            raise ClusterError("member add said: %s" % out)
        m.initial_cluster = mo.group(1)
        self.members.append(m)
        m.start(timeout)
        return m

    def member_remove(self, m):
        mid = m.id or m.status().header.member_id
        self.etcdctl("member", "remove", "%x" % mid,
                     via=next(x for x in self.live() if x is not m))
        m.stop()
        self.members.remove(m)

    def member_list(self):
        with grpc.insecure_channel(self.live()[0].endpoint) as ch:
            return rpc_pb2_grpc.ClusterStub(ch).MemberList(
                rpc_pb2.MemberListRequest(), timeout=5).members

    def cleanup(self):
        for m in self.members:
            try:
                m.stop(timeout=10)
            except Exception:
                m._kill()
        shutil.rmtree(self.root, ignore_errors=True)
        if self.net is not None:
            self.net.cleanup()

    def logs(self, n=20):
        return "\n".join("--- %s\n%s" % (m.name, m.log_tail(n)) for m in self.members)


_supported = {}


def cluster_supported(binary, timeout=10.0):
    """(True, "") if binary accepts a 3-member --initial-cluster; (False,
    reason) if it exits saying replication is not built yet."""
    binary = str(binary)
    if is_etcd(binary):
        return True, ""
    if binary in _supported:
        return _supported[binary]
    c = Cluster(binary, 3)
    try:
        m = c.members[0]
        m.spawn()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and m.running():
            time.sleep(0.1)
        text = m.log_tail(200)
        if not m.running() and "replication is not built yet" in text:
            r = (False, "%s refuses a 3-member --initial-cluster: replication "
                 "is not built yet" % binary)
        else:
            r = (True, "")
    finally:
        c.cleanup()
    _supported[binary] = r
    return r


# --------------------------------------------------------------------------
# workload
# --------------------------------------------------------------------------

def prefix_end(key):
    b = bytearray(key.encode())
    for i in range(len(b) - 1, -1, -1):
        if b[i] < 0xFF:
            b[i] += 1
            return bytes(b[: i + 1]).decode()
    return "\x00"


class Recorder:
    def __init__(self):
        self.lock = threading.Lock()
        self.ops = []
        self.next_id = 0

    def new(self, client, f, key, **kw):
        with self.lock:
            self.next_id += 1
            op = linearize.Op(self.next_id, client, f, key, time.monotonic_ns(),
                              None, "info", **kw)
            self.ops.append(op)
        return op


class _Conn:
    """A channel to one endpoint of the cluster; moves on after an error."""

    def __init__(self, endpoints, i):
        self.endpoints, self.i = endpoints, i
        self.ch = grpc.insecure_channel(self.endpoints[self.i % len(self.endpoints)])
        self.kv = rpc_pb2_grpc.KVStub(self.ch)

    def rotate(self):
        self.ch.close()
        self.i += 1
        self.ch = grpc.insecure_channel(self.endpoints[self.i % len(self.endpoints)])
        self.kv = rpc_pb2_grpc.KVStub(self.ch)

    def close(self):
        self.ch.close()


def do_op(kv, rec, client, f, key, value=None, cmp=None, expect=None,
          timeout=RPC_TIMEOUT):
    """Run one op and record it; returns the Op (status ok or info)."""
    if f == "put":
        op = rec.new(client, f, key, value=value)
        req = rpc_pb2.PutRequest(key=key.encode(), value=value.encode())
        call = kv.Put
    elif f == "get":
        op = rec.new(client, f, key)
        req = rpc_pb2.RangeRequest(key=key.encode())
        call = kv.Range
    elif f == "delete":
        op = rec.new(client, f, key)
        req = rpc_pb2.DeleteRangeRequest(key=key.encode())
        call = kv.DeleteRange
    else:
        op = rec.new(client, f, key, value=value, cmp=cmp, expect=expect)
        if cmp == "mod_rev":
            c = rpc_pb2.Compare(result=rpc_pb2.Compare.EQUAL,
                                target=rpc_pb2.Compare.MOD, key=key.encode(),
                                mod_revision=expect)
        else:
            c = rpc_pb2.Compare(result=rpc_pb2.Compare.EQUAL,
                                target=rpc_pb2.Compare.VALUE, key=key.encode(),
                                value=expect.encode())
        req = rpc_pb2.TxnRequest(compare=[c], success=[rpc_pb2.RequestOp(
            request_put=rpc_pb2.PutRequest(key=key.encode(), value=value.encode()))])
        call = kv.Txn
    try:
        resp = call(req, timeout=timeout)
    except grpc.RpcError as e:
        op.status, op.ret = "info", linearize.INF
        return op, e
    t = time.monotonic_ns()
    op.rev = resp.header.revision
    if f == "get":
        if resp.kvs:
            op.out = resp.kvs[0].value.decode()
            op.mod_rev = resp.kvs[0].mod_revision
        else:
            op.out, op.mod_rev = None, 0
    elif f == "delete":
        op.deleted = resp.deleted
    elif f == "txn":
        op.succeeded = resp.succeeded
    op.ret, op.status = t, "ok"
    return op, None


class Watcher:
    """Watches [key, range_end) from start_rev; after an error or a stall it
    resumes from last revision + 1 on the next endpoint (a new session)."""

    def __init__(self, name, endpoints, key, range_end, start_rev=1, first=0):
        self.name, self.endpoints = name, list(endpoints)
        self.key, self.range_end = key, range_end
        self.sessions = []
        self.last = None
        self.start_rev = start_rev
        self.i = first
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.call = None
        self.progress = time.monotonic()
        self.until = None
        self.errors = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _requests(self, req, done):
        yield req
        done.wait()

    def _run(self):
        for _ in range(1000):            # bounded number of sessions
            if self.stop.is_set():
                return
            start = self.last + 1 if self.last is not None else self.start_rev
            sess = {"start_rev": start, "events": [], "endpoint":
                    self.endpoints[self.i % len(self.endpoints)]}
            self.sessions.append(sess)
            done = threading.Event()
            req = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
                key=self.key.encode(), range_end=self.range_end.encode(),
                start_revision=start))
            ch = grpc.insecure_channel(sess["endpoint"])
            try:
                call = rpc_pb2_grpc.WatchStub(ch).Watch(self._requests(req, done))
                with self.lock:
                    self.call = call
                if self.stop.is_set():
                    call.cancel()
                for resp in call:
                    self.progress = time.monotonic()
                    for ev in resp.events:
                        kv = ev.kv
                        typ = "DELETE" if ev.type == 1 else "PUT"
                        sess["events"].append(
                            [kv.mod_revision, kv.key.decode(), typ,
                             kv.value.decode() if typ == "PUT" else None])
                        self.last = kv.mod_revision
                    if resp.canceled:
                        self.errors.append("canceled: %s" % resp.cancel_reason)
                        break
            except grpc.RpcError as e:
                self.errors.append("%s: %s" % (sess["endpoint"], e.code()))
            finally:
                done.set()
                ch.close()
            self.i += 1
            if not self.stop.is_set():
                time.sleep(0.1)

    def start(self):
        self.thread.start()

    def kick(self):
        """Cancel the current session (it resumes on the next endpoint)."""
        with self.lock:
            if self.call is not None:
                self.call.cancel()

    def close(self, timeout=10):
        self.stop.set()
        self.kick()
        self.thread.join(timeout)

    def record(self):
        return {"watcher": self.name, "key": self.key, "range_end": self.range_end,
                "until": self.until,
                "sessions": [{"start_rev": s["start_rev"], "events": s["events"]}
                             for s in self.sessions]}


class Workload:
    """``clients`` threads for ``duration`` seconds (and at most ``max_ops``
    ops each) over ``keys``; ``watchers`` prefix watchers over ``prefix``."""

    def __init__(self, cluster, keys, clients=4, duration=8.0, max_ops=5000,
                 watchers=2, prefix="lin/", seed=None, op_timeout=RPC_TIMEOUT):
        self.cluster = cluster
        self.keys = list(keys)
        self.nclients, self.duration, self.max_ops = clients, duration, max_ops
        self.prefix = prefix
        self.seed = seed if seed is not None else random.randrange(1 << 30)
        self.op_timeout = op_timeout
        self.rec = Recorder()
        self.threads = []
        self.watchers = [Watcher("w%d" % i, cluster.endpoints(), prefix,
                                 prefix_end(prefix), 1, first=i)
                         for i in range(watchers)]
        self.errors = {}

    def _client(self, cid):
        rnd = random.Random(self.seed * 1000 + cid)
        conn = _Conn(self.cluster.endpoints(), cid)
        seen = {}                   # key -> (value, mod_rev) last observed
        deadline = time.monotonic() + self.duration
        n = 0
        try:
            while time.monotonic() < deadline and n < self.max_ops:
                n += 1
                key = rnd.choice(self.keys)
                f = rnd.choices(["get", "put", "delete", "txn"], [40, 35, 8, 17])[0]
                val = "c%d-%d" % (cid, n)
                if f == "txn":
                    v, mr = seen.get(key, (None, 0))
                    if v is not None and rnd.random() < 0.4:
                        op, err = do_op(conn.kv, self.rec, cid, f, key, val, "value", v,
                                        timeout=self.op_timeout)
                    else:
                        op, err = do_op(conn.kv, self.rec, cid, f, key, val, "mod_rev", mr,
                                        timeout=self.op_timeout)
                else:
                    op, err = do_op(conn.kv, self.rec, cid, f, key, val,
                                    timeout=self.op_timeout)
                if err is not None:
                    code = str(err.code())
                    self.errors[code] = self.errors.get(code, 0) + 1
                    conn.rotate()
                    time.sleep(0.05)
                    continue
                if f == "get":
                    seen[key] = (op.out, op.mod_rev)
                elif f == "put" or (f == "txn" and op.succeeded):
                    seen[key] = (val, op.rev)
        finally:
            conn.close()

    def start(self):
        for w in self.watchers:
            w.start()
        for c in range(self.nclients):
            t = threading.Thread(target=self._client, args=(c,), daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def join(self):
        for t in self.threads:
            t.join(self.duration + 10 * self.op_timeout + 30)
        alive = [t for t in self.threads if t.is_alive()]
        if alive:
            raise ClusterError("%d client threads did not finish" % len(alive))

    def finish(self, timeout=20.0):
        """After the clients: sentinel write, drain watchers, read the log."""
        deadline = time.monotonic() + timeout
        ld = self.cluster.wait_leader(max(1.0, deadline - time.monotonic()))
        sentinel = None
        with grpc.insecure_channel(ld.endpoint) as ch:
            kv = rpc_pb2_grpc.KVStub(ch)
            for _ in range(20):
                op, err = do_op(kv, self.rec, -1, "put", self.prefix + "sentinel",
                                "end-%d" % self.seed, timeout=2.0)
                if err is None:
                    sentinel = op.rev
                    break
                time.sleep(0.2)
            if sentinel is None:
                raise ClusterError("sentinel put failed: %s" % err)
        for w in self.watchers:
            kicked = time.monotonic()
            while time.monotonic() < deadline and (w.last or 0) < sentinel:
                if time.monotonic() - max(w.progress, kicked) > 3.0:
                    w.kick()                 # stalled (e.g. a stopped member)
                    kicked = time.monotonic()
                time.sleep(0.05)
            if (w.last or 0) >= sentinel:
                w.until = sentinel
            w.close()
        log = read_log(ld.endpoint, sentinel, max(2.0, deadline - time.monotonic()))
        h = linearize.History(self.rec.ops, [w.record() for w in self.watchers],
                              log, {"rev": 1, "kvs": {}})
        return h


def read_log(endpoint, upto, timeout=10.0):
    """All events from revision 1 to ``upto`` (a watch over the whole key
    space; the store must not be compacted)."""
    events = []
    done = threading.Event()
    req = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
        key=b"\x00", range_end=b"\x00", start_revision=1))

    def reqs():
        yield req
        done.wait(timeout)

    with grpc.insecure_channel(endpoint) as ch:
        call = rpc_pb2_grpc.WatchStub(ch).Watch(reqs(), timeout=timeout)
        try:
            for resp in call:
                for ev in resp.events:
                    typ = "DELETE" if ev.type == 1 else "PUT"
                    events.append([ev.kv.mod_revision, ev.kv.key.decode(), typ,
                                   ev.kv.value.decode() if typ == "PUT" else None])
                if resp.canceled:
                    raise ClusterError("log watch canceled: %s" % resp.cancel_reason)
                if events and events[-1][0] >= upto:
                    break
        finally:
            done.set()
            call.cancel()
    if not events or events[-1][0] < upto:
        raise ClusterError("log read up to %s only (%d events)" % (
            events[-1][0] if events else None, len(events)))
    return {"start_rev": 1, "events": events, "rev": upto}


# --------------------------------------------------------------------------
# network partitions (root + ip netns)
# --------------------------------------------------------------------------

def _run(*cmd):
    cp = subprocess.run(list(cmd), capture_output=True, text=True, timeout=20)
    if cp.returncode != 0:
        raise ClusterError("%s: %s" % (" ".join(cmd), cp.stderr.strip()))
    return cp.stdout


def netns_unavailable():
    """None if partitions can be made here, else the reason why not."""
    if os.geteuid() != 0:
        return "network partitions need root (ip netns)"
    for tool in ("ip", "ss"):
        if shutil.which(tool) is None:
            return "%s is not installed" % tool
    probe = "citprobe%d" % os.getpid()
    try:
        _run("ip", "netns", "add", probe)
        try:
            _run("ip", "-n", probe, "link", "add", "a0", "type", "veth",
                 "peer", "name", "b0")
            _run("ip", "-n", probe, "addr", "add", "10.254.254.1/24", "dev", "a0")
            _run("ip", "-n", probe, "route", "add", "blackhole", "10.254.254.2/32")
        finally:
            _run("ip", "netns", "del", probe)
    except (ClusterError, OSError, subprocess.TimeoutExpired) as e:
        return "ip netns / veth / blackhole routes do not work here: %s" % e
    return None


class Partitioner:
    """Namespaces of our own: one per member, joined by a bridge that lives
    in one more namespace, plus a veth into the host (the only host-side
    change: an interface on a private /24 that no host route uses) so that
    the test's clients reach the members' client URLs.  Partitions drop the
    packets between two members' addresses with a blackhole route for the
    receiver's /32 in the sender's namespace (a tc filter would do the same,
    but this machine's kernel has no tc drop action: act_gact is missing):
    client traffic (to and from the host's address) is untouched.  ``cleanup`` deletes every namespace (and so
    every veth) it made."""

    def __init__(self):
        tag = "cit%d%s" % (os.getpid() % 100000, uuid.uuid4().hex[:3])
        self.tag = tag
        self.bridge_ns = tag + "br"
        self.namespaces = []
        self.hosts = {}                      # ns -> ip
        self.cuts = []                       # (ns, dropped destination)
        self.host_if = tag + "h"
        self.subnet = self._free_subnet()
        self.next_ip = 2
        try:
            self._mk_ns(self.bridge_ns)
            _run("ip", "-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
            _run("ip", "-n", self.bridge_ns, "link", "set", "br0", "up")
            _run("ip", "link", "add", self.host_if, "type", "veth", "peer",
                 "name", "ph", "netns", self.bridge_ns)
            _run("ip", "addr", "add", "%s.1/24" % self.subnet, "dev", self.host_if)
            _run("ip", "link", "set", self.host_if, "up")
            _run("ip", "-n", self.bridge_ns, "link", "set", "ph", "master", "br0")
            _run("ip", "-n", self.bridge_ns, "link", "set", "ph", "up")
        except Exception:
            self.cleanup()
            raise

    @staticmethod
    def _free_subnet():
        used = _run("ip", "-4", "addr") + _run("ip", "-4", "route")
        for _ in range(200):
            net = "10.%d.%d" % (random.randrange(100, 250), random.randrange(1, 250))
            if (net + ".") not in used:
                return net
        raise ClusterError("no free 10.x.y.0/24 subnet")

    def _mk_ns(self, ns):
        _run("ip", "netns", "add", ns)
        self.namespaces.append(ns)
        _run("ip", "-n", ns, "link", "set", "lo", "up")

    def add_hosts(self, n):
        """n namespaces attached to the bridge: [(ns, ip)]."""
        out = []
        for _ in range(n):
            i = self.next_ip
            self.next_ip += 1
            ns = "%sm%d" % (self.tag, i)
            ip = "%s.%d" % (self.subnet, i)
            self._mk_ns(ns)
            _run("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer",
                 "name", "p%d" % i, "netns", self.bridge_ns)
            _run("ip", "-n", self.bridge_ns, "link", "set", "p%d" % i, "master", "br0")
            _run("ip", "-n", self.bridge_ns, "link", "set", "p%d" % i, "up")
            _run("ip", "-n", ns, "addr", "add", ip + "/24", "dev", "eth0")
            _run("ip", "-n", ns, "link", "set", "eth0", "up")
            self.hosts[ns] = ip
            out.append((ns, ip))
        return out

    def drop(self, src, dst):
        """Drop every packet from member src to member dst (one way)."""
        _run("ip", "-n", src.netns, "route", "add", "blackhole", dst.host + "/32")
        self.cuts.append((src.netns, dst.host))

    def isolate(self, m, others, one_way=False):
        """Cut m from others: both ways, or only m's outgoing packets."""
        for o in others:
            self.drop(m, o)
            if not one_way:
                self.drop(o, m)

    def heal(self):
        for ns, ip in self.cuts:
            _run("ip", "-n", ns, "route", "del", "blackhole", ip + "/32")
        self.cuts = []

    def cleanup(self):
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)
        self.namespaces = []
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True,
                       timeout=20)
