# Credentials never leave the command that was given them: every kiln
# command touching a tracking server (auto-push at the end of `kiln run`,
# `kiln push` with -v, --dry-run, --output json, wrong credentials, a server
# that is down, credentials in the environment, in the URI's userinfo, a
# bearer token) and the history commands afterwards, all their output
# captured; then the password, the token, the wrong ones tried, their
# percent-encoded and Basic-header forms are searched for in that output,
# in the whole store (SQLite database, WAL, step logs, blobs) and in the
# workflow's directory, and must not be found. The pushes really used the
# credentials: the servers refuse requests without them, and the runs are
# read back from them.
source "$(dirname "$0")/lib.sh"
export KILN
unset MLFLOW_TRACKING_URI MLFLOW_EXPERIMENT_NAME MLFLOW_TRACKING_USERNAME MLFLOW_TRACKING_PASSWORD \
  MLFLOW_TRACKING_TOKEN MLFLOW_HTTP_REQUEST_TIMEOUT MLFLOW_HTTP_REQUEST_MAX_RETRIES
export MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR=0.05 MLFLOW_HTTP_REQUEST_BACKOFF_JITTER=0.05

random_hex() { od -An -N12 -tx1 /dev/urandom | tr -d ' \n'; }
# The password holds characters a URI must percent-encode.
password="pw-$(random_hex)/x@y"
wrong_password="wrongpw-$(random_hex)"
token="tok-$(random_hex)"
wrong_token="wrongtok-$(random_hex)"
urlencode() { "$PY" -c "import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=''))" "$1"; }
basic() { printf '%s' "ann:$1" | base64 -w0; }
password_uri=$(urlencode "$password")
wrong_password_uri=$(urlencode "$wrong_password")
[ "$password_uri" != "$password" ] || fail "the password needs no encoding in a URI"
secrets=("$password" "$password_uri" "$(basic "$password")" "$wrong_password" "$(basic "$wrong_password")"
  "$token" "$wrong_token")
[ "$wrong_password_uri" = "$wrong_password" ] || secrets+=("$wrong_password_uri")

start_mlflow_server basic --username ann --password "$password"
start_mlflow_server bearer --token "$token"
basic_port=${basic_URL##*:}
bearer_port=${bearer_URL##*:}
with_password="http://ann:$password_uri@127.0.0.1:$basic_port"

# capture NAME CODE COMMAND...: expect_exit, and keeps the output as
# captured/NAME.out and .err for the search at the end.
mkdir "$work/captured"
captured=0
capture() {
  local name=$1; shift
  expect_exit "$@"
  cp "$work/out" "$work/captured/$name.out"
  cp "$work/err" "$work/captured/$name.err"
  captured=$((captured + 1))
}

# leaks PATH...: lists the files under PATH that hold any secret, in any form.
leaks() {
  local patterns=()
  local secret
  for secret in "${secrets[@]}"; do patterns+=(-e "$secret"); done
  grep -rlaF "${patterns[@]}" "$@" || true
}

# The search finds each secret, in a text file and inside an SQLite database.
mkdir "$work/canary"
i=0
for secret in "${secrets[@]}"; do
  i=$((i + 1))
  printf 'before %s after\n' "$secret" >"$work/canary/$i.txt"
  [ "$(leaks "$work/canary")" = "$work/canary/$i.txt" ] || fail "the search misses secret number $i"
  rm "$work/canary/$i.txt"
done
"$PY" - "$work/canary/canary.db" "$token" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute("CREATE TABLE t (error TEXT)")
db.execute("INSERT INTO t VALUES (?)", ("push failed: " + sys.argv[2],))
db.commit()
PY
[ -n "$(leaks "$work/canary")" ] || fail "the search misses a secret in an SQLite database"
rm -r "$work/canary"

mkdir project
cd project
cat > workflow.yaml <<'YAML'
name: secretive
params:
  lr: {type: float, default: 0.1}
steps:
  train:
    outputs: {model: model.txt}
    run: |
      for i in 1 2 3 4 5; do echo "::kiln::metric loss=0.$((10 - i)) step=$i"; done
      echo "::kiln::param optimizer=adam"
      echo "::kiln::tag owner=ann"
      echo weights > model.txt
  evaluate:
    needs: [train]
    run: |
      echo "::kiln::metric accuracy=0.9"
      echo report > report.txt
      echo "::kiln::artifact report.txt"
YAML

# ---- Basic auth ----
# Run 1: auto-push, credentials from the environment.
MLFLOW_TRACKING_URI=$basic_URL MLFLOW_TRACKING_USERNAME=ann MLFLOW_TRACKING_PASSWORD=$password \
  capture auto-env 0 "$KILN" run workflow.yaml
expect_output "kiln: pushed run 1 to $basic_URL"
# Run 2: auto-push, credentials in the URI.
MLFLOW_TRACKING_URI=$with_password capture auto-uri 0 "$KILN" run workflow.yaml
expect_output "kiln: pushed run 2 to $basic_URL"
# Run 3: the server is down; the failure is recorded in the store.
MLFLOW_TRACKING_URI="http://ann:$password_uri@127.0.0.1:9" capture auto-down 0 "$KILN" run workflow.yaml
expect_output "push to http://127.0.0.1:9 failed"
# Run 4: a wrong password. The error says what to do.
before=$(server_stats "$basic_URL" 's["by_status"].get("401", 0)')
MLFLOW_TRACKING_URI=$basic_URL MLFLOW_TRACKING_USERNAME=ann MLFLOW_TRACKING_PASSWORD=$wrong_password \
  capture auto-wrong 0 "$KILN" run workflow.yaml
expect_output "push to $basic_URL failed"
expect_output "401"
expect_output "MLFLOW_TRACKING_PASSWORD"
# 401 is an answer, not a fault: not retried.
[ "$(server_stats "$basic_URL" 's["by_status"].get("401", 0)')" = $((before + 1)) ] ||
  fail "a 401 was retried"
# Run 5: recorded for later; the record keeps the server without the credentials.
MLFLOW_TRACKING_URI=$with_password capture no-push 0 "$KILN" run workflow.yaml --no-push

MLFLOW_TRACKING_USERNAME=ann MLFLOW_TRACKING_PASSWORD=$password capture push-env-verbose 0 "$KILN" push 5 -v
expect_output "kiln: pushed run 5 to $basic_URL"
expect_output "kiln: http: POST /api/2.0/mlflow/runs/create -> 200"
MLFLOW_TRACKING_USERNAME=ann MLFLOW_TRACKING_PASSWORD=$wrong_password \
  capture push-wrong-env-verbose 1 "$KILN" push 3 -v --tracking-uri "$basic_URL"
expect_output "401"
capture push-wrong-uri-verbose 1 "$KILN" push 3 -v --tracking-uri "http://ann:$wrong_password_uri@127.0.0.1:$basic_port"
expect_output "401"
capture push-uri-verbose 0 "$KILN" push 3 -v --tracking-uri "$with_password"
expect_output "kiln: pushed run 3 to $basic_URL"
capture dry-run 0 "$KILN" push 4 --dry-run --tracking-uri "$with_password"
expect_output "would create 3 MLflow runs"
capture dry-run-json 0 "$KILN" push 4 --dry-run --tracking-uri "$with_password" --output json
capture push-json 0 "$KILN" push 4 --tracking-uri "$with_password" --output json
expect_json 'd[0]["ok"]' True
expect_json 'd[0]["remote"]' "$basic_URL"
MLFLOW_TRACKING_USERNAME=ann MLFLOW_TRACKING_PASSWORD=$password \
  capture pending-verbose 0 "$KILN" push --pending --tracking-uri "$basic_URL" -v
expect_output "nothing to push"
# The password written into the URI as is: not a valid URI, and the error
# does not repeat it.
capture raw-password 2 "$KILN" push 1 --tracking-uri "http://ann:$password@127.0.0.1:$basic_port"
expect_output "invalid tracking URI"
capture bad-scheme 2 "$KILN" push 1 --tracking-uri "ftp://ann:$password_uri@127.0.0.1:$basic_port"
MLFLOW_TRACKING_USERNAME=ann MLFLOW_TRACKING_PASSWORD=$password \
  capture already 0 "$KILN" push 1 2 3 4 5 -v --tracking-uri "$basic_URL"
expect_output "kiln: run 5 is already on $basic_URL"
# Exactly the three wrong tries were refused.
[ "$(server_stats "$basic_URL" 's["by_status"].get("401", 0)')" = 3 ] || fail "expected exactly the 3 refusals"
MLFLOW_TRACKING_USERNAME=ann MLFLOW_TRACKING_PASSWORD=$password expect_remote_equals_local "$basic_URL" 1 2 3 4 5

# ---- Bearer token ----
# Run 6: auto-push with a token.
MLFLOW_TRACKING_URI=$bearer_URL MLFLOW_TRACKING_TOKEN=$token capture auto-token 0 "$KILN" run workflow.yaml
expect_output "kiln: pushed run 6 to $bearer_URL"
MLFLOW_TRACKING_TOKEN=$token capture token-verbose 0 "$KILN" push 1 2 -v --tracking-uri "$bearer_URL"
expect_output "kiln: pushed run 2 to $bearer_URL"
expect_output "kiln: http: POST /api/2.0/mlflow/runs/log-batch -> 200"
MLFLOW_TRACKING_TOKEN=$wrong_token capture token-wrong-verbose 1 "$KILN" push 3 -v --tracking-uri "$bearer_URL"
expect_output "401"
# A token put into the URI as a user name (https://TOKEN@host) is sent as
# Basic, which this server refuses; the token is not shown either way.
capture token-in-uri-verbose 1 "$KILN" push 3 -v --tracking-uri "http://$token@127.0.0.1:$bearer_port"
expect_output "401"
MLFLOW_TRACKING_TOKEN=$token capture token-json 0 "$KILN" push 3 4 --tracking-uri "$bearer_URL" --output json
expect_json '[r["ok"] for r in d]' "[True, True]"
MLFLOW_TRACKING_TOKEN=$token expect_remote_equals_local "$bearer_URL" 1 2 3 4 6
[ "$(server_stats "$bearer_URL" 's["by_status"].get("401", 0)')" = 2 ] || fail "expected exactly the 2 refusals"

# ---- A workflow file that holds credentials: refused, and masked ----
for scheme in https ftp; do
  printf 'name: w\ntracking:\n  uri: "%s://ann:%s@127.0.0.1:%s"\nsteps:\n  a: {run: "true"}\n' \
    "$scheme" "$password_uri" "$basic_port" >"$work/creds-$scheme.yaml"
  capture "validate-$scheme" 2 "$KILN" validate "$work/creds-$scheme.yaml"
  expect_output "tracking uri holds credentials"
  capture "run-$scheme" 2 "$KILN" run "$work/creds-$scheme.yaml"
  rm "$work/creds-$scheme.yaml"
done

# ---- What the store shows afterwards ----
capture runs-list 0 "$KILN" runs list
capture runs-list-json 0 "$KILN" runs list --output json
for run in 1 2 3 4 5 6; do
  capture "show-$run" 0 "$KILN" runs show "$run"
  capture "show-$run-json" 0 "$KILN" runs show "$run" --output json
  capture "show-$run-csv" 0 "$KILN" runs show "$run" --output csv
done
capture logs 0 "$KILN" logs 6
capture artifacts 0 "$KILN" artifacts list 6
"$PY" - "$KILN_STORE/kiln.db" >"$work/captured/push_records" <<'PY'
import sqlite3, sys
for row in sqlite3.connect(sys.argv[1]).execute("SELECT * FROM push_records ORDER BY run"):
    print(row)
PY
grep -q "127.0.0.1:9" "$work/captured/push_records" || fail "the failed push is not recorded"
[ "$captured" -ge 40 ] || fail "only $captured commands captured"

found=$(leaks "$work/captured" "$KILN_STORE" "$work/project")
[ -z "$found" ] || fail "a secret was found in: $found"
echo "push_redaction: ok"
