"""What averaging buys on the real suite: flipped pairs, flipped matchings, two networks (none is shipped).

    python benchmarks/bench_ensembles.py --scale 4
    python benchmarks/bench_ensembles.py --scale 8 --networks refsrnet,crossmpi

Every case of the real-pair suite (docs/real-suite.md) is super-resolved as ``refsr infer`` does it
(``pair_inference``: first pass and rematching steps) by each network of ``--networks``, and scored:

* ``one``: the network as shipped;
* ``flip2`` / ``flip4``: the mean of its outputs for the pair and its left-right mirror / and its up-down
  and both-ways flips (each output flipped back) — the self-ensemble of the SISR papers, 2× / 4× the time;
* ``paste4``: one pass (no steps) on the mean of the matched references of the four flipped pairs — how
  much of the self-ensemble is the matcher's (networks that match their reference only);

and, with two or more networks, the mean of all their ``one`` outputs and of all their ``flip4`` outputs. Prints the means over the
cases, PatchMatch's beside them.
"""
from __future__ import annotations

import argparse
import statistics

import torch

from refsr_cli.bench.real_suite import case_pair, real_cases
from refsr_cli.inference.footprint import pair_inference
from refsr_cli.inference.matched_reference import reference_matching
from refsr_cli.inference.methods import load_method
from refsr_cli.metrics import psnr

# The four flips of a 1×C×H×W pair: the dims each flips (each is its own inverse).
FLIPS = ((), (-1,), (-2,), (-2, -1))


def _flip(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    return x.flip(dims) if dims else x


def _outputs(method, lr: torch.Tensor, ref: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{"one", "flip2", "flip4"[, "paste4"]}`` → ``1×3×H×W`` outputs of ``method`` for ``(lr, ref)``."""
    flipped = [_flip(pair_inference(method, _flip(lr, d), _flip(ref, d))[0].float(), d).clamp(0, 1) for d in FLIPS]
    out = {"one": flipped[0], "flip2": (flipped[0] + flipped[1]) / 2, "flip4": sum(flipped) / 4}
    if reference_matching(method.model):
        pastes = [_flip(method.bind_pair(_flip(lr, d), _flip(ref, d)).float(), d) for d in FLIPS[1:]]
        bound = method.bind_pair(lr, ref)            # binds the unflipped pair for the call below
        if not method.reference_unmatched:
            bound = (bound.float() + sum(pastes)) / 4
        out["paste4"] = method(lr, bound)[0].float().clamp(0, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=4, choices=(4, 8))
    parser.add_argument("--networks", default="crossmpi,refsrnet", help="comma-separated shipped networks")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    cases, missing = real_cases()
    for line in missing:
        print(f"note: {line}")
    methods = {name: load_method(name, args.scale) for name in args.networks.split(",")}
    patchmatch = load_method("patchmatch", args.scale)
    scores: dict[str, list[float]] = {"patchmatch": []}
    for case in cases:
        name, lr, ref, hr = case_pair(case, args.scale)
        lr, ref, hr = lr[None], ref[None], hr[None]
        scores["patchmatch"].append(psnr(patchmatch(lr, ref)[0].clamp(0, 1), hr))
        kept = {"one": [], "flip4": []}
        for net, method in methods.items():
            for key, sr in _outputs(method, lr, ref).items():
                scores.setdefault(f"{net}/{key}", []).append(psnr(sr, hr))
                if key in kept:
                    kept[key].append(sr)
        for key, outputs in kept.items() if len(methods) > 1 else ():
            scores.setdefault(f"mean of {'+'.join(methods)} ({key})", []).append(psnr(sum(outputs) / len(outputs), hr))
        print(f"{name:20s}" + " ".join(f"{v[-1]:6.2f}" for v in scores.values()), flush=True)
    print(f"{len(cases)} cases ×{args.scale}, mean PSNR (dB):")
    for key, values in scores.items():
        print(f"  {key:36s} {statistics.mean(values):6.2f}")


if __name__ == "__main__":
    main()
