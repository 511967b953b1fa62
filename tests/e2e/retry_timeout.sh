# Retries of a flaky step, a timeout that escalates to SIGKILL, and what
# both leave in the store.
source "$(dirname "$0")/lib.sh"

cat > flaky.yaml <<'YAML'
name: flaky
steps:
  flaky:
    # Fails twice, then succeeds: the counter lives in the workdir.
    run: n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; echo "attempt $KILN_ATTEMPT"; test $n -ge 3
    retries: {limit: 3, delay: 10ms, backoff: exponential}
  after:
    needs: [flaky]
    run: echo done
YAML
expect_exit 0 "$KILN" run flaky.yaml
expect_output "attempt 1/4 failed (exit code 1)"
expect_output "attempt 2/4 failed (exit code 1)"
expect_exit 0 "$KILN" runs show last --output json
expect_json '[a["number"] for a in d["attempts"] if a["step"] == "flaky"]' "[1, 2, 3]"
expect_json '[a["exit_code"] for a in d["attempts"] if a["step"] == "flaky"]' "[1, 1, 0]"
expect_json 'd["step_list"][0]["attempts"]' 3
expect_exit 0 "$KILN" logs last flaky --attempt 2 --stream out
expect_output "attempt 2"

cat > slow.yaml <<'YAML'
name: slow
steps:
  slow:
    # Ignores SIGTERM, so only the SIGKILL after kill_after ends it.
    run: trap '' TERM; echo $$ > pid; sleep 60 & wait; sleep 60
    timeout: 1s
    kill_after: 1s
  never:
    needs: [slow]
    run: touch never-ran
YAML
start=$SECONDS
expect_exit 1 "$KILN" run slow.yaml
[ $((SECONDS - start)) -lt 15 ] || fail "timeout took $((SECONDS - start))s"
expect_output "slow failed: timed out"
wait_gone "$(cat pid)"
[ ! -e never-ran ] || fail "a dependent of a failed step ran"
expect_exit 0 "$KILN" runs show last --output json
expect_json 'd["status"]' failed
expect_json 'd["exit_code"]' 1
expect_json 'd["attempts"][0]["timed_out"]' True
expect_json 'd["attempts"][0]["signal"]' 9
expect_json '[s["status"] for s in d["step_list"]]' "['failed', 'skipped']"
expect_json 'd["step_list"][1]["reason"]' "needs 'slow', which failed"
