"""Is a flow network learning? Its supervised flow error against that of predicting no flow at all.

    python benchmarks/bench_flow_learning.py runs/weights/crossnet_x8_flow   # after weights/train.sh crossnet 8

Reads a training run that used the ``flow`` loss (``RUN/config.json``, ``RUN/log.jsonl``), rebuilds the
exact batches of its logged iterations (training samples are a pure function of the seed and the sample
number), and prints per window of logged iterations the mean logged ``flow`` term (end-point error in HR
pixels, averaged over the supervised scales) beside the same error of an all-zero prediction on the same
batches. A ratio near 1 means the network predicts about zero — it has not left the plateau on which
FlowNet-style estimators start; a learning network drives it well below 1.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from refsr_cli.training.losses.flow import flow_loss  # noqa: E402
from refsr_cli.training.loop import read_log, training_dataset  # noqa: E402
from refsr_cli.data.training_samples import collate  # noqa: E402


def zero_flow_error(batch: dict, config: dict) -> float:
    """The flow term of an all-zero prediction at the scales the variant supervises."""
    levels = 1 if config["variant"] == "crossnetpp" else 4      # V1⁰ only, or V0…V3
    h, w = batch["flow"].shape[-2:]
    zeros = [batch["flow"].new_zeros(batch["flow"].shape[0], 2, -(-h // 2 ** i), -(-w // 2 ** i))
             for i in range(levels)]
    return float(flow_loss(zeros, batch["flow"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a training run folder whose recipe has a 'flow' loss")
    parser.add_argument("--window", type=int, default=1000, help="iterations per printed row")
    args = parser.parse_args()
    config = json.loads((args.run / "config.json").read_text())
    if config["variant"] not in ("crossnet", "crossnetpp"):
        # RefSR-Net's flow term is a cross-entropy over match candidates, not an end-point error.
        sys.exit(f"{args.run}: a {config['variant']} run; this compares CrossNet / CrossNet++ flow end-point errors")
    # The same samples; the true flow switched on, CrossNet++'s SIFT landmarks (not needed here) off.
    dataset = training_dataset({**config, "loss": {**config["loss"], "flow": 1.0, "landmark": 0}})
    logged = [r for r in read_log(args.run) if "flow" in r]
    if not logged:
        sys.exit(f"{args.run}: no 'flow' term in log.jsonl")
    rows: dict[int, list[tuple[float, float]]] = {}
    for record in logged:
        it = record["iter"]
        batch = collate([dataset[(it - 1) * config["batch"] + i] for i in range(config["batch"])])
        rows.setdefault((it - 1) // args.window, []).append((record["flow"], zero_flow_error(batch, config)))
    print(f"{args.run}: {config['variant']} ×{config['scale']}, flow term vs zero flow (HR px, logged batches)")
    print(f"  {'iterations':<14}{'flow':>8}{'zero':>8}{'ratio':>8}")
    for window, values in sorted(rows.items()):
        flow, zero = np.mean(values, axis=0)
        span = f"{window * args.window + 1}-{(window + 1) * args.window}"
        print(f"  {span:<14}{flow:8.2f}{zero:8.2f}{flow / zero:8.3f}")


if __name__ == "__main__":
    with torch.inference_mode():
        main()
