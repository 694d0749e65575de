"""Lock and Election on a 3-member cluster, etcd 3.4 and the server under
test: the inner calls of a call made on a follower reach the leader (writes,
linearizable reads, watches), lock hand-over and Observe across members,
and a member left alone answers a Lock that asked for a leader with
"etcdserver: no leader"."""

import grpc
import pytest

from cairn_it import BOTH, ETCD_BIN, binary_under_test, rpc_pb2 as pb, rpc_pb2_grpc
from cluster_it import Cluster, cluster_supported
from lock_it import TIMEOUT, ElectionStub, LockStub, Observer, err, lpb, wait_for


@pytest.fixture(params=BOTH)
def binary(request):
    b = ETCD_BIN if request.param == "etcd" else binary_under_test()
    ok, why = cluster_supported(b)
    if not ok:
        pytest.skip(why)
    return b


def grant_on(m, ttl, lid):
    with grpc.insecure_channel(m.endpoint) as ch:
        return rpc_pb2_grpc.LeaseStub(ch).LeaseGrant(
            pb.LeaseGrantRequest(TTL=ttl, ID=lid), timeout=TIMEOUT).ID


def get_on(m, key):
    with grpc.insecure_channel(m.endpoint) as ch:
        r = rpc_pb2_grpc.KVStub(ch).Range(pb.RangeRequest(key=key), timeout=TIMEOUT)
        return r.kvs[0] if r.kvs else None


def test_lock_and_election_across_members(binary):
    with Cluster(binary, 3) as c:
        c.start()
        ld = c.wait_leader()
        f1, f2 = c.followers(ld)
        la, lb = grant_on(ld, 60, 0xA), grant_on(ld, 60, 0xB)
        chans = [grpc.insecure_channel(m.endpoint) for m in (ld, f1, f2)]
        try:
            lk_ld, lk_f1, lk_f2 = (LockStub(ch) for ch in chans)
            # the holder locks through a follower, the waiter through another
            r = lk_f1.Lock(lpb.LockRequest(name=b"cl", lease=la), timeout=TIMEOUT)
            assert r.key == b"cl/a"
            fut = lk_f2.Lock.future(lpb.LockRequest(name=b"cl", lease=lb), timeout=60)
            wait_for(lambda: get_on(ld, b"cl/b"), "waiter key on the leader")
            assert not fut.done()
            u = lk_ld.Unlock(lpb.UnlockRequest(key=b"cl/a"), timeout=TIMEOUT)
            r2 = fut.result(timeout=TIMEOUT)
            assert r2.key == b"cl/b"
            assert r2.header.revision >= u.header.revision
            # election: campaign on a follower, observe on the other
            el_ld, el_f1, el_f2 = (ElectionStub(ch) for ch in chans)
            o = Observer(ElectionStub(grpc.insecure_channel(f2.endpoint)), b"ce")
            cr = el_f1.Campaign(lpb.CampaignRequest(name=b"ce", lease=la, value=b"x"),
                                timeout=TIMEOUT)
            assert cr.leader.key == b"ce/a"
            assert o.wait(1)[0].kv.value == b"x"
            el_ld.Proclaim(lpb.ProclaimRequest(leader=cr.leader, value=b"y"),
                           timeout=TIMEOUT)
            assert o.wait(2)[1].kv.value == b"y"
            ldr = el_f2.Leader(lpb.LeaderRequest(name=b"ce"), timeout=TIMEOUT)
            assert ldr.kv.value == b"y" and ldr.header.revision >= o.msgs[1].header.revision
            o.cancel()
            # a blocked Campaign through a follower while the members stop
            pending = el_f2.Campaign.future(
                lpb.CampaignRequest(name=b"ce", lease=lb, value=b"z"), timeout=60)
            wait_for(lambda: get_on(ld, b"ce/b"), "second candidate")
            assert not pending.done()
        finally:
            for ch in chans:
                ch.close()
        if binary != ETCD_BIN:  # clean exits (under the sanitizers: no leak)
            for m in (f2, f1, ld):
                assert m.stop() == 0, m.log_tail()


def test_alone_member_hasleader(binary):
    with Cluster(binary, 3) as c:
        c.start()
        ld = c.wait_leader()
        f1, f2 = c.followers(ld)
        ld.kill9()
        f1.kill9()

        def no_leader():
            try:
                st = f2.status(timeout=1.0)
            except Exception:  # noqa: BLE001
                return None
            return st.leader == 0
        wait_for(no_leader, "no leader on the last member", limit=30)
        hl = [("hasleader", "true")]
        with grpc.insecure_channel(f2.endpoint) as ch:
            for fn, req in (
                    (LockStub(ch).Lock, lpb.LockRequest(name=b"n", lease=1)),
                    (LockStub(ch).Unlock, lpb.UnlockRequest(key=b"n/1")),
                    (ElectionStub(ch).Leader, lpb.LeaderRequest(name=b"n")),
                    (ElectionStub(ch).Campaign, lpb.CampaignRequest(name=b"n", lease=1))):
                with pytest.raises(grpc.RpcError) as e:
                    fn(req, timeout=TIMEOUT, metadata=hl)
                assert err(e.value) == ("UNAVAILABLE", "etcdserver: no leader")
            with pytest.raises(grpc.RpcError) as e:
                list(ElectionStub(ch).Observe(lpb.LeaderRequest(name=b"n"),
                                              timeout=TIMEOUT, metadata=hl))
            assert err(e.value) == ("UNAVAILABLE", "etcdserver: no leader")
