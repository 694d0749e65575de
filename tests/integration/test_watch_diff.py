"""Differential Watch test: the server under test vs. real etcd 3.4.

Both servers get the same watch streams (several per connection, two
connections) and the same watchers: random key ranges over a small key space
with shared prefixes and \\x00/\\xff bytes, random start revisions (current,
past, exactly the compaction revision, compacted, future), random prev_kv,
NOPUT/NODELETE filters, fragment, client-chosen ids, duplicate ids and empty
ranges.  Then one seeded random sequence of writes (puts, deletes, range
deletes, txns, compactions) goes to both, with more watchers created and
some cancelled along the way.  At the end every watcher's outcome is
compared between the two servers:

  * its created response (created/canceled/watch_id/cancel_reason/header);
  * the flattened list of its events (type, kv, prev_kv) -- NOT how they
    were grouped into responses: etcd groups historical events by the timing
    of its 100 ms sync loop;
  * how it ended (cancel response, compaction cancel with compact_revision).

Determinism: each create waits for its created response (so "current
revision" is the same on both), and compactions and cancels happen only at
checkpoints, after both servers have been quiet for a while (so no watcher
is still catching up when a compaction or cancel lands, which would make
the outcome depend on timing in etcd too).  Compactions are physical.

Env: WATCH_DIFF_SEED (default 20240602), WATCH_DIFF_OPS (default 3000).
Run with CAIRN_BIN=/usr/bin/etcd to validate the harness (etcd vs etcd).
A failure prints the seed and the first differing event.
"""

import collections
import os
import random
import time

import grpc
import pytest
from google.protobuf import text_format

from cairn_it import ETCD_BIN, binary_under_test, rpc_pb2 as pb, rpc_pb2_grpc
from watch_it import (DELETE, PUT, Streams, compact, ev_tuple, prefix_end, put, wpb)

DEFAULT_SEED = 20240602
DEFAULT_OPS = 3000
RPC_TIMEOUT = 30.0
QUIET = 0.6              # seconds without a response on any stream = settled
TIME_BUDGET = 240.0      # the whole run (a bound, not a performance check)

KEYS = [
    b"a", b"a/", b"a/1", b"a/1/x", b"a/2", b"a\x00", b"a\xff", b"ab",
    b"\x00", b"\x00\xff", b"\xff", b"\xff\xff",
]
PREFIXES = [b"a", b"a/", b"a/1", b"a\x00", b"\x00", b"\xff", b"\xff\xff", b"b"]
VALUES = [b"", b"v", b"v1", b"v2", b"\x00", b"\xff\x00\xfe", b"same", b"x" * 64]

N_CHANNELS = 2
STREAMS_PER_CHANNEL = 3
INITIAL_WATCHERS = 24
CHECKPOINTS = 8


def _fmt(msg):
    return text_format.MessageToString(msg, as_one_line=True, as_utf8=False)[:600]


def _norm(r):
    """A response without cluster_id/member_id, as comparable bytes."""
    if r is None:
        return None
    m = wpb.WatchResponse()
    m.CopyFrom(r)
    m.header.cluster_id = 0
    m.header.member_id = 0
    return m.SerializeToString(deterministic=True)


# --------------------------------------------------------------------------
# per-watcher records
# --------------------------------------------------------------------------

class Res:
    """What one server told us about one watcher."""

    def __init__(self):
        self.created = None
        self.events = []          # mvccpb.Event messages, flattened
        self.nresp = 0
        self.end = None           # canceled response (cancel or compaction)
        self.errors = []          # invariant violations seen on this server


class Watcher:
    def __init__(self, n, stream, req, op_index, cur_rev, compact_rev):
        self.n = n                # creation order (global)
        self.stream = stream
        self.req = req            # the WatchCreateRequest
        self.op_index = op_index  # write op index at creation
        self.cur_rev = cur_rev
        self.compact_rev = compact_rev
        self.res = (Res(), Res())
        self.cancel_requested = False

    def desc(self):
        return "watcher #%d (stream %d, created before op %d at rev %d, compact rev %d): %s" % (
            self.n, self.stream, self.op_index, self.cur_rev, self.compact_rev,
            _fmt(self.req))

    def contains(self, key):
        k, e = self.req.key or b"\x00", self.req.range_end
        if not e:
            return key == k
        if e == b"\x00":
            return key >= k
        return k <= key < e


class Side:
    """One server with its streams."""

    def __init__(self, k, server, streams):
        self.k = k
        self.server = server
        self.kv = rpc_pb2_grpc.KVStub(server.channel())
        chans = [streams.channel(server) for _ in range(N_CHANNELS)]
        self.streams = [streams.open(chans[i % N_CHANNELS])
                        for i in range(N_CHANNELS * STREAMS_PER_CHANNEL)]
        self.pending = [collections.deque() for _ in self.streams]   # creates in flight
        self.active = [dict() for _ in self.streams]                 # id -> Watcher
        self.anomalies = []
        self.last_activity = time.monotonic()

    def handle(self, si, r):
        self.last_activity = time.monotonic()
        if r.created:
            assert self.pending[si], "created response nobody asked for: %s" % _fmt(r)
            w = self.pending[si].popleft()
            res = w.res[self.k]
            res.created = r
            if not r.canceled:
                if r.watch_id in self.active[si]:
                    res.errors.append("id %d already active on the stream" % r.watch_id)
                self.active[si][r.watch_id] = w
            return
        w = self.active[si].get(r.watch_id)
        if w is None:
            self.anomalies.append("stream %d: response for unknown watch id: %s" % (si, _fmt(r)))
            return
        res = w.res[self.k]
        if r.canceled:
            res.end = r
            del self.active[si][r.watch_id]
            if r.events:
                res.errors.append("cancel response with events: %s" % _fmt(r))
            return
        if not r.events:
            res.errors.append("response without events (no progress was asked): %s" % _fmt(r))
            return
        res.nresp += 1
        if r.fragment and not w.req.fragment:
            res.errors.append("fragment without asking: %s" % _fmt(r))
        revs = [e.kv.mod_revision for e in r.events]
        if revs != sorted(revs) or r.header.revision < revs[-1]:
            res.errors.append("bad response order/header: %s" % _fmt(r))
        if res.events and revs[0] < res.events[-1].kv.mod_revision:
            res.errors.append("events went back in revision: %s" % _fmt(r))
        for e in r.events:
            if not w.contains(e.kv.key):
                res.errors.append("event outside the range: %s" % _fmt(e))
            if w.req.start_revision and e.kv.mod_revision < w.req.start_revision:
                res.errors.append("event below start_revision: %s" % _fmt(e))
            if (e.type == PUT and wpb.NOPUT in w.req.filters) or \
                    (e.type == DELETE and wpb.NODELETE in w.req.filters):
                res.errors.append("filtered event delivered: %s" % _fmt(e))
            if e.HasField("prev_kv") and not w.req.prev_kv:
                res.errors.append("prev_kv without asking: %s" % _fmt(e))
        res.events.extend(r.events)

    def drain(self):
        n = 0
        for si, ws in enumerate(self.streams):
            for _ in range(100000):
                r = ws.poll(0)
                if r is None:
                    break
                self.handle(si, r)
                n += 1
        return n

    def wait_created(self, si, deadline):
        while self.pending[si]:
            left = deadline - time.monotonic()
            assert left > 0, "server %d: no created response on stream %d" % (self.k, si)
            self.handle(si, self.streams[si].get(min(left, 15)))


def settle(sides, quiet=QUIET, budget=30.0):
    """Drain until no stream of either server has said anything for `quiet`
    seconds (bounded by `budget`)."""
    deadline = time.monotonic() + budget
    t0 = time.monotonic()
    for s in sides:
        s.last_activity = t0
    while True:
        for s in sides:
            s.drain()
        now = time.monotonic()
        if now - max(s.last_activity for s in sides) >= quiet:
            return
        assert now < deadline, "servers never went quiet within %.0fs" % budget
        time.sleep(0.02)


# --------------------------------------------------------------------------
# generator
# --------------------------------------------------------------------------

class Gen:
    def __init__(self, rng):
        self.rng = rng
        self.cur_rev = 1
        self.compact_rev = 0
        self.used_ids = collections.defaultdict(set)    # stream -> client-chosen ids

    def key(self):
        return self.rng.choice(KEYS)

    def value(self):
        if self.rng.random() < 0.85:
            return self.rng.choice(VALUES)
        return self.rng.randbytes(self.rng.randint(1, 300))

    def key_range(self, for_watch=False):
        rng = self.rng
        r = rng.random()
        if r < 0.35:
            return self.key(), b""
        if r < 0.60:
            p = rng.choice(PREFIXES + KEYS)
            return p, prefix_end(p)
        if r < 0.70:
            return self.key(), b"\x00"
        if r < 0.74:
            return (b"", b"\x00") if for_watch else (b"\x00", b"\x00")
        if for_watch and r < 0.77:
            return b"", b""                  # the key "\0"
        a, b = self.key(), self.key()
        if rng.random() < 0.85 and a > b:
            a, b = b, a                      # mostly valid; sometimes empty/inverted
        return a, b

    def start_revision(self):
        rng, cur, comp = self.rng, self.cur_rev, self.compact_rev
        r = rng.random()
        if r < 0.35:
            return 0
        if r < 0.60:
            return rng.randint(max(1, comp), cur)             # past, readable
        if r < 0.66 and comp > 0:
            return comp                                       # exactly compacted rev
        if r < 0.76 and comp > 1:
            return rng.randint(max(1, comp - 20), comp - 1)   # compacted
        if r < 0.80:
            return 1
        return cur + rng.randint(1, 40)                       # future

    def create_request(self, stream, active_ids):
        rng = self.rng
        key, end = self.key_range(for_watch=True)
        req = wpb.WatchCreateRequest(key=key, range_end=end,
                                     start_revision=self.start_revision())
        req.prev_kv = rng.random() < 0.5
        req.fragment = rng.random() < 0.2
        f = rng.random()
        if f < 0.12:
            req.filters.append(wpb.NOPUT)
        elif f < 0.24:
            req.filters.append(wpb.NODELETE)
        elif f < 0.27:
            req.filters.extend([wpb.NOPUT, wpb.NODELETE])
        c = rng.random()
        if c < 0.2:
            for _ in range(100):
                i = rng.randint(1, 500) * 7       # client-chosen, never reused
                if i not in self.used_ids[stream]:
                    self.used_ids[stream].add(i)
                    req.watch_id = i
                    break
        elif c < 0.25 and active_ids:
            req.watch_id = rng.choice(sorted(active_ids))     # duplicate
        return req

    def op(self, i):
        """A write: (method, request)."""
        rng = self.rng
        r = rng.random()
        if r < 0.50:
            return "Put", pb.PutRequest(key=self.key(), value=self.value())
        if r < 0.62:
            return "DeleteRange", pb.DeleteRangeRequest(key=self.key())
        if r < 0.70:
            key, end = self.key_range()
            if key == b"\x00" and end == b"\x00" and rng.random() < 0.7:
                end = b""
            return "DeleteRange", pb.DeleteRangeRequest(key=key, range_end=end)
        return "Txn", self.txn()

    def txn(self):
        rng = self.rng
        t = pb.TxnRequest()
        for _ in range(rng.randint(0, 2)):
            c = t.compare.add(key=self.key())
            tgt = rng.choice(["version", "value", "mod"])
            c.result = rng.choice([pb.Compare.EQUAL, pb.Compare.GREATER,
                                   pb.Compare.LESS, pb.Compare.NOT_EQUAL])
            if tgt == "version":
                c.target, c.version = pb.Compare.VERSION, rng.randint(0, 3)
            elif tgt == "value":
                c.target, c.value = pb.Compare.VALUE, rng.choice(VALUES)
            else:
                c.target, c.mod_revision = pb.Compare.MOD, rng.randint(0, self.cur_rev)
        for branch in (t.success, t.failure):
            keys = rng.sample(KEYS, rng.randint(0, 4))   # distinct keys
            for k in keys:
                x = rng.random()
                if x < 0.6:
                    branch.add(request_put=pb.PutRequest(key=k, value=self.value()))
                elif x < 0.85:
                    branch.add(request_delete_range=pb.DeleteRangeRequest(key=k))
                else:
                    branch.add(request_range=pb.RangeRequest(key=k))
        return t


# --------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------

class Run:
    def __init__(self, oracle, sut, seed, nops, streams):
        self.seed = seed
        self.nops = nops
        self.rng = random.Random(seed)
        self.gen = Gen(self.rng)
        self.sides = (Side(0, oracle, streams), Side(1, sut, streams))
        self.watchers = []
        self.deadline = time.monotonic() + TIME_BUDGET
        self.history = []
        self.stats = collections.Counter()

    def fail(self, msg):
        pytest.fail("WATCH DIFF (seed=%d; reproduce: WATCH_DIFF_SEED=%d WATCH_DIFF_OPS=%d)\n%s"
                    % (self.seed, self.seed, self.nops, msg), pytrace=False)

    def active_ids(self, si):
        """Ids of the oracle's watchers on stream si that are live and can
        never be cancelled by compaction (created at or after it)."""
        return {wid for wid, w in self.sides[0].active[si].items()
                if not w.req.start_revision or w.req.start_revision >= w.compact_rev}

    def create(self, op_index, start=None):
        si = self.rng.randrange(len(self.sides[0].streams))
        for s in self.sides:
            s.drain()
        req = self.gen.create_request(si, self.active_ids(si))
        if start is not None:
            req.start_revision = start
            req.prev_kv = True
        w = Watcher(len(self.watchers), si, req, op_index, self.gen.cur_rev,
                    self.gen.compact_rev)
        self.watchers.append(w)
        for s in self.sides:
            s.pending[si].append(w)
            s.streams[si].send(wpb.WatchRequest(create_request=req))
        dl = time.monotonic() + 30
        for s in self.sides:
            s.wait_created(si, dl)
        self.stats["create"] += 1

    def cancel_some(self, n):
        live = [w for w in self.watchers
                if w.res[0].created and not w.res[0].created.canceled
                and w.res[0].end is None and w.res[1].end is None
                and not w.cancel_requested]
        for w in self.rng.sample(live, min(n, len(live))):
            w.cancel_requested = True
            for s in self.sides:
                c = w.res[s.k].created
                if c is None or c.canceled:
                    continue       # diverged already; reported at the end
                s.streams[w.stream].send(wpb.WatchRequest(
                    cancel_request=wpb.WatchCancelRequest(watch_id=c.watch_id)))
            self.stats["cancel"] += 1
        # wait for the cancel responses, so later writes cannot reach them
        dl = time.monotonic() + 30
        for s in self.sides:
            while any(w.cancel_requested and w.res[s.k].end is None
                      and w.res[s.k].created is not None
                      and not w.res[s.k].created.canceled for w in self.watchers):
                assert time.monotonic() < dl, "server %d: cancel not answered" % s.k
                s.drain()
                time.sleep(0.01)

    def write(self, i, method, req):
        futs = [getattr(s.kv, method).future(req, timeout=RPC_TIMEOUT) for s in self.sides]
        outs = []
        for f in futs:
            try:
                outs.append(("ok", f.result()))
            except grpc.RpcError as e:
                outs.append(("err", (e.code(), e.details())))
        self.history.append("#%d %s %s" % (i, method, _fmt(req)))
        a, b = outs
        if a[0] != b[0] or (a[0] == "err" and a[1] != b[1]):
            self.fail("write #%d %s %s: etcd %r, under test %r" % (i, method, _fmt(req), a, b))
        if a[0] == "ok":
            ra, rb = a[1], b[1]
            sa = (ra.header.revision, getattr(ra, "succeeded", None), getattr(ra, "deleted", None))
            sb = (rb.header.revision, getattr(rb, "succeeded", None), getattr(rb, "deleted", None))
            if sa != sb:
                self.fail("write #%d %s %s: etcd (rev, succeeded, deleted) %r, under test %r"
                          % (i, method, _fmt(req), sa, sb))
            self.gen.cur_rev = ra.header.revision
            self.stats[method] += 1
        else:
            self.stats["%s:err" % method] += 1

    def compact(self):
        g = self.gen
        if g.cur_rev <= max(g.compact_rev, 1):
            return
        rev = g.cur_rev if self.rng.random() < 0.3 else \
            self.rng.randint(g.compact_rev + 1, g.cur_rev)
        for s in self.sides:
            compact(s.server, rev, physical=True)
        g.compact_rev = rev
        self.history.append("compact %d" % rev)
        self.stats["compact"] += 1

    def checkpoint(self):
        settle(self.sides)
        if self.rng.random() < 0.8:
            self.compact()
        self.cancel_some(self.rng.randint(0, 3))

    # Fixed creates at the start, so every run covers them: an empty range,
    # an inverted one, odd client-chosen ids (etcd takes any non-zero id,
    # negative ones included), and a duplicate id.
    PROLOGUE = [
        dict(key=b"b", range_end=b"a"),
        dict(key=b"a", range_end=b"a"),
        dict(key=b"a/", range_end=prefix_end(b"a/"), watch_id=-5, prev_kv=True),
        dict(key=b"\x00", range_end=b"\x00", watch_id=2 ** 62),
        dict(key=b"a", watch_id=2 ** 62),                      # duplicate
        dict(key=b"", range_end=b"", watch_id=3),              # the key "\0"
        dict(key=b"\xff", range_end=b"\x00", filters=[wpb.NOPUT]),
    ]

    def create_fixed(self, si, kw):
        req = wpb.WatchCreateRequest(**kw)
        w = Watcher(len(self.watchers), si, req, 0, self.gen.cur_rev, self.gen.compact_rev)
        self.watchers.append(w)
        for s in self.sides:
            s.pending[si].append(w)
            s.streams[si].send(wpb.WatchRequest(create_request=req))
        dl = time.monotonic() + 30
        for s in self.sides:
            s.wait_created(si, dl)
        if req.watch_id:
            self.gen.used_ids[si].add(req.watch_id)
        self.stats["create"] += 1

    def run(self):
        for kw in self.PROLOGUE:
            self.create_fixed(0, kw)
        for _ in range(INITIAL_WATCHERS):
            self.create(0)
        cps = set(self.rng.sample(range(50, max(51, self.nops)), min(CHECKPOINTS, max(0, self.nops - 50))))
        for i in range(self.nops):
            assert time.monotonic() < self.deadline, "watch diff exceeded its time budget"
            if i in cps:
                self.checkpoint()
            if self.rng.random() < 0.01:
                self.create(i)
            method, req = self.gen.op(i)
            self.write(i, method, req)
            if i % 64 == 0:
                for s in self.sides:
                    s.drain()
        # a few watchers created at the very end, mostly replaying history,
        # some aimed at the compaction boundary
        g = self.gen
        for start in (g.compact_rev - 1, g.compact_rev, g.compact_rev + 1, None, None):
            self.create(self.nops, start=start if start and start > 0 else None)
        settle(self.sides, quiet=1.0, budget=60)
        self.compare()

    # -- comparison ------------------------------------------------------
    def compare(self):
        for s in self.sides:
            if s.anomalies:
                self.fail("server %d (%s): %s" % (s.k, s.server.binary, "\n".join(s.anomalies[:5])))
            if any(s.pending):
                self.fail("server %d: created responses missing" % s.k)
        for w in self.watchers:
            a, b = w.res
            for k, r in enumerate(w.res):
                if r.errors:
                    self.fail("%s\nserver %d (%s) broke an invariant:\n  %s" % (
                        w.desc(), k, self.sides[k].server.binary, "\n  ".join(r.errors[:5])))
            if _norm(a.created) != _norm(b.created):
                self.fail("%s\ncreated response differs:\n  etcd:       %s\n  under test: %s"
                          % (w.desc(), _fmt(a.created), _fmt(b.created)))
            ea = [ev_tuple(e) for e in a.events]
            eb = [ev_tuple(e) for e in b.events]
            if ea != eb:
                j = next((j for j in range(min(len(ea), len(eb))) if ea[j] != eb[j]),
                         min(len(ea), len(eb)))
                show = lambda evs: _fmt(evs[j]) if j < len(evs) else "<no more events>"  # noqa: E731
                prev = _fmt(a.events[j - 1]) if j > 0 else "<none>"
                self.fail("%s\n%d events from etcd, %d from the server under test; first "
                          "difference at event %d\n  previous (both): %s\n  etcd:       %s\n"
                          "  under test: %s\nlast writes:\n  %s"
                          % (w.desc(), len(ea), len(eb), j, prev, show(a.events),
                             show(b.events), "\n  ".join(self.history[-5:])))
            if _norm(a.end) != _norm(b.end):
                self.fail("%s\nend differs (after %d events):\n  etcd:       %s\n  under test: %s"
                          % (w.desc(), len(ea), _fmt(a.end) if a.end else "<still live>",
                             _fmt(b.end) if b.end else "<still live>"))
            self.tally(w)

    def tally(self, w):
        a = w.res[0]
        st = self.stats
        c = a.created
        if c.canceled:
            st["create:" + c.cancel_reason] += 1
            return
        st["watchers ok"] += 1
        if a.end is not None and a.end.compact_revision:
            st["compaction cancel"] += 1
        if a.end is not None and not a.end.compact_revision:
            st["cancelled"] += 1
        st["events"] += len(a.events)
        st["responses"] += a.nresp
        st["DELETE events"] += sum(1 for e in a.events if e.type == DELETE)
        st["events with prev_kv"] += sum(1 for e in a.events if e.HasField("prev_kv"))
        if a.events and w.req.start_revision and w.req.start_revision <= w.cur_rev:
            st["watchers replaying history"] += 1
        if a.events and w.req.start_revision > w.cur_rev:
            st["watchers from a future rev with events"] += 1
        if any(e.kv.mod_revision == w.compact_rev for e in a.events) and \
                w.req.start_revision == w.compact_rev:
            st["replays from exactly the compact rev"] += 1


def test_watch_diff_random(server_factory):
    seed = int(os.environ.get("WATCH_DIFF_SEED", DEFAULT_SEED))
    nops = int(os.environ.get("WATCH_DIFF_OPS", DEFAULT_OPS))
    assert nops >= 0
    oracle = server_factory(ETCD_BIN)
    sut = server_factory(binary_under_test())
    print("watch diff: seed=%d ops=%d oracle=%s sut=%s" % (seed, nops, oracle, sut))
    streams = Streams()
    try:
        run = Run(oracle, sut, seed, nops, streams)
        run.run()
    finally:
        streams.close()
    print("watch diff stats (seed %d):" % seed)
    for k in sorted(run.stats):
        print("  %7d  %s" % (run.stats[k], k))
    # Coverage, so a broken generator cannot pass vacuously.
    st = run.stats
    if nops >= 1000:
        need = {"watchers ok": 30, "events": 2000, "DELETE events": 100,
                "events with prev_kv": 200, "compact": 3, "compaction cancel": 1,
                "cancelled": 1, "watchers replaying history": 5,
                "watchers from a future rev with events": 1,
                "create:mvcc: watcher range is empty": 2,
                "create:mvcc: duplicate watch ID provided on the WatchStream": 1}
        for k, v in need.items():
            assert st[k] >= v, "coverage: %r = %d, want >= %d (seed %d)" % (k, st[k], v, seed)


# --------------------------------------------------------------------------
# explicit differential cases
# --------------------------------------------------------------------------

def _script(server, streams, steps):
    """Run one scripted stream against a server; returns the normalized
    responses.  steps: ("put", key, value) | ("compact", rev) | ("create",
    kwargs) | ("cancel", id) | ("read", n)."""
    ws = streams.open(server)
    out = []
    for st in steps:
        if st[0] == "put":
            put(server, st[1], st[2])
        elif st[0] == "compact":
            compact(server, st[1])
        elif st[0] == "create":
            ws.create(**st[1])
        elif st[0] == "cancel":
            ws.cancel(st[1])
        elif st[0] == "read":
            for _ in range(st[1]):
                # A missing response is recorded, not waited for forever;
                # etcd's always comes (it is the oracle), so a bounded wait
                # is only a cut-off for the server under test.
                out.append(_norm(ws.poll(5)))
    return out


def test_compacted_watcher_id_stays_reserved(server_factory):
    """etcd cancels a watcher whose start revision was compacted but keeps
    its id on the stream (mvcc watchStream.watchers): reusing the id is a
    duplicate, and a cancel request for it is answered with canceled=true."""
    oracle = server_factory(ETCD_BIN)
    sut = server_factory(binary_under_test())
    steps = [("put", b"k", b"1"), ("put", b"k", b"2"), ("put", b"k", b"3"),
             ("compact", 3),
             ("create", dict(key=b"k", start_revision=2, watch_id=5)),
             ("read", 2),                                # created, compaction cancel
             ("create", dict(key=b"k", watch_id=5)),     # etcd: duplicate id
             ("read", 1),
             ("create", dict(key=b"j", start_revision=1, watch_id=9)),
             ("read", 2),
             ("cancel", 9),                               # etcd: canceled response
             ("create", dict(key=b"k")),                 # barrier: created id 0
             ("read", 2)]
    streams = Streams()
    try:
        got = [_script(s, streams, steps) for s in (oracle, sut)]
    finally:
        streams.close()
    def dec(b):
        return "<no response>" if b is None else _fmt(wpb.WatchResponse.FromString(b))
    assert None not in got[0], got[0]
    for i, (a, b) in enumerate(zip(*got)):
        assert a == b, "response %d differs:\n  etcd:       %s\n  under test: %s" % (
            i, dec(a), dec(b))


def test_replay_from_compact_revision_drops_compacted_tombstone(server_factory):
    """Compaction at C removes a tombstone written at C: a watcher starting
    at C sees the puts of C but not that delete (etcd reads the backend)."""
    oracle = server_factory(ETCD_BIN)
    sut = server_factory(binary_under_test())
    streams = Streams()
    try:
        outs = []
        for s in (oracle, sut):
            put(s, b"a", b"1")                                      # 2
            put(s, b"b", b"1")                                      # 3
            r = s.kv.Txn(pb.TxnRequest(success=[
                pb.RequestOp(request_put=pb.PutRequest(key=b"a", value=b"2")),
                pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=b"b"))]),
                timeout=10)                                         # 4
            assert r.header.revision == 4
            compact(s, 4)
            put(s, b"c", b"1")                                      # 5
            ws = streams.open(s)
            ws.create_ok(b"\x00", b"\x00", start_revision=4, prev_kv=True)
            evs = []
            for _ in range(10):
                if evs and evs[-1].kv.mod_revision == 5:
                    break
                evs.extend(ws.get().events)
            outs.append([ev_tuple(e) for e in evs])
        assert outs[0] == outs[1], "etcd %r\nunder test %r" % tuple(outs)
        assert [(e[0], e[1], e[4]) for e in outs[0]] == [(PUT, b"a", 4), (PUT, b"c", 5)]
    finally:
        streams.close()
