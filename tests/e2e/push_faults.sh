# kiln push through a faulty MLflow server (tests/mlflow: 503 and 429 with
# Retry-After, 500, connections dropped before or after the server acted,
# answers slower than the client's timeout): whatever the faults, once a
# push has succeeded (a second one when the first gave up) the server's copy
# equals the store, with exactly one MLflow run per kiln run and per step
# and no metric point doubled. Then the deterministic worst cases: the answer
# to a runs/create lost, a push killed with -9 while the server was acting on
# its requests, a server that never recovers (a bounded, clear failure).
source "$(dirname "$0")/lib.sh"
export KILN
unset MLFLOW_TRACKING_URI MLFLOW_EXPERIMENT_NAME MLFLOW_TRACKING_USERNAME MLFLOW_TRACKING_PASSWORD \
  MLFLOW_TRACKING_TOKEN MLFLOW_HTTP_REQUEST_MAX_RETRIES
# Short timeouts and backoff, so the faults cost seconds, not minutes.
export MLFLOW_HTTP_REQUEST_TIMEOUT=1 MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR=0.05 MLFLOW_HTTP_REQUEST_BACKOFF_JITTER=0.05

# server_dump URL EXPR: a Python expression over the server's whole state
# `d` (GET /__kiln_test__/dump: never faulted).
server_dump() {
  curl -sf "$1/__kiln_test__/dump" | "$PY" -c "import json,sys; d=json.load(sys.stdin); print($2)"
}

# expect_mlflow_runs URL N: the server holds exactly N MLflow runs (every
# experiment), so no push made one twice.
expect_mlflow_runs() {
  local got
  got=$(server_dump "$1" 'len(d["runs"])')
  [ "$got" = "$2" ] || fail "the server holds $got MLflow runs, expected $2"
}

# faults URL JSON: reconfigures the server's fault injection (see tests/mlflow/README.md).
faults() {
  curl -sf -X POST -H 'Content-Type: application/json' -d "$2" "$1/__kiln_test__/faults" >/dev/null
}

# push_record RUN URL: the state of RUN's push record for URL.
push_record() {
  "$PY" - "$KILN_STORE/kiln.db" "$1" "$2" <<'PY'
import sqlite3, sys
row = sqlite3.connect(sys.argv[1]).execute(
    "SELECT state, error FROM push_records WHERE run = ? AND remote = ?", (int(sys.argv[2]), sys.argv[3])).fetchone()
print(row[0] if row else "none")
PY
}

# Five steps, 6,500 metric points (several log-batches per step), 130 params
# on one step, tags, two artifacts; run 1 has a failed and a skipped step.
cat > workflow.yaml <<'YAML'
name: faulty
params:
  fail: {type: int, default: 1}
tags:
  suite: push-faults
steps:
  prepare:
    tags: {stage: data}
    run: |
      "$PY" - <<'PYEOF'
      for i in range(130):
          print(f"::kiln::param p{i:03d}=v{i}")
      print("::kiln::tag owner=ann")
      for i in range(1500):
          print(f"::kiln::metric rows={i} step={i}")
      PYEOF
  train:
    needs: [prepare]
    outputs: {model: model.bin}
    run: |
      "$PY" - <<'PYEOF'
      import os
      with open("model.bin", "wb") as f:
          f.write(os.urandom(200_000))
      for i in range(1500):
          print(f"::kiln::metric loss={1 / (i + 1)} acc={i / 1500} step={i}")
      PYEOF
  evaluate:
    needs: [train]
    run: |
      "$PY" - <<'PYEOF'
      for i in range(800):
          print(f"::kiln::metric val_loss={2 / (i + 1)} step={i}")
      with open("report.txt", "w") as f:
          f.write("report\n" * 100)
      print("::kiln::artifact report.txt")
      print("::kiln::param threshold=0.5")
      PYEOF
  flaky:
    run: |
      "$PY" - <<'PYEOF'
      import sys
      for i in range(1200):
          print(f"::kiln::metric grad={i % 7} step={i}")
      sys.exit(${{ params.fail }})
      PYEOF
  after-flaky:
    needs: [flaky]
    run: echo never
YAML
sed -i "s|\"\$PY\"|$PY|" workflow.yaml
# Recorded without a tracking server: nothing is pushed yet.
expect_exit 1 "$KILN" run workflow.yaml -k
for run in 2 3 4; do expect_exit 0 "$KILN" run workflow.yaml -p fail=0; done
[ "$("$PY" -c "import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute('SELECT count(*) FROM push_records').fetchone()[0])" \
  "$KILN_STORE/kiln.db")" = 0 ] || fail "runs without a tracking server have push records"
# 1 MLflow run per kiln run and per step.
per_run=6

# (a) Random faults of every kind at a quarter of the requests, one server
# (its own seed) per round; both runs in one push.
seen_kinds=()
for seed in 1 2 3 4; do
  start_mlflow_server "random$seed" --fault-rate 0.25 --faults 503,429,500,drop,drop-after,slow --seed "$seed" \
    --retry-after 0.2 --slow-seconds 2
  url_var=random${seed}_URL
  url=${!url_var}
  got=0
  "$KILN" push 1 2 --tracking-uri "$url" >"$work/out" 2>"$work/err" || got=$?
  if [ "$got" -eq 1 ]; then
    # The retries ran out: the next push, once the faults stop, finishes it.
    grep -q "kiln: error: push of run" "$work/err" || { cat "$work/err" >&2; fail "seed $seed: exit 1 without an error"; }
    set_faults "$url" 0 503
    expect_exit 0 "$KILN" push 1 2 --tracking-uri "$url"
  elif [ "$got" -ne 0 ]; then
    cat "$work/out" "$work/err" >&2
    fail "seed $seed: push exited $got"
  fi
  [ "$(server_stats "$url" 's["faults"] > 0')" = True ] || fail "seed $seed: no fault was injected"
  read -ra kinds <<<"$(server_stats "$url" '" ".join(s["by_fault"])')"
  seen_kinds+=("${kinds[@]}")
  set_faults "$url" 0 503
  expect_remote_equals_local "$url" 1 2
  expect_mlflow_runs "$url" $((2 * per_run))
  [ "$(push_record 1 "$url")" = synced ] && [ "$(push_record 2 "$url")" = synced ] ||
    fail "seed $seed: push records are not synced"
  # Nothing left to send.
  before=$(server_stats "$url" 's["requests"]')
  expect_exit 0 "$KILN" push 1 2 --tracking-uri "$url"
  expect_output "kiln: run 1 is already on $url"
  [ "$(server_stats "$url" 's["requests"]')" = "$before" ] || fail "seed $seed: a push of synced runs sent requests"
done
for kind in 503 429 500 drop drop-after slow; do
  [[ " ${seen_kinds[*]} " == *" $kind "* ]] || fail "no '$kind' fault was injected in any round (${seen_kinds[*]})"
done

# (b) The ambiguous faults, deterministically: the server creates the run
# but the answer is lost (drop-after) or comes after the client gave up
# (slow); likewise for batches, artifacts and the final updates.
start_mlflow_server lost --retry-after 1 --slow-seconds 2
faults "$lost_URL" '{"only": "runs/create", "next": ["drop-after", "slow", "drop-after"]}'
expect_exit 0 "$KILN" push 1 --tracking-uri "$lost_URL"
[ "$(server_stats "$lost_URL" 's["by_fault"] == {"drop-after": 2, "slow": 1}')" = True ] ||
  fail "the runs/create faults were not all injected: $(server_stats "$lost_URL" 's["by_fault"]')"
expect_mlflow_runs "$lost_URL" $per_run
expect_remote_equals_local "$lost_URL" 1
faults "$lost_URL" '{"only": "runs/log-batch", "next": ["slow", "drop-after", "drop", "slow"]}'
expect_exit 0 "$KILN" push 2 --tracking-uri "$lost_URL"
faults "$lost_URL" '{"only": "mlflow-artifacts", "next": ["drop-after", "drop"]}'
expect_exit 0 "$KILN" push 3 --tracking-uri "$lost_URL"
[ "$(server_stats "$lost_URL" 's["faults"]')" = 9 ] || fail "not every fault was injected"
expect_mlflow_runs "$lost_URL" $((3 * per_run))
expect_remote_equals_local "$lost_URL" 1 2 3
# 503 with Retry-After: 1 is waited out (the backoff alone would take 0.1 s).
faults "$lost_URL" '{"only": "runs/update", "next": ["503", "drop-after", "slow"]}'
start=$(date +%s%N)
expect_exit 0 "$KILN" push 4 --tracking-uri "$lost_URL"
[ $(($(date +%s%N) - start)) -ge 1000000000 ] || fail "Retry-After: 1 was not waited out"
[ "$(server_stats "$lost_URL" 's["faults"]')" = 12 ] || fail "not every runs/update fault was injected"
expect_mlflow_runs "$lost_URL" $((4 * per_run))
expect_remote_equals_local "$lost_URL" 1 2 3 4

# (c) kill -9 while the server acts on a runs/create whose answer is late:
# the run exists there, the store does not know it; the next push finds it.
start_mlflow_server killed --fault-only runs/create --slow-seconds 5
faults "$killed_URL" '{"next": ["slow"]}'
MLFLOW_HTTP_REQUEST_TIMEOUT=30 "$KILN" push 1 --tracking-uri "$killed_URL" >"$work/killed.out" 2>&1 &
pid=$!
deadline=$((SECONDS + 20))
until [ "$(server_stats "$killed_URL" 's["by_fault"].get("slow", 0)')" = 1 ]; do
  [ $SECONDS -lt $deadline ] || fail "the push never reached runs/create"
  sleep 0.05
done
gone "$pid" && fail "the push ended before it was killed: $(cat "$work/killed.out")"
kill -9 "$pid"
wait "$pid" 2>/dev/null || true
expect_mlflow_runs "$killed_URL" 1
expect_exit 0 "$KILN" push 1 --tracking-uri "$killed_URL"
expect_output "1 found from an earlier push"
expect_mlflow_runs "$killed_URL" $per_run
expect_remote_equals_local "$killed_URL" 1

# ... and while batches are half sent (each answered 0.3 s late): the next
# push resumes without creating any run again.
faults "$killed_URL" '{"only": "runs/log-batch", "rate": 1, "kinds": ["slow"], "slow_seconds": 0.3}'
MLFLOW_HTTP_REQUEST_TIMEOUT=30 "$KILN" push 2 --tracking-uri "$killed_URL" >"$work/killed.out" 2>&1 &
pid=$!
deadline=$((SECONDS + 20))
until [ "$(server_stats "$killed_URL" 's["by_fault"].get("slow", 0)')" -ge 5 ]; do
  [ $SECONDS -lt $deadline ] || fail "the push never sent batches"
  sleep 0.05
done
gone "$pid" && fail "the push ended before it was killed: $(cat "$work/killed.out")"
kill -9 "$pid"
wait "$pid" 2>/dev/null || true
at_kill=$(server_dump "$killed_URL" 'len(d["runs"])')
"$PY" "$KILN_SOURCE/tests/mlflow/compare_remote.py" "$KILN_STORE/kiln.db" "$killed_URL" 2 >/dev/null &&
  fail "run 2 was complete on the server before the kill: the kill tested nothing"
set_faults "$killed_URL" 0 slow
expect_exit 0 "$KILN" push 2 --tracking-uri "$killed_URL" --output json
# Only the runs the killed push had not created yet.
expect_json 'd[0]["runs_created"]' $((2 * per_run - at_kill))
expect_mlflow_runs "$killed_URL" $((2 * per_run))
expect_remote_equals_local "$killed_URL" 1 2

# (d) A server that never recovers: the push gives up after the retries
# asked for, in bounded time, says what was refused, and records the
# failure; a later push, once the server is back, completes.
start_mlflow_server down --fault-rate 1 --faults 503 --retry-after 0
SECONDS=0
MLFLOW_HTTP_REQUEST_MAX_RETRIES=2 expect_exit 1 "$KILN" push 1 --tracking-uri "$down_URL"
[ $SECONDS -lt 30 ] || fail "giving up took ${SECONDS}s"
expect_output "kiln: error: push of run 1 to $down_URL"
expect_output "503"
expect_output "experiment 'faulty' on $down_URL: 503"
[ "$(server_stats "$down_URL" 's["requests"]')" = 3 ] || fail "expected 1 try and 2 retries"
[ "$(push_record 1 "$down_URL")" = failed ] || fail "the push record is $(push_record 1 "$down_URL"), not failed"
# Answers that never come in time: the timeout is what the error names.
faults "$down_URL" '{"kinds": ["slow"], "slow_seconds": 2}'
SECONDS=0
MLFLOW_HTTP_REQUEST_MAX_RETRIES=1 expect_exit 1 "$KILN" push 1 --tracking-uri "$down_URL"
[ $SECONDS -lt 30 ] || fail "giving up took ${SECONDS}s"
expect_output "timed out"
[ "$(push_record 1 "$down_URL")" = failed ] || fail "the push record is $(push_record 1 "$down_URL"), not failed"
set_faults "$down_URL" 0 503
expect_exit 0 "$KILN" push --pending --tracking-uri "$down_URL"
expect_output "pushed run 1 to $down_URL"
[ "$(push_record 1 "$down_URL")" = synced ] || fail "the push record is not synced"
expect_remote_equals_local "$down_URL" 1
echo "push_faults: ok"
