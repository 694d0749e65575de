#!/bin/sh
# The whole suite, as `make test` and CI run it:
#   1. release build (-Werror): unit, integration and kube-apiserver-pattern
#      (tests/k8s, against real etcd and cairn) tests
#   2. ASan+UBSan build: the same again
# Ends with one line "N passed, N failed".
cd "$(dirname "$0")/.." || exit 1
jobs=$(nproc 2>/dev/null || echo 2)
total_p=0 total_f=0 status=0
t0=$(date +%s)
tally() { # reads "<name>: N passed, N failed" lines from a log
    line=$(grep -E '^(unit|integration|k8s): [0-9]+ passed, [0-9]+ failed$' "$1" | tail -n1)
    if [ -z "$line" ]; then total_f=$((total_f + 1)); status=1; return; fi
    p=$(echo "$line" | sed 's/.*: \([0-9]*\) passed.*/\1/')
    f=$(echo "$line" | sed 's/.* \([0-9]*\) failed/\1/')
    total_p=$((total_p + p)); total_f=$((total_f + f))
}
run() { # name, command...
    name=$1; shift
    log=$(mktemp)
    echo "== $name (at $(($(date +%s) - t0)) s)"
    "$@" 2>&1 | tee "$log"
    tally "$log"
    rm -f "$log"
}
if ! make -s -j"$jobs" WERROR=1 all tests-build; then
    echo "build failed"; echo "0 passed, 1 failed"; exit 1
fi
run "unit (release)" sh tests/run-unit.sh build/tests/test_*
run "integration (release)" env CAIRN_BIN="$PWD/build/cairn" sh tests/run-integration.sh
run "kube-apiserver patterns (release)" env CAIRN_BIN="$PWD/build/cairn" sh tests/k8s/run.sh
if ! make -s -j"$jobs" SAN=address,undefined all tests-build; then
    echo "sanitizer build failed"; echo "$total_p passed, $((total_f + 1)) failed"; exit 1
fi
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1:quarantine_size_mb=16:allocator_release_to_os_interval_ms=1000
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
run "unit (asan+ubsan)" sh tests/run-unit.sh build/san/tests/test_*
run "integration (asan+ubsan)" env CAIRN_BIN="$PWD/build/san/cairn" CAIRN_SANITIZED=1 sh tests/run-integration.sh
run "kube-apiserver patterns (asan+ubsan)" env CAIRN_BIN="$PWD/build/san/cairn" CAIRN_SANITIZED=1 sh tests/k8s/run.sh
echo "== done (at $(($(date +%s) - t0)) s)"
echo "$total_p passed, $total_f failed"
[ "$total_f" -eq 0 ] && [ "$total_p" -gt 0 ] && [ "$status" -eq 0 ]
