"""Throughput of `refsr prepare flower` with --jobs 1 vs --jobs 2 on the same lenslet PNGs.

    python benchmarks/bench_prepare.py                     # 8 Lytro-sized PNGs (5264×7574), crop 320×512
    python benchmarks/bench_prepare.py --count 4 --views 188 270   # quicker, half-size lenslets

Inputs are generated once into --workdir (default /tmp/refsr-bench-prepare): lenslet PNGs of
(views_h·14)×(views_w·14) pixels whose 14×14 views are shifted copies of a scikit-image photo plus
sensor-like noise (so PNG decoding costs what it costs on real captures, unlike flat or random data).
Each run is a fresh `python -m refsr_cli prepare flower ... --jobs N` process into a new output folder
(worker start-up included, as for a user); the jobs-1 and jobs-2 runs alternate (1, 2, 2, 1, ...) so that
drifting machine load hits both alike. Prints light fields per second for each, the ratio jobs-2 / jobs-1,
and the CPU time the run tree obtained (cores busy on average), which shows whether the machine
actually granted a second core.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import statistics
import sys
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def make_inputs(folder: Path, count: int, views_h: int, views_w: int) -> list[Path]:
    from skimage import data, transform

    folder.mkdir(parents=True, exist_ok=True)
    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    paths = []
    for k in range(count):
        path = folder / f"IMG_{k:04d}_eslf.png"
        paths.append(path)
        if path.exists():
            continue
        rng = np.random.default_rng(k)
        base = transform.resize(photos[k % len(photos)], (views_h + 14, views_w + 14), anti_aliasing=True)
        lenslet = np.empty((views_h, 14, views_w, 14, 3), np.uint8)
        for v in range(14):
            for u in range(14):
                # A small parallax per view plus noise: realistic entropy for the PNG decoder.
                view = base[v // 2: v // 2 + views_h, u // 2: u // 2 + views_w]
                noisy = view * 255 + rng.normal(0, 2.0, view.shape)
                lenslet[:, v, :, u] = np.clip(noisy, 0, 255).astype(np.uint8)
        iio.imwrite(path, lenslet.reshape(views_h * 14, views_w * 14, 3))
        print(f"generated {path} ({views_h * 14}×{views_w * 14})", flush=True)
    return paths


def run_once(src: Path, out: Path, jobs: int, crop, test_count: int) -> tuple[float, float]:
    """One `refsr prepare flower` CLI run as a user would start it; returns (wall s, CPU s of the whole tree)."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "refsr_cli", "--quiet", "prepare", "flower", str(src), "--out", str(out),
           "--test-count", str(test_count), "--crop", str(crop[0]), str(crop[1]), "--jobs", str(jobs)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # includes the joblib workers (reaped descendants)
    return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=8, help="lenslet PNGs (default 8)")
    parser.add_argument("--views", type=int, nargs=2, default=(376, 541), metavar=("H", "W"),
                        help="view size; the PNG is 14·H × 14·W (default 376 541, the Lytro Illum)")
    parser.add_argument("--crop", type=int, nargs=2, default=(320, 512), metavar=("H", "W"))
    parser.add_argument("--repeats", type=int, default=1, help="runs per setting (default 1)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/refsr-bench-prepare"))
    args = parser.parse_args()

    src = args.workdir / f"src_{args.views[0]}x{args.views[1]}_{args.count}"
    make_inputs(src, args.count, *args.views)
    crop = tuple(min(c, v) for c, v in zip(args.crop, args.views))
    times: dict[int, list[float]] = {1: [], 2: []}
    cpu: dict[int, list[float]] = {1: [], 2: []}
    load_before = os.getloadavg()[0]
    order = []
    for r in range(args.repeats):
        order += [1, 2] if r % 2 == 0 else [2, 1]
    for jobs in order:
        seconds, cpu_s = run_once(src, args.workdir / f"out_jobs{jobs}", jobs, crop, test_count=1)
        times[jobs].append(seconds)
        cpu[jobs].append(cpu_s)
        print(f"jobs={jobs}: {seconds:.2f} s  ({args.count / seconds:.2f} light fields/s), CPU {cpu_s:.1f} s "
              f"= {cpu_s / seconds:.2f} cores busy on average", flush=True)
    same = all((args.workdir / "out_jobs1" / f).read_bytes() == (args.workdir / "out_jobs2" / f).read_bytes()
               for f in ("train.h5", "test.h5"))
    t1, t2 = statistics.median(times[1]), statistics.median(times[2])
    print(f"\ninput: {args.count} lenslet PNGs of {args.views[0] * 14}×{args.views[1] * 14}, crop {crop[0]}×{crop[1]}, "
          f"{os.cpu_count()} CPUs, load average before/after: {load_before:.1f}/{os.getloadavg()[0]:.1f}")
    print(f"jobs 1: {args.count / t1:.3f} LF/s   jobs 2: {args.count / t2:.3f} LF/s   "
          f"ratio jobs2/jobs1 = {t1 / t2:.2f}×   identical stores: {same}")
    # On a shared machine the kernel's autogroup scheduler gives this session a fixed CPU share however
    # many processes it runs; the cores actually obtained tell whether a low ratio is the code's fault.
    print(f"cores obtained: jobs 1 {statistics.median(cpu[1]) / t1:.2f}, jobs 2 {statistics.median(cpu[2]) / t2:.2f}; "
          f"CPU seconds per light field: jobs 1 {statistics.median(cpu[1]) / args.count:.2f}, "
          f"jobs 2 {statistics.median(cpu[2]) / args.count:.2f}")


if __name__ == "__main__":
    main()
