"""Drive the server under test with etcdctl (v3 API) and check its output.

Each test gets a fresh server, so revisions are exact: a fresh store is at
revision 1 and every write bumps it by one.  Expected outputs are etcdctl
3.4's (the client formats them; the server supplies the values).

etcdctl 3.4 has no `get --count-only` (added in 3.5); the count is checked
through `-w json` instead (and count_only itself via raw gRPC elsewhere).
"""

import base64
import json
import os
import re
import subprocess

import pytest

from cairn_it import ETCDCTL_BIN


def ctl(server, *args, stdin=None, ok=True):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "3"
    cmd = [ETCDCTL_BIN, "--endpoints", server.endpoint, "--dial-timeout", "5s",
           "--command-timeout", "15s"] + list(args)
    r = subprocess.run(cmd, input=stdin, capture_output=True, text=True, env=env,
                       timeout=30)
    if ok:
        assert r.returncode == 0, (cmd, r.returncode, r.stdout, r.stderr)
    return r


def out(server, *args, **kw):
    return ctl(server, *args, **kw).stdout


def js(server, *args, **kw):
    return json.loads(out(server, *(list(args) + ["-w", "json"]), **kw))


def b64(s):
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def strip_ids(hdr):
    """Header without cluster_id/member_id, after checking they are sane."""
    h = dict(hdr)
    for f in ("cluster_id", "member_id"):
        assert isinstance(h.get(f), int) and h[f] > 0, hdr
        del h[f]
    return h


def fill(server, *pairs):
    for k, v in pairs:
        assert out(server, "put", k, v) == "OK\n"


# --------------------------------------------------------------------------
# put / get
# --------------------------------------------------------------------------

def test_put_get(server):
    assert out(server, "put", "a", "1") == "OK\n"
    assert out(server, "get", "a") == "a\n1\n"
    assert out(server, "get", "missing") == ""
    assert out(server, "put", "a", "2", "--prev-kv") == "OK\na\n1\n"
    assert out(server, "get", "a") == "a\n2\n"
    # values with spaces, and values that look like flags
    assert out(server, "put", "sp", "v v") == "OK\n"
    assert out(server, "put", "d", "--", "-dash") == "OK\n"
    assert out(server, "get", "sp") == "sp\nv v\n"
    assert out(server, "get", "d") == "d\n-dash\n"


def test_get_prefix_range_fromkey(server):
    fill(server, ("a", "1"), ("a/x", "2"), ("a/y", "3"), ("b", "4"), ("c", "5"))
    assert out(server, "get", "a", "--prefix") == "a\n1\na/x\n2\na/y\n3\n"
    assert out(server, "get", "a/", "--prefix") == "a/x\n2\na/y\n3\n"
    assert out(server, "get", "a", "a/y") == "a\n1\na/x\n2\n"          # [a, a/y)
    assert out(server, "get", "a/y", "c") == "a/y\n3\nb\n4\n"
    assert out(server, "get", "--from-key", "b") == "b\n4\nc\n5\n"
    assert out(server, "get", "--from-key", "") == "a\n1\na/x\n2\na/y\n3\nb\n4\nc\n5\n"
    assert out(server, "get", "z", "--prefix") == ""
    assert out(server, "get", "c", "a") == ""                           # inverted


def test_get_rev(server):
    fill(server, ("a", "1"), ("a", "2"), ("b", "x"), ("a", "3"))      # revs 2..5
    assert out(server, "get", "a", "--rev", "2") == "a\n1\n"
    assert out(server, "get", "a", "--rev", "3") == "a\n2\n"
    assert out(server, "get", "a", "--rev", "4") == "a\n2\n"
    assert out(server, "get", "a", "--rev", "5") == "a\n3\n"
    assert out(server, "get", "b", "--rev", "3") == ""
    assert out(server, "get", "--from-key", "", "--rev", "4") == "a\n2\nb\nx\n"
    r = ctl(server, "get", "a", "--rev", "6", ok=False)
    assert r.returncode != 0
    assert "etcdserver: mvcc: required revision is a future revision" in r.stderr


def test_get_limit_and_count(server):
    fill(server, ("k1", "a"), ("k2", "b"), ("k3", "c"))
    assert out(server, "get", "k", "--prefix", "--limit", "2") == "k1\na\nk2\nb\n"
    j = js(server, "get", "k", "--prefix", "--limit", "2")
    assert j["count"] == 3 and j["more"] is True and len(j["kvs"]) == 2
    j = js(server, "get", "k", "--prefix", "--limit", "3")
    assert j["count"] == 3 and "more" not in j and len(j["kvs"]) == 3
    j = js(server, "get", "k", "--prefix")
    assert j["count"] == 3 and "more" not in j
    # counting with nothing but keys
    j = js(server, "get", "k", "--prefix", "--keys-only", "--limit", "1")
    assert j["count"] == 3 and j["more"] is True
    assert j["kvs"] == [{"key": b64("k1"), "create_revision": 2, "mod_revision": 2,
                         "version": 1}]


def test_get_sort(server):
    # create order: b, a, c ; then modify b twice and a once
    fill(server, ("b", "2"), ("a", "3"), ("c", "1"), ("b", "4"), ("b", "5"), ("a", "0"))
    def keys(*args):
        o = out(server, "get", "--from-key", "", "--keys-only", *args)
        return [l for l in o.split("\n") if l]
    assert keys() == ["a", "b", "c"]
    assert keys("--order", "DESCEND") == ["c", "b", "a"]
    assert keys("--sort-by", "KEY", "--order", "ASCEND") == ["a", "b", "c"]
    assert keys("--sort-by", "CREATE") == ["b", "a", "c"]
    assert keys("--sort-by", "CREATE", "--order", "DESCEND") == ["c", "a", "b"]
    assert keys("--sort-by", "MODIFY") == ["c", "b", "a"]
    assert keys("--sort-by", "MODIFY", "--order", "DESCEND") == ["a", "b", "c"]
    assert keys("--sort-by", "VERSION", "--order", "DESCEND") == ["b", "a", "c"]
    assert keys("--sort-by", "VERSION") == ["c", "a", "b"]
    assert out(server, "get", "--from-key", "", "--sort-by", "VALUE") == \
        "a\n0\nc\n1\nb\n5\n"
    assert out(server, "get", "--from-key", "", "--sort-by", "VALUE", "--order",
               "DESCEND", "--limit", "2") == "b\n5\nc\n1\n"


def test_get_keys_only_print_value_only(server):
    fill(server, ("p/1", "one"), ("p/2", "two"))
    assert out(server, "get", "p/", "--prefix", "--keys-only") == "p/1\n\np/2\n\n"
    assert out(server, "get", "p/", "--prefix", "--print-value-only") == "one\ntwo\n"
    assert out(server, "get", "p/1", "--print-value-only") == "one\n"


def test_get_json(server):
    fill(server, ("a", "1"), ("a", "11"), ("b", ""))
    j = js(server, "get", "a")
    assert set(j) == {"header", "kvs", "count"}
    hdr = strip_ids(j["header"])
    assert set(hdr) == {"revision", "raft_term"}
    assert hdr["revision"] == 4
    assert isinstance(hdr["raft_term"], int) and hdr["raft_term"] >= 1
    assert j["count"] == 1
    assert j["kvs"] == [{"key": b64("a"), "create_revision": 2, "mod_revision": 3,
                         "version": 2, "value": b64("11")}]
    # empty value: omitted by etcdctl's JSON (omitempty)
    j = js(server, "get", "b")
    assert j["kvs"] == [{"key": b64("b"), "create_revision": 4, "mod_revision": 4,
                         "version": 1}]
    # nothing found: no kvs, no count
    j = js(server, "get", "nope")
    assert set(j) == {"header"} and strip_ids(j["header"])["revision"] == 4
    # the member id in headers is the one `member list` reports
    ml = js(server, "member", "list")
    assert j["header"]["member_id"] == ml["members"][0]["ID"]
    assert j["header"]["cluster_id"] == ml["header"]["cluster_id"]


def test_binary_keys_hex(server):
    import grpc  # noqa: F401
    from etcd3.etcdrpc import rpc_pb2 as pb
    server.kv.Put(pb.PutRequest(key=b"\x00k\xff", value=b"\xfe\x00"), timeout=10)
    assert out(server, "get", "--from-key", "", "--hex") == \
        "\\x00\\x6b\\xff\n\\xfe\\x00\n"
    j = js(server, "get", "--from-key", "")
    assert j["kvs"][0]["key"] == b64(b"\x00k\xff")
    assert j["kvs"][0]["value"] == b64(b"\xfe\x00")


# --------------------------------------------------------------------------
# del
# --------------------------------------------------------------------------

def test_del(server):
    fill(server, ("a", "1"), ("a/x", "2"), ("a/y", "3"), ("b", "4"), ("c", "5"))
    assert out(server, "del", "zz") == "0\n"
    assert out(server, "del", "c") == "1\n"
    assert out(server, "del", "a", "--prefix", "--prev-kv") == \
        "3\na\n1\na/x\n2\na/y\n3\n"
    assert out(server, "get", "--from-key", "") == "b\n4\n"
    fill(server, ("m1", "x"), ("m2", "y"), ("m3", "z"))
    assert out(server, "del", "m1", "m3") == "2\n"                       # [m1, m3)
    assert out(server, "del", "--from-key", "b", "--prev-kv") == "2\nb\n4\nm3\nz\n"
    assert out(server, "get", "--from-key", "") == ""
    j = js(server, "get", "x")
    assert j["header"]["revision"] == 13


# --------------------------------------------------------------------------
# txn (interactive stdin form)
# --------------------------------------------------------------------------

def test_txn_success_branch(server):
    fill(server, ("a", "1"), ("b", "2"))                                # revs 2, 3
    stdin = ('value("a") = "1"\nversion("b") > "0"\nmod("a") < "100"\n'
             'create("a") = "2"\nvalue("b") != "9"\n\n'
             'put x 1\nget b\n\nput y 1\n\n')
    assert out(server, "txn", stdin=stdin) == "SUCCESS\n\nOK\n\nb\n2\n"
    assert out(server, "get", "x") == "x\n1\n"
    assert out(server, "get", "y") == ""


def test_txn_failure_branch(server):
    fill(server, ("a", "1"), ("b", "2"))
    stdin = ('value("a") = "nope"\n\nput x 1\n\n'
             'del a\nput "sp ace" "v v"\nget b --prefix\n\n')
    assert out(server, "txn", stdin=stdin) == \
        "FAILURE\n\n1\n\nOK\n\nb\n2\n"
    assert out(server, "get", "--from-key", "") == "b\n2\nsp ace\nv v\n"
    # a false compare on each target kind, each taking the failure branch
    for cmp_ in ('version("b") = "2"', 'create("b") > "3"', 'mod("b") < "3"',
                 'value("b") != "2"', 'value("missing") = ""'):
        r = out(server, "txn", stdin=cmp_ + "\n\nput x 1\n\nget b\n\n")
        assert r == "FAILURE\n\nb\n2\n", cmp_
    assert out(server, "get", "x") == ""


def test_txn_json(server):
    fill(server, ("b", "2"))                                            # rev 2
    j = js(server, "txn", stdin='mod("b") > "0"\n\nget b\nput c 3\n\n\n')
    assert strip_ids(j["header"])["revision"] == 3
    assert j["succeeded"] is True
    assert j["responses"] == [
        {"Response": {"ResponseRange": {
            "header": {"revision": 2},
            "kvs": [{"key": b64("b"), "create_revision": 2, "mod_revision": 2,
                     "version": 1, "value": b64("2")}],
            "count": 1}}},
        {"Response": {"ResponsePut": {"header": {"revision": 3}}}},
    ]
    j = js(server, "txn", stdin='value("zzz") = "x"\n\n\ndel b --prev-kv\n\n')
    assert "succeeded" not in j
    assert strip_ids(j["header"])["revision"] == 4
    assert j["responses"] == [{"Response": {"ResponseDeleteRange": {
        "header": {"revision": 4}, "deleted": 1,
        "prev_kvs": [{"key": b64("b"), "create_revision": 2, "mod_revision": 2,
                      "version": 1, "value": b64("2")}]}}}]


# --------------------------------------------------------------------------
# compaction
# --------------------------------------------------------------------------

def test_compaction(server):
    fill(server, ("a", "1"), ("a", "2"), ("a", "3"), ("a", "4"))       # revs 2..5
    assert out(server, "compaction", "3") == "compacted revision 3\n"
    assert out(server, "get", "a", "--rev", "3") == "a\n2\n"
    r = ctl(server, "get", "a", "--rev", "2", ok=False)
    assert r.returncode != 0
    assert "Error: etcdserver: mvcc: required revision has been compacted" in r.stderr
    r = ctl(server, "compaction", "3", ok=False)
    assert r.returncode != 0
    assert "Error: etcdserver: mvcc: required revision has been compacted" in r.stderr
    r = ctl(server, "compaction", "100", ok=False)
    assert r.returncode != 0
    assert "Error: etcdserver: mvcc: required revision is a future revision" in r.stderr
    assert out(server, "compaction", "--physical", "5") == "compacted revision 5\n"
    assert out(server, "get", "a", "--rev", "5") == "a\n4\n"
    assert out(server, "get", "a") == "a\n4\n"
    assert js(server, "get", "a")["header"]["revision"] == 5


# --------------------------------------------------------------------------
# endpoint / member
# --------------------------------------------------------------------------

def test_endpoint_status(server):
    fill(server, ("a", "1"), ("b", "2"))
    members = js(server, "member", "list")["members"]
    assert len(members) == 1
    mid = members[0]["ID"]
    line = out(server, "endpoint", "status")
    f = [x.strip() for x in line.rstrip("\n").split(",")]
    # endpoint, id, version, db size, is leader, is learner, raft term,
    # raft index, raft applied index, errors
    assert len(f) == 10, line
    assert f[0] == server.endpoint
    assert f[1] == "%x" % mid
    assert re.fullmatch(r"\d+\.\d+\.\d+", f[2]), f[2]
    assert re.fullmatch(r"\d+(\.\d+)? [kMG]?B", f[3]), f[3]
    assert f[4:6] == ["true", "false"]
    assert int(f[6]) >= 1 and int(f[7]) >= 1 and int(f[8]) >= 1
    assert f[9] == ""
    j = json.loads(out(server, "endpoint", "status", "-w", "json"))
    assert isinstance(j, list) and len(j) == 1
    assert j[0]["Endpoint"] == server.endpoint
    st = j[0]["Status"]
    assert {"header", "version", "dbSize", "leader", "raftIndex", "raftTerm"} <= set(st)
    assert set(st) <= {"header", "version", "dbSize", "leader", "raftIndex", "raftTerm",
                       "raftAppliedIndex", "dbSizeInUse", "errors", "isLearner"}
    hdr = strip_ids(st["header"])
    assert hdr["revision"] == 3
    assert st["header"]["member_id"] == mid == st["leader"]
    assert st["raftTerm"] == hdr["raft_term"] >= 1
    assert st["version"] == f[2]
    assert st["dbSize"] > 0 and st["raftIndex"] >= 1


def test_endpoint_health(server):
    r = ctl(server, "endpoint", "health")
    # etcdctl 3.4 prints the verdict on stderr
    assert re.search(r"^%s is healthy: successfully committed proposal: took = \S+$"
                     % re.escape(server.endpoint), r.stdout + r.stderr, re.M), r
    j = json.loads(out(server, "endpoint", "health", "-w", "json"))
    assert len(j) == 1
    assert j[0]["endpoint"] == server.endpoint
    assert j[0]["health"] is True
    assert "error" not in j[0]


def test_member_list(server):
    line = out(server, "member", "list")
    peer = "http://127.0.0.1:%d" % server.peer_port
    m = re.fullmatch(r"([0-9a-f]+), started, t, %s, %s, false\n"
                     % (re.escape(peer), re.escape(server.url)), line)
    assert m, line
    j = js(server, "member", "list")
    hdr = strip_ids(j["header"])
    assert set(hdr) <= {"raft_term", "revision"}
    assert j["members"] == [{"ID": int(m.group(1), 16), "name": "t",
                             "peerURLs": [peer], "clientURLs": [server.url]}]


# --------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------

@pytest.mark.parametrize("args,msg", [
    (("put", "", "x"), "etcdserver: key is not provided"),
    (("get", ""), "etcdserver: key is not provided"),
    (("del", ""), "etcdserver: key is not provided"),
])
def test_errors(server, args, msg):
    r = ctl(server, *args, ok=False)
    assert r.returncode != 0
    assert "Error: " + msg in r.stderr
    assert out(server, "put", "after", "ok") == "OK\n"
