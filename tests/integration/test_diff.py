"""Differential test: the server under test vs. real etcd, op for op.

One seeded random sequence of KV operations (Put / Range / DeleteRange / Txn /
Compact, plus invalid requests) is sent to real etcd (the oracle) and to the
server under test ($CAIRN_BIN), started side by side on fresh data dirs.
Every response must be identical: protobuf equality after clearing
header.cluster_id / header.member_id (raft_term IS compared), or, for errors,
the same gRPC status code and the same details string.

Env: DIFF_SEED (default 20240601), DIFF_OPS (default 5000),
DIFF_IGNORE_RAFT_TERM=1 (escape hatch, off by default).  The generator
reads the current/compacted revision back from the ORACLE's responses, so the
sequence is fully determined by the seed (etcd is deterministic) and is
identical for both servers up to the first divergence.

Run it with CAIRN_BIN=/usr/bin/etcd to validate the harness (etcd vs etcd).

Deliberately NOT generated here (etcd 3.4 differs from 3.5+, which cairn
follows): invalid sort_order / sort_target enum values.  They are covered by
the explicit tests at the bottom of this file.
"""

import os
import random
import sys
import time

import grpc
import pytest
from google.protobuf import text_format

from etcd3.etcdrpc import rpc_pb2 as pb, rpc_pb2_grpc

from cairn_it import ETCD_BIN, binary_under_test, is_etcd

DEFAULT_SEED = 20240601
DEFAULT_OPS = 5000
RPC_TIMEOUT = 30.0
MAX_TXN_OPS = 128          # etcd's default --max-txn-ops

# Small key space so keys collide.  Shared prefix structure plus \x00 / \xff
# bytes.  Kept at <= 12 keys on purpose: etcd sorts with Go's sort.Sort, which
# for <= 12 elements is an insertion sort (stable: ties stay in key order);
# beyond that it is pdqsort, whose order among ties no other implementation
# can be expected to reproduce.
KEYS = [
    b"a", b"a/", b"a/1", b"a/1/x", b"a/2", b"a\x00", b"a\xff", b"ab",
    b"\x00", b"\x00\xff", b"\xff", b"\xff\xff",
]
assert len(KEYS) <= 12
# Prefixes used for prefix ranges (not all of them are keys).
PREFIXES = [b"a", b"a/", b"a/1", b"a\x00", b"\x00", b"\xff", b"\xff\xff", b"b"]
VALUES = [b"", b"v", b"v1", b"v2", b"\x00", b"\xff\x00\xfe", b"same", b"x" * 64]

SORT_ORDERS = [pb.RangeRequest.NONE, pb.RangeRequest.ASCEND, pb.RangeRequest.DESCEND]
SORT_TARGETS = [pb.RangeRequest.KEY, pb.RangeRequest.VERSION, pb.RangeRequest.CREATE,
                pb.RangeRequest.MOD, pb.RangeRequest.VALUE]
CMP_TARGETS = [pb.Compare.VERSION, pb.Compare.CREATE, pb.Compare.MOD,
               pb.Compare.VALUE, pb.Compare.LEASE]
CMP_RESULTS = [pb.Compare.EQUAL, pb.Compare.GREATER, pb.Compare.LESS,
               pb.Compare.NOT_EQUAL]


def prefix_end(key):
    """etcd's clientv3.GetPrefixRangeEnd."""
    end = bytearray(key)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\x00"


# --------------------------------------------------------------------------
# response comparison
# --------------------------------------------------------------------------

# Escape hatch, off by default: also ignore raft_term (only if it can
# legitimately differ, e.g. a server that does not emulate raft terms).
IGNORE_RAFT_TERM = os.environ.get("DIFF_IGNORE_RAFT_TERM") == "1"


def _strip_ids(msg, ignore_term=None):
    """Clear cluster_id/member_id in every ResponseHeader inside msg."""
    if ignore_term is None:
        ignore_term = IGNORE_RAFT_TERM
    for fd, val in msg.ListFields():
        if fd.type != fd.TYPE_MESSAGE:
            continue
        if fd.label == fd.LABEL_REPEATED:
            for sub in val:
                _strip_ids(sub, ignore_term)
        elif fd.message_type.name == "ResponseHeader":
            val.cluster_id = 0
            val.member_id = 0
            if ignore_term:
                val.raft_term = 0
        else:
            _strip_ids(val, ignore_term)
    return msg


class Outcome:
    """Either a response message or a gRPC error (code, details)."""

    def __init__(self, resp=None, code=None, details=None):
        self.resp = resp
        self.code = code
        self.details = details

    @property
    def ok(self):
        return self.resp is not None

    def normalized(self):
        if self.resp is None:
            return None
        m = type(self.resp)()
        m.CopyFrom(self.resp)
        return _strip_ids(m)

    def __str__(self):
        if self.ok:
            return text_format.MessageToString(self.resp, as_one_line=True)
        return "ERROR %s %r" % (self.code, self.details)


def outcomes_equal(a, b):
    if a.ok != b.ok:
        return False
    if not a.ok:
        return a.code == b.code and a.details == b.details
    return a.normalized() == b.normalized()


def _call(stub, method, req):
    return getattr(stub, method).future(req, timeout=RPC_TIMEOUT)


def _result(fut):
    try:
        return Outcome(resp=fut.result())
    except grpc.RpcError as e:
        return Outcome(code=e.code(), details=e.details())


# --------------------------------------------------------------------------
# the generator
# --------------------------------------------------------------------------

class Gen:
    def __init__(self, rng):
        self.rng = rng
        self.cur_rev = 1           # from the oracle's response headers
        self.compact_rev = -1      # last successful compaction (-1: none)
        self.seen = {}             # key -> last KeyValue observed (hints only)

    # -- feedback from the oracle ------------------------------------------
    def observe(self, method, req, out):
        if not out.ok:
            return
        r = out.resp
        if r.header.revision:
            self.cur_rev = r.header.revision
        if method == "Compact":
            self.compact_rev = max(self.compact_rev, req.revision)
        self._observe_kvs(r)

    def _observe_kvs(self, msg):
        for fd, val in msg.ListFields():
            if fd.type != fd.TYPE_MESSAGE:
                continue
            vals = val if fd.label == fd.LABEL_REPEATED else [val]
            for sub in vals:
                if sub.DESCRIPTOR.name == "KeyValue":
                    if sub.value or sub.version:
                        self.seen[sub.key] = sub
                else:
                    self._observe_kvs(sub)

    # -- building blocks -----------------------------------------------------
    def key(self):
        return self.rng.choice(KEYS)

    def value(self):
        r = self.rng.random()
        if r < 0.85:
            return self.rng.choice(VALUES)
        return self.rng.randbytes(self.rng.randint(1, 300))

    def key_range(self):
        """(key, range_end) covering every range flavour."""
        rng = self.rng
        r = rng.random()
        if r < 0.35:
            return self.key(), b""                      # single key
        if r < 0.55:
            p = rng.choice(PREFIXES + KEYS)
            return p, prefix_end(p)                     # prefix
        if r < 0.63:
            return self.key(), b"\x00"                  # from key (>= key)
        if r < 0.68:
            return b"\x00", b"\x00"                     # everything
        if r < 0.72:
            k = self.key()
            return k, k                                 # range_end == key
        return self.key(), self.key()                   # arbitrary, maybe inverted

    def read_revision(self):
        rng, cur, comp = self.rng, self.cur_rev, self.compact_rev
        r = rng.random()
        if r < 0.55:
            return 0
        if r < 0.62:
            return cur
        if r < 0.80:
            return rng.randint(max(1, comp), cur)       # old but readable
        if r < 0.86 and comp >= 2:
            return rng.randint(max(1, comp - 3), comp - 1)  # compacted
        if r < 0.93:
            return cur + rng.randint(1, 3)              # future
        if r < 0.96:
            return comp if comp > 0 else 0              # exactly the compact rev
        return -rng.randint(1, 5)                       # negative == current

    def rev_filter(self):
        return self.rng.randint(0, self.cur_rev + 1)

    def range_req(self, in_txn=False):
        rng = self.rng
        key, end = self.key_range()
        req = pb.RangeRequest(key=key, range_end=end)
        r = rng.random()
        if r < 0.3:
            req.limit = rng.randint(1, 4)
        elif r < 0.35:
            req.limit = rng.choice([100, -1, -7])
        req.revision = self.read_revision() if rng.random() < 0.6 else 0
        if rng.random() < 0.5:
            req.sort_order = rng.choice(SORT_ORDERS)
            req.sort_target = rng.choice(SORT_TARGETS)
        req.serializable = rng.random() < 0.3
        req.keys_only = rng.random() < 0.2
        req.count_only = rng.random() < 0.12
        for f in ("min_mod_revision", "max_mod_revision",
                  "min_create_revision", "max_create_revision"):
            if rng.random() < 0.08:
                setattr(req, f, self.rev_filter())
        return req

    def put_req(self, key=None, odd=1.0):
        """A Put; `odd` scales the rate of the error-prone options."""
        rng = self.rng
        req = pb.PutRequest(key=self.key() if key is None else key, value=self.value())
        req.prev_kv = rng.random() < 0.5
        r = rng.random() / odd
        if r < 0.06:
            req.ignore_value = True
            req.value = b"" if rng.random() < 0.85 else b"not-allowed"
        elif r < 0.12:
            req.ignore_lease = True
            if rng.random() < 0.15:
                req.lease = rng.randint(1, 1000)        # -> "lease is provided"
        elif r < 0.14:
            req.lease = rng.choice([1, 7, 0x1234567890])  # -> lease not found
        return req

    def delete_req(self, single_bias=0.4):
        rng = self.rng
        if rng.random() < single_bias:
            key, end = self.key(), b""
        else:
            key, end = self.key_range()
        return pb.DeleteRangeRequest(key=key, range_end=end, prev_kv=rng.random() < 0.5)

    def compare(self):
        rng = self.rng
        c = pb.Compare()
        if rng.random() < 0.8:
            c.key = self.key()
        else:
            c.key, c.range_end = self.key_range()
        c.target = rng.choice(CMP_TARGETS)
        c.result = rng.choice(CMP_RESULTS)
        known = self.seen.get(c.key)
        if rng.random() < 0.03:
            # target and target_union disagree (or union unset): etcd then
            # compares as "equal"; a drop-in must do the same.
            rng.choice([lambda: None,
                        lambda: setattr(c, "version", 1),
                        lambda: setattr(c, "value", b"v")])()
            return c
        use_known = known is not None and rng.random() < 0.7
        if c.target == pb.Compare.VERSION:
            c.version = known.version if use_known else rng.randint(0, 4)
        elif c.target == pb.Compare.CREATE:
            c.create_revision = (known.create_revision if use_known
                                 else rng.randint(0, self.cur_rev + 1))
        elif c.target == pb.Compare.MOD:
            c.mod_revision = (known.mod_revision if use_known
                              else rng.randint(0, self.cur_rev + 1))
        elif c.target == pb.Compare.VALUE:
            c.value = known.value if use_known else rng.choice(VALUES)
        else:
            c.lease = 0 if rng.random() < 0.85 else rng.randint(1, 3)
        return c

    def request_op(self, depth, used):
        rng = self.rng
        r = rng.random()
        if r < 0.35:
            # Mostly avoid keys already written in this txn, so most txns
            # are valid; sometimes collide on purpose (duplicate-key error).
            free = [k for k in KEYS if k not in used]
            key = rng.choice(free) if free and rng.random() < 0.92 else self.key()
            used.add(key)
            return pb.RequestOp(request_put=self.put_req(key, odd=0.3))
        if r < 0.65:
            return pb.RequestOp(request_range=self.range_req(in_txn=True))
        if r < 0.85 or depth >= 2:
            d = self.delete_req(single_bias=0.75)
            if not d.range_end:
                used.add(d.key)
            return pb.RequestOp(request_delete_range=d)
        return pb.RequestOp(request_txn=self.txn_req(depth + 1, used))

    def txn_req(self, depth=0, used=None):
        rng = self.rng
        used = set() if used is None else used
        req = pb.TxnRequest()
        for _ in range(rng.choice([0, 1, 1, 1, 2, 2, 3])):
            req.compare.append(self.compare())
        succ_used, fail_used = set(used), set(used)
        for _ in range(rng.randint(0, 4)):
            req.success.append(self.request_op(depth, succ_used))
        for _ in range(rng.randint(0, 3)):
            req.failure.append(self.request_op(depth, fail_used))
        used |= succ_used | fail_used
        return req

    def compact_req(self):
        rng = self.rng
        cur, comp = self.cur_rev, self.compact_rev
        r = rng.random()
        if r < 0.6 and cur > max(comp, 0):
            rev = rng.randint(max(comp + 1, 1), cur)          # valid
        elif r < 0.75:
            rev = rng.randint(min(comp, 0) - 2, max(comp, 0))  # already compacted
        elif r < 0.9:
            rev = cur + rng.randint(1, 5)                      # future
        else:
            rev = comp if comp >= 0 else -1
        return pb.CompactionRequest(revision=rev, physical=rng.random() < 0.3)

    def error_op(self):
        """Requests that must be rejected (and some borderline ones)."""
        rng = self.rng
        k = rng.randint(0, 9)
        if k == 0:
            return "Put", pb.PutRequest(key=b"", value=b"v")
        if k == 1:
            return "Range", pb.RangeRequest(key=b"", range_end=rng.choice([b"", b"a", b"\x00"]))
        if k == 2:
            return "DeleteRange", pb.DeleteRangeRequest(key=b"", range_end=rng.choice([b"", b"\x00"]))
        if k == 3:
            # too many ops (in compare, success or failure)
            n = MAX_TXN_OPS + rng.randint(1, 3)
            ops = [pb.RequestOp(request_range=pb.RangeRequest(key=self.key())) for _ in range(n)]
            which = rng.choice(["success", "failure", "compare"])
            req = pb.TxnRequest()
            if which == "compare":
                req.compare.extend(pb.Compare(key=self.key(), target=pb.Compare.VERSION,
                                              result=pb.Compare.GREATER, version=-1)
                                   for _ in range(n))
            else:
                getattr(req, which).extend(ops)
            return "Txn", req
        if k == 4:
            # nested txns share the op budget: outer ops + nested ops
            outer = rng.randint(60, 120)
            inner_n = rng.randint(MAX_TXN_OPS - outer - 3, MAX_TXN_OPS - outer + 3)
            inner = pb.TxnRequest(success=[
                pb.RequestOp(request_range=pb.RangeRequest(key=self.key()))
                for _ in range(max(inner_n, 0))])
            ops = [pb.RequestOp(request_range=pb.RangeRequest(key=self.key()))
                   for _ in range(outer - 1)]
            ops.append(pb.RequestOp(request_txn=inner))
            return "Txn", pb.TxnRequest(success=ops)
        if k == 5:
            # duplicate keys (put/put, put/delete-range, put in nested txn)
            key = self.key()
            kind = rng.randint(0, 2)
            if kind == 0:
                ops = [pb.RequestOp(request_put=pb.PutRequest(key=key, value=b"1")),
                       pb.RequestOp(request_put=pb.PutRequest(key=key, value=b"2"))]
            elif kind == 1:
                ops = [pb.RequestOp(request_put=pb.PutRequest(key=key, value=b"1")),
                       pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(
                           key=b"\x00", range_end=b"\x00"))]
            else:
                inner = pb.TxnRequest(success=[
                    pb.RequestOp(request_put=pb.PutRequest(key=key, value=b"i"))])
                ops = [pb.RequestOp(request_put=pb.PutRequest(key=key, value=b"o")),
                       pb.RequestOp(request_txn=inner)]
            req = pb.TxnRequest(compare=[self.compare()])
            getattr(req, rng.choice(["success", "failure"])).extend(ops)
            return "Txn", req
        if k == 6:
            # empty key inside a txn (compare or op)
            req = pb.TxnRequest()
            where = rng.randint(0, 2)
            if where == 0:
                req.compare.append(pb.Compare(key=b"", target=pb.Compare.VERSION))
            else:
                getattr(req, ["success", "failure"][where - 1]).append(
                    pb.RequestOp(request_range=pb.RangeRequest(key=b"")))
            return "Txn", req
        if k == 7:
            # lease not found inside a txn branch
            return "Txn", pb.TxnRequest(success=[pb.RequestOp(
                request_put=pb.PutRequest(key=self.key(), value=b"l", lease=99))])
        if k == 8:
            # read a future / compacted revision inside a txn
            rev = self.cur_rev + 2 if rng.random() < 0.5 or self.compact_rev < 2 \
                else self.compact_rev - 1
            return "Txn", pb.TxnRequest(failure=[pb.RequestOp(
                request_range=pb.RangeRequest(key=self.key(), revision=rev))])
        return "Put", pb.PutRequest(key=self.key(), ignore_value=True)

    def next_op(self):
        r = self.rng.random()
        if r < 0.28:
            return "Put", self.put_req()
        if r < 0.58:
            return "Range", self.range_req()
        if r < 0.68:
            return "DeleteRange", self.delete_req()
        if r < 0.91:
            return "Txn", self.txn_req()
        if r < 0.935:
            return "Compact", self.compact_req()
        return self.error_op()


def prologue():
    """Fixed opening: edge cases on a fresh store, so every class is hit."""
    P, R, D = pb.PutRequest, pb.RangeRequest, pb.DeleteRangeRequest
    ops = [
        ("Range", R(key=b"\x00", range_end=b"\x00")),
        ("Compact", pb.CompactionRequest(revision=0)),   # fresh store: allowed
        ("Compact", pb.CompactionRequest(revision=0)),   # now: compacted
        ("Compact", pb.CompactionRequest(revision=-1)),
        ("Compact", pb.CompactionRequest(revision=5)),   # future
        ("Put", P(key=b"a", value=b"1")),
        ("Put", P(key=b"a", value=b"2", prev_kv=True)),
        ("Put", P(key=b"\x00", value=b"\x00")),
        ("Put", P(key=b"\xff\xff", value=b"\xff")),
        ("Put", P(key=b"a/1", value=b"x", prev_kv=True)),
        ("Put", P(key=b"a", ignore_value=True, prev_kv=True)),
        ("Put", P(key=b"a", ignore_lease=True)),
        ("Put", P(key=b"zz", ignore_value=True)),        # key not found
        ("Put", P(key=b"a", value=b"v", ignore_value=True)),
        ("Put", P(key=b"a", lease=5, ignore_lease=True)),
        ("Put", P(key=b"a", value=b"v", lease=5)),       # lease not found
        ("Put", P(key=b"", value=b"v")),
        ("Range", R(key=b"")),
        ("DeleteRange", D(key=b"")),
        ("Range", R(key=b"a", revision=1000)),
        ("Range", R(key=b"a", revision=-3)),
        ("Range", R(key=b"a", range_end=b"a")),
        ("Range", R(key=b"b", range_end=b"a")),
        ("Range", R(key=b"a", range_end=b"\x00", limit=2)),
        ("Range", R(key=b"a", range_end=b"\x00", count_only=True, limit=1)),
        ("Range", R(key=b"\x00", range_end=b"\x00", keys_only=True,
                    sort_order=R.DESCEND, sort_target=R.VALUE)),
        ("Range", R(key=b"\x00", range_end=b"\x00", sort_target=R.MOD, limit=2)),
        ("Range", R(key=b"\x00", range_end=b"\x00", min_mod_revision=4,
                    max_create_revision=5)),
        ("Compact", pb.CompactionRequest(revision=3, physical=True)),
        ("Range", R(key=b"a", revision=2)),              # compacted
        ("Range", R(key=b"a", revision=3)),              # == compact rev
        ("Compact", pb.CompactionRequest(revision=3)),
        ("DeleteRange", D(key=b"a", range_end=b"b", prev_kv=True)),
        ("DeleteRange", D(key=b"\x00", range_end=b"\x00")),
        ("Range", R(key=b"\x00", range_end=b"\x00")),
    ]
    return ops


# --------------------------------------------------------------------------
# the test
# --------------------------------------------------------------------------

def _fmt(method, req):
    return "%s(%s)" % (method, text_format.MessageToString(req, as_one_line=True))


def _classify(method, req, out):
    if not out.ok:
        return "%s:ERR:%s:%s" % (method, out.code.name, out.details)
    if method == "Txn":
        return "Txn:ok:%s" % ("succeeded" if out.resp.succeeded else "failed")
    if method == "DeleteRange":
        return "DeleteRange:ok:%s" % ("deleted" if out.resp.deleted else "none")
    if method == "Range":
        return "Range:ok:%s" % ("more" if out.resp.more else "kvs" if out.resp.kvs else "empty")
    return "%s:ok" % method


def run_diff(oracle, sut, seed, nops):
    rng = random.Random(seed)
    gen = Gen(rng)
    stubs = (rpc_pb2_grpc.KVStub(oracle.channel()), rpc_pb2_grpc.KVStub(sut.channel()))
    stats = {}
    ids = [set(), set()]            # (cluster_id, member_id) seen per server
    history = []
    ops = prologue()
    total = len(ops) + nops
    deadline = time.monotonic() + 600
    for i in range(total):
        assert time.monotonic() < deadline, "diff run exceeded its time budget"
        method, req = ops[i] if i < len(ops) else gen.next_op()
        fa = _call(stubs[0], method, req)
        fb = _call(stubs[1], method, req)
        a, b = _result(fa), _result(fb)
        history.append(_fmt(method, req))
        if not outcomes_equal(a, b):
            ctx = "\n".join("  #%d %s" % (j, h[:300]) for j, h in
                            enumerate(history[-6:-1], start=max(0, i - 5)))
            pytest.fail(
                "MISMATCH at op #%d (seed=%d, DIFF_SEED=%d DIFF_OPS=%d to reproduce)\n"
                "previous ops:\n%s\nrequest:\n  %s\netcd (oracle):\n  %s\n"
                "under test (%s):\n  %s"
                % (i, seed, seed, nops, ctx, _fmt(method, req), a, sut.binary, b),
                pytrace=False)
        for k, out in enumerate((a, b)):
            if out.ok:
                ids[k].add((out.resp.header.cluster_id, out.resp.header.member_id))
        gen.observe(method, req, a)
        c = _classify(method, req, a)
        stats[c] = stats.get(c, 0) + 1
    return stats, ids, gen


def test_diff_random_sequence(server_factory):
    seed = int(os.environ.get("DIFF_SEED", DEFAULT_SEED))
    nops = int(os.environ.get("DIFF_OPS", DEFAULT_OPS))
    assert nops >= 0
    oracle = server_factory(ETCD_BIN)
    sut = server_factory(binary_under_test())
    print("diff: seed=%d ops=%d oracle=%s sut=%s" % (seed, nops, oracle, sut))
    stats, ids, gen = run_diff(oracle, sut, seed, nops)

    print("diff stats (seed %d):" % seed)
    for k in sorted(stats):
        print("  %6d  %s" % (stats[k], k))

    # Each server reports one stable, non-zero (cluster_id, member_id).
    for k, s in enumerate(ids):
        assert len(s) == 1, ("server %d reported varying ids %r" % (k, s))
        cid, mid = next(iter(s))
        assert cid != 0 and mid != 0, (k, cid, mid)

    # Coverage: the sequence really exercised what it claims to (so a broken
    # generator cannot make this test pass vacuously).  The prologue
    # guarantees one of each error class; the random part scales with nops.
    def count(prefix):
        return sum(v for k, v in stats.items() if k.startswith(prefix))

    def need(prefix, frac):
        want = max(1, int(nops * frac))
        got = count(prefix)
        assert got >= want, "coverage: %r seen %d times, want >= %d (seed %d)" % (
            prefix, got, want, seed)

    need("Put:ok", 0.10)
    need("Range:ok:kvs", 0.08)
    need("Range:ok:empty", 0.01)
    need("Range:ok:more", 0.005)
    need("DeleteRange:ok:deleted", 0.01)
    need("DeleteRange:ok:none", 0.005)
    need("Txn:ok:succeeded", 0.04)
    need("Txn:ok:failed", 0.02)
    need("Compact:ok", 0.002)
    need("Compact:ERR:OUT_OF_RANGE:etcdserver: mvcc: required revision has been compacted", 0.0005)
    need("Compact:ERR:OUT_OF_RANGE:etcdserver: mvcc: required revision is a future revision", 0.0005)
    need("Range:ERR:OUT_OF_RANGE:etcdserver: mvcc: required revision has been compacted", 0.002)
    need("Range:ERR:OUT_OF_RANGE:etcdserver: mvcc: required revision is a future revision", 0.002)
    need("Put:ERR:NOT_FOUND:etcdserver: requested lease not found", 0.001)
    need("Put:ERR:INVALID_ARGUMENT:etcdserver: key is not provided", 0.0005)
    need("Put:ERR:INVALID_ARGUMENT:etcdserver: key not found", 0.0005)
    need("Put:ERR:INVALID_ARGUMENT:etcdserver: value is provided", 0.0005)
    need("Put:ERR:INVALID_ARGUMENT:etcdserver: lease is provided", 0.0002)
    need("Range:ERR:INVALID_ARGUMENT:etcdserver: key is not provided", 0.0005)
    need("DeleteRange:ERR:INVALID_ARGUMENT:etcdserver: key is not provided", 0.0005)
    need("Txn:ERR:INVALID_ARGUMENT:etcdserver: too many operations in txn request", 0.0005)
    need("Txn:ERR:INVALID_ARGUMENT:etcdserver: duplicate key given in txn request", 0.001)
    need("Txn:ERR:INVALID_ARGUMENT:etcdserver: key is not provided", 0.0005)
    need("Txn:ERR:NOT_FOUND:etcdserver: requested lease not found", 0.0005)
    need("Txn:ERR:OUT_OF_RANGE:", 0.0005)
    # The store moved on and was compacted along the way.
    assert gen.cur_rev >= 1 + nops // 10, gen.cur_rev
    assert gen.compact_rev >= (3 if nops >= 100 else 0), gen.compact_rev


# --------------------------------------------------------------------------
# the harness's own sanity
# --------------------------------------------------------------------------

def test_comparator_detects_differences():
    """outcomes_equal ignores only cluster_id/member_id; anything else counts."""
    def rr(**hdr):
        r = pb.RangeResponse(count=1)
        r.header.cluster_id = hdr.get("cid", 1)
        r.header.member_id = hdr.get("mid", 2)
        r.header.revision = hdr.get("rev", 5)
        r.header.raft_term = hdr.get("term", 2)
        kv = r.kvs.add()
        kv.key, kv.value, kv.version = b"k", hdr.get("val", b"v"), 1
        return r

    base = Outcome(resp=rr())
    assert outcomes_equal(base, Outcome(resp=rr(cid=9, mid=8)))
    assert not outcomes_equal(base, Outcome(resp=rr(rev=6)))
    assert outcomes_equal(base, Outcome(resp=rr(term=3))) == IGNORE_RAFT_TERM
    assert not outcomes_equal(base, Outcome(resp=rr(val=b"w")))
    err = Outcome(code=grpc.StatusCode.INVALID_ARGUMENT, details="etcdserver: key is not provided")
    assert not outcomes_equal(base, err)
    assert outcomes_equal(err, Outcome(code=grpc.StatusCode.INVALID_ARGUMENT,
                                       details="etcdserver: key is not provided"))
    assert not outcomes_equal(err, Outcome(code=grpc.StatusCode.OUT_OF_RANGE,
                                           details="etcdserver: key is not provided"))
    assert not outcomes_equal(err, Outcome(code=grpc.StatusCode.INVALID_ARGUMENT,
                                           details="etcdserver: key not found"))
    # nested headers (txn responses) are normalised too, but still compared
    t1 = pb.TxnResponse(succeeded=True)
    op = t1.responses.add().response_put
    op.header.member_id, op.header.revision = 7, 3
    t2 = pb.TxnResponse()
    t2.CopyFrom(t1)
    t2.responses[0].response_put.header.member_id = 0
    assert outcomes_equal(Outcome(resp=t1), Outcome(resp=t2))
    t2.responses[0].response_put.header.revision = 4
    assert not outcomes_equal(Outcome(resp=t1), Outcome(resp=t2))


def test_prefix_end():
    assert prefix_end(b"a") == b"b"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") == b"\x00"
    assert prefix_end(b"a/1") == b"a/2"


# --------------------------------------------------------------------------
# explicit cases where cairn follows etcd 3.5+ rather than 3.4
# --------------------------------------------------------------------------

def _server_is_etcd34(server):
    if not is_etcd(server.binary):
        return False
    st = server.maint.Status(pb.StatusRequest(), timeout=10)
    return st.version.startswith("3.4.")


INVALID_SORT = "etcdserver: invalid sort option"


def test_invalid_sort_order_rejected_like_etcd35(server):
    kv = server.kv
    kv.Put(pb.PutRequest(key=b"s/1", value=b"b"), timeout=10)
    kv.Put(pb.PutRequest(key=b"s/2", value=b"a"), timeout=10)
    req = pb.RangeRequest(key=b"s/", range_end=b"s0", sort_order=7)
    if _server_is_etcd34(server):
        # etcd 3.4 accepts an unknown sort_order and simply does not sort.
        resp = kv.Range(req, timeout=10)
        assert [x.key for x in resp.kvs] == [b"s/1", b"s/2"]
        return
    for r in (req, pb.RangeRequest(key=b"s/1", sort_order=-1)):
        with pytest.raises(grpc.RpcError) as ei:
            kv.Range(r, timeout=10)
        assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert ei.value.details() == INVALID_SORT
    # Inside a txn too (3.5 checks every RequestOp before applying anything).
    txn = pb.TxnRequest(success=[
        pb.RequestOp(request_put=pb.PutRequest(key=b"s/3", value=b"c")),
        pb.RequestOp(request_range=req)])
    with pytest.raises(grpc.RpcError) as ei:
        kv.Txn(txn, timeout=10)
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ei.value.details() == INVALID_SORT
    # nothing was applied, the server still answers
    resp = kv.Range(pb.RangeRequest(key=b"s/", range_end=b"s0"), timeout=10)
    assert [x.key for x in resp.kvs] == [b"s/1", b"s/2"]
    assert resp.header.revision == 3


def test_invalid_sort_target_rejected_like_etcd35(server):
    kv = server.kv
    kv.Put(pb.PutRequest(key=b"s/1", value=b"b"), timeout=10)
    req = pb.RangeRequest(key=b"s/", range_end=b"s0", sort_order=pb.RangeRequest.ASCEND,
                          sort_target=9)
    if _server_is_etcd34(server):
        # etcd 3.4 has no check and its apply loop panics on an unknown sort
        # target: the whole server dies.  This is why cairn follows 3.5 here.
        with pytest.raises(grpc.RpcError):
            kv.Range(req, timeout=10)
        server.proc.wait(timeout=15)
        assert server.proc.returncode != 0
        assert "panic" in server.log_tail(200)
        return
    for r in (req, pb.RangeRequest(key=b"s/1", sort_target=-3)):
        with pytest.raises(grpc.RpcError) as ei:
            kv.Range(r, timeout=10)
        assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert ei.value.details() == INVALID_SORT
    txn = pb.TxnRequest(failure=[pb.RequestOp(request_range=req)])
    with pytest.raises(grpc.RpcError) as ei:
        kv.Txn(txn, timeout=10)
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ei.value.details() == INVALID_SORT
    resp = kv.Range(pb.RangeRequest(key=b"s/1"), timeout=10)
    assert resp.kvs[0].value == b"b"
