"""Auth: etcd's users, roles, tokens and permission checks, differential
against real etcd 3.4.

* The permission matrix: the same users, roles, keys and leases are set up
  on etcd and on the server under test (same flags: --auth-token-ttl 3),
  auth is enabled, then every RPC is sent as each identity -- no token, a
  malformed token, an expired token, a read-only role, a write-only role, a
  read-write prefix role and root -- and each outcome (gRPC code and
  message, or the response with member ids, tokens and sizes normalised)
  must be the same.  Where cairn is deliberately stricter than 3.4 (nested
  txns, prev_kv/lease inside txns, the whole range of a from-key watch:
  etcd's later security fixes) the case is tested on cairn alone.
* etcdctl flows, restart, JWT tokens (RS256, ES256, PS256 with keys made
  by the openssl CLI), the brute-force limiter, and snapshots carrying
  users from etcd into cairn (`cairn snapshot restore`) and back.
"""

import os
import subprocess
import tempfile
import time

import grpc
import pytest

from cairn_it import ETCD_BIN, ETCDCTL_BIN, binary_under_test, is_etcd, rpc_pb2 as pb, rpc_pb2_grpc
from etcd3.etcdrpc import auth_pb2

TIMEOUT = 20.0
TTL_ARGS = ["--auth-token-ttl", "3"]

RO, WO, PRE = "ro", "wo", "pre"
PW = {"root": "rootpw", RO: "ropw", WO: "wopw", PRE: "prepw", "tmp": "tmppw"}
LEASE_KEYS, LEASE_EMPTY, LEASE_RO = 7001, 7002, 7003


def md(token):
    return None if token is None else (("token", token),)


def stubs(s):
    ch = s.channel()
    return {
        "kv": rpc_pb2_grpc.KVStub(ch),
        "lease": rpc_pb2_grpc.LeaseStub(ch),
        "watch": rpc_pb2_grpc.WatchStub(ch),
        "maint": rpc_pb2_grpc.MaintenanceStub(ch),
        "cluster": rpc_pb2_grpc.ClusterStub(ch),
        "auth": rpc_pb2_grpc.AuthStub(ch),
    }


def normalise(r):
    if hasattr(r, "header"):
        r.header.cluster_id = 0
        r.header.member_id = 0
        r.header.raft_term = 0
    if isinstance(r, pb.AuthenticateResponse) and r.token:
        r.token = "<token>"
    return r


def call(fn, req, token, shape=True):
    """('ok', bytes) or ('err', code, message); shape=False keeps only
    whether it succeeded (responses whose contents differ by design)."""
    try:
        r = fn(req, timeout=TIMEOUT, metadata=md(token))
    except grpc.RpcError as e:
        return ("err", e.code(), e.details())
    if not shape:
        return ("ok",)
    return ("ok", type(r).__name__, normalise(r).SerializeToString(deterministic=True))


def first_stream(fn, req, token, shape=True):
    """The first message of a server stream (or of a bidi stream fed @req)."""
    it = fn(req, timeout=TIMEOUT, metadata=md(token))
    try:
        r = next(it)
    except grpc.RpcError as e:
        return ("err", e.code(), e.details())
    finally:
        it.cancel()
    if not shape:
        return ("ok",)
    return ("ok", normalise(r).SerializeToString(deterministic=True))


def authenticate(s, name, pw=None):
    r = stubs(s)["auth"].Authenticate(
        pb.AuthenticateRequest(name=name, password=PW[name] if pw is None else pw),
        timeout=TIMEOUT)
    return r.token


def perm(kind, key, end=b""):
    return auth_pb2.Permission(permType=kind, key=key, range_end=end)


def user_add_nopw(s, name):
    """UserAdd with options.no_password (python3-etcd3's protos predate it):
    name = 1, options = 3 {no_password = 1}."""
    body = b"\x0a" + bytes([len(name)]) + name.encode() + b"\x1a\x02\x08\x01"
    fn = s.channel().unary_unary("/etcdserverpb.Auth/UserAdd",
                                 request_serializer=lambda x: x,
                                 response_deserializer=lambda x: x)
    return fn(body, timeout=TIMEOUT)


def setup_auth(s):
    """Users ro (read /ro/), wo (write /wo/), pre (readwrite /p/), tmp and
    root; keys in each space; a lease holding /p/lease, an empty one, and
    one holding /ro/lease; then auth on."""
    st = stubs(s)
    a, kv, le = st["auth"], st["kv"], st["lease"]
    for u in ("root", RO, WO, PRE, "tmp"):
        a.UserAdd(pb.AuthUserAddRequest(name=u, password=PW[u]), timeout=TIMEOUT)
    user_add_nopw(s, "nopw")
    for r in (RO, WO, PRE, "spare"):
        a.RoleAdd(pb.AuthRoleAddRequest(name=r), timeout=TIMEOUT)
    a.RoleGrantPermission(pb.AuthRoleGrantPermissionRequest(
        name=RO, perm=perm(auth_pb2.Permission.READ, b"/ro/", b"/ro0")), timeout=TIMEOUT)
    a.RoleGrantPermission(pb.AuthRoleGrantPermissionRequest(
        name=WO, perm=perm(auth_pb2.Permission.WRITE, b"/wo/", b"/wo0")), timeout=TIMEOUT)
    a.RoleGrantPermission(pb.AuthRoleGrantPermissionRequest(
        name=PRE, perm=perm(auth_pb2.Permission.READWRITE, b"/p/", b"/p0")), timeout=TIMEOUT)
    a.RoleGrantPermission(pb.AuthRoleGrantPermissionRequest(
        name=PRE, perm=perm(auth_pb2.Permission.READ, b"/single")), timeout=TIMEOUT)
    for u in (RO, WO, PRE):
        a.UserGrantRole(pb.AuthUserGrantRoleRequest(user=u, role=u), timeout=TIMEOUT)
    a.UserGrantRole(pb.AuthUserGrantRoleRequest(user="root", role="root"), timeout=TIMEOUT)
    for k in (b"/ro/a", b"/wo/a", b"/p/a", b"/p/b", b"/other", b"/single"):
        kv.Put(pb.PutRequest(key=k, value=b"v"), timeout=TIMEOUT)
    for lid in (LEASE_KEYS, LEASE_EMPTY, LEASE_RO):
        le.LeaseGrant(pb.LeaseGrantRequest(ID=lid, TTL=600), timeout=TIMEOUT)
    kv.Put(pb.PutRequest(key=b"/p/lease", value=b"v", lease=LEASE_KEYS), timeout=TIMEOUT)
    kv.Put(pb.PutRequest(key=b"/ro/lease", value=b"v", lease=LEASE_RO), timeout=TIMEOUT)
    a.AuthEnable(pb.AuthEnableRequest(), timeout=TIMEOUT)


def rpcs(st, who):
    """(name, thunk(token)) for every RPC; names unique per identity where
    the request creates something."""
    kv, le, w, m, cl, a = (st["kv"], st["lease"], st["watch"], st["maint"],
                           st["cluster"], st["auth"])
    R = pb.RangeRequest
    cmp_ro = pb.Compare(key=b"/ro/a", target=pb.Compare.VERSION, result=pb.Compare.GREATER, version=0)
    put_wo = pb.RequestOp(request_put=pb.PutRequest(key=b"/wo/t", value=b"x"))
    rng_ro = pb.RequestOp(request_range=R(key=b"/ro/a"))
    del_p = pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=b"/p/d", prev_kv=True))
    wc = lambda key, end=b"": iter([pb.WatchRequest(create_request=pb.WatchCreateRequest(key=key, range_end=end))])
    u = "u-" + who
    return [
        ("range key", lambda t: call(kv.Range, R(key=b"/ro/a"), t)),
        ("range prefix ro", lambda t: call(kv.Range, R(key=b"/ro/", range_end=b"/ro0"), t)),
        ("range prefix p", lambda t: call(kv.Range, R(key=b"/p/", range_end=b"/p0"), t)),
        ("range inside p", lambda t: call(kv.Range, R(key=b"/p/a", range_end=b"/p/c"), t)),
        ("range over p", lambda t: call(kv.Range, R(key=b"/p/", range_end=b"/q"), t)),
        ("range all", lambda t: call(kv.Range, R(key=b"\0", range_end=b"\0"), t)),
        ("range single", lambda t: call(kv.Range, R(key=b"/single"), t)),
        ("range single+", lambda t: call(kv.Range, R(key=b"/single", range_end=b"/singlf"), t)),
        ("range count", lambda t: call(kv.Range, R(key=b"/ro/", range_end=b"/ro0", count_only=True), t)),
        ("put wo", lambda t: call(kv.Put, pb.PutRequest(key=b"/wo/x", value=b"1"), t)),
        ("put p", lambda t: call(kv.Put, pb.PutRequest(key=b"/p/x", value=b"1"), t)),
        ("put ro", lambda t: call(kv.Put, pb.PutRequest(key=b"/ro/x", value=b"1"), t)),
        ("put p prev", lambda t: call(kv.Put, pb.PutRequest(key=b"/p/y", value=b"1", prev_kv=True), t)),
        ("put wo prev", lambda t: call(kv.Put, pb.PutRequest(key=b"/wo/y", value=b"1", prev_kv=True), t)),
        ("put p lease", lambda t: call(kv.Put, pb.PutRequest(key=b"/p/l2", value=b"1", lease=LEASE_KEYS), t)),
        ("put p lease ro", lambda t: call(kv.Put, pb.PutRequest(key=b"/p/l3", value=b"1", lease=LEASE_RO), t)),
        ("delete wo", lambda t: call(kv.DeleteRange, pb.DeleteRangeRequest(key=b"/wo/z"), t)),
        ("delete p prev", lambda t: call(kv.DeleteRange, pb.DeleteRangeRequest(key=b"/p/x", prev_kv=True), t)),
        ("delete wo prev", lambda t: call(kv.DeleteRange, pb.DeleteRangeRequest(key=b"/wo/x", prev_kv=True), t)),
        ("delete all", lambda t: call(kv.DeleteRange, pb.DeleteRangeRequest(key=b"/zz/", range_end=b"/zz0"), t)),
        ("txn cmp ro put wo", lambda t: call(kv.Txn, pb.TxnRequest(compare=[cmp_ro], success=[put_wo]), t)),
        ("txn read ro", lambda t: call(kv.Txn, pb.TxnRequest(success=[rng_ro]), t)),
        ("txn failure branch", lambda t: call(kv.Txn, pb.TxnRequest(success=[rng_ro], failure=[put_wo]), t)),
        ("txn delete p prev", lambda t: call(kv.Txn, pb.TxnRequest(success=[del_p]), t)),
        ("compact", lambda t: call(kv.Compact, pb.CompactionRequest(revision=2), t)),
        ("lease grant", lambda t: call(le.LeaseGrant, pb.LeaseGrantRequest(ID=8000 + len(who), TTL=600), t)),
        ("lease ttl", lambda t: call(le.LeaseTimeToLive, pb.LeaseTimeToLiveRequest(ID=LEASE_KEYS, keys=True), t, shape=False)),
        ("lease leases", lambda t: call(le.LeaseLeases, pb.LeaseLeasesRequest(), t, shape=False)),
        ("lease revoke ro keys", lambda t: call(le.LeaseRevoke, pb.LeaseRevokeRequest(ID=LEASE_RO), t)),
        ("lease revoke p keys", lambda t: call(le.LeaseRevoke, pb.LeaseRevokeRequest(ID=LEASE_KEYS), t)),
        ("lease revoke empty", lambda t: call(le.LeaseRevoke, pb.LeaseRevokeRequest(ID=LEASE_EMPTY), t)),
        ("watch ro", lambda t: first_stream(w.Watch, wc(b"/ro/", b"/ro0"), t)),
        ("watch p key", lambda t: first_stream(w.Watch, wc(b"/p/a"), t)),
        ("watch all", lambda t: first_stream(w.Watch, wc(b"\0", b"\0"), t)),
        ("status", lambda t: call(m.Status, pb.StatusRequest(), t, shape=False)),
        # etcd 3.4 answers Alarm GET with an empty header (cairn: the revision)
        ("alarm get", lambda t: call(m.Alarm, pb.AlarmRequest(action=pb.AlarmRequest.GET), t, shape=False)),
        ("hash", lambda t: call(m.Hash, pb.HashRequest(), t, shape=False)),
        ("hashkv", lambda t: call(m.HashKV, pb.HashKVRequest(), t, shape=False)),
        ("defragment", lambda t: call(m.Defragment, pb.DefragmentRequest(), t, shape=False)),
        ("snapshot", lambda t: first_stream(m.Snapshot, pb.SnapshotRequest(), t, shape=False)),
        ("member list", lambda t: call(cl.MemberList, pb.MemberListRequest(), t, shape=False)),
        ("user list", lambda t: call(a.UserList, pb.AuthUserListRequest(), t)),
        ("role list", lambda t: call(a.RoleList, pb.AuthRoleListRequest(), t)),
        ("user get self", lambda t: call(a.UserGet, pb.AuthUserGetRequest(name=who), t)),
        ("user get ro", lambda t: call(a.UserGet, pb.AuthUserGetRequest(name=RO), t)),
        ("user get missing", lambda t: call(a.UserGet, pb.AuthUserGetRequest(name="nobody"), t)),
        ("role get own", lambda t: call(a.RoleGet, pb.AuthRoleGetRequest(role=who), t)),
        ("role get pre", lambda t: call(a.RoleGet, pb.AuthRoleGetRequest(role=PRE), t)),
        ("role get missing", lambda t: call(a.RoleGet, pb.AuthRoleGetRequest(role="nope"), t)),
        ("user add", lambda t: call(a.UserAdd, pb.AuthUserAddRequest(name=u, password="x"), t)),
        ("user add empty", lambda t: call(a.UserAdd, pb.AuthUserAddRequest(name="", password="x"), t)),
        ("user add dup", lambda t: call(a.UserAdd, pb.AuthUserAddRequest(name=RO, password="x"), t)),
        ("role add", lambda t: call(a.RoleAdd, pb.AuthRoleAddRequest(name="r-" + who), t)),
        ("role add empty", lambda t: call(a.RoleAdd, pb.AuthRoleAddRequest(name=""), t)),
        ("grant role", lambda t: call(a.UserGrantRole, pb.AuthUserGrantRoleRequest(user=u, role="spare"), t)),
        ("grant role again", lambda t: call(a.UserGrantRole, pb.AuthUserGrantRoleRequest(user=u, role="spare"), t)),
        ("grant missing role", lambda t: call(a.UserGrantRole, pb.AuthUserGrantRoleRequest(user=u, role="nope"), t)),
        ("revoke role", lambda t: call(a.UserRevokeRole, pb.AuthUserRevokeRoleRequest(name=u, role="spare"), t)),
        ("revoke role again", lambda t: call(a.UserRevokeRole, pb.AuthUserRevokeRoleRequest(name=u, role="spare"), t)),
        ("revoke root root", lambda t: call(a.UserRevokeRole, pb.AuthUserRevokeRoleRequest(name="root", role="root"), t)),
        ("grant perm", lambda t: call(a.RoleGrantPermission, pb.AuthRoleGrantPermissionRequest(
            name="spare", perm=perm(auth_pb2.Permission.READ, b"/s/", b"/s0")), t)),
        ("grant perm update", lambda t: call(a.RoleGrantPermission, pb.AuthRoleGrantPermissionRequest(
            name="spare", perm=perm(auth_pb2.Permission.WRITE, b"/s/", b"/s0")), t)),
        ("revoke perm", lambda t: call(a.RoleRevokePermission, pb.AuthRoleRevokePermissionRequest(
            role="spare", key=b"/s/", range_end=b"/s0"), t)),
        ("revoke perm missing", lambda t: call(a.RoleRevokePermission, pb.AuthRoleRevokePermissionRequest(
            role="spare", key=b"/nope"), t)),
        ("change password", lambda t: call(a.UserChangePassword, pb.AuthUserChangePasswordRequest(name=u, password="y"), t)),
        ("change password missing", lambda t: call(a.UserChangePassword, pb.AuthUserChangePasswordRequest(name="nobody", password="y"), t)),
        ("user delete", lambda t: call(a.UserDelete, pb.AuthUserDeleteRequest(name=u), t)),
        ("user delete root", lambda t: call(a.UserDelete, pb.AuthUserDeleteRequest(name="root"), t)),
        ("role delete", lambda t: call(a.RoleDelete, pb.AuthRoleDeleteRequest(role="r-" + who), t)),
        ("role delete root", lambda t: call(a.RoleDelete, pb.AuthRoleDeleteRequest(role="root"), t)),
        ("auth enable", lambda t: call(a.AuthEnable, pb.AuthEnableRequest(), t)),
        ("authenticate bad", lambda t: call(a.Authenticate, pb.AuthenticateRequest(name=RO, password="wrong"), t)),
        ("authenticate nouser", lambda t: call(a.Authenticate, pb.AuthenticateRequest(name="ghost", password="x"), t)),
        ("authenticate nopw", lambda t: call(a.Authenticate, pb.AuthenticateRequest(name="nopw", password="x"), t)),
        ("authenticate ok", lambda t: call(a.Authenticate, pb.AuthenticateRequest(name="tmp", password=PW["tmp"]), t)),
    ]


IDENTITIES = ["none", "bad", "expired", RO, WO, PRE, "root"]


def run_matrix(s, expired):
    st = stubs(s)
    out = {}
    for who in IDENTITIES:
        if who == "none":
            tok = None
        elif who == "bad":
            tok = "notatoken"
        elif who == "expired":
            tok = expired
        else:
            tok = authenticate(s, who)
        for name, fn in rpcs(st, who):
            if who not in ("none", "bad", "expired"):
                # simple tokens live 3 s from their last use: keep it fresh
                pass
            out[(who, name)] = fn(tok)
    return out


@pytest.fixture
def pair(server_factory):
    e = server_factory(ETCD_BIN, extra_args=TTL_ARGS)
    c = server_factory(extra_args=TTL_ARGS)
    return e, c


def test_permission_matrix_matches_etcd(pair):
    e, c = pair
    expired = {}
    for s in (e, c):
        setup_auth(s)
        expired[s] = authenticate(s, RO)
    time.sleep(5)  # --auth-token-ttl 3, swept each second
    got = {s: run_matrix(s, expired[s]) for s in (e, c)}
    diffs = [(k, got[e][k], got[c][k]) for k in got[e] if got[e][k] != got[c][k]]
    assert not diffs, "\n".join("%s:\n  etcd:  %r\n  cairn: %r" % d for d in diffs)
    # the matrix must have exercised both answers
    outcomes = {v[0] for v in got[c].values()}
    assert outcomes == {"ok", "err"}


def test_auth_disable_and_status(pair):
    e, c = pair
    res = {}
    for s in (e, c):
        setup_auth(s)
        a = stubs(s)["auth"]
        r = []
        r.append(call(a.AuthDisable, pb.AuthDisableRequest(), authenticate(s, RO)))
        r.append(call(a.AuthDisable, pb.AuthDisableRequest(), None))
        tok = authenticate(s, "root")
        r.append(call(a.AuthDisable, pb.AuthDisableRequest(), tok))
        # tokens die with auth off; then anybody may do anything
        r.append(call(stubs(s)["kv"].Range, pb.RangeRequest(key=b"/ro/a"), tok))
        r.append(call(stubs(s)["kv"].Range, pb.RangeRequest(key=b"/ro/a"), None))
        r.append(call(a.Authenticate, pb.AuthenticateRequest(name=RO, password=PW[RO]), None))
        r.append(call(a.UserDelete, pb.AuthUserDeleteRequest(name="root"), None))
        r.append(call(a.AuthEnable, pb.AuthEnableRequest(), None))
        r.append(call(a.UserAdd, pb.AuthUserAddRequest(name="root", password="p"), None))
        r.append(call(a.AuthEnable, pb.AuthEnableRequest(), None))
        r.append(call(a.UserGrantRole, pb.AuthUserGrantRoleRequest(user="root", role="root"), None))
        r.append(call(a.AuthEnable, pb.AuthEnableRequest(), None))
        r.append(call(stubs(s)["kv"].Range, pb.RangeRequest(key=b"/ro/a"), None))
        res[s] = r
    assert res[e] == res[c]


def test_authorization_metadata_is_a_token(pair):
    """etcd reads md["token"], else md["authorization"] (what its gateway
    forwards); "token" wins when both are sent."""
    e, c = pair
    res = {}
    for s in (e, c):
        setup_auth(s)
        kv = stubs(s)["kv"]
        ro, bad = authenticate(s, RO), "not-a-token"
        r = []
        for m in ((("authorization", ro),),
                  (("authorization", bad),),
                  (("token", ro), ("authorization", bad)),
                  (("authorization", bad), ("token", ro)),
                  (("token", bad), ("authorization", ro))):
            try:
                kv.Range(pb.RangeRequest(key=b"/ro/a"), timeout=TIMEOUT, metadata=m)
                r.append("ok")
            except grpc.RpcError as ex:
                r.append((ex.code(), ex.details()))
        res[s] = r
    assert res[e] == res[c]
    assert res[c][0] == "ok" and res[c][2] == "ok" and res[c][3] == "ok"


def raw_auth_status(s, token):
    fn = s.channel().unary_unary("/etcdserverpb.Auth/AuthStatus",
                                 request_serializer=lambda x: x,
                                 response_deserializer=lambda x: x)
    return fn(b"", timeout=TIMEOUT, metadata=md(token))


def test_auth_status_cairn(server):
    """etcd 3.5's AuthStatus (3.4 has none): admin only, enabled flag and
    the auth revision."""
    a = stubs(server)["auth"]
    a.UserAdd(pb.AuthUserAddRequest(name="root", password="pw"), timeout=TIMEOUT)
    a.UserGrantRole(pb.AuthUserGrantRoleRequest(user="root", role="root"), timeout=TIMEOUT)
    body = raw_auth_status(server, None)
    assert b"\x18\x03" in body and b"\x10\x01" not in body  # revision 3, off
    a.AuthEnable(pb.AuthEnableRequest(), timeout=TIMEOUT)
    with pytest.raises(grpc.RpcError) as ei:
        raw_auth_status(server, None)
    assert ei.value.details() == "etcdserver: user name is empty"
    tok = a.Authenticate(pb.AuthenticateRequest(name="root", password="pw"), timeout=TIMEOUT).token
    body = raw_auth_status(server, tok)
    assert b"\x10\x01" in body and b"\x18\x03" in body


def test_stricter_than_34(server):
    """Cases etcd 3.4 let through and later releases fixed: nested txns,
    prev_kv and leases on puts inside txns, from-key watches."""
    setup_auth(server)
    st = stubs(server)
    tok = authenticate(server, WO)
    nested = pb.TxnRequest(success=[pb.RequestOp(request_txn=pb.TxnRequest(
        success=[pb.RequestOp(request_range=pb.RangeRequest(key=b"/ro/a"))]))])
    assert call(st["kv"].Txn, nested, tok)[2] == "etcdserver: permission denied"
    put_prev = pb.TxnRequest(success=[pb.RequestOp(request_put=pb.PutRequest(
        key=b"/wo/q", value=b"1", prev_kv=True))])
    assert call(st["kv"].Txn, put_prev, tok)[2] == "etcdserver: permission denied"
    put_lease = pb.TxnRequest(success=[pb.RequestOp(request_put=pb.PutRequest(
        key=b"/wo/q", value=b"1", lease=LEASE_RO))])
    assert call(st["kv"].Txn, put_lease, tok)[2] == "etcdserver: permission denied"
    ok = pb.TxnRequest(success=[pb.RequestOp(request_txn=pb.TxnRequest(
        success=[pb.RequestOp(request_put=pb.PutRequest(key=b"/wo/q", value=b"1"))]))])
    assert call(st["kv"].Txn, ok, tok)[0] == "ok"
    # read-only user watching from a key it may read to the end of the keyspace
    rt = authenticate(server, RO)
    wr = iter([pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b"/ro/a", range_end=b"\0"))])
    it = st["watch"].Watch(wr, timeout=TIMEOUT, metadata=md(rt))
    r = next(it)
    it.cancel()
    assert r.canceled and r.cancel_reason == (
        "rpc error: code = PermissionDenied desc = etcdserver: permission denied")


# --------------------------------------------------------------------------
# etcdctl, restart, revision checks
# --------------------------------------------------------------------------

def ctl(s, *args, ok=True):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "3"
    r = subprocess.run([ETCDCTL_BIN, "--endpoints", s.endpoint, "--dial-timeout", "5s",
                        "--command-timeout", "15s"] + list(args),
                       capture_output=True, text=True, env=env, timeout=60)
    if ok:
        assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r


def etcdctl_flow(s):
    out = []
    for args in (["user", "add", "root:rootpw"],
                 ["role", "add", "app"],
                 ["role", "grant-permission", "app", "readwrite", "/app/", "--prefix"],
                 ["user", "add", "alice:alicepw"],
                 ["user", "grant-role", "alice", "app"],
                 ["auth", "enable"],
                 ["--user", "alice:alicepw", "put", "/app/x", "1"],
                 ["--user", "alice:alicepw", "get", "/app/x"],
                 ["--user", "alice:alicepw", "get", "/other"],
                 ["--user", "alice:alicepw", "put", "/other", "1"],
                 ["--user", "alice:wrong", "get", "/app/x"],
                 ["get", "/app/x"],
                 ["--user", "root:rootpw", "role", "get", "app"],
                 ["--user", "root:rootpw", "user", "get", "alice"],
                 ["--user", "root:rootpw", "user", "list"],
                 ["--user", "root:rootpw", "role", "list"],
                 ["--user", "alice:alicepw", "user", "list"],
                 ["--user", "root:rootpw", "role", "revoke-permission", "app", "/app/", "--prefix"],
                 ["--user", "alice:alicepw", "get", "/app/x"],
                 ["--user", "root:rootpw", "user", "passwd", "alice", "--interactive=false"],
                 ["--user", "root:rootpw", "auth", "disable"],
                 ["get", "/app/x"]):
        stdin = None
        r = subprocess.run([ETCDCTL_BIN, "--endpoints", s.endpoint, "--dial-timeout", "5s",
                            "--command-timeout", "15s"] + args,
                           input="newpw\n" if "passwd" in args else stdin,
                           capture_output=True, text=True, timeout=60,
                           env=dict({k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")},
                                    ETCDCTL_API="3"))
        err = [l for l in r.stderr.splitlines() if l.startswith("Error:")]
        out.append((args, r.returncode, r.stdout, err))
    return out


def test_etcdctl_flow_matches_etcd(server_factory):
    e = server_factory(ETCD_BIN)
    c = server_factory()
    a, b = etcdctl_flow(e), etcdctl_flow(c)
    for x, y in zip(a, b):
        assert x == y


def test_restart_keeps_auth(server):
    setup_auth(server)
    server.restart()
    st = stubs(server)
    tok = authenticate(server, PRE)
    assert call(st["kv"].Range, pb.RangeRequest(key=b"/p/a"), tok)[0] == "ok"
    assert call(st["kv"].Range, pb.RangeRequest(key=b"/ro/a"), tok)[2] == "etcdserver: permission denied"
    assert call(st["kv"].Range, pb.RangeRequest(key=b"/p/a"), None)[2] == "etcdserver: user name is empty"
    # tokens do not survive a restart (etcd keeps them in memory too)
    server.restart()
    st = stubs(server)
    assert call(st["kv"].Range, pb.RangeRequest(key=b"/p/a"), tok)[2] == "etcdserver: invalid auth token"


def test_token_ttl_refreshed_on_use(server_factory):
    s = server_factory(extra_args=["--auth-token-ttl", "2"])
    setup_auth(s)
    kv = stubs(s)["kv"]
    tok = authenticate(s, PRE)
    for _ in range(4):  # 4 s in all, never 2 s idle
        time.sleep(1)
        assert call(kv.Range, pb.RangeRequest(key=b"/p/a"), tok)[0] == "ok"
    time.sleep(3.5)
    assert call(kv.Range, pb.RangeRequest(key=b"/p/a"), tok)[2] == "etcdserver: invalid auth token"


def test_password_change_and_delete_drop_tokens(server):
    setup_auth(server)
    st = stubs(server)
    root = authenticate(server, "root")
    tok = authenticate(server, PRE)
    st["auth"].UserChangePassword(pb.AuthUserChangePasswordRequest(name=PRE, password="new"),
                                  timeout=TIMEOUT, metadata=md(root))
    assert call(st["kv"].Range, pb.RangeRequest(key=b"/p/a"), tok)[2] == "etcdserver: invalid auth token"
    assert authenticate(server, PRE, "new")
    r = call(st["auth"].Authenticate, pb.AuthenticateRequest(name=PRE, password=PW[PRE]), None)
    assert r[1:] == (grpc.StatusCode.INVALID_ARGUMENT,
                     "etcdserver: authentication failed, invalid user ID or password")


# --------------------------------------------------------------------------
# brute force
# --------------------------------------------------------------------------

def test_failed_logins_are_rate_limited(server):
    setup_auth(server)
    a = stubs(server)["auth"]
    msg = "etcdserver: authentication failed, invalid user ID or password"
    for _ in range(5):  # free attempts
        assert call(a.Authenticate, pb.AuthenticateRequest(name=RO, password="x"), None)[2] == msg
    # now locked out, even with the right password, with etcd's own error,
    # answered at once (no bcrypt)
    assert call(a.Authenticate, pb.AuthenticateRequest(name=RO, password="x"), None)[2] == msg
    t0 = time.monotonic()
    assert call(a.Authenticate, pb.AuthenticateRequest(name=RO, password=PW[RO]), None)[2] == msg
    assert time.monotonic() - t0 < 0.2
    # other users are not affected
    assert authenticate(server, PRE)
    # the lock lapses (250 ms, doubling per further failure)
    time.sleep(1.2)
    assert authenticate(server, RO)
    # and a success clears the count
    assert call(a.Authenticate, pb.AuthenticateRequest(name=RO, password="x"), None)[2] == msg
    assert authenticate(server, RO)


# --------------------------------------------------------------------------
# JWT
# --------------------------------------------------------------------------

def keys(tmp, kind):
    priv, pub = os.path.join(tmp, kind + ".key"), os.path.join(tmp, kind + ".pub")
    if kind == "rsa":
        subprocess.run(["openssl", "genrsa", "-out", priv, "2048"], check=True, capture_output=True)
    else:
        subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout",
                        "-out", priv], check=True, capture_output=True)
    subprocess.run(["openssl", "pkey", "-in", priv, "-pubout", "-out", pub], check=True,
                   capture_output=True)
    return priv, pub


@pytest.mark.parametrize("method,kind", [("RS256", "rsa"), ("PS256", "rsa"), ("ES256", "ec")])
def test_jwt_tokens_match_etcd(server_factory, tmp_path, method, kind):
    priv, pub = keys(str(tmp_path), kind)
    opt = "jwt,pub-key=%s,priv-key=%s,sign-method=%s,ttl=2s" % (pub, priv, method)
    res = {}
    toks = {}
    for b in (ETCD_BIN, None):
        s = server_factory(b, extra_args=["--auth-token", opt])
        setup_auth(s)
        st = stubs(s)
        tok = authenticate(s, PRE)
        toks[b] = (s, tok)
        r = [call(st["kv"].Range, pb.RangeRequest(key=b"/p/a"), tok),
             call(st["kv"].Range, pb.RangeRequest(key=b"/ro/a"), tok),
             call(st["kv"].Range, pb.RangeRequest(key=b"/p/a"), tok[:-4] + "AAAA")]
        # a JWT carries the auth revision: any auth change makes it old
        root = authenticate(s, "root")
        st["auth"].RoleAdd(pb.AuthRoleAddRequest(name="later"), timeout=TIMEOUT, metadata=md(root))
        r.append(call(st["kv"].Range, pb.RangeRequest(key=b"/p/a"), tok))
        r.append(call(st["kv"].Put, pb.PutRequest(key=b"/p/a", value=b"2"), tok))
        res[b] = r
        assert tok.count(".") == 2
    assert res[ETCD_BIN] == res[None]
    # etcd's token works on cairn and cairn's on etcd: same keys, same claims
    (e, etok), (c, ctok) = toks[ETCD_BIN], toks[None]
    ce = authenticate(e, PRE)
    cc = authenticate(c, PRE)
    assert call(stubs(c)["kv"].Range, pb.RangeRequest(key=b"/p/a"), ce)[0] == "ok"
    r = call(stubs(e)["kv"].Range, pb.RangeRequest(key=b"/p/a"), cc)
    assert r[0] == "ok", (r, cc, ce)
    if method == "RS256":  # expiry does not depend on the method: once
        time.sleep(3.5)  # ttl=2s
        assert call(stubs(c)["kv"].Range, pb.RangeRequest(key=b"/p/a"),
                    cc)[2] == "etcdserver: invalid auth token"


def test_bad_auth_token_flag_refuses_to_start(server_factory):
    s = server_factory(start=False, extra_args=["--auth-token", "bogus"])
    with pytest.raises(Exception):
        s.start(timeout=5)


# --------------------------------------------------------------------------
# snapshots
# --------------------------------------------------------------------------

def save_snapshot(s, path):
    ctl(s, "--user", "root:rootpw", "snapshot", "save", path)


def restore_cairn(db, data_dir):
    r = subprocess.run([binary_under_test(), "snapshot", "restore", db, "--data-dir", data_dir],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r


def test_snapshot_from_etcd_keeps_users(server_factory, tmp_path):
    e = server_factory(ETCD_BIN)
    setup_auth(e)
    db = str(tmp_path / "etcd.db")
    save_snapshot(e, db)
    dd = str(tmp_path / "restored")
    r = restore_cairn(db, dd)
    assert "did not restore" not in r.stderr
    c = server_factory(data_dir=dd)
    st = stubs(c)
    tok = authenticate(c, PRE)  # etcd's Go bcrypt hash, checked by libxcrypt
    assert call(st["kv"].Range, pb.RangeRequest(key=b"/p/a"), tok)[0] == "ok"
    assert call(st["kv"].Range, pb.RangeRequest(key=b"/ro/a"), tok)[2] == "etcdserver: permission denied"
    assert call(st["kv"].Range, pb.RangeRequest(key=b"/p/a"), None)[2] == "etcdserver: user name is empty"
    root = authenticate(c, "root")
    ul = st["auth"].UserList(pb.AuthUserListRequest(), timeout=TIMEOUT, metadata=md(root))
    assert list(ul.users) == ["nopw", "pre", "ro", "root", "tmp", "wo"]


def test_snapshot_from_cairn_restores_in_etcd(server_factory, tmp_path):
    c = server_factory()
    setup_auth(c)
    db = str(tmp_path / "cairn.db")
    save_snapshot(c, db)
    dd = str(tmp_path / "etcd-restored")
    r = subprocess.run([ETCDCTL_BIN, "snapshot", "restore", db, "--data-dir", dd,
                        "--skip-hash-check"], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, ETCDCTL_API="3"))
    assert r.returncode == 0, r.stderr
    e = server_factory(ETCD_BIN, data_dir=dd)
    st = stubs(e)
    tok = authenticate(e, PRE)  # cairn's libxcrypt hash, checked by Go's bcrypt
    assert call(st["kv"].Range, pb.RangeRequest(key=b"/p/a"), tok)[0] == "ok"
    assert call(st["kv"].Range, pb.RangeRequest(key=b"/ro/a"), tok)[2] == "etcdserver: permission denied"


@pytest.mark.parametrize("cost", ["4", "50"])
def test_bcrypt_cost(server_factory, tmp_path, cost):
    """4 is bcrypt's minimum; out-of-range costs fall back to etcd's 10 with
    a warning, as etcd does. The hash in a snapshot shows the cost used."""
    s = server_factory(extra_args=["--bcrypt-cost", cost])
    a = stubs(s)["auth"]
    a.UserAdd(pb.AuthUserAddRequest(name="root", password="rootpw"), timeout=TIMEOUT)
    a.UserGrantRole(pb.AuthUserGrantRoleRequest(user="root", role="root"), timeout=TIMEOUT)
    a.AuthEnable(pb.AuthEnableRequest(), timeout=TIMEOUT)
    assert authenticate(s, "root")
    db = str(tmp_path / "s.db")
    save_snapshot(s, db)
    data = open(db, "rb").read()
    assert (b"$2b$04$" if cost == "4" else b"$2b$10$") in data
