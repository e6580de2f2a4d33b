"""Test-time adaptation on the pair itself (issue 22's last lever), measured on the real-pair suite.

For each case the shipped network is fine-tuned for ``--steps`` Adam steps on the pair's own
self-supervised example — input ``(LR↓s, Ref↓s)``, with the reference prepared as the network takes it
(matched onto the LR↓s's view when its checkpoint says so), target the LR — as the dual-camera papers'
real-image adaptation does; then the pair is super-resolved with the adapted weights (paste gate and
back-projection as usual) and scored against the ground truth. Each case starts from the shipped weights.
Prints per case the PSNR before → after and the adaptation's seconds, then the means.

At ×8 the suite's LR↓s images are 2×2 to 7×11 px: there is nothing left to adapt on, so ×4 is the useful scale.

    python benchmarks/bench_test_time_adaptation.py --variant crossmpi --scale 4 --steps 40 --lr 1e-4
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from refsr_cli.bench.real_suite import case_pair, real_cases
from refsr_cli.inference.matched_reference import reference_for_network
from refsr_cli.inference.footprint import pair_inference
from refsr_cli.archs.checkpoint import load_model, shipped_weights
from refsr_cli.inference.methods import Method
from refsr_cli.metrics import psnr
from refsr_cli.ops.resize import downscale


def _score(method, lr: torch.Tensor, ref: torch.Tensor, hr: torch.Tensor) -> float:
    sr, _ = pair_inference(method, lr[None], ref[None])
    return psnr(sr[0].clamp(0, 1), hr)


def adapt(model: torch.nn.Module, lr: torch.Tensor, ref: torch.Tensor, scale: int, steps: int, rate: float) -> None:
    """Fine-tune ``model`` in place on ``(lr↓s, ref↓s) → lr`` (``lr`` ``1×3×h×w``, ``ref`` ``1×3×sh×sw``)."""
    h, w = lr.shape[-2] // scale * scale, lr.shape[-1] // scale * scale
    target, ref = lr[..., :h, :w], ref[..., : h * scale, : w * scale]
    small_lr, small_ref = downscale(target, scale).clamp(0, 1), downscale(ref, scale).clamp(0, 1)
    small_ref = reference_for_network(model, small_lr, small_ref, scale)
    optimiser = torch.optim.Adam(model.parameters(), lr=rate)
    for _ in range(steps):
        out = model(small_lr, small_ref, scale)
        out = out[0] if isinstance(out, tuple) else out
        loss = (out - target).abs().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="crossmpi")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--lr", type=float, default=1e-4)
    args = parser.parse_args()
    s = args.scale
    # The network as trained (load_method folds BatchNorms for inference, which would change what is adapted).
    model, _ = load_model(shipped_weights(args.variant, s), "cpu", scale=s)
    method = Method.from_model(model, s, name=args.variant)
    shipped = copy.deepcopy(method.model.state_dict())
    before, after, seconds = [], [], []
    for case in real_cases()[0]:
        name, lr, ref, hr = case_pair(case, s)
        method.model.load_state_dict(shipped)
        before.append(_score(method, lr, ref, hr))
        start = time.perf_counter()
        if min(lr.shape[-2:]) // s >= 8:
            adapt(method.model, lr[None], ref[None], s, args.steps, args.lr)
        seconds.append(time.perf_counter() - start)
        after.append(_score(method, lr, ref, hr))
        print(f"{name:20s} {before[-1]:.2f} -> {after[-1]:.2f} dB ({after[-1] - before[-1]:+.2f}), "
              f"adaptation {seconds[-1]:.1f} s", flush=True)
    print(f"{args.variant} ×{s}, {args.steps} steps at {args.lr:g}: mean {statistics.mean(before):.2f} -> "
          f"{statistics.mean(after):.2f} dB, adaptation {sum(seconds):.1f} s in all")


if __name__ == "__main__":
    main()
