#!/usr/bin/python3
"""k8s control-plane load model for etcd v3 gRPC servers (etcd, cairn).

Modelled on etcd's robustness "kubernetes" traffic: objects under
/registry/<type>/<ns>/<name>, paginated lists pinned to the first page's
revision, a prefix watch per type opened from listRev+1, guarded updates /
creates / deletes as kube-apiserver issues them, and kube-apiserver's
compact_rev_key compaction loop.  Closed loop: every worker thread issues
its next request as soon as the previous one returns.

Prints a human report on stderr and one machine-readable line starting
with "result " on stdout (run.sh parses it).  Exit 0 when errors=0.
"""
import argparse
import multiprocessing as mp
import os
import random
import sys
import threading
import time

import grpc
from etcd3.etcdrpc import rpc_pb2, rpc_pb2_grpc

TYPE_NAMES = [
    "pods", "events", "configmaps", "secrets", "services", "endpointslices",
    "deployments", "replicasets", "nodes", "leases", "serviceaccounts",
    "namespaces", "persistentvolumeclaims", "persistentvolumes", "jobs",
    "cronjobs", "statefulsets", "daemonsets", "roles", "rolebindings",
]
READ_OPS = [("list", 80), ("get_rev", 8), ("get", 5), ("list_stale", 5),
            ("get_stale", 2)]
WRITE_OPS = [("update", 90), ("create", 5), ("delete", 5)]
ALL_OPS = [n for n, _ in READ_OPS] + [n for n, _ in WRITE_OPS]
NAMESPACES = 50
PAGE = 500
MAX_RETRIES = 10
RPC_TIMEOUT = 30.0
COMPACT_KEY = b"compact_rev_key"


def type_name(t):
    return TYPE_NAMES[t] if t < len(TYPE_NAMES) else "type%d" % t


def prefix(t):
    return ("/registry/%s/" % type_name(t)).encode()


def prefix_end(p):
    return p[:-1] + bytes([p[-1] + 1])


def obj_key(t, name):
    h = sum(name.encode()) % NAMESPACES
    return ("/registry/%s/ns-%d/%s" % (type_name(t), h, name)).encode()


BLOB = None


def value(rng):
    """Opaque protobuf-like bytes: 1-20 KiB, ~2% at 100 KiB."""
    size = 100 * 1024 if rng.random() < 0.02 else rng.randint(1024, 20 * 1024)
    off = rng.randrange(0, len(BLOB) - size)
    return b"k8s\x00" + BLOB[off:off + size - 4]


def channel(endpoint):
    # A local subchannel pool gives every channel its own TCP connection
    # (grpc otherwise shares one connection between identical channels).
    return grpc.insecure_channel(endpoint, options=[
        ("grpc.use_local_subchannel_pool", 1),
        ("grpc.max_receive_message_length", -1),
        ("grpc.max_send_message_length", -1),
    ])


def pick(rng, table):
    x = rng.random() * 100
    for name, w in table:
        x -= w
        if x < 0:
            return name
    return table[-1][0]


class Worker:
    """One process: a share of the connections, some watches, threads."""

    def __init__(self, a, p, stubs):
        self.a, self.p, self.stubs = a, p, stubs
        self.lock = threading.Lock()
        self.modrev = {}          # key -> last known mod_revision
        self.rev = 1              # highest header revision seen
        self.lat = {n: [] for n in ALL_OPS}
        self.cnt = {"conflict": 0, "notfound": 0, "errors": 0,
                    "writes_ok": 0, "watch_events": 0, "watch_cancel": 0}
        self.first_err = ""
        self.created = 0

    def chan_of(self, t):
        """A channel of type t: channels c with c % types == t (like
        kube-apiserver's per-resource clients); t % n when n < types."""
        n = len(self.stubs)
        if n <= self.a.types:
            return t % n
        return random.choice(range(t, n, self.a.types))

    def kv(self, t):
        return self.stubs[self.chan_of(t)][0]

    def inc(self, k):
        with self.lock:
            self.cnt[k] += 1

    def see(self, hdr_rev):
        if hdr_rev > self.rev:
            self.rev = hdr_rev

    def error(self, e):
        with self.lock:
            self.cnt["errors"] += 1
            if not self.first_err:
                self.first_err = str(e).replace("\n", " ")[:300]

    # ---- reads -------------------------------------------------------
    def list(self, t, serializable=False):
        p = prefix(t)
        end = prefix_end(p)
        key, rev, n = p, 0, 0
        for _ in range(100000):
            r = self.kv(t).Range(rpc_pb2.RangeRequest(
                key=key, range_end=end, limit=PAGE, revision=rev,
                serializable=serializable), timeout=RPC_TIMEOUT)
            if rev == 0:
                rev = r.header.revision
            n += len(r.kvs)
            if not r.more or not r.kvs:
                break
            key = r.kvs[-1].key + b"\0"
        self.see(rev)
        return rev, n

    def get(self, t, key, revision=0, serializable=False):
        r = self.kv(t).Range(rpc_pb2.RangeRequest(
            key=key, limit=1, revision=revision, serializable=serializable),
            timeout=RPC_TIMEOUT)
        self.see(r.header.revision)
        return r.kvs[0] if r.kvs else None

    # ---- writes (kube-apiserver's guarded txns) ----------------------
    def update(self, t, key, rng):
        mr = self.modrev.get(key)
        if mr is None:
            kv = self.get(t, key)
            if kv is None:
                self.inc("notfound")
                return
            mr = kv.mod_revision
        for _ in range(MAX_RETRIES):
            r = self.kv(t).Txn(rpc_pb2.TxnRequest(
                compare=[rpc_pb2.Compare(
                    result=rpc_pb2.Compare.EQUAL,
                    target=rpc_pb2.Compare.MOD, key=key, mod_revision=mr)],
                success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(
                    key=key, value=value(rng)))],
                failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(
                    key=key))]), timeout=RPC_TIMEOUT)
            self.see(r.header.revision)
            if r.succeeded:
                self.modrev[key] = r.header.revision
                self.inc("writes_ok")
                return
            kvs = r.responses[0].response_range.kvs
            if not kvs:
                self.modrev.pop(key, None)
                self.inc("notfound")
                return
            self.inc("conflict")
            mr = kvs[0].mod_revision
            self.modrev[key] = mr
        raise RuntimeError("update of %r: %d conflicts in a row" %
                           (key, MAX_RETRIES))

    def create(self, t, key, rng):
        r = self.kv(t).Txn(rpc_pb2.TxnRequest(
            compare=[rpc_pb2.Compare(
                result=rpc_pb2.Compare.EQUAL, target=rpc_pb2.Compare.MOD,
                key=key, mod_revision=0)],
            success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(
                key=key, value=value(rng)))]), timeout=RPC_TIMEOUT)
        self.see(r.header.revision)
        if r.succeeded:
            self.modrev[key] = r.header.revision
            self.inc("writes_ok")
        else:
            self.inc("conflict")
        return r.succeeded

    def delete(self, t, key):
        mr = self.modrev.get(key)
        if mr is None:
            kv = self.get(t, key)
            if kv is None:
                self.inc("notfound")
                return
            mr = kv.mod_revision
        for _ in range(MAX_RETRIES):
            r = self.kv(t).Txn(rpc_pb2.TxnRequest(
                compare=[rpc_pb2.Compare(
                    result=rpc_pb2.Compare.EQUAL,
                    target=rpc_pb2.Compare.MOD, key=key, mod_revision=mr)],
                success=[rpc_pb2.RequestOp(
                    request_delete_range=rpc_pb2.DeleteRangeRequest(key=key))],
                failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(
                    key=key))]), timeout=RPC_TIMEOUT)
            self.see(r.header.revision)
            if r.succeeded:
                self.modrev.pop(key, None)
                self.inc("writes_ok")
                return
            kvs = r.responses[0].response_range.kvs
            if not kvs:
                self.modrev.pop(key, None)
                self.inc("notfound")
                return
            self.inc("conflict")
            mr = kvs[0].mod_revision
        raise RuntimeError("delete of %r: %d conflicts in a row" %
                           (key, MAX_RETRIES))

    # ---- one operation of the mix ------------------------------------
    def one(self, rng, per_type):
        t = rng.randrange(self.a.types)
        rw = self.a.read_ratio + self.a.write_ratio
        if rng.random() * rw < self.a.read_ratio:
            op = pick(rng, READ_OPS)
        else:
            op = pick(rng, WRITE_OPS)
        key = obj_key(t, "obj-%d" % rng.randrange(per_type))
        t0 = time.perf_counter()
        if op == "list":
            self.list(t)
        elif op == "list_stale":
            self.list(t, serializable=True)
        elif op == "get":
            self.get(t, key)
        elif op == "get_rev":
            self.get(t, key, revision=self.rev)
        elif op == "get_stale":
            self.get(t, key, serializable=True)
        elif op == "update":
            self.update(t, key, rng)
        elif op == "create":
            with self.lock:
                self.created += 1
                n = self.created
            self.create(t, obj_key(t, "new-p%d-%d" % (self.p, n)), rng)
        elif op == "delete":
            self.delete(t, key)
        self.lat[op].append(time.perf_counter() - t0)


def populate(w, a, rng):
    per_type = max(1, a.objects // a.types)
    for i in range(a.objects):
        if i % a.procs != w.p:
            continue
        t = i % a.types
        key = obj_key(t, "obj-%d" % (i // a.types))
        for attempt in range(20):
            try:
                w.create(t, key, rng)
                break
            except grpc.RpcError as e:
                if attempt == 19:
                    raise
                time.sleep(0.2)
    w.cnt["writes_ok"] = w.cnt["conflict"] = 0
    return per_type


def watch_thread(w, t, start_rev, stop, opened):
    p = prefix(t)
    done = threading.Event()

    def reqs():
        yield rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
            key=p, range_end=prefix_end(p), start_revision=start_rev,
            prev_kv=True))
        done.wait(3600)

    call = w.stubs[w.chan_of(t)][1].Watch(reqs())
    try:
        for resp in call:
            if resp.created:
                opened.release()
            if resp.canceled:
                with w.lock:
                    w.cnt["watch_cancel"] += 1
                raise RuntimeError("watch on %s canceled: %s (compact_rev=%d)"
                                   % (type_name(t), resp.cancel_reason,
                                      resp.compact_revision))
            if resp.events:
                with w.lock:
                    w.cnt["watch_events"] += len(resp.events)
    except grpc.RpcError as e:
        if not stop.is_set():
            w.error(e)
    except Exception as e:  # noqa: BLE001
        w.error(e)
    finally:
        done.set()


def worker_main(a, p, barrier, start_at, out_q):
    rng = random.Random(a.seed * 1000 + p)
    global BLOB
    BLOB = random.Random(a.seed).randbytes(256 * 1024)
    # This process's share of the connections.
    nconn = a.conns // a.procs + (1 if p < a.conns % a.procs else 0)
    chans = [channel(a.endpoint) for _ in range(max(1, nconn))]
    stubs = [(rpc_pb2_grpc.KVStub(c), rpc_pb2_grpc.WatchStub(c))
             for c in chans]
    w = Worker(a, p, stubs)
    res = {"p": p, "ok": False}
    try:
        for c in chans:     # connect them all now, not lazily on first use
            grpc.channel_ready_future(c).result(timeout=30)
        per_type = populate(w, a, rng) if a.objects else 1
        barrier.wait(timeout=3600)          # everything populated
        # kube-apiserver's reflector: list each type, then watch it from
        # listRev+1.  This process watches the types t with t % procs == p.
        stop = threading.Event()
        opened = threading.Semaphore(0)
        wts = []
        mine = [t for t in range(a.types) if t % a.procs == p]
        for t in mine:
            rev, _ = w.list(t)
            th = threading.Thread(target=watch_thread,
                                  args=(w, t, rev + 1, stop, opened),
                                  daemon=True)
            th.start()
            wts.append(th)
        for _ in mine:
            if not opened.acquire(timeout=30):
                raise RuntimeError("a watch did not open within 30 s")
        barrier.wait(timeout=600)           # all watches open
        for _ in range(60000):      # bounded: at most ~10 min
            if start_at.value and time.time() >= start_at.value:
                break
            time.sleep(0.01)
        t_end = start_at.value + a.duration
        w.lat = {n: [] for n in ALL_OPS}
        w.cnt["writes_ok"] = w.cnt["conflict"] = w.cnt["notfound"] = 0
        w.cnt["watch_events"] = 0
    
        def loop(seed):
            r = random.Random(seed)
            for _ in range(10 ** 9):
                if time.time() >= t_end:
                    break
                try:
                    w.one(r, per_type)
                except Exception as e:  # noqa: BLE001
                    w.error(e)
                    time.sleep(0.01)

        ths = [threading.Thread(target=loop, args=(rng.random(),))
               for _ in range(a.threads)]
        for th in ths:
            th.start()
        for th in ths:
            th.join(timeout=a.duration + 2 * RPC_TIMEOUT)
        barrier.wait(timeout=2 * RPC_TIMEOUT + 30)   # all writes done
        # Let the watches catch up with the writes (bounded).
        time.sleep(a.watch_drain)
        stop.set()
        for c in chans:
            c.close()
        res.update(ok=True)
    except Exception as e:  # noqa: BLE001
        w.error(e)
        try:
            barrier.abort()
        except Exception:  # noqa: BLE001
            pass
    res.update(lat=w.lat, cnt=w.cnt, first_err=w.first_err,
               cpu=sum(os.times()[:2]))
    out_q.put(res)


def compactor(a, stop, stats):
    """kube-apiserver's compaction loop (storage/etcd3/compact.go)."""
    ch = channel(a.endpoint)
    kv = rpc_pb2_grpc.KVStub(ch)
    t, rev = 0, 0
    for _ in range(100000):
        if stop.wait(a.compact_interval):
            break
        try:
            r = kv.Txn(rpc_pb2.TxnRequest(
                compare=[rpc_pb2.Compare(
                    result=rpc_pb2.Compare.EQUAL,
                    target=rpc_pb2.Compare.VERSION, key=COMPACT_KEY,
                    version=t)],
                success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(
                    key=COMPACT_KEY, value=str(rev).encode()))],
                failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(
                    key=COMPACT_KEY))]), timeout=RPC_TIMEOUT)
            cur_rev = r.header.revision
            if not r.succeeded:
                t = r.responses[0].response_range.kvs[0].version
            else:
                t += 1
                if rev:
                    kv.Compact(rpc_pb2.CompactionRequest(revision=rev),
                               timeout=RPC_TIMEOUT)
                    stats["compactions"] += 1
            rev = cur_rev
        except grpc.RpcError as e:
            stats["errors"] += 1
            stats["first_err"] = stats["first_err"] or str(e)[:300]
    ch.close()


def proc_status(pid):
    out = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                    out[k] = int(v.split()[0])
    except OSError:
        pass
    return out


def proc_cpu(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            f_ = f.read().rsplit(")", 1)[1].split()
        return (int(f_[11]) + int(f_[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def pct(xs, q):
    if not xs:
        return 0.0
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def ping(a):
    ch = channel(a.endpoint)
    try:
        rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"ping"),
                                      timeout=2)
        return 0
    except grpc.RpcError as e:
        print("ping: %s" % e.code(), file=sys.stderr)
        return 1
    finally:
        ch.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--endpoint", default="127.0.0.1:2379")
    ap.add_argument("--types", type=int, default=20)
    ap.add_argument("--conns", type=int, default=100,
                    help="gRPC connections in all (split over processes)")
    ap.add_argument("--procs", type=int, default=4,
                    help="client processes")
    ap.add_argument("--threads", type=int, default=8,
                    help="closed-loop request threads per process")
    ap.add_argument("--objects", type=int, default=10000)
    ap.add_argument("--duration", type=float, default=30)
    ap.add_argument("--read-ratio", type=float, default=9)
    ap.add_argument("--write-ratio", type=float, default=1)
    ap.add_argument("--compact-interval", type=float, default=10)
    ap.add_argument("--watch-drain", type=float, default=2,
                    help="seconds the watches get to catch up at the end")
    ap.add_argument("--server-pid", type=int, default=0)
    ap.add_argument("--label", default="server")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--ping", action="store_true",
                    help="one Range; exit 0 if the server answers")
    a = ap.parse_args()
    if a.ping:
        return ping(a)
    if a.conns < a.procs or a.types < 1 or a.procs < 1 or a.threads < 1:
        ap.error("need conns >= procs >= 1, types >= 1, threads >= 1")

    ctx = mp.get_context("spawn")   # no grpc state across fork
    barrier = ctx.Barrier(a.procs + 1)
    start_at = ctx.Value("d", 0.0)
    out_q = ctx.Queue()
    t0 = time.time()
    procs = [ctx.Process(target=worker_main,
                         args=(a, p, barrier, start_at, out_q))
             for p in range(a.procs)]
    for pr in procs:
        pr.start()
    results = []
    cstats = {"compactions": 0, "errors": 0, "first_err": ""}
    fatal = ""
    try:
        barrier.wait(timeout=3600)
        print("%s: populated %d objects in %.1f s" %
              (a.label, a.objects, time.time() - t0), file=sys.stderr)
        barrier.wait(timeout=600)
        start_at.value = time.time() + 0.5
        cpu0 = proc_cpu(a.server_pid) if a.server_pid else 0.0
        stop = threading.Event()
        cth = threading.Thread(target=compactor, args=(a, stop, cstats))
        time.sleep(0.5)
        cth.start()
        barrier.wait(timeout=a.duration + 3 * RPC_TIMEOUT + 60)
        elapsed = time.time() - start_at.value
        stop.set()
        cth.join(timeout=RPC_TIMEOUT * 2 + 5)
        cpu1 = proc_cpu(a.server_pid) if a.server_pid else 0.0
    except Exception as e:  # noqa: BLE001  (BrokenBarrierError, timeouts)
        fatal = "run aborted: %r" % (e,)
        elapsed, cpu0, cpu1 = a.duration, 0.0, 0.0
        stop = None
    for _ in procs:
        try:
            results.append(out_q.get(timeout=120))
        except Exception:  # noqa: BLE001
            fatal = fatal or "a worker sent no result"
            break
    for pr in procs:
        pr.join(timeout=30)
        if pr.is_alive():
            pr.kill()
            pr.join(timeout=5)
    mem = proc_status(a.server_pid) if a.server_pid else {}

    lat = {n: [] for n in ALL_OPS}
    cnt = {}
    first_err = fatal
    cpu = 0.0
    for r in results:
        for n in ALL_OPS:
            lat[n].extend(r.get("lat", {}).get(n, []))
        for k, v in r.get("cnt", {}).items():
            cnt[k] = cnt.get(k, 0) + v
        first_err = first_err or r.get("first_err", "")
        cpu += r.get("cpu", 0.0)
    errors = cnt.get("errors", 0) + cstats["errors"] + (1 if fatal else 0)
    first_err = first_err or cstats["first_err"]
    # Every successful write is one event on exactly one watch.
    missing = cnt.get("writes_ok", 0) - cnt.get("watch_events", 0)
    if missing > 0:
        errors += 1
        first_err = first_err or "watches missed %d events" % missing
    total = sum(len(v) for v in lat.values())
    ops_s = total / elapsed if elapsed > 0 else 0.0

    print("%s: %.1f s, %d ops, %.1f ops/s, errors=%d, compactions=%d" %
          (a.label, elapsed, total, ops_s, errors, cstats["compactions"]),
          file=sys.stderr)
    print("  %-11s %8s %9s %9s" % ("op", "count", "p50 ms", "p99 ms"),
          file=sys.stderr)
    for n in ALL_OPS:
        print("  %-11s %8d %9.2f %9.2f" % (n, len(lat[n]),
              pct(lat[n], .5) * 1e3, pct(lat[n], .99) * 1e3), file=sys.stderr)
    print("  writes ok %d, conflicts %d, not found %d, watch events %d" %
          (cnt.get("writes_ok", 0), cnt.get("conflict", 0),
           cnt.get("notfound", 0), cnt.get("watch_events", 0)),
          file=sys.stderr)
    print("  client CPU %.2f cores (of %d), server CPU %.2f cores" %
          (cpu / max(elapsed, 1e-9), os.cpu_count(),
           (cpu1 - cpu0) / max(elapsed, 1e-9)), file=sys.stderr)
    if first_err:
        print("  first error: %s" % first_err, file=sys.stderr)

    fields = [("server", a.label), ("ops", total), ("ops_s", "%.1f" % ops_s),
              ("errors", errors), ("writes_ok", cnt.get("writes_ok", 0)),
              ("conflicts", cnt.get("conflict", 0)),
              ("watch_events", cnt.get("watch_events", 0)),
              ("compactions", cstats["compactions"]),
              ("client_cpu", "%.2f" % (cpu / max(elapsed, 1e-9))),
              ("server_cpu", "%.2f" % ((cpu1 - cpu0) / max(elapsed, 1e-9))),
              ("hwm_kb", mem.get("VmHWM", 0)),
              ("anon_kb", mem.get("RssAnon", 0))]
    for n in ALL_OPS:
        fields += [(n + "_n", len(lat[n])),
                   (n + "_p50", "%.2f" % (pct(lat[n], .5) * 1e3)),
                   (n + "_p99", "%.2f" % (pct(lat[n], .99) * 1e3))]
    print("result " + " ".join("%s=%s" % kv for kv in fields))
    sys.stdout.flush()
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
