"""Helpers for the Lock and Election tests: v3lockpb and v3electionpb stubs.

Debian's python3-etcd3 has no v3lock/v3election code, so their two .proto
files (proto/v3lockpb, proto/v3electionpb) are rebuilt here as descriptors
on top of python3-etcd3's rpc.proto and kv.proto, in a private pool, and
the stubs are plain channel.unary_unary/unary_stream callables.
"""

import threading
import time

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from cairn_it import rpc_pb2, rpc_pb2_grpc

F = descriptor_pb2.FieldDescriptorProto


def _field(msg, name, number, ftype, type_name=None):
    f = msg.field.add(name=name, number=number, label=F.LABEL_OPTIONAL,
                      type=ftype)
    if type_name:
        f.type_name = type_name


def _build():
    pool = descriptor_pool.DescriptorPool()
    for dep in rpc_pb2.DESCRIPTOR.dependencies:
        p = descriptor_pb2.FileDescriptorProto()
        dep.CopyToProto(p)
        pool.Add(p)
    p = descriptor_pb2.FileDescriptorProto()
    rpc_pb2.DESCRIPTOR.CopyToProto(p)
    pool.Add(p)
    hdr = ".etcdserverpb.ResponseHeader"
    B, I, M = F.TYPE_BYTES, F.TYPE_INT64, F.TYPE_MESSAGE

    lk = descriptor_pb2.FileDescriptorProto(
        name="v3lock.proto", package="v3lockpb", syntax="proto3",
        dependency=["rpc.proto"])
    m = lk.message_type.add(name="LockRequest")
    _field(m, "name", 1, B)
    _field(m, "lease", 2, I)
    m = lk.message_type.add(name="LockResponse")
    _field(m, "header", 1, M, hdr)
    _field(m, "key", 2, B)
    m = lk.message_type.add(name="UnlockRequest")
    _field(m, "key", 1, B)
    m = lk.message_type.add(name="UnlockResponse")
    _field(m, "header", 1, M, hdr)
    pool.Add(lk)

    el = descriptor_pb2.FileDescriptorProto(
        name="v3election.proto", package="v3electionpb", syntax="proto3",
        dependency=["rpc.proto", "kv.proto"])
    m = el.message_type.add(name="LeaderKey")
    _field(m, "name", 1, B)
    _field(m, "key", 2, B)
    _field(m, "rev", 3, I)
    _field(m, "lease", 4, I)
    m = el.message_type.add(name="CampaignRequest")
    _field(m, "name", 1, B)
    _field(m, "lease", 2, I)
    _field(m, "value", 3, B)
    m = el.message_type.add(name="CampaignResponse")
    _field(m, "header", 1, M, hdr)
    _field(m, "leader", 2, M, ".v3electionpb.LeaderKey")
    m = el.message_type.add(name="LeaderRequest")
    _field(m, "name", 1, B)
    m = el.message_type.add(name="LeaderResponse")
    _field(m, "header", 1, M, hdr)
    _field(m, "kv", 2, M, ".mvccpb.KeyValue")
    m = el.message_type.add(name="ResignRequest")
    _field(m, "leader", 1, M, ".v3electionpb.LeaderKey")
    m = el.message_type.add(name="ResignResponse")
    _field(m, "header", 1, M, hdr)
    m = el.message_type.add(name="ProclaimRequest")
    _field(m, "leader", 1, M, ".v3electionpb.LeaderKey")
    _field(m, "value", 2, B)
    m = el.message_type.add(name="ProclaimResponse")
    _field(m, "header", 1, M, hdr)
    pool.Add(el)

    fac = message_factory.MessageFactory(pool)

    def cls(full):
        d = pool.FindMessageTypeByName(full)
        get = getattr(message_factory, "GetMessageClass", None)
        return get(d) if get else fac.GetPrototype(d)

    class P:
        pass
    for n in ("LockRequest", "LockResponse", "UnlockRequest", "UnlockResponse"):
        setattr(P, n, cls("v3lockpb." + n))
    for n in ("LeaderKey", "CampaignRequest", "CampaignResponse",
              "LeaderRequest", "LeaderResponse", "ResignRequest",
              "ResignResponse", "ProclaimRequest", "ProclaimResponse"):
        setattr(P, n, cls("v3electionpb." + n))
    return P


lpb = _build()


class LockStub:
    def __init__(self, ch):
        self.Lock = ch.unary_unary(
            "/v3lockpb.Lock/Lock",
            request_serializer=lpb.LockRequest.SerializeToString,
            response_deserializer=lpb.LockResponse.FromString)
        self.Unlock = ch.unary_unary(
            "/v3lockpb.Lock/Unlock",
            request_serializer=lpb.UnlockRequest.SerializeToString,
            response_deserializer=lpb.UnlockResponse.FromString)


class ElectionStub:
    def __init__(self, ch):
        def uu(name, req, resp):
            return ch.unary_unary("/v3electionpb.Election/" + name,
                                  request_serializer=req.SerializeToString,
                                  response_deserializer=resp.FromString)
        self.Campaign = uu("Campaign", lpb.CampaignRequest, lpb.CampaignResponse)
        self.Proclaim = uu("Proclaim", lpb.ProclaimRequest, lpb.ProclaimResponse)
        self.Leader = uu("Leader", lpb.LeaderRequest, lpb.LeaderResponse)
        self.Resign = uu("Resign", lpb.ResignRequest, lpb.ResignResponse)
        self.Observe = ch.unary_stream(
            "/v3electionpb.Election/Observe",
            request_serializer=lpb.LeaderRequest.SerializeToString,
            response_deserializer=lpb.LeaderResponse.FromString)


TIMEOUT = 15.0


def grant(s, ttl, lease_id=0, ch=None, metadata=None):
    st = rpc_pb2_grpc.LeaseStub(ch or s.channel())
    return st.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=ttl, ID=lease_id),
                         timeout=TIMEOUT, metadata=metadata).ID


def auth_setup(s, perm_type, key, end):
    """root, and user "u" with role "r" holding @perm_type on [key, end);
    auth on. Returns the metadata of root's and of u's token."""
    from etcd3.etcdrpc import auth_pb2
    a = rpc_pb2_grpc.AuthStub(s.channel())
    pb = rpc_pb2
    a.UserAdd(pb.AuthUserAddRequest(name="root", password="rootpw"), timeout=TIMEOUT)
    a.RoleAdd(pb.AuthRoleAddRequest(name="root"), timeout=TIMEOUT)
    a.UserGrantRole(pb.AuthUserGrantRoleRequest(user="root", role="root"), timeout=TIMEOUT)
    a.UserAdd(pb.AuthUserAddRequest(name="u", password="upw"), timeout=TIMEOUT)
    a.RoleAdd(pb.AuthRoleAddRequest(name="r"), timeout=TIMEOUT)
    a.RoleGrantPermission(pb.AuthRoleGrantPermissionRequest(
        name="r", perm=auth_pb2.Permission(permType=perm_type, key=key,
                                           range_end=end)), timeout=TIMEOUT)
    a.UserGrantRole(pb.AuthUserGrantRoleRequest(user="u", role="r"), timeout=TIMEOUT)
    a.AuthEnable(pb.AuthEnableRequest(), timeout=TIMEOUT)

    def tok(name, pw):
        return [("token", a.Authenticate(pb.AuthenticateRequest(
            name=name, password=pw), timeout=TIMEOUT).token)]
    return tok("root", "rootpw"), tok("u", "upw")


def get(s, key):
    """The KeyValue at @key or None."""
    r = s.kv.Range(rpc_pb2.RangeRequest(key=key), timeout=TIMEOUT)
    return r.kvs[0] if r.kvs else None


def wait_for(pred, what, limit=20.0, step=0.05):
    """Polls @pred until it is true (bounded)."""
    for _ in range(int(limit / step)):
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise AssertionError("timed out waiting for " + what)


def err(e):
    """(code name, details) of an RpcError."""
    return (e.code().name, e.details())


class Observer:
    """An Observe stream read by a daemon thread into a list."""

    def __init__(self, stub, name, metadata=None):
        self.msgs = []
        self.end = None
        self.cond = threading.Condition()
        self.call = stub.Observe(lpb.LeaderRequest(name=name),
                                 metadata=metadata)
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        try:
            for m in self.call:
                with self.cond:
                    self.msgs.append(m)
                    self.cond.notify_all()
            end = ("OK", "")
        except grpc.RpcError as e:
            end = err(e)
        with self.cond:
            self.end = end
            self.cond.notify_all()

    def wait(self, n, limit=TIMEOUT):
        """Waits for @n messages in all (bounded); returns them."""
        with self.cond:
            ok = self.cond.wait_for(lambda: len(self.msgs) >= n or self.end,
                                    timeout=limit)
            assert ok and len(self.msgs) >= n, (n, self.msgs, self.end)
            return list(self.msgs[:n])

    def wait_end(self, limit=TIMEOUT):
        with self.cond:
            assert self.cond.wait_for(lambda: self.end is not None,
                                      timeout=limit), self.msgs
            return self.end

    def cancel(self):
        self.call.cancel()
        self.t.join(timeout=TIMEOUT)
