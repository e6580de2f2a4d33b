"""What the matched reference and the paste gate give a network on the real-pair suite (issue 22's ablation).

For each shipped network trained on matched references (``reference_matching`` in its card) and each
case of the real-pair suite (``refsr_cli.bench.real_suite``), the network runs three ways, all with its
two back-projection rounds:

* ``former``: the reference matched as before 2026-12-07 (2 iterations of random-start RGB PatchMatch, the
  baseline's own search), no paste gate;
* ``matcher``: the reference matched as the checkpoint says (``reference_for_network``: block matching
  refined by its iterations of luma PatchMatch, the last ``guided_matching`` of them guided), no paste gate;
* ``one-pass``: the matcher before guided matching (the same iterations, none guided), with the paste gate;
* ``gated``: as ``refsr infer`` runs it (the checkpoint's matcher and the paste gate).

Prints the PSNR per case and the means, with PatchMatch (the baseline, 5 iterations), and the seconds the
former, the one-pass and the checkpoint's matching alone took over the suite (cores shared with nothing
else, or the times mean little).

    python benchmarks/bench_matched_reference.py --scale 4
    python benchmarks/bench_matched_reference.py --scale 8 --networks crossmpi
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from refsr_cli.archs.checkpoint import shipped_weights
from refsr_cli.bench.real_suite import case_pair, real_cases
from refsr_cli.inference.baselines.patchmatch import patchmatch
from refsr_cli.inference.matched_reference import matched_reference, reference_for_network, reference_matching
from refsr_cli.inference.methods import load_method
from refsr_cli.metrics import psnr


def _former_matching(lr: torch.Tensor, ref: torch.Tensor, scale: int) -> torch.Tensor:
    return patchmatch(lr, ref, scale, iterations=2, backproject=0)[1]["pasted"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=4, choices=(4, 8))
    parser.add_argument("--networks", default="crossmpi,crossnet,crossnetpp,refsrnet",
                        help="comma-separated variants with shipped matched-reference weights")
    args = parser.parse_args()
    s = args.scale
    cases = [case_pair(case, s) for case in real_cases()[0]]
    pm = [psnr(patchmatch(lr[None], ref[None], s)[0][0], hr) for _, lr, ref, hr in cases]
    print(f"×{s} patchmatch mean {statistics.mean(pm):.2f} dB")
    for name in args.networks.split(","):
        if shipped_weights(name, s) is None:
            raise SystemExit(f"no shipped {name} ×{s}")
        method = load_method(name, s)
        if not reference_matching(method.model):
            raise SystemExit(f"{name} ×{s} does not take a matched reference (no reference_matching in its card)")
        rows = {"former": [], "matcher": [], "one-pass": [], "gated": []}
        seconds = {"former": 0.0, "one-pass": 0.0, "matcher": 0.0}
        iterations = reference_matching(method.model)
        matchers = (("former", _former_matching),
                    ("one-pass", lambda a, b, c: matched_reference(a, b, c, iterations)),
                    ("matcher", lambda a, b, c: reference_for_network(method.model, a, b, c)))
        for case_name, lr, ref, hr in cases:
            lr, ref = lr[None], ref[None]
            method.bind_pair(lr, ref)                   # sets reference_unmatched (another scene: MDSR)
            matched = {}
            for matcher, fn in matchers:
                start = time.perf_counter()
                matched[matcher] = ref if method.reference_unmatched else fn(lr, ref, s)
                seconds[matcher] += time.perf_counter() - start
            for way in rows:
                method.paste_gate = way in ("one-pass", "gated")
                sr, _ = method(lr, matched[way if way in matched else "matcher"])
                rows[way].append(psnr(sr[0].clamp(0, 1), hr))
            print(f"  {name} {case_name:18s} " + "  ".join(f"{w} {v[-1]:.2f}" for w, v in rows.items())
                  + f"  patchmatch {pm[len(rows['gated']) - 1]:.2f}", flush=True)
        print(f"×{s} {name} mean: " + "  ".join(f"{w} {statistics.mean(v):.2f} dB" for w, v in rows.items())
              + "; matching alone: " + ", ".join(f"{w} {t:.1f} s" for w, t in seconds.items()))


if __name__ == "__main__":
    main()
