#!/usr/bin/env python3
"""kiln's skip-unchanged benchmark (issue 5): a no-op rerun of N steps, each
with one input file and one output, every step cached. Target for N=10,000:
under 100 ms for the whole `kiln run`, as a fresh process.

Two ways are timed. Decided (`--no-replay`): load, plan, hash checks
against the memo, cache lookups, recording the run with every step cached.
Replayed, what a plain `kiln run` does here (see kiln(1)): the run is
recorded as a repeat of the last wholly cached one once the workflow's
digest and every file stamp are found unchanged. Replays run back to back,
so each one also copies the previous one's writes from the store's log
into kiln.db (steady state, as a nightly no-op rerun would).

The graph is layered (each step needs two of the previous layer, as in
run_bench.py), so upstream keys chain through it. The same graph is written
as a build.ninja and ninja's no-op is timed beside it when ninja is installed.

usage: bench/cache_bench.py BUILD_DIR [--steps 10000] [--repeat 5] [--keep]
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

WIDTH = 10


def needs_of(i):
    if i < WIDTH:
        return []
    layer_start = (i // WIDTH - 1) * WIDTH
    return [layer_start + (i % WIDTH), layer_start + ((i + 1) % WIDTH)]


def generate(root, n):
    os.makedirs(os.path.join(root, "in"))
    os.makedirs(os.path.join(root, "out"))
    # Input files written "long ago": the racy-clean window (1 s) is about
    # files written as they are hashed, not about data sitting in a directory.
    old = time.time() - 3600
    for i in range(n):
        path = os.path.join(root, "in", f"{i}.txt")
        with open(path, "w") as f:
            f.write(f"input {i}\n")
        os.utime(path, (old, old))
    lines = ["name: cache%d" % n, "steps:"]
    for i in range(n):
        lines.append(f"  s{i}:")
        lines.append(f"    run: cp in/{i}.txt out/{i}.txt")
        lines.append(f"    inputs: [in/{i}.txt]")
        lines.append(f"    outputs: [out/{i}.txt]")
        needs = needs_of(i)
        if needs:
            lines.append("    needs: [%s]" % ", ".join(f"s{d}" for d in needs))
    with open(os.path.join(root, "workflow.yaml"), "w") as f:
        f.write("\n".join(lines) + "\n")
    ninja = ["rule cp", "  command = cp $in $out", ""]
    for i in range(n):
        deps = " ".join(f"out/{d}.txt" for d in needs_of(i))
        ninja.append(f"build out/{i}.txt: cp in/{i}.txt" + (f" || {deps}" if deps else ""))
    with open(os.path.join(root, "build.ninja"), "w") as f:
        f.write("\n".join(ninja) + "\n")


def timed(cmd, cwd, env):
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return wall, proc.stdout


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("build_dir")
    parser.add_argument("--steps", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    kiln = os.path.abspath(os.path.join(args.build_dir, "kiln"))
    root = tempfile.mkdtemp(prefix="kiln-cache-bench-")
    env = dict(os.environ, KILN_STORE=os.path.join(root, ".kiln"))
    try:
        generate(root, args.steps)
        first, _ = timed([kiln, "run", "workflow.yaml", "-j2"], root, env)
        # One settling rerun: outputs written by the first run are inside
        # the racy window and are hashed again once.
        time.sleep(1.1)
        timed([kiln, "run", "workflow.yaml"], root, env)
        def reruns(extra, replayed):
            walls = []
            for _ in range(args.repeat):
                wall, out = timed([kiln, "run", "workflow.yaml"] + extra, root, env)
                if f"({args.steps} cached)" not in out:
                    sys.exit("a no-op rerun did not cache every step:\n" + out[-2000:])
                if ("all cached: nothing they rest on has changed" in out) != replayed:
                    sys.exit(f"a no-op rerun was{'' if not replayed else ' not'} a replay:\n" + out[-2000:])
                walls.append(wall)
            return (f"median {statistics.median(walls) * 1000:.0f} ms (mean {statistics.mean(walls) * 1000:.0f}, "
                    f"min {min(walls) * 1000:.0f}, "
                    f"max {max(walls) * 1000:.0f}, {args.repeat} runs: " + " ".join(f"{w * 1000:.0f}" for w in walls)
                    + ")")
        # Planned and decided step by step; each leaves the basis the
        # replays below start from.
        decided = reruns(["--no-replay"], False)
        replayed = reruns([], True)
        print(f"steps: {args.steps}, each with one input and one output (layered graph)")
        print(f"first run (all steps execute, -j2): {first:.1f} s")
        print(f"no-op rerun, every step decided (--no-replay): {decided}")
        print(f"no-op rerun, replayed (the target): {replayed}")
        if shutil.which("ninja"):
            timed(["ninja", "-j2"], root, env)
            nwalls = [timed(["ninja", "-j2"], root, env)[0] for _ in range(args.repeat)]
            print(f"ninja no-op on the same graph: median {statistics.median(nwalls) * 1000:.0f} ms")
        else:
            print("ninja not installed: no comparison")
    finally:
        if args.keep:
            print("kept", root)
        else:
            shutil.rmtree(root)


if __name__ == "__main__":
    main()
