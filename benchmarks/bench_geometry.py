"""Cost of reading a pair's geometry (``refsr_cli.ops.geometry``) against the networks' own time, 1 MP output.

The pair is scikit-image's real ``stereo_motorcycle`` (left → right) resized to 1024×1024 HR; LR is its
bicubic ↓s. Times, in one run: the estimate as inference runs it (LR against the reference), and
every shipped network at that scale on the whole image (``tile=0``), median of ``--repeats``. Prints each
network's time and the estimate's share of the fastest one (target ≤ 10 %).

    python benchmarks/bench_geometry.py --scale 4
    python benchmarks/bench_geometry.py --scale 8 --repeats 3
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import skimage.data
import torch

from refsr_cli.archs import variants
from refsr_cli.archs.checkpoint import shipped_weights
from refsr_cli.inference.methods import load_method
from refsr_cli.ops.geometry import estimate_aligned_geometry, estimate_geometry
from refsr_cli.ops.resize import downscale, imresize


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=4, choices=(4, 8))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=1024, help="HR side (default 1024: ~1 MP)")
    args = parser.parse_args()
    left, right, _ = skimage.data.stereo_motorcycle()
    to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).float()[None] / 255  # noqa: E731
    hr = imresize(to_t(right), size=(args.size, args.size)).clamp(0, 1)
    ref = imresize(to_t(left), size=(args.size, args.size)).clamp(0, 1)
    lr = downscale(hr, args.scale).clamp(0, 1)

    def estimate():
        return estimate_geometry(lr, ref)

    estimate()                                          # imports and first-call costs
    geometry_s = _median_time(estimate, args.repeats)
    print(f"geometry estimate: {geometry_s:.3f} s ({estimate().describe()})")
    # Cross-MPI's own reading also tries an affine alignment when the pair is not rectified (its spread
    # across the main direction is over 2 px, as here): the dearer of the two.
    estimate_aligned_geometry(lr, ref)
    aligned_s = _median_time(lambda: estimate_aligned_geometry(lr, ref), args.repeats)
    print(f"with the alignment check: {aligned_s:.3f} s")
    networks = {}
    for name in variants():
        if shipped_weights(name, args.scale) is None:
            continue
        method = load_method(name, args.scale)
        method.forward_options = {"baseline": (1.0, 0.0)} if method.recipe.pair_options is not None else {}
        method(lr, ref)                                 # warm-up
        networks[name] = _median_time(lambda: method(lr, ref), args.repeats)
        print(f"{name:11s} ×{args.scale} on {args.size}×{args.size}: {networks[name]:.2f} s")
    fastest = min(networks, key=networks.get)
    for label, seconds in (("estimate", geometry_s), ("with the alignment check", aligned_s)):
        share = seconds / networks[fastest]
        print(f"{label} / fastest network ({fastest}): {share:.1%}  "
              f"(target ≤ 10 %: {'met' if share <= 0.10 else 'MISSED'})")
    print(f"torch threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
