#!/usr/bin/env bash
# run.sh: run the k8s control-plane load model (load.py) against etcd 3.4
# and cairn, alternating servers (a fresh server and data dir per run), and
# print a table with cairn/etcd ratios.
#
# Environment knobs (defaults in brackets):
#   CAIRN   cairn binary               [bench/k8s/../../build/cairn]
#   ETCD    etcd binary                [/usr/bin/etcd]
#   ROUNDS  rounds (etcd then cairn)   [1]; the table shows medians
#   TMPDIR  where data dirs go         [/tmp]
# Any arguments are passed to load.py, e.g.
#   bench/k8s/run.sh --objects 2000 --duration 10
# (defaults: --objects 10000 --duration 30 --conns 100 --types 20
#  --compact-interval 10 --procs 4 --threads 8)
#
# Exit: 0 all runs clean, 1 a run or server failed, 2 missing binary.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
CAIRN=${CAIRN:-$here/../../build/cairn}
ETCD=${ETCD:-/usr/bin/etcd}
ROUNDS=${ROUNDS:-1}
PY=/usr/bin/python3
LOAD=$here/load.py

die() { echo "run.sh: $*" >&2; exit 1; }

for b in "$CAIRN" "$ETCD"; do
    if [[ ! -x $b ]]; then
        echo "run.sh: server binary not found or not executable: $b" >&2
        echo "run.sh: build cairn first (cd /work/main && make) or set CAIRN" >&2
        exit 2
    fi
done
command -v ss >/dev/null || die "needs ss (iproute2) to check port owners"
"$PY" -c 'import grpc; from etcd3.etcdrpc import rpc_pb2' ||
    die "needs python3-grpcio and python3-etcd3 for $PY"

work=$(mktemp -d "${TMPDIR:-/tmp}/cairn-k8s.XXXXXX")
started=()
cur_pid=""

# Stop one server we started, by PID: TERM, bounded wait, then KILL.
stop_pid() {
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        # a zombie child still answers kill -0; reap it when it is one
        [[ $(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1) == Z ]] && break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# shellcheck disable=SC2317  # invoked via trap
cleanup() {
    local pid
    for pid in "${started[@]}"; do stop_pid "$pid"; done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A random port in 20000-59999 that nothing uses (in any TCP state) and we
# have not handed out yet; start_server checks the listener is ours.
used_ports=" "
pick_port() {
    local p i
    for ((i = 0; i < 200; i++)); do
        p=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
        [[ $used_ports == *" $p "* ]] && continue
        [[ -z $(ss -Htan "( sport = :$p or dport = :$p )") ]] || continue
        used_ports+="$p "
        PORT=$p
        return 0
    done
    die "no free port found"
}

alive() {
    local st
    st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || true
    [[ -n $st && $st != Z ]]
}

ppid_of() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f2 || true; }

port_owner() {
    ss -Hltnp "sport = :$1" | grep -o 'pid=[0-9]*' | head -n1 | cut -d= -f2 ||
        true
}

# Starts a server; sets cur_pid and cur_port.  Same flags as compare.sh.
start_server() { # name binary dir
    local name=$1 bin=$2 dir=$3 cport pport pid owner i ok=0
    pick_port; cport=$PORT
    pick_port; pport=$PORT
    mkdir -p "$dir"
    "$bin" --name b --data-dir "$dir/data" \
        --listen-client-urls "http://127.0.0.1:$cport" \
        --advertise-client-urls "http://127.0.0.1:$cport" \
        --listen-peer-urls "http://127.0.0.1:$pport" \
        --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
        --initial-cluster "b=http://127.0.0.1:$pport" \
        >"$dir/log" 2>&1 &
    pid=$!
    started+=("$pid")
    cur_pid=$pid cur_port=$cport
    for ((i = 0; i < 300; i++)); do
        if ! alive "$pid"; then
            tail -n 20 "$dir/log" >&2
            die "$name exited during startup (log above)"
        fi
        owner=$(port_owner "$cport")
        if [[ -n $owner ]]; then
            if [[ $owner != "$pid" && $(ppid_of "$owner") != "$pid" ]]; then
                die "port $cport is held by PID $owner, not by our $name ($pid)"
            fi
            ok=1
            break
        fi
        sleep 0.1
    done
    ((ok)) || die "$name did not listen on 127.0.0.1:$cport within 30s"
    for ((i = 0; i < 50; i++)); do
        if "$PY" "$LOAD" --ping --endpoint "127.0.0.1:$cport" 2>/dev/null; then
            echo "started $name pid=$pid client=127.0.0.1:$cport peer=$pport" >&2
            return 0
        fi
        alive "$pid" || break
        sleep 0.2
    done
    tail -n 20 "$dir/log" >&2
    die "$name never answered a Range request"
}

failed=0
results=$work/results
: >"$results"
for ((r = 1; r <= ROUNDS; r++)); do
    for s in etcd cairn; do
        if [[ $s == etcd ]]; then bin=$ETCD; else bin=$CAIRN; fi
        dir=$work/$s.$r
        start_server "$s" "$bin" "$dir"
        rc=0
        # bounded: load.py stops itself; timeout is the backstop
        out=$(timeout 3600 "$PY" "$LOAD" --endpoint "127.0.0.1:$cur_port" \
            --server-pid "$cur_pid" --label "$s" "$@") || rc=$?
        line=$(grep '^result ' <<<"$out" | tail -n1 || true)
        if ((rc != 0)) || [[ -z $line ]]; then
            echo "run.sh: $s round $r failed (rc=$rc)" >&2
            failed=1
        fi
        if ! alive "$cur_pid"; then
            echo "run.sh: $s died during the run; log tail:" >&2
            tail -n 20 "$dir/log" >&2
            failed=1
        fi
        [[ -n $line ]] && echo "$line" >>"$results"
        stop_pid "$cur_pid"
        rm -rf "$dir"
    done
done

echo
"$PY" - "$results" <<'EOF'
import sys, statistics
rows = {}
for line in open(sys.argv[1]):
    f = dict(kv.split("=", 1) for kv in line.split()[1:])
    rows.setdefault(f.pop("server"), []).append(f)
def med(s, k):
    v = [float(r[k]) for r in rows.get(s, []) if k in r]
    return statistics.median(v) if v else float("nan")
metrics = [("ops/s", "ops_s", 1), ("errors", "errors", 1),
           ("writes ok", "writes_ok", 1), ("watch events", "watch_events", 1),
           ("compactions", "compactions", 1)]
for op in ["list", "get_rev", "get", "list_stale", "get_stale",
           "update", "create", "delete"]:
    metrics += [(op + " count", op + "_n", 1), (op + " p50 ms", op + "_p50", 1),
                (op + " p99 ms", op + "_p99", 1)]
metrics += [("server CPU cores", "server_cpu", 1),
            ("client CPU cores", "client_cpu", 1),
            ("server VmHWM MiB", "hwm_kb", 1024),
            ("server RssAnon MiB", "anon_kb", 1024)]
print("%-20s %12s %12s %8s" % ("metric", "etcd", "cairn", "ratio"))
for label, k, div in metrics:
    e, c = med("etcd", k) / div, med("cairn", k) / div
    ratio = "%.2f" % (c / e) if e and e == e and c == c else "-"
    print("%-20s %12.2f %12.2f %8s" % (label, e, c, ratio))
n = max((len(v) for v in rows.values()), default=0)
print("(median of %d round(s); ratio = cairn/etcd: >1 better for ops/s and "
      "counts, worse for latency, CPU and memory)" % n)
EOF
exit $failed
