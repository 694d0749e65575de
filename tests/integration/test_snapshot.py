"""Snapshots in etcd's format: cairn <-> real etcd 3.4, both ways.

(a) data in cairn -> `etcdctl snapshot save` against cairn -> `etcdctl
    snapshot status` -> `etcdctl snapshot restore` -> real etcd on that data
    dir serves the same thing as the cairn it came from;
(b) data in real etcd -> `etcdctl snapshot save` -> `cairn snapshot
    restore` -> cairn serves the same thing as that etcd;
(c) a snapshot taken while a writer is putting: the restored store equals
    the live one at the snapshot's revision R (from `snapshot status`);
(d) `cairn snapshot status` prints what `etcdctl snapshot status` prints
    for the same files, and restore's refusals read as etcdctl's;
plus a client that cancels a snapshot half-way.

"The same thing" (dump()): the current revision; full Ranges (keys,
values, create/mod revisions, versions, leases, count) at every revision
from the compacted one up, and the compaction error just below it; the
watch history from the compacted revision; the leases with their granted
TTLs and attached keys.  The data (load()) has overwrites, deletions and
re-creations, a compaction, leases with keys (one revoked, one whose key
moved to another lease, one without keys), values spanning bbolt overflow
pages and enough keys for branch pages.
"""

import os
import shutil
import subprocess
import tempfile
import threading

import grpc
import pytest

from cairn_it import (ETCD_BIN, ETCDCTL_BIN, Server, binary_under_test,
                      rpc_pb2 as pb, rpc_pb2_grpc)

RPC_TIMEOUT = 60.0
LEASE_TTL = 3000          # nothing expires during a test
MANY_KEYS = 1500          # ~1500 records in "key": several leaves + a branch
BIG_VALUE = 200 * 1024    # a value of 50 overflow pages


def ctl(*args, endpoint=None, ok=True, timeout=120):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "3"
    cmd = [ETCDCTL_BIN]
    if endpoint:
        cmd += ["--endpoints", endpoint, "--dial-timeout", "5s",
                "--command-timeout", "60s"]
    cmd += list(args)
    r = subprocess.run(cmd, capture_output=True, text=True, env=env,
                       timeout=timeout)
    if ok:
        assert r.returncode == 0, (cmd, r.returncode, r.stdout, r.stderr)
    return r


def cairn_cli(*args, ok=True):
    cmd = [binary_under_test(), "snapshot"] + list(args)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if ok:
        assert r.returncode == 0, (cmd, r.returncode, r.stdout, r.stderr)
    return r


def last_line(s):
    lines = [l for l in s.splitlines() if l.strip()]
    return lines[-1] if lines else ""


@pytest.fixture
def tmp():
    d = tempfile.mkdtemp(prefix="cairn-snap-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


# --------------------------------------------------------------------------
# data and comparison
# --------------------------------------------------------------------------

def put(s, k, v, lease=0):
    return s.kv.Put(pb.PutRequest(key=k, value=v, lease=lease),
                    timeout=RPC_TIMEOUT).header.revision


def grant(s, ttl=LEASE_TTL):
    return rpc_pb2_grpc.LeaseStub(s.channel()).LeaseGrant(
        pb.LeaseGrantRequest(TTL=ttl), timeout=RPC_TIMEOUT).ID


def load(s):
    """Writes the test data; returns the compacted revision."""
    for i in range(20):
        put(s, b"k%02d" % i, b"v%d" % i)
    for i in range(0, 20, 3):
        put(s, b"k%02d" % i, b"w%d" % i)                      # overwrite
    s.kv.DeleteRange(pb.DeleteRangeRequest(key=b"k05"), timeout=RPC_TIMEOUT)
    s.kv.DeleteRange(pb.DeleteRangeRequest(key=b"k1", range_end=b"k12"),
                     timeout=RPC_TIMEOUT)                     # k10, k11
    put(s, b"k05", b"again")                                  # re-created
    rev = put(s, b"k07", b"x")
    compact = rev - 5
    s.kv.Compact(pb.CompactionRequest(revision=compact, physical=True),
                 timeout=RPC_TIMEOUT)
    # After the compaction: history to be kept.
    l1, l2, l3, l4 = grant(s), grant(s), grant(s), grant(s, 1200)
    put(s, b"lease/a", b"1", l1)
    put(s, b"lease/b", b"2", l1)
    put(s, b"lease/c", b"3", l2)
    put(s, b"lease/c", b"3b", l3)                              # moved to l3
    put(s, b"lease/d", b"4", l2)
    rpc_pb2_grpc.LeaseStub(s.channel()).LeaseRevoke(
        pb.LeaseRevokeRequest(ID=l2), timeout=RPC_TIMEOUT)     # deletes d
    del l4  # a lease without keys
    put(s, b"big", b"B" * BIG_VALUE)
    put(s, b"big", b"C" * (BIG_VALUE + 1))
    for i in range(0, MANY_KEYS, 100):
        # Txns of 100 puts: one revision each, many records.
        ops = [pb.RequestOp(request_put=pb.PutRequest(
            key=b"many/%05d" % j, value=b"%d" % (j * 7)))
            for j in range(i, min(i + 100, MANY_KEYS))]
        s.kv.Txn(pb.TxnRequest(success=ops), timeout=RPC_TIMEOUT)
    s.kv.DeleteRange(pb.DeleteRangeRequest(key=b"many/00100",
                                           range_end=b"many/00200"),
                     timeout=RPC_TIMEOUT)
    put(s, b"k00", b"last")
    return compact


def kvs(resp):
    return [(kv.key, kv.value, kv.create_revision, kv.mod_revision,
             kv.version, kv.lease) for kv in resp.kvs]


def range_all(s, rev):
    try:
        r = s.kv.Range(pb.RangeRequest(key=b"\0", range_end=b"\0",
                                       revision=rev), timeout=RPC_TIMEOUT)
        return ("ok", r.count, kvs(r))
    except grpc.RpcError as e:
        return ("err", e.code(), e.details())


def watch_history(s, start, end):
    """Every event in [start, end], from a watch on everything."""
    stub = rpc_pb2_grpc.WatchStub(s.new_channel())
    done = threading.Event()

    def reqs():
        yield pb.WatchRequest(create_request=pb.WatchCreateRequest(
            key=b"\0", range_end=b"\0", start_revision=start, prev_kv=True))
        done.wait(RPC_TIMEOUT)

    events = []
    it = stub.Watch(reqs(), timeout=RPC_TIMEOUT)
    try:
        for resp in it:  # bounded: ends at `end` or by the RPC timeout
            assert not resp.canceled, resp
            for ev in resp.events:
                events.append((ev.type, kvs(pb.RangeResponse(kvs=[ev.kv])),
                               kvs(pb.RangeResponse(kvs=[ev.prev_kv]))
                               if ev.HasField("prev_kv") else None))
            if resp.events and resp.events[-1].kv.mod_revision >= end:
                break
    finally:
        done.set()
        it.cancel()
    return events


def leases(s):
    stub = rpc_pb2_grpc.LeaseStub(s.channel())
    out = {}
    for l in stub.LeaseLeases(pb.LeaseLeasesRequest(),
                              timeout=RPC_TIMEOUT).leases:
        t = stub.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=l.ID, keys=True),
                                 timeout=RPC_TIMEOUT)
        out[l.ID] = (t.grantedTTL, sorted(t.keys))
    return out


def dump(s, compact, upto=None):
    cur = s.kv.Range(pb.RangeRequest(key=b"\0", count_only=True),
                     timeout=RPC_TIMEOUT).header.revision
    upto = upto or cur
    d = {"rev": cur, "leases": leases(s)}
    for rev in range(compact - 1, upto + 1):
        d["range@%d" % rev] = range_all(s, rev)
    d["future"] = range_all(s, cur + 1)
    d["watch"] = watch_history(s, compact, upto)
    return d


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == b[k], k


def sanity(d, compact):
    """The dump is not trivially equal: history, errors and leases are
    there."""
    assert d["range@%d" % (compact - 1)][0] == "err"
    assert d["range@%d" % (compact - 1)][2] == \
        "etcdserver: mvcc: required revision has been compacted"
    assert d["range@%d" % compact][0] == "ok"
    assert d["future"][2] == \
        "etcdserver: mvcc: required revision is a future revision"
    assert len(d["leases"]) == 3
    assert sorted(len(v[1]) for v in d["leases"].values()) == [0, 1, 2]
    assert len(d["watch"]) > MANY_KEYS
    cur = d["range@%d" % d["rev"]]
    assert cur[1] == 20 - 2 + 3 + 1 + MANY_KEYS - 100, cur[1]


def save(s, path):
    ctl("snapshot", "save", path, endpoint=s.endpoint)
    assert os.path.getsize(path) % 512 == 32  # the sha256 trailer


def status_json(path, tool="etcdctl"):
    import json
    if tool == "etcdctl":
        r = ctl("snapshot", "status", path, "-w", "json")
    else:
        r = cairn_cli("status", path, "-w", "json")
    return json.loads(r.stdout)


# --------------------------------------------------------------------------
# (a) cairn -> etcd
# --------------------------------------------------------------------------

def test_cairn_snapshot_restored_by_etcd(server_factory, tmp):
    cairn = server_factory()
    compact = load(cairn)
    before = dump(cairn, compact)
    sanity(before, compact)
    path = os.path.join(tmp, "cairn.db")
    save(cairn, path)
    st = status_json(path)
    assert st["revision"] == before["rev"]
    # bbolt's own check (tx.Check) passed inside etcdctl's status.
    data = os.path.join(tmp, "etcd-data")
    etcd = server_factory(ETCD_BIN, start=False, data_dir=data)
    ctl("snapshot", "restore", path, "--data-dir", data, "--name", etcd.name,
        "--initial-cluster", "%s=http://127.0.0.1:1" % etcd.name,
        "--initial-advertise-peer-urls", "http://127.0.0.1:1")
    etcd.start()
    after = dump(etcd, compact)
    assert_same(before, after)
    # The restored etcd takes writes on top.
    assert put(etcd, b"k00", b"new") == before["rev"] + 1
    # And cairn's snapshot is stable: the same data gives the same bytes'
    # hash (nothing time- or address-dependent is written).
    path2 = os.path.join(tmp, "cairn2.db")
    save(cairn, path2)
    assert status_json(path2) == st


# --------------------------------------------------------------------------
# (b) etcd -> cairn
# --------------------------------------------------------------------------

def test_etcd_snapshot_restored_by_cairn(server_factory, tmp):
    etcd = server_factory(ETCD_BIN)
    compact = load(etcd)
    before = dump(etcd, compact)
    sanity(before, compact)
    path = os.path.join(tmp, "etcd.db")
    save(etcd, path)
    data = os.path.join(tmp, "cairn-data")
    r = cairn_cli("restore", path, "--data-dir", data)
    assert "restored" in r.stderr
    cairn = server_factory(data_dir=data)
    after = dump(cairn, compact)
    assert_same(before, after)
    assert put(cairn, b"k00", b"new") == before["rev"] + 1
    # A cairn snapshot of the restored store restores into etcd again with
    # the same content (round trip etcd -> cairn -> etcd).
    path2 = os.path.join(tmp, "again.db")
    save(cairn, path2)
    assert status_json(path2)["revision"] == before["rev"] + 1


# --------------------------------------------------------------------------
# (c) a snapshot under writes
# --------------------------------------------------------------------------

def test_snapshot_while_writing(server_factory, tmp):
    cairn = server_factory()
    compact = load(cairn)
    stop = threading.Event()
    after_snapshot = []
    errors = []

    def writer():
        ch = cairn.new_channel()
        kv = rpc_pb2_grpc.KVStub(ch)
        try:
            for i in range(200000):  # bounded
                kv.Put(pb.PutRequest(key=b"w/%03d" % (i % 500), value=b"%d" % i),
                       timeout=RPC_TIMEOUT)
                if stop.is_set():
                    after_snapshot.append(i)
                    if len(after_snapshot) >= 20:
                        return
        except Exception as e:  # reported below
            errors.append(e)
        finally:
            ch.close()

    t = threading.Thread(target=writer)
    t.start()
    try:
        # Let the writer get going (bounded wait on its progress).
        for _ in range(2000):
            r = cairn.kv.Range(pb.RangeRequest(key=b"w/", range_end=b"w0",
                                               count_only=True),
                               timeout=RPC_TIMEOUT)
            if r.count >= 10:
                break
        path = os.path.join(tmp, "live.db")
        save(cairn, path)
    finally:
        stop.set()
        t.join(timeout=RPC_TIMEOUT)
    assert not errors, errors
    assert len(after_snapshot) >= 20
    R = status_json(path)["revision"]
    live_rev = cairn.kv.Range(pb.RangeRequest(key=b"\0", count_only=True),
                              timeout=RPC_TIMEOUT).header.revision
    assert live_rev >= R + 20  # writes went on after the snapshot's point
    data = os.path.join(tmp, "restored")
    cairn_cli("restore", path, "--data-dir", data)
    restored = server_factory(data_dir=data)
    got = restored.kv.Range(pb.RangeRequest(key=b"\0", count_only=True),
                            timeout=RPC_TIMEOUT).header.revision
    assert got == R
    for rev in (R, R - 1, compact):
        assert range_all(restored, rev) == range_all(cairn, rev), rev


# --------------------------------------------------------------------------
# (d) status and restore's refusals, as etcdctl prints them
# --------------------------------------------------------------------------

def test_status_and_refusals_match_etcdctl(server_factory, tmp):
    etcd = server_factory(ETCD_BIN)
    cairn = server_factory()
    files = []
    for s, name in ((etcd, "etcd.db"), (cairn, "cairn.db")):
        load(s)
        files.append(os.path.join(tmp, name))
        save(s, files[-1])
    for f in files:
        for fmt in ("simple", "table", "json", "fields"):
            want = ctl("snapshot", "status", f, "-w", fmt).stdout
            got = cairn_cli("status", f, "-w", fmt).stdout
            assert got == want, (f, fmt)
    f = files[1]
    a = ctl("snapshot", "status", f, "-w", "yaml", ok=False)
    b = cairn_cli("status", f, "-w", "yaml", ok=False)
    assert (a.returncode, last_line(a.stderr)) == (b.returncode, last_line(b.stderr))
    # Missing file.
    missing = os.path.join(tmp, "nope.db")
    a = ctl("snapshot", "status", missing, ok=False)
    b = cairn_cli("status", missing, ok=False)
    assert (a.returncode, last_line(a.stderr)) == (b.returncode, last_line(b.stderr))
    # Existing data dir.
    d = os.path.join(tmp, "exists")
    os.mkdir(d)
    a = ctl("snapshot", "restore", f, "--data-dir", d, ok=False)
    b = cairn_cli("restore", f, "--data-dir", d, ok=False)
    assert last_line(a.stderr) == 'Error: data-dir "%s" exists' % d
    assert (a.returncode, last_line(a.stderr)) == (b.returncode, last_line(b.stderr))
    # A damaged db: the sha256 trailer no longer matches.
    bad = os.path.join(tmp, "bad.db")
    with open(f, "rb") as src:
        raw = bytearray(src.read())
    raw[5000] ^= 0xff
    with open(bad, "wb") as dst:
        dst.write(raw)
    a = ctl("snapshot", "restore", bad, "--data-dir", os.path.join(tmp, "x1"), ok=False)
    b = cairn_cli("restore", bad, "--data-dir", os.path.join(tmp, "x2"), ok=False)
    assert last_line(a.stderr).startswith("Error: expected sha256 [")
    assert (a.returncode, last_line(a.stderr)) == (b.returncode, last_line(b.stderr))
    assert not os.path.exists(os.path.join(tmp, "x2"))
    # No trailer: refused unless --skip-hash-check.
    nohash = os.path.join(tmp, "nohash.db")
    with open(nohash, "wb") as dst:
        dst.write(bytes(raw[:-32]))
    a = ctl("snapshot", "restore", nohash, "--data-dir", os.path.join(tmp, "y1"), ok=False)
    b = cairn_cli("restore", nohash, "--data-dir", os.path.join(tmp, "y2"), ok=False)
    assert last_line(b.stderr) == \
        "Error: snapshot missing hash but --skip-hash-check=false"
    assert (a.returncode, last_line(a.stderr)) == (b.returncode, last_line(b.stderr))
    # --skip-hash-check on a damaged page: an error, never a crash, and no
    # half-built store left behind.
    for at in range(4096 * 2 + 16, len(raw) - 32, 4096 * 7):
        broken = bytearray(raw[:-32])
        for j in range(64):
            broken[at + j] ^= 0x5a
        p = os.path.join(tmp, "broken.db")
        with open(p, "wb") as dst:
            dst.write(bytes(broken))
        out = os.path.join(tmp, "z")
        r = cairn_cli("restore", p, "--data-dir", out, "--skip-hash-check", ok=False)
        assert r.returncode in (0, 1), r.stderr
        if r.returncode == 1:
            assert not os.path.exists(out)
        shutil.rmtree(out, ignore_errors=True)


def test_snapshot_cancelled_by_client(server_factory, tmp):
    cairn = server_factory()
    load(cairn)
    for _ in range(3):
        ch = cairn.new_channel()
        it = rpc_pb2_grpc.MaintenanceStub(ch).Snapshot(pb.SnapshotRequest(),
                                                       timeout=RPC_TIMEOUT)
        first = next(it)
        assert len(first.blob) == 32 * 1024 and first.remaining_bytes > 0
        it.cancel()
        ch.close()
    # The server is fine and the next snapshot whole.
    path = os.path.join(tmp, "after.db")
    save(cairn, path)
    assert status_json(path)["revision"] == status_json(path, "cairn")["revision"]


def test_deep_trees_both_ways(server_factory, tmp):
    """40,000 keys: three-level B+trees, written by cairn and checked by
    bbolt itself (etcdctl's status runs tx.Check; etcd then serves it), and
    written by bbolt and read by cairn."""
    def fill(s):
        for i in range(0, 40000, 500):
            ops = [pb.RequestOp(request_put=pb.PutRequest(
                key=b"deep/%06d" % j, value=b"v" * (j % 60)))
                for j in range(i, i + 500)]
            s.kv.Txn(pb.TxnRequest(success=ops), timeout=RPC_TIMEOUT)
        return range_all(s, 0)

    cairn = server_factory(extra_args=["--max-txn-ops", "500"])
    etcd = server_factory(ETCD_BIN, extra_args=["--max-txn-ops", "500"])
    want = fill(cairn)
    assert want[:2] == ("ok", 40000)
    assert fill(etcd) == want
    for src, name in ((cairn, "c"), (etcd, "e")):
        path = os.path.join(tmp, name + ".db")
        save(src, path)
        st = status_json(path)
        assert st == status_json(path, "cairn")
        assert st["totalKey"] > 40000
        if src is cairn:
            data = os.path.join(tmp, "to-etcd")
            dst = server_factory(ETCD_BIN, start=False, data_dir=data)
            ctl("snapshot", "restore", path, "--data-dir", data,
                "--name", dst.name,
                "--initial-cluster", "%s=http://127.0.0.1:1" % dst.name,
                "--initial-advertise-peer-urls", "http://127.0.0.1:1")
        else:
            data = os.path.join(tmp, "to-cairn")
            cairn_cli("restore", path, "--data-dir", data)
            dst = server_factory(data_dir=data, start=False)
        dst.start()
        assert range_all(dst, 0) == want
        assert range_all(dst, 40) == range_all(src, 40)


def test_auth_data_is_restored(server_factory, tmp):
    etcd = server_factory(ETCD_BIN)
    ctl("user", "add", "alice", "--new-user-password", "pw", endpoint=etcd.endpoint)
    ctl("role", "add", "reader", endpoint=etcd.endpoint)
    put(etcd, b"k", b"v")
    path = os.path.join(tmp, "auth.db")
    save(etcd, path)
    data = os.path.join(tmp, "d")
    r = cairn_cli("restore", path, "--data-dir", data)
    assert "restored auth enabled=0 users-and-roles=2" in r.stderr, r.stderr
    cairn = server_factory(data_dir=data)
    assert range_all(cairn, 0) == range_all(etcd, 0)
    a = rpc_pb2_grpc.AuthStub(cairn.channel())
    assert list(a.UserList(pb.AuthUserListRequest(), timeout=30).users) == ["alice"]
    assert list(a.RoleList(pb.AuthRoleListRequest(), timeout=30).roles) == ["reader"]


# --------------------------------------------------------------------------
# alarms travel with the data, as etcd's alarm bucket does
# --------------------------------------------------------------------------

def _raise_nospace(s):
    m = rpc_pb2_grpc.MaintenanceStub(s.channel())
    mid = m.Status(pb.StatusRequest(), timeout=30).header.member_id
    m.Alarm(pb.AlarmRequest(action=pb.AlarmRequest.ACTIVATE, memberID=mid,
                            alarm=pb.AlarmType.Value("NOSPACE")), timeout=30)
    return mid


def _alarms(s):
    m = rpc_pb2_grpc.MaintenanceStub(s.channel())
    r = m.Alarm(pb.AlarmRequest(action=pb.AlarmRequest.GET), timeout=30)
    return sorted((a.memberID, a.alarm) for a in r.alarms)


def test_alarms_survive_snapshot_both_ways(server_factory, tmp):
    nospace = pb.AlarmType.Value("NOSPACE")
    # cairn -> etcd
    cairn = server_factory()
    put(cairn, b"a", b"1")
    mid = _raise_nospace(cairn)
    path = os.path.join(tmp, "cairn.db")
    save(cairn, path)
    data = os.path.join(tmp, "etcd-data")
    etcd = server_factory(ETCD_BIN, start=False, data_dir=data)
    ctl("snapshot", "restore", path, "--data-dir", data, "--name", etcd.name,
        "--initial-cluster", "%s=http://127.0.0.1:1" % etcd.name,
        "--initial-advertise-peer-urls", "http://127.0.0.1:1")
    etcd.start()
    assert _alarms(etcd) == [(mid, nospace)]
    # etcd -> cairn
    etcd2 = server_factory(ETCD_BIN)
    put(etcd2, b"b", b"2")
    mid2 = _raise_nospace(etcd2)
    path2 = os.path.join(tmp, "etcd.db")
    save(etcd2, path2)
    data2 = os.path.join(tmp, "cairn-data")
    cairn_cli("restore", path2, "--data-dir", data2)
    cairn2 = server_factory(data_dir=data2)
    assert _alarms(cairn2) == [(mid2, nospace)]
    with pytest.raises(grpc.RpcError) as ei:
        put(cairn2, b"c", b"3")
    assert ei.value.details() == "etcdserver: mvcc: database space exceeded"


def test_sigterm_during_snapshot_exits_cleanly(server_factory, tmp):
    """A snapshot stream stalled mid-way (its client stops reading) and
    lists in flight must not keep the server from a clean exit 0, nor touch
    the store after it closes (ASan would see it)."""
    cairn = server_factory()
    load(cairn)
    ch = cairn.new_channel()
    it = rpc_pb2_grpc.MaintenanceStub(ch).Snapshot(pb.SnapshotRequest(),
                                                   timeout=RPC_TIMEOUT)
    assert len(next(it).blob) > 0        # started, now not reading on
    kv = rpc_pb2_grpc.KVStub(cairn.new_channel())
    futs = [kv.Range.future(pb.RangeRequest(key=b"\0", range_end=b"\0"),
                            timeout=RPC_TIMEOUT) for _ in range(8)]
    assert cairn.stop() == 0
    for f in futs:
        try:
            f.result()
        except grpc.RpcError:
            pass
    ch.close()
