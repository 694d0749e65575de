"""pytest fixtures for the kube-apiserver storage-contract suite.

Every test gets a fresh server through the ``srv`` fixture, which is
parametrised over real etcd (/usr/bin/etcd, the oracle) and cairn
($CAIRN_BIN, default <repo>/build/cairn): each test runs on both and must
pass on both.  The process harness is tests/integration/cairn_it.py.
"""

import sys
from pathlib import Path

import pytest

_INTEGRATION = str(Path(__file__).resolve().parents[1] / "integration")
if _INTEGRATION not in sys.path:
    sys.path.insert(0, _INTEGRATION)

from cairn_it import ETCD_BIN, Server, binary_under_test, is_etcd  # noqa: E402


@pytest.fixture(params=["etcd", "cairn"])
def srv(request):
    binary = ETCD_BIN if request.param == "etcd" else binary_under_test()
    s = Server(binary)
    try:
        s.start()
        yield s
        s.assert_owned()
    finally:
        was_running = s.proc is not None and s.proc.poll() is None
        rc = s.stop()
        tail = s.log_tail(30)
        s.cleanup()
    # cairn must shut down cleanly on SIGTERM (exit 0).
    if was_running and not is_etcd(binary):
        assert rc == 0, "cairn exited %r on SIGTERM\n%s" % (rc, tail)


def pytest_report_header(config):
    return "cairn k8s suite: etcd = %s, cairn = %s" % (ETCD_BIN, binary_under_test())
