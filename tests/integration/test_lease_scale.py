"""Scale: 100,000 leases with one key each expire in one burst while a
writer keeps writing.

The leases are granted by LEASE_SCALE_WORKERS worker processes (one Python
process manages about 6k unary RPCs/s), each with several channels and
three pipelines of blocks: a block's 1000 grants in flight, then its keys
put with their leases (Txns of 100 puts), so at most 3000 requests per
worker are in flight and every key is attached right after its grant.
All leases have the same TTL; a graceful restart then lines their
deadlines up (a restart gives every lease its full TTL again, etcd's
lessor.Promote does the same), so they all expire together TTL seconds
after the start (if the setup took longer than the TTL, the leases granted
first expire before the restart; they are checked the same way).
Meanwhile:

* a prefix watch must see exactly one DELETE (with prev_kv) per key, each
  lease's in its own revision;
* LEASE_SCALE_KEEP other leases with the same TTL are kept alive over a
  KeepAlive stream and must survive with their keys;
* a writer puts (bounded count) and every put must succeed.

Eventually (bounded: 120 s) every key is gone, the revision is exactly the
one expected, and only the kept leases are listed (then revoked: none).

Env: LEASE_SCALE_N (default 100000; 3000 when the binary is etcd: etcd 3.4
revokes at most 1000 leases a second, one raft proposal each, and spreads
the expiries of a restart over time; 30000 in the sanitizer pass),
LEASE_SCALE_TTL (default 20; 10 for etcd and the sanitizer pass), LEASE_SCALE_WORKERS (default 2), LEASE_SCALE_KEEP (default 100).  Nothing is timed except the bound
on the whole burst.
"""

import concurrent.futures
import multiprocessing
import os
import threading
import time

import grpc

from cairn_it import is_etcd, rpc_pb2 as pb, rpc_pb2_grpc
from lease_it import (KeepAliveStream, count_prefix, grant,
                      grant_and_attach_worker, lease_ids, leases, rev_now,
                      revoke)
from watch_it import DELETE, Streams, wpb

KEEP_DEFAULT = 100
MAX_WRITES = 20000
BURST_BOUND = 120.0
KEY_FMT = "s/%06d"


def _env_int(name, default):
    v = os.environ.get(name)
    return int(v) if v else default


def test_mass_expiry(server):
    etcd = is_etcd(server.binary)
    # The sanitizer pass (CAIRN_SANITIZED) runs the same paths at a third of
    # the scale: the scale itself is the release pass's to prove.
    small = etcd or bool(os.environ.get("CAIRN_SANITIZED"))
    n = _env_int("LEASE_SCALE_N", 3000 if etcd else 30000 if small else 100000)
    ttl = _env_int("LEASE_SCALE_TTL", 10 if small else 20)
    workers = _env_int("LEASE_SCALE_WORKERS", 2)
    keep = _env_int("LEASE_SCALE_KEEP", KEEP_DEFAULT)
    assert n < 1000000                           # KEY_FMT has 6 digits

    # -- grant + attach ----------------------------------------------------
    rev0 = rev_now(server)
    t0 = time.monotonic()
    ctx = multiprocessing.get_context("spawn")
    bounds = [1 + k * n // workers for k in range(workers + 1)]
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers,
                                                mp_context=ctx) as ex:
        futs = [ex.submit(grant_and_attach_worker, server.endpoint, bounds[k],
                          bounds[k + 1], ttl, KEY_FMT) for k in range(workers)]
        results = [f.result(timeout=300) for f in futs]
    granted = sum(r[0] for r in results)
    attached = sum(r[1] for r in results)
    txns = sum(r[2] for r in results)
    errs = [e for r in results for e in r[3]]
    setup = time.monotonic() - t0
    print("granted %d, attached %d in %.1fs" % (granted, attached, setup))
    assert (granted, attached, errs) == (n, n, []), (granted, attached, errs[:10])
    kept = list(range(n + 1, n + 1 + keep))
    for lid in kept:
        grant(server, ttl, lid)
        server.kv.Put(pb.PutRequest(key=b"keep/%d" % lid, value=b"k", lease=lid),
                      timeout=10)

    # -- restart: every lease gets its full TTL again ------------------------
    rc = server.stop()
    assert etcd or rc == 0, "graceful stop exited %r\n%s" % (rc, server.log_tail())
    t_start = time.monotonic()
    server.start()
    rev = rev_now(server)
    # Leases granted first expire before the restart if the setup took
    # longer than the TTL (a slow or busy machine): each such revoke is one
    # revision, and its key is deleted and watched like the others.
    early = rev - (rev0 + txns + keep)
    print("%d leases expired before the restart" % early)
    assert 0 <= early <= n
    assert len(leases(server).leases) == n + keep - early
    assert count_prefix(server, b"s/", b"s0") == n - early

    streams = Streams()
    stop = threading.Event()
    state = {"writes": 0, "write_errs": [], "max_lat": 0.0, "ka_errs": [],
             "ka_rounds": 0}

    def keepalive():
        ka = KeepAliveStream(streams.channel(server))
        try:
            for _ in range(int(BURST_BOUND + ttl + 60)):   # 1 s apart, bounded
                for lid in kept:
                    ka.send(lid)
                for lid in kept:
                    r = ka.get(timeout=30)
                    if (r.ID, r.TTL) != (lid, ttl) and len(state["ka_errs"]) < 10:
                        state["ka_errs"].append((lid, r.ID, r.TTL))
                state["ka_rounds"] += 1
                if stop.wait(1.0):
                    return
        except Exception as e:  # noqa: BLE001 (reported below)
            state["ka_errs"].append(repr(e))
        finally:
            ka.close()

    def writer():
        kv = rpc_pb2_grpc.KVStub(streams.channel(server))
        # start a second before the burst
        if stop.wait(max(0.0, t_start + ttl - 1 - time.monotonic())):
            return
        for i in range(MAX_WRITES):
            if stop.is_set():
                return
            t = time.monotonic()
            try:
                kv.Put(pb.PutRequest(key=b"w/%05d" % i, value=b"x"), timeout=30)
                state["writes"] += 1
            except grpc.RpcError as e:
                state["write_errs"].append((i, e.code(), e.details()))
                if len(state["write_errs"]) >= 10:
                    return
            state["max_lat"] = max(state["max_lat"], time.monotonic() - t)

    threads = [threading.Thread(target=keepalive, daemon=True),
               threading.Thread(target=writer, daemon=True)]
    try:
        ws = streams.open(server)
        ws.create_ok(b"s/", b"s0", start_revision=rev0 + 1, prev_kv=True,
                     filters=[wpb.NOPUT])
        for t in threads:
            t.start()

        # -- the burst -------------------------------------------------------
        seen = {}
        revs = set()
        first = last = None
        deadline = t_start + ttl + BURST_BOUND
        while len(seen) < n:
            left = deadline - time.monotonic()
            assert left > 0, "only %d of %d keys expired within %.0fs of the " \
                "deadline" % (len(seen), n, BURST_BOUND)
            r = ws.get(timeout=left)
            if not r.events:
                continue
            now = time.monotonic()
            first = first or now
            last = now
            for e in r.events:
                assert e.type == DELETE, e
                k = e.kv.key
                assert k not in seen, "second DELETE of %r" % k
                lid = int(k[2:])
                assert 1 <= lid <= n, k
                assert (e.prev_kv.key, e.prev_kv.value, e.prev_kv.lease) == \
                    (k, b"v%d" % lid, lid), e
                seen[k] = e.kv.mod_revision
                revs.add(e.kv.mod_revision)
        # one revision per lease (one key each)
        assert len(revs) == n
        print("burst: first delete %.1fs after the start, %d deletes over %.1fs"
              % (first - t_start, n, last - first))
        gone_by = time.monotonic() + 30
        while count_prefix(server, b"s/", b"s0") != 0:
            assert time.monotonic() < gone_by
            time.sleep(0.2)
        while len(leases(server).leases) != keep:
            assert time.monotonic() < gone_by, len(leases(server).leases)
            time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
        streams.close()
    print("writer: %d puts, max latency %.3fs; keepalive rounds %d"
          % (state["writes"], state["max_lat"], state["ka_rounds"]))
    assert not any(t.is_alive() for t in threads)
    assert state["write_errs"] == [], state["write_errs"]
    assert state["ka_errs"] == [], state["ka_errs"]
    assert state["writes"] > 0
    assert sorted(lease_ids(server)) == kept
    assert count_prefix(server, b"keep/", b"keep0") == keep
    assert count_prefix(server, b"w/", b"w0") == state["writes"]
    assert rev_now(server) == rev0 + txns + keep + n + state["writes"]
    for lid in kept:
        revoke(server, lid)
    assert len(leases(server).leases) == 0
    assert count_prefix(server, b"keep/", b"keep0") == 0

