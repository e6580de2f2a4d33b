"""Speed and realism of the procedural light fields (refsr_cli/prepare/synthetic.py).

    python benchmarks/bench_synthetic.py [--count 12] [--timing-runs 5]

1. Time per 8×8×320×512 light field on one core (``torch.set_num_threads(1)``): CPU seconds of this
   process (what one core costs, robust to other load on the machine) and wall seconds.
2. Statistics of synthetic vs real test images, the check asked for by docs/design.md §3:
   - bicubic ×4 PSNR (RGB, whole image): HR = view (1,1) of a synthetic light field, LR =
     ``downscale(HR, 4)``, SR = ``upscale(LR, 4)``; the same on real images;
   - gradient statistics of the HR grey image (mean of RGB, 8-bit units, forward differences):
     mean |∇|, fraction of near-flat pixels (|∇| < 2 levels), excess kurtosis of ∂x.
   Real sets: ``stereo_motorcycle`` (a real stereo capture; never used as a texture) — five 320×512
   crops of each view — and three of scikit-image's photos at native size (these are also texture
   sources, so they only show the range of natural photos).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch
from scipy.stats import kurtosis

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from refsr_cli.ops.resize import downscale, upscale  # noqa: E402
from refsr_cli.prepare.synthetic import render_light_field  # noqa: E402


def image_stats(image: np.ndarray) -> dict:
    """Bicubic ×4 PSNR and gradient statistics of an ``H×W×3`` uint8 image (H, W multiples of 4)."""
    hr = torch.from_numpy(image.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    sr = upscale(downscale(hr, 4), 4).clamp(0, 1)
    psnr = 10 * np.log10(1.0 / ((sr - hr) ** 2).mean().item())
    grey = image.astype(np.float64).mean(axis=2)
    gx = np.diff(grey, axis=1)[:-1]
    gy = np.diff(grey, axis=0)[:, :-1]
    mag = np.hypot(gx, gy)
    return {"psnr": psnr, "grad": mag.mean(), "flat": (mag < 2).mean(), "kurt": kurtosis(gx.ravel())}


def real_images() -> dict[str, list[np.ndarray]]:
    import skimage.data

    left, right, _ = skimage.data.stereo_motorcycle()
    crops = [(0, 0), (180, 0), (0, 228), (180, 228), (90, 114)]
    moto = [im[y:y + 320, x:x + 512] for im in (left, right) for (y, x) in crops]
    photos = []
    for name in ("astronaut", "coffee", "chelsea"):
        im = getattr(skimage.data, name)()
        photos.append(im[: im.shape[0] // 4 * 4, : im.shape[1] // 4 * 4])
    return {"real: stereo_motorcycle crops": moto, "real: photos (texture sources)": photos}


def summarise(label: str, stats: list[dict]) -> str:
    def ms(key: str) -> str:
        v = np.array([s[key] for s in stats])
        return f"{v.mean():6.2f} ± {v.std():5.2f}"

    return f"| {label} | {len(stats)} | {ms('psnr')} | {ms('grad')} | {ms('flat')} | {ms('kurt')} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=12, help="synthetic light fields for the statistics")
    parser.add_argument("--timing-runs", type=int, default=5)
    parser.add_argument("--max-disparity", type=float, default=20.0)
    args = parser.parse_args()
    torch.set_num_threads(1)

    render_light_field(10_000, max_disparity=args.max_disparity)     # load and cache the sources
    cpu, wall = [], []
    for seed in range(args.timing_runs):
        c0, w0 = time.process_time(), time.perf_counter()
        render_light_field(20_000 + seed, max_disparity=args.max_disparity)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    print(f"time per 8×8×320×512 light field, 1 thread, {args.timing_runs} runs: "
          f"CPU {np.median(cpu):.2f} s median (max {max(cpu):.2f}), wall {np.median(wall):.2f} s median")

    synthetic = []
    for seed in range(args.count):
        views = render_light_field(seed, max_disparity=args.max_disparity)
        synthetic.append(image_stats(views[1, 1]))
    print()
    print("| set | n | bicubic ×4 PSNR (dB) | mean abs grad (8-bit) | flat fraction (abs grad < 2) | kurtosis of dx |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(summarise(f"synthetic view (1,1), seeds 0–{args.count - 1}", synthetic))
    for label, images in real_images().items():
        print(summarise(label, [image_stats(im) for im in images]))


if __name__ == "__main__":
    main()
