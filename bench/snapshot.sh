#!/bin/sh
# snapshot.sh: `etcdctl snapshot save` throughput, real etcd 3.4 vs cairn,
# on the same data (SIZE_MB [200] of VAL_SIZE [1024] B values; ROUNDS [3]).
# See snapshot.py. Needs Debian's python3 (grpc, python3-etcd3).
here=$(cd "$(dirname "$0")" && pwd)
exec /usr/bin/python3 "$here/snapshot.py" "$@"
