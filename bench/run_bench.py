#!/usr/bin/env python3
"""kiln's scheduler benchmarks (issue 2). Generates DAGs of N steps running
`true` and measures, on this machine:

  * N=1000 layered (each step needs two of the previous layer), chain and
    fan-out, `kiln run -j2` against spawn_baseline (the same N `sh -c true`
    processes two at a time, nothing else), in the same run; target for
    layered: kiln <= 1.15x the baseline, with every step, attempt and log
    recorded;
  * a one-step workflow end to end, including creating the store: < 20 ms;
  * N=10000 layered: peak RSS of `kiln run` < 30 MB; `kiln validate` and
    `kiln plan` alone < 100 ms.

usage: bench/run_bench.py BUILD_DIR [--repeat 5]
Each figure is the median of --repeat runs; peak RSS is the max.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def generate(path, shape, n):
    lines = [f"name: {shape}{n}", "steps:"]
    width = 10
    for i in range(n):
        lines.append(f"  s{i}:")
        lines.append('    run: "true"')
        if shape == "chain" and i > 0:
            lines.append(f"    needs: [s{i - 1}]")
        elif shape == "fanout" and i > 0:
            lines.append("    needs: [s0]")
        elif shape == "layered" and i >= width:
            layer_start = (i // width - 1) * width
            a = layer_start + (i % width)
            b = layer_start + ((i + 1) % width)
            lines.append(f"    needs: [s{a}, s{b}]")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def timed(cmd, env=None, cwd=None):
    """Wall seconds and peak RSS (KiB) of one command; fails loudly."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=cwd)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.read().decode()}")
    return wall, usage.ru_maxrss


def median_of(repeat, fn):
    results = [fn() for _ in range(repeat)]
    return statistics.median(r[0] for r in results), max(r[1] for r in results)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("build")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    kiln = os.path.abspath(os.path.join(args.build, "kiln"))
    baseline = os.path.abspath(os.path.join(args.build, "bench", "spawn_baseline"))
    work = tempfile.mkdtemp(prefix="kiln-bench-")
    env = dict(os.environ)
    env.pop("KILN_STORE", None)
    ok = True
    try:
        def fresh_store():
            store = os.path.join(work, "store")
            shutil.rmtree(store, ignore_errors=True)
            return store

        print(f"machine: {os.cpu_count()} CPUs; median of {args.repeat} runs\n")
        print(f"{'shape':<10}{'N':>7}{'kiln -j2':>12}{'baseline':>12}{'ratio':>8}")
        for shape in ("layered", "chain", "fanout"):
            n = 1000
            wf = os.path.join(work, f"{shape}.yaml")
            generate(wf, shape, n)
            # Interleave kiln and the baseline so drift hits both alike.
            kiln_times, base_times = [], []
            for _ in range(args.repeat):
                kiln_times.append(timed([kiln, "run", wf, "-j", "2", "--store", fresh_store()], env, work)[0])
                base_times.append(timed([baseline, str(n), "2"], env, work)[0])
            k, b = statistics.median(kiln_times), statistics.median(base_times)
            ratio = k / b
            verdict = ""
            if shape == "layered":
                verdict = "  (target <= 1.15)" + ("" if ratio <= 1.15 else "  MISSED")
                ok = ok and ratio <= 1.15
            print(f"{shape:<10}{n:>7}{k * 1000:>10.0f}ms{b * 1000:>10.0f}ms{ratio:>8.3f}{verdict}")

        one = os.path.join(work, "one.yaml")
        with open(one, "w") as f:
            f.write('name: one\nsteps:\n  only:\n    run: "true"\n')
        t, _ = median_of(max(args.repeat, 10), lambda: timed([kiln, "run", one, "--store", fresh_store()], env, work))
        ok = ok and t < 0.020
        print(f"\none-step workflow, new store: {t * 1000:.1f} ms (target < 20 ms)")

        big = os.path.join(work, "big.yaml")
        generate(big, "layered", 10000)
        tv, rss_v = median_of(args.repeat, lambda: timed([kiln, "validate", big], env, work))
        tp, rss_p = median_of(args.repeat, lambda: timed([kiln, "plan", big, "--output", "json"], env, work))
        tr, rss_r = median_of(1, lambda: timed([kiln, "run", big, "-j", "2", "--store", fresh_store()], env, work))
        print(f"N=10000 layered: validate {tv * 1000:.0f} ms, plan {tp * 1000:.0f} ms (target < 100 ms); "
              f"run {tr:.1f} s, peak RSS {rss_r / 1024:.1f} MB (target < 30 MB)")
        ok = ok and tv < 0.1 and tp < 0.1 and rss_r < 30 * 1024
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\nall targets met" if ok else "\nSOME TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
