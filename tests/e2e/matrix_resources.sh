# Matrices (variants, include/exclude, max_parallel, variant-by-variant
# needs, a pick-best step reading KILN_NEEDS_JSON) and resources (GPU
# assignment from a fake nvidia-smi and from --gpus lists, memory, and the
# checks before anything is recorded).
source "$(dirname "$0")/lib.sh"

# expect_statuses 'a=succeeded b=...': every step of the last run, in file order.
expect_statuses() {
  expect_exit 0 "$KILN" runs show last --output json
  expect_json '" ".join(s["id"] + "=" + s["status"] for s in d["step_list"])' "$1"
}

cat > pick.py <<'PY'
import json, os
d = json.load(open(os.environ["KILN_NEEDS_JSON"]))
assert d["step"] == "pick", d
assert all(n["step"] == "train" and n["status"] == "succeeded" for n in d["needs"]), d
best = max(d["needs"], key=lambda n: n["metrics"]["accuracy"])
print("variants", len(d["needs"]))
print("best", best["id"], best["matrix"]["C"], best["matrix"]["penalty"], best["outputs"]["model"])
PY
cat > sweep.yaml <<'YAML'
name: sweep
steps:
  train:
    matrix:
      C: [0.1, 1, 10]
      penalty: [l1, l2]
    max_parallel: 2
    run: |
      echo "start $(date +%s%N)" > "times-${{ matrix.C }}-${{ matrix.penalty }}"
      sleep 0.3
      echo "C=${{ matrix.C }} penalty=${{ matrix.penalty }}" > "model-${{ matrix.C }}-${{ matrix.penalty }}.txt"
      echo "model=model-${{ matrix.C }}-${{ matrix.penalty }}.txt" >> "$KILN_OUTPUTS"
      # Best at C=1 with l2.
      acc=$(python3 -c "print(0.9 - abs(${{ matrix.C }} - 1) / 100 + (0.01 if '${{ matrix.penalty }}' == 'l2' else 0))")
      echo "{\"accuracy\": $acc}" > "metrics-${{ matrix.C }}-${{ matrix.penalty }}.json"
      echo "end $(date +%s%N)" >> "times-${{ matrix.C }}-${{ matrix.penalty }}"
    outputs: ["model-${{ matrix.C }}-${{ matrix.penalty }}.txt"]
    metrics: "metrics-${{ matrix.C }}-${{ matrix.penalty }}.json"
  check:
    needs: [train]
    matrix: {from: train}
    run: test "$(cat model-${{ matrix.C }}-${{ matrix.penalty }}.txt)" = "C=${{ matrix.C }} penalty=${{ matrix.penalty }}"
  pick:
    needs: [train]
    run: python3 pick.py
YAML
expect_exit 0 "$KILN" run sweep.yaml -j 6
expect_output "(13 succeeded)"
expect_exit 0 "$KILN" logs last pick
expect_output "variants 6"
expect_output "best train[C=1,penalty=l2] 1 l2 model-1-l2.txt"
# Every variant is a step with its own metrics; check variants pair one to one.
expect_exit 0 "$KILN" runs show last --output json
expect_json '[s["id"] for s in d["step_list"]][:7]' \
  "['train[C=0.1,penalty=l1]', 'train[C=0.1,penalty=l2]', 'train[C=1,penalty=l1]', 'train[C=1,penalty=l2]', 'train[C=10,penalty=l1]', 'train[C=10,penalty=l2]', 'check[C=0.1,penalty=l1]']"
expect_json '[s["needs"] for s in d["step_list"] if s["id"] == "check[C=10,penalty=l2]"][0]' "['train[C=10,penalty=l2]']"
expect_json 'len([s["needs"] for s in d["step_list"] if s["id"] == "pick"][0])' 6
expect_json '[s["metrics"]["accuracy"]["last"] for s in d["step_list"] if s["id"] == "train[C=10,penalty=l1]"][0]' 0.81
# max_parallel 2: with -j 6, never more than two variants at once.
"$PY" - <<'PY' || fail "more than 2 train variants ran at once"
import glob
spans = []
for f in glob.glob("times-*"):
    start, end = (int(line.split()[1]) for line in open(f))
    spans.append((start, end))
assert len(spans) == 6, spans
most = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
assert most == 2, most
PY
# A matrix's name in --only (or --from, --force) stands for all its variants.
expect_exit 0 "$KILN" run sweep.yaml --only train -j 6
expect_output "(6 succeeded, 7 skipped)"
expect_statuses "train[C=0.1,penalty=l1]=succeeded train[C=0.1,penalty=l2]=succeeded train[C=1,penalty=l1]=succeeded train[C=1,penalty=l2]=succeeded train[C=10,penalty=l1]=succeeded train[C=10,penalty=l2]=succeeded check[C=0.1,penalty=l1]=skipped check[C=0.1,penalty=l2]=skipped check[C=1,penalty=l1]=skipped check[C=1,penalty=l2]=skipped check[C=10,penalty=l1]=skipped check[C=10,penalty=l2]=skipped pick=skipped"
expect_exit 0 "$KILN" run sweep.yaml --only "train[C=1,penalty=l2]"
expect_output "(1 succeeded, 12 skipped)"
# A list splits at the commas outside a variant's brackets.
expect_exit 0 "$KILN" run sweep.yaml --only "train[C=1,penalty=l2],train[C=10,penalty=l1]"
expect_output "(2 succeeded, 11 skipped)"
expect_exit 2 "$KILN" run sweep.yaml --only trian
expect_output "--only trian: no step 'trian' in sweep.yaml"

# include and exclude.
cat > inc.yaml <<'YAML'
name: inc
steps:
  t:
    matrix:
      a: [1, 2]
      b: [x, y]
      exclude: [{a: 2, b: y}]
      include: [{a: 3, b: z}, {a: 1, b: x}]
    run: echo ${{ matrix.a }}${{ matrix.b }}
YAML
expect_exit 0 "$KILN" run inc.yaml
expect_statuses "t[a=1,b=x]=succeeded t[a=1,b=y]=succeeded t[a=2,b=x]=succeeded t[a=3,b=z]=succeeded"

# A matrix name that is not there, and from: a step without a matrix.
cat > bad.yaml <<'YAML'
name: bad
steps:
  t:
    matrix: {C: [1, 2]}
    run: echo ${{ matrix.D }}
  u:
    needs: [t]
    matrix: {from: v}
    run: echo ${{ matrix.C }}
  v:
    run: "true"
YAML
expect_exit 2 "$KILN" validate bad.yaml
expect_output "matrix.D is not in the step's matrix; it has C"
expect_output "step 'v' has no matrix of its own to take variants from"

# GPUs: a fake nvidia-smi lists three devices; steps get disjoint ones.
mkdir bin
printf '#!/bin/sh\nprintf "0\\n1\\n2\\n"\n' > bin/nvidia-smi
chmod +x bin/nvidia-smi
cat > gpu.yaml <<'YAML'
name: gpu
steps:
  a:
    resources: {gpus: 2}
    run: echo "a=$CUDA_VISIBLE_DEVICES"; sleep 0.5
  b:
    resources: {gpus: 1}
    run: echo "b=$CUDA_VISIBLE_DEVICES"; sleep 0.5
  c:
    resources: {gpus: 2, memory: 64M}
    run: echo "c=$CUDA_VISIBLE_DEVICES"
  none:
    run: echo "none=${CUDA_VISIBLE_DEVICES-unset}"
YAML
PATH="$work/bin:$PATH" expect_exit 0 "$KILN" run gpu.yaml -j 4
for s in a b c none; do
  expect_exit 0 "$KILN" logs last "$s"
  cat "$work/out" >> gpu.log
done
grep -qx "a=0,1" gpu.log || fail "a did not get devices 0,1: $(cat gpu.log)"
grep -qx "b=2" gpu.log || fail "b did not get device 2: $(cat gpu.log)"
grep -qx "c=0,1" gpu.log || fail "c did not get devices 0,1 once a ended: $(cat gpu.log)"
grep -qx "none=unset" gpu.log || fail "a step without gpus got CUDA_VISIBLE_DEVICES: $(cat gpu.log)"
# c (2 GPUs) waited for a: it started after a ended.
expect_exit 0 "$KILN" runs show last --output json
expect_json '[s["started_ms"] for s in d["step_list"] if s["id"] == "c"][0] >= [s["ended_ms"] for s in d["step_list"] if s["id"] == "a"][0]' True

# --gpus names the devices: ids as given.
mkdir empty && cp gpu.yaml empty/
expect_exit 0 "$KILN" run gpu.yaml --gpus 4,7,9 -j 4
rm -f gpu.log
for s in a b; do
  expect_exit 0 "$KILN" logs last "$s"
  cat "$work/out" >> gpu.log
done
grep -qx "a=4,7" gpu.log || fail "a did not get 4,7: $(cat gpu.log)"
grep -qx "b=9" gpu.log || fail "b did not get 9: $(cat gpu.log)"

# Asking for more than there is: an error before anything is recorded.
expect_exit 0 "$KILN" runs list --output json
runs_before=$("$PY" -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$work/out")
expect_exit 2 "$KILN" run gpu.yaml --gpus 1
expect_output "step 'a' asks for 2 GPUs; this machine has 1 (--gpus; list them with --gpus 0,1)"
expect_exit 2 "$KILN" run gpu.yaml --gpus 0,1,2 --memory 32M
expect_output "step 'c' asks for 64M of memory; this machine has 32M (give --memory to say otherwise)"
expect_exit 2 "$KILN" run gpu.yaml --memory lots
expect_output "--memory lots: bad size 'lots'"
# No nvidia-smi and no --gpus: none.
PATH="/usr/bin:/bin" expect_exit 2 "$KILN" run gpu.yaml
expect_output "this machine has 0 (none; list them with --gpus 0,1)"
expect_exit 0 "$KILN" runs list --output json
expect_json 'len(d)' "$runs_before"

echo "matrix_resources: ok"
