"""Lease service against the server under test: every RPC and error case,
leases on Put/Txn, etcdctl's `lease` commands and python3-etcd3's lease API.

Expected behaviour is etcd 3.4's (lease/lessor.go, etcdserver/v3_server.go,
etcdserver/api/v3rpc/lease.go, etcdserver/apply.go); every test also passes
with CAIRN_BIN=/usr/bin/etcd.  Each test gets a fresh server, so revisions
are exact.  TTLs requested here are >= 2 s, the minimum under etcd's default
raft timing, except in test_min_ttl, which sets the timing flags explicitly
(the harness gives etcd a 100 ms election timeout, whose minimum is 1 s).

Remaining-TTL values are compared with a 1 s tolerance (etcd truncates the
remaining time to whole seconds).  Expiry is covered in test_lease_expiry.py.
"""

import json
import os
import re
import subprocess
import tempfile
import time

import grpc
import pytest

import etcd3
import etcd3.exceptions

from cairn_it import ETCDCTL_BIN, is_etcd, rpc_pb2 as pb, rpc_pb2_grpc
from lease_it import (E_EXISTS, E_KEY_NOT_FOUND, E_LEASE_PROVIDED, E_NOT_FOUND,
                      E_TOO_LARGE, MAX_LEASE_TTL, KeepAliveStream, err_of,
                      grant, keepalive_once, lease_ids, lease_stub, leases,
                      min_ttl, rev_now, revoke, timing_args, ttl_of)
from watch_it import DELETE, PUT, Streams, ev_tuple, op_del, op_put, put, txn


@pytest.fixture
def streams():
    s = Streams()
    try:
        yield s
    finally:
        s.close()


def ttl_keys(server, lease_id):
    return set(ttl_of(server, lease_id, keys=True).keys)


def get_kv(server, key):
    r = server.kv.Range(pb.RangeRequest(key=key), timeout=10)
    return r.kvs[0] if r.kvs else None


def near(got, want):
    """A remaining TTL: truncated to whole seconds, so want-1 .. want."""
    return want - 1 <= got <= want


# --------------------------------------------------------------------------
# LeaseGrant
# --------------------------------------------------------------------------

def test_grant_server_chosen_ids(server):
    r0 = rev_now(server)
    ids = []
    for _ in range(20):
        r = grant(server, 30)
        assert r.ID > 0 and r.TTL == 30 and r.error == "", r
        # a grant writes no key: the revision does not move
        assert r.header.revision == r0, r
        assert r.header.cluster_id and r.header.member_id and r.header.raft_term, r
        ids.append(r.ID)
    assert len(set(ids)) == len(ids), ids
    assert set(lease_ids(server)) == set(ids)
    assert rev_now(server) == r0


def test_grant_client_ids_and_errors(server):
    r0 = rev_now(server)
    r = grant(server, 30, 42)
    assert (r.ID, r.TTL, r.header.revision) == (42, 30, r0), r
    # the same ID again, whatever the TTL
    assert err_of(lease_stub(server).LeaseGrant,
                  pb.LeaseGrantRequest(ID=42, TTL=30)) == E_EXISTS
    assert err_of(lease_stub(server).LeaseGrant,
                  pb.LeaseGrantRequest(ID=42, TTL=5)) == E_EXISTS
    # negative IDs are accepted (etcd only refuses 0, which means "choose")
    r = grant(server, 30, -7)
    assert (r.ID, r.TTL) == (-7, 30), r
    # the largest TTL, and one more
    r = grant(server, MAX_LEASE_TTL, 43)
    assert (r.ID, r.TTL) == (43, MAX_LEASE_TTL), r
    for ttl in (MAX_LEASE_TTL + 1, 2 ** 62, 2 ** 63 - 1):
        assert err_of(lease_stub(server).LeaseGrant,
                      pb.LeaseGrantRequest(ID=44, TTL=ttl)) == E_TOO_LARGE
        assert err_of(lease_stub(server).LeaseGrant,
                      pb.LeaseGrantRequest(ID=0, TTL=ttl)) == E_TOO_LARGE
    # etcd checks the TTL before whether the lease exists
    assert err_of(lease_stub(server).LeaseGrant,
                  pb.LeaseGrantRequest(ID=42, TTL=MAX_LEASE_TTL + 1)) == E_TOO_LARGE
    assert sorted(lease_ids(server)) == [-7, 42, 43]
    assert rev_now(server) == r0
    t = ttl_of(server, 43)
    assert t.grantedTTL == MAX_LEASE_TTL and near(t.TTL, MAX_LEASE_TTL), t
    assert keepalive_once(server, 43).TTL == MAX_LEASE_TTL
    # a refused ID is still free
    assert grant(server, 30, 44).ID == 44


@pytest.mark.parametrize("hb,et", [(100, 1000), (100, 3000)])
def test_min_ttl(server_factory, hb, et):
    """TTLs below ceil(1.5 election timeouts) are raised to it: in the
    grant response, in TimeToLive's grantedTTL and in KeepAlive."""
    s = server_factory(extra_args=timing_args(hb, et))
    m = min_ttl(hb, et)
    assert m == {1000: 2, 3000: 5}[et]
    cases = [(1, -5), (2, 0), (3, 1), (4, m - 1), (5, m), (6, m + 1), (7, m + 7)]
    for lid, ttl in cases:
        want = max(ttl, m)
        r = grant(s, ttl, lid)
        assert (r.ID, r.TTL) == (lid, want), (ttl, r)
        assert ttl_of(s, lid).grantedTTL == want
        assert keepalive_once(s, lid).TTL == want
    r = grant(s, 1)                       # server-chosen ID too
    assert r.TTL == m and r.ID > 0, r


# --------------------------------------------------------------------------
# LeaseRevoke
# --------------------------------------------------------------------------

def test_revoke_deletes_keys_in_one_revision(server, streams):
    grant(server, 60, 101)
    grant(server, 60, 102)
    for k, lid in [(b"rv/c", 101), (b"rv/a", 101), (b"rv/b", 101), (b"rv/d", 102),
                   (b"rv/e", 0)]:
        put(server, k, b"val-" + k, lease=lid)
    rev = rev_now(server)
    assert rev == 6
    before = {k: get_kv(server, k) for k in (b"rv/a", b"rv/b", b"rv/c")}
    ws = streams.open(server)
    ws.create_ok(b"rv/", b"rv0", start_revision=rev + 1, prev_kv=True)

    r = revoke(server, 101)
    assert r.header.revision == rev + 1, r
    # unknown, already revoked, and 0
    for lid in (101, 999, 0, -1):
        assert err_of(lease_stub(server).LeaseRevoke,
                      pb.LeaseRevokeRequest(ID=lid)) == E_NOT_FOUND
    assert rev_now(server) == rev + 1
    t = ttl_of(server, 101, keys=True)
    assert (t.ID, t.TTL, t.grantedTTL, list(t.keys)) == (101, -1, 0, []), t
    assert lease_ids(server) == [102]
    assert revoke(server, 102).header.revision == rev + 2
    # a lease without keys: no revision
    grant(server, 60, 103)
    assert revoke(server, 103).header.revision == rev + 2
    assert lease_ids(server) == []
    put(server, b"rv/z", b"barrier")              # rev + 3

    evs, _ = ws.events(5)
    got = [ev_tuple(e) for e in evs]
    want = []
    for k in (b"rv/a", b"rv/b", b"rv/c"):         # key order, one revision
        p = before[k]
        want.append((DELETE, k, b"", 0, rev + 1, 0, 0,
                     (k, b"val-" + k, p.create_revision, p.mod_revision, 1, 101)))
    want.append((DELETE, b"rv/d", b"", 0, rev + 2, 0, 0,
                 (b"rv/d", b"val-rv/d", 5, 5, 1, 102)))
    want.append((PUT, b"rv/z", b"barrier", rev + 3, rev + 3, 1, 0, None))
    assert got == want
    r = server.kv.Range(pb.RangeRequest(key=b"rv/", range_end=b"rv0"), timeout=10)
    assert [kv.key for kv in r.kvs] == [b"rv/e", b"rv/z"]


# --------------------------------------------------------------------------
# LeaseTimeToLive / LeaseLeases
# --------------------------------------------------------------------------

def test_timetolive(server):
    grant(server, 30, 7)
    t = ttl_of(server, 7, keys=True)
    assert t.ID == 7 and t.grantedTTL == 30 and near(t.TTL, 30), t
    assert list(t.keys) == [] and t.header.revision == 1, t
    put(server, b"t/2", b"x", lease=7)
    put(server, b"t/1", b"x", lease=7)
    put(server, b"t/3", b"x")
    t = ttl_of(server, 7, keys=True)
    assert t.header.revision == 4, t
    # etcd's order is its map's (random): compare as a set
    assert sorted(t.keys) == [b"t/1", b"t/2"], t
    t = ttl_of(server, 7, keys=False)
    assert list(t.keys) == [] and t.grantedTTL == 30, t
    for lid in (8, 0, -7):
        t = ttl_of(server, lid, keys=True)
        assert (t.ID, t.TTL, t.grantedTTL, list(t.keys)) == (lid, -1, 0, []), t
        assert t.header.revision == 4, t
    # the remaining time goes down
    time.sleep(1.2)
    t = ttl_of(server, 7)
    assert 0 < t.TTL <= 28 and t.grantedTTL == 30, t


def test_leases_on_fresh_server(server):
    """LeaseLeases before any lease was ever granted, and after the last
    one is gone."""
    for _ in range(2):
        r = leases(server)
        assert list(r.leases) == [] and r.header.revision == 1, r
    grant(server, 30, 1)
    assert lease_ids(server) == [1]
    revoke(server, 1)
    r = leases(server)
    assert list(r.leases) == [] and r.header.revision == 1, r


def test_leases_sorted_by_expiry(server):
    r = leases(server)
    assert list(r.leases) == [] and r.header.revision == 1, r
    grant(server, 100, 1)
    grant(server, 50, 2)
    grant(server, 200, 3)
    grant(server, 50, 4)
    put(server, b"k", b"v", lease=1)
    r = leases(server)
    assert [l.ID for l in r.leases] == [2, 4, 1, 3] and r.header.revision == 2, r
    time.sleep(0.05)
    assert keepalive_once(server, 2).TTL == 50   # now expires after 4
    assert lease_ids(server) == [4, 2, 1, 3]
    revoke(server, 1)
    assert lease_ids(server) == [4, 2, 3]


def test_leases_order_of_renewals_within_a_millisecond(server):
    """Leases renewed back to back (one KeepAlive stream, no pause) are
    listed in renewal order: etcd sorts by expiry time in nanoseconds."""
    ids = list(range(1, 61))
    for i in ids:
        grant(server, 100, i)
    time.sleep(0.1)
    ka = KeepAliveStream(server.new_channel(), own_channel=True)
    try:
        for i in reversed(ids):
            ka.send(i)
        got = [ka.get().ID for _ in ids]
        assert got == list(reversed(ids))
    finally:
        ka.close()
    assert lease_ids(server) == list(reversed(ids))


# --------------------------------------------------------------------------
# LeaseKeepAlive
# --------------------------------------------------------------------------

def test_keepalive_stream(server):
    grant(server, 10, 5)
    grant(server, 20, 6)
    ka = KeepAliveStream(server.new_channel(), own_channel=True)
    try:
        r = ka.renew(5)
        assert (r.ID, r.TTL, r.header.revision) == (5, 10, 1), r
        assert r.header.cluster_id and r.header.member_id and r.header.raft_term, r
        assert ka.renew(6).TTL == 20
        for lid in (77, 0, -5):                   # unknown: TTL 0, no error
            r = ka.renew(lid)
            assert (r.ID, r.TTL) == (lid, 0), r
        # pipelined: answered in order
        for lid in (5, 77, 6, 5):
            ka.send(lid)
        assert [(r.ID, r.TTL) for r in (ka.get() for _ in range(4))] == [
            (5, 10), (77, 0), (6, 20), (5, 10)]
        put(server, b"k", b"v", lease=6)
        r = ka.renew(6)
        assert (r.TTL, r.header.revision) == (20, 2), r
        revoke(server, 6)                          # revision 3
        r = ka.renew(6)
        assert (r.ID, r.TTL, r.header.revision) == (6, 0, 3), r
        assert ka.renew(5).TTL == 10               # the stream goes on
        ka.half_close()
        ka.wait_end()
    finally:
        ka.close()


def test_keepalive_keeps_lease_alive(server):
    grant(server, 2, 9)
    put(server, b"ka", b"v", lease=9)
    ka = KeepAliveStream(server.new_channel(), own_channel=True)
    try:
        t0 = time.monotonic()
        for _ in range(10):                       # 5 s: over twice the TTL
            time.sleep(0.5)
            r = ka.renew(9)
            assert r.TTL == 2, r
            assert get_kv(server, b"ka") is not None
        assert time.monotonic() - t0 >= 4.5
        t = ttl_of(server, 9, keys=True)
        assert t.grantedTTL == 2 and list(t.keys) == [b"ka"], t
        last = time.monotonic()
        ka.half_close()
        ka.wait_end()
    finally:
        ka.close()
    # no more renewals: gone within TTL + 3 s of the last one
    deadline = last + 2 + 3
    while get_kv(server, b"ka") is not None:
        assert time.monotonic() < deadline, "key still there %.1fs after the " \
            "last renewal" % (time.monotonic() - last)
        time.sleep(0.1)
    r = keepalive_once(server, 9)
    assert (r.ID, r.TTL) == (9, 0), r
    assert ttl_of(server, 9).TTL == -1


# --------------------------------------------------------------------------
# Put / Txn with leases
# --------------------------------------------------------------------------

def test_put_attach_move_detach(server):
    grant(server, 60, 1)
    grant(server, 60, 2)
    r = put(server, b"k1", b"a", lease=1)
    assert r.header.revision == 2
    assert get_kv(server, b"k1").lease == 1
    assert ttl_keys(server, 1) == {b"k1"}
    # re-attach to another lease: the key moves
    r = put(server, b"k1", b"b", lease=2, prev_kv=True)
    assert r.prev_kv.lease == 1 and r.prev_kv.value == b"a", r
    assert get_kv(server, b"k1").lease == 2
    assert ttl_keys(server, 1) == set() and ttl_keys(server, 2) == {b"k1"}
    # ignore_lease keeps it
    put(server, b"k1", b"c", ignore_lease=True)
    kv = get_kv(server, b"k1")
    assert (kv.value, kv.lease, kv.version) == (b"c", 2, 3), kv
    assert ttl_keys(server, 2) == {b"k1"}
    # ignore_value keeps the value, and a lease given with it attaches
    put(server, b"k1", b"", ignore_value=True, lease=1)
    kv = get_kv(server, b"k1")
    assert (kv.value, kv.lease) == (b"c", 1), kv
    assert ttl_keys(server, 1) == {b"k1"} and ttl_keys(server, 2) == set()
    # overwrite without a lease detaches
    put(server, b"k1", b"d")
    assert get_kv(server, b"k1").lease == 0
    assert ttl_keys(server, 1) == set()
    # delete detaches
    put(server, b"k2", b"x", lease=2)
    assert ttl_keys(server, 2) == {b"k2"}
    d = server.kv.DeleteRange(pb.DeleteRangeRequest(key=b"k2", prev_kv=True),
                              timeout=10)
    assert d.deleted == 1 and d.prev_kvs[0].lease == 2, d
    assert ttl_keys(server, 2) == set()
    # the same lease again: nothing changes but the value
    put(server, b"k3", b"x", lease=2)
    put(server, b"k3", b"y", lease=2)
    assert ttl_keys(server, 2) == {b"k3"}
    # a re-created key does not inherit the old attachment
    put(server, b"k4", b"x", lease=1)
    server.kv.DeleteRange(pb.DeleteRangeRequest(key=b"k4"), timeout=10)
    put(server, b"k4", b"y")
    assert ttl_keys(server, 1) == set()
    rev = rev_now(server)
    # revoking leases that lost their keys deletes nothing
    assert revoke(server, 1).header.revision == rev
    assert revoke(server, 2).header.revision == rev + 1       # k3
    assert get_kv(server, b"k1").value == b"d"
    assert get_kv(server, b"k3") is None
    assert get_kv(server, b"k4").value == b"y"


def test_put_lease_errors(server):
    grant(server, 60, 1)
    put(server, b"k", b"v", lease=1)
    rev = rev_now(server)
    for lid in (12345, -1):
        assert err_of(server.kv.Put, pb.PutRequest(key=b"new", value=b"v",
                                                   lease=lid)) == E_NOT_FOUND
        assert err_of(server.kv.Put, pb.PutRequest(key=b"k", value=b"v",
                                                   lease=lid)) == E_NOT_FOUND
    # checked before ignore_value finds the key missing (etcd's Put order)
    assert err_of(server.kv.Put, pb.PutRequest(key=b"new", ignore_value=True,
                                               lease=12345)) == E_NOT_FOUND
    assert err_of(server.kv.Put, pb.PutRequest(key=b"k", value=b"v", lease=1,
                                               ignore_lease=True)) == E_LEASE_PROVIDED
    assert err_of(server.kv.Put, pb.PutRequest(key=b"new", value=b"v",
                                               ignore_lease=True)) == E_KEY_NOT_FOUND
    assert rev_now(server) == rev
    assert get_kv(server, b"new") is None
    assert get_kv(server, b"k").lease == 1
    revoke(server, 1)
    # a revoked lease is unknown
    assert err_of(server.kv.Put, pb.PutRequest(key=b"k", value=b"v",
                                               lease=1)) == E_NOT_FOUND
    assert get_kv(server, b"k") is None


def test_txn_with_leases(server):
    grant(server, 60, 1)
    grant(server, 60, 2)
    # kube-apiserver's create: mod_revision == 0, then put with a lease
    create = pb.Compare(key=b"x", target=pb.Compare.MOD,
                        result=pb.Compare.EQUAL, mod_revision=0)
    r = txn(server, compare=[create], success=[op_put(b"x", b"1", lease=1)],
            failure=[pb.RequestOp(request_range=pb.RangeRequest(key=b"x"))])
    assert r.succeeded and r.header.revision == 2, r
    assert get_kv(server, b"x").lease == 1 and ttl_keys(server, 1) == {b"x"}
    r = txn(server, compare=[create], success=[op_put(b"x", b"2", lease=1)],
            failure=[pb.RequestOp(request_range=pb.RangeRequest(key=b"x"))])
    assert not r.succeeded and r.responses[0].response_range.kvs[0].lease == 1, r
    # compare on the lease
    on1 = pb.Compare(key=b"x", target=pb.Compare.LEASE, result=pb.Compare.EQUAL,
                     lease=1)
    r = txn(server, compare=[on1], success=[op_put(b"x", b"3", lease=2),
                                            op_put(b"y", b"3", lease=2)])
    assert r.succeeded and r.header.revision == 3, r
    assert ttl_keys(server, 1) == set() and ttl_keys(server, 2) == {b"x", b"y"}
    r = txn(server, compare=[on1], success=[op_put(b"z", b"never")])
    assert not r.succeeded
    # unknown lease in the branch taken: nothing of the txn is written
    rev = rev_now(server)
    assert err_of(server.kv.Txn, pb.TxnRequest(
        success=[op_put(b"a", b"1"), op_put(b"b", b"1", lease=999)])) == E_NOT_FOUND
    assert err_of(server.kv.Txn, pb.TxnRequest(
        compare=[on1], failure=[op_put(b"b", b"1", lease=999)])) == E_NOT_FOUND
    nested = pb.RequestOp(request_txn=pb.TxnRequest(
        success=[op_put(b"c", b"1", lease=999)]))
    assert err_of(server.kv.Txn, pb.TxnRequest(
        success=[op_put(b"a", b"1"), nested])) == E_NOT_FOUND
    assert err_of(server.kv.Txn, pb.TxnRequest(
        success=[op_put(b"x", b"1", lease=2, ignore_lease=True)])) == E_LEASE_PROVIDED
    assert rev_now(server) == rev
    assert get_kv(server, b"a") is None and get_kv(server, b"b") is None
    # ... but not in the branch not taken
    r = txn(server, success=[op_put(b"a", b"1", lease=2)],
            failure=[op_put(b"b", b"1", lease=999)])
    assert r.succeeded and r.header.revision == rev + 1, r
    assert ttl_keys(server, 2) == {b"a", b"x", b"y"}
    # Txn delete and Txn put without a lease detach; ignore_lease keeps
    r = txn(server, success=[op_del(b"a"), op_put(b"x", b"4"),
                             op_put(b"y", b"4", ignore_lease=True)])
    assert r.succeeded and r.header.revision == rev + 2, r
    assert ttl_keys(server, 2) == {b"y"}
    assert get_kv(server, b"x").lease == 0 and get_kv(server, b"y").lease == 2
    # nested txn put with a lease attaches
    r = txn(server, success=[pb.RequestOp(request_txn=pb.TxnRequest(
        success=[op_put(b"n", b"1", lease=1)]))])
    assert r.succeeded and ttl_keys(server, 1) == {b"n"}, r
    assert revoke(server, 1).header.revision == rev + 4
    assert revoke(server, 2).header.revision == rev + 5
    got = server.kv.Range(pb.RangeRequest(key=b"\x00", range_end=b"\x00"), timeout=10)
    assert [kv.key for kv in got.kvs] == [b"x"]


def test_leases_survive_compaction(server):
    grant(server, 60, 1)
    for i in range(5):
        put(server, b"c/%d" % (i % 2), b"v%d" % i, lease=1)
    rev = rev_now(server)
    server.kv.Compact(pb.CompactionRequest(revision=rev, physical=True), timeout=30)
    assert ttl_keys(server, 1) == {b"c/0", b"c/1"}
    assert revoke(server, 1).header.revision == rev + 1
    assert list(server.kv.Range(pb.RangeRequest(key=b"c/", range_end=b"c0"),
                                timeout=10).kvs) == []


E_KEY_TOO_LONG = (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: request is too large")


def put_outcome(server, req):
    try:
        server.kv.Put(req, timeout=10)
        return "ok"
    except grpc.RpcError as e:
        return (e.code(), e.details())


def test_long_keys_with_lease(server):
    """A key attaches to a lease whatever its length: etcd has no key-length
    limit; cairn refuses keys over its limit (LMDB's key size, less the
    lease ID it is stored after) with "request is too large", with or
    without a lease, and takes every shorter key with a lease too."""
    grant(server, 60, 1)
    attached = 0
    for n in (500, 503, 504, 510, 511, 512, 600):
        plain = put_outcome(server, pb.PutRequest(key=b"P" * n, value=b"v"))
        if is_etcd(server.binary):
            assert plain == "ok", n
        assert plain in ("ok", E_KEY_TOO_LONG), (n, plain)
        key = b"L" * n
        got = put_outcome(server, pb.PutRequest(key=key, value=b"v", lease=1))
        assert got == plain, (n, got)
        try:
            server.kv.Txn(pb.TxnRequest(success=[op_put(b"T" * n, b"v", lease=1)]),
                          timeout=10)
            got = "ok"
        except grpc.RpcError as e:
            got = (e.code(), e.details())
        assert got == plain, (n, got)
        if plain == "ok":
            assert get_kv(server, key).lease == 1, n
            assert get_kv(server, b"T" * n).lease == 1, n
            attached += 2
        if n == 503:
            assert plain == "ok"
    assert len(ttl_keys(server, 1)) == attached
    rev = rev_now(server)
    assert revoke(server, 1).header.revision == rev + 1
    for k in (b"L", b"T"):
        assert server.kv.Range(pb.RangeRequest(key=k, range_end=bytes([k[0] + 1]),
                                               count_only=True), timeout=10).count == 0


def test_long_leased_key_does_not_fail_other_writes(server):
    """Unrelated puts in flight together with puts of 511-byte keys with a
    lease all succeed; the long ones succeed too, unless (cairn) plain keys
    of that length are refused, and then they are refused the same way."""
    grant(server, 60, 1)
    plain = put_outcome(server, pb.PutRequest(key=b"P" * 511, value=b"v"))
    assert plain in ("ok", E_KEY_TOO_LONG), plain
    chans = [server.new_channel() for _ in range(8)]
    try:
        stubs = [rpc_pb2_grpc.KVStub(c) for c in chans]
        futs, long_futs = [], []
        for i in range(1600):
            futs.append(stubs[i % 8].Put.future(
                pb.PutRequest(key=b"o/%04d" % i, value=b"v"), timeout=30))
            if i % 100 == 50:
                long_futs.append(stubs[(i + 3) % 8].Put.future(pb.PutRequest(
                    key=b"M%04d" % i + b"k" * 506, value=b"v", lease=1), timeout=30))
        failed = [f.exception() for f in futs if f.exception() is not None]
        long_got = [(f.exception().code(), f.exception().details())
                    if f.exception() is not None else "ok" for f in long_futs]
        assert not failed, "%d of %d unrelated puts failed, e.g. %s" % (
            len(failed), len(futs), failed[0].details())
        assert long_got == [plain] * len(long_futs), long_got
    finally:
        for c in chans:
            c.close()
    assert len(ttl_keys(server, 1)) == (16 if plain == "ok" else 0)
    assert server.kv.Range(pb.RangeRequest(key=b"o/", range_end=b"o0", count_only=True),
                           timeout=10).count == 1600


# --------------------------------------------------------------------------
# etcdctl
# --------------------------------------------------------------------------

def ctl(server, *args, ok=True, timeout=30):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "3"
    cmd = [ETCDCTL_BIN, "--endpoints", server.endpoint, "--dial-timeout", "5s",
           "--command-timeout", "15s"] + list(args)
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if ok:
        assert r.returncode == 0, (cmd, r.returncode, r.stdout, r.stderr)
    return r


def test_etcdctl_lease(server):
    m = re.fullmatch(r"lease ([0-9a-f]{16}) granted with TTL\(30s\)\n",
                     ctl(server, "lease", "grant", "30").stdout)
    assert m
    hid = m.group(1)
    lid = int(hid, 16)
    assert lid in lease_ids(server)
    assert ctl(server, "lease", "grant", "40").stdout.endswith("granted with TTL(40s)\n")
    assert ctl(server, "put", "--lease=" + hid, "lk1", "v1").stdout == "OK\n"
    assert ctl(server, "put", "--lease=" + hid, "lk2", "v2").stdout == "OK\n"
    assert get_kv(server, b"lk1").lease == lid
    m = re.fullmatch(r"lease %s granted with TTL\(30s\), remaining\((\d+)s\)\n" % hid,
                     ctl(server, "lease", "timetolive", hid).stdout)
    assert m and near(int(m.group(1)), 30)
    m = re.fullmatch(r"lease %s granted with TTL\(30s\), remaining\((\d+)s\), "
                     r"attached keys\(\[(.*)\]\)\n" % hid,
                     ctl(server, "lease", "timetolive", "--keys", hid).stdout)
    assert m and sorted(m.group(2).split(" ")) == ["lk1", "lk2"]
    out = ctl(server, "lease", "list").stdout.splitlines()
    assert out[0] == "found 2 leases" and out[1] == hid and len(out) == 3, out
    assert ctl(server, "lease", "keep-alive", "--once", hid).stdout == \
        "lease %s keepalived with TTL(30)\n" % hid
    assert ctl(server, "lease", "timetolive", "ff").stdout == \
        "lease 00000000000000ff already expired\n"
    r = ctl(server, "lease", "keep-alive", "--once", "ff", ok=False)
    assert r.returncode != 0 and "requested lease not found" in r.stderr, r
    r = ctl(server, "put", "--lease=ff", "lk3", "v", ok=False)
    assert r.returncode != 0 and "requested lease not found" in r.stderr, r
    assert ctl(server, "lease", "revoke", hid).stdout == "lease %s revoked\n" % hid
    assert get_kv(server, b"lk1") is None and get_kv(server, b"lk2") is None
    r = ctl(server, "lease", "revoke", hid, ok=False)
    assert r.returncode != 0 and "requested lease not found" in r.stderr, r
    assert ctl(server, "lease", "list").stdout.startswith("found 1 leases\n")
    # -w json
    j = json.loads(ctl(server, "lease", "grant", "50", "-w", "json").stdout)
    assert j["TTL"] == 50 and j["ID"] > 0, j
    j = json.loads(ctl(server, "lease", "timetolive", "%x" % j["ID"], "-w",
                       "json").stdout)
    assert j["granted-ttl"] == 50 and near(j["ttl"], 50), j


def test_etcdctl_keepalive_stream(server):
    """`etcdctl lease keep-alive` (clientv3 renews every TTL/3) keeps a lease
    alive past its TTL, and exits once the lease is revoked."""
    r = grant(server, 3)
    hid = "%016x" % r.ID
    put(server, b"kk", b"v", lease=r.ID)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "3"
    with tempfile.TemporaryFile(mode="w+") as out:
        p = subprocess.Popen([ETCDCTL_BIN, "--endpoints", server.endpoint,
                              "lease", "keep-alive", hid], stdout=out,
                             stderr=subprocess.STDOUT, env=env,
                             stdin=subprocess.DEVNULL)
        try:
            time.sleep(6)                          # twice the TTL
            assert p.poll() is None
            assert get_kv(server, b"kk") is not None
            t = ttl_of(server, r.ID)
            assert t.grantedTTL == 3 and t.TTL >= 1, t
            revoke(server, r.ID)
            p.wait(timeout=15)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
        out.seek(0)
        lines = out.read().splitlines()
    assert p.returncode == 0, lines
    ka = "lease %s keepalived with TTL(3)" % hid
    assert lines[-1] == "lease %s expired or revoked." % hid, lines
    assert len(lines) >= 4 and set(lines[:-1]) == {ka}, lines


# --------------------------------------------------------------------------
# python3-etcd3
# --------------------------------------------------------------------------

@pytest.fixture
def client(server):
    c = etcd3.client(host="127.0.0.1", port=server.client_port, timeout=10)
    try:
        yield c
    finally:
        c.close()


def test_python_client_lease(server, client):
    lease = client.lease(30)
    assert lease.id > 0 and lease.ttl == 30
    assert lease.granted_ttl == 30 and near(lease.remaining_ttl, 30)
    assert list(lease.keys) == []
    client.put("pk1", "v", lease=lease)
    client.put("pk2", "v", lease=lease.id)
    assert sorted(lease.keys) == [b"pk1", b"pk2"]
    value, meta = client.get("pk1")
    assert value == b"v" and meta.lease_id == lease.id
    rs = lease.refresh()
    assert [(r.ID, r.TTL) for r in rs] == [(lease.id, 30)]
    other = client.lease(20, lease_id=4242)
    assert other.id == 4242 and other.ttl == 20
    with pytest.raises(etcd3.exceptions.PreconditionFailedError):
        client.lease(20, lease_id=4242)
    with pytest.raises(grpc.RpcError) as ei:
        client.lease(MAX_LEASE_TTL + 1)
    assert (ei.value.code(), ei.value.details()) == E_TOO_LARGE
    assert [(r.ID, r.TTL) for r in client.refresh_lease(777)] == [(777, 0)]
    info = client.get_lease_info(777)
    assert (info.TTL, info.grantedTTL) == (-1, 0)
    with pytest.raises(grpc.RpcError) as ei:
        client.revoke_lease(777)
    assert (ei.value.code(), ei.value.details()) == E_NOT_FOUND
    with pytest.raises(grpc.RpcError) as ei:
        client.put("pk3", "v", lease=777)
    assert (ei.value.code(), ei.value.details()) == E_NOT_FOUND
    lease.revoke()
    assert client.get("pk1") == (None, None) and client.get("pk2") == (None, None)
    assert lease.remaining_ttl == -1 and list(lease.keys) == []
    assert set(lease_ids(server)) == {4242}
    other.revoke()
    assert lease_ids(server) == []
