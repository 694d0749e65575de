"""v3electionpb.Election: one scripted sequence run on etcd 3.4 and on the
server under test, compared response by response (codes, messages, headers
without cluster_id/member_id/raft_term, and the Observe streams).  Lease IDs
are chosen by the client so keys and revisions match.  Also etcdctl elect
(client-side) on both, and Election under auth.
"""

import os
import signal
import subprocess
import threading

import grpc
import pytest
from google.protobuf import json_format

from cairn_it import BOTH, ETCD_BIN, ETCDCTL_BIN, rpc_pb2 as pb, rpc_pb2_grpc
from etcd3.etcdrpc import auth_pb2
from lock_it import (TIMEOUT, ElectionStub, LockStub, Observer, auth_setup, err, get,
                     grant, lpb, wait_for)


def norm(m):
    d = json_format.MessageToDict(m, preserving_proto_field_name=True)

    def strip(x):
        if isinstance(x, dict):
            h = x.get("header")
            if isinstance(h, dict):
                for f in ("cluster_id", "member_id", "raft_term"):
                    h.pop(f, None)
            for v in x.values():
                strip(v)
    strip(d)
    return d


def call(fn, req, **kw):
    try:
        return ("OK", norm(fn(req, timeout=kw.pop("timeout", TIMEOUT), **kw)))
    except grpc.RpcError as e:
        return err(e)


def LK(name, key, rev, lease):
    return lpb.LeaderKey(name=name, key=key, rev=rev, lease=lease)


def script(s):
    """The sequence; returns [(label, result)]."""
    out = []
    el = ElectionStub(s.channel())
    A, B, C = grant(s, 60, 0xA), grant(s, 60, 0xB), grant(s, 3, 0xC)

    def rec(label, v):
        out.append((label, v))
        return v

    rec("leader of empty", call(el.Leader, lpb.LeaderRequest(name=b"e")))
    o1 = Observer(ElectionStub(s.new_channel()), b"e")
    ra = rec("campaign A", call(el.Campaign, lpb.CampaignRequest(
        name=b"e", lease=A, value=b"a1")))
    rec("o1 first", norm(o1.wait(1)[0]))
    # B blocks behind A
    fb = ElectionStub(s.new_channel()).Campaign.future(
        lpb.CampaignRequest(name=b"e", lease=B, value=b"b1"), timeout=60)
    wait_for(lambda: get(s, b"e/b"), "B's key")
    rec("B blocked", fb.done())
    rec("leader", call(el.Leader, lpb.LeaderRequest(name=b"e")))
    o2 = Observer(ElectionStub(s.new_channel()), b"e")
    rec("o2 first", norm(o2.wait(1)[0]))
    rev_a = int(ra[1]["leader"]["rev"])
    rec("proclaim a2", call(el.Proclaim, lpb.ProclaimRequest(
        leader=LK(b"e", b"e/a", rev_a, A), value=b"a2")))
    rec("o1 a2", norm(o1.wait(2)[1]))
    rec("o2 a2", norm(o2.wait(2)[1]))
    rec("proclaim stale rev", call(el.Proclaim, lpb.ProclaimRequest(
        leader=LK(b"e", b"e/a", rev_a + 100, A), value=b"zz")))
    rec("proclaim wrong key", call(el.Proclaim, lpb.ProclaimRequest(
        leader=LK(b"e", b"e/b", rev_a, B), value=b"zz")))
    rec("proclaim no leader", call(el.Proclaim, lpb.ProclaimRequest(value=b"x")))
    rec("resign no leader", call(el.Resign, lpb.ResignRequest()))
    rec("resign empty key", call(el.Resign, lpb.ResignRequest(
        leader=LK(b"e", b"", 1, A))))
    rec("resign A", call(el.Resign, lpb.ResignRequest(
        leader=LK(b"e", b"e/a", rev_a, A))))
    try:
        rec("B wins", ("OK", norm(fb.result(timeout=TIMEOUT))))
    except grpc.RpcError as e:
        rec("B wins", err(e))
    rec("o1 b1", norm(o1.wait(3)[2]))
    rec("o2 b1", norm(o2.wait(3)[2]))
    rec("resign stale", call(el.Resign, lpb.ResignRequest(
        leader=LK(b"e", b"e/a", rev_a, A))))
    # the same lease campaigns again with another value: the proclaim path
    rec("re-campaign B", call(el.Campaign, lpb.CampaignRequest(
        name=b"e", lease=B, value=b"b2")))
    rec("o1 b2", norm(o1.wait(4)[3]))
    rec("o2 b2", norm(o2.wait(4)[3]))
    rec("re-campaign B same value", call(el.Campaign, lpb.CampaignRequest(
        name=b"e", lease=B, value=b"b2")))
    rec("leader b2", call(el.Leader, lpb.LeaderRequest(name=b"e")))
    rec("campaign missing lease", call(el.Campaign, lpb.CampaignRequest(
        name=b"e", lease=0x999, value=b"m")))
    # the leader's lease expires: the waiter wins
    rec("campaign C", call(el.Campaign, lpb.CampaignRequest(
        name=b"x", lease=C, value=b"c")))
    fa = ElectionStub(s.new_channel()).Campaign.future(
        lpb.CampaignRequest(name=b"x", lease=A, value=b"ax"), timeout=60)
    try:
        rec("A wins after C expired", ("OK", norm(fa.result(timeout=TIMEOUT + 10))))
    except grpc.RpcError as e:
        rec("A wins after C expired", err(e))
    rec("leader x", call(el.Leader, lpb.LeaderRequest(name=b"x")))
    rec("proclaim expired C", call(el.Proclaim, lpb.ProclaimRequest(
        leader=LK(b"x", b"x/c", 0, C), value=b"c2")))
    # an observer sees nothing once the leader resigned, until the next PUT
    rec("resign B", call(el.Resign, lpb.ResignRequest(
        leader=LK(b"e", b"e/b", int(out[[l for l, _ in out].index("B wins")][1][1]
                                    ["leader"]["rev"]), B))))
    rec("campaign A again", call(el.Campaign, lpb.CampaignRequest(
        name=b"e", lease=A, value=b"a3")))
    rec("o1 a3", norm(o1.wait(5)[4]))
    o1.cancel()
    o2.cancel()
    rec("o1 count", len(o1.msgs))
    rec("o2 count", len(o2.msgs))
    return out


def test_election_matches_etcd(server_factory):
    e = script(server_factory(ETCD_BIN))
    c = script(server_factory())
    assert [l for l, _ in c] == [l for l, _ in e]
    for (label, ve), (_, vc) in zip(e, c):
        assert vc == ve, label
    d = dict(e)
    # etcd's own behaviour, as the comparison's anchor
    assert d["leader of empty"] == ("UNKNOWN", "election: no leader")
    assert d["proclaim stale rev"] == ("UNKNOWN", "election: not leader")
    assert d["proclaim no leader"] == ("UNKNOWN", '"leader" field must be provided')
    assert d["resign no leader"] == ("UNKNOWN", '"leader" field must be provided')
    assert d["resign empty key"] == ("UNKNOWN", "etcdserver: key is not provided")
    assert d["campaign missing lease"] == (
        "UNKNOWN", "etcdserver: requested lease not found")
    assert d["B blocked"] is False
    assert d["B wins"][0] == "OK" and d["A wins after C expired"][0] == "OK"


@pytest.fixture(params=BOTH)
def srv(request, server_factory):
    return server_factory(ETCD_BIN if request.param == "etcd" else None)


def test_campaign_lease_zero(srv):
    el = ElectionStub(srv.channel())
    r = el.Campaign(lpb.CampaignRequest(name=b"z", value=b"v"), timeout=TIMEOUT)
    lid = r.leader.lease
    assert lid != 0 and r.leader.key == b"z/%x" % lid
    assert r.leader.name == b"z" and r.leader.rev == r.header.revision
    t = rpc_pb2_grpc.LeaseStub(srv.channel()).LeaseTimeToLive(
        pb.LeaseTimeToLiveRequest(ID=lid), timeout=TIMEOUT)
    assert t.grantedTTL == 60
    # Proclaim with lease 0 grants a lease and puts with it
    el.Proclaim(lpb.ProclaimRequest(leader=LK(b"z", r.leader.key, r.leader.rev, 0),
                                    value=b"v2"), timeout=TIMEOUT)
    kv = get(srv, r.leader.key)
    assert kv.value == b"v2" and kv.lease not in (0, lid)


def test_observe_cancel_and_waiter_cancel(srv):
    el = ElectionStub(srv.channel())
    a, b = grant(srv, 60, 0x1), grant(srv, 60, 0x2)
    el.Campaign(lpb.CampaignRequest(name=b"w", lease=a, value=b"a"), timeout=TIMEOUT)
    ch = srv.new_channel()
    f = ElectionStub(ch).Campaign.future(
        lpb.CampaignRequest(name=b"w", lease=b, value=b"b"), timeout=60)
    wait_for(lambda: get(srv, b"w/2"), "waiter key")
    f.cancel()
    # a cancelled campaign resigns (without a token)
    wait_for(lambda: get(srv, b"w/2") is None, "waiter resigned")
    ch.close()
    with pytest.raises(grpc.RpcError) as e:
        el.Campaign(lpb.CampaignRequest(name=b"w", lease=b, value=b"b"),
                    timeout=1.0)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_for(lambda: get(srv, b"w/2") is None, "timed-out waiter resigned")
    o = Observer(ElectionStub(srv.new_channel()), b"w")
    assert o.wait(1)[0].kv.value == b"a"
    o.cancel()
    assert o.end[0] == "CANCELLED"
    assert get(srv, b"w/1").value == b"a"




def test_election_auth(srv):
    root, u = auth_setup(srv, auth_pb2.Permission.READ, b"ro/", b"ro0")
    el = ElectionStub(srv.channel())
    lr = grant(srv, 60, 0x41, metadata=root)
    lu = grant(srv, 60, 0x42, metadata=u)
    res = []
    for name, md in ((b"e", u), (b"ro", u), (b"e", None)):
        res.append(call(el.Campaign, lpb.CampaignRequest(name=name, lease=lu, value=b"v"),
                        metadata=md))
        res.append(call(el.Leader, lpb.LeaderRequest(name=name), metadata=md))
    assert res[0] == ("UNKNOWN", "etcdserver: permission denied")
    assert res[1] == ("UNKNOWN", "etcdserver: permission denied")
    assert res[2] == ("UNKNOWN", "etcdserver: permission denied")  # read only
    assert res[3] == ("UNKNOWN", "election: no leader")
    assert res[4] == ("UNKNOWN", "etcdserver: user name is empty")
    assert res[5] == ("UNKNOWN", "etcdserver: user name is empty")
    assert call(el.Campaign, lpb.CampaignRequest(name=b"e", lease=lr, value=b"v"),
                metadata=root)[0] == "OK"
    # Observe denied: the stream ends OK with no message
    o = Observer(ElectionStub(srv.new_channel()), b"e", metadata=u)
    assert o.wait_end() == ("OK", "")
    assert o.msgs == []


# --------------------------------------------------------------------------
# etcdctl elect (client-side)
# --------------------------------------------------------------------------

def _ctl_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "3"
    return env


def _popen(s, *args):
    return subprocess.Popen(
        [ETCDCTL_BIN, "--endpoints", s.endpoint, "--dial-timeout", "5s"] + list(args),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_ctl_env())


def _readline(p):
    box = []
    t = threading.Thread(target=lambda: box.append(p.stdout.readline()), daemon=True)
    t.start()
    t.join(timeout=TIMEOUT)
    assert box, "etcdctl printed nothing"
    return box[0].rstrip("\n")


def test_etcdctl_elect(srv):
    procs = []
    try:
        obs = _popen(srv, "elect", "-l", "ce")
        procs.append(obs)
        p1 = _popen(srv, "elect", "ce", "p1")
        procs.append(p1)
        k1 = _readline(p1)
        assert k1.startswith("ce/") and _readline(p1) == "p1"
        assert (_readline(obs), _readline(obs)) == (k1, "p1")
        p2 = _popen(srv, "elect", "ce", "p2")
        procs.append(p2)
        wait_for(lambda: len(srv.kv.Range(pb.RangeRequest(
            key=b"ce/", range_end=b"ce0"), timeout=TIMEOUT).kvs) == 2, "p2 queued")
        p1.send_signal(signal.SIGINT)  # resigns
        p1.wait(timeout=20)
        k2 = _readline(p2)
        assert k2.startswith("ce/") and k2 != k1 and _readline(p2) == "p2"
        assert (_readline(obs), _readline(obs)) == (k2, "p2")
        assert get(srv, k1.encode()) is None
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=10)


def test_stop_with_campaign_and_observer(srv):
    el = ElectionStub(srv.channel())
    a, b = grant(srv, 60, 0x1), grant(srv, 60, 0x2)
    el.Campaign(lpb.CampaignRequest(name=b"s", lease=a, value=b"a"), timeout=TIMEOUT)
    f = ElectionStub(srv.new_channel()).Campaign.future(
        lpb.CampaignRequest(name=b"s", lease=b, value=b"b"), timeout=60)
    o = Observer(ElectionStub(srv.new_channel()), b"s")
    o.wait(1)
    o2 = Observer(ElectionStub(srv.new_channel()), b"nobody")
    wait_for(lambda: get(srv, b"s/2"), "waiter key")
    rc = srv.stop()
    with pytest.raises(grpc.RpcError) as e:
        f.result(timeout=TIMEOUT)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert o.wait_end()[0] == o2.wait_end()[0] == "UNAVAILABLE"
    if srv.binary != ETCD_BIN:
        assert rc == 0, srv.log_tail()
    srv.start()
    assert get(srv, b"s/1").value == b"a"


def odd_inputs(s):
    """Odd but well-formed requests: negative and unknown leases, empty and
    binary names and keys, stale or negative revisions, a Proclaim on a key
    nobody campaigned for. [(label, result)]"""
    el, lk = ElectionStub(s.channel()), LockStub(s.channel())
    A = grant(s, 60, 0x51)
    out = []
    for label, fn, req in (
        ("lock lease -1", lk.Lock, lpb.LockRequest(name=b"o", lease=-1)),
        ("lock lease unknown", lk.Lock, lpb.LockRequest(name=b"o", lease=0x777)),
        ("lock empty name", lk.Lock, lpb.LockRequest(name=b"", lease=A)),
        ("lock binary name", lk.Lock, lpb.LockRequest(name=b"\x00\xff/", lease=A)),
        ("unlock NUL key", lk.Unlock, lpb.UnlockRequest(key=b"\x00")),
        ("campaign lease -1", el.Campaign,
         lpb.CampaignRequest(name=b"o", lease=-1, value=b"v")),
        ("campaign empty name", el.Campaign,
         lpb.CampaignRequest(name=b"", lease=A, value=b"")),
        ("proclaim empty key", el.Proclaim,
         lpb.ProclaimRequest(leader=LK(b"o", b"", 0, A), value=b"v")),
        ("proclaim unknown key rev 0", el.Proclaim,
         lpb.ProclaimRequest(leader=LK(b"o", b"o/none", 0, A), value=b"v")),
        ("proclaim unknown lease", el.Proclaim,
         lpb.ProclaimRequest(leader=LK(b"o", b"o/x", 0, 0x778), value=b"v")),
        ("resign rev -1", el.Resign,
         lpb.ResignRequest(leader=LK(b"", b"/51", -1, A))),
        ("resign empty key", el.Resign,
         lpb.ResignRequest(leader=LK(b"o", b"", 5, A))),
        ("leader binary name", el.Leader, lpb.LeaderRequest(name=b"\xff")),
    ):
        out.append((label, call(fn, req)))
    return out


def test_odd_inputs_match_etcd(server_factory):
    """Run on both etcd and the server under test in every pass: the
    comparison is the point."""
    e = odd_inputs(server_factory(ETCD_BIN))
    c = odd_inputs(server_factory(None))
    for (label, ev), (_, cv) in zip(e, c):
        assert cv == ev, (label, ev, cv)
