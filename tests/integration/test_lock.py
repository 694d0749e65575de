"""v3lockpb.Lock (Lock, Unlock) on the server under test and on etcd 3.4.

Every test runs on both ("etcd" and "cairn" parameters), so the
expectations written here are etcd's real behaviour.  Lease IDs are chosen
by the client, so keys (name/<lowercase hex lease>) are known in advance.
"""

import os
import signal
import subprocess
import threading

import grpc
import pytest

from cairn_it import BOTH, ETCD_BIN, ETCDCTL_BIN, rpc_pb2 as pb, rpc_pb2_grpc
from etcd3.etcdrpc import auth_pb2
from lock_it import (TIMEOUT, LockStub, auth_setup, err, get, grant, lpb,
                     wait_for)


@pytest.fixture(params=BOTH)
def srv(request, server_factory):
    return server_factory(ETCD_BIN if request.param == "etcd" else None)


def lock(s, name, lease, **kw):
    return LockStub(s.channel()).Lock(lpb.LockRequest(name=name, lease=lease),
                                      timeout=kw.pop("timeout", TIMEOUT), **kw)


def unlock(s, key, **kw):
    return LockStub(s.channel()).Unlock(lpb.UnlockRequest(key=key),
                                        timeout=TIMEOUT, **kw)


def lock_future(s, name, lease, ch=None, timeout=60.0):
    st = LockStub(ch or s.new_channel())
    return st.Lock.future(lpb.LockRequest(name=name, lease=lease),
                          timeout=timeout)


def test_lock_unlock(srv):
    lid = grant(srv, 60, 0x1A2B)
    r = lock(srv, b"mylock", lid)
    assert r.key == b"mylock/1a2b"
    kv = get(srv, b"mylock/1a2b")
    assert kv is not None and kv.lease == lid and kv.value == b""
    assert r.header.revision == kv.create_revision == kv.mod_revision
    u = unlock(srv, r.key)
    assert u.header.revision == r.header.revision + 1
    assert get(srv, r.key) is None


def test_empty_name_and_binary_name(srv):
    lid = grant(srv, 60, 0xFF)
    assert lock(srv, b"", lid).key == b"/ff"
    assert lock(srv, b"\xff\x00x", lid).key == b"\xff\x00x/ff"


def test_reentrant_per_lease(srv):
    lid = grant(srv, 60, 0x77)
    r1 = lock(srv, b"re", lid)
    r2 = lock(srv, b"re", lid)  # returns at once while r1 holds it
    assert r1.key == r2.key == b"re/77"
    # the second is the Txn's else branch: no write, header = current rev
    assert r2.header.revision == r1.header.revision
    unlock(srv, r1.key)
    assert get(srv, r1.key) is None


def test_unlock_missing_foreign_empty(srv):
    base = srv.kv.Put(pb.PutRequest(key=b"x", value=b"1"), timeout=TIMEOUT)
    u = unlock(srv, b"no/such")
    assert u.header.revision == base.header.revision
    la = grant(srv, 60, 0xA)
    lock(srv, b"f", la)
    # Unlock checks no ownership: anyone may delete the key
    unlock(srv, b"f/a")
    assert get(srv, b"f/a") is None
    with pytest.raises(grpc.RpcError) as e:
        unlock(srv, b"")
    assert err(e.value) == ("UNKNOWN", "etcdserver: key is not provided")


def test_missing_lease(srv):
    with pytest.raises(grpc.RpcError) as e:
        lock(srv, b"m", 0x999)
    assert err(e.value) == ("UNKNOWN", "etcdserver: requested lease not found")
    assert get(srv, b"m/999") is None


def test_lease_zero_grants_60s(srv):
    r = lock(srv, b"z", 0)
    assert r.key.startswith(b"z/")
    lid = int(r.key[2:], 16)
    kv = get(srv, r.key)
    assert kv.lease == lid
    ls = rpc_pb2_grpc.LeaseStub(srv.channel())
    ids = [l.ID for l in ls.LeaseLeases(pb.LeaseLeasesRequest(),
                                        timeout=TIMEOUT).leases]
    assert lid in ids
    t = ls.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=lid), timeout=TIMEOUT)
    assert t.grantedTTL == 60 and 0 < t.TTL <= 60
    # the holder's header is the Txn's: the grant came first
    assert r.header.revision == kv.create_revision


def test_fairness_create_revision_order(srv):
    leases = [grant(srv, 60, 0x100 + i) for i in range(5)]
    hold = lock(srv, b"q", leases[0])
    futs = []
    for lid in leases[1:]:
        futs.append(lock_future(srv, b"q", lid))
        key = b"q/%x" % lid
        wait_for(lambda: get(srv, key), "waiter key %r" % key)
    revs = [get(srv, b"q/%x" % lid).create_revision for lid in leases[1:]]
    assert revs == sorted(revs)
    assert not any(f.done() for f in futs)
    unlock(srv, hold.key)
    for i, f in enumerate(futs):
        r = f.result(timeout=TIMEOUT)
        assert r.key == b"q/%x" % leases[i + 1]
        # later waiters are still waiting (they wait on their predecessor)
        assert not any(g.done() for g in futs[i + 1:])
        unlock(srv, r.key)


def test_holder_lease_expiry_hands_over(srv):
    short = grant(srv, 2, 0x5)
    long_ = grant(srv, 60, 0x6)
    lock(srv, b"exp", short)
    f = lock_future(srv, b"exp", long_)
    r = f.result(timeout=TIMEOUT + 10)
    assert r.key == b"exp/6"
    assert get(srv, b"exp/5") is None
    # the header is the last Range's (waitDeletes): after the expiry's delete
    assert r.header.revision >= get(srv, b"exp/6").create_revision + 1


def test_waiter_cancel_and_timeout_clean_up(srv):
    la, lb, lc = grant(srv, 60, 0xA1), grant(srv, 60, 0xB1), grant(srv, 60, 0xC1)
    lock(srv, b"c", la)
    ch = srv.new_channel()
    try:
        f = lock_future(srv, b"c", lb, ch=ch)
        wait_for(lambda: get(srv, b"c/b1"), "waiter key")
        f.cancel()
        wait_for(lambda: get(srv, b"c/b1") is None, "cancelled waiter's key gone")
    finally:
        ch.close()
    with pytest.raises(grpc.RpcError) as e:
        lock(srv, b"c", lc, timeout=1.0)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_for(lambda: get(srv, b"c/c1") is None, "timed-out waiter's key gone")
    assert get(srv, b"c/a1") is not None  # the holder is unaffected
    # and the lock still works
    unlock(srv, b"c/a1")
    assert lock(srv, b"c", lc).key == b"c/c1"


def test_lock_safety(srv):
    workers, rounds = 8, 25
    leases = [grant(srv, 120, 0x200 + i) for i in range(workers)]
    violations, errors = [], []

    def work(i):
        ch = srv.new_channel()
        try:
            kv, ls = rpc_pb2_grpc.KVStub(ch), LockStub(ch)
            me = b"w%d" % i
            for _ in range(rounds):
                k = ls.Lock(lpb.LockRequest(name=b"safe", lease=leases[i]),
                            timeout=60).key
                # enter: cs must be absent
                t = kv.Txn(pb.TxnRequest(
                    compare=[pb.Compare(key=b"cs", target=pb.Compare.VERSION,
                                        result=pb.Compare.EQUAL, version=0)],
                    success=[pb.RequestOp(request_put=pb.PutRequest(
                        key=b"cs", value=me))]), timeout=TIMEOUT)
                if not t.succeeded:
                    violations.append(i)
                # leave: cs must still be ours
                t = kv.Txn(pb.TxnRequest(
                    compare=[pb.Compare(key=b"cs", target=pb.Compare.VALUE,
                                        result=pb.Compare.EQUAL, value=me)],
                    success=[pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(
                        key=b"cs"))]), timeout=TIMEOUT)
                if not t.succeeded:
                    violations.append(i)
                ls.Unlock(lpb.UnlockRequest(key=k), timeout=TIMEOUT)
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))
        finally:
            ch.close()

    ts = [threading.Thread(target=work, args=(i,), daemon=True)
          for i in range(workers)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=240)
    assert not any(t.is_alive() for t in ts)
    assert errors == []
    assert violations == []


def test_lock_survives_restart(srv):
    la, lb = grant(srv, 60, 0xAA), grant(srv, 60, 0xBB)
    lock(srv, b"rs", la)
    f = lock_future(srv, b"rs", lb)
    wait_for(lambda: get(srv, b"rs/bb"), "waiter key")
    srv.restart(kill=True)
    with pytest.raises(grpc.RpcError):
        f.result(timeout=TIMEOUT)
    assert get(srv, b"rs/aa").lease == la
    assert get(srv, b"rs/bb").lease == lb
    ls = rpc_pb2_grpc.LeaseStub(srv.channel())
    assert ls.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=la),
                              timeout=TIMEOUT).TTL > 0
    # the waiter locks again: its key is still there (re-entrant), it waits
    # for the holder
    f = lock_future(srv, b"rs", lb)
    unlock(srv, b"rs/aa")
    assert f.result(timeout=TIMEOUT).key == b"rs/bb"


# --------------------------------------------------------------------------
# auth: inner ops run with the caller's token; errors are Unknown
# --------------------------------------------------------------------------



def test_auth(srv):
    root, u = auth_setup(srv, auth_pb2.Permission.READWRITE, b"l/", b"l0")
    lr = grant(srv, 60, 0x31, metadata=root)
    lu = grant(srv, 60, 0x32, metadata=u)
    # no permission on the name: Unknown with etcd's text
    with pytest.raises(grpc.RpcError) as e:
        lock(srv, b"other", lu, metadata=u)
    assert err(e.value) == ("UNKNOWN", "etcdserver: permission denied")
    with pytest.raises(grpc.RpcError) as e:
        lock(srv, b"l", lu)  # no token at all
    assert err(e.value) == ("UNKNOWN", "etcdserver: user name is empty")
    with pytest.raises(grpc.RpcError) as e:
        unlock(srv, b"other/1", metadata=u)
    assert err(e.value) == ("UNKNOWN", "etcdserver: permission denied")
    assert lock(srv, b"l", lr, metadata=root).key == b"l/31"
    # u waits, then gives up: the cleanup runs without a token and fails
    # under auth, so u's key stays (until its lease expires)
    with pytest.raises(grpc.RpcError) as e:
        lock(srv, b"l", lu, metadata=u, timeout=1.0)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    kvs = rpc_pb2_grpc.KVStub(srv.channel()).Range(
        pb.RangeRequest(key=b"l/32"), timeout=TIMEOUT, metadata=root).kvs
    assert len(kvs) == 1
    unlock(srv, b"l/32", metadata=u)
    unlock(srv, b"l/31", metadata=root)


# --------------------------------------------------------------------------
# etcdctl lock: client-side (concurrency package over KV/Lease/Watch)
# --------------------------------------------------------------------------

def _ctl_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "3"
    return env


def _ctl(s, *args):
    return [ETCDCTL_BIN, "--endpoints", s.endpoint, "--dial-timeout", "5s"] + list(args)


def test_etcdctl_lock_with_command(srv):
    r = subprocess.run(_ctl(srv, "lock", "cl", "--", "sh", "-c",
                            "echo key=$ETCD_LOCK_KEY rev=$ETCD_LOCK_REV"),
                       capture_output=True, text=True, env=_ctl_env(), timeout=30)
    assert r.returncode == 0, r.stderr
    line = r.stdout.strip()
    assert line.startswith("key=cl/") and " rev=" in line, line
    key = line.split()[0][4:].encode()
    rev = int(line.split()[1][4:])
    assert rev > 1
    # released afterwards
    assert get(srv, key) is None


def test_etcdctl_lock_interactive(srv):
    p = subprocess.Popen(_ctl(srv, "lock", "il"), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=_ctl_env())
    try:
        first = p.stdout.readline().strip()
        assert first.startswith("il/"), first
        assert get(srv, first.encode()) is not None
        p.send_signal(signal.SIGINT)
        p.wait(timeout=20)
        wait_for(lambda: get(srv, first.encode()) is None, "lock released")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)


def test_stop_with_waiters(srv):
    """A graceful stop ends blocked Lock calls (UNAVAILABLE) and the server
    exits cleanly (0; under the sanitizers: no leak)."""
    la, lb = grant(srv, 60, 0xD1), grant(srv, 60, 0xD2)
    lock(srv, b"st", la)
    f = lock_future(srv, b"st", lb)
    wait_for(lambda: get(srv, b"st/d2"), "waiter key")
    rc = srv.stop()
    with pytest.raises(grpc.RpcError) as e:
        f.result(timeout=TIMEOUT)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    if srv.binary != ETCD_BIN:
        assert rc == 0, srv.log_tail()
    srv.start()
    # the holder's key survives; the waiter's is deleted by its cleanup or
    # not, depending on a race in etcd (cairn deletes it)
    assert get(srv, b"st/d1") is not None


def test_own_lease_expiry_while_waiting_still_succeeds(srv):
    """etcd 3.4's quirk (3.5 answers "session expired" instead): a waiter
    whose own lease expired, and its key with it, still gets the lock once
    the older keys are gone."""
    la, lb = grant(srv, 60, 0xE1), grant(srv, 2, 0xE2)
    lock(srv, b"qk", la)
    f = lock_future(srv, b"qk", lb)
    wait_for(lambda: get(srv, b"qk/e2"), "waiter key")
    wait_for(lambda: get(srv, b"qk/e2") is None, "waiter's lease expired")
    assert not f.done()
    unlock(srv, b"qk/e1")
    r = f.result(timeout=TIMEOUT)
    assert r.key == b"qk/e2"
    assert get(srv, b"qk/e2") is None


def test_etcdctl_lock_session_lost(srv):
    """etcdctl lock keeps its session alive; when its lease is revoked the
    session ends and etcdctl says so and exits non-zero."""
    p = subprocess.Popen(_ctl(srv, "lock", "--ttl", "5", "sl"), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=_ctl_env())
    try:
        first = p.stdout.readline().strip()
        assert first.startswith("sl/"), first
        kv = get(srv, first.encode())
        rpc_pb2_grpc.LeaseStub(srv.channel()).LeaseRevoke(
            pb.LeaseRevokeRequest(ID=kv.lease), timeout=TIMEOUT)
        _, errout = p.communicate(timeout=20)
        assert p.returncode != 0
        assert "session expired" in errout, errout
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)
