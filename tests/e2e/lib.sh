# Shared by the end-to-end tests: each test runs the real kiln binary ($KILN)
# in a fresh temp directory with its own store, and fails loudly.
set -euo pipefail

: "${KILN:?set KILN to the kiln binary}"
: "${KILN_SOURCE:?set KILN_SOURCE to the source tree}"
PY=/usr/bin/python3

work=$(mktemp -d "${TMPDIR:-/tmp}/kiln-e2e.XXXXXX")
server_pids=()
cleanup() {
  local pid
  for pid in "${server_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
# Not named .kiln, so tests of store discovery do not find it.
export KILN_STORE="$work/store"
unset NO_COLOR

fail() { echo "FAIL: $*" >&2; exit 1; }

# expect_exit CODE COMMAND...: runs it, stdout to $work/out and stderr to
# $work/err, and checks the exit code.
expect_exit() {
  local want=$1; shift
  local got=0
  "$@" >"$work/out" 2>"$work/err" || got=$?
  if [ "$got" -ne "$want" ]; then
    cat "$work/out" "$work/err" >&2
    fail "'$*' exited $got, expected $want"
  fi
}

# expect_output TEXT: the last command's stdout or stderr contains TEXT.
# (grep reads the files itself: `cat | grep -q` fails under pipefail when
# grep stops at a match while cat is still writing a large output.)
expect_output() {
  grep -sqF -- "$1" "$work/out" "$work/err" || { cat "$work/out" "$work/err" >&2; fail "output lacks: $1"; }
}

# json EXPR: evaluates a Python expression over the JSON document `d` read from $work/out.
json() {
  "$PY" -c "import json,sys; d=json.load(open(sys.argv[1])); print($1)" "$work/out"
}

# expect_json EXPR WANT
expect_json() {
  local got
  got=$(json "$1")
  [ "$got" = "$2" ] || { cat "$work/out" >&2; fail "$1 is '$got', expected '$2'"; }
}

# wait_for FILE [SECONDS]: until FILE exists.
wait_for() {
  local deadline=$((SECONDS + ${2:-20}))
  while [ ! -e "$1" ]; do
    [ $SECONDS -lt $deadline ] || fail "timed out waiting for $1"
    sleep 0.05
  done
}

# gone PID: the process no longer exists (zombies count as gone).
gone() {
  local state
  state=$(ps -o stat= -p "$1" 2>/dev/null || true)
  [ -z "$state" ] || [[ "$state" == Z* ]]
}

# wait_gone PID [SECONDS]
wait_gone() {
  local deadline=$((SECONDS + ${2:-10}))
  until gone "$1"; do
    [ $SECONDS -lt $deadline ] || fail "process $1 is still alive"
    sleep 0.05
  done
}

# start_mlflow_server NAME [OPTIONS...]: starts the test MLflow server
# (tests/mlflow/mlflow_test_server.py) on a free port; sets NAME_URL to its
# base URL and NAME_PID. Stopped when the test exits.
start_mlflow_server() {
  local name=$1; shift
  local port_file="$work/$name.port"
  rm -f "$port_file"
  "$PY" "$KILN_SOURCE/tests/mlflow/mlflow_test_server.py" --port 0 --port-file "$port_file" \
    --log "$work/$name.requests" "$@" >"$work/$name.log" 2>&1 &
  local pid=$!
  server_pids+=("$pid")
  wait_for "$port_file" 20
  printf -v "${name}_URL" 'http://127.0.0.1:%s' "$(cat "$port_file")"
  printf -v "${name}_PID" '%s' "$pid"
}

# server_stats URL EXPR: a Python expression over the server's request
# statistics `s` (see tests/mlflow/README.md).
server_stats() {
  curl -sf "$1/__kiln_test__/stats" | "$PY" -c "import json,sys; s=json.load(sys.stdin); print($2)"
}

# set_faults URL RATE [KINDS...]: changes the server's fault injection
# (without KINDS, only the rate: 0 turns faults off).
set_faults() {
  local url=$1 rate=$2; shift 2
  local body="{\"rate\": $rate, \"seed\": 1"
  if (($#)); then
    local kinds
    kinds=$(printf '"%s",' "$@")
    body+=", \"kinds\": [${kinds%,}]"
  fi
  curl -sf -X POST -H 'Content-Type: application/json' -d "$body}" "$url/__kiln_test__/faults" >/dev/null
}

# expect_remote_equals_local URL [RUN...]: reads the runs back through the
# server's API and compares them with the store, point by point.
expect_remote_equals_local() {
  local url=$1; shift
  "$PY" "$KILN_SOURCE/tests/mlflow/compare_remote.py" "$KILN_STORE/kiln.db" "$url" "$@" >"$work/compare" 2>&1 ||
    { cat "$work/compare" >&2; fail "the server's copy differs from the store"; }
}
