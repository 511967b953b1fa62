# The commands around a run: version, help, validate, plan, graph, usage errors.
source "$(dirname "$0")/lib.sh"
cp -r "$KILN_SOURCE/examples/iris" iris

expect_exit 0 "$KILN" --version
expect_output "kiln 0."
expect_exit 0 "$KILN" help
expect_output "validate"
expect_exit 0 "$KILN" help run
expect_output "--keep-going"
expect_exit 0 "$KILN" run --help
expect_output "--jobs"
expect_exit 2 "$KILN" frobnicate
expect_exit 2 "$KILN" run
expect_exit 2 "$KILN" run iris/workflow.yaml -p C
expect_output "expected NAME=VALUE"

expect_exit 0 "$KILN" validate iris/workflow.yaml "$KILN_SOURCE/examples/quickstart/workflow.yaml"
expect_output "iris/workflow.yaml: ok (4 steps)"

cat > bad.yaml <<'YAML'
name: bad
steps:
  a:
    run: echo a
    neds: [b]
  b:
    needs: [a]
    run: echo b
    timeout: 5 minutes
YAML
expect_exit 2 "$KILN" validate bad.yaml
expect_output "bad.yaml:5:5: error:"
expect_output "did you mean 'needs'?"
expect_output "bad.yaml:9:14: error:"
# run refuses the same file, and records nothing.
expect_exit 2 "$KILN" run bad.yaml
[ ! -e .kiln/kiln.db ] || fail "an invalid workflow created a store"
expect_exit 2 "$KILN" run iris/workflow.yaml -p C=abc
expect_output "'abc'"
expect_exit 2 "$KILN" run iris/workflow.yaml -p Cc=1
expect_output "did you mean 'C'?"

expect_exit 0 "$KILN" plan iris/workflow.yaml -p C=0.25 --output json
expect_json '[s["id"] for s in d["steps"]]' "['prepare', 'train', 'evaluate', 'predict']"
expect_json 'd["steps"][1]["argv"][:6]' "['/usr/bin/python3', 'train.py', '--data', 'data/train.csv', '--C', '0.25']"
expect_json 'd["steps"][1]["retries"]["limit"]' 3
expect_json 'd["steps"][0]["retries"]["limit"]' 2
expect_json 'd["steps"][0]["retries"]["backoff"]' exponential
expect_json 'd["steps"][1]["timeout_ms"]' 1800000
expect_json 'd["steps"][2]["timeout_ms"]' 600000
expect_exit 0 "$KILN" plan iris/workflow.yaml
expect_output "train.py --data data/train.csv --C 1.0"

expect_exit 0 "$KILN" graph iris/workflow.yaml
expect_output '"prepare" -> "train";'
expect_exit 0 "$KILN" graph iris/workflow.yaml --format mermaid
expect_output "flowchart LR"
expect_output "s0 --> s1"

# Off a terminal there is no colour and no status line, only plain lines.
expect_exit 0 "$KILN" run "$KILN_SOURCE/examples/quickstart/workflow.yaml"
grep -sq $'\033' "$work/out" "$work/err" && fail "escape codes in output off a terminal"
expect_output "[1/3]"
true

# A reader that goes away must not kill the runner: the run is still
# recorded to the end.
cat > two.yaml <<'YAML'
name: two
steps:
  a:
    run: sleep 0.2; echo a
  b:
    needs: [a]
    run: sleep 0.2; echo b
YAML
"$KILN" run two.yaml | head -1 > /dev/null
expect_exit 0 "$KILN" runs show last --output json
expect_json 'd["status"]' succeeded
expect_json '[s["status"] for s in d["step_list"]]' "['succeeded', 'succeeded']"

# -j above the number of CPUs is honoured: four steps that each wait for all
# four to have started can only finish if they run at once.
cat > barrier.yaml <<'YAML'
name: barrier
steps:
  s1: {run: "touch s1; for i in $(seq 100); do [ $(ls s? | wc -l) -eq 4 ] && exit 0; sleep 0.05; done; exit 1"}
  s2: {run: "touch s2; for i in $(seq 100); do [ $(ls s? | wc -l) -eq 4 ] && exit 0; sleep 0.05; done; exit 1"}
  s3: {run: "touch s3; for i in $(seq 100); do [ $(ls s? | wc -l) -eq 4 ] && exit 0; sleep 0.05; done; exit 1"}
  s4: {run: "touch s4; for i in $(seq 100); do [ $(ls s? | wc -l) -eq 4 ] && exit 0; sleep 0.05; done; exit 1"}
YAML
expect_exit 0 "$KILN" run barrier.yaml -j 4
expect_exit 2 "$KILN" run barrier.yaml -j 0
