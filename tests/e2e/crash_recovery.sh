# SIGKILL of the runner: the store still opens, the next command marks the
# run crashed and its running step failed, and stops the step it left behind.
source "$(dirname "$0")/lib.sh"
set -m

cat > wf.yaml <<'YAML'
name: doomed
steps:
  long:
    run: echo $$ > pid; sleep 120
  after:
    needs: [long]
    run: "true"
YAML
"$KILN" run wf.yaml >"$work/out" 2>"$work/err" &
runner=$!
wait_for pid
step_pid=$(cat pid)
kill -KILL "$runner"
wait "$runner" || true
gone "$step_pid" && fail "the step died with the runner: nothing left to recover"

expect_exit 0 "$KILN" runs list --output json
expect_output "marked it crashed"
expect_json 'd[0]["status"]' crashed
wait_gone "$step_pid"
expect_exit 0 "$KILN" runs show last --output json
expect_json '[s["status"] for s in d["step_list"]]' "['failed', 'cancelled']"
expect_json 'd["step_list"][0]["reason"]' "runner died"
expect_json 'd["attempts"][0]["error"]' "runner died"

# The store stays usable: a new run works and gets the next number.
cat > ok.yaml <<'YAML'
name: ok
steps:
  one:
    run: "true"
YAML
expect_exit 0 "$KILN" run ok.yaml
expect_output "kiln: run 2 of ok"
