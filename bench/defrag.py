#!/usr/bin/python3
"""Defragment stall, etcd vs cairn, in one run.

For each server: load VALUES puts of VAL_SIZE bytes over KEYS keys (history
to reclaim), compact it away (physical), then run one writer doing small
puts back to back while Maintenance.Defragment runs. Reported per server:
how long Defragment took, the slowest put that overlapped it (the stall a
client sees), the writer's p50 outside it, and the data file's size on disk
before and after. Servers bind 127.0.0.1 on free ports (tests' harness).

Knobs (environment): VALUES [12000], VAL_SIZE [8192], KEYS [200],
CAIRN [build/cairn], ETCD [/usr/bin/etcd].
"""
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "tests", "integration"))
from cairn_it import Server, rpc_pb2 as pb, rpc_pb2_grpc  # noqa: E402

VALUES = int(os.environ.get("VALUES", 12000))
VAL_SIZE = int(os.environ.get("VAL_SIZE", 8192))
KEYS = int(os.environ.get("KEYS", 200))
CAIRN = os.environ.get("CAIRN", os.path.join(os.path.dirname(__file__), "..", "build", "cairn"))
ETCD = os.environ.get("ETCD", "/usr/bin/etcd")
T = 60


def db_file(s):
    for p in ("data.mdb", "member/snap/db"):
        f = os.path.join(s.data_dir, p)
        if os.path.exists(f):
            return f
    raise RuntimeError("no db file in " + s.data_dir)


def disk(f):
    st = os.stat(f)
    return min(st.st_blocks * 512, st.st_size)


def load(s):
    val = b"v" * VAL_SIZE
    per = VALUES // 4

    def part(n0):
        kv = rpc_pb2_grpc.KVStub(s.new_channel())
        for i in range(n0, n0 + per):
            kv.Put(pb.PutRequest(key=b"h%05d" % (i % KEYS), value=val), timeout=T)
    ts = [threading.Thread(target=part, args=(j * per,)) for j in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def run(binary):
    s = Server(binary, extra_args=["--quota-backend-bytes", str(8 << 30)])
    s.start()
    try:
        load(s)
        kv = rpc_pb2_grpc.KVStub(s.channel())
        m = rpc_pb2_grpc.MaintenanceStub(s.channel())
        rev = kv.Range(pb.RangeRequest(key=b"x"), timeout=T).header.revision
        kv.Compact(pb.CompactionRequest(revision=rev, physical=True), timeout=T)
        for i in range(3):
            kv.Put(pb.PutRequest(key=b"tick", value=b"%d" % i), timeout=T)
        f = db_file(s)
        before = disk(f)
        lat = []            # (start, end) of every put
        stop = threading.Event()

        def writer():
            wkv = rpc_pb2_grpc.KVStub(s.new_channel())
            i = 0
            end = time.monotonic() + 120
            while not stop.is_set() and time.monotonic() < end and i < 500000:
                t0 = time.monotonic()
                wkv.Put(pb.PutRequest(key=b"w%d" % (i % 100), value=b"x" * 64), timeout=T)
                lat.append((t0, time.monotonic()))
                i += 1
        w = threading.Thread(target=writer)
        w.start()
        time.sleep(1.0)
        d0 = time.monotonic()
        m.Defragment(pb.DefragmentRequest(), timeout=120)
        d1 = time.monotonic()
        after = disk(f)
        time.sleep(1.0)
        stop.set()
        w.join()
        later = disk(f)
        log = [l for l in open(s.log_path, errors="replace") if "finished defragment" in l]
        during = [e - b for b, e in lat if e >= d0 and b <= d1]
        outside = sorted(e - b for b, e in lat if e < d0 or b > d1)
        return dict(defrag_s=d1 - d0,
                    worst_ms=max(during) * 1000 if during else 0.0,
                    puts_during=len(during),
                    p50_ms=outside[len(outside) // 2] * 1000 if outside else 0.0,
                    before=before, after=after, later=later, log=log[-1].strip() if log else "")
    finally:
        s.stop()
        s.cleanup()


def main():
    print("defrag bench: %d puts x %d B over %d keys, compacted, then Defragment "
          "with a writer running" % (VALUES, VAL_SIZE, KEYS))
    res = {}
    for n in os.environ.get("SERVERS", "etcd,cairn").split(","):
        res[n] = run(ETCD if n == "etcd" else CAIRN)
    fmt = "%-6s defrag %7.3f s  slowest put during it %8.1f ms (%d puts)  " \
          "put p50 otherwise %.2f ms\n       disk %6.1f MB before, %6.1f MB right after, %6.1f MB after 1 s more writes"
    for n, r in res.items():
        print(fmt % (n, r["defrag_s"], r["worst_ms"], r["puts_during"], r["p50_ms"],
                     r["before"] / 1e6, r["after"] / 1e6, r["later"] / 1e6))
        if r["log"]:
            print("       server: " + r["log"])
    e, c = res.get("etcd"), res.get("cairn")
    if e and c and c["worst_ms"] > 0:
        print("stall ratio (etcd/cairn slowest put during defragment): %.1f"
              % (e["worst_ms"] / c["worst_ms"]))


if __name__ == "__main__":
    main()
