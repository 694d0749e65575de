"""Fault injection on a 3-member cluster, checked for linearizability.

Runs against real etcd 3.4 (the oracle) and against the binary under test
(CAIRN_BIN); the latter is skipped automatically while it refuses a
multi-member --initial-cluster ("replication is not built yet").

A workload of 4 clients over 4 keys plus 2 prefix watchers runs for a few
seconds while the leader is killed (-9) and restarted on its data dir and a
follower is SIGSTOPped and SIGCONTed.  The recorded history must be
linearizable (linearize.py), with no acknowledged write lost from the
final write log and every watcher's stream complete up to a final sentinel.
"""

import os
import time

import grpc

import pytest

import linearize
from cairn_it import (ETCD_BIN, binary_under_test, is_etcd, rpc_pb2,
                      rpc_pb2_grpc)
from cluster_it import (Cluster, Partitioner, Workload, cluster_supported,
                        netns_unavailable)

# The etcd runs check the tests against the oracle; the sanitizer pass of
# tests/run-all.sh (CAIRN_SANITIZED) runs only the binary under test.
BINARIES = (["under-test"] if os.environ.get("CAIRN_SANITIZED")
            else ["etcd", "under-test"])

DURATION = float(os.environ.get("CLUSTER_FAULT_SECONDS", "9"))
SEED = int(os.environ.get("CLUSTER_FAULT_SEED", "0")) or None


def _binary(which):
    b = ETCD_BIN if which == "etcd" else binary_under_test()
    if which != "etcd" and not is_etcd(b):
        if not (os.path.isfile(b) and os.access(b, os.X_OK)):
            pytest.fail("binary under test %r is missing (set CAIRN_BIN)" % b)
        ok, why = cluster_supported(b)
        if not ok:
            pytest.skip(why)
    return b


def _save(h, tmp_path, name="history.jsonl"):
    p = str(tmp_path / name)
    h.dump(p)
    return p


@pytest.mark.parametrize("which", BINARIES)
def test_leader_kill_and_follower_pause(which, tmp_path):
    binary = _binary(which)
    events = []
    with Cluster(binary, 3) as c:
        c.start()
        wl = Workload(c, ["lin/k%d" % i for i in range(4)], clients=4,
                      duration=DURATION, watchers=3, seed=SEED)
        t0 = time.monotonic()
        wl.start()

        def at(t):
            time.sleep(max(0.0, t0 + t - time.monotonic()))

        at(1.5)
        ld = c.wait_leader(10)
        events.append("%.1fs kill -9 leader %s" % (time.monotonic() - t0, ld.name))
        ld.kill9()
        at(3.0)
        ld.start()
        events.append("%.1fs restarted %s" % (time.monotonic() - t0, ld.name))
        at(4.5)
        new = c.wait_leader(10)
        f = c.followers(new)[0]
        events.append("%.1fs leader %s, SIGSTOP follower %s" % (
            time.monotonic() - t0, new.name, f.name))
        f.sigstop()
        at(6.5)
        f.sigcont()
        events.append("%.1fs SIGCONT %s" % (time.monotonic() - t0, f.name))
        wl.join()
        h = wl.finish()
        for m in c.members:
            assert m.running(), "%s died:\n%s" % (m.name, m.log_tail())
            m.assert_owned()
    path = _save(h, tmp_path)
    res = linearize.check(h, timeout=30)
    print("\nfaults: %s" % "; ".join(events))
    print("client errors: %s" % wl.errors)
    print("watch sessions: %s" % {w.name: len(w.sessions) for w in wl.watchers})
    print(res)
    print("history: %s" % path)
    assert res.result == linearize.OK, "%s\n(history saved to %s)" % (res, path)
    # the run did something: writes were acknowledged, watchers completed
    assert res.stats["acked_writes"] > 10, res
    assert all(w.until is not None for w in wl.watchers), \
        [(w.name, w.last, w.errors) for w in wl.watchers]
    # the check is not vacuous: the same history minus one acknowledged
    # write in the final log, or with one watch event dropped, fails
    w = next(o for o in h.ops if o.acked_write())
    h.log["events"] = [e for e in h.log["events"] if e[0] != w.rev]
    assert "lost-write" in linearize.check(h, timeout=30).kinds()


@pytest.mark.parametrize("which", BINARIES)
def test_member_add_remove_under_load(which, tmp_path):
    binary = _binary(which)
    with Cluster(binary, 3) as c:
        c.start()
        wl = Workload(c, ["lin/k%d" % i for i in range(3)], clients=3,
                      duration=5.0, watchers=1, seed=SEED)
        wl.start()
        time.sleep(1.0)
        m = c.member_add()
        assert len(c.member_list()) == 4
        # the new member joined under the ID the cluster gave it and serves
        # linearizable reads (the member replaced below is not needed)
        assert m.id in [x.ID for x in c.member_list()]
        with grpc.insecure_channel(m.endpoint) as ch:
            r = rpc_pb2_grpc.KVStub(ch).Range(
                rpc_pb2.RangeRequest(key=b"lin/k0"), timeout=10)
            assert r.header.member_id == m.id
        time.sleep(1.0)
        victim = c.followers(c.wait_leader(10))[0]
        if victim is m:
            victim = c.followers(c.wait_leader(10))[1]
        c.member_remove(victim)
        assert len(c.member_list()) == 3
        wl.join()
        h = wl.finish()
    path = _save(h, tmp_path)
    res = linearize.check(h, timeout=30)
    print("\n%s" % res)
    assert res.result == linearize.OK, "%s\n(history saved to %s)" % (res, path)


@pytest.mark.parametrize("one_way", [False, True], ids=["both-ways", "one-way"])
@pytest.mark.parametrize("which", BINARIES)
def test_leader_partitioned(which, one_way, tmp_path):
    why = netns_unavailable()
    if why:
        pytest.skip(why)
    binary = _binary(which)
    net = Partitioner()
    events = []
    with Cluster(binary, 3, net=net) as c:
        c.start()
        wl = Workload(c, ["lin/k%d" % i for i in range(3)], clients=4,
                      duration=6.0, watchers=3, seed=SEED)
        t0 = time.monotonic()
        wl.start()
        time.sleep(1.0)
        ld = c.wait_leader(10)
        others = [m for m in c.members if m is not ld]
        net.isolate(ld, others, one_way=one_way)
        events.append("%.1fs cut leader %s from %s (%s)" % (
            time.monotonic() - t0, ld.name, [m.name for m in others],
            "one way" if one_way else "both ways"))
        time.sleep(3.0)
        net.heal()
        events.append("%.1fs healed" % (time.monotonic() - t0))
        wl.join()
        h = wl.finish()
    path = _save(h, tmp_path)
    res = linearize.check(h, timeout=30)
    print("\nfaults: %s" % "; ".join(events))
    print("client errors: %s" % wl.errors)
    print(res)
    assert res.result == linearize.OK, "%s\n(history saved to %s)" % (res, path)
    assert all(w.until is not None for w in wl.watchers)
