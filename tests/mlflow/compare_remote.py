#!/usr/bin/env python3
"""Compares kiln runs in a store with their copies on an MLflow server.

usage: compare_remote.py STORE_DB BASE_URL [RUN_NUMBER...]   (default: every run
       with a push record for BASE_URL, or every finished run with --all)

Everything is read back through the server's REST API (runs/search, metrics
get-history, the artifact proxy's list and download), as a user's MLflow
client would see it. Checks, per kiln run: exactly one MLflow run tagged with
its kiln.run.id and no kiln.step, exactly one nested run per step
(mlflow.parentRunId = that run), statuses and times, every param, every tag
(values cut to MLflow's limits as kiln documents), every metric point
(value, step, timestamp) with no point missing and none doubled, and every
artifact's bytes (SHA-256). Exits 1 with the differences listed.

Credentials, for a server that asks for them, come from the environment as
MLflow's client reads them: MLFLOW_TRACKING_TOKEN, else
MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD.
"""

import base64
import hashlib
import json
import math
import os
import sqlite3
import sys
import urllib.parse
import urllib.request

MAX_PARAM = 6000
MAX_TAG = 5000
RUN_STATUS = {"succeeded": "FINISHED", "cached": "FINISHED", "failed": "FAILED", "crashed": "FAILED", "cancelled": "KILLED"}
STEP_STATUS = {"succeeded": "FINISHED", "cached": "FINISHED", "failed": "FAILED", "skipped": "KILLED", "cancelled": "KILLED",
               "pending": "KILLED"}

problems = []


def problem(text):
    problems.append(text)


def call(base, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    username = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if token:
        request.add_header("Authorization", "Bearer " + token)
    elif username:
        userpass = f"{username}:{os.environ.get('MLFLOW_TRACKING_PASSWORD', '')}"
        request.add_header("Authorization", "Basic " + base64.b64encode(userpass.encode()).decode())
    with urllib.request.urlopen(request, timeout=30) as response:
        raw = response.read()
    return raw


def api(base, method, path, body=None):
    return json.loads(call(base, method, path, body) or b"{}")


def remote_value(value):
    """A local metric value as the server returns it (MLflow's SQL store)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "NaN"
    if value == math.inf:
        return 1.7976931348623157e308
    if value == -math.inf:
        return -1.7976931348623157e308
    return float(value)


def norm(value):
    return "NaN" if value == "NaN" else float(value)


def history(base, run_id, key):
    points = []
    token = None
    while True:
        query = {"run_id": run_id, "metric_key": key, "max_results": 25000}
        if token:
            query["page_token"] = token
        page = api(base, "GET", "/api/2.0/mlflow/metrics/get-history?" + urllib.parse.urlencode(query))
        points += page.get("metrics", [])
        token = page.get("next_page_token")
        if not token:
            return points


def list_artifacts(base, root, sub=""):
    path = root + ("/" + sub if sub else "")
    listing = api(base, "GET", "/api/2.0/mlflow-artifacts/artifacts?" + urllib.parse.urlencode({"path": path}))
    files = {}
    for entry in listing.get("files", []):
        rel = (sub + "/" if sub else "") + entry["path"].split("/")[-1]
        if entry.get("is_dir"):
            files.update(list_artifacts(base, root, rel))
        else:
            files[rel] = int(entry.get("file_size", -1))
    return files


def cut(text, limit):
    return text if len(text) <= limit else text[:limit]


def compare_run(db, base, experiments, number):
    run = db.execute("SELECT id, workflow_name, status, started_ms, ended_ms FROM runs WHERE number = ?",
                     (number,)).fetchone()
    if run is None:
        problem(f"run {number}: not in the store")
        return
    run_id, workflow, status, started, ended = run
    where = f"run {number}"
    found = api(base, "POST", "/api/2.0/mlflow/runs/search",
                {"experiment_ids": experiments, "filter": f"tags.kiln.run.id = '{run_id}'", "max_results": 1000})
    remote = found.get("runs", [])
    if found.get("next_page_token"):
        problem(f"{where}: more than 1000 MLflow runs carry its kiln.run.id")

    def tags_of(r):
        return {t["key"]: t["value"] for t in r.get("data", {}).get("tags", [])}

    def params_of(r):
        return {p["key"]: p["value"] for p in r.get("data", {}).get("params", [])}

    by_step = {}
    for r in remote:
        by_step.setdefault(tags_of(r).get("kiln.step", ""), []).append(r)
    steps = db.execute("SELECT id, status, kind FROM steps WHERE run = ? ORDER BY position", (number,)).fetchall()
    expected = [""] + [s[0] for s in steps]
    for step in set(by_step) - set(expected):
        problem(f"{where}: MLflow has runs for unknown step '{step}'")
    parents = by_step.get("", [])
    if len(parents) != 1:
        problem(f"{where}: {len(parents)} MLflow runs stand for the run (expected exactly 1)")
        if not parents:
            return
    parent = parents[0]
    parent_id = parent["info"]["run_id"]
    if parent["info"]["status"] != RUN_STATUS.get(status):
        problem(f"{where}: status {parent['info']['status']}, expected {RUN_STATUS.get(status)}")
    if parent["info"]["start_time"] != started or parent["info"].get("end_time") != ended:
        problem(f"{where}: times {parent['info']['start_time']}..{parent['info'].get('end_time')}, "
                f"expected {started}..{ended}")
    if parent["info"]["run_name"] != f"{workflow}-{number}":
        problem(f"{where}: run name {parent['info']['run_name']!r}")

    mlflow_runs = {"": parent}
    for step_id, step_status, _kind in steps:
        mine = by_step.get(step_id, [])
        if len(mine) != 1:
            problem(f"{where} step {step_id}: {len(mine)} MLflow runs (expected exactly 1)")
            if not mine:
                continue
        child = mine[0]
        mlflow_runs[step_id] = child
        if tags_of(child).get("mlflow.parentRunId") != parent_id:
            problem(f"{where} step {step_id}: not nested under {parent_id}")
        if child["info"]["status"] != STEP_STATUS.get(step_status):
            problem(f"{where} step {step_id}: status {child['info']['status']}, expected "
                    f"{STEP_STATUS.get(step_status)}")

    for step_id, r in mlflow_runs.items():
        label = f"{where}" + (f" step {step_id}" if step_id else "")
        local_params = {k: cut(v, MAX_PARAM) for k, v in
                        db.execute("SELECT key, value FROM params WHERE run = ? AND step = ?", (number, step_id))}
        if params_of(r) != local_params:
            problem(f"{label}: params {params_of(r)} != local {local_params}")
        remote_tags = tags_of(r)
        for key, value in db.execute("SELECT key, value FROM tags WHERE run = ? AND step = ?", (number, step_id)):
            if remote_tags.get(key) != cut(value, MAX_TAG):
                problem(f"{label}: tag {key} is {remote_tags.get(key)!r:.80}, expected {cut(value, MAX_TAG)!r:.80}")
        run_uuid = r["info"]["run_id"]
        series = db.execute("SELECT id, key FROM metric_series WHERE run = ? AND step = ?", (number, step_id)).fetchall()
        local_keys = set()
        for series_id, key in series:
            local_keys.add(key)
            # MLflow keeps one copy of identical points (same value, step and time).
            local = sorted({(repr(remote_value(v)), s, t) for s, v, t in db.execute(
                "SELECT step, value, timestamp_ms FROM metric_points WHERE series = ?", (series_id,))})
            got = [(repr(norm(p["value"])), int(p["step"]), int(p["timestamp"])) for p in history(base, run_uuid, key)]
            if len(got) != len(set(got)):
                problem(f"{label}: metric {key}: {len(got) - len(set(got))} doubled points on the server")
            if sorted(set(got)) != local:
                missing = len(set(local) - set(got))
                extra = len(set(got) - set(local))
                problem(f"{label}: metric {key}: {missing} points missing, {extra} unexpected "
                        f"({len(got)} on the server, {len(local)} here)")
        remote_keys = {m["key"] for m in r.get("data", {}).get("metrics", [])}
        if remote_keys - local_keys:
            problem(f"{label}: unexpected metrics {sorted(remote_keys - local_keys)}")
        artifacts = {path: (sha, size) for path, sha, size in db.execute(
            "SELECT path, sha256, size FROM artifacts WHERE run = ? AND step = ?", (number, step_id))}
        root = r["info"]["artifact_uri"].split("mlflow-artifacts:", 1)[-1].lstrip("/")
        listed = list_artifacts(base, root) if artifacts or True else {}
        if set(listed) != set(artifacts):
            problem(f"{label}: artifacts {sorted(listed)} != local {sorted(artifacts)}")
        for path, (sha, size) in artifacts.items():
            if path not in listed:
                continue
            body = call(base, "GET", "/api/2.0/mlflow-artifacts/artifacts/" + urllib.parse.quote(root + "/" + path))
            if hashlib.sha256(body).hexdigest() != sha or len(body) != size:
                problem(f"{label}: artifact {path}: {len(body)} bytes with another hash on the server")


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    store, base = args[0], args[1].rstrip("/")
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    if len(args) > 2:
        numbers = [int(n) for n in args[2:]]
    elif "--all" in sys.argv:
        numbers = [n for (n,) in db.execute("SELECT number FROM runs WHERE status <> 'running' ORDER BY number")]
    else:
        numbers = [n for (n,) in db.execute("SELECT run FROM push_records WHERE remote = ? ORDER BY run", (base,))]
    experiments = [e["experiment_id"] for e in
                   api(base, "GET", "/api/2.0/mlflow/experiments/search?max_results=1000").get("experiments", [])]
    for number in numbers:
        compare_run(db, base, experiments, number)
    if problems:
        print("\n".join(problems))
        return 1
    print(f"{len(numbers)} runs: the server's copy equals the store")
    return 0


if __name__ == "__main__":
    sys.exit(main())
