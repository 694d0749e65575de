#!/bin/sh
# Runs the cmocka unit test binaries given as arguments and prints
# "unit: N passed, N failed". Exit status 1 if any failed or none ran.
passed=0 failed=0 ran=0
for t in "$@"; do
    out=$("$t" 2>&1)
    rc=$?
    echo "$out" | grep -E '^\[  (FAILED|ERROR)|^\[  PASSED  \]|^\[==========\]' | sed "s|^|$(basename "$t"): |"
    p=$(echo "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | tail -n1)
    f=$(echo "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | tail -n1)
    p=${p:-0}; f=${f:-0}
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "$out" | tail -n 20
        f=1 # crashed, or a sanitizer stopped it
    fi
    passed=$((passed + p)); failed=$((failed + f)); ran=$((ran + p + f))
done
echo "unit: $passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$ran" -gt 0 ]
