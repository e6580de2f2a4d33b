"""kill -9 at random points of `refsr train` and `refsr prepare`: rerunning the same command finishes with
the result of an uninterrupted run, no worker outlives its killed parent, and no file is left behind
that a later run does not clean or reuse. Bounded: two kills each, tiny sizes, a few seconds a run."""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from click.testing import CliRunner

from refsr_cli.archs.checkpoint import read_checkpoint
from refsr_cli.cli import main

KILLS = 2
# The same torch thread count as this process, so that a subprocess's float sums match the reference run's.
ENV = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _kill_when(args: list[str], started, delay: float, timeout: float = 60) -> list[int]:
    """Run ``refsr ARGS``; once ``started()`` holds, wait ``delay`` s and SIGKILL it (unless it finished
    first). Returns its children at that moment."""
    proc = subprocess.Popen([sys.executable, "-m", "refsr_cli", *args], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while not started() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(delay)
    children = _children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return children


def _debris(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name.startswith(".") or
                  p.suffix == ".tmp")


def test_train_killed_at_random_points_resumes_to_the_uninterrupted_result(tiny_lf_store, tmp_path):
    seed = int(os.environ.get("REFSR_KILL_SEED", time.time_ns()))
    rng = random.Random(seed)
    print(f"REFSR_KILL_SEED={seed}")             # shown on failure: reruns the same kill points
    (tmp_path / "log.toml").write_text("log_every = 1\n")
    args = ["--quiet", "train", "--variant", "crossnet", "--data", str(tiny_lf_store), "--model-size", "tiny",
            "--iters", "24", "--crop", "32", "32", "--batch", "1", "--scale", "4", "--checkpoint-every", "3",
            "--device", "cpu", "--config", str(tmp_path / "log.toml")]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    result = CliRunner().invoke(main, args + ["--out", str(straight)])
    assert result.exit_code == 0, result.output
    for _ in range(KILLS):
        _kill_when(args + ["--out", str(killed)], lambda: (killed / "last.pt").exists(), rng.uniform(0, 0.6))
    done = subprocess.run([sys.executable, "-m", "refsr_cli", *args, "--out", str(killed)], env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    a, b = (read_checkpoint(run / "model.pt")["state_dict"] for run in (straight, killed))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6, rtol=0) for k in a)

    def losses(run):
        rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        return [(r["iter"], round(r["loss"], 5)) for r in rows if "loss" in r]

    assert losses(killed) == losses(straight)      # every iteration once, with the uninterrupted loss
    assert _debris(killed) == []


def test_prepare_killed_at_random_points_resumes_to_identical_stores(tmp_path):
    from refsr_cli.prepare.pipeline import PARTIAL_DIR, prepare_synthetic

    seed = int(os.environ.get("REFSR_KILL_SEED", time.time_ns()))
    rng = random.Random(seed)
    print(f"REFSR_KILL_SEED={seed}")
    sizes = dict(count=4, test_count=1, seed=2, height=64, width=96, max_disparity=4.0)
    straight = tmp_path / "straight"
    prepare_synthetic(straight, jobs=1, **sizes)
    out = tmp_path / "killed"
    args = ["--quiet", "prepare", "synthetic", "--out", str(out), "--count", "4", "--test-count", "1",
            "--seed", "2", "--size", "64", "96", "--max-disparity", "4", "--jobs", "2"]
    orphans = []
    for _ in range(KILLS):
        workers = _kill_when(args, lambda: any((out / PARTIAL_DIR).glob("0*.h5")), rng.uniform(0, 0.6))
        deadline = time.monotonic() + 5
        while any(map(_alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.05)
        orphans += [pid for pid in workers if _alive(pid)]
    for pid in orphans:                               # do not leave them running after a failed test
        os.kill(pid, signal.SIGKILL)
    assert not orphans, "worker processes outlived their killed prepare"
    done = subprocess.run([sys.executable, "-m", "refsr_cli", *args], env=ENV, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    for split in ("train.h5", "test.h5"):
        assert (out / split).read_bytes() == (straight / split).read_bytes()
    assert _debris(out) == []


def test_bench_killed_leaves_no_worker_and_a_rerun_finishes_from_its_cache(tmp_path):
    """`refsr bench` runs baselines in joblib worker processes. Killed while they still have work queued,
    it must not leave them running (a loky worker would finish the queue and wait minutes for more), and a
    rerun completes, reusing what the killed run had stored and leaving no temporary behind. Images large enough that the queue outlasts
    the check (PatchMatch ≈ 1 s per image on one thread)."""
    from refsr_cli.prepare.pipeline import prepare_synthetic

    prepare_synthetic(tmp_path / "store", count=1, test_count=4, seed=3, height=256, width=384, max_disparity=4.0,
                      jobs=1)
    out = tmp_path / "bench"
    args = ["--quiet", "bench", "--data", str(tmp_path / "store" / "test.h5"), "--methods", "patchmatch",
            "--scales", "4", "--jobs", "2", "--out", str(out)]
    children = _kill_when(args, lambda: any((out / "cache").glob("patchmatch__*.json")), 0.1)
    assert children, "the bench ended before it could be killed"
    deadline = time.monotonic() + 2
    while any(map(_alive, children)) and time.monotonic() < deadline:
        time.sleep(0.05)
    orphans = [pid for pid in children if _alive(pid)]
    for pid in orphans:                               # do not leave them running after a failed test
        os.kill(pid, signal.SIGKILL)
    assert not orphans, "worker processes outlived their killed bench"
    stored = len(list((out / "cache").glob("patchmatch__*.json")))
    done = subprocess.run([sys.executable, "-m", "refsr_cli", *args], env=ENV, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "report.json").read_text())
    assert len(report["images"]) == 8 and report["cache"]["reused"] == stored
    assert _debris(out) == []
