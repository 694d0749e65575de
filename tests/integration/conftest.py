"""pytest fixtures for cairn's integration tests (see cairn_it.py)."""

import pytest

from cairn_it import ETCD_BIN, Server, binary_under_test, is_etcd


# --------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------

class ServerFactory:
    def __init__(self):
        self.servers = []

    def __call__(self, binary=None, start=True, **kw):
        s = Server(binary or binary_under_test(), **kw)
        self.servers.append(s)
        if start:
            s.start()
        return s

    def cleanup(self):
        bad = []
        for s in self.servers:
            was_running = s.proc is not None and s.proc.poll() is None
            rc = s.stop()
            # cairn must shut down cleanly on SIGTERM: exit 0, which under
            # ASan/UBSan also means no leak and no undefined behaviour.
            if was_running and not is_etcd(s.binary) and rc != 0:
                bad.append((s, rc, s.log_tail(30)))
            s.cleanup()
        assert not bad, "server did not exit 0 on SIGTERM: %r" % (bad,)


@pytest.fixture
def server_factory():
    f = ServerFactory()
    try:
        yield f
    finally:
        f.cleanup()


@pytest.fixture(scope="module")
def module_server_factory():
    f = ServerFactory()
    try:
        yield f
    finally:
        f.cleanup()


@pytest.fixture
def server(server_factory):
    """A freshly started server under test (CAIRN_BIN)."""
    return server_factory()


@pytest.fixture
def etcd(server_factory):
    """A freshly started real etcd (the oracle)."""
    return server_factory(ETCD_BIN)


@pytest.fixture(scope="module")
def module_server(module_server_factory):
    """A server under test shared by the tests of one module."""
    return module_server_factory()


def pytest_report_header(config):
    return "cairn integration: binary under test = %s" % binary_under_test()
