"""The compaction dance on compact_rev_key (k8s.io/apiserver etcd3/compact.go)."""

import threading

import grpc

from k8s_client import (COMPACT_REV_KEY, ERR_COMPACTED, Kubernetes, cmp_version,
                        op_get, op_put, rpc_error)


def compact_cycle(k, t, rev):
    """compact.go compact(): returns (compactTime, rev, won)."""
    resp = k.txn([cmp_version(COMPACT_REV_KEY, t)],
                 [op_put(COMPACT_REV_KEY, str(rev).encode())],
                 [op_get(COMPACT_REV_KEY)])
    cur_rev = resp.header.revision
    if not resp.succeeded:
        return resp.responses[0].response_range.kvs[0].version, cur_rev, False
    if rev != 0:            # no compaction on bootstrap
        k.compact(rev)
    return t + 1, cur_rev, True


def test_compaction_dance_two_apiservers(srv):
    cycles = 5
    apis = {"a": Kubernetes(srv), "b": Kubernetes(srv)}
    state = {n: [0, 0] for n in apis}     # compactTime, rev
    log = []                              # (cycle, name, won, rev_used)
    errors = []
    writer = Kubernetes(srv)
    try:
        for c in range(cycles):
            # Some writes between cycles, so revisions advance.
            for i in range(3):
                assert writer.create(b"/registry/events/ns/c%d-%d" % (c, i),
                                     b"x").succeeded
            barrier = threading.Barrier(2, timeout=30)

            def run(name):
                try:
                    barrier.wait()
                    t, rev = state[name]
                    nt, nrev, won = compact_cycle(apis[name], t, rev)
                    state[name] = [nt, nrev]
                    log.append((c, name, won, rev))
                except Exception as e:  # noqa: BLE001 (reported below)
                    errors.append((name, e))

            ths = [threading.Thread(target=run, args=(n,)) for n in apis]
            for th in ths:
                th.start()
            for th in ths:
                th.join(timeout=60)
            assert not any(th.is_alive() for th in ths)
            assert not errors, errors
            winners = [e for e in log if e[0] == c and e[2]]
            assert len(winners) == 1, log          # exactly one CAS wins a cycle
            # Both apiservers agree on version and rev after the cycle.
            assert state["a"] == state["b"], (c, state, log)
            assert state["a"][0] == c + 1

        g = writer.get(COMPACT_REV_KEY)
        kv = g.kvs[0]
        assert kv.version == cycles
        # compact_rev_key's value is what the last winner recorded, which is
        # the revision of the previous cycle's CAS put.
        last_winner = [e for e in log if e[0] == cycles - 1 and e[2]][0]
        expected_compacted = last_winner[3]
        assert expected_compacted > 0
        assert kv.value == str(expected_compacted).encode()
        # Previous cycle's put revision == that cycle's (shared) rev.
        prev_put = writer.get(COMPACT_REV_KEY, revision=expected_compacted).kvs[0]
        assert prev_put.mod_revision == expected_compacted
        assert prev_put.version == cycles - 1
        # Exactly that revision is the compacted one: below it fails.
        e = rpc_error(writer.get, COMPACT_REV_KEY, revision=expected_compacted - 1)
        assert e.code() == grpc.StatusCode.OUT_OF_RANGE
        assert e.details() == ERR_COMPACTED
        # Compacting to it again: already compacted.
        e = rpc_error(writer.compact, expected_compacted)
        assert e.code() == grpc.StatusCode.OUT_OF_RANGE
        assert e.details() == ERR_COMPACTED
        # compact_rev_key is outside /registry.
        assert writer.count(b"/registry/").count == 3 * cycles
    finally:
        writer.close()
        for k in apis.values():
            k.close()
