# The history CLI over several runs: search with MLflow's filter syntax plus
# OR and parentheses (and its errors), ordering, compare, delete, and gc that
# never removes an artifact a remaining run references.
source "$(dirname "$0")/lib.sh"

cat > wf.yaml <<'YAML'
name: sweep
params:
  model: lr
  C: {type: float, default: 1.0}
  shared: {type: string, default: "same"}
steps:
  train:
    kind: train
    outputs: {model: model.bin}
    run: |
      echo "::kiln::metric accuracy=${{ params.C }}"
      printf '%s' "${{ params.shared }}" > model.bin
YAML
expect_exit 0 "$KILN" run wf.yaml -p C=0.5 -p model=lr          # run 1
expect_exit 0 "$KILN" run wf.yaml -p C=0.95 -p model=svm        # run 2
expect_exit 0 "$KILN" run wf.yaml -p C=0.97 -p model=lr         # run 3
expect_exit 0 "$KILN" run wf.yaml -p C=0.7 -p model=Lr --tag team=mlops  # run 4

numbers() { json '[r["number"] for r in d]'; }
expect_exit 0 "$KILN" runs search "metrics.accuracy > 0.9 and params.model = 'lr'" --output json
[ "$(numbers)" = "[3]" ] || fail "search: $(numbers)"
expect_exit 0 "$KILN" runs search "(metrics.accuracy < 0.6 OR metrics.accuracy > 0.96) and attributes.status = 'succeeded'" --output json
[ "$(numbers)" = "[3, 1]" ] || fail "search with OR: $(numbers)"
expect_exit 0 "$KILN" runs search "params.model ILIKE 'l%'" --order-by "metrics.accuracy DESC" --output json
[ "$(numbers)" = "[3, 4, 1]" ] || fail "ILIKE, ordered: $(numbers)"
expect_exit 0 "$KILN" runs search "params.model LIKE 'l%'" --output json
[ "$(numbers)" = "[3, 1]" ] || fail "LIKE is case-sensitive: $(numbers)"
expect_exit 0 "$KILN" runs search "tags.team IN ('mlops', 'x') or params.model != 'lr'" --output json
[ "$(numbers)" = "[4, 2]" ] || fail "IN / !=: $(numbers)"
expect_exit 0 "$KILN" runs search "metrics.accuracy >= 0.95" --output csv
expect_output "sweep"
expect_exit 2 "$KILN" runs search "metrics.accuracy > 0.9 and params.model = "
expect_output "column"
expect_output "^"
expect_exit 2 "$KILN" runs search "metricz.accuracy > 1"
expect_output "did you mean 'metrics'"

# Compare: params and final metrics side by side, differences marked.
expect_exit 0 "$KILN" runs compare 1 2 --output json
expect_json '[(r["kind"], r["key"], r["differs"]) for r in d["rows"]]' \
  "[('param', 'C', True), ('param', 'model', True), ('param', 'shared', False), ('metric', 'accuracy', True)]"
expect_exit 0 "$KILN" runs compare 1 2
expect_output "*"

# Runs 1-4 all made the same model: one blob. Deleting three keeps it.
blob_count() { find "$KILN_STORE/artifacts/sha256" -type f | wc -l; }
[ "$(blob_count)" -eq 1 ] || fail "identical models should share one blob"
expect_exit 0 "$KILN" runs delete 1 2
expect_exit 2 "$KILN" runs show 1
[ "$(blob_count)" -eq 1 ] || fail "a blob still referenced was removed"
expect_exit 0 "$KILN" artifacts get 3 model.bin -o m3.bin
expect_exit 0 "$KILN" gc --keep-last 1 --dry-run --output json
expect_json 'd["runs"]' "[3]"
expect_json 'd["blobs_removed"]' 0
expect_exit 0 "$KILN" runs show 3
expect_exit 0 "$KILN" gc --keep-last 1
expect_output "removed 1 runs"
[ "$(blob_count)" -eq 1 ] || fail "gc removed a blob run 4 references"
expect_exit 0 "$KILN" artifacts get 4 model.bin -o m4.bin
expect_exit 0 "$KILN" runs delete 4
[ "$(blob_count)" -eq 0 ] || fail "an unreferenced blob was kept"
expect_exit 0 "$KILN" runs list --output json
expect_json 'd' "[]"
