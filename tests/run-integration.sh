#!/bin/sh
# Runs the integration suite (pytest on Debian's python3) against
# $CAIRN_BIN and prints "integration: N passed, N failed".
# Extra pytest arguments may be given, e.g. -k diff.
: "${CAIRN_BIN:?CAIRN_BIN must name the cairn binary}"
export CAIRN_BIN
here=$(cd "$(dirname "$0")" && pwd)
log=$(mktemp)
/usr/bin/python3 -m pytest -p no:cacheprovider -q -rfE --durations=12 "$here/integration" "$@" 2>&1 | tee "$log"
rc=$?
# pytest's exit code is lost in the pipe: read its summary instead.
summary=$(grep -E '^=+ .*(passed|failed|error|no tests ran).* =+$|^[0-9]+ (passed|failed)' "$log" | tail -n1)
rm -f "$log"
p=$(echo "$summary" | sed -n 's/.*[^0-9]\([0-9][0-9]*\) passed.*/\1/p;s/^\([0-9][0-9]*\) passed.*/\1/p' | head -n1)
f=$(echo "$summary" | sed -n 's/.*[^0-9]\([0-9][0-9]*\) failed.*/\1/p;s/^\([0-9][0-9]*\) failed.*/\1/p' | head -n1)
e=$(echo "$summary" | sed -n 's/.*[^0-9]\([0-9][0-9]*\) error.*/\1/p' | head -n1)
p=${p:-0}; f=$(( ${f:-0} + ${e:-0} ))
echo "integration: $p passed, $f failed"
[ "$f" -eq 0 ] && [ "$p" -gt 0 ]
