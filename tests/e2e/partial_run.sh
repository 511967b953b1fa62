# kiln run --only / --from: part of a graph, the rest recorded as skipped
# with the reason; what a selected step needs is taken as done.
source "$(dirname "$0")/lib.sh"

cat > w.yaml <<'YAML'
name: part
steps:
  prepare: {run: "echo prep > data.txt"}
  train: {needs: [prepare], run: "cat data.txt && echo trained > model.txt"}
  evaluate: {needs: [train], run: "cat model.txt"}
  report: {run: "echo report"}
YAML
expect_exit 0 "$KILN" run w.yaml
rm data.txt model.txt

# --from train: train and evaluate; prepare is taken as done (and its output is gone, so train fails).
expect_exit 1 "$KILN" run w.yaml --from train
expect_output "prepare skipped: not selected (--from train)"
expect_output "report skipped: not selected (--from train)"
expect_exit 0 "$KILN" runs show last --output json
expect_json '[(s["id"], s["status"]) for s in d["step_list"]]' \
  "[('prepare', 'skipped'), ('train', 'failed'), ('evaluate', 'skipped'), ('report', 'skipped')]"

echo prep > data.txt
expect_exit 0 "$KILN" run w.yaml --from train
expect_exit 0 "$KILN" runs show last --output json
expect_json '[(s["id"], s["status"]) for s in d["step_list"]]' \
  "[('prepare', 'skipped'), ('train', 'succeeded'), ('evaluate', 'succeeded'), ('report', 'skipped')]"
expect_json '[s["reason"] for s in d["step_list"]][0]' "not selected (--from train)"

# --only, comma-separated or repeated; combined with --from.
expect_exit 0 "$KILN" run w.yaml --only evaluate,report
expect_output "train skipped: not selected (--only evaluate, report)"
expect_exit 0 "$KILN" runs show last --output json
expect_json '[s["id"] for s in d["step_list"] if s["status"] == "succeeded"]' "['evaluate', 'report']"
expect_exit 0 "$KILN" run w.yaml --only report --from evaluate
expect_exit 0 "$KILN" runs show last --output json
expect_json '[s["id"] for s in d["step_list"] if s["status"] == "succeeded"]' "['evaluate', 'report']"

# An unknown step is a usage error before anything is recorded.
runs_before=$("$KILN" runs list --output json | "$PY" -c "import json,sys; print(len(json.load(sys.stdin)))")
expect_exit 2 "$KILN" run w.yaml --only trian
expect_output "kiln: error: --only trian: no step 'trian' in w.yaml (did you mean 'train'?)"
expect_exit 2 "$KILN" run w.yaml --from nowhere
expect_output "no step 'nowhere'"
runs_after=$("$KILN" runs list --output json | "$PY" -c "import json,sys; print(len(json.load(sys.stdin)))")
[ "$runs_before" = "$runs_after" ] || fail "a refused partial run was recorded"
echo "partial_run: ok"
