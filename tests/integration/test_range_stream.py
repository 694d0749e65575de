"""KV.RangeStream (etcd 3.7): chunks with disjoint kvs whose concatenation is
the Range answer; header, more and count on the final chunk. etcd 3.4 lacks
the RPC: there it must answer UNIMPLEMENTED (clients fall back to Range)."""

import os
import threading

import grpc
import pytest
from google.protobuf.internal import decoder

from cairn_it import is_etcd, rpc_pb2 as pb

PATH = "/etcdserverpb.KV/RangeStream"


def stream(server, req, timeout=30):
    ch = server.new_channel()
    try:
        call = ch.unary_stream(PATH, request_serializer=pb.RangeRequest.SerializeToString,
                               response_deserializer=lambda b: b)
        out = []
        for b in call(req, timeout=timeout):
            # RangeStreamResponse{range_response = 1}
            assert b[:1] == b"\x0a", b[:8]
            n, pos = decoder._DecodeVarint(b, 1)
            out.append(pb.RangeResponse.FromString(b[pos:pos + n]))
        return out
    finally:
        ch.close()


def merged(chunks):
    last = chunks[-1]
    for c in chunks[:-1]:  # only the final chunk carries header, more, count
        assert not c.HasField("header") and c.count == 0 and not c.more
    r = pb.RangeResponse()
    r.header.CopyFrom(last.header)
    r.more, r.count = last.more, last.count
    for c in chunks:
        r.kvs.extend(c.kvs)
    return r


@pytest.fixture(scope="module")
def loaded(module_server):
    s = module_server
    for i in range(1300):
        s.kv.Put(pb.PutRequest(key=b"/registry/pods/ns/%05d" % i, value=b"v%d" % i))
    for i in range(0, 1300, 7):
        s.kv.Put(pb.PutRequest(key=b"/registry/pods/ns/%05d" % i, value=b"w%d" % i))
    return s


CASES = {
    "prefix": dict(key=b"/registry/pods/", range_end=b"/registry/pods0"),
    "limit": dict(key=b"/registry/pods/", range_end=b"/registry/pods0", limit=777),
    "from-key": dict(key=b"/registry/pods/ns/01000", range_end=b"\0"),
    "keys-only": dict(key=b"/registry/pods/", range_end=b"/registry/pods0", keys_only=True),
    "count-only": dict(key=b"/registry/pods/", range_end=b"/registry/pods0", count_only=True),
    "single": dict(key=b"/registry/pods/ns/00007"),
    "sorted": dict(key=b"/registry/pods/", range_end=b"/registry/pods0", limit=600,
                   sort_order=pb.RangeRequest.DESCEND, sort_target=pb.RangeRequest.MOD),
    "at-revision": dict(key=b"/registry/pods/", range_end=b"/registry/pods0", revision=700),
    "empty": dict(key=b"/nothing/", range_end=b"/nothing0"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_equals_range(loaded, name):
    req = pb.RangeRequest(**CASES[name])
    if is_etcd(loaded.binary):
        with pytest.raises(grpc.RpcError) as e:
            stream(loaded, req)
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
        return
    got = merged(stream(loaded, req))
    want = loaded.kv.Range(req)
    assert got == want


@pytest.mark.parametrize("rev,code,msg", [
    (10 ** 9, grpc.StatusCode.OUT_OF_RANGE,
     "etcdserver: mvcc: required revision is a future revision"),
])
def test_errors_are_range_errors(loaded, rev, code, msg):
    req = pb.RangeRequest(key=b"/registry/", range_end=b"/registry0", revision=rev)
    with pytest.raises(grpc.RpcError) as e:
        stream(loaded, req)
    if is_etcd(loaded.binary):
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    else:
        assert (e.value.code(), e.value.details()) == (code, msg)


def rss_anon_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    raise AssertionError("no RssAnon")


def test_large_lists_bounded_memory(server):
    """8 concurrent streamed lists of a 39 MiB prefix, read slowly: the server
    holds a bounded window per stream, not the whole answer."""
    if is_etcd(server.binary):  # etcd 3.4 has no RangeStream
        with pytest.raises(grpc.RpcError) as e:
            stream(server, pb.RangeRequest(key=b"/big/", range_end=b"/big0"))
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
        return
    value = os.urandom(10 * 1024)
    chans = [server.new_channel() for _ in range(4)]
    futs = []
    try:
        for i in range(4000):
            st = pb.PutRequest(key=b"/big/%05d" % i, value=value)
            futs.append(server.kv.Put.future(st, timeout=60))
        for f in futs:
            f.result()
    finally:
        for c in chans:
            c.close()
    before = rss_anon_kib(server.pid)
    results, errors = [], []

    def reader():
        try:
            n = 0
            ch = server.new_channel()
            call = ch.unary_stream(PATH, request_serializer=pb.RangeRequest.SerializeToString,
                                   response_deserializer=lambda b: b)
            it = call(pb.RangeRequest(key=b"/big/", range_end=b"/big0"), timeout=120)
            first = True
            for b in it:
                if first:  # stall once, with the stream open
                    threading.Event().wait(1.0)
                    first = False
                n += len(b)
            results.append(n)
            ch.close()
        except Exception as e:  # reported below
            errors.append(e)

    ts = [threading.Thread(target=reader) for _ in range(8)]
    for t in ts:
        t.start()
    peak = before
    for _ in range(200):
        if not any(t.is_alive() for t in ts):
            break
        peak = max(peak, rss_anon_kib(server.pid))
        threading.Event().wait(0.05)
    for t in ts:
        t.join(timeout=120)
    assert not errors, errors
    assert len(results) == 8 and all(r > 4000 * len(value) for r in results), results
    # Whole answers would be 8 x 39 MiB; the streams keep a window each.
    limit = 96 * 1024 * (3 if os.environ.get("CAIRN_SANITIZED") else 1)
    assert peak - before < limit, (before, peak)


def big_channel(server):
    return grpc.insecure_channel(server.endpoint,
                                 options=[("grpc.max_receive_message_length", -1)])


def test_large_range_equals_etcd(server, etcd):
    """A Range above a few MiB is produced in pieces; byte for byte the same
    answer as etcd's (ids aside)."""
    value = bytes(range(256)) * 40  # 10 KiB
    for s in (server, etcd):  # the same revisions on both: 7 txns of 100
        for b in range(7):
            ops = [pb.RequestOp(request_put=pb.PutRequest(
                key=b"/l/%04d" % i, value=value + b"%d" % i))
                for i in range(b * 100, b * 100 + 100)]
            s.kv.Txn(pb.TxnRequest(success=ops), timeout=60)
        for i in range(0, 700, 3):  # and some history
            s.kv.Put(pb.PutRequest(key=b"/l/%04d" % i, value=value), timeout=60)
    for req in (pb.RangeRequest(key=b"/l/", range_end=b"/l0"),
                pb.RangeRequest(key=b"/l/", range_end=b"/l0", limit=650),
                pb.RangeRequest(key=b"/l/0100", range_end=b"\0", revision=100),
                pb.RangeRequest(key=b"/l/", range_end=b"/l0", keys_only=True)):
        got = []
        for s in (server, etcd):
            ch = big_channel(s)
            try:
                from cairn_it import rpc_pb2_grpc
                r = rpc_pb2_grpc.KVStub(ch).Range(req, timeout=60)
            finally:
                ch.close()
            r.header.cluster_id = r.header.member_id = 0
            got.append(r)
        assert got[0] == got[1], req


def test_large_ranges_bounded_memory(server):
    """8 concurrent Ranges of a 39 MiB prefix: the answers are produced as
    the clients drain them, not held whole."""
    from cairn_it import rpc_pb2_grpc
    value = os.urandom(10 * 1024)
    futs = [server.kv.Put.future(pb.PutRequest(key=b"/huge/%05d" % i, value=value),
                                 timeout=60) for i in range(4000)]
    for f in futs:
        f.result()
    before = rss_anon_kib(server.pid)
    results, errors = [], []

    def reader():
        ch = big_channel(server)
        try:
            r = rpc_pb2_grpc.KVStub(ch).Range(
                pb.RangeRequest(key=b"/huge/", range_end=b"/huge0"), timeout=120)
            results.append((len(r.kvs), r.count))
        except Exception as e:  # reported below
            errors.append(e)
        finally:
            ch.close()

    ts = [threading.Thread(target=reader) for _ in range(8)]
    for t in ts:
        t.start()
    peak = before
    for _ in range(2400):
        if not any(t.is_alive() for t in ts):
            break
        peak = max(peak, rss_anon_kib(server.pid))
        threading.Event().wait(0.05)
    for t in ts:
        t.join(timeout=120)
    assert not errors, errors
    assert results == [(4000, 4000)] * 8
    if is_etcd(server.binary):
        return  # etcd builds each answer whole; the bound is cairn's claim
    limit = 96 * 1024 * (3 if os.environ.get("CAIRN_SANITIZED") else 1)
    assert peak - before < limit, (before, peak)
