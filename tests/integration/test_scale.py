"""Many connections and streams at once, and a graceful stop under load.

kube-apiserver opens 100+ connections per endpoint and keeps many streams in
flight; the server must serve them all, and SIGTERM must finish what is in
flight and exit 0. Loops are bounded in count; no timing is asserted.
"""

import concurrent.futures
import signal

import grpc

from cairn_it import is_etcd, rpc_pb2 as pb, rpc_pb2_grpc

CONNS = 200
STREAMS_PER_CONN = 10


def test_many_connections_and_streams(server):
    chans = [server.new_channel() for _ in range(CONNS)]
    try:
        stubs = [rpc_pb2_grpc.KVStub(c) for c in chans]
        # One put per connection, all in flight together: every connection
        # is really open at the same time.
        puts = [s.Put.future(pb.PutRequest(key=b"conn/%03d" % i, value=b"v%d" % i),
                             timeout=60)
                for i, s in enumerate(stubs)]
        revs = sorted(f.result().header.revision for f in puts)
        # Each put took its own revision: 2 .. CONNS+1, no gaps, no repeats.
        assert revs == list(range(2, CONNS + 2))
        # Then CONNS x STREAMS_PER_CONN concurrent reads.
        gets = [(i, s.Range.future(pb.RangeRequest(key=b"conn/%03d" % i), timeout=60))
                for i, s in enumerate(stubs) for _ in range(STREAMS_PER_CONN)]
        for i, f in gets:
            r = f.result()
            assert [kv.value for kv in r.kvs] == [b"v%d" % i]
        r = stubs[0].Range(pb.RangeRequest(key=b"conn/", range_end=b"conn0",
                                           count_only=True), timeout=30)
        assert r.count == CONNS
    finally:
        for c in chans:
            c.close()


def test_sigterm_finishes_in_flight_writes(server):
    chans = [server.new_channel() for _ in range(20)]
    stubs = [rpc_pb2_grpc.KVStub(c) for c in chans]
    futs = []
    for i in range(400):
        s = stubs[i % len(stubs)]
        futs.append((b"stop/%04d" % i,
                     s.Put.future(pb.PutRequest(key=b"stop/%04d" % i, value=b"x"),
                                  timeout=30)))
    server.proc.send_signal(signal.SIGTERM)
    acked = []
    for key, f in futs:
        try:
            f.result()
            acked.append(key)
        except grpc.RpcError as e:
            # refused after the GOAWAY or cut by the stop: never an odd code
            assert e.code() in (grpc.StatusCode.UNAVAILABLE,
                                grpc.StatusCode.CANCELLED), e
    for c in chans:
        c.close()
    rc = server.proc.wait(timeout=30)
    # etcd 3.4 (when it is the binary under test) dies by the signal itself
    assert rc == 0 or (is_etcd(server.binary) and rc == -signal.SIGTERM), rc
    server.start()
    got = server.kv.Range(pb.RangeRequest(key=b"stop/", range_end=b"stop0"),
                          timeout=30)
    present = {kv.key for kv in got.kvs}
    print("acked %d of %d" % (len(acked), len(futs)))
    assert set(acked) <= present
