"""Create / GuaranteedUpdate / Delete / Get / List / Count, the k8s way."""

import json
import os
import threading

import grpc

from k8s_client import ERR_COMPACTED, ERR_FUTURE_REV, Kubernetes, rpc_error

PODS = b"/registry/pods/default/"


def test_create_with_lease_and_already_exists(srv):
    k = Kubernetes(srv)
    try:
        lease = k.lease_grant(60).ID
        assert lease != 0
        key = PODS + b"web-0"
        t = k.create(key, b"v1", lease=lease)
        assert t.succeeded
        assert len(t.responses) == 1 and t.responses[0].HasField("response_put")
        rev = t.header.revision
        g = k.get(key)
        assert g.count == 1 and len(g.kvs) == 1
        kv = g.kvs[0]
        assert (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version,
                kv.lease) == (key, b"v1", rev, rev, 1, lease)
        # Second create: AlreadyExists (succeeded=false, no else branch).
        t2 = k.create(key, b"v2", lease=lease)
        assert not t2.succeeded
        assert len(t2.responses) == 0
        assert t2.header.revision == rev
        assert k.get(key).kvs[0].value == b"v1"
    finally:
        k.close()


def test_guaranteed_update_two_concurrent_updaters(srv):
    key = PODS + b"counter"
    setup = Kubernetes(srv)
    try:
        assert setup.create(key, json.dumps({"n": 0}).encode()).succeeded
    finally:
        setup.close()

    n_each = 40
    results = {}
    errors = []

    def incr(v):
        d = json.loads(v)
        d["n"] += 1
        return json.dumps(d).encode()

    def updater(name):
        k = Kubernetes(srv)     # each "apiserver" has its own connection
        try:
            revs, conflicts = [], 0
            for _ in range(n_each):
                t, c = k.guaranteed_update(key, incr)
                revs.append(t.header.revision)
                conflicts += c
            results[name] = (revs, conflicts)
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append((name, e))
        finally:
            k.close()

    ths = [threading.Thread(target=updater, args=(n,)) for n in ("a", "b")]
    for t in ths:
        t.start()
    for t in ths:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in ths), "updaters did not finish"
    assert not errors, errors
    k = Kubernetes(srv)
    try:
        g = k.get(key)
        assert json.loads(g.kvs[0].value) == {"n": 2 * n_each}   # no lost update
        assert g.kvs[0].version == 1 + 2 * n_each
        all_revs = results["a"][0] + results["b"][0]
        # Every successful CAS was its own revision.
        assert len(set(all_revs)) == 2 * n_each
        assert g.kvs[0].mod_revision == max(all_revs)
    finally:
        k.close()


def test_delete_with_preconditions(srv):
    k = Kubernetes(srv)
    try:
        key = PODS + b"to-delete"
        rev = k.create(key, b"a").header.revision
        rev2 = k.optimistic_put(key, b"b", rev).header.revision
        # Stale precondition: fails, failure[0] carries the current object.
        t = k.optimistic_delete(key, rev)
        assert not t.succeeded
        rr = t.responses[0].response_range
        assert rr.count == 1 and rr.kvs[0].value == b"b"
        assert rr.kvs[0].mod_revision == rev2
        # Right precondition: deleted.
        t = k.optimistic_delete(key, rev2)
        assert t.succeeded
        assert t.responses[0].response_delete_range.deleted == 1
        assert t.header.revision == rev2 + 1
        g = k.get(key)
        assert g.count == 0 and len(g.kvs) == 0
        # Deleting again: the failure branch sees no object.
        t = k.optimistic_delete(key, rev2)
        assert not t.succeeded
        assert t.responses[0].response_range.count == 0
    finally:
        k.close()


def test_get_and_get_at_revision(srv):
    k = Kubernetes(srv)
    try:
        key = PODS + b"cm"
        r1 = k.create(key, b"one").header.revision
        r2 = k.optimistic_put(key, b"two", r1).header.revision
        g = k.get(key)
        assert g.count == 1 and g.kvs[0].value == b"two"
        assert g.header.revision == r2
        old = k.get(key, revision=r1)
        assert old.count == 1 and old.kvs[0].value == b"one"
        assert (old.kvs[0].create_revision, old.kvs[0].mod_revision,
                old.kvs[0].version) == (r1, r1, 1)
        # Header revision is the current one, not the requested one.
        assert old.header.revision == r2
        missing = k.get(PODS + b"nope")
        assert missing.count == 0 and len(missing.kvs) == 0
        # Before the key existed.
        assert k.get(key, revision=r1 - 1).count == 0
    finally:
        k.close()


def test_paginated_list_compacted_and_future(srv):
    k = Kubernetes(srv)
    try:
        prefix = b"/registry/configmaps/"
        names = [prefix + b"ns/cm-%02d" % i for i in range(25)]
        for n in names:
            assert k.create(n, b"val-" + n).succeeded
        # Neighbours outside the prefix must not leak in.
        assert k.create(b"/registry/configmapz", b"x").succeeded
        assert k.create(b"/registry/configmaps", b"x").succeeded

        p1 = k.list_page(prefix, 10)
        list_rev = p1.header.revision
        assert [kv.key for kv in p1.kvs] == names[:10]
        assert p1.count == 25 and p1.more
        assert (len(p1.kvs) < p1.count, p1.count - len(p1.kvs)) == (True, 15)

        # Writes after the first page must not show up in later pages.
        assert k.create(prefix + b"ns/cm-99", b"late").succeeded
        assert k.optimistic_delete(names[20], 0).succeeded is False
        d = k.get(names[20])
        assert k.optimistic_delete(names[20], d.kvs[0].mod_revision).succeeded
        assert k.optimistic_put(names[15], b"changed",
                                k.get(names[15]).kvs[0].mod_revision).succeeded

        cont = p1.kvs[-1].key + b"\x00"
        p2 = k.list_page(prefix, 10, revision=list_rev, continue_key=cont)
        assert [kv.key for kv in p2.kvs] == names[10:20]
        assert p2.count == 15
        assert (len(p2.kvs) < p2.count, p2.count - len(p2.kvs)) == (True, 5)
        assert p2.kvs[5].value == b"val-" + names[15]       # pinned snapshot
        cont = p2.kvs[-1].key + b"\x00"
        p3 = k.list_page(prefix, 10, revision=list_rev, continue_key=cont)
        assert [kv.key for kv in p3.kvs] == names[20:]
        assert p3.count == 5 and not p3.more
        assert not (len(p3.kvs) < p3.count) and p3.count - len(p3.kvs) == 0

        # The whole loop as store.GetList runs it (current state).
        items, rev, pages = k.list_all(prefix, 10)
        want = sorted(set(names) - {names[20]} | {prefix + b"ns/cm-99"})
        assert [kv.key for kv in items] == want
        assert [p[:3] for p in pages] == [(10, 25, True), (10, 15, True), (5, 5, False)]
        assert [p[3] for p in pages] == [15, 5, 0]

        # A continue page at a compacted revision: OutOfRange (-> 410 Gone).
        now = k.get(b"/registry/health").header.revision
        k.compact(now)
        e = rpc_error(k.list_page, prefix, 10, revision=list_rev, continue_key=cont)
        assert e.code() == grpc.StatusCode.OUT_OF_RANGE
        assert e.details() == ERR_COMPACTED
        # A future revision: OutOfRange "future revision".
        e = rpc_error(k.list_page, prefix, 10, revision=now + 1000)
        assert e.code() == grpc.StatusCode.OUT_OF_RANGE
        assert e.details() == ERR_FUTURE_REV
        # At the compaction revision itself reads still work.
        assert k.list_page(prefix, 10, revision=now).count == 25
    finally:
        k.close()


def test_count_only_and_keys_only(srv):
    k = Kubernetes(srv)
    try:
        prefix = b"/registry/secrets/"
        for i in range(7):
            assert k.create(prefix + b"kube-system/s%d" % i, os.urandom(100)).succeeded
        assert k.create(b"/registry/secretz", b"x").succeeded
        c = k.count(prefix)
        assert c.count == 7 and len(c.kvs) == 0
        assert k.count(b"/registry/nothing/").count == 0
        from cairn_it import rpc_pb2 as pb
        from watch_it import prefix_end
        ko = k.kv.Range(pb.RangeRequest(key=prefix, range_end=prefix_end(prefix),
                                        keys_only=True), timeout=10)
        assert ko.count == 7
        assert [kv.key for kv in ko.kvs] == [prefix + b"kube-system/s%d" % i
                                             for i in range(7)]
        assert all(kv.value == b"" for kv in ko.kvs)
    finally:
        k.close()


def test_values_byte_exact(srv):
    k = Kubernetes(srv)
    try:
        all_bytes = bytes(range(256))
        values = {
            b"/registry/pods/ns/proto": b"k8s\x00" + all_bytes + os.urandom(4096),
            b"/registry/secrets/ns/enc": b"k8s:enc:aescbc:v1:key1:" + os.urandom(2048)
                                         + b"\x00\xff\x00",
            b"/registry/configmaps/ns/json": json.dumps(
                {"kind": "ConfigMap", "data": {"a": "\u00e9\u4e2d"}},
                ensure_ascii=False).encode(),
            b"/registry/pods/ns/big": b"k8s\x00" + os.urandom(200 * 1024),
            b"/registry/pods/ns/nul": b"\x00" * 64,
        }
        for key, v in values.items():
            assert k.create(key, v).succeeded
        for key, v in values.items():
            assert k.get(key).kvs[0].value == v
        items, _, _ = k.list_all(b"/registry/", 2)
        assert {kv.key: kv.value for kv in items} == values
        # failure[0] of a conflicting update returns the stored bytes too.
        key = b"/registry/secrets/ns/enc"
        t = k.optimistic_put(key, b"other", 1)
        assert not t.succeeded
        assert t.responses[0].response_range.kvs[0].value == values[key]
    finally:
        k.close()


def test_health_probe_key_need_not_exist(srv):
    k = Kubernetes(srv)
    try:
        from cairn_it import rpc_pb2 as pb
        for _ in range(3):
            r = k.kv.Range(pb.RangeRequest(key=b"/registry/health"), timeout=2)
            assert r.count == 0 and len(r.kvs) == 0
            assert r.header.revision >= 1
            r = k.get(b"/registry/health")
            assert r.count == 0 and len(r.kvs) == 0
    finally:
        k.close()
