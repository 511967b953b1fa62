# kiln resume RUN: a failed, crashed or partial run goes on in place with
# its recorded params and workflow content; what succeeded is kept (not run
# again, logs untouched), the rest runs as new attempts of the same run.
source "$(dirname "$0")/lib.sh"
set -m

lines() { if [ -e "$1" ]; then wc -l <"$1" | tr -d ' '; else echo 0; fi; }

# --- A step that fails the first time: resumed once the cause is fixed. ---
cat > wf.yaml <<'YAML'
name: resumable
params:
  n: 1
steps:
  a: {run: "echo a-out; echo a >> a.count"}
  b: {needs: [a], run: "echo b >> b.count"}
  c: {needs: [b], run: "echo attempt $KILN_ATTEMPT; echo ${{ params.n }} >> c.param; test -e flag && echo c >> c.count"}
  d: {needs: [c], run: "echo d >> d.count"}
YAML
expect_exit 1 "$KILN" run wf.yaml -p n=7
expect_exit 0 "$KILN" runs show 1 --output json
expect_json '[s["status"] for s in d["step_list"]]' "['succeeded', 'succeeded', 'failed', 'skipped']"
run_id=$(json 'd["id"]')
a_log="$KILN_STORE/logs/$run_id/a.1.out"
[ -e "$a_log" ] || fail "no log for a at $a_log"
touch -d '2001-01-01' "$a_log"
a_stamp=$(stat -c %Y "$a_log")

touch flag
expect_exit 0 "$KILN" resume 1
expect_output "kiln: run 1 of resumable ($run_id): 4 steps, 2 done before and kept"
expect_output "kiln: run 1 succeeded"
[ "$(lines a.count)$(lines b.count)$(lines c.count)$(lines d.count)" = 1111 ] ||
  fail "a, b, c, d ran $(lines a.count), $(lines b.count), $(lines c.count), $(lines d.count) times; expected once each"
# The recorded params, not the file's default.
[ "$(cat c.param)" = "$(printf '7\n7')" ] || fail "c ran with params.n = $(cat c.param | tr '\n' ' ')"
[ "$(stat -c %Y "$a_log")" = "$a_stamp" ] || fail "a's log was rewritten"
[ "$(cat "$KILN_STORE/logs/$run_id/c.1.out")" = "attempt 1" ] || fail "c's first log changed"
[ "$(cat "$KILN_STORE/logs/$run_id/c.2.out")" = "attempt 2" ] || fail "c's second attempt has no log of its own"

expect_exit 0 "$KILN" runs show 1 --output json
expect_json 'd["status"]' succeeded
expect_json 'd["exit_code"]' 0
expect_json '[(s["id"], s["status"], s["attempts"]) for s in d["step_list"]]' \
  "[('a', 'succeeded', 1), ('b', 'succeeded', 1), ('c', 'succeeded', 2), ('d', 'succeeded', 1)]"
expect_json '[(a["step"], a["number"], a["exit_code"]) for a in d["attempts"]]' \
  "[('a', 1, 0), ('b', 1, 0), ('c', 1, 1), ('c', 2, 0), ('d', 1, 0)]"
expect_json '(d["tags"]["kiln.resumed"], d["tags"]["kiln.resume.command"], d["tags"]["kiln.command"])' \
  "('1', '$KILN resume 1', '$KILN run wf.yaml -p n=7')"
expect_json 'd["params"]' "{'n': 7}"
expect_exit 0 "$KILN" runs show 1
grep -qE '^status +succeeded \(exit 0\)' "$work/out" || { cat "$work/out"; fail "runs show: not succeeded"; }
grep -qE '^c +task +succeeded +2 ' "$work/out" || { cat "$work/out"; fail "runs show: c not on attempt 2"; }

# A succeeded run is not resumed.
expect_exit 2 "$KILN" resume 1
expect_output "kiln: error: run 1 succeeded: there is nothing to resume"

# --- SIGKILL of the runner mid-run: the resume runs only what had not succeeded. ---
cat > killed.yaml <<'YAML'
name: killed
steps:
  first: {run: "echo first >> first.count"}
  side: {run: "echo side >> side.count"}
  slow:
    needs: [first]
    run: "echo $$ > slow.pid; test -e go || sleep 120; echo slow >> slow.count"
  last: {needs: [slow, side], run: "echo last >> last.count"}
YAML
"$KILN" run killed.yaml -j 2 >"$work/run.out" 2>"$work/run.err" &
runner=$!
wait_for slow.pid
step_pid=$(cat slow.pid)
# Still running: refused, and left alone.
expect_exit 2 "$KILN" resume 2
expect_output "kiln: error: run 2 is still running (kiln pid $runner on"
kill -KILL "$runner"
wait "$runner" 2>/dev/null || true
expect_exit 0 "$KILN" runs show 2 --output json
expect_json 'd["status"]' crashed
expect_json '[s["status"] for s in d["step_list"]]' "['succeeded', 'succeeded', 'failed', 'cancelled']"
wait_gone "$step_pid"

touch go
expect_exit 0 "$KILN" resume last
expect_output "4 steps, 2 done before and kept"
[ "$(lines first.count)$(lines side.count)$(lines slow.count)$(lines last.count)" = 1111 ] ||
  fail "first, side, slow, last ran $(lines first.count), $(lines side.count), $(lines slow.count), $(lines last.count) times"
expect_exit 0 "$KILN" runs show 2 --output json
expect_json 'd["status"]' succeeded
expect_json '[(s["id"], s["status"], s["attempts"]) for s in d["step_list"]]' \
  "[('first', 'succeeded', 1), ('side', 'succeeded', 1), ('slow', 'succeeded', 2), ('last', 'succeeded', 1)]"
expect_json '[(a["step"], a["number"], a["error"]) for a in d["attempts"] if a["step"] == "slow"]' \
  "[('slow', 1, 'runner died'), ('slow', 2, None)]"

# --- The workflow file changed: refused unless --allow-changed. ---
cat > edit.yaml <<'YAML'
name: edited
steps:
  one: {run: "echo one >> one.count"}
  two: {needs: [one], run: "exit 3"}
YAML
expect_exit 1 "$KILN" run edit.yaml
sed -i 's/exit 3/echo two >> two.count/' edit.yaml
expect_exit 2 "$KILN" resume 3
expect_output "kiln: error: cannot resume run 3: its workflow file $work/edit.yaml has changed since the run started"
expect_output "--allow-changed resumes with the file as it is now"
expect_exit 0 "$KILN" runs show 3 --output json
expect_json 'd["status"]' failed
# Without the file, the same refusal.
mv edit.yaml edit.saved
expect_exit 2 "$KILN" resume 3
expect_output "its workflow file $work/edit.yaml cannot be read"
mv edit.saved edit.yaml
# A step the run recorded is gone from the file: nothing to resume it as.
sed -i 's/^  two:/  three:/' edit.yaml
expect_exit 2 "$KILN" resume 3 --allow-changed
expect_output "no longer has its step 'two'"
sed -i 's/^  three:/  two:/' edit.yaml
expect_exit 0 "$KILN" resume 3 --allow-changed
expect_output "kiln: warning: $work/edit.yaml has changed since run 3 started; resuming with it as it is now"
[ "$(lines one.count)$(lines two.count)" = 11 ] || fail "one, two ran $(lines one.count), $(lines two.count) times"
expect_exit 0 "$KILN" runs show 3 --output json
expect_json 'd["status"]' succeeded
expect_json 'd["workflow_hash"]' "$(sha256sum edit.yaml | cut -d' ' -f1)"
expect_json '[(s["id"], s["attempts"]) for s in d["step_list"]]' "[('one', 1), ('two', 2)]"

# --- A partial run stays partial. ---
cat > part.yaml <<'YAML'
name: part
steps:
  prepare: {run: "echo prep >> prepare.count"}
  train: {needs: [prepare], run: "test -e trained-ok && echo train >> train.count"}
  report: {run: "echo report >> report.count"}
YAML
expect_exit 1 "$KILN" run part.yaml --from train
touch trained-ok
expect_exit 0 "$KILN" resume last
expect_exit 0 "$KILN" runs show last --output json
expect_json '[(s["id"], s["status"], s["reason"]) for s in d["step_list"]]' \
  "[('prepare', 'skipped', 'not selected (--from train)'), ('train', 'succeeded', None), ('report', 'skipped', 'not selected (--from train)')]"
[ "$(lines prepare.count)$(lines report.count)" = 00 ] || fail "a step left out of the partial run ran"

# --- A kept step with a cache key: the cached step after it runs. ---
cat > cached.yaml <<'YAML'
name: cached
steps:
  make: {inputs: [in.txt], outputs: [out.txt], run: "echo make >> make.count; cp in.txt out.txt"}
  train:
    needs: [make]
    inputs: [out.txt]
    outputs: [model.txt]
    run: "test -e train-ok && cp out.txt model.txt && echo fit >> fit.count"
YAML
echo data > in.txt
expect_exit 1 "$KILN" run cached.yaml
touch train-ok
expect_exit 0 "$KILN" resume last
[ "$(lines make.count)$(lines fit.count)" = 11 ] || fail "make, train ran $(lines make.count), $(lines fit.count) times"
[ "$(cat model.txt)" = data ] || fail "train's output is missing"

# Unknown runs are usage errors.
expect_exit 2 "$KILN" resume 99
expect_output "no run matches '99'"
echo "resume: ok"
