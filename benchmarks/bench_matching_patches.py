"""Which matched-patch sides a reference network should take: each list of sides on the real suite, and on
the tuning pairs when their store is there.

    python benchmarks/bench_matching_patches.py --network crossmpi --scale 4 --patches 3 --patches 3,5,7
    python benchmarks/bench_matching_patches.py --network crossmpi --scale 4 --patches 3,5,7 \\
        --tuning data/extra/train.h5         # + the 80 tuning pairs (docs/video.md: ViSP + Kivy footage)

The shipped network runs as ``refsr infer`` runs it (``pair_inference``: the first pass and the checkpoint's
rematching steps) with its ``matching_patch`` replaced by each ``--patches`` list: one side, or several whose
pastes are blended per pixel by their agreement with the LR (``matched_reference.paste_consensus``). The
tuning pairs are every 35th pair of the store (target frame ``i``, reference ``i + gap``, cropped to a
multiple of 8), the pairs that chose the matcher's settings (docs/real-suite.md, "patch sizes"). Prints
the mean PSNR (dB) of each list and its seconds per pair.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from refsr_cli.archs import matching_sides
from refsr_cli.bench.real_suite import case_pair, real_cases
from refsr_cli.errors import RefsrError
from refsr_cli.inference.footprint import pair_inference
from refsr_cli.inference.methods import load_method
from refsr_cli.metrics import psnr


def tuning_pairs(path: str, scale: int) -> list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``(name, lr, ref, hr)`` for every 35th pair of a ``refsr prepare video`` store."""
    import h5py

    from refsr_cli.data.image_io import array_to_tensor
    from refsr_cli.ops.resize import downscale

    pairs = []
    with h5py.File(path, "r") as store:
        for clip_id, i, gap in store["pairs"][::35]:
            clip = store["clips"][f"{clip_id:05d}"]
            target, other = clip[i], clip[i + gap]
            h, w = target.shape[0] // 8 * 8, target.shape[1] // 8 * 8
            hr, ref = array_to_tensor(target[:h, :w]), array_to_tensor(other[:h, :w])
            pairs.append((f"{clip_id}/{i}+{gap}", downscale(hr, scale).clamp(0, 1), ref, hr))
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--network", default="crossmpi")
    parser.add_argument("--scale", type=int, default=4, choices=(4, 8))
    parser.add_argument("--patches", action="append", required=True, help="sides in LR px, e.g. 3 or 3,5,7")
    parser.add_argument("--tuning", default=None, help="a refsr prepare video store (HDF5) to draw the tuning pairs from")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    try:
        lists = {text: matching_sides(text) for text in args.patches}
    except RefsrError as exc:
        parser.error(str(exc))
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    method = load_method(args.network, args.scale)
    sets = {"suite": [case_pair(case, args.scale) for case in real_cases()[0]]}
    if args.tuning:
        sets["tuning"] = tuning_pairs(args.tuning, args.scale)
    for sides, parsed in lists.items():
        method.model.matching_patch = parsed
        for label, pairs in sets.items():
            start, scores = time.perf_counter(), []
            for _, lr, ref, hr in pairs:
                scores.append(psnr(pair_inference(method, lr[None], ref[None])[0].float().clamp(0, 1), hr[None]))
            seconds = (time.perf_counter() - start) / len(pairs)
            print(f"{args.network} ×{args.scale} patches {sides:10s} {label:6s} ({len(pairs)} pairs): "
                  f"{statistics.mean(scores):.2f} dB, {seconds:.2f} s per pair", flush=True)


if __name__ == "__main__":
    main()
