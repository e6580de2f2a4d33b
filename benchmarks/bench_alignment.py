"""How much of a flow-based checkpoint's quality comes from alignment: its warped reference against
the unwarped reference and against a warp by the ground-truth disparity, on the built-in light fields.

    python benchmarks/bench_alignment.py weights/crossnet_x8.pt
    python benchmarks/bench_alignment.py weights/crossnetpp_x8.pt --view 7 --count 4

Scenes: the built-in test set's light fields (same seeds, re-rendered with their disparity), Ref =
view (0,0), HR = view (k,k), LR = downscale(HR, scale). Printed per method, mean PSNR (dB, RGB [0,1],
whole image) over the scenes:

- ``sr``: the network's output;
- ``warped Ref``: the reference warped by the network's full-resolution flow (``aux["warped"]``: V0 for
  CrossNet, the stage-2 flow after stage 1 for CrossNet++);
- ``Ref``: the reference as it is (zero flow);
- ``Ref, true disparity``: the reference warped by the ground-truth flow (view (k,k)'s rendered
  disparity) — what perfect alignment alone gives (occlusions, noise and photometric differences keep it
  below infinity).

A flow estimator that learned nothing scores ``warped Ref ≈ Ref``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from refsr_cli.bench.builtin_data import DEFAULT_COUNT, render_builtin  # noqa: E402
from refsr_cli.archs.checkpoint import load_model  # noqa: E402
from refsr_cli.data.image_io import array_to_tensor  # noqa: E402
from refsr_cli.metrics import psnr  # noqa: E402
from refsr_cli.ops.resize import downscale  # noqa: E402
from refsr_cli.ops.warp import backward_warp  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a crossnet or crossnetpp checkpoint")
    parser.add_argument("--view", type=int, default=1, help="k of the LR view (k,k); Ref is (0,0)")
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT, help="built-in scenes to use")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, meta = load_model(args.checkpoint)
    model.eval()
    scale = int(meta["scale"])
    rows = []
    with torch.inference_mode():
        for i in range(args.count):
            views, disparity = render_builtin(i, every_view=True)
            k = args.view
            ref, hr = array_to_tensor(views[0, 0])[None], array_to_tensor(views[k, k])[None]
            sr, aux = model(downscale(hr, scale), ref, scale)
            if "warped" not in aux:
                sys.exit(f"{args.checkpoint}: no warped reference in its output (not a flow-based variant)")
            # Pixel p of view (k,k) shows the point at p + d(p)·(k, k)/7 of view (0,0), d = view (k,k)'s disparity.
            oracle = backward_warp(ref, torch.from_numpy(disparity[k, k] * k / 7)[None, None].expand(1, 2, -1, -1))
            rows.append([psnr(x[0].clamp(0, 1), hr[0]) for x in (sr, aux["warped"], ref, oracle)])
    mean = np.mean(np.array(rows), axis=0)
    print(f"{args.checkpoint}: ×{scale}, view ({args.view},{args.view}), {len(rows)} built-in scenes, "
          "PSNR dB")
    for name, value in zip(("sr", "warped Ref", "Ref", "Ref, true disparity"), mean):
        print(f"  {name:<20} {value:6.2f}")


if __name__ == "__main__":
    main()
