#!/usr/bin/env python3
"""kiln's tracking benchmarks (issue 3), run against the real binary:

  1. ingest: a one-step workflow declaring `metrics: history.jsonl` (500,000
     JSON Lines, `loss` and `acc` each: 1,000,000 points) against the same
     workflow without the declaration; the difference of the medians is
     the ingest time. Target >= 1M points/s. The count is checked with
     `kiln metrics last loss --output csv`.
  2. a store of 100,000 runs: one real run creates it, 99,998 are written
     with sqlite3 in that run's shape (run, step, attempt, params model and
     C, kiln's tags, accuracy and loss series with a few points), then a
     real run ingests a 1,000,000-point `loss` history. Timed as fresh
     processes, stdout to /dev/null: `kiln runs list --limit 50` (< 50 ms),
     `kiln runs search "metrics.accuracy > 0.9 and params.model = 'lr'"
     --output json` (< 200 ms; its count is checked against SQL) and
     `kiln metrics N loss --output csv` over the 1M-point run (< 300 ms).
  3. a 1 GiB artifact: a step writes big.bin (16 distinct 64 MiB blocks),
     then `kiln log artifact` is run with that step's KILN_* environment,
     as the step would; throughput (>= 300 MB/s) and the peak RSS of the
     recording process (flat: < 32 MB). Measured with the file in the page
     cache (it was just written), and once more after evicting it; for
     reference, `sha256sum` and `cat` of the same file are timed too.

usage: bench/tracking_bench.py BUILD_DIR [--repeat 5] [--runs 100000]
           [--only ingest,runs,artifact] [--keep] [--json]

Times are medians of --repeat fresh processes (the store is in the page
cache: it was just written). Data goes to a temp dir (/tmp/kiln-bench-*),
removed unless --keep. Targets are reported as PASS/FAIL, but the exit
status is 0 unless something errored: this is a benchmark, not a test.
With --json, the results go to stdout as JSON and the report to stderr.
"""
import argparse
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import closing

TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None
MB = 1_000_000
GIB = 1 << 30


class BenchError(Exception):
    pass


class Bench:
    def __init__(self, kiln, work, repeat, out):
        self.kiln = kiln
        self.work = work
        self.repeat = repeat
        self.out = out
        self.results = {}
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}

    def say(self, text=""):
        print(text, file=self.out, flush=True)

    def check(self, section, name, value, unit, target, ok, note=""):
        """One reported figure: value, target, PASS/FAIL."""
        mark = "" if ok is None else ("PASS" if ok else "FAIL")
        shown = f"{value:,.1f}" if isinstance(value, float) else f"{value:,}"
        self.say(f"  {name:<44}{shown:>14} {unit:<6} {target:<16}{mark}{'  ' + note if note else ''}")
        self.results.setdefault(section, {})[name] = {
            "value": value, "unit": unit, "target": target or None, "pass": ok,
        }

    def timed(self, cmd, env=None, cwd=None, stdout=subprocess.DEVNULL, rss=True):
        """Wall seconds, peak RSS (KiB, None unless `rss`) and stdout (if piped) of one process.

        A child's ru_maxrss from wait4 starts at this script's RSS when it
        forks (Linux keeps the larger of the pre-exec and post-exec figures),
        so the peak RSS is taken by /usr/bin/time, a small process that forks
        kiln itself; without it, wait4's figure is an upper bound.
        """
        rss_file = None
        if rss and TIME:
            rss_file = os.path.join(self.work, "rss.txt")
            cmd_run = [TIME, "-f", "%M", "-o", rss_file] + cmd
        else:
            cmd_run = cmd
        start = time.perf_counter()
        proc = subprocess.Popen(cmd_run, stdout=stdout, stderr=subprocess.PIPE, env=env or self.env,
                                cwd=cwd or self.work)
        data = proc.stdout.read() if stdout == subprocess.PIPE else None
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        code = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read().decode(errors="replace")
        if code != 0:
            raise BenchError(f"{' '.join(cmd)} exited {code}: {err.strip()}")
        peak = None
        if rss_file:
            with open(rss_file) as f:
                peak = int(f.read().split()[-1])
        elif rss:
            peak = usage.ru_maxrss
        return wall, peak, data

    def repeated(self, cmd, **kw):
        """Median, min, max wall seconds of --repeat runs, and peak RSS (KiB).

        The first run is a warm-up, and the one that measures RSS: the timed
        runs are kiln alone, without /usr/bin/time's fork in the figure.
        """
        _, peak, _ = self.timed(cmd, **kw)
        walls = [self.timed(cmd, rss=False, **kw)[0] for _ in range(self.repeat)]
        return statistics.median(walls), min(walls), max(walls), peak

    def run_workflow(self, workflow, store, cwd):
        wall, rss, _ = self.timed([self.kiln, "run", workflow, "-j", "1", "--store", store], cwd=cwd)
        return wall, rss

    # ---- 1. ingest ----

    def ingest(self):
        self.say("1. ingest 1,000,000 points from JSON Lines (500,000 lines x {loss, acc})")
        d = os.path.join(self.work, "ingest")
        os.makedirs(d)
        t = time.perf_counter()
        write_history(os.path.join(d, "history.jsonl"), 500_000, ("loss", "acc"))
        self.say(f"  (history.jsonl: {os.path.getsize(os.path.join(d, 'history.jsonl')) / MB:.1f} MB, "
                 f"written in {time.perf_counter() - t:.1f} s)")
        with_metrics = os.path.join(d, "with.yaml")
        baseline = os.path.join(d, "base.yaml")
        write_file(with_metrics, 'name: ingest\nsteps:\n  s:\n    run: "touch history.jsonl"\n    metrics: history.jsonl\n')
        write_file(baseline, 'name: ingest\nsteps:\n  s:\n    run: "true"\n')
        store = os.path.join(d, "store")
        walls_with, walls_base, rss_with = [], [], 0
        # Interleaved, each into a new store, so drift and store growth hit both alike.
        for _ in range(self.repeat):
            shutil.rmtree(store, ignore_errors=True)
            walls_base.append(self.run_workflow(baseline, store, d)[0])
            shutil.rmtree(store, ignore_errors=True)
            wall, rss = self.run_workflow(with_metrics, store, d)
            walls_with.append(wall)
            rss_with = max(rss_with, rss)
        m_with, m_base = statistics.median(walls_with), statistics.median(walls_base)
        ingest = m_with - m_base
        rate = 1_000_000 / ingest
        self.check("ingest", "kiln run, step declaring metrics: (median)", m_with * 1000, "ms", "", None,
                   f"min {min(walls_with) * 1000:.0f}, max {max(walls_with) * 1000:.0f}")
        self.check("ingest", "kiln run, same step without (median)", m_base * 1000, "ms", "", None)
        self.check("ingest", "ingest time (difference)", ingest * 1000, "ms", "", None)
        self.check("ingest", "ingest rate", rate, "pts/s", ">= 1,000,000", rate >= 1_000_000)
        self.check("ingest", "peak RSS of kiln run, declaring metrics:", rss_with / 1024, "MB", "", None)

        # The last store holds one run with the history: count what came back.
        _, _, data = self.timed([self.kiln, "metrics", "last", "loss", "--output", "csv", "--store", store],
                                stdout=subprocess.PIPE)
        loss_rows = data.count(b"\n") - 1
        _, _, data = self.timed([self.kiln, "metrics", "last", "--output", "csv", "--store", store],
                                stdout=subprocess.PIPE)
        all_rows = data.count(b"\n") - 1
        with closing(sqlite3.connect(os.path.join(store, "kiln.db"))) as db:
            stored = db.execute("SELECT count(*) FROM metric_points").fetchone()[0]
        ok = loss_rows == 500_000 and all_rows == 1_000_000 and stored == 1_000_000
        self.check("ingest", "points read back (loss, all, in SQL)", all_rows, "pts", "= 1,000,000", ok,
                   f"loss {loss_rows:,}, metric_points {stored:,}")
        self.say()

    # ---- 2. a store of 100,000 runs ----

    def runs(self, total):
        self.say(f"2. a store of {total:,} runs")
        d = os.path.join(self.work, "runs")
        os.makedirs(d)
        store = os.path.join(d, "store")
        history = os.path.join(d, "history.jsonl")
        workflow = os.path.join(d, "train.yaml")
        # The step logs accuracy itself and declares the loss history: the
        # same file (so one workflow_sources row) for the template run and
        # the big one; only history.jsonl changes between them.
        write_file(workflow,
                   "name: train\nparams:\n  model: lr\n  C: 1.0\nsteps:\n  train:\n"
                   f'    run: "touch history.jsonl && {self.kiln} log metric accuracy=0.95"\n    metrics: history.jsonl\n')
        write_history(history, 5, ("loss",))
        self.run_workflow(workflow, store, d)

        t = time.perf_counter()
        bulk_insert(os.path.join(store, "kiln.db"), total - 2)
        self.say(f"  ({total - 2:,} runs written with sqlite3 in {time.perf_counter() - t:.1f} s)")

        write_history(history, 1_000_000, ("loss",))
        wall, rss = self.run_workflow(workflow, store, d)
        self.check("runs", "kiln run ingesting 1M loss points", wall * 1000, "ms", "", None,
                   f"{1_000_000 / wall:,.0f} pts/s all-in, peak RSS {rss / 1024:.0f} MB")
        db_path = os.path.join(store, "kiln.db")
        with closing(sqlite3.connect(db_path)) as db:
            runs, big = db.execute("SELECT count(*), max(number) FROM runs").fetchone()
            # Any step's last accuracy, any step's param, as kiln(1) defines the filter.
            accurate = {r for (r,) in db.execute(
                "SELECT run FROM metric_series WHERE key = 'accuracy' AND last_value > 0.9")}
            lr = {r for (r,) in db.execute("SELECT run FROM params WHERE key = 'model' AND value = 'lr'")}
            expected = len(accurate & lr)
        if runs != total:
            raise BenchError(f"the store holds {runs} runs, not {total}")
        self.say(f"  (store: {os.path.getsize(db_path) / MB:.0f} MB; timings below: warm page cache, "
                 f"1 warm-up then median of {self.repeat})")

        base = ["--store", store]
        med, lo, hi, rss = self.repeated([self.kiln, "runs", "list", "--limit", "50"] + base)
        self.check("runs", "runs list --limit 50", med * 1000, "ms", "< 50 ms", med < 0.050,
                   f"min {lo * 1000:.1f}, max {hi * 1000:.1f}, RSS {rss / 1024:.0f} MB")

        search = [self.kiln, "runs", "search", "metrics.accuracy > 0.9 and params.model = 'lr'", "--output",
                  "json"] + base
        med, lo, hi, rss = self.repeated(search)
        _, _, data = self.timed(search, stdout=subprocess.PIPE)
        matched = len(json.loads(data))
        self.check("runs", "runs search (accuracy > 0.9, model lr)", med * 1000, "ms", "< 200 ms", med < 0.200,
                   f"min {lo * 1000:.1f}, max {hi * 1000:.1f}, RSS {rss / 1024:.0f} MB")
        self.check("runs", "runs search: runs matched", matched, "runs", f"= SQL {expected:,}", matched == expected)

        export = [self.kiln, "metrics", str(big), "loss", "--output", "csv"] + base
        med, lo, hi, rss = self.repeated(export)
        _, _, data = self.timed(export, stdout=subprocess.PIPE)
        rows = data.count(b"\n") - 1
        self.check("runs", "metrics N loss --output csv (1M points)", med * 1000, "ms", "< 300 ms", med < 0.300,
                   f"min {lo * 1000:.0f}, max {hi * 1000:.0f}, RSS {rss / 1024:.0f} MB, "
                   f"{len(data) / MB:.0f} MB out")
        self.check("runs", "metrics csv rows", rows, "pts", "= 1,000,000", rows == 1_000_000)
        self.say()

    # ---- 3. a 1 GiB artifact ----

    def artifact(self):
        self.say("3. recording a 1 GiB artifact with `kiln log artifact`")
        d = os.path.join(self.work, "artifact")
        os.makedirs(d)
        store = os.path.join(d, "store")
        write_file(os.path.join(d, "make_big.py"), MAKE_BIG)
        workflow = os.path.join(d, "artifact.yaml")
        write_file(workflow, f'name: artifact\nsteps:\n  make:\n    run: "{sys.executable} make_big.py big.bin"\n')
        wall, _ = self.run_workflow(workflow, store, d)
        self.say(f"  (a step wrote big.bin, 1 GiB, in {wall:.1f} s)")
        with closing(sqlite3.connect(os.path.join(store, "kiln.db"))) as db:
            run_id = db.execute("SELECT id FROM runs ORDER BY number DESC LIMIT 1").fetchone()[0]
        # What kiln gives the step: the recording is the same process the
        # step would start, with its run, step and workdir.
        env = dict(self.env, KILN_STORE=store, KILN_RUN_ID=run_id, KILN_STEP_ID="make", KILN_WORKDIR=d)
        big = os.path.join(d, "big.bin")

        def record(rep, cold):
            # New content and a new name each time: every repetition is a new
            # blob and a new artifact, as a real first recording is.
            name = os.path.join(d, f"big-{rep}.bin")
            os.rename(big, name)
            with open(name, "r+b") as f:
                f.write(rep.to_bytes(8, "little"))
                f.flush()
                os.fsync(f.fileno())
                if cold:
                    os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            # The previous blob's writeback must not overlap this recording.
            fsync_tree(os.path.join(store, "artifacts"))
            cached = resident_fraction(name)
            wall, rss, _ = self.timed([self.kiln, "log", "artifact", name], env=env, cwd=d)
            os.rename(name, big)
            return wall, rss, cached

        warm = [record(rep, False) for rep in range(self.repeat_artifact())]
        med = statistics.median(w[0] for w in warm)
        rss = max(w[1] for w in warm)
        cached = min(w[2] for w in warm)
        rate = GIB / med / MB
        self.check("artifact", "log artifact, file in page cache (median)", rate, "MB/s", ">= 300 MB/s", rate >= 300,
                   f"{med:.2f} s; {fmt_fraction(cached)} of the file cached")
        self.check("artifact", "peak RSS of kiln log artifact", rss / 1024, "MB", "< 32 MB (flat)", rss < 32 * 1024)
        wall, rss, cached = record(len(warm), True)
        self.check("artifact", "log artifact, file evicted first", GIB / wall / MB, "MB/s", "", None,
                   f"{wall:.2f} s; {fmt_fraction(cached)} cached, RSS {rss / 1024:.0f} MB")
        with closing(sqlite3.connect(os.path.join(store, "kiln.db"))) as db:
            recorded = db.execute("SELECT count(*) FROM artifacts WHERE size = ?", (GIB,)).fetchone()[0]
        self.check("artifact", "artifacts recorded", recorded, "", f"= {len(warm) + 1}", recorded == len(warm) + 1)

        # Reference points for the same (cached) file: hashing alone, copying alone.
        for label, cmd in (("sha256sum (hash only)", ["sha256sum", big]), ("cat > file (copy only)", None)):
            if cmd is None:
                target = os.path.join(d, "copy.bin")
                with open(target, "wb") as out:
                    start = time.perf_counter()
                    subprocess.run(["cat", big], stdout=out, check=True)
                    wall = time.perf_counter() - start
                os.unlink(target)
            elif shutil.which(cmd[0]):
                wall = self.timed(cmd)[0]
            else:
                continue
            self.check("artifact", f"reference: {label}", GIB / wall / MB, "MB/s", "", None)
        self.say()

    def repeat_artifact(self):
        # Each repetition moves 2 GiB through the page cache; 3 tell enough.
        return max(1, min(self.repeat, 3))


MAKE_BIG = """\
import os, sys
# 16 distinct 64 MiB blocks: one random block, each copy stamped with its index.
block = bytearray(os.urandom(64 << 20))
with open(sys.argv[1], "wb") as f:
    for i in range(16):
        block[:8] = i.to_bytes(8, "little")
        f.write(block)
"""


def write_file(path, text):
    with open(path, "w") as f:
        f.write(text)


def write_history(path, lines, keys):
    """`lines` JSON Lines {"step": i, key: value...}: decreasing loss-like values with noise."""
    rng = random.Random(7)
    with open(path, "w") as f:
        chunk = []
        for i in range(lines):
            fields = "".join(f', "{k}": {(1.0 / (1 + i * 1e-4) + rng.random() * 0.01)!r}' for k in keys)
            chunk.append(f'{{"step": {i}{fields}}}\n')
            if len(chunk) == 10_000:
                f.write("".join(chunk))
                chunk = []
        f.write("".join(chunk))


def bulk_insert(db_path, count):
    """`count` runs shaped like run 1 (the template), numbered after it."""
    rng = random.Random(42)
    db = sqlite3.connect(db_path, isolation_level=None)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA synchronous = OFF")

    def template(table, where):
        rows = [dict(r) for r in db.execute(f"SELECT * FROM {table} WHERE {where}")]
        if not rows:
            raise BenchError(f"the template run has no {table} rows")
        return rows

    run = template("runs", "number = 1")[0]
    steps = template("steps", "run = 1")
    attempts = template("attempts", "run = 1")
    params = template("params", "run = 1")
    tags = template("tags", "run = 1")
    series = template("metric_series", "run = 1")
    if {s["key"] for s in series} != {"accuracy", "loss"}:
        raise BenchError(f"the template run's series are {[s['key'] for s in series]}, not accuracy and loss")
    next_series = db.execute("SELECT max(id) FROM metric_series").fetchone()[0] + 1
    now_ms = run["started_ms"]

    def insert(table, rows):
        rows = iter(rows)
        first = next(rows)
        columns = list(first)
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        db.executemany(sql, ([r[c] for c in columns] for r in _chain(first, rows)))

    runs_rows, step_rows, attempt_rows, param_rows, tag_rows, series_rows, point_rows = [], [], [], [], [], [], []
    for k in range(count):
        number = 2 + k
        started = now_ms - (count - k) * 60_000
        ended = started + rng.randint(1_000, 600_000)
        model = rng.choice(("lr", "svm", "rf"))
        c = round(10 ** rng.uniform(-3, 2), 5)
        run_id = f"{rng.getrandbits(128):032x}"
        runs_rows.append(dict(run, number=number, id=run_id, started_ms=started, ended_ms=ended,
                              params_json=json.dumps({"C": c, "model": model}, separators=(",", ":")),
                              runner_pid=rng.randint(1000, 99999)))
        for s in steps:
            step_rows.append(dict(s, run=number, started_ms=started + 5, ended_ms=ended - 5))
        for a in attempts:
            out = a["stdout_path"].replace(run["id"], run_id)
            err = a["stderr_path"].replace(run["id"], run_id)
            attempt_rows.append(dict(a, run=number, started_ms=started + 5, ended_ms=ended - 5,
                                     stdout_path=out, stderr_path=err))
        for p in params:
            value = {"model": model, "C": repr(c)}.get(p["key"], p["value"]) if p["step"] == "" else p["value"]
            param_rows.append(dict(p, run=number, value=value))
        for t in tags:
            tag_rows.append(dict(t, run=number))
        for s in series:
            if s["key"] == "accuracy":
                values = [rng.uniform(0.5, 1.0)]
            else:
                start = rng.uniform(0.5, 2.0)
                values = [start * 0.7 ** i for i in range(5)]
            series_rows.append(dict(s, id=next_series, run=number, count=len(values), last_value=values[-1],
                                    last_step=len(values) - 1, last_ms=ended - 10, min_value=min(values),
                                    max_value=max(values)))
            for seq, v in enumerate(values):
                point_rows.append({"series": next_series, "seq": seq, "step": seq, "value": v,
                                   "timestamp_ms": ended - 10})
            next_series += 1
    db.execute("BEGIN")
    for table, rows in (("runs", runs_rows), ("steps", step_rows), ("attempts", attempt_rows),
                        ("params", param_rows), ("tags", tag_rows), ("metric_series", series_rows),
                        ("metric_points", point_rows)):
        insert(table, rows)
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def _chain(first, rest):
    yield first
    yield from rest


def fsync_tree(root):
    for parent, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(parent, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def resident_fraction(path):
    """The part of `path` in the page cache (fincore), or None without it."""
    if not shutil.which("fincore"):
        return None
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--raw", "--output", "RES", path],
                         capture_output=True, text=True)
    try:
        return int(out.stdout.split()[0]) / os.path.getsize(path)
    except (ValueError, IndexError):
        return None


def fmt_fraction(fraction):
    return "unknown" if fraction is None else f"{fraction:.0%}"


def main():
    parser = argparse.ArgumentParser(description="kiln tracking benchmarks (issue 3)")
    parser.add_argument("build", help="build directory holding the kiln binary")
    parser.add_argument("--repeat", type=int, default=5, help="processes per timing (median)")
    parser.add_argument("--runs", type=int, default=100_000, help="runs in the store of part 2")
    parser.add_argument("--only", default="ingest,runs,artifact", help="comma-separated parts to run")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    parser.add_argument("--json", action="store_true", help="results as JSON on stdout, report on stderr")
    args = parser.parse_args()
    kiln = os.path.abspath(os.path.join(args.build, "kiln"))
    if not os.access(kiln, os.X_OK):
        sys.exit(f"no kiln binary at {kiln}")
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = set(parts) - {"ingest", "runs", "artifact"}
    if unknown:
        sys.exit(f"unknown part(s): {', '.join(sorted(unknown))}")
    work = tempfile.mkdtemp(prefix="kiln-bench-")
    bench = Bench(kiln, work, max(1, args.repeat), sys.stderr if args.json else sys.stdout)
    bench.say(f"kiln tracking benchmark: {kiln}\nmachine: {os.cpu_count()} CPUs; data in {work}; "
              f"median of {bench.repeat} processes; load average {os.getloadavg()[0]:.1f} at start\n")
    if not TIME:
        bench.say("(no /usr/bin/time: peak RSS figures are upper bounds, they include this script's RSS)\n")
    started = time.perf_counter()
    status = 0
    try:
        if "ingest" in parts:
            bench.ingest()
        if "runs" in parts:
            bench.runs(max(args.runs, 2))
        if "artifact" in parts:
            bench.artifact()
    except (BenchError, OSError, sqlite3.Error, json.JSONDecodeError) as error:
        print(f"tracking_bench: error: {error}", file=sys.stderr)
        status = 1
    finally:
        if args.keep:
            bench.say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    failed = [f"{s}: {n}" for s, figures in bench.results.items() for n, r in figures.items() if r["pass"] is False]
    bench.say(f"total {time.perf_counter() - started:.0f} s; "
              + (f"targets missed: {'; '.join(failed)}" if failed else "every target met"))
    if args.json:
        json.dump(bench.results, sys.stdout, indent=2)
        print()
    return status


if __name__ == "__main__":
    sys.exit(main())
