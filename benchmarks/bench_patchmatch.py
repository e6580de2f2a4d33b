"""Benchmark of the PatchMatch baseline: speed at 320×512 ×8 and PSNR against bicubic at ×4 and ×8.

    python benchmarks/bench_patchmatch.py                 # all of it
    python benchmarks/bench_patchmatch.py --pairs 4 --threads 2 --skip-speed

Pairs: views (0,0) → (1,1) of procedural light fields (``refsr_cli.prepare.synthetic.render_light_field``).
Ref = view (0,0), HR = view (1,1), LR = downscale(HR, s); PSNR on RGB in [0, 1], whole image (docs/design.md §5).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from refsr_cli.inference.baselines import bicubic, patchmatch  # noqa: E402
from refsr_cli.metrics import psnr  # noqa: E402
from refsr_cli.ops.resize import downscale  # noqa: E402

H, W = 320, 512


def _to_tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).float().div(255).unsqueeze(0)


def light_field_pairs(count: int) -> tuple[str, list[tuple[torch.Tensor, torch.Tensor]]]:
    """``(description, [(ref, hr), …])``: ``1×3×320×512`` views (0,0) and (1,1)."""
    from refsr_cli.prepare.synthetic import render_light_field

    pairs = []
    for seed in range(count):
        lf = render_light_field(seed, height=H, width=W, max_disparity=20.0)
        pairs.append((_to_tensor(lf[0, 0]), _to_tensor(lf[1, 1])))
    return f"refsr_cli.prepare.synthetic.render_light_field seeds 0..{count - 1}, views (0,0)->(1,1)", pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=4, help="light-field pairs per scale")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}")

    source, pairs = light_field_pairs(args.pairs)
    print(f"data: {source}")
    if not args.skip_speed:
        ref, hr = (t.to(device) for t in pairs[0])
        lr = downscale(hr, 8)
        patchmatch(lr, ref, 8)                                # warm-up (allocations, caches)
        times = []
        for _ in range(3):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            patchmatch(lr, ref, 8)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        print(f"speed: patchmatch x8, output {H}x{W} (LR {H // 8}x{W // 8}): "
              f"median {np.median(times):.2f} s/image (runs: {', '.join(f'{t:.2f}' for t in times)})")
    if not args.skip_quality:
        for scale in (4, 8):
            rows = []
            for ref, hr in pairs:
                ref, hr = ref.to(device), hr.to(device)
                lr = downscale(hr, scale)
                sr_b, _ = bicubic(lr, ref, scale)
                sr_p, _ = patchmatch(lr, ref, scale)
                rows.append((psnr(sr_b[0], hr[0]), psnr(sr_p[0], hr[0])))
            b, p = np.mean(rows, axis=0)
            per = "; ".join(f"{x:.2f}/{y:.2f}" for x, y in rows)
            print(f"x{scale}: PSNR bicubic {b:.2f} dB, patchmatch {p:.2f} dB, gain {p - b:+.2f} dB "
                  f"(per pair bicubic/patchmatch: {per})")


if __name__ == "__main__":
    main()
