# kiln push against the test MLflow server (tests/mlflow): the iris example
# pushed at the end of `kiln run` and read back through the server's API;
# pushing again sends nothing; --pending after offline runs and a server
# that was down; MLflow's limits fitted before sending; a param conflict
# refused before anything is sent.
source "$(dirname "$0")/lib.sh"
"$PY" -c "import sklearn" || fail "python3-sklearn is not installed (.ci/quickstart installs it)"
export KILN
start_mlflow_server mlflow
unset MLFLOW_TRACKING_URI MLFLOW_EXPERIMENT_NAME

cp -r "$KILN_SOURCE/examples/iris" iris
cd iris

# Auto-push: the environment names the server; the experiment is the workflow's name.
MLFLOW_TRACKING_URI=$mlflow_URL expect_exit 0 "$KILN" run workflow.yaml
expect_output "kiln: pushed run 1 to $mlflow_URL, experiment 'iris'"
expect_output "5 MLflow runs created"
expect_remote_equals_local "$mlflow_URL" 1
curl -sf "$mlflow_URL/api/2.0/mlflow/experiments/get-by-name?experiment_name=iris" >/dev/null ||
  fail "the experiment was not created"
# The mapping, as an MLflow user sees it.
curl -sf -X POST -H 'Content-Type: application/json' \
  -d '{"experiment_ids": ["1"], "filter": "attributes.run_name = '"'"'iris-1'"'"'"}' \
  "$mlflow_URL/api/2.0/mlflow/runs/search" >"$work/out"
expect_json 'len(d["runs"])' 1
expect_json '{t["key"]: t["value"] for t in d["runs"][0]["data"]["tags"]}["mlflow.source.name"]' "$PWD/workflow.yaml"
expect_json '{t["key"]: t["value"] for t in d["runs"][0]["data"]["tags"]}["mlflow.user"]' "$(id -un)"
expect_json '{p["key"]: p["value"] for p in d["runs"][0]["data"]["params"]}["C"]' 1.0

# Pushing again finds everything there and sends nothing.
before=$(server_stats "$mlflow_URL" 's["requests"]')
expect_exit 0 "$KILN" push 1 --tracking-uri "$mlflow_URL"
expect_output "kiln: run 1 is already on $mlflow_URL"
[ "$(server_stats "$mlflow_URL" 's["requests"]')" = "$before" ] || fail "a second push sent requests"
expect_exit 0 "$KILN" push --pending --tracking-uri "$mlflow_URL"
expect_output "nothing to push"

# Offline: --no-push records the push as pending; a server that is down
# fails the push, not the run; --pending sends both later.
MLFLOW_TRACKING_URI=$mlflow_URL expect_exit 0 "$KILN" run workflow.yaml --no-push --tag offline=1
[[ "$(cat "$work/out" "$work/err")" != *pushed* ]] || fail "--no-push pushed"
MLFLOW_TRACKING_URI=http://127.0.0.1:9 expect_exit 0 "$KILN" run workflow.yaml
expect_output "kiln: run 3 succeeded"
expect_output "push to http://127.0.0.1:9 failed"
expect_output "kiln push --pending"
"$PY" - "$KILN_STORE/kiln.db" <<'PY' || fail "push records"
import sqlite3, sys
rows = sqlite3.connect(sys.argv[1]).execute("SELECT run, state FROM push_records ORDER BY run").fetchall()
assert rows[1] == (2, "pending") and rows[2] == (3, "failed"), rows
PY
# Run 3's record names the dead server; point it at the live one.
expect_exit 0 "$KILN" push --pending --tracking-uri "$mlflow_URL" --experiment nightly
expect_output "pushed run 2 to $mlflow_URL, experiment 'nightly'"
expect_output "pushed run 3 to $mlflow_URL, experiment 'nightly'"
expect_remote_equals_local "$mlflow_URL" 1 2 3
expect_exit 0 "$KILN" push --pending --tracking-uri "$mlflow_URL"
expect_output "nothing to push"

# The workflow's tracking: section takes precedence over the environment.
sed -i "s|^name: iris|name: iris\ntracking: {uri: '$mlflow_URL', experiment: from-file}|" workflow.yaml
MLFLOW_TRACKING_URI=http://127.0.0.1:9 expect_exit 0 "$KILN" run workflow.yaml
expect_output "pushed run 4 to $mlflow_URL, experiment 'from-file'"
cd ..

# MLflow's limits, fitted before sending and reported by --dry-run.
cat > limits.yaml <<'YAML'
name: limits
steps:
  wide:
    run: |
      "$PY" - <<'PYEOF'
      print("::kiln::tag long=" + "x" * 5200)
      print("::kiln::param long=" + "y" * 6100)
      for i in range(150):
          print(f"::kiln::param p{i:03d}={i}")
      for i in range(2500):
          print(f"::kiln::metric loss={1 / (i + 1)} step={i}")
      print("::kiln::metric odd=NaN step=1")
      print("::kiln::metric odd=inf step=2")
      print("::kiln::metric odd=-inf step=3")
      PYEOF
YAML
PY=$PY expect_exit 0 "$KILN" run limits.yaml
expect_exit 0 "$KILN" push last --tracking-uri "$mlflow_URL" --dry-run
expect_output "cut tag 'long' of step 'wide' from 5200 to 5000 characters"
expect_output "cut param 'long' of step 'wide' from 6100 to 6000 characters"
expect_output "would create 2 MLflow runs"
expect_output "2,503 metric points"
before=$(server_stats "$mlflow_URL" 's["requests"]')
expect_exit 0 "$KILN" push last --tracking-uri "$mlflow_URL" --output json
[ "$(server_stats "$mlflow_URL" 's["requests"]')" = "$before" ] || true
# 151 params and 2,503 points: the fewest batches the limits allow are 3
# (params 100 + 51, entities 1000 each).
expect_json 'd[0]["batches"]' 3
expect_json 'd[0]["points"]' 2503
expect_json 'd[0]["ok"]' True
expect_remote_equals_local "$mlflow_URL" 5

# A param the server holds with another value: refused before sending
# anything. (The store forgets what it pushed and holds another value, as a
# copy of the store taken before the push would.)
"$PY" - "$KILN_STORE/kiln.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute("UPDATE params SET value = '99' WHERE run = 5 AND key = 'p001'")
db.execute("DELETE FROM remote_runs WHERE run = 5")
db.execute("DELETE FROM push_records WHERE run = 5")
db.commit()
PY
batches=$(server_stats "$mlflow_URL" 's["by_endpoint"].get("POST /api/2.0/mlflow/runs/log-batch", 0)')
expect_exit 1 "$KILN" push 5 --tracking-uri "$mlflow_URL"
expect_output "param 'p001' of step 'wide' is '1' on the server"
expect_output "nothing was pushed"
[ "$(server_stats "$mlflow_URL" 's["by_endpoint"].get("POST /api/2.0/mlflow/runs/log-batch", 0)')" = "$batches" ] ||
  fail "a conflicting push sent batches"

# libcurl is opened when a push first needs it. Without it a run still
# succeeds and its push stays pending; kiln push names the library.
cd iris
KILN_LIBCURL=/nonexistent/libcurl.so.4 expect_exit 0 "$KILN" run workflow.yaml
cd ..
expect_output "not pushed: cannot load /nonexistent/libcurl.so.4"
expect_output "the run is pending for \`kiln push --pending\`"
run=$("$PY" -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('SELECT max(number) FROM runs').fetchone()[0])" "$KILN_STORE/kiln.db")
KILN_LIBCURL=/nonexistent/libcurl.so.4 expect_exit 3 "$KILN" push --pending --tracking-uri "$mlflow_URL"
expect_output "kiln: error: cannot load /nonexistent/libcurl.so.4"
expect_exit 0 "$KILN" push "$run" --tracking-uri "$mlflow_URL"
expect_output "pushed run $run to $mlflow_URL"

# Usage errors.
expect_exit 2 "$KILN" push
expect_output "name the runs to push"
expect_exit 2 "$KILN" push 1 --tracking-uri ftp://example.com
echo "push: ok"
