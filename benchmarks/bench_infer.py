"""Benchmarks of `refsr infer` (issue 6): peak memory of a large tiled run, and seams/cost of tiling.

Usage::

    python benchmarks/bench_infer.py seams              # tiled vs whole image, 512×768 output
    python benchmarks/bench_infer.py memory --lr 1000x1500 --method buffers    # buffers at full size
    python benchmarks/bench_infer.py memory --lr 240x240 --method crossnet     # one 512-px tile's network
    python benchmarks/bench_infer.py all                # the three above, JSON summary on stdout

Memory is the peak resident set size (its own ``VmHWM`` from ``/proc/self/status``) of a separate
process running the pipeline `refsr infer` runs (discover → load_method → infer_pairs) on real PNG
files — not a model of it. The network is the paper-size CrossNet (35.6 M parameters) with random
weights (seeded): memory and time do not depend on the weight values; the seam PSNR does somewhat,
so it is reported as measured with these weights.

A paper-size CrossNet pass over a 4000×6000 output is 126 tiles of 512×512; on a shared 2-core CPU one
tile takes ~30 s, so the full run takes about an hour. ``memory --lr 1000x1500 --method crossnet`` does
exactly that when you have the time; ``all`` instead bounds it by two runs that each take minutes:
the full-size run with the "buffers" method (bicubic made to read and carry the reference like a
network) measures every buffer that grows with the image (inputs, the blended output, quantisation,
PNG encoding), and a 960×960-output CrossNet run (four full 512×512 tiles) measures what the network
adds (weights + one tile's activations) over the bare interpreter. Tiles run one after another and
free their tensors, so the full CrossNet run's peak is at most
``peak(full-size buffers run) + peak(CrossNet 960×960 run) − baseline(interpreter)``
(conservative: it also counts the small run's own image buffers twice).
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from refsr_cli.archs import checkpoint  # noqa: E402
from refsr_cli.archs import build_model  # noqa: E402
from refsr_cli.data.image_io import write_image  # noqa: E402
from refsr_cli.inference.methods import Method  # noqa: E402
from refsr_cli.ops.resize import downscale, imresize  # noqa: E402
from refsr_cli.inference.tiling import tiled_inference  # noqa: E402
from refsr_cli.ops.warp import shift  # noqa: E402


def _scene(height: int, width: int) -> torch.Tensor:
    """A natural-looking ``1×3×H×W`` image of any size: scikit-image's astronaut, resized."""
    import skimage.data

    base = torch.from_numpy(skimage.data.astronaut()).permute(2, 0, 1).float().div(255)[None]
    return imresize(base, size=(height, width)).clamp(0, 1)


def _make_pair(folder: Path, lr_h: int, lr_w: int, scale: int = 4) -> None:
    hr = _scene(lr_h * scale, lr_w * scale)
    ref = shift(hr, 6.0, 3.0)                   # a reference with some parallax
    lr = downscale(hr, scale)
    del hr
    write_image(folder / "bench_lr.png", lr[0])
    write_image(folder / "bench_ref.png", ref[0])


def _weights(folder: Path, variant: str) -> Path:
    torch.manual_seed(0)
    return checkpoint.save_checkpoint(folder / f"{variant}_x4.pt", build_model(variant), 4)


def _rss_mib(command: list[str]) -> tuple[float, float, int]:
    """Run ``command`` (one of the ``_CHILD`` scripts); returns (peak RSS MiB, wall seconds, exit status).

    The child reports its own ``VmHWM`` (peak resident set of its address space) from
    ``/proc/self/status``: ``ru_maxrss`` from ``wait4`` is not usable here because Linux carries the
    parent's high-water mark into a forked child across ``exec``, and this parent holds large images.
    """
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
    peak_kib = next((float(line.split()[1]) for line in proc.stdout.splitlines() if line.startswith("VmHWM")), math.nan)
    return peak_kib / 1024.0, seconds, proc.returncode


# The measured process: exactly what `refsr infer` runs (discover → load_method → infer_pairs).
# "buffers" is the bicubic baseline made to read and carry the reference like a RefSR network, so the
# run holds every image-sized buffer a network run holds, without the network.
_CHILD = r"""
import atexit, sys
atexit.register(lambda: print(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")), end=""))
from refsr_cli import console
from refsr_cli.inference.pipeline import infer_pairs
from refsr_cli.inference.methods import Method, load_method
from refsr_cli.data.pairs import discover_pairs
from refsr_cli.archs import variants
variants()
if sys.argv[1] == "baseline":
    sys.exit(0)
source, out, method, weights, tile, overlap = sys.argv[1:7]
console.set_quiet(True)
if method == "buffers":
    from refsr_cli.inference.baselines import bicubic
    runner = Method("buffers", 4, lambda lr, ref, s: bicubic(lr, None, s), 1, True, "cpu")
else:
    runner = load_method(method, 4, weights=None if weights == "None" else weights, device="cpu")
results = infer_pairs(discover_pairs(source), out, runner, tile=int(tile), overlap=int(overlap))
sys.exit(0 if all(r.ok for r in results) else 1)
"""


def bench_memory(lr_size: tuple[int, int], method: str, tile: int = 512, overlap: int = 64) -> dict:
    """Peak RSS of ``refsr infer`` on one generated pair of the given LR size at ×4."""
    with tempfile.TemporaryDirectory(prefix="bench-infer-") as tmp:
        tmp = Path(tmp)
        (tmp / "pairs").mkdir()
        _make_pair(tmp / "pairs", *lr_size)
        weights = None if method in ("bicubic", "buffers") else str(_weights(tmp, method))
        args = [sys.executable, "-c", _CHILD, str(tmp / "pairs"), str(tmp / "out"), method, str(weights),
                str(tile), str(overlap)]
        baseline, _, _ = _rss_mib([sys.executable, "-c", _CHILD, "baseline"])
        peak, seconds, status = _rss_mib(args)
        ok = status == 0 and (tmp / "out" / "bench_sr.png").is_file()
    h, w = lr_size
    return {"method": method, "lr": f"{h}x{w}", "output": f"{4 * h}x{4 * w}", "tile": tile, "overlap": overlap,
            "peak_rss_mib": round(peak, 1), "interpreter_baseline_mib": round(baseline, 1),
            "seconds": round(seconds, 1), "ok": ok}


def bench_seams(variant: str = "crossnet", repeats: int = 2, tile: int = 512, overlap: int = 64,
                weights: Path | None = None) -> dict:
    """Tiled vs whole-image output of one network on a 512×768 output: PSNR between them and time ratio.

    Also reported, so that the seam PSNR can be judged: how far the network's output is from plain
    bicubic (a random network that barely changes LR↑ would show no seams trivially), and the PSNR
    between the tiled and whole-image warped references (``aux["warped"]``, driven by the flow).
    """
    from refsr_cli.inference.methods import load_method
    from refsr_cli.ops.resize import upscale

    torch.manual_seed(0)
    if weights is not None:
        method = load_method(None, 4, weights=weights, device="cpu")
        variant = method.name
    else:
        method = Method.from_model(build_model(variant), scale=4, device="cpu")
    hr = _scene(512, 768)
    lr, ref = downscale(hr, 4), shift(hr, 6.0, 3.0)
    whole_times, tiled_times = [], []
    whole = tiled = None
    for _ in range(repeats):  # alternate so that load changes on a shared machine hit both alike
        start = time.perf_counter()
        whole, aux_whole = tiled_inference(method, lr, ref, 4, tile=0, aux_keys=("warped",))
        whole_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        tiled, aux_tiled = tiled_inference(method, lr, ref, 4, tile=tile, overlap=overlap, aux_keys=("warped",))
        tiled_times.append(time.perf_counter() - start)
    mse = float(((whole - tiled) ** 2).mean())

    def psnr(a, b):
        err = float(((a - b) ** 2).mean())
        return round(10 * math.log10(1 / err), 2) if err > 0 else math.inf

    extra = {"weights": str(weights) if weights else "random (seed 0)",
             "psnr_whole_vs_bicubic_db": psnr(whole, upscale(lr, 4).clamp(0, 1))}
    if "warped" in aux_whole and "warped" in aux_tiled:
        extra["psnr_warped_tiled_vs_whole_db"] = psnr(aux_whole["warped"], aux_tiled["warped"])
    return {"variant": variant, "output": "512x768", "tile": tile, "overlap": overlap, **extra,
            "psnr_tiled_vs_whole_db": round(10 * math.log10(1 / mse), 2) if mse > 0 else math.inf,
            "max_abs_difference": float((whole - tiled).abs().max()),
            "psnr_vs_hr_whole_db": round(10 * math.log10(1 / float(((whole - hr) ** 2).mean())), 2),
            "whole_seconds": [round(t, 2) for t in whole_times], "tiled_seconds": [round(t, 2) for t in tiled_times],
            "time_ratio": round(min(tiled_times) / min(whole_times), 3), "threads": torch.get_num_threads()}


def _size(text: str) -> tuple[int, int]:
    h, w = text.lower().split("x")
    return int(h), int(w)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("seams")
    p.add_argument("--variant", default="crossnet")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--overlap", type=int, default=64)
    p.add_argument("--weights", type=Path, default=None, help="a trained checkpoint (default: random weights)")
    p = sub.add_parser("memory")
    p.add_argument("--lr", type=_size, default=(1000, 1500))
    p.add_argument("--method", default="crossnet")
    p.add_argument("--tile", type=int, default=512)
    p = sub.add_parser("all")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON summary here")
    args = parser.parse_args()

    if args.what == "seams":
        result = bench_seams(args.variant, args.repeats, args.tile, args.overlap, args.weights)
    elif args.what == "memory":
        result = bench_memory(args.lr, args.method, args.tile)
    else:
        full = bench_memory((1000, 1500), "buffers")
        print(json.dumps(full), file=sys.stderr)
        tile_run = bench_memory((240, 240), "crossnet")
        print(json.dumps(tile_run), file=sys.stderr)
        small_buffers = bench_memory((240, 240), "buffers")
        print(json.dumps(small_buffers), file=sys.stderr)
        seams = bench_seams()
        # Bound: full-size buffers + everything the small CrossNet run holds beyond the bare interpreter.
        network_extra = tile_run["peak_rss_mib"] - tile_run["interpreter_baseline_mib"]
        bound = full["peak_rss_mib"] + network_extra
        result = {"memory_full_size_buffers": full, "memory_crossnet_960x960": tile_run,
                  "memory_buffers_960x960": small_buffers,
                  "crossnet_1000x1500_x4_peak_bound_mib": round(bound, 1),
                  "memory_target_mib": 4096, "memory_ok": bound <= 4096,
                  "seams": seams, "seam_ok": seams["psnr_tiled_vs_whole_db"] >= 45,
                  "time_ok": seams["time_ratio"] <= 1.3}
        if args.out:
            args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
