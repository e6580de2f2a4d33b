"""How much can each network take from a reference? Its real-suite score with a better reference than the pair's.

    python benchmarks/bench_reference_ceiling.py --scale 4
    python benchmarks/bench_reference_ceiling.py --scale 4 --weights crossnetpp=runs/x/best.pt

For every case of the real-pair suite (docs/real-suite.md) each reference-based network runs one pass (no
rematching steps), at its defaults (back-projection, paste gate; no centring shift: the references below
are aligned already), with

* ``own``: the pair's own reference, as ``refsr infer`` gives it (matched, for the networks that match);
* ``guided``: the pair's own reference matched with the ground truth as the guide of the matcher's guided
  iteration (a rematching step with a perfect output as its guide; networks with guided matching only) —
  how far a better guide could take the network, at the guide weight the matcher uses;
* ``aligned``: PatchMatch's pasted reference (its aligned sharp patches before back-projection) — the
  correspondence problem solved as well as our best matcher solves it;
* ``oracle``: the ground truth itself — a perfect, perfectly aligned reference.

A network whose ``oracle`` mean is near PatchMatch's real-reference mean cannot beat PatchMatch by
matching better: its synthesis does not pass a reference's detail through, and only retraining (or more
capacity) moves it. That guide weight was chosen for imperfect guides; a perfect one weighted more gives
more (docs/real-suite.md, "what is left at ×4"). Prints one row per case and the means, PatchMatch's (own
reference) beside them.
"""
from __future__ import annotations

import argparse

import torch

from refsr_cli.bench.real_suite import case_pair, real_cases
from refsr_cli.inference.matched_reference import guided_matching, rematched_reference
from refsr_cli.inference.methods import load_method

NETWORKS = ("crossnet", "crossnetpp", "crossmpi", "refsrnet")
MODES = ("own", "guided", "aligned", "oracle")


def psnr(sr: torch.Tensor, hr: torch.Tensor) -> float:
    return float(-10 * torch.log10(((sr.clamp(0, 1) - hr) ** 2).mean()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--weights", action="append", default=[], metavar="VARIANT=FILE",
                        help="run only these networks, from these checkpoints (repeatable)")
    args = parser.parse_args()
    chosen = dict(item.split("=", 1) for item in args.weights)
    torch.set_num_threads(args.threads)
    cases, missing = real_cases()
    for line in missing:
        print(f"skipped: {line}")
    patchmatch = load_method("patchmatch", args.scale)
    nets = {v: load_method(v, args.scale, weights=chosen.get(v)) for v in (chosen or NETWORKS)}
    for net in nets.values():
        net.given_shift = (0, 0)
    columns = ["patchmatch"] + [f"{v}/{mode}" for v in nets for mode in MODES]
    scores = {c: [] for c in columns}
    print("case".ljust(20) + "".join(c.rjust(20) for c in columns))
    for case in cases:
        name, lr, ref, hr = case_pair(case, args.scale)
        lr, ref, hr = lr[None], ref[None], hr[None]
        sr, aux = patchmatch(lr, ref)
        scores["patchmatch"].append(psnr(sr, hr))
        references = {"own": ref, "guided": ref, "aligned": aux["pasted"].clamp(0, 1), "oracle": hr}
        for variant, net in nets.items():
            for mode in MODES:
                bound = net.bind_pair(lr, references[mode])    # binds the pair for the call below
                if mode == "guided":
                    if not guided_matching(net.model) or net.reference_unmatched:
                        scores[f"{variant}/{mode}"].append(float("nan"))
                        continue
                    bound = rematched_reference(net.model, lr, ref, args.scale, hr)
                out, _ = net(lr, bound)
                scores[f"{variant}/{mode}"].append(psnr(out, hr))
        print(name.ljust(20) + "".join(f"{scores[c][-1]:20.2f}" for c in columns), flush=True)
    print("mean".ljust(20) + "".join(f"{sum(v) / len(v):20.2f}" for v in scores.values()))


if __name__ == "__main__":
    main()
