"""Bad input at the HTTP/2 / gRPC framing level, and HTTP/1.1 on the client port.

Raw gRPC calls are made with the `h2` library (Debian package python3-h2),
so we control every byte of the gRPC message framing: the 5-byte prefix
(compressed flag + big-endian length) and where END_STREAM falls.

Expected status codes are what real etcd 3.4 (grpc-go) returns:
  malformed protobuf           -> 13 INTERNAL  "grpc: error unmarshalling request: ..."
  END_STREAM mid-message       ->  2 UNKNOWN   ("unexpected EOF"; no message at all: "EOF")
  message > max-request-bytes + 512 KiB
                               ->  8 RESOURCE_EXHAUSTED
                                   "grpc: received message larger than max (N vs. 2097152)"
  max-request-bytes < message <= that
                               ->  3 INVALID_ARGUMENT "etcdserver: request is too large"
  compressed flag, no grpc-encoding
                               -> 13 INTERNAL  "grpc: compressed flag set with identity or empty encoding"
  unknown method / service     -> 12 UNIMPLEMENTED
After each case the server must still answer a normal request.
"""

import http.client
import json
import re
import socket
import struct
import time
import urllib.parse

import grpc
import pytest

import h2.config
import h2.connection
import h2.events

from cairn_it import rpc_pb2 as pb

MAX_REQUEST_BYTES = 1572864              # etcd default --max-request-bytes
GRPC_MAX_RECV = MAX_REQUEST_BYTES + 512 * 1024
RANGE = "/etcdserverpb.KV/Range"
PUT = "/etcdserverpb.KV/Put"


class RawResult:
    def __init__(self):
        self.headers = {}        # response headers and trailers, merged
        self.data = b""
        self.ended = False
        self.reset = None
        self.terminated = None

    @property
    def done(self):
        return self.ended or self.reset is not None or self.terminated is not None

    @property
    def status(self):
        s = self.headers.get(b"grpc-status")
        return None if s is None else int(s)

    @property
    def message(self):
        return urllib.parse.unquote(self.headers.get(b"grpc-message", b"").decode())

    def messages(self):
        """Decode the length-prefixed gRPC messages in the response body."""
        out, buf = [], self.data
        for _ in range(1000):
            if not buf:
                break
            assert len(buf) >= 5, buf
            flag, n = struct.unpack(">BI", buf[:5])
            assert flag == 0 and len(buf) >= 5 + n, (flag, n, len(buf))
            out.append(buf[5:5 + n])
            buf = buf[5 + n:]
        return out

    def __repr__(self):
        return "<RawResult headers=%r data=%d bytes ended=%s reset=%s terminated=%s>" % (
            self.headers, len(self.data), self.ended, self.reset, self.terminated)


def grpc_frame(msg, compressed=0, length=None):
    return struct.pack(">BI", compressed, len(msg) if length is None else length) + msg


def raw_call(port, path, body, extra_headers=(), timeout=20.0, authority=None):
    """One gRPC call over a fresh HTTP/2 connection, body sent verbatim.

    The request body is sent respecting flow control; if the server ends the
    stream early (e.g. message too large) we stop sending.  END_STREAM is
    sent after the body.  Bounded by `timeout` overall.
    """
    res = RawResult()
    deadline = time.monotonic() + timeout
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding=None))
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [
            (":method", "POST"), (":scheme", "http"), (":path", path),
            (":authority", authority or "127.0.0.1:%d" % port),
            ("content-type", "application/grpc"), ("te", "trailers"),
        ] + list(extra_headers))
        sock.sendall(conn.data_to_send())

        def pump():
            sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                data = sock.recv(1 << 16)
            except socket.timeout:
                return
            if not data:
                res.terminated = res.terminated or "eof"
                return
            for ev in conn.receive_data(data):
                if isinstance(ev, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                    res.headers.update(dict(ev.headers))
                elif isinstance(ev, h2.events.DataReceived):
                    res.data += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded):
                    res.ended = True
                elif isinstance(ev, h2.events.StreamReset):
                    res.reset = ev.error_code
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    res.terminated = ev
            out = conn.data_to_send()
            if out:
                sock.sendall(out)

        off = 0
        while off < len(body) and not res.done and time.monotonic() < deadline:
            n = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size,
                    len(body) - off)
            if n > 0:
                conn.send_data(sid, body[off:off + n])
                off += n
                sock.sendall(conn.data_to_send())
            else:
                pump()
        if not res.done:
            conn.end_stream(sid)
            sock.sendall(conn.data_to_send())
        while not res.done and time.monotonic() < deadline:
            pump()
    finally:
        sock.close()
    assert res.done, "no complete response within %.0fs: %r" % (timeout, res)
    return res


@pytest.fixture(scope="module")
def srv(module_server):
    return module_server


@pytest.fixture(autouse=True)
def still_answers(srv):
    """After every test the server is alive, ours, and serving normally."""
    yield
    assert srv.proc.poll() is None, "server died:\n" + srv.log_tail()
    srv.assert_owned()
    r = srv.kv.Put(pb.PutRequest(key=b"alive", value=b"yes"), timeout=10)
    g = srv.kv.Range(pb.RangeRequest(key=b"alive"), timeout=10)
    assert g.kvs[0].value == b"yes" and g.header.revision == r.header.revision


def assert_grpc_error(res, code, message=None, message_re=None):
    assert res.headers.get(b":status") == b"200", res
    assert res.status == code, res
    if message is not None:
        assert res.message == message, res
    if message_re is not None:
        assert re.fullmatch(message_re, res.message), res
    assert res.messages() == [], res


# --------------------------------------------------------------------------

def test_raw_harness_valid_call(srv):
    """The raw client itself works: a well-formed Range succeeds."""
    srv.kv.Put(pb.PutRequest(key=b"raw/k", value=b"v"), timeout=10)
    res = raw_call(srv.client_port, RANGE,
                   grpc_frame(pb.RangeRequest(key=b"raw/k").SerializeToString()))
    assert res.status == 0, res
    msgs = res.messages()
    assert len(msgs) == 1
    resp = pb.RangeResponse.FromString(msgs[0])
    assert [(kv.key, kv.value) for kv in resp.kvs] == [(b"raw/k", b"v")]


@pytest.mark.parametrize("body", [
    b"\x0a\xff\x01",             # key: length 255 but only 1 byte follows
    b"\xff\xff\xff",             # garbage tag / truncated varint
    b"\x0a\x01",                 # length-delimited field cut short
], ids=["short-field", "garbage", "cut"])
def test_malformed_protobuf(srv, body):
    res = raw_call(srv.client_port, RANGE, grpc_frame(body))
    assert_grpc_error(res, 13, message_re=r"grpc: error unmarshalling request: .+")


@pytest.mark.parametrize("body", [
    grpc_frame(b"\x0a\x01a", length=10),     # prefix says 10, 3 bytes follow
    b"\x00\x00",                             # END_STREAM inside the 5-byte prefix
    b"",                                     # no message at all
], ids=["short-payload", "short-prefix", "empty"])
def test_truncated_frame(srv, body):
    res = raw_call(srv.client_port, RANGE, body)
    assert_grpc_error(res, 2)


def test_oversized_message(srv):
    value = b"x" * (GRPC_MAX_RECV + 100)
    msg = pb.PutRequest(key=b"big", value=value).SerializeToString()
    res = raw_call(srv.client_port, PUT, grpc_frame(msg))
    assert_grpc_error(res, 8, message="grpc: received message larger than max (%d vs. %d)"
                      % (len(msg), GRPC_MAX_RECV))
    # only the 5-byte prefix announcing a huge message: rejected up front
    res = raw_call(srv.client_port, PUT, grpc_frame(b"", length=3 * 1024 * 1024))
    assert_grpc_error(res, 8, message="grpc: received message larger than max (%d vs. %d)"
                      % (3 * 1024 * 1024, GRPC_MAX_RECV))
    # through a real gRPC client too
    with pytest.raises(grpc.RpcError) as ei:
        srv.kv.Put(pb.PutRequest(key=b"big", value=value), timeout=20)
    assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert srv.kv.Range(pb.RangeRequest(key=b"big"), timeout=10).count == 0


def test_request_too_large_for_etcd(srv):
    # above --max-request-bytes but within the gRPC limit: etcd's own check
    value = b"y" * (MAX_REQUEST_BYTES + 100)
    with pytest.raises(grpc.RpcError) as ei:
        srv.kv.Put(pb.PutRequest(key=b"big2", value=value), timeout=20)
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ei.value.details() == "etcdserver: request is too large"
    assert srv.kv.Range(pb.RangeRequest(key=b"big2"), timeout=10).count == 0
    # just under the limit is fine
    value = b"z" * (MAX_REQUEST_BYTES - 4096)
    srv.kv.Put(pb.PutRequest(key=b"big3", value=value), timeout=20)
    assert srv.kv.Range(pb.RangeRequest(key=b"big3"), timeout=20).kvs[0].value == value
    srv.kv.DeleteRange(pb.DeleteRangeRequest(key=b"big3"), timeout=10)


def test_compressed_flag_without_encoding(srv):
    body = grpc_frame(pb.RangeRequest(key=b"a").SerializeToString(), compressed=1)
    res = raw_call(srv.client_port, RANGE, body)
    assert_grpc_error(res, 13,
                      message="grpc: compressed flag set with identity or empty encoding")


def test_unknown_method_and_service(srv):
    res = raw_call(srv.client_port, "/etcdserverpb.KV/Foo", grpc_frame(b""))
    assert_grpc_error(res, 12, message="unknown method Foo for service etcdserverpb.KV")
    res = raw_call(srv.client_port, "/foo.Bar/Baz", grpc_frame(b""))
    assert_grpc_error(res, 12, message="unknown service foo.Bar")


def test_empty_key(srv):
    # an empty message is a RangeRequest with every field at its default
    res = raw_call(srv.client_port, RANGE, grpc_frame(b""))
    assert_grpc_error(res, 3, message="etcdserver: key is not provided")
    res = raw_call(srv.client_port, PUT,
                   grpc_frame(pb.PutRequest(value=b"v").SerializeToString()))
    assert_grpc_error(res, 3, message="etcdserver: key is not provided")


def test_inverted_range_is_empty(srv):
    for k in (b"inv/a", b"inv/b", b"inv/c"):
        srv.kv.Put(pb.PutRequest(key=k, value=b"1"), timeout=10)
    req = pb.RangeRequest(key=b"inv/c", range_end=b"inv/a")
    res = raw_call(srv.client_port, RANGE, grpc_frame(req.SerializeToString()))
    assert res.status == 0, res
    resp = pb.RangeResponse.FromString(res.messages()[0])
    assert list(resp.kvs) == [] and resp.count == 0 and not resp.more
    # and the same through the ordinary client; a delete is a no-op too
    assert srv.kv.Range(req, timeout=10).count == 0
    d = srv.kv.DeleteRange(pb.DeleteRangeRequest(key=b"inv/c", range_end=b"inv/a"), timeout=10)
    assert d.deleted == 0
    assert srv.kv.Range(pb.RangeRequest(key=b"inv/", range_end=b"inv0"), timeout=10).count == 3


# --------------------------------------------------------------------------
# HTTP/1.1 on the client port
# --------------------------------------------------------------------------

def http_get(srv, path):
    c = http.client.HTTPConnection("127.0.0.1", srv.client_port, timeout=10)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        c.close()


def test_http_health(srv):
    status, headers, body = http_get(srv, "/health")
    assert status == 200, body
    j = json.loads(body)
    assert j["health"] == "true"
    assert set(j) <= {"health", "reason"}     # 3.5+ adds "reason": ""


def test_http_version(srv):
    status, headers, body = http_get(srv, "/version")
    assert status == 200, body
    assert headers.get("Content-Type", "").startswith("application/json")
    j = json.loads(body)
    # etcd 3.4/3.5: {etcdserver, etcdcluster}; 3.6 adds "storage"
    assert set(j) in ({"etcdserver", "etcdcluster"},
                      {"etcdserver", "etcdcluster", "storage"}), j
    assert re.fullmatch(r"\d+\.\d+\.\d+", j["etcdserver"]), j
    assert re.fullmatch(r"\d+\.\d+\.0", j["etcdcluster"]), j
    if "storage" in j:
        assert re.fullmatch(r"\d+\.\d+\.0", j["storage"]), j
    st = srv.maint.Status(pb.StatusRequest(), timeout=10)
    assert st.version == j["etcdserver"]


# Every unary (and server-streaming) method built so far, Auth and
# Maintenance included: a body that is not a protobuf gets grpc-go's
# unmarshalling error, and the server goes on (still_answers).
ALL_UNARY = [
    "/etcdserverpb.KV/Range", "/etcdserverpb.KV/Put",
    "/etcdserverpb.KV/DeleteRange", "/etcdserverpb.KV/Txn",
    "/etcdserverpb.KV/Compact",
    "/etcdserverpb.Lease/LeaseGrant", "/etcdserverpb.Lease/LeaseRevoke",
    "/etcdserverpb.Lease/LeaseTimeToLive", "/etcdserverpb.Lease/LeaseLeases",
    "/etcdserverpb.Cluster/MemberList", "/etcdserverpb.Cluster/MemberAdd",
    "/etcdserverpb.Cluster/MemberRemove", "/etcdserverpb.Cluster/MemberUpdate",
    "/etcdserverpb.Cluster/MemberPromote",
    "/etcdserverpb.Maintenance/Alarm", "/etcdserverpb.Maintenance/Status",
    "/etcdserverpb.Maintenance/Defragment", "/etcdserverpb.Maintenance/Hash",
    "/etcdserverpb.Maintenance/HashKV", "/etcdserverpb.Maintenance/Snapshot",
    "/etcdserverpb.Maintenance/MoveLeader",
    "/etcdserverpb.Auth/AuthEnable", "/etcdserverpb.Auth/AuthDisable",
    "/etcdserverpb.Auth/AuthStatus", "/etcdserverpb.Auth/Authenticate",
    "/etcdserverpb.Auth/UserAdd", "/etcdserverpb.Auth/UserGet",
    "/etcdserverpb.Auth/UserList", "/etcdserverpb.Auth/UserDelete",
    "/etcdserverpb.Auth/UserChangePassword", "/etcdserverpb.Auth/UserGrantRole",
    "/etcdserverpb.Auth/UserRevokeRole", "/etcdserverpb.Auth/RoleAdd",
    "/etcdserverpb.Auth/RoleGet", "/etcdserverpb.Auth/RoleList",
    "/etcdserverpb.Auth/RoleDelete", "/etcdserverpb.Auth/RoleGrantPermission",
    "/etcdserverpb.Auth/RoleRevokePermission",
    "/v3lockpb.Lock/Lock", "/v3lockpb.Lock/Unlock",
    "/v3electionpb.Election/Campaign", "/v3electionpb.Election/Proclaim",
    "/v3electionpb.Election/Leader", "/v3electionpb.Election/Observe",
    "/v3electionpb.Election/Resign",
]


@pytest.mark.parametrize("path", ALL_UNARY, ids=[p.rsplit("/", 1)[1] for p in ALL_UNARY])
def test_malformed_body_every_method(srv, path):
    res = raw_call(srv.client_port, path, grpc_frame(b"\xff\xff\xff"))
    assert_grpc_error(res, 13, message_re=r"grpc: error unmarshalling request: .+")
