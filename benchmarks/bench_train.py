"""Training throughput of every variant: iterations/s and the data-wait fraction, measured in one run.

Runs the real training loop (`refsr_cli.training.loop.train`) for a few iterations per variant on a store and
reads the step timings from the run's log. Iterations/s are for the timed iterations only (the first,
warm-up, iteration is excluded by logging after it).

    python benchmarks/bench_train.py --store data/syn --iters 3                       # CPU, batch 1, 320×512
    python benchmarks/bench_train.py --store data/syn --device cuda --batch 8 --iters 50   # GPU, bf16

With no --store, a small synthetic store (4 light fields at 320×512) is rendered into a temporary folder.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from refsr_cli.prepare.pipeline import prepare_synthetic
from refsr_cli.training.config import resolve_config
from refsr_cli.training.loop import read_log, train


def measure(variant: str, store: Path, device: str, batch: int, iters: int, crop, scale: int, size: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        config = resolve_config(variant, scale=scale, iters=iters + 1, batch=batch, crop=list(crop),
                                model_size=size, log_every=1, checkpoint_every=10**9, data=[str(store)],
                                val_holdout=0)   # the steps are timed, not a validation pass
        config["milestones"] = []
        started = time.perf_counter()
        train(config, Path(tmp) / "run", device=device)
        wall = time.perf_counter() - started
        log = read_log(Path(tmp) / "run")
    timed = [r for r in log if r["iter"] > 1]  # iteration 1 is warm-up (allocator, autotuning)
    seconds = [1.0 / r["it_per_s"] for r in timed]
    wait = sum(r["data_wait_fraction"] for r in timed) / len(timed)
    return {"variant": variant, "it_per_s": len(seconds) / sum(seconds), "s_per_it": sum(seconds) / len(seconds),
            "data_wait_fraction": wait, "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, default=None)
    parser.add_argument("--variants", default="crossnet,crossnetpp,crossmpi,refsrnet,mdsr")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--iters", type=int, default=3, help="timed iterations (after one warm-up)")
    parser.add_argument("--crop", type=int, nargs=2, default=(320, 512))
    parser.add_argument("--scale", type=int, default=8)
    parser.add_argument("--model-size", default="paper", choices=["paper", "tiny"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = args.store
        if store is None:
            store = Path(tmp) / "store"
            prepare_synthetic(store, count=4, test_count=1, seed=0, height=args.crop[0], width=args.crop[1], jobs=1)
        device = args.device
        print(f"device={device} ({torch.cuda.get_device_name() if device.startswith('cuda') else 'CPU'}), "
              f"threads={torch.get_num_threads()}, batch={args.batch}, crop={args.crop[0]}×{args.crop[1]}, "
              f"scale={args.scale}, model={args.model_size}")
        print(f"{'variant':<11} {'it/s':>8} {'s/it':>8} {'data wait':>10} {'200k its (h)':>13}")
        for variant in args.variants.split(","):
            r = measure(variant, store, device, args.batch, args.iters, args.crop, args.scale, args.model_size)
            print(f"{variant:<11} {r['it_per_s']:8.3f} {r['s_per_it']:8.2f} {r['data_wait_fraction']:10.1%} "
                  f"{200_000 * r['s_per_it'] / 3600:13.1f}", flush=True)


if __name__ == "__main__":
    main()
