"""The wire calls of etcd's client/v3/kubernetes wrapper, as kube-apiserver's
storage layer (k8s.io/apiserver/pkg/storage/etcd3) issues them.

See /work/shared/etcd-contract.md §2.  All calls carry a timeout; every loop
here is bounded in count.
"""

import grpc

from cairn_it import rpc_pb2 as pb, rpc_pb2_grpc
from watch_it import prefix_end

TIMEOUT = 10.0
COMPACT_REV_KEY = b"compact_rev_key"
ERR_COMPACTED = "etcdserver: mvcc: required revision has been compacted"
ERR_FUTURE_REV = "etcdserver: mvcc: required revision is a future revision"


def cmp_mod(key, rev):
    return pb.Compare(result=pb.Compare.EQUAL, target=pb.Compare.MOD,
                      key=key, mod_revision=rev)


def cmp_version(key, version):
    return pb.Compare(result=pb.Compare.EQUAL, target=pb.Compare.VERSION,
                      key=key, version=version)


def op_put(key, value, lease=0):
    return pb.RequestOp(request_put=pb.PutRequest(key=key, value=value, lease=lease))


def op_get(key):
    return pb.RequestOp(request_range=pb.RangeRequest(key=key))


def op_del(key):
    return pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=key))


class Kubernetes:
    """One clientv3 "Kubernetes" client: its own gRPC connection."""

    def __init__(self, server):
        self.channel = server.new_channel()
        self.kv = rpc_pb2_grpc.KVStub(self.channel)
        self.lease = rpc_pb2_grpc.LeaseStub(self.channel)
        self.maint = rpc_pb2_grpc.MaintenanceStub(self.channel)

    def close(self):
        self.channel.close()

    # -- reads ----------------------------------------------------------
    def get(self, key, revision=0):
        """Kubernetes.Get: Range{key, limit 1, revision}, linearizable."""
        return self.kv.Range(pb.RangeRequest(key=key, limit=1, revision=revision),
                             timeout=TIMEOUT)

    def list_page(self, prefix, limit, revision=0, continue_key=None):
        """Kubernetes.List: one page of a paginated prefix list."""
        return self.kv.Range(pb.RangeRequest(
            key=continue_key if continue_key is not None else prefix,
            range_end=prefix_end(prefix), limit=limit, revision=revision),
            timeout=TIMEOUT)

    def count(self, prefix):
        """store.Stats: Range{prefix, range_end, count_only}."""
        r = self.kv.Range(pb.RangeRequest(key=prefix, range_end=prefix_end(prefix),
                                          count_only=True), timeout=TIMEOUT)
        return r

    def list_all(self, prefix, limit, max_pages=1000):
        """store.GetList pagination as in store.go: returns
        (items, list_revision, pages) where pages is a list of
        (n_kvs, count, hasMore, remainingItemCount)."""
        items, pages = [], []
        rev, cont = 0, None
        for _ in range(max_pages):
            r = self.list_page(prefix, limit, revision=rev, continue_key=cont)
            if rev == 0:
                rev = r.header.revision   # later pages pin the first page's rev
            has_more = len(r.kvs) < r.count
            pages.append((len(r.kvs), r.count, has_more, r.count - len(r.kvs)))
            items.extend(r.kvs)
            if not has_more:
                return items, rev, pages
            cont = r.kvs[-1].key + b"\x00"
        raise AssertionError("list did not finish in %d pages" % max_pages)

    # -- writes ---------------------------------------------------------
    def txn(self, compare, success, failure=()):
        return self.kv.Txn(pb.TxnRequest(compare=list(compare), success=list(success),
                                         failure=list(failure)), timeout=TIMEOUT)

    def create(self, key, value, lease=0):
        """OptimisticPut(rev 0): no else branch; succeeded=false -> AlreadyExists."""
        return self.txn([cmp_mod(key, 0)], [op_put(key, value, lease)])

    def optimistic_put(self, key, value, orig_rev, lease=0):
        """OptimisticPut(rev, GetOnFailure) as used by GuaranteedUpdate."""
        return self.txn([cmp_mod(key, orig_rev)], [op_put(key, value, lease)],
                        [op_get(key)])

    def optimistic_delete(self, key, rev):
        """OptimisticDelete(rev, GetOnFailure)."""
        return self.txn([cmp_mod(key, rev)], [op_del(key)], [op_get(key)])

    def guaranteed_update(self, key, update, max_tries=1000):
        """The GuaranteedUpdate CAS loop: read, transform, OptimisticPut; on a
        conflict re-decode failure[0] and retry.  Returns (txn response,
        number of conflicts)."""
        r = self.get(key)
        assert r.count == 1, r
        cur = r.kvs[0]
        for attempt in range(max_tries):
            new = update(cur.value)
            t = self.optimistic_put(key, new, cur.mod_revision, lease=cur.lease)
            if t.succeeded:
                return t, attempt
            rr = t.responses[0].response_range
            assert len(rr.kvs) == 1, t
            cur = rr.kvs[0]
        raise AssertionError("GuaranteedUpdate: no success in %d tries" % max_tries)

    def lease_grant(self, ttl):
        return self.lease.LeaseGrant(pb.LeaseGrantRequest(TTL=ttl), timeout=TIMEOUT)

    def compact(self, rev):
        """clientv3 Compact (physical=false, as k8s calls it)."""
        return self.kv.Compact(pb.CompactionRequest(revision=rev, physical=False),
                               timeout=30)

    def status(self):
        return self.maint.Status(pb.StatusRequest(), timeout=TIMEOUT)


def rpc_error(fn, *a, **kw):
    """Call fn and return the grpc.RpcError it must raise."""
    try:
        r = fn(*a, **kw)
    except grpc.RpcError as e:
        return e
    raise AssertionError("expected an RPC error, got %r" % (r,))
