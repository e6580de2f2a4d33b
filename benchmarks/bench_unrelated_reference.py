"""What a reference of another scene costs each network, against single-image MDSR (issue 22's goal:
at most 0.2 dB).

Every case of the real-pair suite (``refsr_cli.bench.real_suite``) is super-resolved with the reference of
the next case of another scene (not another gap of the same clip; resized to the HR size it needs), by every shipped network at
its defaults, and scored against the case's ground truth. Prints per network the mean and the worst
difference to MDSR on the same LR, and the mean with the pair's own reference for comparison.

    python benchmarks/bench_unrelated_reference.py --scale 4
    python benchmarks/bench_unrelated_reference.py --scale 8 --cases 6
"""
from __future__ import annotations

import argparse
import statistics

import torch

from refsr_cli.archs import variants
from refsr_cli.archs.checkpoint import shipped_weights
from refsr_cli.bench.real_suite import case_pair, real_cases
from refsr_cli.inference.footprint import pair_inference
from refsr_cli.inference.methods import load_method
from refsr_cli.metrics import psnr
from refsr_cli.ops.resize import imresize


def _run(method, lr: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    sr, _ = pair_inference(method, lr[None], ref[None])      # as refsr infer runs it (rematching included)
    return sr[0].clamp(0, 1)


def _other_scene(pairs: list, i: int) -> int:
    """Index of the next case after ``i`` that shows another scene (``bikes/gap1`` and ``bikes/gap4`` are one)."""
    scene = lambda name: name.rsplit("/gap", 1)[0]  # noqa: E731
    return next(j % len(pairs) for j in range(i + 1, i + len(pairs)) if scene(pairs[j % len(pairs)][0]) != scene(pairs[i][0]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=4, choices=(4, 8))
    parser.add_argument("--cases", type=int, default=0, help="use the first N cases only (default: all)")
    args = parser.parse_args()
    cases, missing = real_cases()
    for line in missing:
        print(f"note: {line}")
    cases = cases[: args.cases or None]
    pairs = [case_pair(case, args.scale) for case in cases]
    torch.set_grad_enabled(False)
    mdsr = load_method("mdsr", args.scale)
    single = [psnr(_run(mdsr, lr, ref), hr) for _, lr, ref, hr in pairs]
    print(f"{len(pairs)} cases ×{args.scale}; MDSR mean {statistics.mean(single):.2f} dB")
    for name in variants():
        if name == "mdsr" or shipped_weights(name, args.scale) is None:
            continue
        method = load_method(name, args.scale)
        own, other = [], []
        for i, (_, lr, ref, hr) in enumerate(pairs):
            foreign = pairs[_other_scene(pairs, i)][2]
            foreign = imresize(foreign[None], size=tuple(ref.shape[-2:]))[0].clamp(0, 1)
            own.append(psnr(_run(method, lr, ref), hr))
            other.append(psnr(_run(method, lr, foreign), hr) - single[i])
        worst = min(range(len(other)), key=other.__getitem__)
        print(f"{name:11s} own reference {statistics.mean(own):6.2f} dB | another scene's: "
              f"mean {statistics.mean(other):+.2f} dB vs MDSR, worst {other[worst]:+.2f} ({pairs[worst][0]}) "
              f"(goal ≥ −0.20)")


if __name__ == "__main__":
    main()
