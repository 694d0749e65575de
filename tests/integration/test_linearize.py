"""Unit tests of the linearizability checker (linearize.py) on synthetic
histories: hand-made linearizable ones and violations (each checked for the
kind of violation that only the constraint under test can find), and large
random histories from a simulated linearizable etcd store, clean (must pass)
and with one injected fault (must fail)."""

import copy
import json
import os
import random
import subprocess
import sys

import pytest

import linearize as L
from linearize import History, Op

MS = 1_000_000


def put(id, client, key, value, call, ret, rev, status="ok"):
    return Op(id, client, "put", key, call * MS,
              None if ret is None else ret * MS, status, value=value, rev=rev)


def get(id, client, key, out, mod_rev, hdr, call, ret):
    return Op(id, client, "get", key, call * MS, ret * MS, "ok", out=out,
              mod_rev=mod_rev if out is not None else 0, rev=hdr)


def delete(id, client, key, deleted, rev, call, ret, status="ok"):
    return Op(id, client, "delete", key, call * MS,
              None if ret is None else ret * MS, status, deleted=deleted, rev=rev)


def txn(id, client, key, cmp, expect, value, succeeded, rev, call, ret,
        status="ok"):
    return Op(id, client, "txn", key, call * MS,
              None if ret is None else ret * MS, status, value=value,
              cmp=cmp, expect=expect, succeeded=succeeded, rev=rev)


def info(op):
    op.status = "info"
    op.ret = L.INF
    return op


def check(ops, watches=(), log=None, **kw):
    return L.check(History(ops, watches, log), **kw)


def log_of(*events, start=1):
    return {"start_rev": start, "events": [list(e) for e in events]}


# --------------------------------------------------------------------------
# linearizable
# --------------------------------------------------------------------------

def test_empty_and_sequential():
    assert check([]).result == L.OK
    ops = [put(1, 1, "a", "x", 0, 1, 2),
           get(2, 1, "a", "x", 2, 2, 2, 3),
           delete(3, 1, "a", 1, 3, 4, 5),
           get(4, 1, "a", None, 0, 3, 6, 7),
           delete(5, 1, "a", 0, 3, 8, 9)]
    r = check(ops, log=log_of((2, "a", "PUT", "x"), (3, "a", "DELETE", None)))
    assert r.result == L.OK, r


def test_concurrent_overlapping_ops():
    # two overlapping puts; the revisions fix their order (b before a), and
    # overlapping reads see either state consistently with their headers
    ops = [put(1, 1, "k", "a", 0, 10, 3),
           put(2, 2, "k", "b", 1, 9, 2),
           get(3, 3, "k", "b", 2, 2, 2, 8),      # between the two writes
           get(4, 4, "k", "a", 3, 3, 5, 12),
           get(5, 3, "k", None, 0, 1, 0, 1.5),   # before both
           txn(6, 4, "k", "mod_rev", 3, "c", True, 4, 11, 20),
           get(7, 1, "k", "c", 4, 4, 15, 21)]
    r = check(ops)
    assert r.result == L.OK, r


def test_concurrent_reads_may_be_reordered_within_overlap():
    # r2 returns before r1 but sees a newer revision: fine, they overlap
    ops = [put(1, 1, "k", "a", 0, 1, 2),
           put(2, 1, "k", "b", 2, 6, 3),
           get(3, 2, "k", "a", 2, 2, 1.5, 9),
           get(4, 3, "k", "b", 3, 3, 3, 7)]
    assert check(ops).result == L.OK


def test_indeterminate_write_that_happened():
    # the indeterminate put of "x" is seen by a later read (mod_rev 3) and
    # fills revision 3 between two acknowledged writes
    ops = [put(1, 1, "k", "a", 0, 1, 2),
           info(put(2, 2, "k", "x", 2, None, None)),
           put(3, 1, "j", "b", 20, 21, 4),
           get(4, 3, "k", "x", 3, 4, 22, 23)]
    r = check(ops, log=log_of((2, "k", "PUT", "a"), (3, "k", "PUT", "x"),
                              (4, "j", "PUT", "b")))
    assert r.result == L.OK, r
    # ... also without anyone reading it: it just fills revision 3
    ops2 = [put(1, 1, "k", "a", 0, 1, 2),
            info(put(2, 2, "k", "x", 2, None, None)),
            put(3, 1, "j", "b", 20, 21, 4),
            get(4, 3, "k", "x", 3, 4, 22, 23)][:3]
    assert check(ops2).result == L.OK


def test_indeterminate_write_that_did_not_happen():
    ops = [put(1, 1, "k", "a", 0, 1, 2),
           info(put(2, 2, "k", "x", 2, None, None)),
           info(txn(3, 3, "k", "value", "a", "y", None, None, 2, None)),
           info(delete(4, 4, "k", None, None, 2, None)),
           get(5, 1, "k", "a", 2, 2, 30, 31),
           put(6, 1, "k", "b", 32, 33, 3),
           get(7, 1, "k", "b", 3, 3, 34, 35)]
    r = check(ops, log=log_of((2, "k", "PUT", "a"), (3, "k", "PUT", "b")))
    assert r.result == L.OK, r


def test_indeterminate_cas_on_unknown_revision():
    # an indeterminate put of "x" (revision unknown to anyone), then a CAS
    # on mod_rev 3 succeeds: only possible if "x" took revision 3
    ops = [put(1, 1, "k", "a", 0, 1, 2),
           info(put(2, 2, "k", "x", 2, None, None)),
           txn(3, 1, "k", "mod_rev", 3, "z", True, 4, 10, 11),
           get(4, 1, "k", "z", 4, 4, 12, 13)]
    assert check(ops).result == L.OK
    # ... but a CAS on mod_rev 2 cannot succeed after a read saw "x"
    bad = ops[:2] + [get(5, 3, "k", "x", 3, 3, 5, 6),
                     txn(3, 1, "k", "mod_rev", 2, "z", True, 4, 10, 11)]
    r = check(bad)
    assert "not-linearizable" in r.kinds(), r


# --------------------------------------------------------------------------
# violations, each found by the constraint under test
# --------------------------------------------------------------------------

def test_stale_read_after_acknowledged_write():
    # the read starts after put "b" (rev 3) returned, its header is 3, but
    # it returns the older "a": only the per-key search can see that
    ops = [put(1, 1, "k", "a", 0, 1, 2),
           put(2, 1, "k", "b", 2, 3, 3),
           get(3, 2, "k", "a", 2, 3, 4, 5)]
    r = check(ops)
    assert r.result == L.VIOLATION
    assert r.kinds() == ["not-linearizable"], r
    v = r.violations[0]
    assert v.ops[0].id == 3 and any(o.id == 2 for o in v.ops), v
    assert "cannot linearize #3" in str(v)


def test_stale_read_with_stale_header():
    # same, but the header is stale too: the real-time revision check
    ops = [put(1, 1, "k", "a", 0, 1, 2),
           put(2, 1, "k", "b", 2, 3, 3),
           get(3, 2, "k", "a", 2, 2, 4, 5)]
    r = check(ops)
    assert "realtime-revision" in r.kinds(), r


def test_read_header_contradicts_value_order():
    # value-wise both reads could precede the concurrent write, but their
    # header revisions say otherwise: only the revision floors see it
    ops = [put(1, 1, "k", "a", 0, 1, 2),
           put(2, 1, "k", "b", 2, 10, 3),
           get(3, 2, "k", "a", 2, 3, 3, 4)]      # saw revision 3: after "b"
    r = check(ops)
    assert r.kinds() == ["not-linearizable"], r
    ops = [put(1, 1, "k", "a", 0, 1, 2),
           delete(2, 1, "k", 1, 3, 2, 10),
           get(3, 2, "k", None, 0, 2, 3, 4)]     # absent, yet at revision 2
    r = check(ops)
    assert r.kinds() == ["not-linearizable"], r
    # the same shapes with consistent headers are fine
    ok = [put(1, 1, "k", "a", 0, 1, 2), put(2, 1, "k", "b", 2, 10, 3),
          get(3, 2, "k", "a", 2, 2, 3, 4)]
    assert check(ok).result == L.OK
    ok = [put(1, 1, "k", "a", 0, 1, 2), delete(2, 1, "k", 1, 3, 2, 10),
          get(3, 2, "k", None, 0, 3, 3, 4)]
    assert check(ok).result == L.OK


def test_read_of_unwritten_value():
    ops = [put(1, 1, "k", "a", 0, 1, 2),
           get(2, 2, "k", "zz", 2, 2, 4, 5)]
    r = check(ops)
    assert "read-source" in r.kinds() and "not-linearizable" in r.kinds(), r


def test_read_mod_rev_of_another_key():
    # k's value "a" was put at revision 2, but the read says mod_rev 3
    # (j's write): the per-key model binds nothing here, the global one does
    ops = [put(1, 1, "k", "a", 0, 1, 2),
           put(2, 1, "j", "b", 2, 3, 3),
           get(3, 2, "k", "a", 3, 3, 4, 5)]
    r = check(ops)
    assert "read-source" in r.kinds(), r


def test_lost_write():
    ops = [put(1, 1, "k", "a", 0, 1, 2),
           put(2, 1, "k", "b", 2, 3, 3),
           put(3, 1, "j", "c", 4, 5, 4)]
    good = log_of((2, "k", "PUT", "a"), (3, "k", "PUT", "b"), (4, "j", "PUT", "c"))
    assert check(ops, log=good).result == L.OK
    lost = log_of((2, "k", "PUT", "a"), (4, "j", "PUT", "c"))
    r = check(ops, log=lost)
    assert "lost-write" in r.kinds(), r
    changed = log_of((2, "k", "PUT", "a"), (3, "k", "PUT", "B"), (4, "j", "PUT", "c"))
    r = check(ops, log=changed)
    assert "lost-write" in r.kinds() and "phantom-write" in r.kinds(), r


def test_log_gap():
    # revision 3 was made by an indeterminate write: the log must have it
    ops = [put(1, 1, "k", "a", 0, 1, 2),
           info(put(2, 2, "j", "x", 0, None, None)),
           put(3, 1, "k", "b", 2, 3, 4)]
    full = log_of((2, "k", "PUT", "a"), (3, "j", "PUT", "x"), (4, "k", "PUT", "b"))
    assert check(ops, log=full).result == L.OK
    r = check(ops, log=log_of((2, "k", "PUT", "a"), (4, "k", "PUT", "b")))
    assert r.kinds() == ["log-gap"], r


def test_read_vs_log():
    # the log says k was rewritten at revision 3 by an indeterminate put
    # that nobody read, so a read at header 4 must not see "a" any more
    ops = [put(1, 1, "k", "a", 0, 1, 2),
           info(put(2, 2, "k", "x", 2, None, None)),
           put(3, 1, "j", "c", 4, 5, 4),
           get(4, 3, "k", "a", 2, 4, 6, 7)]
    assert check(ops).result == L.OK      # without the log: x may not exist
    r = check(ops, log=log_of((2, "k", "PUT", "a"), (3, "k", "PUT", "x"),
                              (4, "j", "PUT", "c")))
    assert "read-vs-log" in r.kinds(), r


def test_duplicate_revision():
    ops = [put(1, 1, "k", "a", 0, 1, 2),
           put(2, 2, "j", "b", 0, 1, 2)]
    r = check(ops)
    assert "duplicate-revision" in r.kinds(), r
    assert {o.id for o in r.violations[0].ops} == {1, 2}


def test_revision_gap():
    # revision 3 is made by nobody
    ops = [put(1, 1, "k", "a", 0, 1, 2),
           put(2, 1, "j", "b", 2, 3, 4)]
    r = check(ops)
    assert r.kinds() == ["revision-gap"], r
    # an indeterminate write invoked before can fill it ...
    ok = ops + [info(put(3, 2, "z", "q", 1.5, None, None))]
    assert check(ok).result == L.OK
    # ... but not one invoked after the revision was seen
    late = ops + [info(put(3, 2, "z", "q", 10, None, None))]
    assert "revision-gap" in check(late).kinds()


def test_read_going_backwards_in_time():
    # different keys (each key alone is fine): the second read starts after
    # the first returned and observes an older store revision
    ops = [put(1, 1, "a", "x", 0, 1, 2),
           put(2, 1, "b", "y", 2, 3, 3),
           get(3, 2, "b", "y", 3, 3, 4, 5),
           get(4, 3, "a", "x", 2, 2, 6, 7)]
    r = check(ops)
    assert r.kinds() == ["realtime-revision"], r
    a, b = r.violations[0].ops
    assert a.rev == 3 and b.id == 4, r


def test_write_not_newer_than_earlier_read():
    ops = [put(1, 1, "a", "x", 0, 1, 2),
           put(2, 1, "b", "y", 2, 3, 3),
           get(3, 2, "b", "y", 3, 3, 4, 5),
           put(4, 3, "a", "z", 6, 7, 3)]       # would be rev 4
    r = check(ops)
    assert "realtime-revision" in r.kinds(), r


def test_cas_violation():
    # CAS expecting mod_rev 2 succeeds although "b" (rev 3) was acknowledged
    # before it started
    ops = [put(1, 1, "k", "a", 0, 1, 2),
           put(2, 1, "k", "b", 2, 3, 3),
           txn(3, 2, "k", "mod_rev", 2, "c", True, 4, 4, 5)]
    r = check(ops)
    assert r.kinds() == ["not-linearizable"], r
    # and a failed CAS whose compare did hold
    ops2 = ops[:2] + [txn(3, 2, "k", "value", "b", "c", False, 3, 4, 5)]
    assert check(ops2).kinds() == ["not-linearizable"]


def test_delete_violation():
    ops = [put(1, 1, "k", "a", 0, 1, 2),
           delete(2, 2, "k", 0, 2, 2, 3)]          # k exists: must delete 1
    assert check(ops).kinds() == ["not-linearizable"]


# -- watches ---------------------------------------------------------------

def _watch_ops():
    return [put(1, 1, "p/a", "1", 0, 1, 2),
            put(2, 1, "p/b", "2", 2, 3, 3),
            put(3, 1, "q", "3", 4, 5, 4),
            put(4, 1, "p/a", "4", 6, 7, 5),
            delete(5, 1, "p/b", 1, 6, 8, 9)]


def _watch(*sessions, until=None):
    return {"watcher": "w", "key": "p/", "range_end": "p0", "until": until,
            "sessions": [{"start_rev": s, "events": [list(e) for e in evs]}
                         for s, evs in sessions]}


EV = {2: (2, "p/a", "PUT", "1"), 3: (3, "p/b", "PUT", "2"),
      5: (5, "p/a", "PUT", "4"), 6: (6, "p/b", "DELETE", None)}


def test_watch_complete_across_reconnect():
    w = _watch((1, [EV[2], EV[3]]), (4, [EV[5], EV[6]]), until=6)
    r = check(_watch_ops(), [w])
    assert r.result == L.OK, r
    r = check(_watch_ops(), [w], log=log_of(EV[2], EV[3], (4, "q", "PUT", "3"),
                                            EV[5], EV[6]))
    assert r.result == L.OK, r


def test_watch_gap():
    w = _watch((1, [EV[2], EV[3]]), (4, [EV[6]]), until=6)
    assert check(_watch_ops(), [w]).kinds() == ["watch-gap"]
    # a resume that skips revisions is reported even if nothing was lost
    w2 = _watch((1, [EV[2], EV[3]]), (5, [EV[5], EV[6]]), until=6)
    assert check(_watch_ops(), [w2]).kinds() == ["watch-gap"]
    assert "resumed at revision 5" in str(check(_watch_ops(), [w2]))


def test_watch_out_of_order_and_duplicate():
    w = _watch((1, [EV[2], EV[5], EV[3], EV[6]]), until=6)
    assert check(_watch_ops(), [w]).kinds() == ["watch-order"]
    w = _watch((1, [EV[2], EV[3]]), (3, [EV[3], EV[5], EV[6]]), until=6)
    assert check(_watch_ops(), [w]).kinds() == ["watch-duplicate"]


def test_watch_event_before_start():
    w = _watch((1, [EV[2]]), (3, [EV[2], EV[3], EV[5], EV[6]]), until=6)
    assert "watch-order" in check(_watch_ops(), [w]).kinds()


def test_watch_wrong_content():
    bad = (5, "p/a", "PUT", "nope")
    w = _watch((1, [EV[2], EV[3], bad, EV[6]]), until=6)
    assert "watch-mismatch" in check(_watch_ops(), [w]).kinds()
    w = _watch((1, [EV[2], EV[3], (4, "q", "PUT", "3"), EV[5], EV[6]]), until=6)
    assert "watch-range" in check(_watch_ops(), [w]).kinds()


# -- budget and CLI --------------------------------------------------------

def test_budget_gives_unknown_not_a_hang():
    h = simulate(3, n=3000)
    h.log, h.watches = None, []
    r = L.check(h, max_steps=1000)
    assert r.result == L.UNKNOWN, r
    assert "budget" in str(r)
    r = L.check(h, timeout=0)
    assert r.result == L.UNKNOWN, r
    assert L.check(h, timeout=60).result == L.OK


def test_cli(tmp_path):
    ops = [put(1, 1, "k", "a", 0, 1, 2), put(2, 1, "k", "b", 2, 3, 3),
           get(3, 2, "k", "a", 2, 3, 4, 5)]
    p = tmp_path / "h.jsonl"
    History(ops).dump(str(p))
    here = os.path.dirname(os.path.abspath(__file__))
    cp = subprocess.run([sys.executable, os.path.join(here, "linearize.py"), str(p)],
                        capture_output=True, text=True, timeout=60)
    assert cp.returncode == 1, cp
    assert "violation" in cp.stdout and "#3" in cp.stdout
    History(ops[:2]).dump(str(p))
    cp = subprocess.run([sys.executable, os.path.join(here, "linearize.py"), str(p)],
                        capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0 and "result: ok" in cp.stdout, cp
    # round trip keeps every field
    h = L.load(str(p))
    assert [o.to_dict() for o in h.ops] == [o.to_dict() for o in ops[:2]]


# --------------------------------------------------------------------------
# random histories from a simulated linearizable store
# --------------------------------------------------------------------------

def simulate(seed, clients=6, keys=4, n=600, p_info=0.05, watch=True, log=True):
    """A history of a correct etcd-like store: every op takes effect at a
    random instant inside its [call, return] interval (indeterminate writes:
    after their call, or never)."""
    rnd = random.Random(seed)
    keyset = ["k%d" % i for i in range(keys)]
    skel = []
    t = [rnd.randint(0, 20) for _ in range(clients)]
    for i in range(n):
        c = rnd.randrange(clients)
        call = t[c]
        dur = rnd.randint(1, 60)
        ret = call + dur
        lp = call + rnd.random() * dur
        f = rnd.choices(["get", "put", "delete", "txn"], [40, 35, 8, 17])[0]
        st = "info" if rnd.random() < p_info else "ok"
        happens = st == "ok" or (f != "get" and rnd.random() < 0.5)
        skel.append(dict(id=i, client=c, f=f, key=rnd.choice(keyset),
                         call=call * 1000, ret=ret * 1000, lp=lp, st=st,
                         happens=happens))
        t[c] = ret + rnd.randint(0, 15)
    rev = 1
    store = {}
    events = []
    ops = []
    for s in sorted(skel, key=lambda s: s["lp"]):
        k, f = s["key"], s["f"]
        val, mr = store.get(k, (None, 0))
        o = Op(s["id"], s["client"], f, k, s["call"],
               None if s["st"] == "info" else s["ret"], s["st"])
        if f == "put":
            o.value = "v%d" % s["id"]
        elif f == "txn":
            o.value = "v%d" % s["id"]
            if rnd.random() < 0.5:
                o.cmp = "mod_rev"
                o.expect = mr if rnd.random() < 0.6 else max(0, mr - rnd.randint(1, 3))
            else:
                o.cmp = "value"
                o.expect = val if (val is not None and rnd.random() < 0.6) else "v?"
        ops.append(o)
        if not s["happens"]:
            continue
        if f == "get":
            o.out, o.mod_rev, o.rev = val, (mr if val is not None else 0), rev
        elif f == "put":
            rev += 1
            store[k] = (o.value, rev)
            events.append((rev, k, "PUT", o.value))
            o.rev = rev
        elif f == "delete":
            if val is not None:
                rev += 1
                del store[k]
                events.append((rev, k, "DELETE", None))
            o.deleted, o.rev = int(val is not None), rev
        else:
            holds = L._cmp((val, mr, 0), o)
            if holds:
                rev += 1
                store[k] = (o.value, rev)
                events.append((rev, k, "PUT", o.value))
            o.succeeded, o.rev = holds, rev
        if o.status == "info":   # the client never learns the outcome
            o.rev = o.out = o.mod_rev = o.deleted = o.succeeded = None
    ops.sort(key=lambda o: o.id)
    watches = []
    if watch:
        # prefix watcher on k1..k2 from revision 1, one reconnect
        inr = [e for e in events if "k1" <= e[1] < "k3"]
        cut = rnd.randint(0, len(inr))
        s1, s2 = inr[:cut], inr[cut:]
        resume = (s1[-1][0] + 1) if s1 else 1
        watches.append({"watcher": "w1", "key": "k1", "range_end": "k3",
                        "until": rev,
                        "sessions": [{"start_rev": 1, "events": [list(e) for e in s1]},
                                     {"start_rev": resume,
                                      "events": [list(e) for e in s2]}]})
    lg = {"start_rev": 1, "events": [list(e) for e in events], "rev": rev} \
        if log else None
    return History(ops, watches, lg)


SEEDS = range(12)


@pytest.mark.parametrize("seed", SEEDS)
def test_random_linearizable_history_passes(seed):
    h = simulate(seed)
    r = L.check(h, timeout=60)
    assert r.result == L.OK, r
    # also without the log and watches: the search alone must accept it
    h.log, h.watches = None, []
    r = L.check(h, timeout=60)
    assert r.result == L.OK, r


def test_large_random_history_passes():
    h = simulate(1000, clients=10, keys=5, n=5000, p_info=0.03)
    r = L.check(h, timeout=120)
    assert r.result == L.OK, r
    assert r.stats["ops"] == 5000


# -- fault injection: each must make the checker fail ------------------------

def _acked_writes(h):
    return [o for o in h.ops if o.acked_write()]


def fault_stale_read(h, rnd):
    """A read returns the value before an acknowledged write that returned
    before the read started (its header kept)."""
    cands = []
    for g in h.ops:
        if not (g.ok and g.f == "get"):
            continue
        ws = [w for w in _acked_writes(h) if w.key == g.key and w.ret < g.call]
        if not ws:
            continue
        w = max(ws, key=lambda w: w.rev)
        prev = [e for e in h_events(h) if e[1] == g.key and e[0] < w.rev]
        cands.append((g, prev[-1] if prev else None))
    g, e = rnd.choice(cands)
    if e is None or e[2] == "DELETE":
        g.out, g.mod_rev = None, 0
    else:
        g.out, g.mod_rev = e[3], e[0]
    return "not-linearizable"


def h_events(h):
    return [tuple(e) for e in h._events]


def fault_duplicate_revision(h, rnd):
    ws = _acked_writes(h)
    a, b = rnd.sample(ws, 2)
    b.rev = a.rev
    return "duplicate-revision"


def fault_lost_write(h, rnd):
    w = rnd.choice(_acked_writes(h))
    h.log["events"] = [e for e in h.log["events"] if e[0] != w.rev]
    return "lost-write"


def fault_backwards_read(h, rnd):
    ops = sorted((o for o in h.ops if o.ok), key=lambda o: o.ret)
    cands = []
    for g in h.ops:
        if g.ok and g.f == "get":
            before = [a for a in ops if a.ret < g.call]
            if before and max(a.rev for a in before) >= 3:
                cands.append((g, max(a.rev for a in before)))
    g, top = rnd.choice(cands)
    g.rev = top - 1
    return "realtime-revision"


def fault_watch_gap(h, rnd):
    s = [s for s in h.watches[0]["sessions"] if s["events"]]
    s = rnd.choice(s)
    del s["events"][rnd.randrange(len(s["events"]))]
    return "watch-gap"


def fault_watch_order(h, rnd):
    evs = h.watches[0]["sessions"][1]["events"] or h.watches[0]["sessions"][0]["events"]
    i = rnd.randrange(len(evs) - 1)
    evs[i], evs[i + 1] = evs[i + 1], evs[i]
    return "watch-order"


FAULTS = [fault_stale_read, fault_duplicate_revision, fault_lost_write,
          fault_backwards_read, fault_watch_gap, fault_watch_order]


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("seed", range(4))
def test_random_history_with_one_fault_fails(fault, seed):
    h = simulate(100 + seed)
    h._events = [tuple(e) for e in h.log["events"]]
    assert L.check(h).result == L.OK
    h2 = copy.deepcopy(h)
    rnd = random.Random(seed)
    kind = fault(h2, rnd)
    if kind == "not-linearizable":
        h2.log = None       # the search alone must find it
        h2.watches = []
    r = L.check(h2, timeout=60)
    assert r.result == L.VIOLATION, (fault.__name__, r)
    assert kind in r.kinds(), r
    assert len(str(r)) < 20000


def test_history_round_trips_through_jsonl(tmp_path):
    h = simulate(7)
    p = str(tmp_path / "h.jsonl")
    h.dump(p)
    h2 = L.load(p)
    assert [json.dumps(r, sort_keys=True) for r in h.records()] == \
        [json.dumps(r, sort_keys=True) for r in h2.records()]
    assert L.check(h2).result == L.OK
