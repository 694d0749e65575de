"""Helpers for the Lease tests: stubs, error capture, a bounded KeepAlive
stream, and the multi-process granter used by the scale test.

Expected behaviour is etcd 3.4's (lease/lessor.go, etcdserver/v3_server.go,
etcdserver/api/v3rpc/lease.go, etcdserver/apply.go).
"""

import math
import queue
import threading

import grpc

from cairn_it import rpc_pb2 as pb, rpc_pb2_grpc

READ_TIMEOUT = 10.0
RPC_TIMEOUT = 10.0
MAX_LEASE_TTL = 9000000000          # etcd's lease.MaxLeaseTTL
_END = object()

E_NOT_FOUND = (grpc.StatusCode.NOT_FOUND, "etcdserver: requested lease not found")
E_EXISTS = (grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: lease already exists")
E_TOO_LARGE = (grpc.StatusCode.OUT_OF_RANGE, "etcdserver: too large lease TTL")
E_LEASE_PROVIDED = (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: lease is provided")
E_KEY_NOT_FOUND = (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: key not found")


def timing_args(heartbeat_ms, election_ms):
    """Raft timing flags.  Given to every binary explicitly (for etcd they
    come after, and so override, the harness's speed flags)."""
    return ["--heartbeat-interval", str(heartbeat_ms),
            "--election-timeout", str(election_ms)]


def min_ttl(heartbeat_ms, election_ms):
    """etcd's minLeaseTTL: ceil(((3 * electionTicks) / 2) * heartbeat) in s."""
    ticks = election_ms // heartbeat_ms
    return int(math.ceil(((3 * ticks) // 2) * heartbeat_ms / 1000.0))


DEFAULT_TIMING = timing_args(100, 1000)     # etcd's defaults: min TTL 2 s
assert min_ttl(100, 1000) == 2


def lease_stub(server):
    return rpc_pb2_grpc.LeaseStub(server.channel())


def err_of(fn, *args, **kw):
    """(code, details) of the gRPC error fn raises; fails if it succeeds."""
    kw.setdefault("timeout", RPC_TIMEOUT)
    try:
        r = fn(*args, **kw)
    except grpc.RpcError as e:
        return (e.code(), e.details())
    raise AssertionError("expected an error, got %r" % (r,))


def grant(server, ttl, lease_id=0):
    return lease_stub(server).LeaseGrant(
        pb.LeaseGrantRequest(TTL=ttl, ID=lease_id), timeout=RPC_TIMEOUT)


def revoke(server, lease_id):
    return lease_stub(server).LeaseRevoke(
        pb.LeaseRevokeRequest(ID=lease_id), timeout=RPC_TIMEOUT)


def ttl_of(server, lease_id, keys=False):
    return lease_stub(server).LeaseTimeToLive(
        pb.LeaseTimeToLiveRequest(ID=lease_id, keys=keys), timeout=RPC_TIMEOUT)


def leases(server):
    return lease_stub(server).LeaseLeases(pb.LeaseLeasesRequest(),
                                          timeout=RPC_TIMEOUT)


def lease_ids(server):
    return [l.ID for l in leases(server).leases]


def keepalive_once(server, lease_id):
    """One KeepAlive round trip on a fresh stream (as clientv3's
    KeepAliveOnce); returns the single response."""
    ka = KeepAliveStream(server.new_channel(), own_channel=True)
    try:
        ka.send(lease_id)
        r = ka.get()
        ka.half_close()
        ka.wait_end()
        return r
    finally:
        ka.close()


def rev_now(server):
    return server.kv.Range(pb.RangeRequest(key=b"\x00"), timeout=RPC_TIMEOUT).header.revision


def keys_with_prefix(server, prefix, end):
    r = server.kv.Range(pb.RangeRequest(key=prefix, range_end=end), timeout=30)
    return {kv.key: kv for kv in r.kvs}


def count_prefix(server, prefix, end):
    return server.kv.Range(pb.RangeRequest(key=prefix, range_end=end,
                                           count_only=True), timeout=30).count


class KeepAliveStream:
    """One Lease/LeaseKeepAlive call; requests from a queue, responses read
    by a thread into a queue, every read bounded by a timeout."""

    def __init__(self, channel, own_channel=False):
        self._channel = channel
        self._own = own_channel
        self._reqs = queue.Queue()
        self.resps = queue.Queue()
        self.error = None
        self._closed = False
        stub = rpc_pb2_grpc.LeaseStub(channel)
        self._call = stub.LeaseKeepAlive(self._requests())
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _requests(self):
        while True:
            r = self._reqs.get()
            if r is None:
                return
            yield r

    def _read(self):
        try:
            for r in self._call:
                self.resps.put(r)
        except Exception as e:  # noqa: BLE001 (reported through .error)
            self.error = e
        finally:
            self.resps.put(_END)

    def send(self, lease_id):
        self._reqs.put(pb.LeaseKeepAliveRequest(ID=lease_id))

    def get(self, timeout=READ_TIMEOUT):
        try:
            r = self.resps.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no keepalive response within %.1fs" % timeout) from None
        if r is _END:
            self.resps.put(_END)
            raise AssertionError("keepalive stream ended: %r" % (self.error,))
        return r

    def renew(self, lease_id, timeout=READ_TIMEOUT):
        self.send(lease_id)
        r = self.get(timeout)
        assert r.ID == lease_id, r
        return r

    def half_close(self):
        self._reqs.put(None)

    def wait_end(self, timeout=READ_TIMEOUT):
        """After a half-close: the stream must end with OK and no more
        responses."""
        try:
            r = self.resps.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("keepalive stream did not end within %.1fs"
                                 % timeout) from None
        assert r is _END, "unexpected response after half-close: %r" % (r,)
        self.resps.put(_END)
        assert self.error is None, self.error
        assert self._call.code() == grpc.StatusCode.OK, self._call.code()

    def close(self):
        if self._closed:
            return
        self._closed = True
        self._reqs.put(None)
        self._call.cancel()
        self._thread.join(timeout=10)
        if self._own:
            self._channel.close()


# --------------------------------------------------------------------------
# multi-process grant + attach (scale test)
# --------------------------------------------------------------------------
#
# One Python process issues about 6k unary RPCs/s; the scale test's 100k
# grants are spread over a few worker processes (multiprocessing "spawn":
# no fork after grpc is initialised), each with several channels and a
# bounded window of futures.

def grant_and_attach_worker(endpoint, lo, hi, ttl, key_fmt, channels=4,
                            block=1000, pipelines=3, txn_ops=100):
    """Grants leases lo..hi-1 (ID = i, TTL ``ttl``) and puts key_fmt % i
    with lease i, a block at a time: ``block`` grants in flight, then the
    block's keys in Txns of ``txn_ops`` puts, so every key is attached
    within moments of its lease's grant however long the whole run takes.
    ``pipelines`` threads do that on interleaved blocks (so at most
    pipelines * block requests are in flight).  Returns (granted, attached,
    attach txns, first errors)."""
    chans = [grpc.insecure_channel(endpoint) for _ in range(channels)]
    lock = threading.Lock()
    res = {"granted": 0, "attached": 0, "txns": 0, "errs": []}

    def error(what, e):
        with lock:
            if len(res["errs"]) < 10:
                res["errs"].append("%s: %s %s" % (what, e.code(), e.details()))

    def pipeline(p):
        lstubs = [rpc_pb2_grpc.LeaseStub(c) for c in chans]
        kstubs = [rpc_pb2_grpc.KVStub(c) for c in chans]
        for b in range(lo + p * block, hi, pipelines * block):
            ids = range(b, min(hi, b + block))
            futs = [lstubs[i % channels].LeaseGrant.future(
                pb.LeaseGrantRequest(ID=i, TTL=ttl), timeout=60) for i in ids]
            for f in futs:
                try:
                    f.result()
                    with lock:
                        res["granted"] += 1
                except grpc.RpcError as e:
                    error("grant", e)
            futs = []
            for t in range(ids.start, ids.stop, txn_ops):
                ops = [pb.RequestOp(request_put=pb.PutRequest(
                    key=(key_fmt % i).encode(), value=b"v%d" % i, lease=i))
                    for i in range(t, min(ids.stop, t + txn_ops))]
                futs.append((len(ops), kstubs[t % channels].Txn.future(
                    pb.TxnRequest(success=ops), timeout=60)))
            for n, f in futs:
                try:
                    f.result()
                    with lock:
                        res["attached"] += n
                        res["txns"] += 1
                except grpc.RpcError as e:
                    error("attach", e)

    try:
        threads = [threading.Thread(target=pipeline, args=(p,), daemon=True)
                   for p in range(pipelines)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=600)
        assert not any(t.is_alive() for t in threads), "grant pipeline stuck"
        return res["granted"], res["attached"], res["txns"], res["errs"]
    finally:
        for c in chans:
            c.close()
