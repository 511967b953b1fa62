# The MLflow test server that kiln's push tests and benchmark push to
# (tests/mlflow/mlflow_test_server.py) answers every recorded exchange with a real
# MLflow 2.10.2 server (tests/mlflow/transcripts/) the way that server did, and its
# own additions work: fault injection, statistics, keep-alive, auth, TLS, SIGTERM.
# Does not run kiln.
source "$(dirname "$0")/lib.sh"

"$PY" "$KILN_SOURCE/tests/mlflow/check_conformance.py" || fail "the MLflow test server does not conform (diffs above)"
