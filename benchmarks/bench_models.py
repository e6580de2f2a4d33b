"""Model benchmark: paper-size parameter counts vs the published numbers, and CrossNet inference efficiency.

    python benchmarks/bench_models.py                       # params + CrossNet on a 320×512 pair, CPU fp32
    python benchmarks/bench_models.py --params-only
    python benchmarks/bench_models.py --device cuda --half  # GPU, float16 weights and activations
    python benchmarks/bench_models.py --json out.json

Efficiency: the model's GFLOPs per image are counted with ``torch.utils.flop_counter.FlopCounterMode``
(convolutions, transposed convolutions and matmuls; 1 multiply-add = 2 FLOPs; grid_sample and element-wise
ops are not counted, so the ratio slightly *understates* the work done). Seconds per image are the median
over ``--repeats`` timed forward passes (``inference_mode``, ``channels_last``) after a warm-up. The
reference is an ``n×n @ n×n`` matrix multiply in the same dtype, timed in the same run, *interleaved* with the
model runs so that both see the same machine load (the CI box is shared); the reported ratio is the median of
per-repeat ratios ``(model GFLOP/s) / (matmul GFLOP/s)``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from refsr_cli.archs import build_model, count_parameters  # noqa: E402

# Published sizes (docs/design.md §4): CrossNet 35.2 M, CrossNet++ ≈ 69.0 M, MDSR (×2/×3/×4) 7.95 M.
PUBLISHED = {"crossnet": 35.2e6, "crossnetpp": 69.0e6, "mdsr": 7.95e6}


def paper_parameters() -> list[dict]:
    """Paper-size parameter counts (built on the meta device: no memory, no init) vs published."""
    rows = []
    with torch.device("meta"):
        for name, config, published, note in (
                ("crossnet", {}, PUBLISHED["crossnet"], "two encoders, bicubic LR↑"),
                ("crossnet", {"sisr": "mdsr"}, None, "with embedded MDSR (×2/3/4/8) as SISR"),
                ("crossnetpp", {}, PUBLISHED["crossnetpp"], "two FlowNetS+, shared encoder"),
                ("mdsr", {"scales": [2, 3, 4]}, PUBLISHED["mdsr"], "80 blocks × 64, ×2/×3/×4 heads"),
                ("mdsr", {}, None, "with the ×8 path")):
            model = build_model(name, **config)
            n = count_parameters(model)
            rows.append({"variant": name, "config": config, "params": n, "published": published,
                         "ratio": (n / published) if published else None, "note": note,
                         "breakdown": model.parameter_breakdown()})
    return rows


def count_flops(model, inputs) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(*inputs)
    return int(counter.get_total_flops())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def efficiency(variant: str, height: int, width: int, scale: int, device: str, half: bool, repeats: int,
               matmul_n: int, config: dict | None = None) -> dict:
    device = torch.device(device)
    dtype = torch.float16 if half else torch.float32
    torch.manual_seed(0)
    model = build_model(variant, **(config or {})).eval().to(device=device, dtype=dtype,
                                                             memory_format=torch.channels_last)
    lr = torch.rand(1, 3, height // scale, width // scale, device=device, dtype=dtype)
    ref = torch.rand(1, 3, height, width, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    lr = lr.contiguous(memory_format=torch.channels_last)
    flops = count_flops(model, (lr, ref, scale))
    a = torch.randn(matmul_n, matmul_n, device=device, dtype=dtype)
    b = torch.randn(matmul_n, matmul_n, device=device, dtype=dtype)
    mm_flops = 2 * matmul_n ** 3

    def run_model() -> float:
        _sync(device)
        t = time.perf_counter()
        with torch.inference_mode():
            model(lr, ref, scale)
        _sync(device)
        return time.perf_counter() - t

    def run_matmul() -> float:
        _sync(device)
        t = time.perf_counter()
        for _ in range(3):
            torch.mm(a, b)
        _sync(device)
        return (time.perf_counter() - t) / 3

    run_model()
    run_matmul()                                  # warm-up (oneDNN primitive creation, caches)
    model_s, mm_s, ratios = [], [], []
    for _ in range(repeats):
        tm = run_matmul()
        ts = run_model()
        model_s.append(ts)
        mm_s.append(tm)
        ratios.append((flops / ts) / (mm_flops / tm))
    sec = statistics.median(model_s)
    return {"variant": variant, "config": config or {}, "size": [height, width], "scale": scale,
            "device": str(device), "dtype": str(dtype).replace("torch.", ""), "threads": torch.get_num_threads(),
            "gflops": flops / 1e9, "seconds_per_image": sec, "gflops_per_s": flops / 1e9 / sec,
            "matmul_n": matmul_n, "matmul_gflops_per_s": mm_flops / 1e9 / statistics.median(mm_s),
            "ratio_to_matmul": statistics.median(ratios), "ratios": ratios, "seconds": model_s}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="crossnet")
    parser.add_argument("--size", default="320x512", help="HR size HxW of the pair (LR is size/scale)")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--half", action="store_true", help="float16 weights and activations (GPU)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--matmul-n", type=int, default=2048, help="size of the reference n×n matmul")
    parser.add_argument("--width", type=float, default=None, help="FlowNet width multiplier (default: paper)")
    parser.add_argument("--params-only", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write all figures to this JSON file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    result: dict = {"params": paper_parameters()}
    print("Paper-size parameter counts")
    for row in result["params"]:
        pub = f"{row['published'] / 1e6:6.2f} M  ratio {row['ratio']:.4f}" if row["published"] else " " * 22
        print(f"  {row['variant']:<11} {row['params']:>12,d}  published {pub}  ({row['note']})")
    mdsr3, mdsr4 = result["params"][3]["params"], result["params"][4]["params"]
    print(f"  MDSR ×8 path adds {mdsr4 - mdsr3:,d} parameters")

    if not args.params_only:
        h, w = (int(v) for v in args.size.lower().split("x"))
        config = {"width": args.width} if args.width else None
        eff = efficiency(args.variant, h, w, args.scale, args.device, args.half, args.repeats, args.matmul_n,
                         config)
        result["efficiency"] = eff
        print(f"\n{args.variant} inference on a {h}×{w} pair (×{args.scale}), {eff['device']} {eff['dtype']}, "
              f"{eff['threads']} threads, channels_last")
        print(f"  GFLOPs per image        {eff['gflops']:.1f}")
        print(f"  seconds per image       {eff['seconds_per_image']:.3f}  (median of {args.repeats})")
        print(f"  achieved GFLOP/s        {eff['gflops_per_s']:.1f}")
        print(f"  fp matmul {args.matmul_n}³ GFLOP/s {eff['matmul_gflops_per_s']:.1f}")
        print(f"  ratio to matmul         {eff['ratio_to_matmul']:.2f}  (per repeat: "
              + ", ".join(f"{r:.2f}" for r in eff["ratios"]) + ")")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
