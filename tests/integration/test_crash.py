"""Crash safety: kill -9 under concurrent writes, restart, nothing acked is lost.

CRASH_ROUNDS rounds (default 20) on ONE data dir: several writer threads put
unique keys (recording every acknowledged put), the server is SIGKILLed at a
random instant, restarted on the same data dir, and then every acknowledged
put from every round so far must be readable with its value.  Keys that were
in flight at the kill may or may not exist, but nothing else may appear, and
no value may differ from what was written.  CRASH_SEED picks the instants.
"""

import os
import random
import threading
import time

import grpc
import pytest

from cairn_it import rpc_pb2 as pb, rpc_pb2_grpc

ROUNDS = int(os.environ.get("CRASH_ROUNDS", "20"))
SEED = int(os.environ.get("CRASH_SEED", "4242"))
WRITERS = 4
PREFIX = b"crash/"
MAX_PUTS_PER_WRITER = 20000      # per round; bounds the loop in count
WRITER_BUDGET_S = 15.0           # per round; bounds the loop in time


class Writer(threading.Thread):
    def __init__(self, server, rnd, wid, seed):
        super().__init__(daemon=True)
        self.channel = server.new_channel()
        self.stub = rpc_pb2_grpc.KVStub(self.channel)
        self.rnd, self.wid = rnd, wid
        self.rng = random.Random(seed)
        self.acked = {}          # key -> value, acknowledged
        self.in_doubt = {}       # key -> value, sent but outcome unknown
        self.stop = threading.Event()
        self.unexpected = []

    def value_for(self, key, i):
        # mostly small values, sometimes a few KiB (multi-page writes)
        n = 8 if self.rng.random() < 0.95 else self.rng.randint(1000, 12000)
        return (key + b"=" + bytes([33 + (i % 90)]) * n)

    def run(self):
        deadline = time.monotonic() + WRITER_BUDGET_S
        for i in range(MAX_PUTS_PER_WRITER):
            if self.stop.is_set() or time.monotonic() > deadline:
                break
            key = PREFIX + b"r%02d/w%d/%06d" % (self.rnd, self.wid, i)
            val = self.value_for(key, i)
            self.in_doubt[key] = val
            try:
                self.stub.Put(pb.PutRequest(key=key, value=val), timeout=5)
            except grpc.RpcError as e:
                if e.code() not in (grpc.StatusCode.UNAVAILABLE,
                                    grpc.StatusCode.CANCELLED,
                                    grpc.StatusCode.DEADLINE_EXCEEDED,
                                    grpc.StatusCode.UNKNOWN,
                                    grpc.StatusCode.INTERNAL):
                    self.unexpected.append((key, e.code(), e.details()))
                break            # the server is gone: this key stays in doubt
            del self.in_doubt[key]
            self.acked[key] = val

    def close(self):
        self.channel.close()


def read_all(server):
    """All keys under PREFIX, paged (values can add up to many MiB)."""
    kvs, key, rev, header = [], PREFIX, 0, None
    for _ in range(10000):
        resp = server.kv.Range(pb.RangeRequest(key=key, range_end=b"crash0", limit=500,
                                               revision=rev), timeout=30)
        if header is None:
            header, rev = resp.header, resp.header.revision
        kvs.extend(resp.kvs)
        if not resp.more:
            break
        key = resp.kvs[-1].key + b"\x00"
    else:
        raise AssertionError("paging did not terminate")
    return header, kvs


def test_kill9_during_writes_loses_nothing_acked(server):
    rng = random.Random(SEED)
    acked, in_doubt = {}, {}
    total_start = time.monotonic()
    for rnd in range(ROUNDS):
        assert time.monotonic() - total_start < 600, "crash test over its time budget"
        writers = [Writer(server, rnd, w, rng.random()) for w in range(WRITERS)]
        for w in writers:
            w.start()
        # kill at a random instant, early or late in the burst
        delay = rng.uniform(0.02, 0.6)
        time.sleep(delay)
        server.kill9()
        for w in writers:
            w.stop.set()
        for w in writers:
            w.join(timeout=30)
            assert not w.is_alive(), "writer thread did not stop"
            w.close()
            assert not w.unexpected, ("round %d: unexpected errors %r (CRASH_SEED=%d)"
                                      % (rnd, w.unexpected[:3], SEED))
            acked.update(w.acked)
            in_doubt.update(w.in_doubt)

        server.start()          # same data dir, must open after the crash
        header, kvs = read_all(server)
        stored = {kv.key: kv for kv in kvs}
        assert len(stored) == len(kvs)
        ctx = "round %d (CRASH_SEED=%d)" % (rnd, SEED)

        lost = [k for k in acked if k not in stored]
        assert not lost, "%s: %d acknowledged puts lost, e.g. %r" % (ctx, len(lost), lost[:5])
        for k, v in acked.items():
            assert stored[k].value == v, "%s: wrong value for %r" % (ctx, k)
        for k, kv in stored.items():
            assert k in acked or k in in_doubt, "%s: phantom key %r" % (ctx, k)
            assert kv.value == acked.get(k, in_doubt.get(k)), "%s: bad value %r" % (ctx, k)
            # every key was written exactly once
            assert kv.version == 1 and kv.create_revision == kv.mod_revision, (ctx, kv)
        # revisions: one per stored put, all distinct, all <= current
        revs = sorted(kv.mod_revision for kv in stored.values())
        assert len(set(revs)) == len(revs), ctx
        assert header.revision >= 1 + len(stored), ctx
        assert not revs or revs[-1] <= header.revision, ctx
        # the store is writable again
        r = server.kv.Put(pb.PutRequest(key=b"probe", value=b"%d" % rnd), timeout=10)
        assert r.header.revision == header.revision + 1, ctx
        print("round %2d: killed after %.2fs, acked %d (total %d), in doubt %d, stored %d"
              % (rnd, delay, sum(len(w.acked) for w in writers), len(acked),
                 len(in_doubt), len(stored)))
        # in-doubt keys are settled now: those that made it must stay, the
        # rest never happened (and must never show up later)
        for k, v in in_doubt.items():
            if k in stored:
                acked[k] = v
        in_doubt.clear()

    # the test really wrote (and crashed under) a meaningful load
    assert len(acked) >= ROUNDS * 10, len(acked)
    assert server.starts == ROUNDS + 1
