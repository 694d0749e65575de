#!/bin/sh
# Cost of encryption at rest: put and range with and without
# --experimental-encryption-key-file, same binary, fresh data dirs, servers
# on free 127.0.0.1 ports this script starts (and stops) itself.
#   [TMPDIR=/dev/shm] [TOTAL=200000] sh bench/encryption.sh [seconds] [value-size]
# (tmpfs takes the disk out: it shows the CPU cost; on a disk puts are
# fsync-bound). Noisy machines: run it several times and compare medians.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
bin=${CAIRN_BIN:-$here/../build/cairn}
bench=$here/cairn-bench
dur=${1:-5}
val=${2:-256}
tmp=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$tmp"' EXIT INT TERM
pid=
free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
printf 'bench:%s\n' "$(head -c 32 /dev/urandom | base64)" > "$tmp/keys"
chmod 600 "$tmp/keys"
for mode in plain encrypted; do
    port=$(free_port)
    extra=
    [ $mode = encrypted ] && extra="--experimental-encryption-key-file $tmp/keys"
    # shellcheck disable=SC2086
    "$bin" --data-dir "$tmp/$mode" --listen-client-urls "http://127.0.0.1:$port" \
        --advertise-client-urls "http://127.0.0.1:$port" $extra \
        > "$tmp/$mode.log" 2>&1 &
    pid=$!
    i=0
    until curl -sf "http://127.0.0.1:$port/health" >/dev/null; do
        i=$((i + 1)); [ $i -lt 100 ] || { echo "server did not start"; exit 1; }
        sleep 0.1
    done
    # the port must be our server's
    ss -ltnp "sport = :$port" | grep -q "pid=$pid," || { echo "port $port is not ours"; exit 1; }
    for op in put range; do
        pf=; [ $op = range ] && pf=--prefill
        printf '%-9s ' $mode
        "$bench" --endpoint "127.0.0.1:$port" --op $op $pf --conns 4 --streams 64 \
            --val-size "$val" --duration "$dur" --total "${TOTAL:-200000}" --quiet
    done
    kill $pid; wait $pid || true
    pid=
done
