"""The cacher's watch: from listRev+1, prev_kv, progress_notify, hasleader."""

import time

from k8s_client import Kubernetes
from watch_it import DELETE, PUT, Streams, prefix_end

HASLEADER = [("hasleader", "true")]


def is_progress(r):
    """A RequestProgress answer: no events, not created/canceled, watch_id -1."""
    return (not r.events and not r.created and not r.canceled
            and r.watch_id == -1)


def request_progress(ws, min_rev, tries=5, wait=2.0):
    """Send progress_request until answered (only answered when synced).
    Returns the answer; other event-less responses are ignored."""
    for _ in range(tries):
        ws.progress()
        deadline = time.monotonic() + wait
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            r = ws.poll(left)
            if r is None:
                break
            assert not r.events, "unexpected events: %r" % (r,)
            if is_progress(r) and r.header.revision >= min_rev:
                return r
    raise AssertionError("progress_request not answered in %d tries" % tries)


def test_watch_from_list_rev(srv):
    k = Kubernetes(srv)
    streams = Streams()
    try:
        prefix = b"/registry/pods/"
        assert k.create(prefix + b"ns/existing", b"e0").succeeded
        lst = k.list_page(prefix, 500)
        list_rev = lst.header.revision
        assert lst.count == 1
        # Happens between the LIST and the WATCH: must be replayed.
        r_create = k.create(prefix + b"ns/a", b"a1").header.revision

        ws = streams.open(srv, metadata=HASLEADER)
        created = ws.create_ok(prefix, prefix_end(prefix), start_revision=list_rev + 1,
                               prev_kv=True, progress_notify=True)
        wid = created.watch_id

        r_mod = k.optimistic_put(prefix + b"ns/a", b"a2", r_create).header.revision
        r_del = k.optimistic_delete(prefix + b"ns/existing",
                                    k.get(prefix + b"ns/existing").kvs[0].mod_revision
                                    ).header.revision
        # Outside the prefix: not delivered.
        assert k.create(b"/registry/podsx", b"no").succeeded
        assert k.create(prefix + b"ns/b", b"b1").succeeded

        evs, resps = ws.events(4, watch_id=wid)
        for r in resps:
            assert r.header.revision >= r.events[-1].kv.mod_revision if r.events else True

        e0, e1, e2, e3 = evs
        # create: create_revision == mod_revision
        assert e0.type == PUT and e0.kv.key == prefix + b"ns/a"
        assert e0.kv.create_revision == e0.kv.mod_revision == r_create
        assert e0.kv.value == b"a1"
        # modify: prev_kv present
        assert e1.type == PUT and e1.kv.value == b"a2"
        assert e1.kv.create_revision == r_create and e1.kv.mod_revision == r_mod
        assert e1.kv.create_revision != e1.kv.mod_revision
        assert e1.HasField("prev_kv")
        assert (e1.prev_kv.value, e1.prev_kv.mod_revision) == (b"a1", r_create)
        # delete: prev_kv present
        assert e2.type == DELETE and e2.kv.key == prefix + b"ns/existing"
        assert e2.kv.mod_revision == r_del
        assert e2.HasField("prev_kv") and e2.prev_kv.value == b"e0"
        assert e2.prev_kv.key == prefix + b"ns/existing"
        assert e3.type == PUT and e3.kv.key == prefix + b"ns/b"
        assert e3.kv.create_revision == e3.kv.mod_revision

        last = e3.kv.mod_revision
        p = request_progress(ws, last)
        assert p.header.revision >= last
    finally:
        streams.close()
        k.close()
