"""python3-etcd3gw (Debian 2.0.0, OpenStack's JSON-gateway client) against
etcd 3.4 and cairn: the same script runs on both and its results are
compared. etcd3gw 2.0.0 defaults to /v3alpha/, which etcd 3.4 does not
serve, so api_path is '/v3/'.
"""

import threading
import time

import pytest

from cairn_it import BOTH, ETCD_BIN, binary_under_test

etcd3gw = pytest.importorskip("etcd3gw")
from etcd3gw.client import Etcd3Client  # noqa: E402


@pytest.fixture(scope="module", params=BOTH)
def client(request, module_server_factory):
    binary = ETCD_BIN if request.param == "etcd" else binary_under_test()
    srv = module_server_factory(binary)
    return Etcd3Client(host="127.0.0.1", port=srv.client_port,
                       api_path="/v3/", timeout=10)


RESULTS = {}


def record(client, name, value):
    RESULTS.setdefault(name, {})[client.port] = value
    return value


def test_status_and_members(client):
    st = client.status()
    assert st["header"]["revision"] == "1"
    assert st["version"]
    m = client.members()
    assert len(m) == 1 and m[0]["name"] == "t"
    assert m[0]["clientURLs"] == ["http://127.0.0.1:%d" % client.port]


def test_kv(client):
    assert client.put("e3/a", "1") is True
    assert client.put("e3/b", "<&>\u00e9") is True
    assert client.get("e3/a") == [b"1"]
    # etcd3gw encodes str values as latin-1
    assert client.get("e3/b") == [b"<&>\xe9"]
    assert client.get("e3/none") == []
    got = client.get("e3/a", metadata=True)
    assert got[0][0] == b"1"
    md = got[0][1]
    assert md["key"] == b"e3/a" and md["version"] == "1"
    assert md["create_revision"] == md["mod_revision"]
    assert [v for v, _ in client.get_prefix("e3/")] == [b"1", b"<&>\xe9"]
    assert [v for v, _ in client.get_prefix("e3/", sort_order="descend",
                                            sort_target="key")] == \
        [b"<&>\xe9", b"1"]
    assert client.delete("e3/a") is True
    assert client.delete("e3/a") is False
    assert client.create("e3/c", "c1") is True
    assert client.create("e3/c", "c2") is False
    assert client.replace("e3/c", "c1", "c3") is True
    assert client.replace("e3/c", "c1", "c4") is False
    assert client.get("e3/c") == [b"c3"]
    assert client.delete_prefix("e3/") is True


def test_lease(client):
    lease = client.lease(ttl=60)
    assert lease.id > 0
    ttl = lease.ttl()
    assert 55 <= ttl <= 60
    assert client.put("e3/l1", "x", lease=lease) is True
    assert client.put("e3/l2", "y", lease=lease) is True
    assert sorted(lease.keys()) == [b"e3/l1", b"e3/l2"]
    assert 55 <= lease.refresh() <= 60
    assert lease.revoke() is True
    assert client.get("e3/l1") == []
    assert lease.ttl() == -1
    # gone: TTL 0 is omitted by the gateway; etcd3gw then says -1
    assert lease.refresh() == -1


def _writer(client, key, values, delay=0.3):
    def run():
        time.sleep(delay)
        for v in values:
            client.put(key, v)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_watch(client):
    events, cancel = client.watch("e3/w")
    t = _writer(client, "e3/w", ["1", "2"])
    got = []
    try:
        for ev in events:
            got.append((ev["kv"]["key"], ev["kv"]["value"], ev.get("type")))
            if len(got) == 2:
                break
    finally:
        cancel()
    t.join(10)
    assert got == [(b"e3/w", b"1", None), (b"e3/w", b"2", None)]


def test_watch_once(client):
    t = _writer(client, "e3/o", ["once"])
    ev = client.watch_once("e3/o", timeout=10)
    t.join(10)
    assert ev["kv"]["key"] == b"e3/o" and ev["kv"]["value"] == b"once"
    with pytest.raises(etcd3gw.exceptions.WatchTimedOut):
        client.watch_once("e3/never", timeout=0.5)


def test_watch_prefix(client):
    events, cancel = client.watch_prefix("e3/p/")
    t = _writer(client, "e3/p/x", ["1"])
    try:
        ev = next(iter(events))
    finally:
        cancel()
    t.join(10)
    assert ev["kv"]["key"] == b"e3/p/x"
    t = _writer(client, "e3/p/y", ["2"])
    ev = client.watch_prefix_once("e3/p/", timeout=10)
    t.join(10)
    assert ev["kv"]["key"] == b"e3/p/y"


def test_watch_delete_event(client):
    client.put("e3/d", "v")
    events, cancel = client.watch("e3/d")

    def run():
        time.sleep(0.3)
        client.delete("e3/d")
    th = threading.Thread(target=run, daemon=True)
    th.start()
    try:
        ev = next(iter(events))
    finally:
        cancel()
    th.join(10)
    assert ev["type"] == "DELETE" and ev["kv"]["key"] == b"e3/d"


def test_lock(client):
    # etcd3gw's Lock is a Txn on /locks/<name>, not the Lock service
    lock = client.lock("e3lock", ttl=30)
    assert lock.acquire() is True
    assert lock.is_acquired() is True
    other = client.lock("e3lock", ttl=30)
    assert other.acquire() is False
    assert lock.release() is True
    assert other.acquire() is True
    assert other.release() is True


def test_errors(client):
    with pytest.raises(etcd3gw.exceptions.Etcd3Exception):
        client.post(client.get_url("/kv/range"), json={})
    with pytest.raises(etcd3gw.exceptions.Etcd3Exception):
        client.post(client.get_url("/kv/nope"), json={})
