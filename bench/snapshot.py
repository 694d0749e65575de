"""Snapshot throughput: the same data in real etcd 3.4 and in cairn, then
`etcdctl snapshot save` against each, alternately, ROUNDS times.  Prints
MB/s per run (snapshot file bytes / wall time of the etcdctl command),
then the time `etcdctl snapshot restore` and `cairn snapshot restore` take
on one snapshot of etcd's,
the medians, the cairn/etcd ratio and how much each server's anonymous
memory (RssAnon) grew while it served a snapshot (sampled every 50 ms).

Environment: SIZE_MB [200] of values, VAL_SIZE [1024], ROUNDS [3],
CAIRN_BIN [build/cairn].  Servers run on checked free loopback ports
(tests/integration/cairn_it.py), data in TMPDIR.
"""
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "tests", "integration"))
from cairn_it import ETCD_BIN, ETCDCTL_BIN, Server, rpc_pb2 as pb  # noqa

SIZE_MB = int(os.environ.get("SIZE_MB", "200"))
VAL_SIZE = int(os.environ.get("VAL_SIZE", "1024"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
CAIRN = os.environ.get("CAIRN_BIN") or os.path.join(here, "..", "build", "cairn")


def load(s):
    n = SIZE_MB * 1000 * 1000 // VAL_SIZE
    val = (b"0123456789abcdef" * (VAL_SIZE // 16 + 1))[:VAL_SIZE]
    for i in range(0, n, 100):
        ops = [pb.RequestOp(request_put=pb.PutRequest(
            key=b"/registry/bench/%08d" % j, value=val))
            for j in range(i, min(i + 100, n))]
        s.kv.Txn(pb.TxnRequest(success=ops), timeout=120)
    return n


def rss_kb(pid, field="RssAnon:"):
    """Anonymous memory (heap, buffers): the store's mapped file pages
    (LMDB's map, bbolt's) are page cache and not counted."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def save(s, path):
    env = dict(os.environ, ETCDCTL_API="3")
    if os.path.exists(path):
        os.unlink(path)
    peak = [0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_kb(s.pid))
            stop.wait(0.05)

    base = rss_kb(s.pid)
    t = threading.Thread(target=sample)
    t.start()
    t0 = time.monotonic()
    r = subprocess.run([ETCDCTL_BIN, "--endpoints", s.endpoint,
                        "--command-timeout", "600s", "snapshot", "save", path],
                       capture_output=True, text=True, env=env, timeout=900)
    dt = time.monotonic() - t0
    stop.set()
    t.join()
    if r.returncode != 0:
        raise SystemExit("snapshot save failed: %s" % r.stderr[-2000:])
    size = os.path.getsize(path)
    os.unlink(path)
    return size, dt, max(0, peak[0] - base)


def main():
    tmp = tempfile.mkdtemp(prefix="cairn-snapbench-")
    servers = {"etcd": Server(ETCD_BIN, data_dir=os.path.join(tmp, "etcd")),
               "cairn": Server(CAIRN, data_dir=os.path.join(tmp, "cairn"))}
    try:
        for name, s in servers.items():
            s.start()
            t0 = time.monotonic()
            n = load(s)
            print("%-5s loaded %d keys x %d B in %.1f s" %
                  (name, n, VAL_SIZE, time.monotonic() - t0), flush=True)
        rates = {"etcd": [], "cairn": []}
        peaks = {"etcd": 0, "cairn": 0}
        for rnd in range(ROUNDS):
            for name, s in servers.items():
                size, dt, peak = save(s, os.path.join(tmp, "snap.db"))
                rates[name].append(size / dt / 1e6)
                peaks[name] = max(peaks[name], peak)
                print("round %d %-5s %8.1f MB in %6.2f s = %7.1f MB/s "
                      "(server anon memory +%d MB)" %
                      (rnd + 1, name, size / 1e6, dt, size / dt / 1e6,
                       peak // 1024), flush=True)
        me, mc = statistics.median(rates["etcd"]), statistics.median(rates["cairn"])
        print("median: etcd %.1f MB/s, cairn %.1f MB/s, cairn/etcd %.2fx" %
              (me, mc, mc / me))
        # Restore: one snapshot of etcd's, restored by each tool.
        path = os.path.join(tmp, "restore.db")
        env = dict(os.environ, ETCDCTL_API="3")
        subprocess.run([ETCDCTL_BIN, "--endpoints", servers["etcd"].endpoint,
                        "snapshot", "save", path], check=True,
                       capture_output=True, env=env, timeout=900)
        size = os.path.getsize(path)
        times = {}
        for name, cmd in (
                ("etcdctl", [ETCDCTL_BIN, "snapshot", "restore", path,
                             "--data-dir", os.path.join(tmp, "r-etcd")]),
                ("cairn", [CAIRN, "snapshot", "restore", path,
                           "--data-dir", os.path.join(tmp, "r-cairn")])):
            t0 = time.monotonic()
            subprocess.run(cmd, check=True, capture_output=True, env=env,
                           timeout=900)
            times[name] = time.monotonic() - t0
            print("restore %-7s %.1f MB in %.2f s = %.1f MB/s" %
                  (name, size / 1e6, times[name], size / times[name] / 1e6))
        print("restore: cairn/etcdctl speed %.2fx" %
              (times["etcdctl"] / times["cairn"]))
    finally:
        for s in servers.values():
            s.cleanup()
        subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()
