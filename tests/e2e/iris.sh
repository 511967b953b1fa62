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
