# What a step records wrongly fails it, with a reason that says what: a
# param changed, a malformed ::kiln:: line, an artifact outside the workdir
# (by "..", an absolute path, or a symlink), a declared output missing, a
# metrics file that does not parse. `kiln log` refuses the same things.
source "$(dirname "$0")/lib.sh"
export KILN
mkdir -p wd

run_step() { # run_step SCRIPT [EXTRA YAML]
  cat > wf.yaml <<YAML
name: refusals
steps:
  s:
    workdir: wd
    run: |
$(printf '%s\n' "$1" | sed 's/^/      /')
${2:-}
YAML
}

run_step 'echo "::kiln::param lr=0.1"; echo "::kiln::param lr=0.2"'
expect_exit 1 "$KILN" run wf.yaml
expect_output "param 'lr' of step 's' was logged as '0.1'; it cannot be changed to '0.2'"

run_step 'echo "::kiln::metric loss=abc"'
expect_exit 1 "$KILN" run wf.yaml
expect_output "stdout line 1:"
expect_output "'abc' is not a number"

run_step 'echo "::kiln::metrik loss=1"'
expect_exit 1 "$KILN" run wf.yaml
expect_output "unknown kiln command 'metrik'"

echo secret > outside.txt
run_step 'echo "::kiln::artifact ../outside.txt"'
expect_exit 1 "$KILN" run wf.yaml
expect_output "outside the step's workdir"

run_step "echo \"::kiln::artifact $work/outside.txt\""
expect_exit 1 "$KILN" run wf.yaml
expect_output "outside the step's workdir"

run_step 'ln -sf ../outside.txt link.txt; echo "::kiln::artifact link.txt"'
expect_exit 1 "$KILN" run wf.yaml
expect_output "symlink"

run_step 'ln -sfn .. up; echo "::kiln::artifact up"'
expect_exit 1 "$KILN" run wf.yaml
expect_output "outside the step's workdir"

# kiln log refuses the same, with exit 1, and the step decides what to do.
run_step '"$KILN" log artifact ../outside.txt && exit 9
"$KILN" log param p=1; "$KILN" log param p=2 && exit 9
"$KILN" log metric x=notanumber; test $? -eq 2 || exit 9
echo ok'
expect_exit 0 "$KILN" run wf.yaml
expect_exit 0 "$KILN" logs last s --stream err
expect_output "outside the step's workdir"
expect_output "cannot be changed to '2'"
expect_exit 2 "$KILN" log metric x=1
expect_output "KILN_RUN_ID is not set"

# Declared outputs and metrics files.
run_step 'true' '    outputs: [missing.bin]'
expect_exit 1 "$KILN" run wf.yaml
expect_output "missing.bin"
run_step 'echo "{not json" > m.json' '    metrics: m.json'
expect_exit 1 "$KILN" run wf.yaml
expect_output "m.json"
run_step 'true' '    metrics: never.json'
expect_exit 1 "$KILN" run wf.yaml
expect_output "did not write its metrics file"

# Nothing a refused step logged before the refusal is lost.
run_step 'echo "::kiln::metric kept=1"; echo "::kiln::metric broken"'
expect_exit 1 "$KILN" run wf.yaml
expect_exit 0 "$KILN" runs show last --output json
expect_json 'd["step_list"][0]["metrics"]["kept"]["last"]' 1.0

# A metrics file the attempt did not write (left from an earlier run) is not
# passed off as this attempt's results.
echo '{"accuracy": 0.99}' > wd/old.json
touch -d '2 hours ago' wd/old.json
run_step 'true' '    metrics: old.json'
expect_exit 1 "$KILN" run wf.yaml
expect_output "was last written before this attempt started"

# A runaway ::kiln:: line is refused, not held in memory or stored.
run_step "$PY -c \"print('::kiln::tag big=' + 'x' * 200000); print('::kiln::metric after=1')\""
expect_exit 1 "$KILN" run wf.yaml
expect_output "stdout line 1: a ::kiln:: command longer than 64 KiB was refused"
expect_exit 0 "$KILN" runs show last --output json
expect_json 'd["step_list"][0]["tags"]' "{}"
expect_json 'd["step_list"][0]["metrics"]["after"]["last"]' 1.0
