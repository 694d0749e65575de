"""Server process harness for cairn's integration tests.

The binary under test is taken from $CAIRN_BIN (default: <repo>/build/cairn).
Real etcd (/usr/bin/etcd) is available as the oracle through the ``etcd``
fixture.  Every server binds only to 127.0.0.1 on ports picked here and checked
free, and after start-up we verify (via ``ss -ltnp``) that the process
listening on the client port is the very process we spawned.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import grpc

# python3-etcd3's generated protobuf/gRPC code (Debian's python3-etcd3).
from etcd3.etcdrpc import rpc_pb2, rpc_pb2_grpc  # noqa: F401  (re-exported)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CAIRN_BIN = REPO_ROOT / "build" / "cairn"
ETCD_BIN = "/usr/bin/etcd"
ETCDCTL_BIN = "/usr/bin/etcdctl"

START_TIMEOUT = 30.0     # seconds for a server to become ready
STOP_TIMEOUT = 15.0      # seconds for a graceful stop before SIGKILL


# The servers a test run on both etcd and cairn runs on. In the sanitizer
# pass (tests/run-all.sh sets CAIRN_SANITIZED) etcd's half would only repeat
# the release pass, so that pass runs cairn's alone; differential tests that
# compare the two side by side keep both.
BOTH = ["cairn"] if os.environ.get("CAIRN_SANITIZED") else ["etcd", "cairn"]


def binary_under_test():
    """Path of the server under test ($CAIRN_BIN or <repo>/build/cairn)."""
    b = os.environ.get("CAIRN_BIN") or str(DEFAULT_CAIRN_BIN)
    return str(Path(b).resolve()) if os.sep in b else b


def is_etcd(binary):
    return os.path.basename(str(binary)) == "etcd"


def _tmp_root():
    """Parent dir for data dirs: $CAIRN_TEST_TMPDIR, else the default tempdir."""
    return os.environ.get("CAIRN_TEST_TMPDIR") or None


# --------------------------------------------------------------------------
# ports and process ownership
# --------------------------------------------------------------------------

def _listeners(port):
    """PIDs listening on 127.0.0.1:port (TCP), via `ss -ltnpH`."""
    out = subprocess.run(
        ["ss", "-ltnpH", "sport = :%d" % port],
        capture_output=True, text=True, timeout=10, check=False).stdout
    lines = [l for l in out.splitlines() if l.strip()]
    pids = set(int(p) for p in re.findall(r"pid=(\d+)", out))
    return lines, pids


def port_is_free(port):
    """True if nothing listens on the port and we can bind it on 127.0.0.1.

    SO_REUSEADDR is set because servers (Go's net.Listen, and any sane C
    server) set it too, so sockets in TIME_WAIT from a killed predecessor do
    not make the port unusable for a restart.
    """
    lines, _ = _listeners(port)
    if lines:
        return False
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def pick_free_ports(n):
    """Pick n distinct free TCP ports on 127.0.0.1 (kernel-chosen, verified)."""
    ports = []
    for _ in range(50 * n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        finally:
            s.close()
        if p not in ports and port_is_free(p):
            ports.append(p)
            if len(ports) == n:
                return ports
    raise RuntimeError("could not find %d free ports" % n)


# --------------------------------------------------------------------------
# server process wrapper
# --------------------------------------------------------------------------

class ServerError(RuntimeError):
    pass


class Server:
    """One etcd-compatible server process (etcd itself or cairn)."""

    def __init__(self, binary, data_dir=None, name="t", extra_args=(),
                 scheme="http", tls_creds=None):
        """scheme "https": client URLs are https and the readiness probe
        uses tls_creds(server) -> grpc channel credentials (called again on
        each attempt: files such as --auto-tls's appear during start-up)."""
        self.binary = str(binary)
        self.scheme = scheme
        self.tls_creds = tls_creds
        self.name = name
        self.extra_args = list(extra_args)
        self._own_root = tempfile.mkdtemp(prefix="cairn-it-", dir=_tmp_root())
        self.data_dir = data_dir or os.path.join(self._own_root, "data")
        self.log_path = os.path.join(self._own_root, "server.log")
        self.client_port = None
        self.peer_port = None
        self.proc = None
        self._log = None
        self._channel = None
        self.starts = 0

    # -- addresses --------------------------------------------------------
    @property
    def endpoint(self):
        return "127.0.0.1:%d" % self.client_port

    @property
    def url(self):
        return "%s://127.0.0.1:%d" % (self.scheme, self.client_port)

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def cmdline(self):
        c, p = self.client_port, self.peer_port
        return [
            self.binary,
            "--name", self.name,
            "--data-dir", self.data_dir,
            "--listen-client-urls", "%s://127.0.0.1:%d" % (self.scheme, c),
            "--advertise-client-urls", "%s://127.0.0.1:%d" % (self.scheme, c),
            "--listen-peer-urls", "http://127.0.0.1:%d" % p,
            "--initial-advertise-peer-urls", "http://127.0.0.1:%d" % p,
            "--initial-cluster", "%s=http://127.0.0.1:%d" % (self.name, p),
        ] + self._speed_args() + self.extra_args

    def _speed_args(self):
        # Real etcd waits a full (randomised) election timeout before its
        # single member elects itself after a restart; shorten that so
        # restart-heavy tests stay quick.  Only applied to etcd itself: the
        # server under test gets exactly the documented command line.
        if is_etcd(self.binary):
            return ["--heartbeat-interval", "10", "--election-timeout", "100"]
        return []

    def log_tail(self, n=40):
        try:
            with open(self.log_path, "rb") as f:
                data = f.read()
        except OSError:
            return "<no log>"
        lines = data.decode("utf-8", "replace").splitlines()
        return "\n".join(lines[-n:])

    # -- lifecycle ---------------------------------------------------------
    def start(self, timeout=START_TIMEOUT):
        if self.proc is not None and self.proc.poll() is None:
            raise ServerError("server already running (pid %d)" % self.proc.pid)
        if not (os.path.isfile(self.binary) and os.access(self.binary, os.X_OK)):
            raise ServerError(
                "server binary %r does not exist or is not executable "
                "(set CAIRN_BIN)" % self.binary)
        last_err = None
        for attempt in range(3):
            # Keep the same ports across restarts if they are still free.
            if (self.client_port is None or not port_is_free(self.client_port)
                    or not port_is_free(self.peer_port)):
                self.client_port, self.peer_port = pick_free_ports(2)
            try:
                self._spawn_and_wait(timeout)
                self.starts += 1
                return self
            except ServerError as e:
                last_err = e
                # A lost port race shows up as an early exit; retry then.
                if self.proc is not None and self.proc.poll() is None:
                    raise
                self.client_port = None
        raise last_err

    def _spawn_and_wait(self, timeout):
        self._log = open(self.log_path, "ab")
        self._log.write(("\n=== start: %s\n" % " ".join(self.cmdline())).encode())
        self._log.flush()
        self.proc = subprocess.Popen(
            self.cmdline(), stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, cwd=self._own_root,
            start_new_session=True)
        deadline = time.monotonic() + timeout
        last = None
        self._channel = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(
                    "server exited with %s during start-up\n%s"
                    % (self.proc.returncode, self.log_tail()))
            lines, pids = _listeners(self.client_port)
            if pids and pids != {self.proc.pid}:
                self._terminate_own()
                raise ServerError(
                    "port %d is owned by someone else: %r" % (self.client_port, lines))
            if pids == {self.proc.pid}:
                try:
                    ch = self.new_channel()
                    try:
                        rpc_pb2_grpc.MaintenanceStub(ch).Status(
                            rpc_pb2.StatusRequest(), timeout=1.0)
                    finally:
                        ch.close()
                    break
                except grpc.RpcError as e:
                    last = e
            time.sleep(0.05)
        else:
            self._terminate_own()
            raise ServerError("server not ready after %.0fs (last error %r)\n%s"
                              % (timeout, last, self.log_tail()))
        # Final ownership check: the process answering is ours.
        lines, pids = _listeners(self.client_port)
        if pids != {self.proc.pid}:
            self._terminate_own()
            raise ServerError("listener on %d is %r, expected pid %d"
                              % (self.client_port, lines, self.proc.pid))

    def assert_owned(self):
        lines, pids = _listeners(self.client_port)
        assert pids == {self.proc.pid}, (lines, self.proc.pid)

    def _terminate_own(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass

    def _close_channel(self):
        if self._channel is not None:
            try:
                self._channel.close()
            except Exception:
                pass
            self._channel = None

    def stop(self, timeout=STOP_TIMEOUT):
        """Graceful stop (SIGTERM), SIGKILL if it does not exit in time."""
        self._close_channel()
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)
        self._close_log()
        return self.proc.returncode

    def kill9(self):
        """SIGKILL the server (crash simulation) and reap it.

        The signal is sent before our own channel is closed, so requests in
        flight at that instant really are in flight when the process dies.
        """
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=STOP_TIMEOUT)
        self._close_channel()
        self._close_log()

    def restart(self, kill=False, timeout=START_TIMEOUT):
        """Stop (or kill -9) and start again on the same data dir."""
        if kill:
            self.kill9()
        else:
            self.stop()
        return self.start(timeout=timeout)

    def _close_log(self):
        if self._log is not None:
            self._log.close()
            self._log = None

    def cleanup(self):
        try:
            self.stop()
        finally:
            shutil.rmtree(self._own_root, ignore_errors=True)

    # -- clients -----------------------------------------------------------
    def channel(self):
        if self._channel is None:
            self._channel = self.new_channel()
        return self._channel

    def new_channel(self):
        if self.scheme == "https":
            return grpc.secure_channel(self.endpoint, self.tls_creds(self))
        return grpc.insecure_channel(self.endpoint)

    @property
    def kv(self):
        return rpc_pb2_grpc.KVStub(self.channel())

    @property
    def maint(self):
        return rpc_pb2_grpc.MaintenanceStub(self.channel())

    @property
    def cluster(self):
        return rpc_pb2_grpc.ClusterStub(self.channel())

    def __repr__(self):
        return "<Server %s pid=%s %s>" % (self.binary, self.pid, self.endpoint if self.client_port else "-")


