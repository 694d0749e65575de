"""Watch against the server under test: raw gRPC streams, etcdctl, python3-etcd3.

Each test gets a fresh server, so revisions are exact (a fresh store is at
revision 1, every write adds one).  Expected behaviour is etcd 3.4's
(etcdserver/api/v3rpc/watch.go, mvcc/watchable_store.go).  The one place
where cairn follows a later etcd (3.4.31+/3.5.13+: progress requests are
answered only when every watcher of the stream is synced and the stream has
one) asserts etcd 3.4.23's behaviour when the binary is etcd 3.4.23.

Reads are bounded (watch_it.WatchStream: reader thread + queue.get(timeout)).
"Nothing more arrives" is never checked by waiting: a barrier write to a key
that another watcher of the same stream watches is used instead (a stream's
responses are in order, so once the barrier's event is in, every earlier
revision's events for that stream are too).
"""

import base64
import json
import os
import queue
import subprocess
import threading
import time

import pytest

import etcd3
import etcd3.events

from cairn_it import ETCDCTL_BIN, rpc_pb2 as pb
from watch_it import (DELETE, PUT, E, Streams, compact, current_rev, delete,
                      ev_tuple, has_progress_fix, op_del, op_put, prefix_end,
                      put, txn, wpb)

NOPUT, NODELETE = wpb.NOPUT, wpb.NODELETE
PROGRESS_ARGS = ["--experimental-watch-progress-notify-interval", "200ms"]


@pytest.fixture
def streams():
    s = Streams()
    try:
        yield s
    finally:
        s.close()


def evs(resps):
    return [ev_tuple(e) for r in resps for e in r.events]


def check_response_shape(r):
    """Invariants of every event response: one watcher, revision order,
    header revision not below its events."""
    revs = [e.kv.mod_revision for e in r.events]
    assert revs == sorted(revs), r
    if revs:
        assert r.header.revision >= revs[-1], r
        assert not r.created and not r.canceled and not r.compact_revision, r


def collect(ws, want, barrier_id, barrier_rev, timeout=15):
    """Read ws until the barrier watcher has seen an event at barrier_rev.

    Returns {watch_id: [event tuples below barrier_rev]} for every other
    watcher (responses without events are ignored here).  ``want`` lists the ids expected to
    show up at all (only for error messages)."""
    got = {}
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, "barrier rev %d not seen; got %r (want ids %r)" % (
            barrier_rev, got, want)
        r = ws.get(left)
        check_response_shape(r)
        if r.watch_id == barrier_id:
            if any(e.kv.mod_revision >= barrier_rev for e in r.events):
                return got
            continue
        # Other watchers' events of the barrier revision itself may come
        # before or after the barrier's: not collected.
        mine = [ev_tuple(e) for e in r.events if e.kv.mod_revision < barrier_rev]
        if mine:
            got.setdefault(r.watch_id, []).extend(mine)


# --------------------------------------------------------------------------
# created response, event content
# --------------------------------------------------------------------------

def test_created_response_and_put_event(server, streams):
    put(server, b"a", b"1")                                   # rev 2
    ws = streams.open(server)
    r = ws.create_ok(b"a")
    assert r.watch_id == 0 and r.created and not r.canceled
    assert r.header.revision == 2
    assert r.header.cluster_id and r.header.member_id and r.header.raft_term
    assert not r.compact_revision and not r.cancel_reason and not r.fragment
    r2 = ws.create_ok(b"b")
    assert r2.watch_id == 1 and r2.header.revision == 2

    put(server, b"a", b"2")                                   # rev 3
    r = ws.get()
    assert r.watch_id == 0 and not r.created and not r.canceled
    assert r.header.revision == 3
    assert len(r.events) == 1
    assert ev_tuple(r.events[0]) == E(PUT, b"a", b"2", 2, 3, 2)
    assert not r.events[0].HasField("prev_kv")

    put(server, b"b", b"x", lease=0)                          # rev 4
    r = ws.get()
    assert r.watch_id == 1 and r.header.revision == 4
    assert evs([r]) == [E(PUT, b"b", b"x", 4, 4, 1)]


def test_one_revision_one_response(server, streams):
    ws = streams.open(server)
    ws.create_ok(b"p/", prefix_end(b"p/"))                    # id 0
    # A txn: several keys, one revision; events in the txn's order.
    t = txn(server, success=[op_put(b"p/c", b"1"), op_put(b"q", b"x"),
                             op_put(b"p/a", b"2"), op_put(b"p/b", b"3")])
    assert t.succeeded and t.header.revision == 2
    r = ws.get()
    assert r.header.revision == 2 and r.watch_id == 0
    assert evs([r]) == [E(PUT, b"p/c", b"1", 2, 2, 1), E(PUT, b"p/a", b"2", 2, 2, 1),
                        E(PUT, b"p/b", b"3", 2, 2, 1)]
    # A txn mixing puts and a delete.
    t = txn(server, success=[op_put(b"p/a", b"4"), op_del(b"p/c")])
    assert t.header.revision == 3
    r = ws.get()
    assert evs([r]) == [E(PUT, b"p/a", b"4", 2, 3, 2), E(DELETE, b"p/c", mod=3)]
    # DeleteRange over the prefix: one response, deletes in key order.
    d = delete(server, b"p/", prefix_end(b"p/"))
    assert d.deleted == 2 and d.header.revision == 4
    r = ws.get()
    assert r.header.revision == 4
    assert evs([r]) == [E(DELETE, b"p/a", mod=4), E(DELETE, b"p/b", mod=4)]
    # A failed txn's else branch writes too.
    t = txn(server, compare=[pb.Compare(key=b"p/a", target=pb.Compare.VERSION,
                                        result=pb.Compare.GREATER, version=5)],
            success=[op_put(b"p/x", b"no")], failure=[op_put(b"p/y", b"yes")])
    assert not t.succeeded and t.header.revision == 5
    assert evs([ws.get()]) == [E(PUT, b"p/y", b"yes", 5, 5, 1)]


def test_delete_events_prev_kv_and_missing_keys(server, streams):
    ws = streams.open(server)
    ws.create_ok(b"k", prev_kv=True)                          # id 0
    ws.create_ok(b"k")                                        # id 1, no prev_kv
    put(server, b"k", b"v1")                                  # 2: create
    put(server, b"k", b"v2")                                  # 3: update
    delete(server, b"k")                                      # 4: delete
    d = delete(server, b"k")                                  # missing: no event
    assert d.deleted == 0 and d.header.revision == 4
    d = delete(server, b"k", b"k\x00\x00")                    # range, nothing there
    assert d.deleted == 0
    t = txn(server, success=[op_del(b"k")])                   # missing in a txn
    assert t.header.revision == 4
    put(server, b"k", b"v3")                                  # 5: re-create
    got = {0: [], 1: []}
    for _ in range(20):
        if len(got[0]) == 4 and len(got[1]) == 4:
            break
        r = ws.get()
        check_response_shape(r)
        got[r.watch_id].extend(r.events)
    p = lambda *a: a  # noqa: E731
    assert [ev_tuple(e) for e in got[0]] == [
        E(PUT, b"k", b"v1", 2, 2, 1),                         # create: no prev_kv
        E(PUT, b"k", b"v2", 2, 3, 2, prev=p(b"k", b"v1", 2, 2, 1, 0)),
        E(DELETE, b"k", mod=4, prev=p(b"k", b"v2", 2, 3, 2, 0)),
        E(PUT, b"k", b"v3", 5, 5, 1),                         # re-create: no prev_kv
    ]
    assert not got[0][0].HasField("prev_kv") and not got[0][3].HasField("prev_kv")
    assert [ev_tuple(e) for e in got[1]] == [
        E(PUT, b"k", b"v1", 2, 2, 1), E(PUT, b"k", b"v2", 2, 3, 2),
        E(DELETE, b"k", mod=4), E(PUT, b"k", b"v3", 5, 5, 1)]
    assert not any(e.HasField("prev_kv") for e in got[1])


def test_prev_kv_absent_when_previous_revision_compacted(server, streams):
    for v in (b"v1", b"v2", b"v3"):
        put(server, b"k", v)                                  # 2, 3, 4
    put(server, b"j", b"j1")                                  # 5
    compact(server, 4)
    ws = streams.open(server)
    ws.create_ok(b"j", prev_kv=True)                          # id 0 (barrier)
    ws.create_ok(b"k", prev_kv=True, start_revision=4)        # id 1: replay from 4
    r = ws.get()
    assert r.watch_id == 1
    # k@4's previous version (rev 3) is compacted: no prev_kv, no error.
    assert evs([r]) == [E(PUT, b"k", b"v3", 2, 4, 3)]
    assert not r.events[0].HasField("prev_kv")
    put(server, b"k", b"v4")                                  # 6: prev (rev 4) readable
    r = ws.get()
    assert evs([r]) == [E(PUT, b"k", b"v4", 2, 6, 4, prev=(b"k", b"v3", 2, 4, 3, 0))]
    delete(server, b"j")                                      # 7
    r = ws.get()
    assert r.watch_id == 0
    assert evs([r]) == [E(DELETE, b"j", mod=7, prev=(b"j", b"j1", 5, 5, 1, 0))]


def test_filters(server, streams):
    ws = streams.open(server)
    ws.create_ok(b"f", filters=[NOPUT])                       # 0: deletes only
    ws.create_ok(b"f", filters=[NODELETE])                    # 1: puts only
    ws.create_ok(b"f", filters=[NOPUT, NODELETE])             # 2: nothing
    ws.create_ok(b"f", filters=[NOPUT], prev_kv=True)         # 3
    ws.create_ok(b"barrier")                                  # 4
    put(server, b"f", b"1")                                   # 2
    put(server, b"f", b"2")                                   # 3
    delete(server, b"f")                                      # 4
    put(server, b"f", b"3")                                   # 5
    b = put(server, b"barrier", b"x").header.revision         # 6
    got = collect(ws, [0, 1, 3], 4, b)
    assert got.get(0) == [E(DELETE, b"f", mod=4)]
    assert got.get(1) == [E(PUT, b"f", b"1", 2, 2, 1), E(PUT, b"f", b"2", 2, 3, 2),
                          E(PUT, b"f", b"3", 5, 5, 1)]
    assert 2 not in got, got
    assert got.get(3) == [E(DELETE, b"f", mod=4, prev=(b"f", b"2", 2, 3, 2, 0))]


# --------------------------------------------------------------------------
# start revisions
# --------------------------------------------------------------------------

def test_historical_replay_then_live(server, streams):
    for i in range(6):                                        # revs 2..7
        put(server, b"h/%d" % (i % 3), b"v%d" % i)
    delete(server, b"h/0")                                    # 8
    ws = streams.open(server)
    r = ws.create_ok(b"h/", prefix_end(b"h/"), start_revision=3)
    assert r.header.revision == 8
    events, resps = ws.events(6, watch_id=0)
    for x in resps:
        check_response_shape(x)
    assert [ev_tuple(e, with_prev=False) for e in events] == [
        (PUT, b"h/1", b"v1", 3, 3, 1, 0), (PUT, b"h/2", b"v2", 4, 4, 1, 0),
        (PUT, b"h/0", b"v3", 2, 5, 2, 0), (PUT, b"h/1", b"v4", 3, 6, 2, 0),
        (PUT, b"h/2", b"v5", 4, 7, 2, 0), (DELETE, b"h/0", b"", 0, 8, 0, 0)]
    put(server, b"h/9", b"live")                              # 9
    r = ws.get()
    assert r.header.revision == 9
    assert evs([r]) == [E(PUT, b"h/9", b"live", 9, 9, 1)]
    # From revision 1 (before any write): everything, in order.
    r = ws.create_ok(b"h/", prefix_end(b"h/"), start_revision=1, prev_kv=True)
    assert r.watch_id == 1
    events, _ = ws.events(8, watch_id=1)
    assert [e.kv.mod_revision for e in events] == list(range(2, 10))
    # prev_kv on replayed events: h/0@5's previous version is h/0@2
    assert ev_tuple(events[3]) == E(PUT, b"h/0", b"v3", 2, 5, 2,
                                    prev=(b"h/0", b"v0", 2, 2, 1, 0))


def test_future_start_revision(server, streams):
    put(server, b"f", b"0")                                   # 2
    ws = streams.open(server)
    r = ws.create_ok(b"f", start_revision=5)
    assert r.header.revision == 2
    ws.create_ok(b"barrier")                                  # id 1
    for i in range(1, 6):
        put(server, b"f", b"%d" % i)                          # 3..7
    b = put(server, b"barrier", b"x").header.revision         # 8
    got = collect(ws, [0], 1, b)
    assert [e[4] for e in got[0]] == [5, 6, 7]
    assert got[0][0] == E(PUT, b"f", b"3", 2, 5, 4)


def test_range_forms(server, streams):
    ws = streams.open(server)
    forms = [
        (b"a", b""),                   # 0: one key
        (b"a", b"b"),                  # 1: [a, b)
        (b"a/", prefix_end(b"a/")),    # 2: prefix
        (b"b", b"\x00"),               # 3: >= b
        (b"\x00", b"\x00"),            # 4: everything
        (b"", b""),                    # 5: empty key = the key "\0"
        (b"", b"\x00"),                # 6: empty key, >= "\0": everything
        (b"\xff", prefix_end(b"\xff")),  # 7: prefix \xff -> range_end "\0" (>= \xff)
        (b"a\x00", b"a\x01"),          # 8: binary range
    ]
    for i, (k, e) in enumerate(forms):
        assert ws.create_ok(k, e).watch_id == i
    barrier_id = len(forms)
    ws.create_ok(b"zz-barrier")
    keys = [b"a", b"a/1", b"a\x00", b"a\x00\xff", b"ab", b"b", b"c", b"\x00",
            b"\x00\x00", b"\xff", b"\xff\xff", b"a/"]
    for i, k in enumerate(keys):
        put(server, k, b"v")                                  # rev 2 + i

    def contains(k, e, key):
        if k == b"":
            k = b"\x00"
        if e == b"":
            return key == k
        if e == b"\x00":
            return key >= k
        return k <= key < e

    b = put(server, b"zz-barrier", b"x").header.revision
    got = collect(ws, list(range(len(forms))), barrier_id, b)
    for i, (k, e) in enumerate(forms):
        want = [key for key in keys if contains(k, e, key)]
        assert [x[1] for x in got.get(i, [])] == want, (i, k, e)


def test_client_chosen_and_duplicate_ids(server, streams):
    ws = streams.open(server)
    assert ws.create_ok(b"x", watch_id=7).watch_id == 7
    ws.create(b"y", watch_id=7)
    r = ws.get()
    assert r.created and r.canceled and r.watch_id == -1
    assert r.cancel_reason == "mvcc: duplicate watch ID provided on the WatchStream"
    assert r.header.revision == 1 and not r.events
    assert ws.create_ok(b"y").watch_id == 0                   # auto ids from 0
    assert ws.create_ok(b"z", watch_id=1).watch_id == 1
    assert ws.create_ok(b"w").watch_id == 2                   # skips the taken 1
    # ids are per stream
    ws2 = streams.open(server)
    assert ws2.create_ok(b"x", watch_id=7).watch_id == 7
    assert ws2.create_ok(b"x").watch_id == 0
    put(server, b"x", b"1")
    assert ws.get().watch_id == 7
    assert sorted(ws2.get().watch_id for _ in range(2)) == [0, 7]
    put(server, b"w", b"1")
    assert ws.get().watch_id == 2
    put(server, b"z", b"1")
    assert ws.get().watch_id == 1


def test_odd_client_ids(server, streams):
    """etcd takes any non-zero client id as is, negative ones included."""
    ws = streams.open(server)
    assert ws.create_ok(b"n", watch_id=-5).watch_id == -5
    assert ws.create_ok(b"n", watch_id=2 ** 62).watch_id == 2 ** 62
    put(server, b"n", b"1")
    assert sorted(ws.get().watch_id for _ in range(2)) == [-5, 2 ** 62]
    ws.cancel(-5)
    r = ws.get()
    assert r.canceled and r.watch_id == -5
    put(server, b"n", b"2")
    r = ws.get()
    assert r.watch_id == 2 ** 62 and r.events[0].kv.value == b"2"


def test_half_closed_stream_keeps_delivering(server, streams):
    """A client that half-closes its side still gets events (etcd's recvLoop
    returns on EOF; the send side lives until the call ends)."""
    ws = streams.open(server)
    ws.create_ok(b"h")
    ws.half_close()
    put(server, b"h", b"1")
    r = ws.get()
    assert evs([r]) == [E(PUT, b"h", b"1", 2, 2, 1)]
    delete(server, b"h")
    assert evs([ws.get()]) == [E(DELETE, b"h", mod=3)]


def test_empty_range_rejected(server, streams):
    put(server, b"a", b"1")
    ws = streams.open(server)
    for key, end in ((b"b", b"a"), (b"a", b"a"), (b"b", b"b"), (b"\x01", b"\x00\x01"),
                     (b"a\x00", b"a")):
        ws.create(key, end)
        r = ws.get()
        assert r.created and r.canceled and r.watch_id == -1, (key, end, r)
        assert r.cancel_reason == "mvcc: watcher range is empty", r
        assert r.header.revision == 2
    # the stream still works, and ids were not consumed
    assert ws.create_ok(b"a").watch_id == 0


def test_cancel(server, streams):
    ws = streams.open(server)
    ws.create_ok(b"c")                                        # 0
    ws.create_ok(b"c")                                        # 1
    put(server, b"c", b"1")                                   # 2
    assert sorted(ws.get().watch_id for _ in range(2)) == [0, 1]
    ws.cancel(0)
    r = ws.get()
    assert r.canceled and r.watch_id == 0 and not r.created and not r.events
    assert r.header.revision == 2 and not r.cancel_reason
    put(server, b"c", b"2")                                   # 3
    r = ws.get()
    assert r.watch_id == 1 and r.events[0].kv.mod_revision == 3


def test_cancel_unknown_id_is_silent(server, streams):
    ws = streams.open(server)
    ws.create_ok(b"c")                                        # 0
    ws.cancel(0)
    r = ws.get()
    assert r.canceled and r.watch_id == 0
    ws.cancel(42)
    ws.cancel(0)                                              # already cancelled
    ws.cancel(-1)
    r = ws.create_ok(b"d")                                    # the very next response
    assert r.watch_id == 1
    put(server, b"c", b"x")
    put(server, b"d", b"y")
    r = ws.get()
    assert r.watch_id == 1 and evs([r])[0][1] == b"d"


def test_compacted_start_revision(server, streams):
    for i in range(5):
        put(server, b"k", b"%d" % i)                          # 2..6
    c = compact(server, 5)
    assert c.header.revision == 6
    ws = streams.open(server)
    r = ws.create_ok(b"k", start_revision=3, prev_kv=True)
    assert r.watch_id == 0 and r.header.revision == 6
    r = ws.get()
    assert r.watch_id == 0 and r.canceled and r.compact_revision == 5
    assert not r.created and not r.events and not r.cancel_reason
    assert r.header.revision == 0     # etcd: the compaction response's header
    # exactly the compaction revision is still readable
    r = ws.create_ok(b"k", start_revision=5)
    assert r.watch_id == 1
    events, _ = ws.events(2, watch_id=1)
    assert [e.kv.mod_revision for e in events] == [5, 6]
    # a compacted watcher gets nothing afterwards; the other one does
    put(server, b"k", b"x")
    r = ws.get()
    assert r.watch_id == 1 and r.events[0].kv.mod_revision == 7


def test_many_watchers_many_streams(server, streams):
    chans = [streams.channel(server) for _ in range(2)]
    wss = [streams.open(chans[i % 2]) for i in range(6)]     # 3 streams per channel
    specs = {}       # (stream idx, watch id) -> (key, end, start)
    for si, ws in enumerate(wss):
        for j in range(12):
            n = (si * 12 + j)
            if n % 3 == 0:
                k, e = b"m/%d" % (n % 10), b""
            elif n % 3 == 1:
                k, e = b"m/", prefix_end(b"m/")
            else:
                k, e = b"m/%d" % (n % 10), b"m/" + bytes([0x30 + n % 10 + 3])
            r = ws.create_ok(k, e)
            assert r.watch_id == j
            specs[(si, j)] = (k, e)
        ws.create_ok(b"barrier")                              # id 12
    writes = []
    for i in range(60):
        if i % 5 != 4:
            k = b"m/%d" % ((i * 7) % 10)
        if i % 5 == 4:                    # delete the key just written
            d = delete(server, k)
            if d.deleted:                 # deleting a missing key: no event
                writes.append((k, DELETE, d.header.revision))
        else:
            rev = put(server, k, b"v%d" % i).header.revision
            writes.append((k, PUT, rev))
    assert sum(1 for w in writes if w[1] == DELETE) >= 5
    b = put(server, b"barrier", b"x").header.revision
    for si, ws in enumerate(wss):
        got = collect(ws, list(range(12)), 12, b, timeout=30)
        for j in range(12):
            k, e = specs[(si, j)]
            want = [(t, key, rev) for key, t, rev in writes
                    if (key == k if not e else k <= key < e)]
            have = [(x[0], x[1], x[4]) for x in got.get(j, [])]
            assert have == want, (si, j, k, e)


# --------------------------------------------------------------------------
# progress
# --------------------------------------------------------------------------

def test_progress_notify(server_factory, streams):
    srv = server_factory(extra_args=PROGRESS_ARGS)
    put(srv, b"p", b"1")                                      # 2
    ws = streams.open(srv)
    ws.create_ok(b"p")                                        # 0: no progress_notify
    ws.create_ok(b"p", progress_notify=True)                  # 1
    ws.create_ok(b"other", progress_notify=True, prev_kv=True)  # 2

    def progress_round(rev, need):
        seen = {1: 0, 2: 0}
        for _ in range(200):
            if min(seen.values()) >= need:
                return
            r = ws.get(timeout=15)
            # only the watchers that asked get progress notifications
            assert r.watch_id in (1, 2), r
            assert not r.events and not r.created and not r.canceled, r
            assert not r.compact_revision and not r.fragment, r
            assert r.header.revision == rev, (rev, r)
            seen[r.watch_id] += 1
        raise AssertionError("progress notifications: %r" % seen)

    progress_round(2, 2)
    put(srv, b"p", b"2")                                      # 3
    got = set()
    for _ in range(50):
        r = ws.get(timeout=15)
        if r.events:
            assert r.watch_id in (0, 1) and r.header.revision == 3
            got.add(r.watch_id)
            if got == {0, 1}:
                break
        else:                   # a notification racing the write
            assert r.watch_id in (1, 2) and r.header.revision in (2, 3), r
    assert got == {0, 1}
    # then notifications carry the new revision
    for _ in range(50):
        r = ws.get(timeout=15)
        assert not r.events and r.watch_id in (1, 2), r
        if r.header.revision == 3:
            break
        assert r.header.revision == 2, r
    progress_round(3, 2)


def test_progress_request_when_synced(server, streams):
    put(server, b"k", b"1")                                   # 2
    ws = streams.open(server)
    ws.create_ok(b"k")                                        # 0
    put(server, b"k", b"2")                                   # 3
    assert ws.get().events[0].kv.mod_revision == 3
    ws.progress()
    r = ws.get()
    assert r.watch_id == -1 and r.header.revision == 3, r
    assert not r.events and not r.created and not r.canceled and not r.compact_revision
    # a historical watcher, once caught up
    ws.create_ok(b"k", start_revision=1)                      # 1
    events, _ = ws.events(2, watch_id=1)
    assert [e.kv.mod_revision for e in events] == [2, 3]
    put(server, b"x", b"1")                                   # 4
    ws.progress()
    r = ws.get()
    assert r.watch_id == -1 and r.header.revision == 4 and not r.events, r


def test_progress_request_without_watchers(server, streams):
    """etcd 3.4.31+/3.5.13+ (and cairn): no answer on a stream without
    watchers.  etcd 3.4.23 answers every progress request."""
    put(server, b"k", b"1")                                   # 2
    ws = streams.open(server)
    ws.progress()
    ws.create(b"k")
    r = ws.get()
    if has_progress_fix(server):
        assert r.created and r.watch_id == 0, r
    else:
        assert r.watch_id == -1 and not r.created and r.header.revision == 2, r
        r = ws.get()
        assert r.created and r.watch_id == 0, r
    # after the last watcher is cancelled, the stream has none again
    ws.cancel(0)
    r = ws.get()
    assert r.canceled and r.watch_id == 0
    ws.progress()
    ws.create(b"k")
    r = ws.get()
    if has_progress_fix(server):
        assert r.created and r.watch_id == 1, r
    else:
        assert r.watch_id == -1 and not r.created, r
        assert ws.get().created


# --------------------------------------------------------------------------
# fragments
# --------------------------------------------------------------------------

# etcd fragments a watch response at --max-request-bytes + 512 KiB (the gRPC
# overhead allowance, v3rpc/watch.go: maxRequestBytes = MaxRequestBytes +
# grpcOverheadBytes), not at --max-request-bytes itself.
GRPC_OVERHEAD = 512 * 1024
FRAG_MRB = 450000
FRAG_LIMIT = FRAG_MRB + GRPC_OVERHEAD
FRAG_ARGS = ["--max-request-bytes", str(FRAG_MRB)]


def etcd_fragment_counts(whole, limit):
    """Event counts of the pieces etcd 3.4's sendFragments makes of ``whole``
    (v3rpc/watch.go): no split below the limit or with < 2 events; else
    pieces flagged fragment=true, filled while the piece (flag included)
    stays below the limit, at least one event each."""
    if whole.ByteSize() < limit or len(whole.events) < 2:
        return [len(whole.events)]
    counts, idx = [], 0
    while True:
        cur = wpb.WatchResponse()
        cur.CopyFrom(whole)
        del cur.events[:]
        cur.fragment = True
        for ev in whole.events[idx:]:
            cur.events.add().CopyFrom(ev)
            if len(cur.events) > 1 and cur.ByteSize() >= limit:
                del cur.events[-1]
                break
            idx += 1
        counts.append(len(cur.events))
        if idx == len(whole.events):
            return counts


def read_fragmented(ws, watch_id, timeout=15):
    """Responses of one logical response: up to the first fragment=false."""
    out = []
    for _ in range(1000):
        r = ws.get(timeout)
        assert r.watch_id == watch_id, r
        out.append(r)
        if not r.fragment:
            return out
    raise AssertionError("no last fragment")


def check_fragments(pieces, limit):
    """pieces: the responses of one logical response, checked against etcd's
    algorithm.  Returns the reassembled whole."""
    def sizes():
        return [(len(p.events), p.ByteSize()) for p in pieces]
    assert all(p.fragment for p in pieces[:-1]) and not pieces[-1].fragment, sizes()
    for p in pieces:
        assert p.header == pieces[0].header and p.events, p.header
        if len(p.events) > 1:
            assert p.ByteSize() < limit, sizes()
    whole = wpb.WatchResponse()
    whole.CopyFrom(pieces[0])
    whole.fragment = False
    del whole.events[:]
    for p in pieces:
        for e in p.events:
            whole.events.add().CopyFrom(e)
    assert [len(p.events) for p in pieces] == etcd_fragment_counts(whole, limit), sizes()
    return whole


def test_fragment(server_factory, streams):
    srv = server_factory(extra_args=FRAG_ARGS)
    end = prefix_end(b"f/")
    wf = streams.open(srv)
    wf.create_ok(b"f/", end, prev_kv=True, fragment=True)     # 0
    wp = streams.open(srv)
    wp.create_ok(b"f/", end, prev_kv=True)                    # 0, not fragmenting
    vals = [bytes([0x61 + i]) * 400000 for i in range(3)]
    for i, v in enumerate(vals):
        put(srv, b"f/%d" % i, v)                              # 2..4
    for ws in (wf, wp):                                       # one event each: whole
        events, resps = ws.events(3)
        assert not any(r.fragment for r in resps)
    # One revision, 3 deletes with 400 kB prev_kvs: 1.2 MB, above the limit.
    assert delete(srv, b"f/", end).deleted == 3               # 5
    pieces = read_fragmented(wf, 0)
    assert len(pieces) == 2, [len(p.events) for p in pieces]
    whole = check_fragments(pieces, FRAG_LIMIT)
    plain = wp.get()
    assert not plain.fragment and plain.ByteSize() > FRAG_LIMIT
    assert [ev_tuple(e) for e in whole.events] == evs([plain])
    assert [ev_tuple(e) for e in whole.events] == [
        E(DELETE, b"f/%d" % i, mod=5, prev=(b"f/%d" % i, vals[i], 2 + i, 2 + i, 1, 0))
        for i in range(3)]
    # Historical replay, several revisions in one response: fragmented too.
    wh = streams.open(srv)
    wh.create_ok(b"f/", end, start_revision=2, fragment=True)
    got = []
    for _ in range(20):
        if len(got) == 6:
            break
        whole = check_fragments(read_fragmented(wh, 0), FRAG_LIMIT)
        got.extend(ev_tuple(e) for e in whole.events)
    assert [(x[0], x[1], x[4]) for x in got] == (
        [(PUT, b"f/%d" % i, 2 + i) for i in range(3)] +
        [(DELETE, b"f/%d" % i, 5) for i in range(3)])


def test_fragment_threshold_includes_grpc_overhead(server_factory, streams):
    """With --max-request-bytes 1024 a 3 kB response is NOT fragmented: etcd's
    threshold is 1024 + 512 KiB."""
    srv = server_factory(extra_args=["--max-request-bytes", "1024"])
    end = prefix_end(b"f/")
    ws = streams.open(srv)
    ws.create_ok(b"f/", end, prev_kv=True, fragment=True)
    for i in range(5):
        put(srv, b"f/%d" % i, b"v" * 600)                     # 2..6
    ws.events(5)
    assert delete(srv, b"f/", end).deleted == 5               # 7
    r = ws.get()
    assert not r.fragment and len(r.events) == 5, (r.fragment, len(r.events))
    assert r.ByteSize() > 3000


def test_fragment_boundaries_match_etcd(server_factory, streams):
    """Value sizes chosen so a piece of two events lands on every size near
    the limit, including within the fragment flag's own 2 bytes, which
    etcd counts (cur.Size() of a piece with Fragment=true)."""
    srv = server_factory(extra_args=["--max-request-bytes", "600000"])
    limit = 600000 + GRPC_OVERHEAD
    probe = streams.open(srv)
    hdr = probe.create_ok(b"probe").header

    def two_event_size(vlen, first_rev, pfx):
        r = wpb.WatchResponse()
        r.header.CopyFrom(hdr)
        r.header.revision = first_rev + 2
        for i, v in ((1, b"x"), (2, b"y")):
            e = r.events.add()
            e.kv.key, e.kv.value = pfx + b"%d" % i, v * vlen
            e.kv.create_revision = e.kv.mod_revision = first_rev + i - 1
            e.kv.version = 1
        return r.ByteSize()

    # the value size whose two-event piece is just at the limit (sizes grow
    # by 2 bytes per value byte)
    base = None
    for vlen in range(limit // 2 - 200, limit // 2):
        if two_event_size(vlen, 2, b"s00/") >= limit - 2:
            base = vlen
            break
    assert base is not None
    critical = 0
    for n, vlen in enumerate(range(base - 3, base + 3)):
        pfx = b"s%02d/" % n
        first = put(srv, pfx + b"1", b"x" * vlen).header.revision
        put(srv, pfx + b"2", b"y" * vlen)
        put(srv, pfx + b"3", b"z" * 1000)
        ws = streams.open(srv)
        ws.create_ok(pfx, prefix_end(pfx), start_revision=first, fragment=True)
        whole = check_fragments(read_fragmented(ws, 0), limit)
        assert [e.kv.value for e in whole.events] == [b"x" * vlen, b"y" * vlen,
                                                      b"z" * 1000]
        two = wpb.WatchResponse()
        two.CopyFrom(whole)
        del two.events[2:]
        if two.ByteSize() < limit <= two.ByteSize() + 2:
            critical += 1
        ws.close()
    assert critical >= 1, "the sweep missed the fragment flag's bytes"


# --------------------------------------------------------------------------
# etcdctl
# --------------------------------------------------------------------------

class CtlWatch:
    """A running `etcdctl watch ...`; its stdout read line by line."""

    def __init__(self, server, args, interactive=False):
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
        env["ETCDCTL_API"] = "3"
        cmd = [ETCDCTL_BIN, "--endpoints", server.endpoint, "--dial-timeout", "5s",
               "watch"] + list(args)
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, env=env)
        self.lines = queue.Queue()
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for line in self.p.stdout:
            self.lines.put(line.decode("utf-8", "replace").rstrip("\n"))
        self.lines.put(None)

    def send(self, line):
        self.p.stdin.write(line.encode() + b"\n")
        self.p.stdin.flush()

    def line(self, timeout=10):
        try:
            x = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("etcdctl printed nothing within %ss" % timeout) from None
        assert x is not None, "etcdctl exited: %r" % self.stop()
        return x

    def read(self, n, timeout=10):
        return [self.line(timeout) for _ in range(n)]

    def sync(self, server, key):
        """Make sure the watch is established, then skip what it printed:
        put `key` until an event shows, then put a marker and read past it."""
        for _ in range(100):
            put(server, key, b"sync")
            try:
                self.lines.get(timeout=0.2)
                break
            except queue.Empty:
                pass
        else:
            raise AssertionError("etcdctl watch never reported an event")
        put(server, key, b"sync-marker")
        for _ in range(1000):
            if self.line() == "sync-marker":
                return
        raise AssertionError("marker not seen")

    def stop(self):
        if self.p.poll() is None:
            self.p.kill()
        try:
            _, err = self.p.communicate(timeout=10)
        except ValueError:
            err = b""
        return err


@pytest.fixture
def ctlw():
    running = []

    def start(server, *args):
        c = CtlWatch(server, args)
        running.append(c)
        return c
    try:
        yield start
    finally:
        for c in running:
            c.stop()


def test_etcdctl_watch_key(server, ctlw):
    c = ctlw(server, "k")
    c.sync(server, b"k")
    put(server, b"k", b"v1")
    put(server, b"other", b"x")
    delete(server, b"k")
    put(server, b"k", b"v 2")
    assert c.read(9) == ["PUT", "k", "v1", "DELETE", "k", "", "PUT", "k", "v 2"]


def test_etcdctl_watch_prefix(server, ctlw):
    c = ctlw(server, "p/", "--prefix")
    c.sync(server, b"p/sync")
    put(server, b"p/a", b"1")
    put(server, b"p", b"not-in-prefix")
    txn(server, success=[op_put(b"p/b", b"2"), op_put(b"p/c", b"3")])
    delete(server, b"p/", prefix_end(b"p/"))
    put(server, b"p/z", b"end")
    assert c.read(24) == [
        "PUT", "p/a", "1",
        "PUT", "p/b", "2", "PUT", "p/c", "3",
        "DELETE", "p/a", "", "DELETE", "p/b", "", "DELETE", "p/c", "",
        "DELETE", "p/sync", "",
        "PUT", "p/z", "end"]


def test_etcdctl_watch_rev_and_prev_kv(server, ctlw):
    put(server, b"k", b"a")                                   # 2
    put(server, b"k", b"b")                                   # 3
    delete(server, b"k")                                      # 4
    put(server, b"j", b"x")                                   # 5
    c = ctlw(server, "k", "--rev", "3")
    assert c.read(6) == ["PUT", "k", "b", "DELETE", "k", ""]
    d = ctlw(server, "k", "--rev", "2", "--prev-kv")
    assert d.read(13) == ["PUT", "k", "a",                    # create: no prev
                          "PUT", "k", "a", "k", "b",          # prev, then kv
                          "DELETE", "k", "b", "k", ""]
    put(server, b"k", b"c")                                   # 6: a create again
    assert c.read(3) == ["PUT", "k", "c"]
    assert d.read(3) == ["PUT", "k", "c"]
    put(server, b"k", b"d")                                   # 7
    assert c.read(3) == ["PUT", "k", "d"]
    assert d.read(5) == ["PUT", "k", "c", "k", "d"]


def b64(s):
    return base64.b64encode(s).decode()


def test_etcdctl_watch_json(server, ctlw):
    put(server, b"k", b"a")                                   # 2
    txn(server, success=[op_put(b"k", b"b"), op_put(b"k2", b"c")])  # 3
    delete(server, b"k")                                      # 4
    c = ctlw(server, "k", "--prefix", "--rev", "2", "-w", "json")
    events = []
    for _ in range(10):
        if len(events) >= 4:
            break
        j = json.loads(c.line())
        assert j["Canceled"] is False and j["Created"] is False
        assert j["CompactRevision"] == 0
        assert j["Header"]["revision"] >= max(e.get("kv", {}).get("mod_revision", 0)
                                              for e in j["Events"])
        assert j["Header"]["cluster_id"] > 0 and j["Header"]["member_id"] > 0
        events.extend(j["Events"])
    assert events == [
        {"kv": {"key": b64(b"k"), "create_revision": 2, "mod_revision": 2,
                "version": 1, "value": b64(b"a")}},
        {"kv": {"key": b64(b"k"), "create_revision": 2, "mod_revision": 3,
                "version": 2, "value": b64(b"b")}},
        {"kv": {"key": b64(b"k2"), "create_revision": 3, "mod_revision": 3,
                "version": 1, "value": b64(b"c")}},
        {"type": 1, "kv": {"key": b64(b"k"), "mod_revision": 4}},
    ]
    put(server, b"k3", b"d")                                  # 5: live, one response
    j = json.loads(c.line())
    assert j["Header"]["revision"] == 5
    assert j["Events"] == [{"kv": {"key": b64(b"k3"), "create_revision": 5,
                                   "mod_revision": 5, "version": 1,
                                   "value": b64(b"d")}}]


def test_etcdctl_watch_interactive(server, ctlw):
    put(server, b"a", b"1")                                   # 2
    put(server, b"b", b"2")                                   # 3
    c = ctlw(server, "-i")
    c.send("watch a --rev 2")
    assert c.read(3) == ["PUT", "a", "1"]
    c.send("watch b --rev 1")
    assert c.read(3) == ["PUT", "b", "2"]
    put(server, b"a", b"3")
    assert c.read(3) == ["PUT", "a", "3"]
    delete(server, b"b")
    assert c.read(3) == ["DELETE", "b", ""]
    # a plain "watch key" line (no --rev), established before we write
    c.send("watch c")
    c.sync(server, b"c")
    put(server, b"c", b"x")
    assert c.read(3) == ["PUT", "c", "x"]


# --------------------------------------------------------------------------
# python3-etcd3
# --------------------------------------------------------------------------

# python3-etcd3's watch thread re-opens its stream after client.close() and
# dies on the closed channel: a client-library quirk, hence the filterwarnings
# marks on the tests below.
@pytest.fixture
def client(server):
    c = etcd3.client(host="127.0.0.1", port=server.client_port, timeout=10)
    try:
        yield c
    finally:
        c.close()


def _drain(iterator):
    """Consume a (blocking) etcd3 event iterator in a thread, into a queue."""
    q = queue.Queue()

    def run():
        try:
            for ev in iterator:
                q.put(ev)
        except Exception as e:  # noqa: BLE001
            q.put(e)
        q.put(None)
    threading.Thread(target=run, daemon=True).start()
    return q


def _take(q, n, timeout=10):
    out = []
    for _ in range(n):
        try:
            x = q.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("got %d of %d events: %r" % (len(out), n, out)) from None
        assert x is not None and not isinstance(x, Exception), (x, out)
        out.append(x)
    return out


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_python_client_watch(client):
    it, cancel = client.watch("k")
    q = _drain(it)
    client.put("k", "v1")
    client.put("j", "x")
    client.delete("k")
    client.put("k", "v2")
    evs_ = _take(q, 3)
    assert [type(e) for e in evs_] == [etcd3.events.PutEvent, etcd3.events.DeleteEvent,
                                       etcd3.events.PutEvent]
    assert [(e.key, e.value, e.mod_revision) for e in evs_] == [
        (b"k", b"v1", 2), (b"k", b"", 4), (b"k", b"v2", 5)]
    cancel()
    assert q.get(timeout=10) is None        # the iterator ends


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_python_client_watch_prefix_and_history(client):
    client.put("p/a", "1")                                    # 2
    client.put("p/b", "2")                                    # 3
    it, cancel = client.watch_prefix("p/", start_revision=2, prev_kv=True)
    q = _drain(it)
    got = _take(q, 2)
    assert [(e.key, e.value) for e in got] == [(b"p/a", b"1"), (b"p/b", b"2")]
    client.put("p/a", "3")                                    # 4
    client.put("q", "x")                                      # 5
    client.delete_prefix("p/")                                # 6
    got = _take(q, 3)
    assert [(type(e).__name__, e.key, e.value, e.prev_value) for e in got] == [
        ("PutEvent", b"p/a", b"3", b"1"), ("DeleteEvent", b"p/a", b"", b"3"),
        ("DeleteEvent", b"p/b", b"", b"2")]
    cancel()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_python_client_callbacks_and_cancel(client):
    seen, barrier = queue.Queue(), queue.Queue()
    wid = client.add_watch_callback("cb", seen.put)
    bid = client.add_watch_callback("barrier", barrier.put)
    assert wid != bid
    client.put("cb", "1")
    r = seen.get(timeout=10)
    assert [(e.key, e.value) for e in r.events] == [(b"cb", b"1")]
    assert r.header.revision == 2
    client.cancel_watch(wid)
    client.put("cb", "2")
    client.put("barrier", "x")
    r = barrier.get(timeout=10)
    assert [(e.key, e.value) for e in r.events] == [(b"barrier", b"x")]
    assert seen.empty(), seen.get_nowait()
    # a new callback watch still works after the cancel
    wid2 = client.add_watch_callback("cb", seen.put, start_revision=3)
    r = seen.get(timeout=10)
    assert [(e.key, e.value) for e in r.events] == [(b"cb", b"2")]
    client.cancel_watch(wid2)
    client.cancel_watch(bid)


# --------------------------------------------------------------------------
# kube-apiserver's pattern
# --------------------------------------------------------------------------

def test_kube_apiserver_pattern(server, streams):
    pfx = b"/registry/pods/"
    end = prefix_end(pfx)
    for i in range(7):
        put(server, pfx + b"ns/p%d" % i, b"pod%d" % i)        # 2..8
    put(server, b"/registry/services/s", b"svc")              # 9
    # List in pages of 3 at one revision (kube's paginated list).
    first = server.kv.Range(pb.RangeRequest(key=pfx, range_end=end, limit=3), timeout=10)
    list_rev = first.header.revision
    assert list_rev == 9 and first.more and first.count == 7
    items = list(first.kvs)
    key = first.kvs[-1].key + b"\x00"
    for _ in range(10):
        page = server.kv.Range(pb.RangeRequest(key=key, range_end=end, limit=3,
                                               revision=list_rev), timeout=10)
        items.extend(page.kvs)
        if not page.more:
            break
        key = page.kvs[-1].key + b"\x00"
    assert [kv.key for kv in items] == [pfx + b"ns/p%d" % i for i in range(7)]
    # A write between list and watch must be replayed.
    put(server, pfx + b"ns/p0", b"pod0-v2")                   # 10
    ws = streams.open(server, metadata=(("hasleader", "true"),))
    r = ws.create_ok(pfx, end, start_revision=list_rev + 1, prev_kv=True,
                     progress_notify=True)
    wid = r.watch_id
    assert r.header.revision == 10
    r = ws.get()
    assert evs([r]) == [E(PUT, pfx + b"ns/p0", b"pod0-v2", 2, 10, 2,
                          prev=(pfx + b"ns/p0", b"pod0", 2, 2, 1, 0))]
    k = pfx + b"ns/new"
    # create (mod_revision == 0), update (mod == rev), delete (mod == rev)
    t = txn(server, compare=[pb.Compare(key=k, target=pb.Compare.MOD,
                                        result=pb.Compare.EQUAL, mod_revision=0)],
            success=[op_put(k, b"n1")], failure=[pb.RequestOp(request_range=pb.RangeRequest(key=k))])
    assert t.succeeded
    crev = t.header.revision                                  # 11
    t = txn(server, compare=[pb.Compare(key=k, target=pb.Compare.MOD,
                                        result=pb.Compare.EQUAL, mod_revision=crev)],
            success=[op_put(k, b"n2")], failure=[pb.RequestOp(request_range=pb.RangeRequest(key=k))])
    assert t.succeeded
    urev = t.header.revision                                  # 12
    t = txn(server, compare=[pb.Compare(key=k, target=pb.Compare.MOD,
                                        result=pb.Compare.EQUAL, mod_revision=urev)],
            success=[op_del(k)], failure=[pb.RequestOp(request_range=pb.RangeRequest(key=k))])
    assert t.succeeded
    drev = t.header.revision                                  # 13
    # a stale update fails and writes nothing
    t = txn(server, compare=[pb.Compare(key=k, target=pb.Compare.MOD,
                                        result=pb.Compare.EQUAL, mod_revision=urev)],
            success=[op_put(k, b"stale")], failure=[pb.RequestOp(request_range=pb.RangeRequest(key=k))])
    assert not t.succeeded and t.header.revision == drev
    events, _ = ws.events(3, watch_id=wid)
    assert [ev_tuple(e) for e in events] == [
        E(PUT, k, b"n1", crev, crev, 1),
        E(PUT, k, b"n2", crev, urev, 2, prev=(k, b"n1", crev, crev, 1, 0)),
        E(DELETE, k, mod=drev, prev=(k, b"n2", crev, urev, 2, 0))]
    # RequestProgress on the same stream
    ws.progress()
    r = ws.get()
    assert r.watch_id == -1 and not r.events and r.header.revision >= drev, r
    # Compaction to the current revision under the live watch: undisturbed.
    cur = current_rev(server)
    compact(server, cur)
    put(server, pfx + b"ns/p1", b"pod1-v2")
    r = ws.get()
    assert r.watch_id == wid and not r.canceled and not r.compact_revision
    assert evs([r]) == [E(PUT, pfx + b"ns/p1", b"pod1-v2", 3, cur + 1, 2,
                          prev=(pfx + b"ns/p1", b"pod1", 3, 3, 1, 0))]
    # A new watch below the compacted revision: compaction cancel.
    ws2 = streams.open(server, metadata=(("hasleader", "true"),))
    r = ws2.create_ok(pfx, end, start_revision=list_rev + 1, prev_kv=True,
                      progress_notify=True)
    r = ws2.get()
    assert r.canceled and r.compact_revision == cur and r.watch_id == 0, r
    # the first stream is still live
    delete(server, pfx + b"ns/p2")
    r = ws.get()
    assert evs([r]) == [E(DELETE, pfx + b"ns/p2", mod=cur + 2,
                          prev=(pfx + b"ns/p2", b"pod2", 4, 4, 1, 0))]
