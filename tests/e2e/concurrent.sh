# Eight runners on one store at once (cron overlapping people): all succeed,
# every run and step recorded, no "database is locked".
source "$(dirname "$0")/lib.sh"

{
  echo "name: busy"
  echo "steps:"
  for i in $(seq 1 20); do
    echo "  s$i:"
    echo "    run: \"true\""
    if [ "$i" -gt 2 ]; then echo "    needs: [s$((i - 1)), s$((i - 2))]"; fi
  done
} > wf.yaml

pids=()
for i in $(seq 1 8); do
  "$KILN" run wf.yaml -j 2 >"out.$i" 2>&1 &
  pids+=($!)
done
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || { cat "out.$((i + 1))"; fail "runner $((i + 1)) failed"; }
done
cat out.* > "$work/out"; : > "$work/err"
grep -qi "locked" "$work/out" && fail "a runner saw a locked database"
expect_exit 0 "$KILN" runs list --output json
expect_json 'sorted(r["number"] for r in d)' "[1, 2, 3, 4, 5, 6, 7, 8]"
expect_json 'all(r["status"] == "succeeded" and r["steps"]["succeeded"] == 20 for r in d)' True
