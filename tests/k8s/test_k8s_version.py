"""Maintenance.Status version gate for RequestWatchProgress (§2.5)."""

import re

from cairn_it import is_etcd
from k8s_client import Kubernetes

ORACLE_VERSION = "3.4.23"     # Debian's /usr/bin/etcd


def parse_semantic(v):
    """k8s.io/apimachinery version.ParseSemantic (strict x.y.z[-pre][+meta])."""
    m = re.fullmatch(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
                     r"(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?", v)
    assert m, "not a semantic version: %r" % v
    return tuple(int(x) for x in m.groups())


def supports_request_watch_progress(v):
    """feature_support_checker.go: >= 3.4.31 and not in [3.5.0, 3.5.13)."""
    sv = parse_semantic(v)
    if sv < (3, 4, 31):
        return False
    if (3, 5, 0) <= sv < (3, 5, 13):
        return False
    return True


def test_gate_logic():
    assert not supports_request_watch_progress("3.4.30")
    assert supports_request_watch_progress("3.4.31")
    assert not supports_request_watch_progress("3.5.0")
    assert not supports_request_watch_progress("3.5.12")
    assert supports_request_watch_progress("3.5.13")
    assert supports_request_watch_progress("3.6.11")


def test_status_version_gate(srv):
    k = Kubernetes(srv)
    try:
        st = k.status()
        assert st.dbSize > 0
        if is_etcd(srv.binary):
            assert st.version == ORACLE_VERSION
            assert not supports_request_watch_progress(st.version)
        else:
            assert supports_request_watch_progress(st.version), st.version
    finally:
        k.close()
