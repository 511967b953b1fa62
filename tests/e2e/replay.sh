# Replay: a no-op rerun of a workflow whose last run had every step cached
# before any started is recorded as a repeat of that run, without planning,
# and only while nothing it rests on has changed: the workflow file, -p, the
# environment variables its templates read, its input and output files
# (stamps), the sources its steps were cached from, and this kiln.
source "$(dirname "$0")/lib.sh"

sql() {
  "$PY" - "$KILN_STORE/kiln.db" "$1" <<'PY'
import sqlite3, sys
for row in sqlite3.connect(sys.argv[1]).execute(sys.argv[2]).fetchall():
    print("|".join("" if v is None else str(v) for v in row))
PY
}

replayed_line="all cached: nothing they rest on has changed since run"

# run_kiln [ARGS...]: kiln run wf.yaml, which must succeed.
run_kiln() { expect_exit 0 "$KILN" run wf.yaml "$@"; }
expect_replay() { run_kiln "$@"; expect_output "$replayed_line"; expect_output "(3 cached)"; }
expect_no_replay() {
  run_kiln "$@"
  if grep -qF "$replayed_line" "$work/out"; then cat "$work/out" >&2; fail "'kiln run $*' was a replay"; fi
}
# settle: outputs written within the last second are hashed again by the
# next run (the racy window), so a basis is left by the second run after.
settle() { sleep 1.1; expect_no_replay --no-replay; expect_no_replay --no-replay; }
last() { sql "SELECT max(number) FROM runs"; }

mkdir data
echo "a,b" > data/raw.csv
touch -d '1 hour ago' data/raw.csv
cat > wf.yaml <<'EOF'
name: replayed
params:
  lr: 0.1
steps:
  prep:
    run: cp data/raw.csv prepared.csv
    inputs: [data/raw.csv]
    outputs: [prepared.csv]
  train:
    run: echo "lr=${{ params.lr }} seed=${{ env.KILN_TEST_SEED }}" > model.txt
    inputs: [prepared.csv]
    outputs: [model.txt]
    needs: [prep]
  report:
    run: cat model.txt > report.txt
    inputs: [model.txt]
    outputs: [report.txt]
    needs: [train]
EOF
export KILN_TEST_SEED=7

run_kiln
settle
basis=$(sql "SELECT run FROM replays")
[ "$basis" = "$(last)" ] || fail "the basis is run '$basis', expected the last run, $(last)"

# Replayed: the same rows as the run it repeats, a run of its own.
expect_replay --tag purpose=nightly
expect_output "since run $basis"
now=$(last)
columns="id, position, kind, command, needs_json, status, reason, workdir, cache_key, cached_from"
[ "$(sql "SELECT $columns FROM steps WHERE run = $now ORDER BY id")" = \
  "$(sql "SELECT $columns FROM steps WHERE run = $basis ORDER BY id")" ] || fail "replayed steps differ"
[ "$(sql "SELECT step, path, sha256, size, kind FROM artifacts WHERE run = $now ORDER BY step")" = \
  "$(sql "SELECT step, path, sha256, size, kind FROM artifacts WHERE run = $basis ORDER BY step")" ] ||
  fail "replayed artifacts differ"
[ "$(sql "SELECT count(*) FROM artifacts WHERE run = $now")" = 3 ] || fail "artifacts not copied"
[ "$(sql "SELECT key, value FROM params WHERE run = $now")" = "lr|0.1" ] || fail "run params not recorded"
[ "$(sql "SELECT value FROM tags WHERE run = $now AND key = 'purpose'")" = nightly ] || fail "--tag not recorded"
[ "$(sql "SELECT status, exit_code FROM runs WHERE number = $now")" = "succeeded|0" ] || fail "replayed run not finished"
[ "$(sql "SELECT run FROM replays")" = "$now" ] || fail "the basis did not move to the replayed run"
expect_exit 0 "$KILN" runs show "$now"
expect_output "unchanged since run 1"
expect_replay

# A replay leaves its writes in the store's log; the next replay copies them
# into kiln.db on a thread and then writes the log from its start, so the log
# does not grow run after run. (Sizes by stat: opening the store with sqlite3
# and closing it would copy the log.)
log_size() { stat -c %s "$KILN_STORE/kiln.db-wal" 2>/dev/null || echo 0; }
expect_replay
first=$(log_size)
[ "$first" -gt 0 ] || fail "a replay left nothing in the log"
for _ in 1 2 3 4; do expect_replay; done
[ "$(log_size)" -lt $((first * 2)) ] || fail "the log grew from $first to $(log_size) bytes over four replays"
[ "$(sql "SELECT count(*) FROM runs WHERE status = 'succeeded'")" = "$(last)" ] || fail "a replayed run is missing"

# A run records the git state of the workflow's repository (asked on a
# thread while the replay is checked, or the workflow parsed).
git init -q .
git add wf.yaml
git -c user.name=kiln -c user.email=kiln@example.com commit -qm workflow
head=$(git rev-parse HEAD)
expect_replay
[ "$(sql "SELECT git_commit, git_dirty FROM runs WHERE number = $(last)")" = "$head|0" ] ||
  fail "the replayed run did not record commit $head"
expect_no_replay --no-replay
[ "$(sql "SELECT git_commit, git_dirty FROM runs WHERE number = $(last)")" = "$head|0" ] ||
  fail "the decided run did not record commit $head"

# Each thing a replay rests on, changed, makes kiln plan and decide again.
expect_no_replay --no-replay
settle

KILN_TEST_SEED=8 expect_no_replay # a variable a template read
expect_output "train started"
settle # (keys back to run 1's: train and report cached from it again)
expect_no_replay -p lr=0.1 # -p, even to the same value
settle

touch data/raw.csv # a new stamp, the same content: decided, still cached
expect_no_replay
expect_output "(3 cached)"
settle

echo "# a comment" >> wf.yaml # the workflow file
expect_no_replay
expect_output "(3 cached)"
settle

rm report.txt # an output gone: restored by the loop
expect_no_replay
[ -f report.txt ] || fail "report.txt not restored"
settle

# A source deleted: a rerun would not find it, so no replay either.
source_run=$(sql "SELECT DISTINCT cached_from FROM steps WHERE run = $(last) AND id = 'prep'")
expect_exit 0 "$KILN" runs delete "$source_run"
expect_no_replay
expect_output "prep started"
settle
expect_replay

# A newer execution of any keyed step, in any run, may be a newer source.
cat > other.yaml <<'EOF'
name: other
steps:
  solo:
    run: echo solo > solo.txt
    outputs: [solo.txt]
    cache: true
EOF
expect_exit 0 "$KILN" run other.yaml
expect_no_replay
settle

# A glob among the inputs: its matches can change with no stamp listed, so
# such a run leaves no basis.
sed -i 's/inputs: \[data\/raw.csv\]/inputs: ["data\/*.csv"]/' wf.yaml
settle
[ -z "$(sql "SELECT run FROM replays")" ] || fail "a run with a glob input left a basis"
expect_no_replay

# A failed run leaves no basis.
sed -i 's/inputs: \["data\/\*.csv"\]/inputs: [data\/raw.csv]/' wf.yaml
settle
[ -n "$(sql "SELECT run FROM replays")" ] || fail "no basis after settling"
echo "x" > data/raw.csv
cat >> wf.yaml <<'EOF'
  broken:
    run: exit 3
EOF
expect_exit 1 "$KILN" run wf.yaml
[ -z "$(sql "SELECT run FROM replays")" ] || fail "a failed run left a basis"
echo "ok"
