"""Operations (issue #6): etcd's zap JSON logs, --log-outputs, --logger,
--config-file, systemd's readiness protocol and `make install`.

Servers here are spawned directly (not through cairn_it.Server) because
these tests read stderr and stdout separately.  Every wait is a bounded
loop; nothing asserts on time.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid

import grpc
import pytest

from cairn_it import (ETCD_BIN, REPO_ROOT, binary_under_test, is_etcd,
                      pick_free_ports, rpc_pb2 as pb, rpc_pb2_grpc)

POLL = 0.05
MAX_POLLS = 600          # 30 s at POLL

TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3,6}(Z|[-+]\d{4})$")
CALLER_RE = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+\.(c|go):\d+$")
LEVELS = {"debug", "info", "warn", "error", "fatal", "panic", "dpanic"}

READY = "ready to serve client requests"
INSECURE = "serving client traffic insecurely; this is strongly discouraged!"
PUBLISHED = "published local member to cluster through raft"

pytestmark = pytest.mark.skipif(is_etcd(binary_under_test()),
                                reason="cairn's own operations")


class Proc:
    """One server process with stdout and stderr in separate files."""

    def __init__(self, binary, args, env=None, root=None):
        self.root = root or tempfile.mkdtemp(prefix="cairn-ops-")
        self.out_path = os.path.join(self.root, "stdout")
        self.err_path = os.path.join(self.root, "stderr")
        full_env = dict(os.environ)
        for k in list(full_env):
            if k.startswith("ETCD_") or k == "NOTIFY_SOCKET":
                del full_env[k]
        full_env.update(env or {})
        with open(self.out_path, "wb") as o, open(self.err_path, "wb") as e:
            self.p = subprocess.Popen([binary] + list(args), stdin=subprocess.DEVNULL,
                                      stdout=o, stderr=e, env=full_env, cwd=self.root,
                                      start_new_session=True)

    def text(self, which="err"):
        with open(self.err_path if which == "err" else self.out_path, "rb") as f:
            return f.read().decode("utf-8", "strict")

    def wait_exit(self, timeout=30):
        return self.p.wait(timeout=timeout)

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                return self.p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(timeout=30)
        return self.p.returncode

    def cleanup(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)


def parse_lines(text):
    """Every line must be one JSON object with zap's leading keys."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise AssertionError("line %d is not JSON (%s): %r" % (n, e, line))
        assert isinstance(obj, dict), line
        assert list(obj)[:4] == ["level", "ts", "caller", "msg"], line
        assert obj["level"] in LEVELS, line
        assert TS_RE.match(obj["ts"]), line
        assert CALLER_RE.match(obj["caller"]), line
        assert isinstance(obj["msg"], str), line
        out.append(obj)
    return out


def lines_in(path):
    """The complete lines of a log file so far, parsed (a trailing partial
    line is left for later)."""
    try:
        with open(path, "rb") as f:
            data = f.read().decode("utf-8")
    except FileNotFoundError:
        return []
    return parse_lines(data[:data.rfind("\n") + 1])


def wait_for_msg(proc, msg, path=None, on_seen=None):
    """Polls until a line with @msg is logged (to @path, default stderr);
    @on_seen runs at once when it is (the point is what holds right then)."""
    import time
    path = path or proc.err_path
    for _ in range(MAX_POLLS):
        lines = lines_in(path)
        hit = [l for l in lines if l["msg"] == msg]
        if hit:
            if on_seen:
                on_seen()
            return lines
        if proc.p.poll() is not None:
            raise AssertionError("exited %r before %r:\n%s"
                                 % (proc.p.returncode, msg, proc.text()))
        time.sleep(POLL)
    raise AssertionError("no %r line in time:\n%s" % (msg, proc.text()))


def connect_ok(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.close()


def member_args(root, name="ops"):
    c, p = pick_free_ports(2)
    return c, [
        "--name", name, "--data-dir", os.path.join(root, "data"),
        "--listen-client-urls", "http://127.0.0.1:%d" % c,
        "--advertise-client-urls", "http://127.0.0.1:%d" % c,
        "--listen-peer-urls", "http://127.0.0.1:%d" % p,
        "--initial-advertise-peer-urls", "http://127.0.0.1:%d" % p,
        "--initial-cluster", "%s=http://127.0.0.1:%d" % (name, p),
    ]


def etcdctl(port, *args):
    env = dict(os.environ, ETCDCTL_API="3")
    r = subprocess.run(["etcdctl", "--endpoints", "127.0.0.1:%d" % port] + list(args),
                       capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 0, r
    return r.stdout


def start(args, env=None, ready_path=None):
    """Starts cairn and waits for "ready to serve client requests"; the
    client port must accept at the moment that line is seen."""
    root = tempfile.mkdtemp(prefix="cairn-ops-")
    port, margs = member_args(root)
    proc = Proc(binary_under_test(), margs + list(args), env=env, root=root)
    proc.port = port
    try:
        wait_for_msg(proc, READY, path=ready_path, on_seen=lambda: connect_ok(port))
    except BaseException:
        proc.cleanup()
        raise
    return proc


# --------------------------------------------------------------------------
# logs
# --------------------------------------------------------------------------

def test_stderr_is_zap_json_with_etcds_startup_lines():
    proc = start([])
    try:
        etcdctl(proc.port, "put", "k", "v")
        assert "v" in etcdctl(proc.port, "get", "k")
        rc = proc.stop()
        assert rc == 0, proc.text()
        lines = parse_lines(proc.text())
        assert proc.text("out") == ""          # logs never go to stdout
        msgs = [l["msg"] for l in lines]
        order = ["Running: ", "configuring client listeners", "starting an etcd server",
                 "opened backend db", "starting local member", PUBLISHED, READY,
                 "enabled capabilities for version", INSECURE,
                 "received signal; shutting down"]
        for m in order:
            assert m in msgs, (m, msgs)
        idx = [msgs.index(m) for m in order]
        assert idx == sorted(idx), list(zip(order, idx))
        by = {l["msg"]: l for l in lines}
        assert by["Running: "]["args"][0] == binary_under_test()
        assert by[INSECURE]["address"] == "127.0.0.1:%d" % proc.port
        pub = by[PUBLISHED]
        assert re.fullmatch(r"[0-9a-f]{16}", pub["local-member-id"])
        assert re.fullmatch(r"[0-9a-f]{16}", pub["cluster-id"])
        assert pub["local-member-attributes"] == \
            "{Name:ops ClientURLs:[http://127.0.0.1:%d]}" % proc.port
        assert pub["request-path"] == "/0/members/%s/attributes" % pub["local-member-id"]
        assert re.fullmatch(r"3\.\d+", by["enabled capabilities for version"]["cluster-version"])
        st = by["starting an etcd server"]
        assert st["name"] == "ops" and st["member-initialized"] is False
        assert st["listen-client-urls"] == ["http://127.0.0.1:%d" % proc.port]
        assert by["opened backend db"]["path"].startswith(os.path.join(proc.root, "data"))
        assert by["received signal; shutting down"]["signal"] == "terminated"
        # per-request lines stay at debug
        assert not [l for l in lines if l["level"] == "debug"]
    finally:
        proc.cleanup()


def test_restart_says_restarting_and_debug_level_logs_debug_lines():
    proc = start(["--log-level", "debug"])
    try:
        assert proc.stop() == 0
        first = parse_lines(proc.text())
        assert "starting local member" in [l["msg"] for l in first]
        os.truncate(proc.err_path, 0)
        # same data dir: the member is initialized now
        port, margs = member_args(proc.root)
        again = Proc(binary_under_test(), margs, root=proc.root)
        try:
            wait_for_msg(again, READY, on_seen=lambda: connect_ok(port))
        except BaseException:
            again.stop()
            raise
        assert again.stop() == 0
        lines = parse_lines(again.text())
        msgs = [l["msg"] for l in lines]
        assert "restarting local member" in msgs and "starting local member" not in msgs
        st = [l for l in lines if l["msg"] == "starting an etcd server"][0]
        assert st["member-initialized"] is True
    finally:
        proc.cleanup()


COMMON = ["configuring client listeners", "starting an etcd server",
          "opened backend db", "starting local member", "starting etcd server",
          "now serving peer/client/metrics", PUBLISHED,
          "enabled capabilities for version", INSECURE]


@pytest.mark.skipif(not os.path.exists(ETCD_BIN), reason="no etcd")
def test_startup_lines_match_real_etcd():
    """etcd 3.4 with --logger zap: same leading keys, the same start-up
    messages in the same order, and cairn's fields a subset of etcd's
    (identical for the lines tools read)."""
    root = tempfile.mkdtemp(prefix="etcd-ops-")
    port, margs = member_args(root)
    etcd = Proc(ETCD_BIN, margs + ["--logger", "zap", "--heartbeat-interval", "10",
                                   "--election-timeout", "100"], root=root)
    try:
        wait_for_msg(etcd, INSECURE)
        etcd.stop()
        # etcd 3.4's grpc-gateway client prints plain grpclog warnings
        # ("WARNING: ... addrConn.createTransport ...") as it stops: only
        # the JSON lines are etcd's zap lines.
        e_lines = parse_lines("\n".join(
            l for l in etcd.text().splitlines() if l.startswith("{")))
    finally:
        etcd.cleanup()
    proc = start([])
    try:
        assert proc.stop() == 0
        c_lines = parse_lines(proc.text())
    finally:
        proc.cleanup()
    e_by, c_by = {}, {}
    for l in e_lines:
        e_by.setdefault(l["msg"], l)
    for l in c_lines:
        c_by.setdefault(l["msg"], l)
    for m in COMMON:
        assert m in e_by, ("etcd", m)
        assert m in c_by, ("cairn", m)
        ek, ck = set(e_by[m]), set(c_by[m])
        assert ck <= ek, (m, ck - ek)
        if m != "starting an etcd server":
            assert ck == ek, (m, ek ^ ck)
    # etcd logs the first six from StartEtcd in sequence; the last three
    # come from goroutines after the election, in no fixed order.
    sync, late = COMMON[:6], COMMON[6:]
    for lines in (e_lines, c_lines):
        msgs = [l["msg"] for l in lines]
        first = [msgs.index(m) for m in sync]
        assert first == sorted(first), list(zip(sync, first))
        assert min(msgs.index(m) for m in late) > max(first)


def test_log_outputs_file_only():
    root = tempfile.mkdtemp(prefix="cairn-ops-log-")
    log = os.path.join(root, "cairn.log")
    proc = start(["--log-outputs", log], ready_path=log)
    try:
        assert proc.stop() == 0
        assert proc.text() == ""               # nothing on stderr
        msgs = [l["msg"] for l in lines_in(log)]
        assert READY in msgs and "received signal; shutting down" in msgs
    finally:
        proc.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def test_log_outputs_file_and_stdout():
    root = tempfile.mkdtemp(prefix="cairn-ops-log-")
    log = os.path.join(root, "cairn.log")
    proc = start(["--log-outputs", "stdout,%s" % log], ready_path=log)
    try:
        assert proc.stop() == 0
        assert proc.text() == ""
        out = [l["msg"] for l in parse_lines(proc.text("out"))]
        assert out == [l["msg"] for l in lines_in(log)]
        assert READY in out
    finally:
        proc.cleanup()
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("args,error", [
    (["--logger", "capnslog"], "--logger=capnslog is removed in v3.5"),
    (["--logger", "glog"], 'unknown logger option "glog"'),
    (["--log-outputs", "default,stderr"], 'multi logoutput for "default" is not supported yet'),
    (["--log-level", "loud"], 'unrecognized level: "loud"'),
])
def test_bad_logging_flags_fail_like_etcd(args, error):
    """etcd 3.5: "failed to verify flags" with the error, exit 1."""
    root = tempfile.mkdtemp(prefix="cairn-ops-")
    _, margs = member_args(root)
    proc = Proc(binary_under_test(), margs + args, root=root)
    try:
        assert proc.wait_exit() == 1
        lines = parse_lines(proc.text())
        bad = [l for l in lines if l["msg"] == "failed to verify flags"]
        assert bad and bad[0]["level"] == "warn" and bad[0]["error"] == error, lines
        assert not os.path.exists(os.path.join(root, "data"))
    finally:
        proc.cleanup()


# --------------------------------------------------------------------------
# --config-file
# --------------------------------------------------------------------------

def write_config(root, port, peer, **extra):
    lines = [
        "name: from-file",
        "data-dir: %s" % os.path.join(root, "file-data"),
        "listen-client-urls: http://127.0.0.1:%d" % port,
        "advertise-client-urls: http://127.0.0.1:%d" % port,
        "listen-peer-urls: http://127.0.0.1:%d" % peer,
        "initial-advertise-peer-urls: http://127.0.0.1:%d" % peer,
        "initial-cluster: from-file=http://127.0.0.1:%d" % peer,
        "max-txn-ops: 3",
        "log-level: info",
        "log-outputs: [stderr]",
    ] + ["%s: %s" % kv for kv in extra.items()]
    path = os.path.join(root, "cairn.conf.yml")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def txn_ops(n):
    return pb.TxnRequest(success=[pb.RequestOp(request_put=pb.PutRequest(
        key=b"t%d" % i, value=b"v")) for i in range(n)])


@pytest.mark.parametrize("how", ["flag", "env"])
def test_config_file_starts_server_with_its_settings(how):
    root = tempfile.mkdtemp(prefix="cairn-ops-cf-")
    port, peer = pick_free_ports(2)
    path = write_config(root, port, peer)
    # flags and ETCD_* variables that would say otherwise are ignored
    other = pick_free_ports(1)[0]
    args = ["--name", "from-flag", "--max-txn-ops", "100",
            "--listen-client-urls", "http://127.0.0.1:%d" % other]
    env = {"ETCD_NAME": "from-env", "ETCD_MAX_TXN_OPS": "100"}
    if how == "flag":
        args = ["--config-file", path] + args
    else:
        env["ETCD_CONFIG_FILE"] = path
    proc = Proc(binary_under_test(), args, env=env, root=root)
    try:
        lines = wait_for_msg(proc, READY, on_seen=lambda: connect_ok(port))
        loaded = [l for l in lines if l["msg"].startswith("loaded server configuration")]
        assert loaded and loaded[0]["path"] == path
        assert loaded[0]["msg"] == ("loaded server configuration, other configuration "
                                    "command line flags and environment variables "
                                    "will be ignored if provided")
        ch = grpc.insecure_channel("127.0.0.1:%d" % port)
        try:
            members = rpc_pb2_grpc.ClusterStub(ch).MemberList(pb.MemberListRequest(),
                                                              timeout=10).members
            assert [m.name for m in members] == ["from-file"]
            kv = rpc_pb2_grpc.KVStub(ch)
            kv.Txn(txn_ops(3), timeout=10)
            with pytest.raises(grpc.RpcError) as ei:
                kv.Txn(txn_ops(4), timeout=10)
            assert ei.value.details() == "etcdserver: too many operations in txn request"
        finally:
            ch.close()
        assert os.path.isdir(os.path.join(root, "file-data"))
        assert not os.path.exists(os.path.join(root, "from-flag.etcd"))
        socks = subprocess.run(["ss", "-ltnH", "sport = :%d" % other],
                               capture_output=True, text=True).stdout
        assert socks.strip() == ""
        assert proc.stop() == 0
        parse_lines(proc.text())
    finally:
        proc.cleanup()


@pytest.mark.parametrize("body,error", [
    ("max-txn-ops: many\n", "error unmarshaling JSON: while decoding JSON: json: cannot "
     "unmarshal string into Go struct field configYAML.max-txn-ops of type uint"),
    ("name: [x\n", "error converting YAML to JSON: yaml: line 1: did not find "
     "expected ',' or ']'"),
])
def test_bad_config_file_fails_like_etcd(body, error):
    root = tempfile.mkdtemp(prefix="cairn-ops-cf-")
    path = os.path.join(root, "bad.yml")
    with open(path, "w") as f:
        f.write(body)
    proc = Proc(binary_under_test(), ["--config-file", path], root=root)
    try:
        assert proc.wait_exit() == 1
        lines = parse_lines(proc.text())
        bad = [l for l in lines if l["msg"] == "failed to verify flags"]
        assert bad and bad[0]["error"] == error, lines
    finally:
        proc.cleanup()


# --------------------------------------------------------------------------
# systemd readiness
# --------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["abstract", "path"])
def test_sd_notify_ready_and_stopping(kind):
    root = tempfile.mkdtemp(prefix="cairn-ops-sd-")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        if kind == "abstract":
            name = "cairn-test-%s" % uuid.uuid4().hex
            sock.bind("\0" + name)
            notify = "@" + name
        else:
            notify = os.path.join(root, "notify.sock")
            sock.bind(notify)
        sock.settimeout(30)
        port, margs = member_args(root)
        proc = Proc(binary_under_test(), margs, env={"NOTIFY_SOCKET": notify}, root=root)
        try:
            msg = sock.recv(4096)
            assert msg == b"READY=1"
            connect_ok(port)                   # listening when READY=1 came
            msgs = [l["msg"] for l in lines_in(proc.err_path)]
            assert READY in msgs
            proc.p.send_signal(signal.SIGTERM)
            assert sock.recv(4096) == b"STOPPING=1"
            assert proc.wait_exit() == 0
            msgs = [l["msg"] for l in parse_lines(proc.text())]
            assert "successfully notified init daemon" in msgs
        finally:
            proc.cleanup()
    finally:
        sock.close()
        shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------
# make install
# --------------------------------------------------------------------------

def test_make_install_and_uninstall():
    dest = tempfile.mkdtemp(prefix="cairn-ops-inst-")
    try:
        r = subprocess.run(["make", "-s", "-C", str(REPO_ROOT), "install",
                            "DESTDIR=%s" % dest, "PREFIX=/usr"],
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r
        binary = os.path.join(dest, "usr/bin/cairn")
        man = os.path.join(dest, "usr/share/man/man1/cairn.1")
        unit = os.path.join(dest, "usr/lib/systemd/system/cairn.service")
        assert os.access(binary, os.X_OK)
        v = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
        assert v.returncode == 0 and "etcd API Version" in v.stdout
        with open(unit) as f:
            u = f.read()
        for want in ("Type=notify", "ExecStart=/usr/bin/cairn $DAEMON_ARGS",
                     "EnvironmentFile=-/etc/default/%p", "Restart=on-failure",
                     "LimitNOFILE="):
            assert want in u, want
        assert "@BINDIR@" not in u
        # the man page renders without warnings and documents the essentials
        render = None
        if shutil.which("groff"):
            render = subprocess.run(["groff", "-man", "-Tutf8", "-ww", man],
                                    capture_output=True, text=True, timeout=60)
        elif shutil.which("man"):
            render = subprocess.run(["man", "-l", man], capture_output=True, text=True,
                                    timeout=60, env=dict(os.environ, MANPAGER="cat"))
        if render is None:
            pytest.skip("neither groff nor man to render the page")
        assert render.returncode == 0 and render.stderr == "", render.stderr
        text = re.sub(r".\x08", "", render.stdout)
        for want in ("NAME", "--config-file", "--log-outputs", "ETCD_CONFIG_FILE",
                     "NOTIFY_SOCKET", "SIGTERM", "FILES"):
            assert want in text, want
        r = subprocess.run(["make", "-s", "-C", str(REPO_ROOT), "uninstall",
                            "DESTDIR=%s" % dest, "PREFIX=/usr"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r
        assert not os.path.exists(binary) and not os.path.exists(man)
        assert not os.path.exists(unit)
    finally:
        shutil.rmtree(dest, ignore_errors=True)
