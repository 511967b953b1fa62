# Shared by the end-to-end tests: each test runs the real kiln binary ($KILN)
# in a fresh temp directory with its own store, and fails loudly.
set -euo pipefail

: "${KILN:?set KILN to the kiln binary}"
: "${KILN_SOURCE:?set KILN_SOURCE to the source tree}"
PY=/usr/bin/python3

work=$(mktemp -d "${TMPDIR:-/tmp}/kiln-e2e.XXXXXX")
cleanup() { rm -rf "$work"; }
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
expect_output() {
  cat "$work/out" "$work/err" 2>/dev/null | grep -qF -- "$1" || { cat "$work/out" "$work/err" >&2; fail "output lacks: $1"; }
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
