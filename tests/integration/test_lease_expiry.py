"""Lease expiry: keys vanish within TTL + slack, each as exactly one DELETE
event (with prev_kv) on a live watch, all keys of one lease in one revision;
restarts (graceful and kill -9) lose no lease and no attachment and expire
nothing early; kube-apiserver's one-lease-for-many-keys pattern.

Timing bounds (the only ones in these tests) are generous: a lease cannot
expire before its TTL has passed since the server received the grant (or,
after a restart, since the server started: etcd, too, gives every lease its
full TTL again when a member becomes leader, lessor.Promote, plus an
election timeout), and must be gone within TTL + SLACK.
"""

import time

import pytest

from cairn_it import is_etcd, rpc_pb2 as pb
from lease_it import (KeepAliveStream, count_prefix, grant, keys_with_prefix,
                      lease_ids, rev_now, revoke, ttl_of)
from watch_it import DELETE, PUT, Streams, ev_tuple, put

SLACK = 3.0


@pytest.fixture
def streams():
    s = Streams()
    try:
        yield s
    finally:
        s.close()


def events_until(ws, n, deadline, what):
    """n events from ws, failing if they are not all in by ``deadline``
    (a time.monotonic() value)."""
    left = deadline - time.monotonic()
    assert left > 0, "no time left for %s" % what
    try:
        evs, _ = ws.events(n, timeout=left)
    except AssertionError as e:
        raise AssertionError("%s: %s" % (what, e)) from None
    return evs


def deletes_of(kvs, rev, lease_id):
    """Expected DELETE event tuples (key order, one revision) for kvs, the
    KeyValues as they were before the expiry."""
    return [(DELETE, kv.key, b"", 0, rev, 0, 0,
             (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version,
              lease_id))
            for kv in sorted(kvs, key=lambda kv: kv.key)]


def test_expiry_deletes_each_key_once(server, streams):
    t0 = time.monotonic()
    grant(server, 2, 11)
    grant(server, 4, 12)
    for k, lid in [(b"e/c", 11), (b"e/a", 11), (b"e/b", 11), (b"e/d", 12),
                   (b"e/x", 0)]:
        put(server, k, b"v-" + k, lease=lid)
    rev = rev_now(server)
    before = keys_with_prefix(server, b"e/", b"e0")
    ws = streams.open(server)
    ws.create_ok(b"e/", b"e0", start_revision=rev + 1, prev_kv=True)

    evs = events_until(ws, 3, t0 + 2 + SLACK, "lease 11's keys (TTL 2)")
    elapsed = time.monotonic() - t0
    assert elapsed >= 2 - 0.5, "expired after %.2fs, TTL 2" % elapsed
    assert [ev_tuple(e) for e in evs] == deletes_of(
        [before[k] for k in (b"e/a", b"e/b", b"e/c")], rev + 1, 11)
    evs = events_until(ws, 1, t0 + 4 + SLACK, "lease 12's key (TTL 4)")
    elapsed = time.monotonic() - t0
    assert elapsed >= 4 - 0.5, "expired after %.2fs, TTL 4" % elapsed
    assert [ev_tuple(e) for e in evs] == deletes_of([before[b"e/d"]], rev + 2, 12)
    # nothing else happened in between (no second DELETE of any key)
    put(server, b"e/z", b"barrier")
    evs, _ = ws.events(1)
    assert ev_tuple(evs[0]) == (PUT, b"e/z", b"barrier", rev + 3, rev + 3, 1, 0, None)
    assert sorted(keys_with_prefix(server, b"e/", b"e0")) == [b"e/x", b"e/z"]
    assert lease_ids(server) == []
    for lid in (11, 12):
        t = ttl_of(server, lid, keys=True)
        assert (t.TTL, t.grantedTTL, list(t.keys)) == (-1, 0, []), t


@pytest.mark.parametrize("kill", [False, True], ids=["graceful", "kill9"])
def test_restart_keeps_leases_and_renews_them(server, streams, kill):
    """TTL 5; the server goes down 3 s after the grant and stays down 2.5 s
    (past the TTL).  After the restart the lease, its keys and their
    attachment are all there, the keys still exist 4 s after the start (the
    full TTL applies again), and expire within 5 s + slack of it, with one
    DELETE event each, in one revision."""
    t_grant = time.monotonic()
    grant(server, 5, 21)
    grant(server, 1000, 22)
    for k, lid in [(b"r/b", 21), (b"r/a", 21), (b"r/c", 22), (b"r/d", 0)]:
        put(server, k, b"v-" + k, lease=lid)
    chosen = grant(server, 1000).ID
    rev = rev_now(server)
    before = keys_with_prefix(server, b"r/", b"r0")
    ka = KeepAliveStream(server.new_channel(), own_channel=True)
    try:
        assert ka.renew(22).TTL == 1000           # a stream open at the stop
        time.sleep(max(0.0, t_grant + 3 - time.monotonic()))
        if kill:
            server.kill9()
        else:
            rc = server.stop()
            if not is_etcd(server.binary):
                assert rc == 0, "graceful stop exited %r\n%s" % (rc, server.log_tail())
    finally:
        ka.close()
    time.sleep(2.5)
    t_start = time.monotonic()
    server.start()
    t_ready = time.monotonic()

    assert rev_now(server) == rev
    assert sorted(lease_ids(server)) == sorted([21, 22, chosen])
    t = ttl_of(server, 21, keys=True)
    assert t.grantedTTL == 5 and sorted(t.keys) == [b"r/a", b"r/b"], t
    assert t.TTL >= 3, t                          # renewed, not 5 - 5.5
    t = ttl_of(server, 22, keys=True)
    assert t.grantedTTL == 1000 and list(t.keys) == [b"r/c"], t
    assert keys_with_prefix(server, b"r/", b"r0") == before
    # server-chosen IDs do not repeat one from before the restart
    again = grant(server, 1000).ID
    assert again > 0 and again not in (21, 22, chosen)

    ws = streams.open(server)
    ws.create_ok(b"r/", b"r0", start_revision=rev + 1, prev_kv=True)
    # nothing expires early: 4 s after the start, 1 s before the earliest
    # possible deadline
    time.sleep(max(0.0, t_start + 4 - time.monotonic()))
    got = keys_with_prefix(server, b"r/", b"r0")
    assert sorted(got) == [b"r/a", b"r/b", b"r/c", b"r/d"], \
        "keys gone %.2fs after the restart began" % (time.monotonic() - t_start)
    evs = events_until(ws, 2, t_ready + 5 + SLACK, "lease 21's keys after the restart")
    assert [ev_tuple(e) for e in evs] == deletes_of(
        [before[b"r/a"], before[b"r/b"]], rev + 1, 21)
    put(server, b"r/z", b"barrier")
    evs, _ = ws.events(1)
    assert ev_tuple(evs[0]) == (PUT, b"r/z", b"barrier", rev + 2, rev + 2, 1, 0, None)
    assert ttl_of(server, 21).TTL == -1
    assert sorted(lease_ids(server)) == sorted([22, chosen, again])
    assert revoke(server, 22).header.revision == rev + 3
    assert sorted(keys_with_prefix(server, b"r/", b"r0")) == [b"r/d", b"r/z"]


def test_kube_apiserver_lease_reuse(server, streams):
    """kube-apiserver attaches every key it writes with a TTL (events) in a
    time window to one lease: Txn(mod_revision == 0 ? put with lease :
    range).  1000 keys; when the lease expires all 1000 go in one revision,
    1000 DELETE events with prev_kv on the prefix watch."""
    from cairn_it import rpc_pb2_grpc
    n, ttl = 1000, 5
    prefix, end = b"/registry/events/default/", b"/registry/events/default0"
    rev0 = rev_now(server)
    ws = streams.open(server)
    ws.create_ok(prefix, end, start_revision=rev0 + 1, prev_kv=True)
    t0 = time.monotonic()
    lid = grant(server, ttl).ID
    chans = [streams.channel(server) for _ in range(4)]
    stubs = [rpc_pb2_grpc.KVStub(c) for c in chans]

    def create(i):
        key = prefix + b"ev-%04d" % i
        return stubs[i % 4].Txn.future(pb.TxnRequest(
            compare=[pb.Compare(key=key, target=pb.Compare.MOD,
                                result=pb.Compare.EQUAL, mod_revision=0)],
            success=[pb.RequestOp(request_put=pb.PutRequest(
                key=key, value=b"event %d" % i, lease=lid))],
            failure=[pb.RequestOp(request_range=pb.RangeRequest(key=key))]),
            timeout=30)

    revs = []
    for b in range(0, n, 200):                    # at most 200 in flight
        futs = [create(i) for i in range(b, b + 200)]
        for f in futs:
            r = f.result()
            assert r.succeeded, r
            revs.append(r.header.revision)
    assert sorted(revs) == list(range(rev0 + 1, rev0 + n + 1))
    setup = time.monotonic() - t0
    assert setup < ttl, "creating %d keys took %.1fs, over the TTL" % (n, setup)
    r = create(7).result()                        # "already exists"
    assert not r.succeeded
    assert r.responses[0].response_range.kvs[0].lease == lid, r
    assert len(ttl_of(server, lid, keys=True).keys) == n

    puts = events_until(ws, n, t0 + ttl + SLACK, "the %d creates" % n)
    assert all(e.type == PUT and e.kv.lease == lid for e in puts)
    before = {e.kv.key: e.kv for e in puts}
    assert len(before) == n
    dels = events_until(ws, n, t0 + ttl + SLACK, "the %d expiry deletes" % n)
    elapsed = time.monotonic() - t0
    assert elapsed >= ttl - 0.5, "expired after %.2fs, TTL %d" % (elapsed, ttl)
    want = deletes_of(before.values(), rev0 + n + 1, lid)
    got = [ev_tuple(e) for e in dels]
    assert got == want
    put(server, prefix + b"barrier", b"x")
    evs, _ = ws.events(1)
    assert evs[0].type == PUT and evs[0].kv.mod_revision == rev0 + n + 2, evs
    assert list(keys_with_prefix(server, prefix, end)) == [prefix + b"barrier"]
    assert ttl_of(server, lid).TTL == -1
    assert lease_ids(server) == []


@pytest.mark.parametrize("kill", [False, True], ids=["graceful", "kill9"])
def test_stop_during_mass_expiry(server, streams, kill):
    """Many one-key leases expire; the server is stopped (SIGTERM or
    kill -9) in the middle of the burst and started again.  Every key is
    deleted exactly once, each lease in its own revision (the revokes that
    were committed before the stop and those after the restart), none is
    lost, and afterwards no lease is left."""
    from cairn_it import rpc_pb2_grpc
    etcd = is_etcd(server.binary)
    n, ttl = (2000, 5) if etcd else (10000, 5)
    chans = [streams.channel(server) for _ in range(4)]
    lstubs = [rpc_pb2_grpc.LeaseStub(c) for c in chans]
    kstubs = [rpc_pb2_grpc.KVStub(c) for c in chans]
    rev0 = rev_now(server)
    for b in range(1, n + 1, 500):                # at most 500 in flight
        futs = [lstubs[i % 4].LeaseGrant.future(
            pb.LeaseGrantRequest(ID=i, TTL=ttl), timeout=30)
            for i in range(b, min(n + 1, b + 500))]
        for f in futs:
            assert f.result().TTL == ttl
    futs = []
    for b in range(1, n + 1, 100):
        ops = [pb.RequestOp(request_put=pb.PutRequest(key=b"m/%05d" % i,
                                                      value=b"v%d" % i, lease=i))
               for i in range(b, min(n + 1, b + 100))]
        futs.append(kstubs[b % 4].Txn.future(pb.TxnRequest(success=ops), timeout=30))
    for f in futs:
        f.result()
    rev = rev_now(server)
    assert rev == rev0 + (n + 99) // 100
    ws = streams.open(server)
    ws.create_ok(b"m/", b"m0", start_revision=rev + 1, prev_kv=True)
    # wait for the burst to begin, then stop the server inside it
    seen_before = 0
    deadline = time.monotonic() + ttl + 30
    while seen_before < n // 10:
        r = ws.get(timeout=max(0.1, deadline - time.monotonic()))
        seen_before += len(r.events)
    if kill:
        server.kill9()
    else:
        rc = server.stop()
        assert etcd or rc == 0, "graceful stop exited %r\n%s" % (rc, server.log_tail())
    streams.close()
    t_start = time.monotonic()
    server.start()
    left = rev_now(server) - rev
    assert seen_before <= left <= n, (seen_before, left)
    print("%d of %d revoked before the %s" % (left, n, "kill" if kill else "stop"))

    ws = streams.open(server)
    ws.create_ok(b"m/", b"m0", start_revision=rev + 1, prev_kv=True)
    seen = {}
    deadline = t_start + ttl + SLACK + 60        # plus the burst itself
    while len(seen) < n:
        left_s = deadline - time.monotonic()
        assert left_s > 0, "%d of %d keys deleted" % (len(seen), n)
        r = ws.get(timeout=left_s)
        for e in r.events:
            assert e.type == DELETE, e
            k = e.kv.key
            assert k not in seen, "second DELETE of %r" % k
            lid = int(k[2:])
            assert (e.prev_kv.value, e.prev_kv.lease) == (b"v%d" % lid, lid), e
            seen[k] = e.kv.mod_revision
    assert sorted(seen.values()) == list(range(rev + 1, rev + n + 1))
    assert rev_now(server) == rev + n
    assert count_prefix(server, b"m/", b"m0") == 0
    gone_by = time.monotonic() + 30
    while lease_ids(server):
        assert time.monotonic() < gone_by, len(lease_ids(server))
        time.sleep(0.2)
