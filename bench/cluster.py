#!/usr/bin/python3
"""cluster.py: 3-member cluster benchmark, etcd 3.4 vs cairn (see
bench/README.md, "cluster.sh").  Normally run through bench/cluster.sh.

For each round and each binary (etcd first, then cairn, alternating):
  1. start a 3-member cluster on 127.0.0.1 (tests/integration/cluster_it.py:
     free ports, own data dirs under a temp dir, our PID checked on every
     port), wait for a leader;
  2. prefill KEYS keys through the leader (unmeasured), then run every
     cairn-bench workload for DURATION s against the LEADER and against a
     FOLLOWER (forwarding / read-index path);
  3. record VmRSS / VmHWM of every member;
  4. failover trials: a light write load on the two non-leaders, kill -9
     the leader, time (a) until both survivors' Status names the same new
     leader and (b) until the first put issued after the kill succeeds;
     restart the killed member, wait for a stable leader, repeat;
  5. stop the cluster (our PIDs only) and remove its temp dir.
Then a table of medians over rounds with cairn/etcd ratios.
"""

import argparse
import os
import signal
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))

import grpc  # noqa: E402
from cairn_it import rpc_pb2, rpc_pb2_grpc  # noqa: E402
from cluster_it import Cluster, ClusterError  # noqa: E402

BENCH = os.path.join(HERE, "cairn-bench")

# label | cairn-bench arguments (range workloads read the prefilled keys)
WORKLOADS = [
    ("put 1x1", "--op put --conns 1 --streams 1"),
    ("put 16x64", "--op put --conns 16 --streams 64"),
    ("range 4x64", "--op range --conns 4 --streams 64"),
    ("range prefix 4x64", "--op range --conns 4 --streams 64 --range-prefix 1"),
    ("range serial 4x64", "--op range --conns 4 --streams 64 --serializable"),
]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def field(line, name):
    for tok in line.split():
        if tok.startswith(name + "="):
            return tok[len(name) + 1:]
    return None


def proc_kb(pid, key):
    try:
        with open("/proc/%d/status" % pid) as f:
            for ln in f:
                if ln.startswith(key + ":"):
                    return int(ln.split()[1])
    except OSError:
        pass
    return 0


class Stop(Exception):
    pass


def on_signal(sig, frame):
    raise Stop("signal %d" % sig)


# --------------------------------------------------------------------------
# load
# --------------------------------------------------------------------------

def run_bench(member, args, a, failures, label, name, role):
    """One cairn-bench run against member (its port checked to be its own
    first).  Returns (line, rc)."""
    member.assert_owned()
    cmd = [BENCH, "--endpoint", member.endpoint] + args.split() + [
        "--duration", str(a.duration), "--val-size", str(a.val_size),
        "--keys", str(a.keys), "--timeout", str(a.bench_timeout)]
    t0 = time.monotonic()
    try:
        cp = subprocess.run(cmd, capture_output=True, text=True,
                            timeout=a.duration + a.bench_timeout + 60)
        out, err, rc = cp.stdout, cp.stderr, cp.returncode
    except subprocess.TimeoutExpired as e:   # subprocess.run killed it
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = (e.stderr or b"").decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        rc = "timeout"
    line = ([ln for ln in out.splitlines() if ln.startswith("op=")] or [""])[-1]
    misses = int(field(line, "misses") or 0)
    bad = rc != 0 or not line or misses > 0
    log("  %-18s %-5s @%-8s %s%s" % (label, name, role, line or "no output",
                                      "" if not bad else "   <-- FAILED rc=%s" % rc))
    if bad:
        f = {"binary": name, "workload": label, "role": role,
             "cmd": " ".join(cmd), "rc": rc, "line": line,
             "secs": round(time.monotonic() - t0, 1),
             "stderr": err.strip().splitlines()[-15:],
             "logs": {m.name: (m.pid, m.running(), m.log_tail(15))
                      for m in member.cluster.members}}
        if misses:
            f["why"] = "%d Range misses on prefilled keys" % misses
        failures.append(f)
        for ln in f["stderr"]:
            log("      stderr: " + ln)
    return line, rc


def prefill(leader, a):
    """Put every key once (unmeasured) so that ranges find them."""
    leader.assert_owned()
    cmd = [BENCH, "--endpoint", leader.endpoint, "--op", "put", "--sequential",
           "--total", str(a.keys), "--keys", str(a.keys), "--conns", "4",
           "--streams", "64", "--val-size", str(a.val_size), "--quiet"]
    cp = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if cp.returncode != 0:
        raise ClusterError("prefill failed: %s %s" % (cp.stdout, cp.stderr))


# --------------------------------------------------------------------------
# failover
# --------------------------------------------------------------------------

def status_of(ep, timeout):
    with grpc.insecure_channel(ep) as ch:
        return rpc_pb2_grpc.MaintenanceStub(ch).Status(
            rpc_pb2.StatusRequest(), timeout=timeout)


def stable_leader(c, timeout=30.0):
    """A leader that every running member names, with every member's
    raft index within 10 of the leader's (bounded wait)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sts = {}
        for m in c.members:
            try:
                sts[m.name] = m.status(timeout=1.0)
                m.id = sts[m.name].header.member_id
            except (grpc.RpcError, ClusterError):
                pass
        if len(sts) == len(c.members):
            lids = {s.leader for s in sts.values()}
            if len(lids) == 1 and 0 not in lids:
                ld = c.by_id(lids.pop())
                if ld is not None:
                    li = sts[ld.name].raftIndex
                    if all(li - s.raftIndex <= 10 for s in sts.values()):
                        return ld
        time.sleep(0.1)
    raise ClusterError("no stable leader after %.0fs\n%s" % (timeout, c.logs(10)))


class FailoverTrial:
    def __init__(self, c, leader, a):
        self.c, self.leader, self.a = c, leader, a
        self.survivors = [m for m in c.members if m is not leader]
        self.stop = threading.Event()
        self.t_kill = self.t_dead = None
        self.puts = []          # (t_issue, t_done, ok, endpoint)
        self.status = []        # (t, member name, leader id)
        self.lock = threading.Lock()

    def _writer(self):
        # one client, puts back to back, alternating over the survivors
        chans = [grpc.insecure_channel(m.endpoint) for m in self.survivors]
        stubs = [rpc_pb2_grpc.KVStub(ch) for ch in chans]
        i = n = 0
        deadline = time.monotonic() + self.a.failover_max + 10
        try:
            while not self.stop.is_set() and time.monotonic() < deadline \
                    and n < 200000:
                n += 1
                j = i % len(stubs)
                t0 = time.monotonic()
                ok = True
                try:
                    stubs[j].Put(rpc_pb2.PutRequest(key=b"failover/k",
                                                    value=b"v%d" % n),
                                 timeout=self.a.put_timeout)
                except grpc.RpcError:
                    ok = False
                    i += 1          # try the other survivor next
                t1 = time.monotonic()
                with self.lock:
                    self.puts.append((t0, t1, ok, j))
                if not ok:
                    time.sleep(0.005)
        finally:
            for ch in chans:
                ch.close()

    def _poller(self, m):
        ch = grpc.insecure_channel(m.endpoint)
        stub = rpc_pb2_grpc.MaintenanceStub(ch)
        deadline = time.monotonic() + self.a.failover_max + 10
        try:
            while not self.stop.is_set() and time.monotonic() < deadline:
                try:
                    st = stub.Status(rpc_pb2.StatusRequest(), timeout=0.25)
                    with self.lock:
                        self.status.append((time.monotonic(), m.name, st.leader))
                except grpc.RpcError:
                    pass
                time.sleep(0.01)
        finally:
            ch.close()

    def run(self):
        """Returns (secs to new leader, secs to first write) or raises."""
        old = self.leader.id
        for m in self.survivors:
            m.assert_owned()
        threads = [threading.Thread(target=self._writer, daemon=True)] + [
            threading.Thread(target=self._poller, args=(m,), daemon=True)
            for m in self.survivors]
        for t in threads:
            t.start()
        try:
            time.sleep(self.a.failover_warmup)
            with self.lock:
                pre_ok = sum(1 for p in self.puts if p[2])
            if pre_ok == 0:
                raise ClusterError("no put succeeded before the kill")
            self.t_kill = time.monotonic()
            self.leader.kill9()              # SIGKILL, then waits for it
            # Only puts issued once the leader is reaped count as "after the
            # kill": SIGKILL lands when the kernel gets to it, so the leader
            # may still commit a put for a few ms after kill() returns.
            self.t_dead = time.monotonic()
            deadline = self.t_kill + self.a.failover_max
            t_leader = t_write = None
            while time.monotonic() < deadline and (t_leader is None or t_write is None):
                time.sleep(0.02)
                with self.lock:
                    if t_leader is None:
                        t_leader = self._agreed_leader(old)
                    if t_write is None:
                        w = [p[1] for p in self.puts if p[2] and p[0] >= self.t_dead]
                        t_write = min(w) if w else None
        finally:
            self.stop.set()
            for t in threads:
                t.join(self.a.put_timeout + 5)
        with self.lock:
            fails = sum(1 for p in self.puts if not p[2] and p[1] >= self.t_kill)
        return ((t_leader - self.t_kill) if t_leader else None,
                (t_write - self.t_kill) if t_write else None, pre_ok, fails)

    def _agreed_leader(self, old):
        """First time every survivor's latest Status (after the kill) names
        the same leader, other than the old one (0 = none)."""
        last = {}
        for t, name, lid in self.status:
            if t < self.t_kill:
                continue
            last[name] = lid
            if len(last) == len(self.survivors):
                ids = set(last.values())
                if len(ids) == 1 and 0 not in ids and old not in ids:
                    return t
        return None


def failover(c, a, name, res, failures):
    for trial in range(1, a.trials + 1):
        leader = stable_leader(c)
        time.sleep(a.failover_settle)
        ft = FailoverTrial(c, leader, a)
        tl, tw, pre, fails = ft.run()
        log("  failover %-5s trial %d: killed %s (pid %s); new leader %s, "
            "first write %s  (puts ok before kill %d, failed after kill %d)"
            % (name, trial, leader.name, leader.pid,
               "%.3fs" % tl if tl is not None else "NONE",
               "%.3fs" % tw if tw is not None else "NONE", pre, fails))
        if tl is None or tw is None:
            failures.append({"binary": name, "workload": "failover trial %d" % trial,
                             "why": "no %s within %ss of the kill" % (
                                 "new leader" if tl is None else "successful write",
                                 a.failover_max),
                             "logs": {m.name: (m.pid, m.running(), m.log_tail(15))
                                      for m in c.members}})
        res.setdefault((name, "fo_leader"), []).append(tl)
        res.setdefault((name, "fo_write"), []).append(tw)
        leader.start()                       # same data dir and ports
    stable_leader(c)


# --------------------------------------------------------------------------
# one binary, one round
# --------------------------------------------------------------------------

def one_cluster(name, binary, a, res, rss, failures, rnd):
    c = Cluster(binary, 3, heartbeat=a.heartbeat, election=a.election)
    try:
        c.start()
        leader = stable_leader(c)
        follower = next(m for m in c.members if m is not leader)
        log("round %d %s: leader %s pid %d, follower %s pid %d (%s)" % (
            rnd, name, leader.name, leader.pid, follower.name, follower.pid,
            ", ".join("%s=%s" % (m.name, m.endpoint) for m in c.members)))
        prefill(leader, a)
        for label, args in WORKLOADS:
            for role in a.roles:
                # the leader may have moved (it should not without faults)
                cur = c.leader()
                if cur is not None and cur is not leader:
                    log("  NOTE: leader moved %s -> %s" % (leader.name, cur.name))
                    failures.append({"binary": name, "workload": label,
                                     "why": "leader moved %s -> %s before this run"
                                     % (leader.name, cur.name)})
                    leader = cur
                    follower = next(m for m in c.members if m is not leader)
                dead = [m for m in c.members if not m.running()]
                if dead:
                    raise ClusterError("member(s) died: %s" % "; ".join(
                        "%s rc=%s\n%s" % (m.name, m.proc.returncode, m.log_tail(20))
                        for m in dead))
                tgt = leader if role == "leader" else follower
                line, rc = run_bench(tgt, args, a, failures, label, name, role)
                key = (name, "%s @%s" % (label, role))
                res.setdefault(key, []).append(
                    (float(field(line, "rps") or 0), float(field(line, "p50_us") or 0),
                     float(field(line, "p99_us") or 0), rc == 0 and bool(line)))
        # memory after the load
        r = [(m.name, proc_kb(m.pid, "VmRSS"), proc_kb(m.pid, "VmHWM"),
              proc_kb(m.pid, "RssAnon")) for m in c.members]
        log("  rss %-5s %s" % (name, "  ".join(
            "%s=%.1fM(hwm %.1fM, anon %.1fM)" % (n, v / 1024, h / 1024, an / 1024)
            for n, v, h, an in r)))
        rss.setdefault(name, []).append(r)
        if a.trials > 0:
            failover(c, a, name, res, failures)
    except ClusterError as e:
        log("round %d %s: CLUSTER ERROR: %s" % (rnd, name, e))
        failures.append({"binary": name, "workload": "cluster", "why": str(e)})
    finally:
        c.cleanup()


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def ratio(c, e):
    return "%.2f" % (c / e) if c is not None and e else "-"


def report(a, res, rss, failures):
    print()
    print("# 3-member clusters, heartbeat %dms election %dms; %d round(s), %ss "
          "per run, val_size %d, keys %d; %d CPUs" % (
              a.heartbeat, a.election, a.rounds, a.duration, a.val_size, a.keys,
              os.cpu_count()))
    w = 28
    print("%-*s %9s %9s %6s | %8s %8s | %8s %8s %6s" % (
        w, "workload @target", "etcd rps", "cairn rps", "ratio",
        "etcd p50", "cairn p50", "etcd p99", "cairn p99", "ratio"))
    for label, _ in WORKLOADS:
        for role in a.roles:
            key = "%s @%s" % (label, role)
            e = res.get(("etcd", key), [])
            c = res.get(("cairn", key), [])
            er, cr = med([x[0] for x in e]), med([x[0] for x in c])
            e50, c50 = med([x[1] for x in e]), med([x[1] for x in c])
            e99, c99 = med([x[2] for x in e]), med([x[2] for x in c])
            bad = [n for n, xs in (("etcd", e), ("cairn", c))
                   if not xs or not all(x[3] for x in xs)]
            print("%-*s %9.0f %9.0f %6s | %6.0fus %6.0fus | %6.0fus %6.0fus %6s%s" % (
                w, key, er or 0, cr or 0, ratio(cr, er), e50 or 0, c50 or 0,
                e99 or 0, c99 or 0, ratio(c99, e99),
                "  (FAILED: %s)" % ",".join(bad) if bad else ""))
    if a.trials > 0:
        for k, label in (("fo_leader", "failover: new leader"),
                         ("fo_write", "failover: first write")):
            e = res.get(("etcd", k), [])
            c = res.get(("cairn", k), [])

            def mx(xs):
                xs2 = [x for x in xs if x is not None]
                return max(xs2) if xs2 else None
            em, cm, ex, cx = med(e), med(c), mx(e), mx(c)
            nf = lambda xs: sum(1 for x in xs if x is None)  # noqa: E731
            print("%-*s median %6s %6s %6s | max %6s %6s %6s   (n=%d/%d%s)" % (
                w, label,
                "%.3fs" % em if em is not None else "-",
                "%.3fs" % cm if cm is not None else "-", ratio(cm, em),
                "%.3fs" % ex if ex is not None else "-",
                "%.3fs" % cx if cx is not None else "-", ratio(cx, ex),
                len(e), len(c),
                ", none within %ss: etcd %d cairn %d" % (a.failover_max, nf(e), nf(c))
                if nf(e) or nf(c) else ""))
    for idx, label in ((1, "RSS after load"), (2, "peak RSS (VmHWM)"), (3, "anon RSS")):
        vals = {}
        for n in ("etcd", "cairn"):
            rounds = rss.get(n, [])
            if rounds:
                vals[n] = (med([sum(m[idx] for m in r) for r in rounds]),
                           med([max(m[idx] for m in r) for r in rounds]))
        if len(vals) == 2:
            (es, emx), (cs, cmx) = vals["etcd"], vals["cairn"]
            print("%-*s sum %7.1fM %7.1fM %6s | max member %7.1fM %7.1fM %6s" % (
                w, label, es / 1024, cs / 1024, ratio(cs, es),
                emx / 1024, cmx / 1024, ratio(cmx, emx)))
    print("(medians over rounds; rps/p50/p99 from cairn-bench; ratio = cairn/etcd: "
          ">1 better for rps, worse for latency, failover secs and RSS;")
    print(" @leader = load sent to the leader, @follower = to a follower, which "
          "forwards puts and asks the leader for a read index for linearizable ranges;")
    print(" failover: kill -9 of the leader under one back-to-back writer on the "
          "two survivors (put timeout %ss); new leader = both survivors' Status "
          "agree on a new leader; first write = first put issued after the kill "
          "that succeeded, at its completion; %d trial(s) per round)" % (
              a.put_timeout, a.trials))
    if failures:
        print()
        print("FAILURES (%d):" % len(failures))
        for f in failures:
            print("- %s / %s%s%s" % (f.get("binary"), f.get("workload"),
                                     " @" + f["role"] if f.get("role") else "",
                                     ": " + f["why"] if f.get("why") else ""))
            if f.get("cmd"):
                print("    command: %s" % f["cmd"])
                print("    rc=%s after %ss, line: %s" % (f["rc"], f["secs"],
                                                        f["line"] or "(none)"))
                for ln in f["stderr"]:
                    print("    stderr: %s" % ln)
            for mn, (pid, running, tail) in sorted(f.get("logs", {}).items()):
                print("    --- %s pid %s %s, log tail:" % (
                    mn, pid, "running" if running else "NOT RUNNING"))
                for ln in tail.splitlines():
                    print("      " + ln)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--etcd", default="/usr/bin/etcd")
    ap.add_argument("--cairn", default=os.path.join(REPO, "build", "cairn"))
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--val-size", type=int, default=256)
    ap.add_argument("--keys", type=int, default=10000)
    ap.add_argument("--heartbeat", type=int, default=100)
    ap.add_argument("--election", type=int, default=1000)
    ap.add_argument("--roles", default="leader,follower")
    ap.add_argument("--trials", type=int, default=3, help="failover trials per round")
    ap.add_argument("--put-timeout", type=float, default=0.5)
    ap.add_argument("--failover-max", type=float, default=20.0)
    ap.add_argument("--failover-warmup", type=float, default=1.0)
    ap.add_argument("--failover-settle", type=float, default=1.0)
    ap.add_argument("--bench-timeout", type=float, default=10.0,
                    help="cairn-bench --timeout (stall watchdog)")
    ap.add_argument("--only", default="etcd,cairn")
    a = ap.parse_args()
    a.roles = a.roles.split(",")
    for b in (a.etcd, a.cairn):
        if not os.access(b, os.X_OK):
            log("cluster.py: server binary missing: %s" % b)
            return 2
    signal.signal(signal.SIGTERM, on_signal)
    res, rss, failures = {}, {}, []
    t0 = time.monotonic()
    bins = [(n, b) for n, b in (("etcd", a.etcd), ("cairn", a.cairn))
            if n in a.only.split(",")]
    try:
        for rnd in range(1, a.rounds + 1):
            for name, binary in bins:
                one_cluster(name, binary, a, res, rss, failures, rnd)
    except (Stop, KeyboardInterrupt) as e:
        log("cluster.py: interrupted (%s)" % e)
        failures.append({"binary": "-", "workload": "-", "why": "interrupted"})
    report(a, res, rss, failures)
    log("total %.0fs" % (time.monotonic() - t0))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
