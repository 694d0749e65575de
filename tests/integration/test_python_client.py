"""The python3-etcd3 client (Debian's python3-etcd3 0.12) against the server."""

import grpc
import pytest

import etcd3
import etcd3.exceptions

from cairn_it import rpc_pb2 as pb


@pytest.fixture
def client(server):
    c = etcd3.client(host="127.0.0.1", port=server.client_port, timeout=10)
    try:
        yield c
    finally:
        c.close()


def test_put_get(client):
    r = client.put("k", "v1")
    assert r.header.revision == 2
    assert not r.HasField("prev_kv")
    value, meta = client.get("k")
    assert value == b"v1"
    assert (meta.key, meta.version, meta.create_revision, meta.mod_revision,
            meta.lease_id) == (b"k", 1, 2, 2, 0)
    assert meta.response_header.revision == 2
    r = client.put("k", b"v2\x00\xff", prev_kv=True)
    assert r.header.revision == 3
    assert (r.prev_kv.key, r.prev_kv.value, r.prev_kv.version) == (b"k", b"v1", 1)
    value, meta = client.get("k")
    assert value == b"v2\x00\xff"
    assert (meta.version, meta.create_revision, meta.mod_revision) == (2, 2, 3)
    assert client.get("missing") == (None, None)
    value, _ = client.get("k", serializable=True)
    assert value == b"v2\x00\xff"


def test_get_prefix(client):
    for k, v in [("p/b", "2"), ("p/a", "3"), ("p/c", "1"), ("q", "x"), ("p", "0")]:
        client.put(k, v)
    got = [(m.key, v) for v, m in client.get_prefix("p/")]
    assert got == [(b"p/a", b"3"), (b"p/b", b"2"), (b"p/c", b"1")]
    got = [m.key for v, m in client.get_prefix("p/", sort_order="descend")]
    assert got == [b"p/c", b"p/b", b"p/a"]
    got = [v for v, m in client.get_prefix("p/", sort_order="ascend", sort_target="value")]
    assert got == [b"1", b"2", b"3"]
    got = [m.key for v, m in client.get_prefix("p/", sort_order="ascend", sort_target="create")]
    assert got == [b"p/b", b"p/a", b"p/c"]
    got = [(v, m.key) for v, m in client.get_prefix("p/", keys_only=True)]
    assert got == [(b"", b"p/a"), (b"", b"p/b"), (b"", b"p/c")]
    assert [m.key for v, m in client.get_prefix("p")] == [b"p", b"p/a", b"p/b", b"p/c"]
    assert list(client.get_prefix("nothing/")) == []
    got = [m.key for v, m in client.get_range("p/b", "q")]
    assert got == [b"p/b", b"p/c"]
    got = [m.key for v, m in client.get_all()]
    assert got == [b"p", b"p/a", b"p/b", b"p/c", b"q"]


def test_delete(client):
    client.put("d/1", "a")
    client.put("d/2", "b")
    assert client.delete("d/1") is True
    assert client.delete("d/1") is False
    r = client.delete("d/2", prev_kv=True, return_response=True)
    assert r.deleted == 1
    assert [(kv.key, kv.value) for kv in r.prev_kvs] == [(b"d/2", b"b")]
    assert r.header.revision == 5
    assert client.get("d/2") == (None, None)


def test_delete_prefix(client):
    for i in range(5):
        client.put("dp/%d" % i, str(i))
    client.put("dpx", "keep")
    client.put("dp", "keep too")
    r = client.delete_prefix("dp/")
    assert r.deleted == 5
    assert r.header.revision == 9
    assert list(client.get_prefix("dp/")) == []
    assert client.get("dpx")[0] == b"keep"
    assert client.get("dp")[0] == b"keep too"
    assert client.delete_prefix("dp/").deleted == 0


def test_transaction(client):
    client.put("t/a", "1")
    client.put("t/b", "2")
    tx = client.transactions
    ok, resps = client.transaction(
        compare=[tx.value("t/a") == "1", tx.version("t/b") > 0,
                 tx.create("t/a") < 3, tx.mod("t/b") == 3],
        success=[tx.put("t/c", "3"), tx.get("t/a"), tx.delete("t/b")],
        failure=[tx.put("t/fail", "x")])
    assert ok is True
    assert len(resps) == 3
    assert resps[0].response_put.header.revision == 4
    assert [(v, m.key) for v, m in resps[1]] == [(b"1", b"t/a")]
    assert resps[2].response_delete_range.deleted == 1
    assert client.get("t/b") == (None, None)
    assert client.get("t/c")[0] == b"3"

    ok, resps = client.transaction(
        compare=[tx.value("t/a") != "1"],
        success=[tx.put("t/s", "x")],
        failure=[tx.get("t/c"), tx.put("t/f", "y")])
    assert ok is False
    assert [(v, m.key) for v, m in resps[0]] == [(b"3", b"t/c")]
    assert resps[1].response_put.header.revision == 5
    assert client.get("t/s") == (None, None)
    assert client.get("t/f")[0] == b"y"

    # nested transaction
    ok, resps = client.transaction(
        compare=[],
        success=[tx.txn(compare=[tx.version("t/f") == 1],
                        success=[tx.put("t/n", "nested")], failure=[])],
        failure=[])
    assert ok is True
    assert resps[0].response_txn.succeeded is True
    assert client.get("t/n")[0] == b"nested"

    # duplicate keys are rejected and nothing is applied
    with pytest.raises(grpc.RpcError) as ei:
        client.transaction(compare=[], success=[tx.put("t/d", "1"), tx.put("t/d", "2")],
                           failure=[])
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ei.value.details() == "etcdserver: duplicate key given in txn request"
    assert client.get("t/d") == (None, None)


def test_replace(client):
    client.put("r", "old")
    assert client.replace("r", "nope", "new") is False
    assert client.get("r")[0] == b"old"
    assert client.replace("r", "old", "new") is True
    assert client.get("r")[0] == b"new"
    assert client.replace("missing", "", "x") is False
    assert client.get("missing") == (None, None)


def test_put_if_not_exists(client):
    assert client.put_if_not_exists("n", "1") is True
    assert client.put_if_not_exists("n", "2") is False
    assert client.get("n")[0] == b"1"


def test_compact(client):
    client.put("c", "1")
    client.put("c", "2")
    client.put("c", "3")
    client.compact(3)
    kv = client.kvstub
    assert kv.Range(pb.RangeRequest(key=b"c", revision=3), timeout=10).kvs[0].value == b"2"
    with pytest.raises(grpc.RpcError) as ei:
        kv.Range(pb.RangeRequest(key=b"c", revision=2), timeout=10)
    assert ei.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert ei.value.details() == "etcdserver: mvcc: required revision has been compacted"
    client.compact(4, physical=True)
    assert client.get("c")[0] == b"3"


def test_status(client, server):
    client.put("s", "1")
    st = client.status()
    assert isinstance(st.version, str) and st.version.count(".") == 2
    assert st.db_size > 0
    assert st.raft_index >= 1
    assert st.raft_term >= 1
    members = list(client.members)
    assert st.leader is not None
    assert st.leader.id == members[0].id


def test_members(client, server):
    members = list(client.members)
    assert len(members) == 1
    m = members[0]
    assert m.id != 0
    assert m.name == "t"
    assert list(m.peer_urls) == ["http://127.0.0.1:%d" % server.peer_port]
    assert list(m.client_urls) == [server.url]
    # the member id is the one in every response header
    assert client.put("x", "y").header.member_id == m.id


def test_errors(client):
    with pytest.raises(grpc.RpcError) as ei:
        client.put("", "v")
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ei.value.details() == "etcdserver: key is not provided"
    with pytest.raises(grpc.RpcError) as ei:
        client.put("k", "v", lease=12345)
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND
    assert ei.value.details() == "etcdserver: requested lease not found"
    assert client.put("k", "v").header.revision == 2
