"""Event leases: one LeaseGrant reused for up to 1000 objects (GetLease)."""

import threading
import time

from k8s_client import Kubernetes
from watch_it import DELETE, PUT, Streams, prefix_end

N = 1000
TTL = 8  # the 1000 creates must land well within it, even under ASan on a busy CI


def test_event_lease_1000_objects_expire(srv):
    k = Kubernetes(srv)
    streams = Streams()
    try:
        prefix = b"/registry/events/default/"
        start = k.get(b"/registry/health").header.revision
        ws = streams.open(srv, metadata=[("hasleader", "true")])
        wid = ws.create_ok(prefix, prefix_end(prefix), start_revision=start + 1,
                           prev_kv=True, progress_notify=True).watch_id
        lease = k.lease_grant(TTL)
        assert lease.ID != 0 and lease.TTL >= TTL

        keys = [prefix + b"ev-%04d" % i for i in range(N)]
        errors = []

        def creator(part):
            c = Kubernetes(srv)
            try:
                for key in part:
                    t = c.create(key, b"k8s\x00event-" + key, lease=lease.ID)
                    assert t.succeeded, key
            except Exception as e:  # noqa: BLE001 (reported below)
                errors.append(e)
            finally:
                c.close()

        ths = [threading.Thread(target=creator, args=(keys[i::8],)) for i in range(8)]
        for th in ths:
            th.start()
        for th in ths:
            th.join(timeout=60)
        assert not any(th.is_alive() for th in ths)
        assert not errors, errors[:3]

        evs, _ = ws.events(2 * N, timeout=60, watch_id=wid)
        puts, dels = evs[:N], evs[N:]
        assert all(e.type == PUT for e in puts)
        assert sorted(e.kv.key for e in puts) == keys
        assert all(e.kv.lease == lease.ID and e.kv.create_revision == e.kv.mod_revision
                   for e in puts)
        assert all(e.type == DELETE for e in dels)
        assert sorted(e.kv.key for e in dels) == keys
        for e in dels:
            assert e.HasField("prev_kv"), e
            assert e.prev_kv.key == e.kv.key
            assert e.prev_kv.value == b"k8s\x00event-" + e.kv.key
            assert e.prev_kv.lease == lease.ID
        # All deletions of one lease revocation happen in one revision.
        assert len({e.kv.mod_revision for e in dels}) == 1
        assert k.count(prefix).count == 0
    finally:
        streams.close()
        k.close()
