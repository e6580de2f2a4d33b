"""Widen a Cross-MPI checkpoint's FuseNet without changing what it computes (issue 22's capacity lever).

    python weights/widen_fusenet.py weights/crossmpi_x4.pt runs/widen/crossmpi_x4_fuse32.pt --channels 32 --blocks 4

FuseNet (conv 6→C, B residual blocks, conv C→3, at HR) is the only part of Cross-MPI that makes detail, and
the shipped one (16 channels, 2 blocks) stopped improving on its validation items long before the rest. This
writes a checkpoint with a wider and deeper FuseNet that starts as the same function — the old weights sit
in the first channels, every weight from a new channel into an old one is zero, the added blocks' second
convolutions are zero (identity blocks), and the last convolution reads the new channels with zero weights —
so that `refsr train --init` continues from the shipped network instead of from scratch (the new weights
still get gradients: the new channels' activations are not zero). Everything outside FuseNet is copied.
The script checks the equivalence on a random pair before writing.
"""
from __future__ import annotations

import argparse

import torch

from refsr_cli.archs import build_model
from refsr_cli.archs.checkpoint import load_model, save_checkpoint


def widen(model: torch.nn.Module, channels: int, blocks: int) -> torch.nn.Module:
    """A copy of the Cross-MPI ``model`` with a FuseNet of ``channels`` × ``blocks`` computing the same output."""
    config = dict(model.config)
    c0, b0 = config["fuse_channels"], config["fuse_blocks"]
    if channels < c0 or blocks < b0:
        raise SystemExit(f"widen_fusenet: can only grow FuseNet ({c0} channels, {b0} blocks)")
    torch.manual_seed(0)
    wide = build_model("crossmpi", **{**config, "fuse_channels": channels, "fuse_blocks": blocks})
    old, new = model.state_dict(), wide.state_dict()
    with torch.no_grad():
        for key, value in old.items():
            if not key.startswith("fuse."):
                new[key].copy_(value)

        def embed(key: str) -> None:
            # old weights in the leading channels; no path from a new input channel into an old output
            w, target = old[key], new[key]
            if target.dim() == 4:
                target[: w.shape[0], w.shape[1]:] = 0
                target[: w.shape[0], : w.shape[1]] = w
            else:
                target[: w.shape[0]] = w

        layers = ["fuse.0.0"] + [f"fuse.{i}.{part}" for i in range(1, b0 + 1) for part in ("body.0.0", "body.1")]
        for layer in layers:
            embed(f"{layer}.weight")
            embed(f"{layer}.bias")
        for i in range(b0 + 1, blocks + 1):           # added blocks: identity until trained
            new[f"fuse.{i}.body.1.weight"].zero_()
            new[f"fuse.{i}.body.1.bias"].zero_()
        last_old, last_new = f"fuse.{b0 + 1}", f"fuse.{blocks + 1}"
        new[f"{last_new}.weight"].zero_()
        new[f"{last_new}.weight"][:, :c0] = old[f"{last_old}.weight"]
        new[f"{last_new}.bias"].copy_(old[f"{last_old}.bias"])
    wide.load_state_dict(new)
    return wide.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source")
    parser.add_argument("target")
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--blocks", type=int, default=4)
    args = parser.parse_args()
    model, payload = load_model(args.source)
    if payload["variant"] != "crossmpi":
        raise SystemExit(f"widen_fusenet: {args.source} is a {payload['variant']} checkpoint, not crossmpi")
    wide = widen(model, args.channels, args.blocks)
    scale = int(payload["scale"])
    torch.manual_seed(1)
    lr, ref = torch.rand(1, 3, 24, 32), torch.rand(1, 3, 24 * scale, 32 * scale)
    with torch.no_grad():
        gap = float((model(lr, ref, scale)[0] - wide(lr, ref, scale)[0]).abs().max())
    if gap > 1e-5:
        raise SystemExit(f"widen_fusenet: the widened network differs by {gap:.2e}; nothing written")
    save_checkpoint(args.target, wide, scale, meta={"widened_from": args.source})
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    print(f"{args.target}: FuseNet {model.config['fuse_channels']}×{model.config['fuse_blocks']} → "
          f"{args.channels}×{args.blocks}, parameters {count(model)} → {count(wide)}, max output change {gap:.1e}")


if __name__ == "__main__":
    main()
