# Skip-unchanged caching (inputs, outputs, kiln status, kiln why, --force,
# outputs restored from the artifact store), conditions and trigger rules
# (when:, always(), failure()), gates with previous.NAME, and step outputs
# flowing through KILN_OUTPUTS into later commands and conditions.
source "$(dirname "$0")/lib.sh"

# sql QUERY: the rows of a query on the store, one per line, columns joined by '|'.
sql() {
  "$PY" - "$KILN_STORE/kiln.db" "$1" <<'PY'
import sqlite3, sys
for row in sqlite3.connect(sys.argv[1]).execute(sys.argv[2]).fetchall():
    print("|".join("" if v is None else str(v) for v in row))
PY
}

# expect_sql QUERY WANT
expect_sql() {
  local got
  got=$(sql "$1")
  [ "$got" = "$2" ] || fail "$1 gave '$got', expected '$2'"
}

# ran: which steps wrote to ran.log since the last call, sorted (steps run in parallel).
ran() {
  if [ -f ran.log ]; then sort ran.log | tr '\n' ' '; rm ran.log; fi
}

# expect_ran WANT...: exactly these steps ran their commands (WANT sorted).
expect_ran() {
  local got
  got=$(ran)
  [ "$got" = "$*${*:+ }" ] || fail "steps that ran: '$got', expected '$*'"
}

# expect_statuses WANT: the last run's steps as "id=status ..." in file order.
expect_statuses() {
  expect_exit 0 "$KILN" runs show last --output json
  expect_json '" ".join(s["id"] + "=" + s["status"] for s in d["step_list"])' "$1"
}

# expect_line TEXT: some line of the last command's stdout or stderr is exactly TEXT.
expect_line() {
  grep -sqxF -- "$1" "$work/out" "$work/err" || { cat "$work/out" "$work/err" >&2; fail "no line: $1"; }
}

sha() { sha256sum "$1" | cut -c1-12; }

# ---------------------------------------------------------------------------
# Caching: make -> train, other alone, use (not cached) reads make's output.
cat > c.yaml <<'YAML'
name: cache
params:
  C: {type: int, default: 1}
steps:
  make:
    inputs: [in.txt]
    outputs: [out.txt]
    run: |
      echo make >> ran.log
      tr a-z A-Z < in.txt > out.txt
      echo "path=out.txt" >> "$KILN_OUTPUTS"
  train:
    needs: [make]
    inputs: [out.txt]
    outputs: [model.txt]
    run: |
      echo train >> ran.log
      { cat out.txt; echo "C=${{ params.C }}"; } > model.txt
  other:
    inputs: [other.txt]
    outputs: [other.out]
    run: |
      echo other >> ran.log
      cp other.txt other.out
  use:
    needs: [make]
    run: echo "using ${{ steps.make.outputs.path }}"
YAML
echo hello > in.txt
echo other > other.txt

# Run 1 runs everything and records keys (not for use, which is not cached).
expect_exit 0 "$KILN" run c.yaml
expect_ran make other train
expect_statuses "make=succeeded train=succeeded other=succeeded use=succeeded"
expect_sql "SELECT id, length(cache_key), cached_from FROM steps WHERE run = 1 ORDER BY position" \
  "make|64|
train|64|
other|64|
use|0|"
expect_sql "SELECT name, value FROM step_outputs WHERE run = 1 AND step = 'make'" "path|out.txt"

expect_exit 0 "$KILN" status c.yaml --output json
expect_json 'd["runs"]' 1
expect_json '[(s["id"], s["verdict"]) for s in d["steps"]]' \
  "[('make', 'cached'), ('train', 'cached'), ('other', 'cached'), ('use', 'runs')]"
expect_json '[s["reasons"] for s in d["steps"] if s["id"] == "make"][0]' "['unchanged since run 1']"

# Changing an input reruns its step and the cached step downstream, not the others.
old_in=$(sha in.txt)
echo world > in.txt
new_in=$(sha in.txt)
old_out=$(sha out.txt)
expect_exit 0 "$KILN" status c.yaml --output json
expect_json 'd["runs"]' 3
expect_json '[(s["id"], s["verdict"]) for s in d["steps"]]' \
  "[('make', 'runs'), ('train', 'runs'), ('other', 'cached'), ('use', 'runs')]"
expect_json '[s["reasons"] for s in d["steps"] if s["id"] == "make"][0]' \
  "['input in.txt changed (sha256 $old_in -> $new_in) (since run 1)']"
expect_json '[s["reasons"] for s in d["steps"] if s["id"] == "train"][0]' "[\"upstream step 'make' runs\"]"
expect_exit 0 "$KILN" status c.yaml
expect_output "cache: 3 of 4 steps would run"

expect_exit 0 "$KILN" run c.yaml
expect_ran make train
expect_output "other cached: unchanged since run 1"
expect_statuses "make=succeeded train=succeeded other=cached use=succeeded"
[ "$(cat out.txt)" = WORLD ] || fail "out.txt is '$(cat out.txt)'"
expect_exit 0 "$KILN" why last make
expect_line "make in run 2 succeeded: 1 change since run 1, its last successful execution"
expect_line "  input in.txt changed (sha256 $old_in -> $new_in)"
expect_exit 0 "$KILN" why last train --output json
expect_json 'd["changes"]' \
  "['input out.txt changed (sha256 $old_out -> $(sha out.txt))', \"upstream step 'make' changed (its key differs)\"]"
expect_json 'd["compared_with"]' 1
expect_exit 0 "$KILN" why last other
expect_line "other in run 2 was cached: its key matched run 1's execution"
expect_exit 0 "$KILN" why last use
expect_output "use in run 2 has no cache key: it is not cached"

# Run 3: nothing changed, the cached steps run nothing; use still gets the
# output make wrote in run 2.
expect_exit 0 "$KILN" run c.yaml
expect_ran
expect_output "make cached: unchanged since run 2"
expect_output "train cached: unchanged since run 2"
expect_output "other cached: unchanged since run 1"
expect_output "(1 succeeded, 3 cached)"
expect_statuses "make=cached train=cached other=cached use=succeeded"
expect_json '[s["reason"] for s in d["step_list"]][:3]' \
  "['unchanged since run 2', 'unchanged since run 2', 'unchanged since run 1']"
expect_sql "SELECT b.id, b.cached_from FROM steps AS a JOIN steps AS b ON a.id = b.id
            WHERE a.run = 2 AND b.run = 3 AND a.cache_key = b.cache_key AND a.cache_key <> '' ORDER BY b.position" \
  "make|2
train|2
other|1"
expect_exit 0 "$KILN" logs last use
expect_output "using out.txt"
expect_exit 0 "$KILN" why last make
expect_line "make in run 3 was cached: its key matched run 2's execution"

# A deleted output is restored from the artifact store, with its content.
rm out.txt
expect_exit 0 "$KILN" status c.yaml --output json
expect_json '[(s["verdict"], s["reasons"]) for s in d["steps"] if s["id"] == "make"][0]' \
  "('restores', ['unchanged since run 2; 1 output(s) gone, restored from the artifact store'])"
expect_exit 0 "$KILN" run c.yaml
expect_ran
expect_output "make cached: unchanged since run 2; restored 1 output from the artifact store"
expect_output "train cached: unchanged since run 2"
[ "$(cat out.txt)" = WORLD ] || fail "restored out.txt is '$(cat out.txt)'"
expect_sql "SELECT id, cached_from FROM steps WHERE run = 4 AND status = 'cached' ORDER BY position" \
  "make|2
train|2
other|1"

# An output changed by hand is not overwritten by a copy: the step runs and
# writes it again; train, whose input comes back the same, stays cached.
echo tampered > out.txt
expect_exit 0 "$KILN" status c.yaml --output json
expect_json '[(s["verdict"], s["reasons"]) for s in d["steps"] if s["id"] == "make"][0]' \
  "('runs', ['output out.txt changed since run 2'])"
expect_exit 0 "$KILN" run c.yaml
expect_ran make
expect_statuses "make=succeeded train=cached other=cached use=succeeded"
[ "$(cat out.txt)" = WORLD ] || fail "out.txt is '$(cat out.txt)' after the rerun"
expect_exit 0 "$KILN" why last make
expect_output "but that execution could not stand for it (an output was changed or gone, or --force)"

# --force runs every cached step; --force=STEP only that one.
expect_exit 0 "$KILN" run c.yaml --force
expect_ran make other train
expect_statuses "make=succeeded train=succeeded other=succeeded use=succeeded"
expect_exit 0 "$KILN" run c.yaml --force=train
expect_ran train
expect_statuses "make=cached train=succeeded other=cached use=succeeded"
expect_exit 0 "$KILN" why last train
expect_output "could not stand for it (an output was changed or gone, or --force)"
expect_exit 2 "$KILN" run c.yaml --force=trian
expect_output "--force trian: no step 'trian' in c.yaml (did you mean 'train'?)"

# A param the command uses is part of the key, and why names it.
expect_exit 0 "$KILN" run c.yaml -p C=10
expect_ran train
grep -qx "C=10" model.txt || fail "model.txt lacks C=10"
expect_exit 0 "$KILN" why last train
expect_line "  param C: 1 -> 10"
expect_exit 0 "$KILN" run c.yaml -p C=10
expect_ran
expect_statuses "make=cached train=cached other=cached use=succeeded"

# ---------------------------------------------------------------------------
# Gates, conditions and trigger rules.
cat > g.yaml <<'YAML'
name: gates
params:
  min: {type: float, default: 0.5}
steps:
  train:
    run: echo trained
  check:
    kind: evaluate
    needs: [train]
    retries: {limit: 2, delay: 10ms}
    run: |
      echo "{\"accuracy\": $(cat acc.txt)}" > m.json
    metrics: m.json
    gate: [accuracy >= params.min, accuracy >= previous.accuracy]
  deploy:
    needs: [check]
    when: steps.check.metrics.accuracy > 0.85
    run: echo deploy
  cleanup:
    needs: [check]
    when: always()
    run: echo "cleanup after ${{ steps.check.status }}"
  notify:
    needs: [check]
    when: failure()
    run: echo "notify ${{ steps.check.status }}"
  never:
    needs: [train]
    when: false
    run: echo never
YAML

# No previous run: previous.accuracy is unknown and that gate passes.
echo 0.8 > acc.txt
expect_exit 0 "$KILN" run g.yaml
expect_output "deploy skipped: condition false: steps.check.metrics.accuracy > 0.85 (steps.check.metrics.accuracy = 0.8)"
expect_output "notify skipped: condition false: failure()"
expect_output "never skipped: condition false: false"
expect_statuses "train=succeeded check=succeeded deploy=skipped cleanup=succeeded notify=skipped never=skipped"
expect_json '[s["reason"] for s in d["step_list"] if s["id"] in ("deploy", "never")]' \
  "['condition false: steps.check.metrics.accuracy > 0.85 (steps.check.metrics.accuracy = 0.8)', 'condition false: false']"
expect_exit 0 "$KILN" logs last cleanup
expect_output "cleanup after succeeded"
# status names a step's condition: it is decided only as the step starts.
expect_exit 0 "$KILN" status g.yaml
expect_output "when: steps.check.metrics.accuracy > 0.85 (decided as it starts)"
expect_output "when: false (decided as it starts)"
gates_first=$("$KILN" runs show last --output json | "$PY" -c "import json,sys; print(json.load(sys.stdin)['number'])")

# Accuracy drops: the gate fails the step once (no retry), deploy is skipped
# for it, cleanup and notify run, and the run fails.
echo 0.7 > acc.txt
expect_exit 1 "$KILN" run g.yaml
expect_output "check failed: gate failed: accuracy >= previous.accuracy (accuracy = 0.7, previous.accuracy = 0.8)"
expect_output "deploy skipped: needs 'check', which failed"
expect_statuses "train=succeeded check=failed deploy=skipped cleanup=succeeded notify=succeeded never=skipped"
expect_json 'd["status"]' failed
expect_json 'd["exit_code"]' 1
expect_json '[s["attempts"] for s in d["step_list"] if s["id"] == "check"][0]' 1
expect_json '[s["metrics"]["accuracy"]["last"] for s in d["step_list"] if s["id"] == "check"][0]' 0.7
expect_exit 0 "$KILN" logs last notify
expect_output "notify failed"
expect_exit 0 "$KILN" logs last cleanup
expect_output "cleanup after failed"

# The threshold from a param, named with its value.
echo 0.85 > acc.txt
expect_exit 1 "$KILN" run g.yaml -p min=0.9
expect_output "check failed: gate failed: accuracy >= params.min (accuracy = 0.85, params.min = 0.9)"

# previous.accuracy is the last succeeded run's (0.8), not a failed run's (0.7 or 0.85).
echo 0.75 > acc.txt
expect_exit 1 "$KILN" run g.yaml
expect_output "gate failed: accuracy >= previous.accuracy (accuracy = 0.75, previous.accuracy = 0.8)"
echo 0.9 > acc.txt
expect_exit 0 "$KILN" run g.yaml
expect_statuses "train=succeeded check=succeeded deploy=succeeded cleanup=succeeded notify=skipped never=skipped"
expect_sql "SELECT count(*) FROM runs WHERE workflow_name = 'gates' AND status = 'succeeded' AND number > $gates_first" 1

# ---------------------------------------------------------------------------
# Outputs into commands, env and conditions; a heredoc value of several lines.
cat > o.yaml <<'YAML'
name: outputs
steps:
  produce:
    run: |
      echo "path=data/file.csv" >> "$KILN_OUTPUTS"
      echo "count=41" >> "$KILN_OUTPUTS"
      echo "count=42" >> "$KILN_OUTPUTS"
      printf 'notes<<EOF\nline one\n\nline three\nEOF\n' >> "$KILN_OUTPUTS"
  consume:
    needs: [produce]
    env:
      NOTES: ${{ steps.produce.outputs.notes }}
    run: |
      echo "got ${{ steps.produce.outputs.path }} count ${{ steps.produce.outputs.count }} after ${{ steps.produce.status }}"
      printf '%s' "$NOTES" > notes.txt
  big:
    needs: [produce]
    when: steps.produce.outputs.count > 40 and steps.produce.outputs.path == 'data/file.csv'
    run: echo big
  small:
    needs: [produce]
    when: steps.produce.outputs.count < 10
    run: echo small
YAML
expect_exit 0 "$KILN" run o.yaml
expect_output "small skipped: condition false: steps.produce.outputs.count < 10 (steps.produce.outputs.count = 42)"
expect_statuses "produce=succeeded consume=succeeded big=succeeded small=skipped"
expect_exit 0 "$KILN" logs last consume
expect_output "got data/file.csv count 42 after succeeded"
[ "$(cat notes.txt)" = "$(printf 'line one\n\nline three')" ] || fail "notes.txt is '$(cat notes.txt)'"
expect_sql "SELECT name, value FROM step_outputs WHERE run = (SELECT max(number) FROM runs) ORDER BY name" \
  "count|42
notes|line one

line three
path|data/file.csv"

# A malformed KILN_OUTPUTS line fails the step, naming the line; an output
# that was never written fails the step that uses it.
cat > bad.yaml <<'YAML'
name: bad-outputs
steps:
  typo:
    run: |
      echo "ok=1" >> "$KILN_OUTPUTS"
      echo "this is not an output" >> "$KILN_OUTPUTS"
  writer:
    run: echo "a=1" >> "$KILN_OUTPUTS"
  reader:
    needs: [writer]
    run: echo "${{ steps.writer.outputs.b }}"
YAML
expect_exit 1 "$KILN" run bad.yaml --keep-going
expect_output "line 2: expected NAME=VALUE, got 'this is not an output'"
expect_statuses "typo=failed writer=succeeded reader=failed"
expect_json '[s["reason"] for s in d["step_list"] if s["id"] == "reader"][0]' \
  "cannot render the command: step 'writer' wrote no output 'b' to KILN_OUTPUTS"
expect_json '[s["reason"] for s in d["step_list"] if s["id"] == "typo"][0].startswith("KILN_OUTPUTS (")' True
expect_sql "SELECT count(*) FROM step_outputs WHERE run = (SELECT max(number) FROM runs) AND step = 'typo'" 0

# A condition that calls failure() is evaluated as written: `not failure()`
# runs when nothing failed, and `failure() or ...` can be true without one.
cat > neg.yaml <<'YAML'
name: neg
steps:
  a:
    run: "true"
  quiet:
    needs: [a]
    when: not failure()
    run: echo quiet
  either:
    needs: [a]
    when: failure() or steps.a.status == 'succeeded'
    run: echo either
YAML
expect_exit 0 "$KILN" run neg.yaml
expect_statuses "a=succeeded quiet=succeeded either=succeeded"

# kiln status before anything ran here: every step would run.
mkdir fresh && cp neg.yaml fresh/
expect_exit 0 "$KILN" status fresh/neg.yaml --store "$work/fresh-store"
expect_output "3 of 3 steps would run (no runs recorded yet"

echo "conditions_cache: ok"
