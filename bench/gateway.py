#!/usr/bin/python3
"""The JSON gateway and Lock, etcd vs cairn, in one run.

For each server (fresh, one member, 127.0.0.1 on free ports via the tests'
harness) and each workload, WORKERS client processes run requests back to
back on keep-alive HTTP/1.1 connections for DURATION seconds:

  gw-put      POST /v3/kv/put (16-byte key, 64-byte value, 1,000 keys)
  gw-range    POST /v3/kv/range of one key
  lock-cycle  POST /v3/lock/lock then /v3/lock/unlock on one shared lock
              name, each worker with its own lease (a contended mutex:
              every cycle is a hand-over through Txn, Range and Watch)

Reported: ops/s per server and the cairn/etcd ratio. The clients are
Python processes on the same 2 cores, so ratios are what to read.

Knobs (environment): WORKERS [4], DURATION [5], CAIRN [build/cairn],
ETCD [/usr/bin/etcd].
"""
import base64
import http.client
import json
import multiprocessing
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "tests", "integration"))
from cairn_it import Server  # noqa: E402

WORKERS = int(os.environ.get("WORKERS", 4))
DURATION = float(os.environ.get("DURATION", 5))
CAIRN = os.environ.get("CAIRN", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                             "..", "build", "cairn"))
ETCD = os.environ.get("ETCD", "/usr/bin/etcd")


def b64(b):
    return base64.b64encode(b).decode()


def post(conn, path, body):
    conn.request("POST", path, body=json.dumps(body).encode(),
                 headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    if r.status != 200:
        raise RuntimeError("%s: %d %r" % (path, r.status, data[:200]))
    return json.loads(data) if data else {}


def worker(port, workload, wid, start_at, q):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    val = b"v" * 64
    lease = 0
    if workload == "lock-cycle":
        lease = 0x5000 + wid
        post(conn, "/v3/lease/grant", {"TTL": 600, "ID": lease})
    if workload == "gw-range":
        post(conn, "/v3/kv/put", {"key": b64(b"bench/range"), "value": b64(val)})
    while time.time() < start_at:
        time.sleep(0.001)
    end = start_at + DURATION
    n = 0
    i = wid
    while time.time() < end:
        if workload == "gw-put":
            post(conn, "/v3/kv/put", {"key": b64(b"bench/%010d" % (i % 1000)),
                                      "value": b64(val)})
            i += WORKERS
        elif workload == "gw-range":
            post(conn, "/v3/kv/range", {"key": b64(b"bench/range")})
        else:
            r = post(conn, "/v3/lock/lock", {"name": b64(b"benchlock"), "lease": lease})
            post(conn, "/v3/lock/unlock", {"key": r["key"]})
        n += 1
    q.put(n)


def run(binary, workload):
    s = Server(binary)
    s.start()
    try:
        q = multiprocessing.Queue()
        start_at = time.time() + 1.0
        ps = [multiprocessing.Process(target=worker,
                                      args=(s.client_port, workload, w, start_at, q))
              for w in range(WORKERS)]
        for p in ps:
            p.start()
        total = sum(q.get(timeout=DURATION + 60) for _ in ps)
        for p in ps:
            p.join(timeout=30)
        return total / DURATION
    finally:
        s.stop()
        s.cleanup()


def main():
    print("workers=%d duration=%.0fs" % (WORKERS, DURATION))
    print("%-11s %12s %12s %7s" % ("workload", "etcd ops/s", "cairn ops/s", "ratio"))
    for wl in ("gw-put", "gw-range", "lock-cycle"):
        e = run(ETCD, wl)
        c = run(CAIRN, wl)
        print("%-11s %12.0f %12.0f %7.2f" % (wl, e, c, c / e if e else float("nan")))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
