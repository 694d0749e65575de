#!/usr/bin/python3
"""Linearizability checker for etcd-v3-style key-value histories with revisions.

History format (JSON lines; see ``load``).  Every record is an object with a
``type``:

``op``      one client operation::

    {"type": "op", "id": 7, "client": 2, "f": "put", "key": "k1", "value": "v7",
     "call": <ns>, "return": <ns or null>, "status": "ok" | "info" | "fail",
     ...outputs}

    f = "put"     outputs: "rev" (the put's revision)
    f = "get"     outputs: "out" (value, null = absent), "mod_rev", "rev" (header)
    f = "delete"  outputs: "deleted" (0/1), "rev" (header revision)
    f = "txn"     inputs: "cmp" ("mod_rev" | "value"), "expect", "value" (the
                  value put when the compare holds); outputs: "succeeded",
                  "rev" (header revision: the write's when it succeeded)

    status "info" (error, timeout: indeterminate) means the op may or may not
    have taken effect; its return time is infinity whatever "return" says.
    status "fail" means it certainly did not take effect (it is ignored).

``init``    optional initial state: {"type": "init", "rev": 1, "kvs": {key:
            [value, mod_rev]}}  (default: empty store at revision 1)
``watch``   one watcher: {"type": "watch", "watcher": name, "key": k,
            "range_end": e|null, "sessions": [{"start_rev": s, "events":
            [[rev, key, "PUT"|"DELETE", value|null], ...]}], "until": R|null}
            Sessions are successive reconnects; "until" is a revision up to
            which the watcher claims to have received everything (default:
            the revision of its last event).
``log``     the store's full write history read after the run (a watch from
            ``start_rev`` over the whole key space, not compacted):
            {"type": "log", "start_rev": 1, "events": [[rev, key, type,
            value], ...], "rev": <the revision when it was read>}

Checks (each one is a necessary condition of linearizability of an etcd
store, so a violation is a real one; together they are not a complete
decision procedure, see ``check`` for the limits):

* per key: Wing & Gong search with Lowe's memoization of (linearized bitmask,
  model state) -- the P-compositionality of linearizability lets each key be
  checked alone.  The model state of a key is (value, mod_revision, floor),
  floor being a lower bound of the store's global revision at the current
  point of the linearization: a write acknowledged with revision R needs
  R > floor (then floor = R), a read with header revision H needs H >= floor
  (then floor = H), a read's mod_revision must be the current write's.
* global, over all keys: acknowledged write revisions are unique; revisions
  respect real-time order (an op that starts after another returned never
  observes an older revision, and a write gets a strictly newer one); every
  revision up to the largest observed is produced by exactly one write (an
  acknowledged one, else one of the indeterminate writes invoked before the
  revision was observed); a read's (value, mod_revision) is the one written
  by the write that has that revision.
* against the ``log`` record: lost writes (an acknowledged write missing or
  different at its revision), phantom writes (a logged write nobody issued),
  revisions not contiguous, and every acknowledged read/compare evaluated
  against the logged state at its revision.
* watches: per watcher, events in revision order with no duplicates, no
  gaps against the acknowledged writes (and the log) over the covered
  revisions across reconnects, each event matching a write.

CLI: ``linearize.py history.jsonl [--timeout S]`` prints the result and exits
0 (linearizable), 1 (violation) or 2 (unknown: the budget ran out).
"""

import argparse
import bisect
import json
import sys
import time

INF = float("inf")

OK = "ok"
VIOLATION = "violation"
UNKNOWN = "unknown"

WRITE_FS = ("put", "delete", "txn")


# --------------------------------------------------------------------------
# history
# --------------------------------------------------------------------------

class Op:
    __slots__ = ("id", "client", "f", "key", "value", "call", "ret", "status",
                 "rev", "out", "mod_rev", "deleted", "succeeded", "cmp",
                 "expect", "hint")

    def __init__(self, id, client, f, key, call, ret=None, status=OK,
                 value=None, rev=None, out=None, mod_rev=None, deleted=None,
                 succeeded=None, cmp=None, expect=None):
        if f not in ("put", "get", "delete", "txn"):
            raise ValueError("unknown op f=%r" % (f,))
        if status not in ("ok", "info", "fail"):
            raise ValueError("unknown status %r" % (status,))
        self.id, self.client, self.f, self.key = id, client, f, key
        self.value, self.call, self.status = value, call, status
        self.ret = INF if (status == "info" or ret is None) else ret
        self.rev, self.out, self.mod_rev = rev, out, mod_rev
        self.deleted, self.succeeded = deleted, succeeded
        self.cmp, self.expect = cmp, expect
        self.hint = None   # revision of an indeterminate write, if known

    @classmethod
    def from_dict(cls, d):
        return cls(d["id"], d.get("client"), d["f"], d["key"], d["call"],
                   d.get("return"), d.get("status", OK), d.get("value"),
                   d.get("rev"), d.get("out"), d.get("mod_rev"),
                   d.get("deleted"), d.get("succeeded"), d.get("cmp"),
                   d.get("expect"))

    def to_dict(self):
        d = {"type": "op", "id": self.id, "client": self.client, "f": self.f,
             "key": self.key, "call": self.call,
             "return": None if self.ret == INF else self.ret,
             "status": self.status}
        for k in ("value", "rev", "out", "mod_rev", "deleted", "succeeded",
                  "cmp", "expect"):
            v = getattr(self, k)
            if v is not None:
                d[k] = v
        return d

    # -- classification --------------------------------------------------
    @property
    def ok(self):
        return self.status == OK

    def acked_write(self):
        """True if the op is acknowledged and wrote (one revision)."""
        if not self.ok:
            return False
        return (self.f == "put" or (self.f == "delete" and self.deleted)
                or (self.f == "txn" and self.succeeded))

    def maybe_write(self):
        return self.status == "info" and self.f in WRITE_FS

    def is_write(self):
        return self.acked_write() or self.maybe_write()

    def written_value(self):
        """(type, value) this op writes when it takes effect."""
        if self.f == "delete":
            return ("DELETE", None)
        return ("PUT", self.value)

    def __repr__(self):
        return describe(self)


def _t(x):
    return "inf" if x == INF else "%.6fs" % (x / 1e9)


def describe(op):
    """One line for an operation, as in a violation report."""
    f = op.f
    if f == "put":
        s = "put(%r, %r)" % (op.key, op.value)
        r = "rev %s" % op.rev
    elif f == "get":
        s = "get(%r)" % (op.key,)
        r = ("%r mod_rev %s hdr %s" % (op.out, op.mod_rev, op.rev)
             if op.out is not None else "absent hdr %s" % op.rev)
    elif f == "delete":
        s = "delete(%r)" % (op.key,)
        r = "deleted %s rev %s" % (op.deleted, op.rev)
    else:
        s = "txn(%r: %s == %r ? put %r)" % (op.key, op.cmp, op.expect, op.value)
        r = "succeeded %s rev %s" % (op.succeeded, op.rev)
    if op.status == "info":
        r = "indeterminate" + (" (seen at rev %s)" % op.hint if op.hint else "")
    elif op.status == "fail":
        r = "failed"
    return "#%s c%s %s -> %s [%s .. %s]" % (op.id, op.client, s, r,
                                          _t(op.call), _t(op.ret))


class History:
    def __init__(self, ops=(), watches=(), log=None, init=None):
        self.ops = list(ops)
        self.watches = list(watches)
        self.log = log
        self.init = init or {"rev": 1, "kvs": {}}

    @classmethod
    def from_records(cls, records):
        h = cls()
        for r in records:
            t = r.get("type", "op")
            if t == "op":
                h.ops.append(Op.from_dict(r))
            elif t == "watch":
                h.watches.append(r)
            elif t == "log":
                h.log = r
            elif t == "init":
                h.init = {"rev": r.get("rev", 1), "kvs": r.get("kvs", {})}
            else:
                raise ValueError("unknown record type %r" % (t,))
        return h

    def records(self):
        out = [dict(type="init", **self.init)]
        out += [o.to_dict() for o in self.ops]
        out += [dict(w, type="watch") for w in self.watches]
        if self.log is not None:
            out.append(dict(self.log, type="log"))
        return out

    def dump(self, path):
        with open(path, "w") as f:
            for r in self.records():
                f.write(json.dumps(r) + "\n")


def load(path):
    with open(path) as f:
        return History.from_records(json.loads(l) for l in f if l.strip())


# --------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------

class Violation:
    def __init__(self, kind, msg, ops=()):
        self.kind, self.msg, self.ops = kind, msg, list(ops)

    def __str__(self):
        s = "[%s] %s" % (self.kind, self.msg)
        for o in self.ops:
            s += "\n    " + (describe(o) if isinstance(o, Op) else str(o))
        return s

    __repr__ = __str__


class Result:
    def __init__(self):
        self.violations = []
        self.unknown = []          # parts whose budget ran out
        self.stats = {}

    @property
    def result(self):
        if self.violations:
            return VIOLATION
        return UNKNOWN if self.unknown else OK

    def kinds(self):
        return sorted(set(v.kind for v in self.violations))

    def __str__(self):
        lines = ["result: %s" % self.result]
        lines.append("stats: " + ", ".join("%s=%s" % kv for kv in sorted(self.stats.items())))
        for u in self.unknown:
            lines.append("unknown: %s" % u)
        for v in self.violations[:20]:
            lines.append(str(v))
        if len(self.violations) > 20:
            lines.append("... %d more violations" % (len(self.violations) - 20))
        return "\n".join(lines)

    __repr__ = __str__


# --------------------------------------------------------------------------
# the per-key model
# --------------------------------------------------------------------------
#
# state = (value, mod_rev, floor)
#   value   None when the key is absent
#   mod_rev the key's mod_revision (0 when absent); a negative number -lb
#           stands for "unknown, >= lb" (an indeterminate write's revision)
#   floor   lower bound of the global revision at this point

def _cmp(state, op):
    """Txn compare on the state: True, False, or None (cannot tell yet)."""
    val, mr = state[0], state[1]
    if op.cmp == "value":
        return val is not None and val == op.expect
    if op.cmp == "mod_rev":
        cur = 0 if val is None else mr
        if cur >= 0:
            return cur == op.expect
        return None if op.expect >= -cur else False
    raise ValueError("unsupported txn compare %r" % (op.cmp,))


def _bind(state, op):
    """State with an unknown mod_rev bound to op.expect (cmp true)."""
    val, mr, fl = state
    if mr < 0 and op.cmp == "mod_rev":
        return (val, op.expect, max(fl, op.expect))
    return state


def _write(state, op, rev):
    """Apply op's write with revision rev (None: unknown); None if impossible."""
    val, mr, fl = state
    if rev is not None:
        if rev <= fl:
            return None
        nfl, nmr = rev, rev
    else:
        nfl, nmr = fl + 1, -(fl + 1)
    if op.f == "delete":
        return (None, 0, nfl)
    return (op.value, nmr, nfl)


def step(state, op):
    """Possible next states when op is linearized now ([] if it cannot be)."""
    val, mr, fl = state
    f = op.f
    if op.ok:
        if f == "put":
            s = _write(state, op, op.rev)
            return [s] if s else []
        if f == "get":
            h = op.rev
            if h < fl:
                return []
            if op.out is None:
                return [(None, mr, h)] if val is None else []
            if val != op.out or op.mod_rev > h:
                return []
            if mr >= 0:
                return [(val, mr, h)] if mr == op.mod_rev else []
            return [(val, op.mod_rev, h)] if op.mod_rev >= -mr else []
        if f == "delete":
            if op.deleted:
                if val is None:
                    return []
                s = _write(state, op, op.rev)
                return [s] if s else []
            if val is not None or op.rev < fl:
                return []
            return [(None, mr, op.rev)]
        # txn
        c = _cmp(state, op)
        if op.succeeded:
            if c is False:
                return []
            s = _write(_bind(state, op), op, op.rev)
            return [s] if s else []
        if c is True or op.rev < fl:
            return []
        return [(val, mr, op.rev)]
    # indeterminate: only the alternatives with an effect (no effect at all is
    # the same as never linearizing it, which its infinite return allows)
    if f == "put":
        s = _write(state, op, op.hint)
        return [s] if s else []
    if f == "delete":
        if val is None:
            return []
        s = _write(state, op, op.hint)
        return [s] if s else []
    if f == "txn":
        if _cmp(state, op) is False:
            return []
        s = _write(_bind(state, op), op, op.hint)
        return [s] if s else []
    return []


def _fmt_state(s):
    val, mr, fl = s
    m = mr if mr >= 0 else ">=%d?" % -mr
    return ("absent" if val is None else "%r mod_rev %s" % (val, m)) + \
        ", global revision >= %d" % fl


# --------------------------------------------------------------------------
# Wing & Gong / Lowe search for one key
# --------------------------------------------------------------------------

class Budget:
    def __init__(self, seconds=60.0, steps=None):
        self.deadline = time.monotonic() + seconds
        self.steps = steps
        self.used = 0

    def spend(self, n=1):
        """False when the budget is exhausted."""
        self.used += n
        if self.steps is not None and self.used > self.steps:
            return False
        return time.monotonic() < self.deadline


def check_key(ops, init, budget):
    """WGL search over ops (all on one key).

    Returns (OK|VIOLATION|UNKNOWN, explanation-or-None)."""
    ops = [o for o in ops if o.status != "fail"
           and not (o.status == "info" and o.f == "get")]
    n = len(ops)
    if n == 0:
        return OK, None
    CALL, RET = 0, 1
    ev = []
    for i, o in enumerate(ops):
        ev.append((o.call, CALL, i))
        ev.append((o.ret, RET, i))
    ev.sort()
    N = len(ev) + 1
    kind = [None] * N
    opi = [0] * N
    nxt = list(range(1, N + 1))
    nxt[-1] = -1
    prv = list(range(-1, N - 1))
    match = [0] * N
    callnode = {}
    for j, (_, k, i) in enumerate(ev, start=1):
        kind[j], opi[j] = k, i
        if k == CALL:
            callnode[i] = j
        else:
            match[callnode[i]] = j

    def lift(c):
        nxt[prv[c]] = nxt[c]
        prv[nxt[c]] = prv[c]
        r = match[c]
        nxt[prv[r]] = nxt[r]
        if nxt[r] != -1:
            prv[nxt[r]] = prv[r]

    def unlift(c):
        r = match[c]
        nxt[prv[r]] = r
        if nxt[r] != -1:
            prv[nxt[r]] = r
        nxt[prv[c]] = c
        prv[nxt[c]] = c

    finite = sum(1 for o in ops if o.ret != INF)
    state = init
    lin = 0
    cache = set()
    stack = []      # (call node, state before, alternatives, index tried)
    best = (-1, None)
    entry = nxt[0]
    tick = 0
    while finite > 0:
        tick += 1
        if tick & 1023 == 0 and not budget.spend(1024):
            return UNKNOWN, "search budget exhausted after %d steps (%d ops)" % (tick, n)
        if kind[entry] == CALL:
            i = opi[entry]
            moved = False
            alts = step(state, ops[i])
            bit = 1 << i
            for k, ns in enumerate(alts):
                key = (lin | bit, ns)
                if key not in cache:
                    cache.add(key)
                    stack.append((entry, state, alts, k))
                    lin |= bit
                    state = ns
                    lift(entry)
                    if ops[i].ret != INF:
                        finite -= 1
                    entry = nxt[0]
                    moved = True
                    break
            if not moved:
                entry = nxt[entry]
            continue
        # a return entry whose op is not linearized yet: backtrack
        if len(stack) > best[0]:
            best = (len(stack), ([ops[opi[c]] for c, _, _, _ in stack], state,
                                 ops[opi[entry]]))
        while True:
            if not stack:
                return VIOLATION, _explain(ops, best[1])
            c, st, alts, k = stack.pop()
            i = opi[c]
            bit = 1 << i
            lin &= ~bit
            state = st
            unlift(c)
            if ops[i].ret != INF:
                finite += 1
            moved = False
            for k2 in range(k + 1, len(alts)):
                key = (lin | bit, alts[k2])
                if key not in cache:
                    cache.add(key)
                    stack.append((c, st, alts, k2))
                    lin |= bit
                    state = alts[k2]
                    lift(c)
                    if ops[i].ret != INF:
                        finite -= 1
                    entry = nxt[0]
                    moved = True
                    break
            if not moved:
                entry = nxt[c]
            break
    budget.spend(tick & 1023)
    return OK, None


def _explain(ops, best):
    """The blocking op, the state it met, and the ops that matter."""
    seq, state, blocked = best
    # ops concurrent with the blocked one, plus the last writes linearized
    conc = [o for o in ops if o is not blocked and o.call <= blocked.ret
            and o.ret >= blocked.call]
    lastw = [o for o in seq if o.is_write()][-2:]
    involved = []
    for o in lastw + [o for o in seq[-3:]] + conc[:6]:
        if o not in involved and o is not blocked:
            involved.append(o)
    involved.sort(key=lambda o: o.call)
    msg = ("cannot linearize %s: after the longest linearizable prefix (%d ops) "
           "the key is %s" % (describe(blocked), len(seq), _fmt_state(state)))
    return msg, [blocked] + involved


# --------------------------------------------------------------------------
# global checks
# --------------------------------------------------------------------------

def _observed_rev(o):
    """Revision an acknowledged op observed (write: its own; read: header)."""
    return o.rev if o.ok else None


def check_duplicate_revisions(h, res):
    byrev = {}
    for o in h.ops:
        if o.acked_write():
            if o.rev in byrev:
                res.violations.append(Violation(
                    "duplicate-revision",
                    "two acknowledged writes have revision %s" % o.rev,
                    [byrev[o.rev], o]))
            else:
                byrev[o.rev] = o
    return byrev


def check_realtime(h, res, limit=10):
    """An op invoked after another returned never sees an older revision;
    a write then gets a strictly newer one."""
    ops = [o for o in h.ops if o.ok and o.rev is not None]
    by_ret = sorted(ops, key=lambda o: o.ret)
    by_call = sorted(ops, key=lambda o: o.call)
    j = 0
    top = None          # op with the largest observed revision returned so far
    found = 0
    for b in by_call:
        while j < len(by_ret) and by_ret[j].ret < b.call:
            a = by_ret[j]
            if top is None or a.rev > top.rev:
                top = a
            j += 1
        if top is None:
            continue
        if b.acked_write():
            bad = b.rev <= top.rev
        else:
            bad = b.rev < top.rev
        if bad:
            res.violations.append(Violation(
                "realtime-revision",
                "op started after another returned but observed an older "
                "revision (%s after %s)" % (b.rev, top.rev), [top, b]))
            found += 1
            if found >= limit:
                return


def check_revision_gaps(h, res, acked):
    """Every revision in (init, max observed] is made by exactly one write:
    an acknowledged one, else an indeterminate write invoked before the
    first return of an op that observed that revision or a later one."""
    base = h.init.get("rev", 1)
    obs = sorted((o for o in h.ops if o.ok and o.rev is not None),
                 key=lambda o: o.rev)
    if not obs:
        return
    top = obs[-1].rev
    # deadline(r) = min return time of ops observing revision >= r
    suffix_min = [None] * len(obs)
    m = None
    for i in range(len(obs) - 1, -1, -1):
        if m is None or obs[i].ret < m.ret:
            m = obs[i]
        suffix_min[i] = m
    revs = [o.rev for o in obs]
    missing = []
    for r in range(base + 1, top + 1):
        if r in acked:
            continue
        i = bisect.bisect_left(revs, r)
        missing.append((suffix_min[i].ret, r, suffix_min[i]))
    if not missing:
        return
    missing.sort(key=lambda x: x[0])
    calls = sorted(o.call for o in h.ops if o.maybe_write())
    for n, (deadline, r, witness) in enumerate(missing, start=1):
        avail = bisect.bisect_left(calls, deadline)
        if avail < n:
            res.violations.append(Violation(
                "revision-gap",
                "revision %d was observed (or passed) but no acknowledged "
                "write has it, and only %d indeterminate writes were invoked "
                "before the op below returned, for %d such revisions"
                % (r, avail, n), [witness]))
            return


def check_read_sources(h, res, acked):
    """A read's (value, mod_rev) must be what the write with that revision
    wrote; with no acknowledged write there, an indeterminate write of that
    key and value must exist."""
    maybe = {}
    for o in h.ops:
        if o.maybe_write() and o.f != "delete":
            maybe.setdefault((o.key, o.value), []).append(o)
    for o in h.ops:
        if not (o.ok and o.f == "get" and o.out is not None):
            continue
        w = acked.get(o.mod_rev)
        if w is not None:
            if w.key != o.key or w.f == "delete" or w.value != o.out:
                res.violations.append(Violation(
                    "read-source",
                    "read's mod_revision %s belongs to another write" % o.mod_rev,
                    [o, w]))
        elif not any(m.call < o.ret for m in maybe.get((o.key, o.out), ())):
            res.violations.append(Violation(
                "read-source",
                "read returned a value that no write (acknowledged at that "
                "revision, or indeterminate) wrote", [o]))


def resolve_hints(h):
    """Give indeterminate writes of a unique value the revision at which a
    read, watch or the log saw that value (they certainly took effect)."""
    count = {}
    for o in h.ops:
        if o.f in ("put", "txn") and o.status != "fail":
            count[(o.key, o.value)] = count.get((o.key, o.value), 0) + 1
    seen = {}
    for o in h.ops:
        if o.ok and o.f == "get" and o.out is not None:
            seen.setdefault((o.key, o.out), set()).add(o.mod_rev)
    evs = []
    for w in h.watches:
        for s in w.get("sessions", ()):
            evs += s.get("events", ())
    if h.log:
        evs += h.log.get("events", ())
    for rev, key, typ, val in evs:
        if typ == "PUT":
            seen.setdefault((key, val), set()).add(rev)
    for o in h.ops:
        o.hint = None
        if o.maybe_write() and o.f != "delete" and count.get((o.key, o.value)) == 1:
            r = seen.get((o.key, o.value))
            if r and len(r) == 1:
                o.hint = next(iter(r))


# --------------------------------------------------------------------------
# log (final history) and watch checks
# --------------------------------------------------------------------------

def _in_range(key, start, end):
    """etcd range semantics: end None -> the key alone; "\\0" -> from key on."""
    if end is None or end == "":
        return key == start
    if end == "\x00":
        return key >= start
    return start <= key < end


def check_log(h, res, acked):
    log = h.log
    events = [tuple(e) for e in log.get("events", ())]
    start = log.get("start_rev", 1)
    byrev = {}
    prev = None
    for e in events:
        rev, key, typ, val = e
        if prev is not None and rev < prev:
            res.violations.append(Violation(
                "log-order", "log goes back from revision %s to %s" % (prev, rev)))
        if (rev, key) in byrev:
            res.violations.append(Violation(
                "log-duplicate", "log has revision %s for key %r twice" % (rev, key)))
        byrev[(rev, key)] = e
        prev = rev
    revs = sorted(set(e[0] for e in events))
    first = max(start, h.init.get("rev", 1) + 1)
    want = set(range(first, (revs[-1] if revs else first - 1) + 1))
    holes = sorted(want - set(revs))
    if holes:
        res.violations.append(Violation(
            "log-gap", "log skips revisions %s" % holes[:10]))
    # lost writes: every acknowledged write is in the log at its revision
    for r, w in sorted(acked.items()):
        if r < start:
            continue
        e = byrev.get((r, w.key))
        typ, val = w.written_value()
        if e is None or e[2] != typ or (typ == "PUT" and e[3] != val):
            res.violations.append(Violation(
                "lost-write",
                "acknowledged write is %s in the final history" %
                ("missing" if e is None else "different (%r)" % (list(e),)), [w]))
    # phantom writes: every logged write was issued by someone
    issued = {}
    for o in h.ops:
        if o.is_write():
            issued.setdefault((o.key,) + o.written_value(), []).append(o)
    for e in events:
        rev, key, typ, val = e
        w = acked.get(rev)
        if w is not None and w.key == key and \
                w.written_value() == (typ, val if typ == "PUT" else None):
            continue
        cands = [o for o in issued.get((key, typ, val if typ == "PUT" else None), ())
                 if o.maybe_write()]
        if not cands:
            res.violations.append(Violation(
                "phantom-write", "log has %r which no client wrote" % (list(e),)))
    # every acknowledged read / compare against the logged state at its rev
    if start > h.init.get("rev", 1) + 1:
        return
    per_key = {}
    for e in events:
        per_key.setdefault(e[1], []).append(e)
    init = h.init.get("kvs", {})

    def state_at(key, rev):
        es = per_key.get(key, [])
        i = bisect.bisect_right([e[0] for e in es], rev) - 1
        if i < 0:
            iv = init.get(key)
            return (iv[0], iv[1]) if iv else (None, 0)
        e = es[i]
        return (e[3], e[0]) if e[2] == "PUT" else (None, 0)

    for o in h.ops:
        if not o.ok:
            continue
        if o.f == "get":
            val, mr = state_at(o.key, o.rev)
            if (val, mr if val is not None else 0) != \
                    (o.out, o.mod_rev if o.out is not None else 0):
                res.violations.append(Violation(
                    "read-vs-log",
                    "at revision %s the final history has %r (mod_rev %s)"
                    % (o.rev, val, mr), [o]))
        elif o.f == "delete":
            val, _ = state_at(o.key, o.rev - 1 if o.deleted else o.rev)
            if (val is not None) != bool(o.deleted):
                res.violations.append(Violation(
                    "read-vs-log", "delete's count disagrees with the final "
                    "history (value %r)" % (val,), [o]))
        elif o.f == "txn":
            val, mr = state_at(o.key, o.rev - 1 if o.succeeded else o.rev)
            c = _cmp((val, mr, 0), o)
            if c != bool(o.succeeded):
                res.violations.append(Violation(
                    "read-vs-log", "txn compare disagrees with the final "
                    "history (value %r mod_rev %s)" % (val, mr), [o]))


def check_watch(h, w, res, acked):
    name = w.get("watcher")
    key, end = w["key"], w.get("range_end")
    sessions = w.get("sessions", [])
    if not sessions:
        return
    flat = []
    last = None
    first_start = sessions[0]["start_rev"]
    for si, s in enumerate(sessions):
        if si > 0 and last is not None and s["start_rev"] > last + 1:
            res.violations.append(Violation(
                "watch-gap", "watcher %s resumed at revision %s after seeing "
                "revision %s" % (name, s["start_rev"], last)))
        if si > 0 and last is None and s["start_rev"] > first_start:
            res.violations.append(Violation(
                "watch-gap", "watcher %s resumed at revision %s having seen "
                "nothing since %s" % (name, s["start_rev"], first_start)))
        for e in s.get("events", ()):
            rev = e[0]
            if rev < s["start_rev"]:
                res.violations.append(Violation(
                    "watch-order", "watcher %s session %d got revision %s "
                    "before its start %s" % (name, si, rev, s["start_rev"])))
            flat.append(tuple(e))
            if last is None or rev > last:
                last = rev
    seen = set()
    prev = None
    for e in flat:
        if prev is not None and e[0] < prev[0]:
            res.violations.append(Violation(
                "watch-order", "watcher %s: revision %s after %s" % (name, e[0], prev[0])))
        if (e[0], e[1]) in seen:
            res.violations.append(Violation(
                "watch-duplicate", "watcher %s got revision %s of %r twice"
                % (name, e[0], e[1])))
        if not _in_range(e[1], key, end):
            res.violations.append(Violation(
                "watch-range", "watcher %s got key %r outside its range" % (name, e[1])))
        seen.add((e[0], e[1]))
        prev = e
    until = w.get("until")
    if until is None:
        until = last if last is not None else first_start - 1
    got = {(e[0], e[1]): e for e in flat}
    # every acknowledged write in range and in [first_start, until] arrived
    for r, wr in sorted(acked.items()):
        if r < first_start or r > until or not _in_range(wr.key, key, end):
            continue
        e = got.get((r, wr.key))
        typ, val = wr.written_value()
        if e is None:
            res.violations.append(Violation(
                "watch-gap", "watcher %s missed revision %s (covered %s..%s)"
                % (name, r, first_start, until), [wr]))
        elif e[2] != typ or (typ == "PUT" and e[3] != val):
            res.violations.append(Violation(
                "watch-mismatch", "watcher %s got %r for revision %s"
                % (name, list(e), r), [wr]))
    # every event matches a write
    for e in flat:
        wr = acked.get(e[0])
        if wr is not None:
            if wr.key != e[1]:
                res.violations.append(Violation(
                    "watch-mismatch", "watcher %s got %r; revision %s belongs "
                    "to another write" % (name, list(e), e[0]), [wr]))
        elif not any(o.maybe_write() and o.key == e[1]
                     and o.written_value() == (e[2], e[3] if e[2] == "PUT" else None)
                     for o in h.ops):
            res.violations.append(Violation(
                "watch-phantom", "watcher %s got %r which no client wrote"
                % (name, list(e))))
    # against the log: exactly the logged events of the range
    if h.log is not None and h.log.get("start_rev", 1) <= first_start:
        want = [tuple(e) for e in h.log.get("events", ())
                if first_start <= e[0] <= until and _in_range(e[1], key, end)]
        have = sorted(set(got))
        wantk = sorted(set((e[0], e[1]) for e in want))
        if have != wantk:
            miss = sorted(set(wantk) - set(have))[:5]
            extra = sorted(set(have) - set(wantk))[:5]
            res.violations.append(Violation(
                "watch-vs-log", "watcher %s differs from the final history over "
                "revisions %s..%s: missing %s, extra %s"
                % (name, first_start, until, miss, extra)))


# --------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------

def check(h, timeout=60.0, max_steps=None):
    """Check a History; returns a Result.

    Limits: per-key WGL is exact for each key's projection (with revisions
    as model state), but constraints spanning keys are only checked through
    the global revision checks above, so some cross-key anomalies that keep
    every per-key projection and every pairwise real-time relation valid are
    not detected without a ``log``.  With a complete ``log`` (from the
    initial revision, no compaction), the acknowledged ops are fully checked
    against it (each read/compare evaluated at its revision, revisions
    in real-time order).  Single-key ops only; txn = one compare, one put.
    """
    t0 = time.monotonic()
    res = Result()
    budget = Budget(timeout, max_steps)
    resolve_hints(h)
    acked = check_duplicate_revisions(h, res)
    check_realtime(h, res)
    check_revision_gaps(h, res, acked)
    check_read_sources(h, res, acked)
    if h.log is not None:
        check_log(h, res, acked)
    for w in h.watches:
        check_watch(h, w, res, acked)
    per_key = {}
    for o in h.ops:
        per_key.setdefault(o.key, []).append(o)
    init = h.init.get("kvs", {})
    base = h.init.get("rev", 1)
    for key in sorted(per_key):
        iv = init.get(key)
        s0 = (iv[0], iv[1], base) if iv else (None, 0, base)
        verdict, why = check_key(per_key[key], s0, budget)
        if verdict == VIOLATION:
            msg, ops = why
            res.violations.append(Violation("not-linearizable",
                                            "key %r: %s" % (key, msg), ops))
        elif verdict == UNKNOWN:
            res.unknown.append("key %r: %s" % (key, why))
    res.stats = {
        "ops": len(h.ops),
        "acked_writes": len(acked),
        "indeterminate": sum(1 for o in h.ops if o.status == "info"),
        "keys": len(per_key),
        "watchers": len(h.watches),
        "watch_events": sum(len(s.get("events", ())) for w in h.watches
                            for s in w.get("sessions", ())),
        "log_events": len(h.log.get("events", ())) if h.log else 0,
        "search_steps": budget.used,
        "seconds": round(time.monotonic() - t0, 3),
    }
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("history", help="history as JSON lines")
    ap.add_argument("--timeout", type=float, default=60.0,
                    help="search budget in seconds (then: unknown)")
    ap.add_argument("--max-steps", type=int, default=None)
    a = ap.parse_args(argv)
    res = check(load(a.history), a.timeout, a.max_steps)
    print(res)
    return {OK: 0, VIOLATION: 1, UNKNOWN: 2}[res.result]


if __name__ == "__main__":
    sys.exit(main())
