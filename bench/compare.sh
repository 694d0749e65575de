#!/usr/bin/env bash
# compare.sh: run the same workloads against real etcd 3.4 and cairn,
# alternating between the two servers, and print req/s (events/s for watch
# fan-out, seconds for lease mass expiry), p99, peak RSS and the memory
# watchers cost, side by side.
#
# Environment knobs (defaults in brackets):
#   CAIRN     cairn binary            [bench/../build/cairn]
#   ETCD      etcd binary             [/usr/bin/etcd]
#   WORKLOADS which groups: all, kv (put/range), watch, lease;
#             comma-separated [all]
#   ROUNDS    rounds per workload     [3]
#   DURATION  seconds per run (watch: seconds of puts) [5]
#   VAL_SIZE  value bytes             [256]
#   KEYS      key space               [10000]
#   WATCH_RATE_1K / WATCH_RATE_10K  puts/s for watch 1k / 10k [500 / 100]
#   KEEPALIVE_LEASES  leases the keep-alive workload cycles over [1000]
#   EXPIRE_LEASES     leases (one key each) in the mass expiry [20000]
#   EXPIRE_TTL        their TTL, seconds [8]
#   EXPIRE_WRITER_RATE  puts/s of the writer during the expiry [1000]
#   EXPIRE_TIMEOUT    seconds after the first lease is due before a mass
#                     expiry counts as failed [3 x EXPIRE_LEASES/1000 + 60]
#   TMPDIR    where data dirs go      [/tmp]
#
# Exit: 0 all runs clean, 1 a run or server failed, 2 missing binary.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
CAIRN=${CAIRN:-$here/../build/cairn}
ETCD=${ETCD:-/usr/bin/etcd}
WORKLOADS=${WORKLOADS:-all}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
VAL_SIZE=${VAL_SIZE:-256}
KEYS=${KEYS:-10000}
WATCH_RATE_1K=${WATCH_RATE_1K:-500}
WATCH_RATE_10K=${WATCH_RATE_10K:-100}
KEEPALIVE_LEASES=${KEEPALIVE_LEASES:-1000}
EXPIRE_LEASES=${EXPIRE_LEASES:-20000}
EXPIRE_TTL=${EXPIRE_TTL:-8}
EXPIRE_WRITER_RATE=${EXPIRE_WRITER_RATE:-1000}
EXPIRE_TIMEOUT=${EXPIRE_TIMEOUT:-$((EXPIRE_LEASES * 3 / 1000 + 60))}
BENCH=$here/cairn-bench

die() { echo "compare.sh: $*" >&2; exit 1; }

# label|cairn-bench arguments
KV_WORKLOADS=(
    "put 1x1|--op put --conns 1 --streams 1"
    "put 4x64|--op put --conns 4 --streams 64"
    "put 16x64|--op put --conns 16 --streams 64"
    "range 4x64|--op range --conns 4 --streams 64 --prefill"
)
# Fan-out: every watcher watches the one key the writer puts to, so each put
# becomes one event per watcher.  Rates are fixed, so events/s only drops
# below rate x watchers when a server falls behind; p99 (put sent -> event
# received) is the telling number.
WATCH_WORKLOADS=(
    "watch 1k|--op watch --watchers 1000 --watch-streams 100 --conns 10 --rate $WATCH_RATE_1K"
    "watch 10k|--op watch --watchers 10000 --watch-streams 100 --conns 10 --rate $WATCH_RATE_10K"
)
# Leases.  Grant and keep-alive revoke their leases afterwards (unmeasured),
# so no workload leaves leases behind to expire during a later one.  The
# mass expiry grants EXPIRE_LEASES leases with one key each, then times
# from the first lease's TTL running out until no key is left, while a
# writer puts at EXPIRE_WRITER_RATE; its row shows those seconds (lower is
# better) and the writer's p99.  etcd 3.4 revokes at most 1000 expired
# leases a second, so N leases take it about N/1000 s.  EXPIRE_TTL should
# exceed the time a server takes to grant them (etcd: 4-5 s for 20000), or
# the expiry starts before the last lease exists (the bench says so).
if ((EXPIRE_LEASES % 1000 == 0)); then
    expire_label="mass expiry $((EXPIRE_LEASES / 1000))k"
else
    expire_label="mass expiry $EXPIRE_LEASES"
fi
LEASE_WORKLOADS=(
    "lease grant 4x64|--op lease-grant --conns 4 --streams 64 --revoke"
    "keepalive 4x64 ($KEEPALIVE_LEASES leases)|--op lease-keepalive --conns 4 --streams 64 --leases $KEEPALIVE_LEASES --revoke"
    "$expire_label|--op lease-expire --conns 4 --streams 64 --leases $EXPIRE_LEASES --ttl $EXPIRE_TTL --expire-writer-rate $EXPIRE_WRITER_RATE --expire-timeout $EXPIRE_TIMEOUT"
)
RUN=()
IFS=, read -r -a groups <<<"$WORKLOADS"
for g in "${groups[@]}"; do
    case $g in
    all) RUN+=("${KV_WORKLOADS[@]}" "${WATCH_WORKLOADS[@]}" "${LEASE_WORKLOADS[@]}") ;;
    kv) RUN+=("${KV_WORKLOADS[@]}") ;;
    watch) RUN+=("${WATCH_WORKLOADS[@]}") ;;
    lease) RUN+=("${LEASE_WORKLOADS[@]}") ;;
    *) die "WORKLOADS: unknown group '$g' (all, kv, watch, lease)" ;;
    esac
done
((${#RUN[@]})) || die "WORKLOADS selects nothing"
SERVERS=(etcd cairn)

for b in "$CAIRN" "$ETCD"; do
    if [[ ! -x $b ]]; then
        echo "compare.sh: server binary not found or not executable: $b" >&2
        echo "compare.sh: build cairn first or set CAIRN=/path/to/cairn" >&2
        exit 2
    fi
done
command -v ss >/dev/null || die "needs ss (iproute2) to check port owners"
make -s -C "$here" >/dev/null || die "building cairn-bench failed"

work=$(mktemp -d "${TMPDIR:-/tmp}/cairn-compare.XXXXXX")
declare -A PID CPORT
started=()

# Stop only what we started, by PID: TERM, bounded wait, then KILL.  The
# children are never reaped before this, so their PIDs cannot be reused.
# shellcheck disable=SC2317  # invoked via trap
cleanup() {
    local pid i
    for pid in "${started[@]}"; do
        kill -0 "$pid" 2>/dev/null || continue
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A random port in 20000-59999 that nothing uses (in any TCP state) and we
# have not handed out yet.  Someone could still grab it before the server
# binds it; start_server catches that by checking the socket's owner.
# Sets PORT (a global, so no subshell loses used_ports or swallows die).
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

# Is $1 running?  kill -0 is not enough: we never reap our servers before
# cleanup, so a crashed one lingers as a zombie.
alive() {
    local st
    st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || true
    [[ -n $st && $st != Z ]]
}

ppid_of() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f2 || true; }

# PID owning the listening socket on 127.0.0.1:$1, empty if none.
port_owner() {
    ss -Hltnp "sport = :$1" | grep -o 'pid=[0-9]*' | head -n1 | cut -d= -f2 ||
        true # no listener yet: grep fails, which pipefail would propagate
}

start_server() { # name binary
    local name=$1 bin=$2 cport pport dir pid owner i ok=0
    pick_port; cport=$PORT
    pick_port; pport=$PORT
    dir=$work/$name
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
    PID[$name]=$pid CPORT[$name]=$cport

    # Wait (bounded) until the port is listening, and make sure the process
    # behind it is ours (or a child of ours), not a stray server.
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

    # Listening is not serving: wait for a successful gRPC request.
    for ((i = 0; i < 50; i++)); do
        if "$BENCH" --endpoint "127.0.0.1:$cport" --op range --total 1 \
            --timeout 2 --quiet >/dev/null 2>&1; then
            echo "started $name pid=$pid client=127.0.0.1:$cport peer=$pport" >&2
            return 0
        fi
        alive "$pid" || break
        sleep 0.2
    done
    tail -n 20 "$dir/log" >&2
    die "$name never answered a Range request"
}

field() { # summary-line name -> value of name=value
    tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p" | head -n1
}

hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
# Resident memory split: anonymous (heap: the process's own memory) and
# file-backed (pages of the mmap'ed store, page cache the kernel can drop).
anon_kb() { awk '/^RssAnon:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
file_kb() { awk '/^RssFile:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

start_server etcd "$ETCD"
start_server cairn "$CAIRN"

# What watchers cost the server: VmRSS and RssAnon growth while 10k
# watchers (100 streams, 10 connections) are created, measured once on each
# fresh server, before any workload.  Later deltas would be noise: a Go
# heap reuses the garbage earlier runs left, so etcd's can even go negative.
declare -A WMEM
watch_mem_probe() { # server
    local s=$1 out line r0 r1 a0 a1 rc=0
    out=$(timeout 120 "$BENCH" --endpoint "127.0.0.1:${CPORT[$s]}" \
        --op watch --watchers 10000 --watch-streams 100 --conns 10 \
        --rate 10 --total 1 --server-pid "${PID[$s]}" 2>"$work/bench.err") ||
        rc=$?
    line=$(grep '^op=' <<<"$out" | tail -n1 || true)
    echo "watch memory $(printf '%-5s' "$s")  ${line:-no output}" >&2
    if ((rc != 0)); then
        failed=1
        echo "watch memory $s: FAILED rc=$rc" >&2
        sed 's/^/    /' "$work/bench.err" >&2
        return 0
    fi
    r0=$(field "$line" rss_before_kb) r1=$(field "$line" rss_after_kb)
    a0=$(field "$line" anon_before_kb) a1=$(field "$line" anon_after_kb)
    WMEM[$s]="$((r1 - r0)) $((a1 - a0))" # kB per 10k watchers
}

echo "# $(nproc) CPUs, workloads=$WORKLOADS rounds=$ROUNDS duration=${DURATION}s val_size=$VAL_SIZE keys=$KEYS" >&2
results=$work/results.tsv
: >"$results"
failed=0
lw=11 # label width
for w in "${RUN[@]}"; do
    l=${w%%|*}
    ((${#l} > lw)) && lw=${#l}
done
if [[ "${RUN[*]}" == *"--op watch"* ]]; then
    for s in "${SERVERS[@]}"; do watch_mem_probe "$s"; done
fi
for ((r = 1; r <= ROUNDS; r++)); do
    for w in "${RUN[@]}"; do
        label=${w%%|*}
        args=${w#*|}
        for s in "${SERVERS[@]}"; do
            alive "${PID[$s]}" || die "$s (pid ${PID[$s]}) died; log: $(tail -n 5 "$work/$s/log")"
            rc=0
            limit=$((DURATION + 120))
            [[ $args == *lease-expire* ]] &&
                limit=$((EXPIRE_TIMEOUT + EXPIRE_TTL + 300))
            # shellcheck disable=SC2086  # args is a word list on purpose
            out=$(timeout $limit "$BENCH" \
                --endpoint "127.0.0.1:${CPORT[$s]}" $args \
                --duration "$DURATION" --val-size "$VAL_SIZE" --keys "$KEYS" \
                2>"$work/bench.err") || rc=$?
            line=$(grep '^op=' <<<"$out" | tail -n1 || true)
            if ((rc != 0)); then
                failed=1
                echo "round $r $label $s: FAILED rc=$rc" >&2
                sed 's/^/    /' "$work/bench.err" >&2
            else # surface notes such as a low server stream limit
                grep -v ': prefill:\|watchers on .* streams created\|leases granted (TTL\|revoked .* leases in\|lease-expire: .* leases (TTL' \
                    "$work/bench.err" | sed 's/^/    /' >&2 || true
            fi
            rps=$(field "$line" rps) p99=$(field "$line" p99_us) unit=rps
            [[ $line == op=watch* ]] && rps=$(field "$line" events_per_s)
            if [[ $line == op=lease-expire* ]]; then
                rps=$(field "$line" expire_secs) unit=s
                p99=$(field "$line" writer_p99_us)
            fi
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$s" "$label" "$r" \
                "${rps:-0}" "${p99:-0}" "$rc" "$unit" >>"$results"
            echo "round $r  $(printf "%-${lw}s %-5s" "$label" "$s")  ${line:-no output}" >&2
        done
    done
done

hwm_etcd=$(hwm_kb "${PID[etcd]}")
hwm_cairn=$(hwm_kb "${PID[cairn]}")
anon_etcd=$(anon_kb "${PID[etcd]}") anon_cairn=$(anon_kb "${PID[cairn]}")
file_etcd=$(file_kb "${PID[etcd]}") file_cairn=$(file_kb "${PID[cairn]}")

# Median over rounds for every (server, workload); then the table.
echo
awk -F'\t' -v lw="$lw" -v hwm_e="$hwm_etcd" -v hwm_c="$hwm_cairn" \
    -v anon_e="$anon_etcd" -v anon_c="$anon_cairn" \
    -v file_e="$file_etcd" -v file_c="$file_cairn" \
    -v mem_e="${WMEM[etcd]:-}" -v mem_c="${WMEM[cairn]:-}" -v order="$(
    for w in "${RUN[@]}"; do printf '%s;' "${w%%|*}"; done)" '
function median(list,   a, n, t) {
    n = split(list, a, " ")
    # insertion sort: a handful of rounds
    for (i = 2; i <= n; i++) {
        t = a[i] + 0
        for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]
        a[j + 1] = t
    }
    if (n == 0) return 0
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function ratio(c, e) { return e > 0 ? sprintf("%.2f", c / e) : "-" }
{
    rps[$1, $2] = rps[$1, $2] " " $4
    p99[$1, $2] = p99[$1, $2] " " $5
    if ($6 != 0) bad[$1, $2] = 1
    unit[$2] = $7
}
END {
    lw = lw < 12 ? 12 : lw
    printf "%-*s %10s %10s %7s   %10s %10s %7s\n", lw, "workload",
        "etcd rps", "cairn rps", "ratio", "etcd p99", "cairn p99", "ratio"
    n = split(order, ws, ";")
    for (k = 1; k < n; k++) {
        w = ws[k]
        er = median(rps["etcd", w]); cr = median(rps["cairn", w])
        ep = median(p99["etcd", w]); cp = median(p99["cairn", w])
        if (unit[w] == "s")  # seconds: lower is better, unlike rps
            printf "%-*s %9.2fs %9.2fs %7s   %8.0fus %8.0fus %7s%s", lw, w,
                er, cr, ratio(cr, er), ep, cp, ratio(cp, ep),
                "  <- secs: ratio <1 = cairn faster"
        else
            printf "%-*s %10.0f %10.0f %7s   %8.0fus %8.0fus %7s", lw, w,
                er, cr, ratio(cr, er), ep, cp, ratio(cp, ep)
        print ((bad["etcd", w] || bad["cairn", w]) ? "  (errors!)" : "")
    }
    if (mem_e != "" && mem_c != "") {
        split(mem_e, me, " "); split(mem_c, mc, " ")
        printf "%-*s %9.1fM %9.1fM %7s\n", lw, "RSS/10k wch",
            me[1] / 1024, mc[1] / 1024, ratio(mc[1], me[1])
        printf "%-*s %9.1fM %9.1fM %7s\n", lw, "anon/10k wch",
            me[2] / 1024, mc[2] / 1024, ratio(mc[2], me[2])
    }
    printf "%-*s %9.1fM %9.1fM %7s\n", lw, "peak RSS", hwm_e / 1024,
        hwm_c / 1024, ratio(hwm_c, hwm_e)
    printf "%-*s %9.1fM %9.1fM %7s\n", lw, "anon RSS", anon_e / 1024,
        anon_c / 1024, ratio(anon_c, anon_e)
    printf "%-*s %9.1fM %9.1fM %7s\n", lw, "file RSS", file_e / 1024,
        file_c / 1024, ratio(file_c, file_e)
}' "$results"
echo "(anon = heap and stacks; file = mapped store pages; both at the end)"
if [[ "${RUN[*]}" == *"--op watch"* ]]; then
    echo "(watch rows: rps = events/s delivered, p99 = put sent -> event received;"
    echo " RSS|anon/10k wch = VmRSS|RssAnon growth while 10k watchers were created"
    echo " on the fresh server, before any workload)"
fi
if [[ "${RUN[*]}" == *"--op lease-keepalive"* ]]; then
    echo "(keepalive rows: rps = keep-alive responses/s, p99 = request -> response)"
fi
if [[ "${RUN[*]}" == *"--op lease-expire"* ]]; then
    echo "($expire_label: value = seconds from the first lease's TTL running out"
    echo " until a count of its keys is 0, lower is better; p99 = put p99 of a"
    echo " writer at $EXPIRE_WRITER_RATE puts/s meanwhile)"
fi
echo "(median of $ROUNDS rounds; ratio = cairn/etcd: >1 is better for rps, worse for p99, secs and RSS)"

exit "$failed"
