# A failing step: its dependents are skipped, nothing new starts, the tail of
# its log is shown; --keep-going runs what does not depend on it.
source "$(dirname "$0")/lib.sh"

cat > wf.yaml <<'YAML'
name: failing
steps:
  broken:
    run: |
      echo "working hard"
      echo "something broke: disk on fire" >&2
      exit 7
  child:
    needs: [broken]
    run: touch child-ran
  independent:
    needs: [slowstart]
    run: touch independent-ran
  slowstart:
    run: sleep 0.3
YAML
expect_exit 1 "$KILN" run wf.yaml -j 2
expect_output "broken failed: exit code 7"
expect_output "| something broke: disk on fire"
expect_output "full log: kiln logs 1 broken --attempt 1"
expect_output "kiln: run 1 failed"
[ ! -e child-ran ] || fail "child of a failed step ran"
[ ! -e independent-ran ] || fail "a new step started after a failure without --keep-going"
expect_exit 0 "$KILN" runs show 1 --output json
expect_json '[s["status"] for s in d["step_list"]]' "['failed', 'skipped', 'skipped', 'succeeded']"

expect_exit 1 "$KILN" run wf.yaml -j 2 --keep-going
[ -e independent-ran ] || fail "--keep-going did not run the independent branch"
[ ! -e child-ran ] || fail "child of a failed step ran with --keep-going"
expect_exit 0 "$KILN" runs show 2 --output json
expect_json '[s["status"] for s in d["step_list"]]' "['failed', 'skipped', 'succeeded', 'succeeded']"

# A command that does not exist is a failed attempt with a clear reason.
cat > missing.yaml <<'YAML'
name: missing
steps:
  ghost:
    run: [no-such-tool-anywhere, --flag]
YAML
expect_exit 1 "$KILN" run missing.yaml
expect_output "command not found: no-such-tool-anywhere"
