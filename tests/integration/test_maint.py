"""Maintenance: quota and alarms, Hash/HashKV, Defragment, MoveLeader,
Status -- against real etcd 3.4 where the behaviour is etcd's.

* Alarms: the same requests go to etcd and to the server under test after
  raising NOSPACE (or CORRUPT) through Maintenance.Alarm; every outcome
  (response or gRPC code + message) must match.
* Quota: a server with a 1 MiB quota is filled until a Put fails with
  etcd's NOSPACE error; then reads and deletes work, writes do not, and
  compaction + disarm make room again (cairn counts the pages in use, so
  no defragment is needed; etcd counts the file size).
* HashKV: the same writes (puts, overwrites, deletes, a txn, compactions)
  on etcd and on the server under test give the same hash at every
  revision etcd answers for, and the same errors.
* Defragment under a bounded write load: every write succeeds and reads
  back, and the disk blocks of freed pages go back to the OS.
"""

import os
import threading
import time

import grpc
import pytest

from cairn_it import ETCD_BIN, is_etcd, binary_under_test, rpc_pb2 as pb, rpc_pb2_grpc

RPC_TIMEOUT = 30.0
NOSPACE = pb.AlarmType.Value("NOSPACE") if hasattr(pb, "AlarmType") else 1
CORRUPT = pb.AlarmType.Value("CORRUPT") if hasattr(pb, "AlarmType") else 2


def stubs(s):
    ch = s.channel()
    return (rpc_pb2_grpc.KVStub(ch), rpc_pb2_grpc.MaintenanceStub(ch),
            rpc_pb2_grpc.LeaseStub(ch))


def outcome(fn, req):
    try:
        r = fn(req, timeout=RPC_TIMEOUT)
    except grpc.RpcError as e:
        return ("err", e.code(), e.details())
    if hasattr(r, "header"):
        r.header.cluster_id = 0
        r.header.member_id = 0
        r.header.raft_term = 0
    return ("ok", r.SerializeToString(deterministic=True))


def _varint(b, i):
    v = shift = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            return v, i


def raw_status(s):
    """StatusResponse decoded by hand: python3-etcd3's protos predate
    errors (8), dbSizeInUse (9) and dbSizeQuota (12)."""
    call = s.channel().unary_unary(
        "/etcdserverpb.Maintenance/Status",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=lambda b: b)
    b = call(pb.StatusRequest(), timeout=RPC_TIMEOUT)
    out = {"errors": [], "in_use": 0, "quota": 0}
    i = 0
    while i < len(b):
        tag, i = _varint(b, i)
        f, wt = tag >> 3, tag & 7
        if wt == 0:
            v, i = _varint(b, i)
            if f == 9:
                out["in_use"] = v
            elif f == 12:
                out["quota"] = v
        elif wt == 2:
            n, i = _varint(b, i)
            if f == 8:
                out["errors"].append(b[i:i + n].decode())
            i += n
        else:
            raise AssertionError("unexpected wire type %d" % wt)
    return out


def member_id(s):
    _, m, _ = stubs(s)
    return m.Status(pb.StatusRequest(), timeout=RPC_TIMEOUT).header.member_id


def alarm(s, action, kind):
    _, m, _ = stubs(s)
    return m.Alarm(pb.AlarmRequest(action=action, memberID=member_id(s),
                                   alarm=kind), timeout=RPC_TIMEOUT)


def alarm_ops():
    """Requests and the stub method each goes to."""
    txn_put = pb.TxnRequest(success=[pb.RequestOp(
        request_put=pb.PutRequest(key=b"t", value=b"v"))])
    txn_ro = pb.TxnRequest(
        compare=[pb.Compare(key=b"a", target=pb.Compare.VERSION,
                            result=pb.Compare.EQUAL, version=1)],
        success=[pb.RequestOp(request_range=pb.RangeRequest(key=b"a"))])
    txn_del = pb.TxnRequest(success=[pb.RequestOp(
        request_delete_range=pb.DeleteRangeRequest(key=b"b"))])
    return [
        ("put", "kv", "Put", pb.PutRequest(key=b"x", value=b"y")),
        ("range", "kv", "Range", pb.RangeRequest(key=b"a")),
        ("serializable range", "kv", "Range",
         pb.RangeRequest(key=b"a", serializable=True)),
        ("txn with put", "kv", "Txn", txn_put),
        ("read-only txn", "kv", "Txn", txn_ro),
        ("txn with delete", "kv", "Txn", txn_del),
        ("delete", "kv", "DeleteRange", pb.DeleteRangeRequest(key=b"c")),
        ("lease grant", "lease", "LeaseGrant", pb.LeaseGrantRequest(TTL=600, ID=77)),
        ("compact", "kv", "Compact", pb.CompactionRequest(revision=2)),
    ]


def run_ops(s):
    kv, m, lease = stubs(s)
    by = {"kv": kv, "lease": lease}
    return [(name, outcome(getattr(by[svc], meth), req))
            for name, svc, meth, req in alarm_ops()]


def seed(s):
    kv, _, _ = stubs(s)
    for k in (b"a", b"b", b"c", b"d"):
        kv.Put(pb.PutRequest(key=k, value=b"1"), timeout=RPC_TIMEOUT)


@pytest.mark.parametrize("kind", ["NOSPACE", "CORRUPT"])
def test_alarm_semantics_match_etcd(server_factory, kind):
    code = NOSPACE if kind == "NOSPACE" else CORRUPT
    results = {}
    for name, binary in (("etcd", ETCD_BIN), ("cut", binary_under_test())):
        s = server_factory(binary)
        seed(s)
        _, m, _ = stubs(s)
        mid = member_id(s)
        before = m.Alarm(pb.AlarmRequest(action=pb.AlarmRequest.GET),
                         timeout=RPC_TIMEOUT)
        act = alarm(s, pb.AlarmRequest.ACTIVATE, code)
        again = alarm(s, pb.AlarmRequest.ACTIVATE, code)
        listed = m.Alarm(pb.AlarmRequest(action=pb.AlarmRequest.GET),
                         timeout=RPC_TIMEOUT)
        by_type = m.Alarm(pb.AlarmRequest(action=pb.AlarmRequest.GET,
                                          alarm=code), timeout=RPC_TIMEOUT)
        other = m.Alarm(pb.AlarmRequest(action=pb.AlarmRequest.GET,
                                        alarm=NOSPACE if code == CORRUPT else CORRUPT),
                        timeout=RPC_TIMEOUT)
        status = raw_status(s)
        ops = run_ops(s)
        dis = alarm(s, pb.AlarmRequest.DEACTIVATE, code)
        dis2 = alarm(s, pb.AlarmRequest.DEACTIVATE, code)
        after = run_ops(s)
        results[name] = dict(
            headers=[r.HasField("header") for r in (before, act, again, listed, dis, dis2)],
            before=[(a.memberID == mid, a.alarm) for a in before.alarms],
            act=[(a.memberID == mid, a.alarm) for a in act.alarms],
            again=[(a.memberID == mid, a.alarm) for a in again.alarms],
            listed=[(a.memberID == mid, a.alarm) for a in listed.alarms],
            by_type=[(a.memberID == mid, a.alarm) for a in by_type.alarms],
            other=[(a.memberID == mid, a.alarm) for a in other.alarms],
            status_errors=[e.replace(str(mid), "ID") for e in status["errors"]],
            ops=ops,
            dis=[(a.memberID == mid, a.alarm) for a in dis.alarms],
            dis2=list(dis2.alarms),
            after=after,
        )
    e, c = results["etcd"], results["cut"]
    for field in e:
        if field in ("ops", "after"):
            for (n1, o1), (n2, o2) in zip(e[field], c[field]):
                assert o1 == o2, "%s %s: etcd %r, cut %r" % (field, n1, o1, o2)
        else:
            assert e[field] == c[field], "%s: etcd %r, cut %r" % (field, e[field], c[field])


def put_until_nospace(s, limit=400):
    kv, _, _ = stubs(s)
    v = b"x" * 30000
    for i in range(limit):
        try:
            kv.Put(pb.PutRequest(key=b"k%d" % (i % 5), value=v), timeout=RPC_TIMEOUT)
        except grpc.RpcError as e:
            return i, e
    return limit, None


@pytest.mark.skipif(is_etcd(binary_under_test()),
                    reason="cairn's quota counts pages in use; etcd's the file")
def test_quota_nospace_and_recovery(server_factory):
    s = server_factory(extra_args=["--quota-backend-bytes", str(1 << 20)])
    kv, m, lease = stubs(s)
    n, err = put_until_nospace(s)
    assert err is not None, "no NOSPACE after %d puts of 30 kB into 1 MiB" % n
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.details() == "etcdserver: mvcc: database space exceeded"
    st = raw_status(s)
    assert st["quota"] == 1 << 20
    assert st["errors"] == ["memberID:%d alarm:NOSPACE " % member_id(s)], st
    al = m.Alarm(pb.AlarmRequest(action=pb.AlarmRequest.GET), timeout=RPC_TIMEOUT)
    assert [(a.memberID, a.alarm) for a in al.alarms] == [(member_id(s), NOSPACE)]
    # reads and deletes work, puts and grants do not (even small ones)
    assert kv.Range(pb.RangeRequest(key=b"k1"), timeout=RPC_TIMEOUT).count == 1
    with pytest.raises(grpc.RpcError) as ei:
        kv.Put(pb.PutRequest(key=b"small", value=b"1"), timeout=RPC_TIMEOUT)
    assert ei.value.details() == "etcdserver: mvcc: database space exceeded"
    with pytest.raises(grpc.RpcError) as ei:
        lease.LeaseGrant(pb.LeaseGrantRequest(TTL=60), timeout=RPC_TIMEOUT)
    assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    kv.DeleteRange(pb.DeleteRangeRequest(key=b"k0"), timeout=RPC_TIMEOUT)
    # the alarm survives a restart
    s.restart()
    kv, m, lease = stubs(s)
    al = m.Alarm(pb.AlarmRequest(action=pb.AlarmRequest.GET), timeout=RPC_TIMEOUT)
    assert [a.alarm for a in al.alarms] == [NOSPACE]
    with pytest.raises(grpc.RpcError):
        kv.Put(pb.PutRequest(key=b"small", value=b"1"), timeout=RPC_TIMEOUT)
    # compact the history away, disarm: there is room again
    rev = kv.Range(pb.RangeRequest(key=b"k1"), timeout=RPC_TIMEOUT).header.revision
    kv.Compact(pb.CompactionRequest(revision=rev, physical=True), timeout=RPC_TIMEOUT)
    before = raw_status(s)["in_use"]
    alarm(s, pb.AlarmRequest.DEACTIVATE, NOSPACE)
    kv.Put(pb.PutRequest(key=b"small", value=b"1"), timeout=RPC_TIMEOUT)
    lease.LeaseGrant(pb.LeaseGrantRequest(TTL=60), timeout=RPC_TIMEOUT)
    assert before < (1 << 20) // 2, before
    assert list(m.Alarm(pb.AlarmRequest(action=pb.AlarmRequest.GET),
                        timeout=RPC_TIMEOUT).alarms) == []
    # and filling up again raises the alarm again
    n, err = put_until_nospace(s)
    assert err is not None and err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def hashkv(s, rev):
    _, m, _ = stubs(s)
    try:
        r = m.HashKV(pb.HashKVRequest(revision=rev), timeout=RPC_TIMEOUT)
    except grpc.RpcError as e:
        return ("err", e.code(), e.details())
    return ("ok", r.hash, r.compact_revision, r.header.revision)


def writes(kv, step):
    """A deterministic mix: puts, overwrites, deletes, txns, leases none."""
    k = b"key/%d" % (step % 7)
    if step % 11 == 5:
        kv.DeleteRange(pb.DeleteRangeRequest(key=k), timeout=RPC_TIMEOUT)
    elif step % 13 == 3:
        kv.DeleteRange(pb.DeleteRangeRequest(key=b"key/", range_end=b"key0"),
                       timeout=RPC_TIMEOUT)
    elif step % 5 == 0:
        kv.Txn(pb.TxnRequest(success=[
            pb.RequestOp(request_put=pb.PutRequest(key=k, value=b"t%d" % step)),
            pb.RequestOp(request_put=pb.PutRequest(key=b"other/%d" % step, value=b"o"))]),
            timeout=RPC_TIMEOUT)
    else:
        kv.Put(pb.PutRequest(key=k, value=b"v%d" % step), timeout=RPC_TIMEOUT)


def test_hashkv_matches_etcd(server_factory):
    srv = {"etcd": server_factory(ETCD_BIN), "cut": server_factory()}
    kvs = {n: stubs(s)[0] for n, s in srv.items()}
    checked = 0
    for phase in range(3):
        for step in range(phase * 40, phase * 40 + 40):
            for n in srv:
                writes(kvs[n], step)
        cur = kvs["etcd"].Range(pb.RangeRequest(key=b"a"), timeout=RPC_TIMEOUT).header.revision
        assert cur == kvs["cut"].Range(pb.RangeRequest(key=b"a"),
                                       timeout=RPC_TIMEOUT).header.revision
        for rev in [0, 1, 2] + list(range(max(3, cur - 30), cur + 3)):
            e, c = hashkv(srv["etcd"], rev), hashkv(srv["cut"], rev)
            assert e == c, "phase %d rev %d: etcd %r, cut %r" % (phase, rev, e, c)
            checked += 1
        # compact (physically on one, lazily on the other: same answers)
        for n in srv:
            kvs[n].Compact(pb.CompactionRequest(revision=cur - 10,
                                                physical=(phase % 2 == 0)),
                           timeout=RPC_TIMEOUT)
        for rev in [0, cur - 11, cur - 10, cur - 9, cur]:
            e, c = hashkv(srv["etcd"], rev), hashkv(srv["cut"], rev)
            assert e == c, "after compact %d rev %d: etcd %r, cut %r" % (cur - 10, rev, e, c)
            checked += 1
    assert checked > 50


def test_hash_equal_for_equal_stores(server_factory):
    a, b = server_factory(), server_factory()
    for s in (a, b):
        kv = stubs(s)[0]
        for step in range(30):
            writes(kv, step)
    ha = stubs(a)[1].Hash(pb.HashRequest(), timeout=RPC_TIMEOUT).hash
    hb = stubs(b)[1].Hash(pb.HashRequest(), timeout=RPC_TIMEOUT).hash
    assert ha == hb
    stubs(b)[0].Put(pb.PutRequest(key=b"diff", value=b"1"), timeout=RPC_TIMEOUT)
    hb2 = stubs(b)[1].Hash(pb.HashRequest(), timeout=RPC_TIMEOUT).hash
    assert hb2 != ha


def test_move_leader_matches_etcd(server_factory):
    out = {}
    for name, binary in (("etcd", ETCD_BIN), ("cut", binary_under_test())):
        s = server_factory(binary)
        _, m, _ = stubs(s)
        mid = member_id(s)
        out[name] = [outcome(m.MoveLeader, pb.MoveLeaderRequest(targetID=t))
                     for t in (mid, mid + 1, 0)]
    assert out["etcd"] == out["cut"]


def disk_bytes(path):
    st = os.stat(path)
    return st.st_blocks * 512


@pytest.mark.skipif(is_etcd(binary_under_test()), reason="cairn's online defragment")
def test_defragment_online_under_writes(server_factory):
    s = server_factory()
    kv, m, _ = stubs(s)
    big = b"b" * 8000
    for i in range(600):                      # ~5 MB of history on 20 keys
        kv.Put(pb.PutRequest(key=b"h%d" % (i % 20), value=big), timeout=RPC_TIMEOUT)
    rev = kv.Range(pb.RangeRequest(key=b"h0"), timeout=RPC_TIMEOUT).header.revision
    kv.Compact(pb.CompactionRequest(revision=rev, physical=True), timeout=RPC_TIMEOUT)
    # a few commits so the compaction's own txn is no longer the newest
    for i in range(3):
        kv.Put(pb.PutRequest(key=b"tick", value=b"%d" % i), timeout=RPC_TIMEOUT)
    db = os.path.join(s.data_dir, "data.mdb")
    before = disk_bytes(db)

    stop = threading.Event()
    errors, done, worst = [], [0], [0.0]

    def writer():
        wkv = rpc_pb2_grpc.KVStub(s.new_channel())
        i = 0
        deadline = time.monotonic() + 60
        while not stop.is_set() and i < 20000 and time.monotonic() < deadline:
            t0 = time.monotonic()
            try:
                wkv.Put(pb.PutRequest(key=b"w%d" % (i % 50), value=b"%d" % i),
                        timeout=RPC_TIMEOUT)
            except grpc.RpcError as e:
                errors.append(e)
                break
            worst[0] = max(worst[0], time.monotonic() - t0)
            i += 1
            done[0] = i

    t = threading.Thread(target=writer)
    t.start()
    try:
        # defragment over and over until the writer has done 300 writes
        for _ in range(2000):
            r = m.Defragment(pb.DefragmentRequest(), timeout=RPC_TIMEOUT)
            assert r.header.revision > 0
            if done[0] >= 300 or errors:
                break
    finally:
        stop.set()
        t.join(90)
    assert not errors, errors
    assert done[0] > 0
    after = disk_bytes(db)
    print("defragment: disk %d -> %d bytes; %d writes alongside, slowest %.1f ms"
          % (before, after, done[0], worst[0] * 1000))
    assert after < before, (before, after)
    # every write is there, the history survived, the store still works
    for k in range(min(done[0], 50)):
        last = max(i for i in range(done[0]) if i % 50 == k)
        r = kv.Range(pb.RangeRequest(key=b"w%d" % k), timeout=RPC_TIMEOUT)
        assert r.kvs[0].value == b"%d" % last
    r = kv.Range(pb.RangeRequest(key=b"h", range_end=b"i"), timeout=RPC_TIMEOUT)
    assert r.count == 20 and all(x.value == big for x in r.kvs)
    for i in range(200):     # reuse the punched pages
        kv.Put(pb.PutRequest(key=b"r%d" % i, value=big), timeout=RPC_TIMEOUT)
    s.restart()
    kv = stubs(s)[0]
    r = kv.Range(pb.RangeRequest(key=b"r", range_end=b"s"), timeout=RPC_TIMEOUT)
    assert r.count == 200 and all(x.value == big for x in r.kvs)
    r = kv.Range(pb.RangeRequest(key=b"h", range_end=b"i"), timeout=RPC_TIMEOUT)
    assert r.count == 20 and all(x.value == big for x in r.kvs)


def test_auto_compaction_periodic(server_factory):
    """--auto-compaction-retention 1s (periodic): history older than about
    a second is compacted while writes go on, as etcd's periodic
    compactor does; etcd itself is run the same way as the oracle."""
    for binary in (ETCD_BIN, binary_under_test()):
        s = server_factory(binary, extra_args=["--auto-compaction-mode", "periodic",
                                               "--auto-compaction-retention", "1s"])
        kv = stubs(s)[0]
        compacted = None
        deadline = time.monotonic() + 30
        i = 0
        while compacted is None and time.monotonic() < deadline and i < 3000:
            kv.Put(pb.PutRequest(key=b"k", value=b"%d" % i), timeout=RPC_TIMEOUT)
            i += 1
            try:
                kv.Range(pb.RangeRequest(key=b"k", revision=2), timeout=RPC_TIMEOUT)
            except grpc.RpcError as e:
                compacted = e
            time.sleep(0.02)
        assert compacted is not None, "%s: revision 2 never compacted" % binary
        assert compacted.code() == grpc.StatusCode.OUT_OF_RANGE
        assert compacted.details() == "etcdserver: mvcc: required revision has been compacted"
        # recent history is still there
        cur = kv.Range(pb.RangeRequest(key=b"k"), timeout=RPC_TIMEOUT).header.revision
        kv.Range(pb.RangeRequest(key=b"k", revision=cur - 1), timeout=RPC_TIMEOUT)


@pytest.mark.parametrize("args,msg", [
    (["--auto-compaction-mode", "daily"], 'unknown auto-compaction-mode "daily"'),
    (["--auto-compaction-retention", "1x"], "error parsing CompactionRetention"),
])
def test_auto_compaction_bad_flags(server_factory, args, msg):
    if is_etcd(binary_under_test()):
        pytest.skip("cairn's own message prefix")
    s = server_factory(start=False, extra_args=args)
    import subprocess
    p = subprocess.run([s.binary] + args + ["--data-dir", s.data_dir],
                       capture_output=True, timeout=30)
    assert p.returncode != 0
    assert msg in p.stderr.decode(), p.stderr
