# Ctrl-C (SIGINT) and SIGTERM to the runner: running steps' process groups
# are stopped, recorded cancelled, the run cancelled, exit 130 / 143.
source "$(dirname "$0")/lib.sh"
set -m # background jobs must not ignore SIGINT

cat > wf.yaml <<'YAML'
name: interrupted
steps:
  long:
    run: sh -c 'echo $$ > grandchild; sleep 60' & echo $! > child; wait
  later:
    needs: [long]
    run: touch later-ran
YAML

for signal in INT TERM; do
  rm -f child grandchild
  "$KILN" run wf.yaml >"$work/out" 2>"$work/err" &
  runner=$!
  wait_for grandchild
  kill -s "$signal" "$runner"
  status=0
  wait "$runner" || status=$?
  want=$([ "$signal" = INT ] && echo 130 || echo 143)
  [ "$status" -eq "$want" ] || { cat "$work/out" "$work/err"; fail "SIG$signal: exit $status, expected $want"; }
  expect_output "SIG$signal received"
  wait_gone "$(cat grandchild)"
  [ ! -e later-ran ] || fail "a step started after the interrupt"
  expect_exit 0 "$KILN" runs show last --output json
  expect_json 'd["status"]' cancelled
  expect_json 'd["exit_code"]' "$want"
  expect_json '[s["status"] for s in d["step_list"]]' "['cancelled', 'cancelled']"
done

# A step that ignores SIGTERM: the second Ctrl-C kills it at once.
cat > stubborn.yaml <<'YAML'
name: stubborn
steps:
  stubborn:
    run: trap '' TERM; echo $$ > pid; while true; do sleep 0.1; done
    kill_after: 1h
YAML
rm -f pid
"$KILN" run stubborn.yaml >"$work/out" 2>"$work/err" &
runner=$!
wait_for pid
kill -INT "$runner"
sleep 0.3
gone "$(cat pid)" && fail "the stubborn step died on SIGTERM"
kill -INT "$runner"
status=0
wait "$runner" || status=$?
[ "$status" -eq 130 ] || { cat "$work/out" "$work/err"; fail "exit $status after two SIGINTs"; }
expect_output "received again: killing"
wait_gone "$(cat pid)"
