# A step streams 100,000 metric points on stdout while a second kiln reads
# the store: the reader sees the history grow before the step ends (and
# never an error from a locked store), and at the end every point is there,
# in order.
source "$(dirname "$0")/lib.sh"

cat > wf.yaml <<YAML
name: stream
steps:
  train:
    run: |
      $PY - <<'PYEOF'
      import sys, time
      out = sys.stdout
      for i in range(100000):
          out.write("::kiln::metric loss=%r step=%d\n" % (1.0 / (i + 1), i))
          if i % 5000 == 4999:
              out.flush()
              time.sleep(0.1)
      out.flush()
      open("done", "w").close()
      time.sleep(0.5)
      PYEOF
YAML

"$KILN" run wf.yaml >"$work/run.out" 2>&1 &
runner=$!
seen=()
while ! [ -e done ]; do
  if "$KILN" metrics last loss --output csv >"$work/out" 2>"$work/err"; then
    seen+=("$(($(wc -l < "$work/out") - 1))")
  elif ! grep -q "has no metric\|no kiln store\|no runs" "$work/err"; then
    cat "$work/err" >&2
    fail "a reader failed while the step was streaming"
  fi
  sleep 0.2
done
wait "$runner" || { cat "$work/run.out" >&2; fail "the run failed"; }
echo "points seen while running: ${seen[*]}"
partial=0
for n in "${seen[@]}"; do
  if [ "$n" -gt 0 ] && [ "$n" -lt 100000 ]; then partial=$((partial + 1)); fi
done
[ "$partial" -ge 2 ] || fail "the reader did not see the history grow while the step ran (${seen[*]})"
expect_exit 0 "$KILN" metrics last loss --output csv
[ "$(wc -l < "$work/out")" -eq 100001 ] || fail "expected 100000 points"
# In order, none twice.
tail -n +2 "$work/out" | cut -d, -f3 | awk 'NR - 1 != $1 { print "out of order at " NR; exit 1 }' || fail "points out of order"
