# Every way a step records things, end to end through the real binary: the
# stdout line protocol, a JSON Lines history, a YAML metrics file, `kiln log`
# from inside a step, declared outputs (model, predictions), tags from the
# workflow and --tag; then what the history commands show of them.
source "$(dirname "$0")/lib.sh"
export KILN

cat > workflow.yaml <<'YAML'
name: tracked
tags:
  team: ml-platform
params:
  lr: {type: float, default: 0.1}
steps:
  proto:
    tags: {stage: warmup}
    run: |
      for i in 1 2 3 4 5; do echo "::kiln::metric loss=0.$((10 - i)) step=$i"; done
      echo "::kiln::metric acc=0.5 f1=0.25"
      echo '::kiln::param optimizer="adam w" layers=3'
      echo "::kiln::tag owner=ann"
      mkdir -p reports && echo report > reports/report.txt
      echo "::kiln::artifact reports/report.txt"
      echo "ordinary output"
  history:
    metrics: history.jsonl
    run: |
      "$PY" - <<'PYEOF'
      import json
      with open("history.jsonl", "w") as f:
          for i in range(1000):
              f.write(json.dumps({"step": i, "loss": 1.0 / (i + 1), "acc": i / 1000}) + "\n")
      PYEOF
  cli:
    run: |
      "$KILN" log metric auc=0.75 step=2
      "$KILN" log param batch=64
      "$KILN" log tag note="from kiln log"
      echo hello > hello.txt
      "$KILN" log artifact hello.txt
  train:
    kind: train
    needs: [proto]
    outputs: {model: model.bin, vocab: vocab/}
    run: |
      printf 'weights' > model.bin
      mkdir -p vocab/sub && echo a > vocab/a.txt && echo b > vocab/sub/b.txt
  evaluate:
    kind: evaluate
    needs: [train]
    metrics: metrics.yaml
    run: |
      printf 'accuracy: 0.93\neval:\n  f1: 0.91\nnote: text is not a metric\n' > metrics.yaml
  predict:
    kind: predict
    needs: [train]
    outputs: [preds.csv]
    run: echo "id,label" > preds.csv
YAML
sed -i "s|\"\$PY\"|$PY|" workflow.yaml

expect_exit 0 "$KILN" run workflow.yaml -j 3 --tag release=candidate -p lr=0.05
expect_exit 0 "$KILN" runs show last --output json
expect_json 'd["tags"]["team"]' ml-platform
expect_json 'd["tags"]["release"]' candidate
expect_json 'd["tags"]["kiln.workflow.hash"] == d["workflow_hash"]' True
expect_json 'd["tags"]["kiln.user"] != ""' True
expect_json 'd["params"]["lr"]' 0.05
steps='{s["id"]: s for s in d["step_list"]}'
expect_json "$steps['proto']['params']" "{'layers': '3', 'optimizer': 'adam w'}"
expect_json "$steps['proto']['tags']" "{'owner': 'ann', 'stage': 'warmup'}"
expect_json "$steps['proto']['metrics']['loss']['last']" 0.5
expect_json "$steps['proto']['metrics']['loss']['min']" 0.5
expect_json "$steps['proto']['metrics']['loss']['max']" 0.9
expect_json "$steps['proto']['metrics']['loss']['count']" 5
expect_json "$steps['proto']['metrics']['f1']['last']" 0.25
expect_json "$steps['history']['metrics']['loss']['count']" 1000
expect_json "$steps['history']['metrics']['acc']['last']" 0.999
expect_json "$steps['cli']['metrics']['auc']['last_step']" 2
expect_json "$steps['cli']['params']" "{'batch': '64'}"
expect_json "$steps['cli']['tags']" "{'note': 'from kiln log'}"
expect_json "sorted($steps['evaluate']['metrics'])" "['accuracy', 'eval.f1']"
expect_json "sorted((a['step'], a['path'], a['kind']) for a in d['artifacts'])" \
  "[('cli', 'hello.txt', 'logged'), ('predict', 'preds.csv', 'prediction'), ('proto', 'reports/report.txt', 'logged'), ('train', 'model.bin', 'model'), ('train', 'vocab/a.txt', 'output'), ('train', 'vocab/sub/b.txt', 'output')]"

# The history of one key, every point, in every format.
expect_exit 0 "$KILN" metrics last loss --step history --output csv
[ "$(wc -l < "$work/out")" -eq 1001 ] || fail "expected a header and 1000 points"
expect_output "history,loss,999,"
expect_exit 0 "$KILN" metrics last loss --step-range 2:3 --output json
expect_json '[(p["step_id"], p["step"], p["value"]) for p in d["points"]]' \
  "[('proto', 2, 0.8), ('proto', 3, 0.7), ('history', 2, 0.3333333333333333), ('history', 3, 0.25)]"
expect_exit 2 "$KILN" metrics last nosuchkey
expect_output "has no metric 'nosuchkey'"

# Models, with what their evaluation measured.
expect_exit 0 "$KILN" models --output json
expect_json '[(m["artifact"]["path"], {s["key"]: s["last"] for s in m["metrics"]}) for m in d]' \
  "[('model.bin', {'accuracy': 0.93, 'eval.f1': 0.91})]"

# Artifacts come back out byte for byte, files and directories.
expect_exit 0 "$KILN" artifacts list last train --output csv
expect_output "train,vocab/sub/b.txt,output,vocab,2,"
expect_exit 0 "$KILN" artifacts get last model.bin -o got.bin
cmp got.bin model.bin || fail "model.bin differs"
expect_exit 0 "$KILN" artifacts get last vocab -o gotvocab
cmp gotvocab/sub/b.txt vocab/sub/b.txt || fail "vocab/sub/b.txt differs"
expect_exit 2 "$KILN" artifacts get last nothing.txt
expect_output "has no artifact 'nothing.txt'"

# A second run with the same model: one blob, two records.
expect_exit 0 "$KILN" run workflow.yaml
blobs=$(find "$KILN_STORE/artifacts/sha256" -type f | wc -l)
expect_exit 0 "$KILN" artifacts list 2 --output json
distinct=$(json 'len(set(a["sha256"] for a in d))')
[ "$blobs" -eq "$distinct" ] || fail "$blobs blob files for $distinct distinct contents"

# A damaged blob is caught on the way out, and the destination is untouched.
hash=$(json '[a["sha256"] for a in d if a["path"] == "model.bin"][0]')
blob="$KILN_STORE/artifacts/sha256/${hash:0:2}/${hash:2}"
chmod u+w "$blob"; printf 'tampered' > "$blob"
expect_exit 3 "$KILN" artifacts get 2 model.bin -o damaged.bin
expect_output "damaged"
[ ! -e damaged.bin ] || fail "a damaged artifact was written out"
