# The iris example end to end with Debian's scikit-learn: train, evaluate,
# predict, and every step and attempt recorded.
source "$(dirname "$0")/lib.sh"
"$PY" -c "import sklearn" || fail "python3-sklearn is not installed (.ci/quickstart installs it)"
cp -r "$KILN_SOURCE/examples/iris" iris
cd iris

expect_exit 0 "$KILN" run workflow.yaml -p C=0.5
expect_output "evaluate succeeded"
[ -s model.pkl ] || fail "no model"
[ -s predictions.csv ] || fail "no predictions"
[ "$(wc -l < predictions.csv)" -eq 46 ] || fail "predictions.csv should have 45 rows and a header"
"$PY" - <<'PY'
import json
m = json.load(open("metrics.json"))
assert 0.8 <= m["accuracy"] <= 1.0, m
assert 0.8 <= m["f1"] <= 1.0, m
PY
expect_exit 0 "$KILN" runs show last --output json
expect_json 'd["status"]' succeeded
expect_json 'd["params"]["C"]' 0.5
expect_json '[(s["id"], s["kind"], s["status"]) for s in d["step_list"]]' \
  "[('prepare', 'task', 'succeeded'), ('train', 'train', 'succeeded'), ('evaluate', 'evaluate', 'succeeded'), ('predict', 'predict', 'succeeded')]"
expect_exit 0 "$KILN" logs last evaluate
expect_output "accuracy"

# What the steps recorded: the train step's line protocol, the evaluate
# step's metrics file, and the model with its evaluation.
expect_exit 0 "$KILN" runs show last --output json
expect_json '[s["params"] for s in d["step_list"] if s["id"] == "train"][0]' "{'rows': '105', 'solver': 'lbfgs'}"
expect_json '[s["tags"] for s in d["step_list"] if s["id"] == "train"][0]' "{'model_family': 'logistic_regression'}"
expect_json '0.8 <= [s["metrics"]["train_accuracy"]["last"] for s in d["step_list"] if s["id"] == "train"][0] <= 1' True
expect_exit 0 "$KILN" models --workflow iris --output json
expect_json '[(m["artifact"]["path"], sorted(s["key"] for s in m["metrics"])) for m in d]' "[('model.pkl', ['accuracy', 'f1', 'test_rows'])]"
expect_exit 0 "$KILN" artifacts get last model.pkl -o fetched.pkl
cmp fetched.pkl model.pkl || fail "the model fetched from the store differs"
