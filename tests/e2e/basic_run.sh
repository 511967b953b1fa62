# The quickstart example end to end: run, then read it back from the store.
source "$(dirname "$0")/lib.sh"
cp -r "$KILN_SOURCE/examples/quickstart" qs
cd qs

expect_exit 0 "$KILN" run workflow.yaml -p count=5
expect_output "kiln: run 1 of quickstart"
expect_output "kiln: run 1 succeeded"
expect_output "see: kiln runs show 1"
[ "$(wc -l < lines.txt)" -eq 5 ] || fail "count step did not write 5 lines"

expect_exit 0 "$KILN" runs show last --output json
expect_json 'd["status"]' succeeded
expect_json 'd["exit_code"]' 0
expect_json 'd["number"]' 1
expect_json 'len(d["id"])' 32
expect_json 'd["params"]["count"]' 5
expect_json 'd["params"]["greeting"]' hello
expect_json 'd["workflow_name"]' quickstart
expect_json '[s["status"] for s in d["step_list"]]' "['succeeded', 'succeeded', 'succeeded']"
expect_json '[s["id"] for s in d["step_list"]]' "['greet', 'count', 'report']"
expect_json 'd["step_list"][2]["command"]' "wc -l lines.txt"
expect_json 'd["step_list"][1]["command"]' 'for i in $(seq 5); do echo "line $i"; done > lines.txt'
expect_json 'len(d["attempts"])' 3
expect_json 'all(a["exit_code"] == 0 and a["pid"] > 0 for a in d["attempts"])' True
expect_json 'd["kiln_version"] != "" and d["user"] != "" and d["host"] != ""' True
run_id=$(json 'd["id"]')

# Templates were resolved: the step saw its run id and step id.
expect_exit 0 "$KILN" logs 1 greet
expect_output "hello from step greet of run $run_id"
# One stream with content: printed as it is, no headers.
[ "$(cat "$work/out")" = "hello from step greet of run $run_id" ] || fail "kiln logs added headers to a single stream"
expect_exit 0 "$KILN" logs "${run_id:0:6}" report --stream out
expect_output "5 lines.txt"

# A second run gets the next number; list is newest first.
expect_exit 0 "$KILN" run workflow.yaml
expect_exit 0 "$KILN" runs list --output json
expect_json '[r["number"] for r in d]' "[2, 1]"
expect_exit 0 "$KILN" runs list
expect_output "quickstart"
expect_exit 0 "$KILN" runs show 1
expect_output "succeeded"
expect_exit 2 "$KILN" runs show 99
expect_output "99"

# The store is found like git finds .git: from a subdirectory, without KILN_STORE.
unset KILN_STORE
mkdir -p sub/deeper
expect_exit 0 "$KILN" run workflow.yaml
[ -f .kiln/kiln.db ] || fail "no store created in the current directory"
cd sub/deeper
expect_exit 0 "$KILN" runs list --output json
expect_json 'len(d)' 1

# Reading history where there is no store says so, and creates nothing.
mkdir -p "$work/empty" && cd "$work/empty"
expect_exit 2 "$KILN" runs list
expect_output "no kiln store at $work/empty/.kiln"
expect_exit 2 "$KILN" runs show last --store "$work/nowhere"
[ ! -e .kiln ] && [ ! -e "$work/nowhere" ] || fail "reading history created a store"
