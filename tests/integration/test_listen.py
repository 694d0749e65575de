"""Listeners and odd clients: several --listen-client-urls (IPv4 and IPv6),
and the ':authority' that etcd's 3.5.0 client sends."""

import grpc

from cairn_it import (Server, _listeners, binary_under_test, pick_free_ports,
                      rpc_pb2 as pb, rpc_pb2_grpc)
from test_badinput import RANGE, grpc_frame, raw_call


class TwoListenerServer(Server):
    """Listens on its usual 127.0.0.1 port and on [::1]:<v6_port>."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.v6_port = pick_free_ports(1)[0]

    def cmdline(self):
        # The last --listen-client-urls wins (as with etcd's flag parser).
        return super().cmdline() + [
            "--listen-client-urls",
            "http://127.0.0.1:%d,http://[::1]:%d" % (self.client_port, self.v6_port)]


def test_ipv4_and_ipv6_listeners():
    s = TwoListenerServer(binary_under_test())
    try:
        s.start()
        _, pids = _listeners(s.v6_port)
        assert pids == {s.proc.pid}
        s.kv.Put(pb.PutRequest(key=b"v6", value=b"yes"), timeout=10)
        ch = grpc.insecure_channel("[::1]:%d" % s.v6_port)
        try:
            r = rpc_pb2_grpc.KVStub(ch).Range(pb.RangeRequest(key=b"v6"), timeout=10)
        finally:
            ch.close()
        assert [kv.value for kv in r.kvs] == [b"yes"]
    finally:
        rc = s.stop()
        s.cleanup()
    assert rc in (0, -15)  # etcd 3.4, when under test, dies by the signal


def test_etcd_client_350_authority(server):
    """etcd client v3.5.0 sends ':authority #initially=[...]' (etcd #13192)."""
    server.kv.Put(pb.PutRequest(key=b"auth", value=b"ok"), timeout=10)
    res = raw_call(server.client_port, RANGE,
                   grpc_frame(pb.RangeRequest(key=b"auth").SerializeToString()),
                   authority="#initially=[http://127.0.0.1:%d]" % server.client_port)
    assert res.status == 0, res
    resp = pb.RangeResponse.FromString(res.messages()[0])
    assert [kv.value for kv in resp.kvs] == [b"ok"]
