#!/usr/bin/env python3
"""kiln's push benchmark, run against the real binary and the test
MLflow server (tests/mlflow/mlflow_test_server.py) over loopback:

  A workflow of 10 steps, each writing a JSON Lines history of 10,000 metric
  points (5,000 lines x {loss, acc}), logging 3 params and 2 tags and
  declaring 2 outputs of 1 MiB of random bytes: 100,000 points and 20
  artifacts in all, plus the workflow's own params and tags. It is run once
  with `kiln run` (no MLFLOW_TRACKING_URI: no push at its end); then, --repeat
  times, a copy of that store is pushed with
  `kiln push 1 --tracking-uri URL --output json` to a server whose state and
  statistics were just reset.

Reported: requests sent (the server's count and kiln's), against the
minimum MLflow's batch limits allow, computed from what the server holds
after the push (target: within 5% of it); bytes (kiln's bytes_sent, the
server's bytes_in and bytes_out); wall time, points/s and artifact MB/s;
connections; peak RSS and CPU of `kiln push`, CPU of the server; and
whether the remote equals the store (tests/mlflow/compare_remote.py). Two
more pushes, traced with -v and not timed (kiln's default connections, then
one), show where the time goes: per endpoint, and per phase with the time
spent waiting for the server apart from kiln's own between requests (with
one connection, the two add up to the log-batch phase).

The minimum, per MLflow run (the run's own, and one nested per step):
one runs/create (carrying up to 100 tags), one runs/update, and
max(ceil(entities / 1000), ceil(params / 100), ceil(tags beyond the create's
100 / 100)) runs/log-batch, where entities = params + tags beyond the
create's + metric points; one PUT per artifact. Overhead, shown apart:
experiments/get-by-name and experiments/create (the experiment is new) and
the one runs/search that finds runs of an interrupted push.

usage: bench/push_bench.py BUILD_DIR [--repeat 3] [--keep] [--json]

Times are medians of --repeat pushes. Data goes to a temp dir
(/tmp/kiln-bench-*), removed unless --keep. Targets are reported as
PASS/FAIL, but the exit status is 0 unless something errored (a push that
fails, or a remote that differs from the store, is an error): this is a
benchmark, not a test. With --json, the results go to stdout as JSON and
the report to stderr.
"""
import argparse
import json
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from contextlib import closing

SOURCE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER = os.path.join(SOURCE, "tests", "mlflow", "mlflow_test_server.py")
COMPARE = os.path.join(SOURCE, "tests", "mlflow", "compare_remote.py")
PYTHON = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None
MB = 1_000_000
MIB = 1 << 20

STEPS = 10
LINES = 5_000  # per step, each {loss, acc}: 10,000 points
ARTIFACTS = 2  # per step
ARTIFACT_SIZE = MIB

# MLflow's log-batch limits (mlflow/utils/validation.py) and what kiln puts in runs/create.
MAX_METRICS = 1000
MAX_PARAMS = 100
MAX_TAGS = 100
MAX_ENTITIES = 1000
TAGS_IN_CREATE = 100

API = "/api/2.0/mlflow/"
PUT_ARTIFACT = "PUT /api/2.0/mlflow-artifacts/artifacts/*"

GEN = """\
import json, os, random, sys
# One step's work: a history of 2 x LINES points, 3 params, 2 tags, ARTIFACTS random files.
index, lines, artifacts, size = (int(a) for a in sys.argv[1:])
rng = random.Random(index)
with open("history.jsonl", "w") as f:
    f.write("".join(json.dumps({"step": s, "loss": 1.0 / (1 + s * 1e-3) + rng.random() * 0.01,
                                "acc": 1.0 - 1.0 / (2 + s * 1e-3) + rng.random() * 0.01}) + "\\n"
                    for s in range(lines)))
for a in range(artifacts):
    with open(f"out-{a}.bin", "wb") as f:
        f.write(os.urandom(size))
print(f"::kiln::param shard={index} batch_size=64 optimizer=adam")
print(f"::kiln::tag phase=train group=g{index % 3}")
"""


class BenchError(Exception):
    pass


class Bench:
    def __init__(self, kiln, work, repeat, out):
        self.kiln = kiln
        self.work = work
        self.repeat = repeat
        self.out = out
        self.results = {}
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("KILN_", "MLFLOW_"))}
        self.server = None
        self.url = None

    def say(self, text=""):
        print(text, file=self.out, flush=True)

    def check(self, section, name, value, unit, target, ok, note=""):
        """One reported figure: value, target, PASS/FAIL."""
        mark = "" if ok is None else ("PASS" if ok else "FAIL")
        if isinstance(value, float):
            shown = f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
        elif isinstance(value, int):
            shown = f"{value:,}"
        else:
            shown = str(value)
        self.say(f"  {name:<40}{shown:>14} {unit:<6} {target:<14}{mark}{'  ' + note if note else ''}")
        self.results.setdefault(section, {})[name] = {
            "value": value, "unit": unit, "target": target or None, "pass": ok,
        }

    # ---- the server ----

    def start_server(self):
        port_file = os.path.join(self.work, "server.port")
        self.server_log = open(os.path.join(self.work, "server.log"), "w")
        self.server = subprocess.Popen([PYTHON, SERVER, "--port", "0", "--port-file", port_file],
                                       stdout=self.server_log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + 20
        while not os.path.exists(port_file):
            if self.server.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"the test server did not start (see {self.server_log.name})")
            time.sleep(0.02)
        with open(port_file) as f:
            self.url = f"http://127.0.0.1:{f.read().strip()}"

    def stop_server(self):
        if self.server is not None and self.server.poll() is None:
            self.server.terminate()
            try:
                self.server.wait(10)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()
        if self.server is not None:
            self.server_log.close()

    def control(self, name, method="GET"):
        request = urllib.request.Request(self.url + "/__kiln_test__/" + name, method=method,
                                         data=b"{}" if method == "POST" else None,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())

    def server_cpu(self):
        """User + system CPU seconds of the server process so far."""
        with open(f"/proc/{self.server.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    # ---- kiln ----

    def run(self, cmd, cwd=None, measure=False):
        """Exit code, stdout, stderr, wall seconds and, with `measure` (and
        /usr/bin/time), kiln's peak RSS (KiB) and user + system CPU seconds.

        /usr/bin/time forks kiln itself, so the RSS is kiln's own (a child's
        ru_maxrss from wait4 would start at this script's RSS)."""
        stats_file = os.path.join(self.work, "time.txt")
        run_cmd = [TIME, "-f", "%M %U %S", "-o", stats_file] + cmd if measure and TIME else cmd
        start = time.perf_counter()
        proc = subprocess.run(run_cmd, capture_output=True, env=self.env, cwd=cwd or self.work)
        wall = time.perf_counter() - start
        rss = cpu = None
        if measure and TIME and proc.returncode == 0:
            with open(stats_file) as f:
                last = f.read().strip().splitlines()[-1].split()
            rss, cpu = int(last[0]), float(last[1]) + float(last[2])
        return proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"), \
            wall, rss, cpu

    def make_run(self):
        """The workflow, run once: the store every push starts from."""
        d = os.path.join(self.work, "workflow")
        os.makedirs(d)
        write_file(os.path.join(d, "gen.py"), GEN)
        lines = ["name: pushbench", "params:", "  model: mlp", "  lr: 0.001", "  seed: 7",
                 "tags:", "  team: bench", "  purpose: push", "steps:"]
        for i in range(STEPS):
            step = f"s{i:02d}"
            os.makedirs(os.path.join(d, step))
            outputs = ", ".join(f"out-{a}.bin" for a in range(ARTIFACTS))
            lines += [f"  {step}:", f"    workdir: {step}", "    metrics: history.jsonl",
                      f"    outputs: [{outputs}]", f"    tags: {{shard: '{i}'}}",
                      f'    run: "{PYTHON} ../gen.py {i} {LINES} {ARTIFACTS} {ARTIFACT_SIZE}"']
        workflow = os.path.join(d, "workflow.yaml")
        write_file(workflow, "\n".join(lines) + "\n")
        store = os.path.join(self.work, "store-template")
        code, _, err, wall, _, _ = self.run([self.kiln, "run", workflow, "-j", "2", "--store", store], cwd=d)
        if code != 0:
            raise BenchError(f"kiln run exited {code}: {err.strip()}")
        with closing(sqlite3.connect(os.path.join(store, "kiln.db"))) as db:
            points = db.execute("SELECT count(*) FROM metric_points").fetchone()[0]
            artifacts, size = db.execute("SELECT count(*), coalesce(sum(size), 0) FROM artifacts").fetchone()
            params = db.execute("SELECT count(*) FROM params").fetchone()[0]
            tags = db.execute("SELECT count(*) FROM tags").fetchone()[0]
        expected_points = STEPS * LINES * 2
        expected_artifacts = STEPS * ARTIFACTS
        if points != expected_points or artifacts != expected_artifacts:
            raise BenchError(f"the run recorded {points} points and {artifacts} artifacts, not "
                             f"{expected_points} and {expected_artifacts}")
        self.say(f"workload: 1 run of {STEPS} steps recorded by `kiln run` in {wall:.1f} s: {points:,} metric "
                 f"points, {artifacts} artifacts ({size / MIB:.0f} MiB), {params} params, {tags} tags in the store")
        self.template = store
        self.local = {"points": points, "artifacts": artifacts, "params": params}

    def fresh_copy(self, name):
        """A copy of the template store: never pushed anywhere."""
        store = os.path.join(self.work, name)
        shutil.rmtree(store, ignore_errors=True)
        shutil.copytree(self.template, store)
        return store

    def push(self, store, verbose=False, connections=None):
        """One push of run 1 from `store` to a server with empty state and statistics."""
        self.control("reset-state", "POST")
        self.control("reset-stats", "POST")
        cmd = [self.kiln, "push", "1", "--tracking-uri", self.url, "--output", "json", "--store", store]
        if verbose:
            cmd.append("-v")
        if connections is not None:
            cmd += ["--connections", str(connections)]
        cpu_before = self.server_cpu()
        if verbose:
            code, out, err, wall, stamps = self.run_traced(cmd)
            rss = cpu = None
        else:
            code, out, err, wall, rss, cpu = self.run(cmd, measure=True)
            stamps = None
        server_cpu = self.server_cpu() - cpu_before
        if code != 0:
            raise BenchError(f"kiln push exited {code}: {err.strip()[-2000:]}")
        result = json.loads(out)[0]
        if not result["ok"]:
            raise BenchError(f"kiln push failed: {result['error']}")
        return {"wall": wall, "rss": rss, "cpu": cpu, "server_cpu": server_cpu, "kiln": result,
                "stats": self.control("stats"), "trace": err, "stamps": stamps}

    def run_traced(self, cmd):
        """Like run, for `kiln push -v`: each stderr line is stamped (seconds
        since the start) as it arrives; kiln writes a request's line when its
        answer is in, with the milliseconds it took."""
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env, cwd=self.work)
        stamps = []
        for line in proc.stderr:
            stamps.append((time.perf_counter() - start, line.decode(errors="replace").rstrip("\n")))
        out = proc.stdout.read().decode(errors="replace")
        code = proc.wait()
        wall = time.perf_counter() - start
        return code, out, "\n".join(line for _, line in stamps), wall, stamps

    # ---- the minimum ----

    def minimum(self):
        """The fewest requests MLflow's limits allow for what the server now holds."""
        dump = self.control("dump")
        rows = []
        for run in dump["runs"]:
            tags = {t["key"]: t["value"] for t in run["tags"]}
            params = len(run["params"])
            points = len(run["metrics"])
            batch_tags = max(0, len(tags) - TAGS_IN_CREATE)
            entities = params + batch_tags + points
            batches = max(ceil_div(entities, MAX_ENTITIES), ceil_div(points, MAX_METRICS),
                          ceil_div(params, MAX_PARAMS), ceil_div(batch_tags, MAX_TAGS))
            rows.append({"name": tags.get("mlflow.runName", "?"), "params": params, "tags": len(tags),
                         "batch_tags": batch_tags, "points": points, "entities": entities, "batches": batches,
                         "artifacts": len(run["artifacts"])})
        rows.sort(key=lambda r: (r["name"].startswith("s"), r["name"]))
        # The minimum is only meaningful over everything the store holds.
        held = {"points": sum(r["points"] for r in rows), "artifacts": sum(r["artifacts"] for r in rows),
                "params": sum(r["params"] for r in rows)}
        if held != self.local or len(rows) != STEPS + 1:
            raise BenchError(f"the server holds {len(rows)} runs and {held}, the store {STEPS + 1} and {self.local}")
        need = {
            "GET " + API + "experiments/get-by-name": 1,
            "POST " + API + "experiments/create": 1,
            "POST " + API + "runs/search": 1,
            "POST " + API + "runs/create": len(rows),
            "POST " + API + "runs/log-batch": sum(r["batches"] for r in rows),
            PUT_ARTIFACT: sum(r["artifacts"] for r in rows),
            "POST " + API + "runs/update": len(rows),
        }
        return rows, need


OVERHEAD = ("experiments/get-by-name", "experiments/create", "runs/search")


def ceil_div(a, b):
    return -(-a // b)


def write_file(path, text):
    with open(path, "w") as f:
        f.write(text)


def short(endpoint):
    method, _, path = endpoint.partition(" ")
    for prefix in (API, "/api/2.0/mlflow-artifacts/"):
        if path.startswith(prefix):
            path = path[len(prefix):]
    return f"{method} {path}"


TRACE = re.compile(r"^kiln: http: (\S+) (\S+) -> (\d+) \((\d+) ms, sent ([\d.]+) (B|KiB|MiB|GiB)")
UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


def trace_by_endpoint(text):
    """Per endpoint: requests, summed milliseconds, summed bytes sent, from `kiln push -v`."""
    table = defaultdict(lambda: [0, 0, 0.0, 0])
    for line in text.splitlines():
        m = TRACE.match(line)
        if not m:
            continue
        method, target, _, ms, size, unit = m.groups()
        path = target.split("?", 1)[0]
        if path.startswith("/api/2.0/mlflow-artifacts/artifacts/"):
            key = PUT_ARTIFACT if method == "PUT" else f"{method} /api/2.0/mlflow-artifacts/artifacts/*"
        else:
            key = f"{method} {path}"
        row = table[key]
        row[0] += 1
        row[1] += int(ms)
        row[2] += float(size) * UNITS[unit]
        row[3] = max(row[3], int(ms))
    return table


PHASES = (("experiment lookup/create, runs/search", ("experiments/", "runs/search")),
          ("runs/create (as each step begins)", ("runs/create",)), ("runs/log-batch", ("runs/log-batch",)),
          ("artifact PUTs", ("mlflow-artifacts/",)), ("runs/update", ("runs/update",)))


def timeline(stamps):
    """(phase, first request's start, last answer, requests, summed request seconds), by start."""
    spans = {}
    for stamp, line in stamps or ():
        m = TRACE.match(line)
        if not m:
            continue
        method, target, _, ms = m.groups()[:4]
        for name, needles in PHASES:
            if any(n in target for n in needles):
                begin = stamp - int(ms) / 1000
                b, e, c, u = spans.get(name, (begin, stamp, 0, 0.0))
                spans[name] = (min(b, begin), max(e, stamp), c + 1, u + int(ms) / 1000)
                break
    return sorted(((n,) + v for n, v in spans.items()), key=lambda p: p[1])


def report(bench, pushes, rows, need, compare_ok, compare_text, traced):
    say = bench.say
    say(f"\nminimum requests, from what the server holds (log-batch: max(ceil(entities/{MAX_ENTITIES}), "
        f"ceil(params/{MAX_PARAMS}), ceil(tags beyond the create's {TAGS_IN_CREATE}/{MAX_TAGS}))):")
    say(f"  {'MLflow run':<16}{'params':>7}{'tags':>6}{'in batch':>9}{'points':>9}{'entities':>10}"
        f"{'log-batch':>10}{'artifacts':>10}")
    for r in rows:
        say(f"  {r['name']:<16}{r['params']:>7}{r['tags']:>6}{r['batch_tags']:>9}{r['points']:>9,}"
            f"{r['entities']:>10,}{r['batches']:>10}{r['artifacts']:>10}")
    say(f"  {'total':<16}{sum(r['params'] for r in rows):>7}{sum(r['tags'] for r in rows):>6}"
        f"{sum(r['batch_tags'] for r in rows):>9}{sum(r['points'] for r in rows):>9,}"
        f"{sum(r['entities'] for r in rows):>10,}{sum(r['batches'] for r in rows):>10}"
        f"{sum(r['artifacts'] for r in rows):>10}")

    last = pushes[-1]
    by_endpoint = last["stats"]["by_endpoint"]
    say("\nrequests by endpoint (the server's count, last timed push):")
    say(f"  {'endpoint':<34}{'sent':>7}{'minimum':>9}{'extra':>7}")
    endpoints = list(need) + sorted(set(by_endpoint) - set(need))
    for endpoint in endpoints:
        sent, minimum = by_endpoint.get(endpoint, 0), need.get(endpoint, 0)
        kind = "  (overhead)" if is_overhead(endpoint) else ""
        say(f"  {short(endpoint):<34}{sent:>7}{minimum:>9}{sent - minimum:>+7}{kind}")
    total_need = sum(need.values())
    overhead_need = sum(v for k, v in need.items() if is_overhead(k))
    sent = last["stats"]["requests"]
    overhead_sent = sum(v for k, v in by_endpoint.items() if is_overhead(k))
    say(f"  {'total':<34}{sent:>7}{total_need:>9}{sent - total_need:>+7}")

    points = last["kiln"]["points"]
    artifact_bytes = last["kiln"]["artifact_bytes"]
    phase_rates = {}
    for label, push in traced:
        table = trace_by_endpoint(push["trace"])
        connections = push["stats"]["connections"]
        say(f"\nwhere the time goes: one more push with -v, {label} ({connections} connection"
            f"{'s' if connections > 1 else ''}), not timed: {push['wall']:.2f} s wall; kiln CPU is not "
            f"measured here, the server's was {push['server_cpu']:.2f} s")
        say(f"  {'endpoint':<34}{'requests':>9}{'ms':>8}{'mean ms':>9}{'max ms':>8}{'MB sent':>9}")
        for endpoint, (count, ms, size, top) in sorted(table.items(), key=lambda kv: -kv[1][1]):
            say(f"  {short(endpoint):<34}{count:>9}{ms:>8,}{ms / count:>9.1f}{top:>8}{size / MB:>9.2f}")
        say(f"  {'all':<34}{sum(v[0] for v in table.values()):>9}{sum(v[1] for v in table.values()):>8,}"
            f"{'':>17}{sum(v[2] for v in table.values()) / MB:>9.2f}"
            f"  (server CPU {push['server_cpu'] * 1000 / max(1, push['stats']['requests']):.1f} ms a request)")
        phases = timeline(push["stamps"])
        if not phases:
            continue
        say(f"  timeline, s since kiln started; 'busy' sums the requests' times over connections, 'kiln' is "
            f"the rest of span x {connections}: kiln's own work (and waits) between requests")
        say(f"  {'phase':<34}{'from':>7}{'to':>7}{'span':>7}{'requests':>9}{'busy':>7}{'kiln':>7}")
        say(f"  {'start, open store, plan':<34}{0:>7.3f}{phases[0][1]:>7.3f}{phases[0][1]:>7.3f}")
        for name, begin, end, count, busy in phases:
            idle = "" if name.startswith("runs/create") else f"{max(0.0, (end - begin) * connections - busy):>7.3f}"
            say(f"  {name:<34}{begin:>7.3f}{end:>7.3f}{end - begin:>7.3f}{count:>9}{busy:>7.3f}{idle}")
        last_end = max(p[2] for p in phases)
        say(f"  {'after the last answer, exit':<34}{last_end:>7.3f}{push['wall']:>7.3f}{push['wall'] - last_end:>7.3f}")
        spans = {name: (begin, end, count, busy) for name, begin, end, count, busy in phases}
        if "runs/log-batch" in spans:
            begin, end, count, busy = spans["runs/log-batch"]
            kiln_ms = max(0.0, (end - begin) * connections - busy) * 1000 / count
            say(f"  per log-batch: {busy * 1000 / count:.1f} ms waiting for the answer, {kiln_ms:.1f} ms in "
                f"kiln between requests (per connection)")
            phase_rates[label] = (points / (end - begin), busy * 1000 / count, kiln_ms)
        if "artifact PUTs" in spans:
            begin, end, _, _ = spans["artifact PUTs"]
            phase_rates[label] += (artifact_bytes / MB / max(end - begin, 1e-6),)
        bench.results.setdefault("trace", {})[label] = {
            "endpoints": {short(k): {"requests": v[0], "ms": v[1], "bytes_sent": v[2], "max_ms": v[3]}
                          for k, v in table.items()},
            "timeline": [{"phase": n, "from": b, "to": e, "requests": c, "busy": u} for n, b, e, c, u in phases],
        }

    med = lambda key: statistics.median(p[key] for p in pushes)  # noqa: E731
    wall = med("wall")
    requests = [p["stats"]["requests"] for p in pushes]
    ratio = max(requests) / total_need
    say(f"\nfigures ({len(pushes)} timed push{'es' if len(pushes) > 1 else ''} with kiln's default connections; "
        f"times are medians, min..max after them; load average now {os.getloadavg()[0]:.1f}):")
    bench.check("requests", "requests sent (server)", max(requests), "", f"min {total_need}", None,
                "same every push" if len(set(requests)) == 1 else f"varied: {sorted(requests)}")
    bench.check("requests", "requests reported by kiln", last["kiln"]["requests"], "", f"= {sent}",
                last["kiln"]["requests"] == sent)
    bench.check("requests", "sent / minimum", ratio, "x", "<= 1.05", ratio <= 1.05)
    bench.check("requests", "  without overhead", (sent - overhead_sent) / (total_need - overhead_need), "x", "",
                None, f"{sent - overhead_sent} vs {total_need - overhead_need}; overhead {overhead_sent} "
                f"vs {overhead_need}")
    bench.check("requests", "log-batch requests", last["kiln"]["batches"], "",
                f"min {need['POST ' + API + 'runs/log-batch']}", None,
                f"{sum(r['entities'] for r in rows) / max(1, last['kiln']['batches']):,.0f} entities per batch")
    bench.check("requests", "connections", last["stats"]["connections"], "", "", None)
    bench.check("bytes", "bytes sent (kiln)", last["kiln"]["bytes_sent"] / MB, "MB", "", None,
                f"{last['kiln']['bytes_sent']:,} B")
    bench.check("bytes", "bytes in (server)", last["stats"]["bytes_in"] / MB, "MB", "", None,
                f"{last['stats']['bytes_in']:,} B; artifacts {artifact_bytes:,} B, "
                f"{(last['stats']['bytes_in'] - artifact_bytes) / max(1, points):.1f} B/point for the rest")
    bench.check("bytes", "bytes out (server)", last["stats"]["bytes_out"] / MB, "MB", "", None)
    spread = f"{min(p['wall'] for p in pushes):.2f}..{max(p['wall'] for p in pushes):.2f} s"
    bench.check("time", "wall time of kiln push", wall, "s", "", None, spread)
    bench.check("time", "kiln's own figure (seconds)", statistics.median(p["kiln"]["seconds"] for p in pushes),
                "s", "", None)
    bench.check("time", "metric points / s (all-in)", points / wall, "pts/s", "", None,
                f"{points:,} points / wall time")
    bench.check("time", "artifact MB / s (all-in)", artifact_bytes / MB / wall, "MB/s", "", None,
                f"{artifact_bytes / MB:.1f} MB / wall time")
    for label, rate in phase_rates.items():
        bench.check("time", f"points / s, log-batch phase, {label}", rate[0], "pts/s", "", None,
                    f"a batch: {rate[1]:.1f} ms waiting for the answer, {rate[2]:.1f} ms in kiln")
        if len(rate) > 3:
            bench.check("time", f"artifact MB / s, PUT phase, {label}", rate[3], "MB/s", "", None)
    if TIME:
        bench.check("time", "CPU of kiln push (user + sys)", med("cpu"), "s", "", None)
        bench.check("time", "peak RSS of kiln push", max(p["rss"] for p in pushes) / 1024, "MB", "", None)
    bench.check("time", "CPU of the test server (Python)", med("server_cpu"), "s", "", None,
                f"{med('server_cpu') / wall:.0%} of the wall time; it serves one request at a time")
    bench.check("correct", "remote equals local (compare_remote)", "yes" if compare_ok else "NO", "", "= yes",
                compare_ok, compare_text)


def is_overhead(endpoint):
    return any(endpoint.endswith(o) for o in OVERHEAD)


def main():
    parser = argparse.ArgumentParser(description="kiln push benchmark")
    parser.add_argument("build", help="build directory holding the kiln binary")
    parser.add_argument("--repeat", type=int, default=3, help="pushes timed (median)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    parser.add_argument("--json", action="store_true", help="results as JSON on stdout, report on stderr")
    args = parser.parse_args()
    kiln = os.path.abspath(os.path.join(args.build, "kiln"))
    if not os.access(kiln, os.X_OK):
        sys.exit(f"no kiln binary at {kiln}")
    work = tempfile.mkdtemp(prefix="kiln-bench-")
    bench = Bench(kiln, work, max(1, args.repeat), sys.stderr if args.json else sys.stdout)
    bench.say(f"kiln push benchmark: {kiln}\nmachine: {os.cpu_count()} CPUs; data in {work}; "
              f"{bench.repeat} timed push{'es' if bench.repeat > 1 else ''}; load average "
              f"{os.getloadavg()[0]:.1f} at start\n")
    if not TIME:
        bench.say("(no /usr/bin/time: no peak RSS or CPU figures for kiln)\n")
    started = time.perf_counter()
    status = 0
    try:
        bench.make_run()
        bench.start_server()
        bench.say(f"server: {bench.url} (tests/mlflow/mlflow_test_server.py, state reset before each push)")
        pushes = []
        for rep in range(bench.repeat):
            pushes.append(bench.push(bench.fresh_copy(f"store-{rep}")))
            p = pushes[-1]
            bench.say(f"  push {rep + 1}: {p['wall']:.2f} s, {p['stats']['requests']} requests, "
                      f"{p['stats']['connections']} connections")
        # The server still holds the last push: the minimum is computed from it,
        # and it is read back through the API and compared with the store.
        rows, need = bench.minimum()
        store = os.path.join(work, f"store-{bench.repeat - 1}")
        compare = subprocess.run([PYTHON, COMPARE, os.path.join(store, "kiln.db"), bench.url, "1"],
                                 capture_output=True, text=True, env=bench.env)
        compare_ok = compare.returncode == 0
        compare_text = (compare.stdout + compare.stderr).strip().splitlines()
        compare_note = "exit 0" if compare_ok else f"exit {compare.returncode}: " + "; ".join(compare_text[:5])
        traced = [("default", bench.push(bench.fresh_copy("store-traced"), verbose=True)),
                  ("serial", bench.push(bench.fresh_copy("store-serial"), verbose=True, connections=1))]
        report(bench, pushes, rows, need, compare_ok, compare_note, traced)
        if not compare_ok:
            status = 1
    except (BenchError, OSError, sqlite3.Error, json.JSONDecodeError, urllib.error.URLError) as error:
        print(f"push_bench: error: {error}", file=sys.stderr)
        status = 1
    finally:
        bench.stop_server()
        if args.keep:
            bench.say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    failed = [f"{s}: {n}" for s, figures in bench.results.items() if s not in ("trace", "timeline")
              for n, r in figures.items() if r["pass"] is False]
    bench.say(f"\ntotal {time.perf_counter() - started:.0f} s; "
              + (f"targets missed: {'; '.join(failed)}" if failed else "every target met"))
    if args.json:
        json.dump(bench.results, sys.stdout, indent=2)
        print()
    return status


if __name__ == "__main__":
    sys.exit(main())
