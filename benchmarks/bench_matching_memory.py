"""Peak memory and time of the networks' reference matching (``matched_reference``) on one random pair.

Each measurement runs in a fresh interpreter on one thread and reports the growth of the process's peak
resident memory (``VmHWM``) over one matching of a random ``--hr`` pair, per output megapixel, and its
seconds: the matching is untiled (it must see the whole reference), so this is the part of a matched-reference
network's memory that grows with the output.

    python benchmarks/bench_matching_memory.py --scale 4 --patches 3 --patches 3,5,7
    python benchmarks/bench_matching_memory.py --scale 8 --patches 3 --hr 1280x960
"""
from __future__ import annotations

import argparse
import subprocess
import sys

from refsr_cli.archs import matching_sides
from refsr_cli.errors import RefsrError

_CHILD = r"""
import sys, time, torch
torch.set_num_threads(1)
from refsr_cli.inference.matched_reference import matched_reference
scale, sides, h, w = int(sys.argv[1]), tuple(int(p) for p in sys.argv[2].split(",")), int(sys.argv[3]), int(sys.argv[4])
g = torch.Generator().manual_seed(0)
ref, lr = torch.rand(1, 3, h, w, generator=g), torch.rand(1, 3, h // scale, w // scale, generator=g)
def peak_kib():
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
before, start = peak_kib(), time.perf_counter()
matched_reference(lr, ref, scale, 1, 1, sides)
print(peak_kib() - before, time.perf_counter() - start)
"""


def measure(scale: int, sides: tuple[int, ...], hr: tuple[int, int]) -> tuple[float, float]:
    """(GB per output megapixel, seconds) of one matching in a fresh interpreter."""
    h, w = hr
    out = subprocess.run([sys.executable, "-c", _CHILD, str(scale), ",".join(map(str, sides)), str(h), str(w)],
                         capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]) * 1024 / 1e9 / (h * w / 1e6), float(out[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=4, choices=(4, 8))
    parser.add_argument("--patches", action="append", help="sides in LR pixels, e.g. 3 or 3,5,7 (repeatable)")
    parser.add_argument("--hr", default="960x1280", help="HR size HxW of the random pair (default 960x1280)")
    args = parser.parse_args()
    h, w = (int(v) for v in args.hr.lower().split("x"))
    if h % args.scale or w % args.scale:
        parser.error(f"--hr {args.hr} does not divide by the scale {args.scale}")
    try:
        lists = [matching_sides(p) for p in args.patches or ["3", "3,5,7"]]
    except RefsrError as error:
        parser.error(str(error))
    print(f"one matching of a random {h}x{w} pair at x{args.scale}, one thread, fresh interpreter each")
    for sides in lists:
        gb, seconds = measure(args.scale, sides, (h, w))
        print(f"  sides {','.join(map(str, sides)):<8} {gb:5.2f} GB per output MP   {seconds:6.1f} s")


if __name__ == "__main__":
    main()
