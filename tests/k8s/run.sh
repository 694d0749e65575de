#!/bin/sh
# Runs the kube-apiserver storage-contract suite (tests/k8s) against real
# etcd (/usr/bin/etcd) and $CAIRN_BIN (default build/cairn), from the repo
# root, and prints "k8s: N passed, N failed" as the last line.
# Extra pytest arguments may be given, e.g. -k watch.
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root" || exit 2
: "${CAIRN_BIN:=build/cairn}"
export CAIRN_BIN
log=$(mktemp)
/usr/bin/python3 -m pytest -p no:cacheprovider -q -rfE tests/k8s "$@" 2>&1 | tee "$log"
# pytest's exit code is lost in the pipe: read its summary instead.
summary=$(grep -E '^=+ .*(passed|failed|error|no tests ran).* =+$|^[0-9]+ (passed|failed)|^no tests ran' "$log" | tail -n1)
rm -f "$log"
p=$(echo "$summary" | sed -n 's/.*[^0-9]\([0-9][0-9]*\) passed.*/\1/p;s/^\([0-9][0-9]*\) passed.*/\1/p' | head -n1)
f=$(echo "$summary" | sed -n 's/.*[^0-9]\([0-9][0-9]*\) failed.*/\1/p;s/^\([0-9][0-9]*\) failed.*/\1/p' | head -n1)
e=$(echo "$summary" | sed -n 's/.*[^0-9]\([0-9][0-9]*\) error.*/\1/p;s/^\([0-9][0-9]*\) error.*/\1/p' | head -n1)
p=${p:-0}; f=$(( ${f:-0} + ${e:-0} ))
echo "k8s: $p passed, $f failed"
[ "$f" -eq 0 ] && [ "$p" -gt 0 ]
