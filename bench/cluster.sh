#!/usr/bin/env bash
# cluster.sh: 3-member cluster benchmark, etcd 3.4 vs cairn, alternating:
# put/range throughput and latency against the leader and a follower,
# RSS of every member after the load, and leader failover time under a
# light write load.  The work is done by bench/cluster.py (which reuses
# tests/integration/cluster_it.py to start the members); see
# bench/README.md, "cluster.sh".
#
# Environment knobs (defaults in brackets):
#   CAIRN       cairn binary                  [bench/../build/cairn]
#   ETCD        etcd binary                   [/usr/bin/etcd]
#   ROUNDS      rounds (etcd then cairn each) [1]
#   DURATION    seconds per workload run      [5]
#   VAL_SIZE    value bytes                   [256]
#   KEYS        key space (prefilled)         [10000]
#   HEARTBEAT   --heartbeat-interval ms       [100]
#   ELECTION    --election-timeout ms         [1000]
#   ROLES       load targets: leader,follower [leader,follower]
#   TRIALS      failover trials per round     [3]
#   PUT_TIMEOUT failover writer's put timeout, s [0.5]
#   ONLY        servers to run: etcd,cairn    [etcd,cairn]
#   TMPDIR      parent of the clusters' data dirs
# Extra arguments are passed to cluster.py (see cluster.py --help).
# Exit 0 = all clean, 1 = a run, a failover trial or a cluster failed,
# 2 = a server binary is missing.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
CAIRN=${CAIRN:-$here/../build/cairn}
ETCD=${ETCD:-/usr/bin/etcd}
PY=/usr/bin/python3 # Debian's: it has grpc and etcd3's generated protos

for b in "$CAIRN" "$ETCD"; do
    if [[ ! -x $b ]]; then
        echo "cluster.sh: server binary not found or not executable: $b" >&2
        echo "cluster.sh: build cairn first (make) or set CAIRN=/path/to/cairn" >&2
        exit 2
    fi
done
command -v ss >/dev/null || { echo "cluster.sh: needs ss (iproute2)" >&2; exit 1; }
make -s -C "$here" >/dev/null || { echo "cluster.sh: building cairn-bench failed" >&2; exit 1; }

# Data dirs go under $TMPDIR (cluster_it honours CAIRN_TEST_TMPDIR).
export CAIRN_TEST_TMPDIR=${TMPDIR:-/tmp}
exec "$PY" "$here/cluster.py" --cairn "$CAIRN" --etcd "$ETCD" \
    --rounds "${ROUNDS:-1}" --duration "${DURATION:-5}" \
    --val-size "${VAL_SIZE:-256}" --keys "${KEYS:-10000}" \
    --heartbeat "${HEARTBEAT:-100}" --election "${ELECTION:-1000}" \
    --roles "${ROLES:-leader,follower}" --trials "${TRIALS:-3}" \
    --put-timeout "${PUT_TIMEOUT:-0.5}" --only "${ONLY:-etcd,cairn}" "$@"
