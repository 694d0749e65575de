"""Encryption at rest (--experimental-encryption-key-file, issue #7).

- values and lease records written with a key never reach the data dir or
  the log in plaintext (the same scan finds them in a plaintext server's
  files, so the scan itself works);
- every reader gets plaintext: Range, Txn, Watch from the past, RangeStream
  (via the Range helper), HashKV (equal to a plaintext store's), Snapshot
  (etcd's plaintext format: real etcd restores it and serves the values);
- restart keeps everything readable; a missing or wrong key, or a key file
  others can read, refuse to start with a message naming the key id;
- rotation (new first key, SIGHUP) under writes finishes and keeps
  everything readable; the old key can then be removed;
- a plaintext store started with a key gets encrypted by the background
  pass (and the old plaintext copies are scrubbed from the file).
No timing assertions: every wait is a bounded poll.
"""

import base64
import os
import re
import shutil
import signal
import struct
import subprocess
import tempfile
import threading
import time
import urllib.request

import grpc
from etcd3.etcdrpc import auth_pb2
import pytest

from cairn_it import (ETCD_BIN, ETCDCTL_BIN, pick_free_ports, rpc_pb2 as pb,
                      rpc_pb2_grpc)

RPC_TIMEOUT = 30.0
POLL_LIMIT = 600            # x 0.1 s: bounded waits
LEASE_TTL = 0xDEADBEEF      # a distinctive TTL (below etcd's maximum)
TTL_BYTES = struct.pack(">q", LEASE_TTL)


def marker(i):
    return b"Zq7-SECRET-%05d-xY" % i


@pytest.fixture
def tmp():
    d = tempfile.mkdtemp(prefix="cairn-enc-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def key_file(path, *names, mode=0o600):
    with open(path, "w") as f:
        for n in names:
            f.write("%s:%s\n" % (n, KEYS[n]))
    os.chmod(path, mode)
    return path


KEYS = {n: base64.b64encode(os.urandom(32)).decode() for n in ("k1", "k2")}
KEYS["k1-wrong"] = base64.b64encode(os.urandom(32)).decode()


def scan(server, needles):
    """Which of @needles occur in any file of the data dir or the log."""
    found = set()
    roots = [server.data_dir]
    files = [server.log_path]
    for root in roots:
        for d, _, fs in os.walk(root):
            files += [os.path.join(d, f) for f in fs]
    for path in files:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            continue
        for n in needles:
            if n in data:
                found.add(n)
    return found


def put(s, k, v, lease=0):
    return s.kv.Put(pb.PutRequest(key=k, value=v, lease=lease),
                    timeout=RPC_TIMEOUT).header.revision


def get(s, k, rev=0):
    r = s.kv.Range(pb.RangeRequest(key=k, revision=rev), timeout=RPC_TIMEOUT)
    return r.kvs[0].value if r.kvs else None


def all_kvs(s, prefix=b"", rev=0):
    end = prefix[:-1] + bytes([prefix[-1] + 1]) if prefix else b"\0"
    r = s.kv.Range(pb.RangeRequest(key=prefix or b"\0", range_end=end,
                                   revision=rev), timeout=RPC_TIMEOUT)
    return [(kv.key, kv.value, kv.mod_revision, kv.lease) for kv in r.kvs]


def lease_stub(s):
    return rpc_pb2_grpc.LeaseStub(s.channel())


def load(s, n=60):
    """Values (two revisions each for some), a deletion, a lease with a
    key; returns the values that must never appear in plaintext."""
    needles = []
    for i in range(n):
        put(s, b"/enc/%03d" % i, marker(i))
        needles.append(marker(i))
    for i in range(0, n, 7):
        put(s, b"/enc/%03d" % i, marker(1000 + i))
        needles.append(marker(1000 + i))
    s.kv.DeleteRange(pb.DeleteRangeRequest(key=b"/enc/%03d" % 1),
                     timeout=RPC_TIMEOUT)
    # A chosen ID: the store's contents (and HashKV) compare across servers.
    lid = lease_stub(s).LeaseGrant(pb.LeaseGrantRequest(TTL=LEASE_TTL,
                                                        ID=0x5EA1ED),
                                   timeout=RPC_TIMEOUT).ID
    put(s, b"/enc/leased", marker(9999), lease=lid)
    needles.append(marker(9999))
    # An auth record: a role's permission holds a key range (and a user
    # record its password hash); they are sealed like values.
    auth = rpc_pb2_grpc.AuthStub(s.channel())
    auth.RoleAdd(pb.AuthRoleAddRequest(name="reader"), timeout=RPC_TIMEOUT)
    auth.RoleGrantPermission(pb.AuthRoleGrantPermissionRequest(
        name="reader", perm=auth_pb2.Permission(permType=0, key=marker(7777))),
        timeout=RPC_TIMEOUT)
    auth.UserAdd(pb.AuthUserAddRequest(name="alice", password="pw"),
                 timeout=RPC_TIMEOUT)
    needles.append(marker(7777))
    return needles, lid


def metric(s, name):
    body = urllib.request.urlopen(s.url + "/metrics", timeout=10).read()
    m = re.search(rb"^%s (\S+)$" % name.encode(), body, re.M)
    return float(m.group(1)) if m else None


def wait_for(cond, what):
    for _ in range(POLL_LIMIT):
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError("timed out waiting for " + what)


def log_has(s, text):
    with open(s.log_path, "rb") as f:
        return text.encode() in f.read()


def wait_rotation_done(s, key_id, starts_before=0):
    """The pass's end: its log line for @key_id and nothing pending."""
    pat = ('"msg":"mvcc: encryption key rotation done: every record is '
           'encrypted with the active key; older keys may be removed from the '
           'key file","key-id":"%s"' % key_id)

    def done():
        with open(s.log_path, "rb") as f:
            return f.read().count(pat.encode()) > starts_before
    wait_for(done, "rotation to %s" % key_id)
    wait_for(lambda: metric(s, "cairn_encryption_records_pending") == 0,
             "no records pending")


def history(s, start):
    """Watch events from @start to now (a catch-up from the store)."""
    now = s.kv.Range(pb.RangeRequest(key=b"\0", count_only=True),
                     timeout=RPC_TIMEOUT).header.revision
    w = rpc_pb2_grpc.WatchStub(s.new_channel())
    req = pb.WatchRequest(create_request=pb.WatchCreateRequest(
        key=b"\0", range_end=b"\0", start_revision=start, prev_kv=True))
    evs = []
    stream = w.Watch(iter([req]), timeout=RPC_TIMEOUT)
    for resp in stream:
        for e in resp.events:
            evs.append((e.type, e.kv.key, e.kv.value, e.kv.mod_revision,
                        e.prev_kv.value))
        if evs and evs[-1][3] >= now:
            break
    stream.cancel()
    return evs


def live_records(s, db):
    """The live values of LMDB database @db as mdb_dump prints them (hex);
    the server must be stopped."""
    r = subprocess.run(["mdb_dump", "-s", db, s.data_dir],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def refuses(server_factory, data_dir, args):
    """Starts a server expected to exit at once; returns (code, output)."""
    s = server_factory(start=False, data_dir=data_dir, extra_args=args)
    s.client_port, s.peer_port = pick_free_ports(2)
    r = subprocess.run(s.cmdline(), capture_output=True, text=True, timeout=60,
                       cwd=s._own_root)
    return r.returncode, r.stdout + r.stderr


# --------------------------------------------------------------------------


def test_no_plaintext_at_rest_and_every_reader(server_factory, tmp):
    keys = key_file(os.path.join(tmp, "keys"), "k1")
    plain = server_factory()
    enc = server_factory(extra_args=["--experimental-encryption-key-file",
                                     keys])
    needles = {}
    for s in (plain, enc):
        needles[s], _ = load(s)
        s.kv.Compact(pb.CompactionRequest(revision=10, physical=True),
                        timeout=RPC_TIMEOUT)
    assert needles[plain] == needles[enc]
    wanted = set(needles[enc]) | {TTL_BYTES}
    # The scan works: the plaintext server's files hold every value still
    # stored (compaction may drop some) and the lease's TTL.
    plain_found = scan(plain, wanted)
    assert TTL_BYTES in plain_found and marker(9999) in plain_found
    assert len(plain_found) > 50
    # Not one of them in the encrypted server's files or log.
    assert scan(enc, wanted) == set()
    # Readers see plaintext, the same as the plaintext server's.
    assert all_kvs(enc) == all_kvs(plain)
    assert all_kvs(enc, rev=12) == all_kvs(plain, rev=12)
    # RangeStream (etcd 3.7) decrypts chunk by chunk.
    from test_range_stream import stream
    got = [(kv.key, kv.value, kv.mod_revision, kv.lease)
           for c in stream(enc, pb.RangeRequest(key=b"\0", range_end=b"\0"))
           for kv in c.kvs]
    assert got == all_kvs(plain)
    assert history(enc, 11) == history(plain, 11)
    txn = pb.TxnRequest(
        compare=[pb.Compare(key=b"/enc/002", target=pb.Compare.VALUE,
                            result=pb.Compare.EQUAL, value=marker(2))],
        success=[pb.RequestOp(request_range=pb.RangeRequest(key=b"/enc/003"))])
    for s in (plain, enc):
        r = s.kv.Txn(txn, timeout=RPC_TIMEOUT)
        assert r.succeeded and r.responses[0].response_range.kvs[0].value == \
            marker(3)
    ttl = lambda s, lid: lease_stub(s).LeaseTimeToLive(  # noqa: E731
        pb.LeaseTimeToLiveRequest(ID=lid, keys=True), timeout=RPC_TIMEOUT)
    # HashKV hashes the plaintext: encryption leaves etcd's number.
    h = [s.maint.HashKV(pb.HashKVRequest(revision=0), timeout=RPC_TIMEOUT)
         for s in (plain, enc)]
    assert h[0].hash == h[1].hash and h[0].compact_revision == 10
    # Restart: everything readable, lease kept with its TTL.
    before = all_kvs(enc)
    enc.restart()
    assert all_kvs(enc) == before
    lid = [kv[3] for kv in before if kv[0] == b"/enc/leased"][0]
    t = ttl(enc, lid)
    assert t.grantedTTL == LEASE_TTL and t.keys == [b"/enc/leased"]
    assert scan(enc, wanted) == set()


def test_snapshot_plaintext_restores_in_etcd(server_factory, tmp):
    keys = key_file(os.path.join(tmp, "keys"), "k1")
    enc = server_factory(extra_args=["--experimental-encryption-key-file",
                                     keys])
    load(enc, n=30)
    before = all_kvs(enc)
    path = os.path.join(tmp, "snap.db")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "3"
    r = subprocess.run([ETCDCTL_BIN, "--endpoints", enc.endpoint,
                        "--dial-timeout", "5s", "--command-timeout", "60s",
                        "snapshot", "save", path],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    # etcd's format is plaintext (it is for etcd): the values are in it.
    with open(path, "rb") as f:
        assert marker(5) in f.read()
    data = os.path.join(tmp, "etcd-data")
    etcd = server_factory(ETCD_BIN, start=False, data_dir=data)
    r = subprocess.run([ETCDCTL_BIN, "snapshot", "restore", path,
                        "--data-dir", data, "--name", etcd.name,
                        "--initial-cluster",
                        "%s=http://127.0.0.1:1" % etcd.name,
                        "--initial-advertise-peer-urls", "http://127.0.0.1:1"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    etcd.start()
    assert all_kvs(etcd) == before


def test_missing_wrong_and_readable_keys_refused(server_factory, tmp):
    keys = key_file(os.path.join(tmp, "keys"), "k1")
    enc = server_factory(extra_args=["--experimental-encryption-key-file",
                                     keys])
    load(enc, n=5)
    enc.stop()
    data = enc.data_dir
    # No key file at all.
    rc, out = refuses(server_factory, data, [])
    assert rc != 0
    assert 'the store is encrypted at rest (key id \\"k1\\")' in out
    # A file without the store's key.
    other = key_file(os.path.join(tmp, "other"), "k2")
    rc, out = refuses(server_factory, data,
                      ["--experimental-encryption-key-file", other])
    assert rc != 0 and 'key id \\"k1\\", which the encryption key file does ' \
        'not hold' in out
    # The right name, the wrong bytes.
    wrong = os.path.join(tmp, "wrong")
    with open(wrong, "w") as f:
        f.write("k1:%s\n" % KEYS["k1-wrong"])
    os.chmod(wrong, 0o600)
    rc, out = refuses(server_factory, data,
                      ["--experimental-encryption-key-file", wrong])
    assert rc != 0 and 'key id \\"k1\\" in the encryption key file is not ' \
        'the key the store was encrypted with (wrong key)' in out
    # A key file others can read.
    loose = key_file(os.path.join(tmp, "loose"), "k1", mode=0o644)
    rc, out = refuses(server_factory, data,
                      ["--experimental-encryption-key-file", loose])
    assert rc != 0 and "accessible to other users" in out
    # No key material in any of these messages; the right key still works.
    for k in KEYS.values():
        assert k not in out
    enc.start()
    assert get(enc, b"/enc/002") == marker(2)


def test_rotation_under_writes_then_old_key_removed(server_factory, tmp):
    keys = os.path.join(tmp, "keys")
    key_file(keys, "k1")
    s = server_factory(extra_args=["--experimental-encryption-key-file", keys])
    # Enough records for several steps of 1000.
    for b in range(30):
        ops = [pb.RequestOp(request_put=pb.PutRequest(
            key=b"/bulk/%02d/%03d" % (b, i), value=marker(b * 100 + i)))
            for i in range(100)]
        s.kv.Txn(pb.TxnRequest(success=ops), timeout=RPC_TIMEOUT)
    for i in range(2500):
        put(s, b"/hist/%02d" % (i % 40), marker(20000 + i))
    lid = lease_stub(s).LeaseGrant(pb.LeaseGrantRequest(TTL=LEASE_TTL),
                                   timeout=RPC_TIMEOUT).ID
    stop = threading.Event()
    written = []
    errors = []

    def writer():
        ch = s.new_channel()
        kv = rpc_pb2_grpc.KVStub(ch)
        i = 0
        while not stop.is_set() and i < 5000:
            try:
                kv.Put(pb.PutRequest(key=b"/w/%05d" % i, value=marker(i)),
                       timeout=RPC_TIMEOUT)
                written.append(i)
            except grpc.RpcError as e:
                errors.append(e)
                break
            i += 1
        ch.close()

    th = threading.Thread(target=writer)
    th.start()
    wait_for(lambda: len(written) > 50, "writes before the rotation")
    rotations = metric(s, "cairn_encryption_key_rotations_total")
    key_file(keys, "k2", "k1")
    os.kill(s.pid, signal.SIGHUP)
    wait_rotation_done(s, "k2")
    wait_for(lambda: len(written) > 200 or not th.is_alive(),
             "writes during the rotation")
    stop.set()
    th.join(timeout=120)
    assert not th.is_alive() and not errors, (errors, s.log_tail())
    assert metric(s, "cairn_encryption_key_rotations_total") == rotations + 1
    assert log_has(s, '"msg":"apply: encryption key file reloaded",'
                      '"key-id":"k2"')
    snapshot = all_kvs(s)
    assert len([kv for kv in snapshot if kv[0].startswith(b"/w/")]) == \
        len(written)
    assert get(s, b"/bulk/07/042") == marker(742)
    assert get(s, b"/hist/05", rev=100) is not None
    # k1 is no longer needed: it can go.
    s.stop()
    key_file(keys, "k2")
    s.start()
    assert all_kvs(s) == snapshot
    t = lease_stub(s).LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=lid),
                                      timeout=RPC_TIMEOUT)
    assert t.grantedTTL == LEASE_TTL
    # And k1 alone is refused now: nothing is sealed with it any more.
    s.stop()
    only_k1 = key_file(os.path.join(tmp, "only-k1"), "k1")
    rc, out = refuses(server_factory, s.data_dir,
                      ["--experimental-encryption-key-file", only_k1])
    assert rc != 0 and '\\"k2\\"' in out


def test_removing_a_key_still_needed_is_refused_live(server_factory, tmp):
    keys = os.path.join(tmp, "keys")
    key_file(keys, "k1")
    s = server_factory(extra_args=["--experimental-encryption-key-file", keys])
    put(s, b"a", marker(1))
    # A file dropping the store's only key: rejected, the old keys stay.
    key_file(keys, "k2")
    os.kill(s.pid, signal.SIGHUP)
    wait_for(lambda: log_has(s, "encryption key file rejected"),
             "the rejection")
    put(s, b"b", marker(2))
    assert get(s, b"a") == marker(1) and get(s, b"b") == marker(2)
    key_file(keys, "k1")
    s.restart()
    assert get(s, b"b") == marker(2)


def test_plaintext_store_encrypted_by_background_pass(server_factory, tmp):
    s = server_factory()
    needles, lid = load(s, n=400)
    for i in range(1500):
        put(s, b"/more/%04d" % i, marker(30000 + i))
    needles = set(needles)
    s.stop()
    assert needles <= scan(s, needles)  # the scan sees plaintext
    keys = key_file(os.path.join(tmp, "keys"), "k1")
    s.extra_args = ["--experimental-encryption-key-file", keys]
    s.start()
    # Readable at once (old records plain, new ones sealed).
    assert get(s, b"/enc/005") == marker(5)
    put(s, b"/new", marker(77777))
    wait_rotation_done(s, "k1")
    wait_for(lambda: log_has(s, "old copies of re-encrypted records "
                                "scrubbed"), "the scrub")
    assert get(s, b"/enc/007") == marker(1007)
    assert get(s, b"/more/1234") == marker(31234)
    s.stop()
    # Every live record is sealed (LMDB's own dump of the databases). Old
    # copies may linger in unused page space (README: Encryption at rest),
    # so the whole-file scan is not asserted here.
    for db in ("kv", "lease"):
        dump = live_records(s, db)
        assert dump.count("\n") > 10
        for n in needles | {marker(77777), TTL_BYTES}:
            assert n.hex() not in dump, (db, n)
    s.start()
    assert get(s, b"/enc/leased") == marker(9999)
    t = lease_stub(s).LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=lid),
                                      timeout=RPC_TIMEOUT)
    assert t.grantedTTL == LEASE_TTL


def test_snapshot_restored_encrypted(server_factory, tmp):
    """`cairn snapshot restore --experimental-encryption-key-file` writes the
    new store sealed from the first byte: none of the snapshot's values,
    lease TTLs or role permissions reach the new data dir in plaintext,
    the store serves them with the key and refuses to start without it."""
    from test_snapshot import cairn_cli, save
    plain = server_factory()
    needles, _ = load(plain)
    wanted = set(needles) | {TTL_BYTES}
    snap = os.path.join(tmp, "plain.db")
    save(plain, snap)
    keys = key_file(os.path.join(tmp, "keys"), "k1")
    data = os.path.join(tmp, "restored")
    r = cairn_cli("restore", snap, "--data-dir", data,
                  "--experimental-encryption-key-file", keys)
    assert "encrypted at rest" in r.stderr
    enc = server_factory(start=False, data_dir=data, extra_args=[
        "--experimental-encryption-key-file", keys])
    # nothing in plaintext before the server ever ran on it
    assert scan(enc, wanted) == set()
    enc.start()
    assert all_kvs(enc) == all_kvs(plain)
    assert scan(enc, wanted) == set()
    enc.stop()
    code, out = refuses(server_factory, data, [])
    assert code != 0 and "k1" in out, out
    # a bad key file: the restore fails and leaves no store behind
    data2 = os.path.join(tmp, "restored2")
    bad = key_file(os.path.join(tmp, "bad"), "k1", mode=0o644)
    r = cairn_cli("restore", snap, "--data-dir", data2,
                  "--experimental-encryption-key-file", bad, ok=False)
    assert r.returncode != 0 and not os.path.exists(data2)
