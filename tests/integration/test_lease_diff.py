"""Lease differential test: the server under test vs. real etcd 3.4.

The same requests go to etcd (the oracle) and to the server under test,
started side by side on fresh data dirs with the same raft timing flags
(etcd's defaults, so the minimum TTL is 2 s on both).  A scripted test
covers every Lease RPC and error case and leases on Put/Txn and their
errors; another one expiry; then a seeded random sequence
(LEASE_DIFF_SEED, default 20240611; LEASE_DIFF_OPS, default 2000) of grants
(explicit IDs), revokes, keep-alives, time-to-lives, lease lists,
puts/txns/deletes with leases and full reads.  A failure prints the op
number, the seed, the request and both outcomes; reproduce with

    LEASE_DIFF_SEED=<seed> LEASE_DIFF_OPS=<n> /usr/bin/python3 -m pytest -q \
        tests/integration/test_lease_diff.py -k random

Responses must be equal as protobufs after clearing header.cluster_id and
header.member_id, with two allowances: LeaseTimeToLive's remaining TTL may
differ by 1 s (whole seconds, truncated), and its keys are compared as a
set (etcd's order is its map's).  Errors must have the same gRPC code and
details.  Revisions in headers are compared.

Leases are listed by expiry; a 2 ms pause after every grant and keep-alive
keeps two deadlines from falling in the same millisecond (the order of
renewals within one millisecond is tested in test_lease.py).  Apart from
the expiry test, TTLs are >= 600 s (or 2-3 s for leases revoked at once),
so nothing expires by itself, and different TTLs are far enough apart that
their deadlines never come close.
"""

import os
import random
import time

import grpc
import pytest
from google.protobuf import text_format

from cairn_it import ETCD_BIN, binary_under_test, rpc_pb2 as pb, rpc_pb2_grpc
from lease_it import DEFAULT_TIMING, MAX_LEASE_TTL

DEFAULT_SEED = 20240611
DEFAULT_OPS = 2000
RPC_TIMEOUT = 30.0
TIE_PAUSE = 0.002

KEYS = [b"a", b"a/1", b"a/2", b"b", b"b\x00", b"c", b"\xff", b"z"]
IDS = [1, 2, 3, -4, 5, 6]
UNKNOWN = [99, 0, -99]
TTLS = [600, 1200, 3000, MAX_LEASE_TTL]   # far apart: no near-tie deadlines


# --------------------------------------------------------------------------
# outcomes
# --------------------------------------------------------------------------

def _strip_ids(msg):
    for fd, val in msg.ListFields():
        if fd.type != fd.TYPE_MESSAGE:
            continue
        if fd.label == fd.LABEL_REPEATED:
            for sub in val:
                _strip_ids(sub)
        elif fd.message_type.name == "ResponseHeader":
            val.cluster_id = 0
            val.member_id = 0
        else:
            _strip_ids(val)
    return msg


class Outcome:
    def __init__(self, resp=None, err=None):
        self.resp = resp
        self.err = err

    def norm(self):
        if self.resp is None:
            return None
        m = type(self.resp)()
        m.CopyFrom(self.resp)
        _strip_ids(m)
        if isinstance(m, pb.LeaseTimeToLiveResponse):
            keys = sorted(m.keys)
            del m.keys[:]
            m.keys.extend(keys)
        return m

    def __str__(self):
        if self.resp is None:
            return "ERROR %s %r" % self.err
        return text_format.MessageToString(self.resp, as_one_line=True)


def equal(a, b):
    if (a.resp is None) != (b.resp is None):
        return False
    if a.resp is None:
        return a.err == b.err
    x, y = a.norm(), b.norm()
    if isinstance(x, pb.LeaseTimeToLiveResponse):
        if abs(x.TTL - y.TTL) > 1 or (x.TTL < 0) != (y.TTL < 0):
            return False
        y.TTL = x.TTL
    return x == y


class Side:
    """One server's stubs."""

    def __init__(self, server):
        self.server = server
        ch = server.channel()
        self.kv = rpc_pb2_grpc.KVStub(ch)
        self.lease = rpc_pb2_grpc.LeaseStub(ch)

    def call(self, method, req):
        stub_name, m = method.split(".")
        stub = getattr(self, stub_name)
        try:
            if m == "KeepAlive":
                rs = list(stub.LeaseKeepAlive(iter([req]), timeout=RPC_TIMEOUT))
                assert len(rs) == 1, rs
                return Outcome(rs[0])
            return Outcome(getattr(stub, m)(req, timeout=RPC_TIMEOUT))
        except grpc.RpcError as e:
            return Outcome(err=(e.code(), e.details()))


class Diff:
    def __init__(self, oracle, sut, seed):
        self.o = Side(oracle)
        self.s = Side(sut)
        self.seed = seed
        self.n = 0
        self.stats = {}                 # (method, ok or error details): count

    def op(self, method, req, ignore_id=False):
        """Sends req to both; fails unless the outcomes are equal.  Returns
        (oracle outcome, sut outcome)."""
        self.n += 1
        a = self.o.call(method, req)
        b = self.s.call(method, req)
        if ignore_id and a.resp is not None and b.resp is not None:
            x, y = Outcome(type(a.resp)()), Outcome(type(b.resp)())
            x.resp.CopyFrom(a.resp)
            y.resp.CopyFrom(b.resp)
            x.resp.ID = y.resp.ID = 0
            ok = equal(x, y)
        else:
            ok = equal(a, b)
        assert ok, ("op %d (seed %d): %s %s\n  etcd: %s\n  sut:  %s" % (
            self.n, self.seed, method,
            text_format.MessageToString(req, as_one_line=True), a, b))
        k = (method, "ok" if a.resp is not None else a.err[1])
        self.stats[k] = self.stats.get(k, 0) + 1
        if method in ("lease.LeaseGrant", "lease.KeepAlive"):
            time.sleep(TIE_PAUSE)
        return a, b

    # shorthands
    def grant(self, lid, ttl):
        return self.op("lease.LeaseGrant", pb.LeaseGrantRequest(ID=lid, TTL=ttl))

    def revoke(self, lid):
        return self.op("lease.LeaseRevoke", pb.LeaseRevokeRequest(ID=lid))

    def ttl(self, lid, keys=True):
        return self.op("lease.LeaseTimeToLive",
                       pb.LeaseTimeToLiveRequest(ID=lid, keys=keys))

    def leases(self):
        return self.op("lease.LeaseLeases", pb.LeaseLeasesRequest())

    def keepalive(self, lid):
        return self.op("lease.KeepAlive", pb.LeaseKeepAliveRequest(ID=lid))

    def put(self, key, value=b"v", **kw):
        return self.op("kv.Put", pb.PutRequest(key=key, value=value, **kw))

    def delete(self, key, range_end=b"", **kw):
        return self.op("kv.DeleteRange",
                       pb.DeleteRangeRequest(key=key, range_end=range_end, **kw))

    def txn(self, compare=(), success=(), failure=()):
        return self.op("kv.Txn", pb.TxnRequest(compare=list(compare),
                                               success=list(success),
                                               failure=list(failure)))

    def range_all(self):
        return self.op("kv.Range", pb.RangeRequest(key=b"\x00", range_end=b"\x00"))


def put_op(key, value=b"v", **kw):
    return pb.RequestOp(request_put=pb.PutRequest(key=key, value=value, **kw))


def del_op(key, range_end=b"", **kw):
    return pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(
        key=key, range_end=range_end, **kw))


def range_op(key, range_end=b""):
    return pb.RequestOp(request_range=pb.RangeRequest(key=key, range_end=range_end))


def cmp_lease(key, lid, result=pb.Compare.EQUAL):
    return pb.Compare(key=key, target=pb.Compare.LEASE, result=result, lease=lid)


def cmp_created(key):
    return pb.Compare(key=key, target=pb.Compare.MOD, result=pb.Compare.EQUAL,
                      mod_revision=0)


@pytest.fixture
def pair(server_factory):
    oracle = server_factory(ETCD_BIN, extra_args=DEFAULT_TIMING)
    sut = server_factory(binary_under_test(), extra_args=DEFAULT_TIMING)
    return oracle, sut


# --------------------------------------------------------------------------
# scripted: every RPC and error case
# --------------------------------------------------------------------------

def test_lease_diff_scripted(pair):
    d = Diff(*pair, seed=0)
    d.leases()
    d.ttl(1)
    # grant: client IDs, duplicates, TTL bounds, the minimum
    d.grant(1, 600)
    d.grant(1, 600)
    d.grant(1, 1200)
    d.grant(2, MAX_LEASE_TTL)
    d.grant(3, MAX_LEASE_TTL + 1)
    d.grant(1, MAX_LEASE_TTL + 1)
    d.grant(0, MAX_LEASE_TTL + 1)
    d.grant(3, 2 ** 63 - 1)
    d.grant(-5, 1200)
    for lid, ttl in [(4, 1), (5, 0), (6, -3), (7, 2), (8, 3)]:
        d.grant(lid, ttl)
        d.ttl(lid)
        d.keepalive(lid)
        d.revoke(lid)
    # server-chosen ID: equal but for the ID; then revoked on each side
    a, b = d.op("lease.LeaseGrant", pb.LeaseGrantRequest(ID=0, TTL=600),
                ignore_id=True)
    assert a.resp.ID > 0 and b.resp.ID > 0
    d.o.call("lease.LeaseRevoke", pb.LeaseRevokeRequest(ID=a.resp.ID))
    d.s.call("lease.LeaseRevoke", pb.LeaseRevokeRequest(ID=b.resp.ID))
    d.leases()
    # puts with leases and their errors
    d.put(b"a", lease=1)
    d.put(b"b", lease=1)
    d.put(b"c", lease=-5)
    d.put(b"a/1", lease=2, prev_kv=True)
    d.put(b"d", lease=99)
    d.put(b"a", lease=99)
    d.put(b"d", ignore_lease=True)
    d.put(b"d", ignore_value=True, value=b"", lease=99)
    d.put(b"a", lease=1, ignore_lease=True)
    d.put(b"a", b"v2", ignore_lease=True, prev_kv=True)
    d.put(b"a", ignore_value=True, value=b"", lease=2, prev_kv=True)
    d.put(b"a", b"v3", lease=1, prev_kv=True)
    d.put(b"c", b"v3", prev_kv=True)               # detaches
    for lid in (1, 2, -5, 99, 0):
        d.ttl(lid)
        d.ttl(lid, keys=False)
    # txn
    d.txn([cmp_created(b"e")], [put_op(b"e", lease=1)], [range_op(b"e")])
    d.txn([cmp_created(b"e")], [put_op(b"e", lease=1)], [range_op(b"e")])
    d.txn([cmp_lease(b"e", 1)], [put_op(b"e", lease=2), put_op(b"f", lease=2)])
    d.txn([cmp_lease(b"e", 1)], [put_op(b"g")], [put_op(b"g", lease=-5)])
    d.txn([], [put_op(b"h"), put_op(b"i", lease=99)])
    d.txn([cmp_lease(b"e", 7)], [put_op(b"h")], [put_op(b"i", lease=99)])
    d.txn([cmp_lease(b"e", 2)], [put_op(b"h")], [put_op(b"i", lease=99)])
    d.txn([], [put_op(b"h"), pb.RequestOp(request_txn=pb.TxnRequest(
        success=[put_op(b"i", lease=99)]))])
    d.txn([], [pb.RequestOp(request_txn=pb.TxnRequest(
        success=[put_op(b"i", lease=1)]))])
    d.txn([], [put_op(b"h", lease=1, ignore_lease=True)])
    d.txn([], [put_op(b"zz", ignore_lease=True)])
    d.txn([], [del_op(b"e"), put_op(b"f"), put_op(b"i", ignore_lease=True)])
    d.txn([cmp_lease(b"f", 0), cmp_lease(b"i", 1)], [range_op(b"\x00", b"\x00")])
    for lid in (1, 2, -5):
        d.ttl(lid)
    # keep-alive
    for lid in (1, 2, -5, 99, 0, -99):
        d.keepalive(lid)
    d.leases()
    # delete detaches; revoke deletes the rest in one revision
    d.delete(b"b", prev_kv=True)
    d.ttl(1)
    d.revoke(1)
    d.revoke(1)
    d.revoke(99)
    d.revoke(0)
    d.ttl(1)
    d.keepalive(1)
    d.put(b"x", lease=1)
    d.range_all()
    d.leases()
    # compaction keeps leases
    d.put(b"k", lease=2)
    d.put(b"k", b"v2", lease=2)
    r, _ = d.range_all()
    d.op("kv.Compact", pb.CompactionRequest(revision=r.resp.header.revision,
                                            physical=True))
    d.ttl(2)
    d.revoke(2)
    d.revoke(-5)
    d.range_all()
    d.leases()


def test_lease_diff_expiry(pair):
    """A lease with TTL 2 expires on both: same deletes, same revision."""
    d = Diff(*pair, seed=0)
    d.put(b"p", b"plain")
    d.grant(50, 2)
    d.grant(51, 600)
    d.put(b"x2", lease=50)
    d.put(b"x1", lease=50)
    d.put(b"y", lease=51)
    deadline = time.monotonic() + 2 + 5
    for side in (d.o, d.s):
        while side.call("lease.LeaseTimeToLive",
                        pb.LeaseTimeToLiveRequest(ID=50)).resp.TTL != -1:
            assert time.monotonic() < deadline, side.server
            time.sleep(0.1)
    # the revoke has landed once the lessor forgot the lease; keys too
    for side in (d.o, d.s):
        while side.call("kv.Range", pb.RangeRequest(key=b"x1")).resp.kvs:
            assert time.monotonic() < deadline, side.server
            time.sleep(0.1)
    d.ttl(50)
    d.keepalive(50)
    d.range_all()
    d.leases()
    d.put(b"x1", lease=50)
    d.op("kv.Range", pb.RangeRequest(key=b"x", range_end=b"y", revision=6))
    d.op("kv.Range", pb.RangeRequest(key=b"x", range_end=b"y", revision=7))
    d.revoke(51)
    d.range_all()


# --------------------------------------------------------------------------
# random
# --------------------------------------------------------------------------

def _rand_lease(rnd):
    r = rnd.random()
    if r < 0.3:
        return 0
    if r < 0.9:
        return rnd.choice(IDS)
    return rnd.choice(UNKNOWN)


def _rand_put(rnd):
    kw = {"lease": _rand_lease(rnd)}
    if rnd.random() < 0.1:
        kw["ignore_lease"] = True
        if rnd.random() < 0.7:
            kw["lease"] = 0
    if rnd.random() < 0.3:
        kw["prev_kv"] = True
    return pb.PutRequest(key=rnd.choice(KEYS), value=b"v%d" % rnd.randrange(100),
                         **kw)


def _rand_req_op(rnd, depth=0):
    r = rnd.random()
    if r < 0.55:
        return pb.RequestOp(request_put=_rand_put(rnd))
    if r < 0.75:
        return del_op(rnd.choice(KEYS), prev_kv=rnd.random() < 0.5)
    if r < 0.9 or depth > 0:
        return range_op(rnd.choice(KEYS))
    return pb.RequestOp(request_txn=_rand_txn(rnd, depth + 1))


def _rand_txn(rnd, depth=0):
    cmps = []
    for _ in range(rnd.randrange(3)):
        key = rnd.choice(KEYS)
        if rnd.random() < 0.6:
            cmps.append(cmp_lease(key, _rand_lease(rnd),
                                  rnd.choice([pb.Compare.EQUAL, pb.Compare.NOT_EQUAL])))
        else:
            cmps.append(cmp_created(key))
    # distinct keys per branch (etcd refuses duplicate keys in a txn)
    def branch():
        ops, used = [], set()
        for _ in range(rnd.randrange(4)):
            op = _rand_req_op(rnd, depth)
            which = op.WhichOneof("request")
            if which == "request_txn":
                ops.append(op)
                break
            k = getattr(op, which).key
            if k in used:
                continue
            used.add(k)
            ops.append(op)
        return ops
    return pb.TxnRequest(compare=cmps, success=branch(), failure=branch())


def test_lease_diff_random(pair):
    seed = int(os.environ.get("LEASE_DIFF_SEED") or DEFAULT_SEED)
    nops = int(os.environ.get("LEASE_DIFF_OPS") or DEFAULT_OPS)
    rnd = random.Random(seed)
    d = Diff(*pair, seed=seed)
    for _ in range(nops):
        r = rnd.random()
        if r < 0.12:
            d.grant(rnd.choice(IDS + UNKNOWN[:1]),
                    rnd.choice(TTLS + [MAX_LEASE_TTL + 1]))
        elif r < 0.18:
            d.revoke(rnd.choice(IDS + UNKNOWN))
        elif r < 0.26:
            d.keepalive(rnd.choice(IDS + UNKNOWN))
        elif r < 0.36:
            d.ttl(rnd.choice(IDS + UNKNOWN), keys=rnd.random() < 0.8)
        elif r < 0.42:
            d.leases()
        elif r < 0.65:
            d.op("kv.Put", _rand_put(rnd))
        elif r < 0.85:
            d.op("kv.Txn", _rand_txn(rnd))
        elif r < 0.93:
            k = rnd.choice(KEYS)
            d.delete(k, k + b"\xff" if rnd.random() < 0.3 else b"",
                     prev_kv=rnd.random() < 0.5)
        else:
            d.range_all()
    d.leases()
    for lid in IDS:
        d.ttl(lid)
        d.revoke(lid)
    d.range_all()
    d.leases()
    for k in sorted(d.stats):
        print("%5d %s %s" % (d.stats[k], k[0], k[1]))
