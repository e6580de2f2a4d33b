"""Export a trained run as a shipped checkpoint with its model card (weights/train.sh calls this).

    python weights/export.py VARIANT SCALE RUN [--earlier RUN_OR_CARD ...] [--wall SECONDS] [--threads N] [--float32]
                             [--rematch STEP,...] [--matching-patch P,...] [--out DIR]

RUN is the run folder of the last training stage; its best checkpoint by validation PSNR (else its
latest) becomes ``DIR/VARIANT_xSCALE.pt`` (float16 unless --float32; DIR defaults to weights/) and the
card ``DIR/VARIANT_xSCALE.json``. Each --earlier names an earlier stage, oldest first: its run folder, or
the card of a checkpoint the last stage started from when that run folder is gone (the card keeps that
stage's record). --rematch sets the checkpoint's rematching steps (``[model] rematch``, weight-free),
chosen after training on the tuning pairs (docs/real-suite.md, "rematching"); --matching-patch the sides
of the matched patches (``[model] matching_patch``, weight-free; several: their pastes are blended), chosen
the same way (docs/real-suite.md, "patch sizes").
"""
import argparse
import json
import platform
from pathlib import Path

import torch

from refsr_cli.archs import MATCHING_PATCH, REMATCH, matching_sides
from refsr_cli.archs.checkpoint import export_checkpoint, read_checkpoint
from refsr_cli.errors import RefsrError
from refsr_cli.training.plateau import CONVERGED, PlateauRule
from refsr_cli.training.loop import read_log

WEIGHTS = Path(__file__).resolve().parent


def _source(run: Path) -> Path:
    return run / "best.pt" if (run / "best.pt").exists() else run / "model.pt"


def stage_record(where: Path) -> dict:
    """One training stage: where it ran, its configuration, the iteration of the checkpoint it passed on,
    and its validation curve."""
    if where.suffix == ".json":  # the card of an earlier export
        card = json.loads(where.read_text())
        if card.get("stages"):
            return {"from_card": where.name, "stages": card["stages"]}
        return {"from_card": where.name, "iterations": card["iterations"],
                "wall_seconds": card.get("wall_seconds_last_call"), "train_config": card["train_config"],
                "val_psnr_history": card.get("val_psnr_history", [])}
    records = read_log(where)
    meta = read_checkpoint(_source(where))["meta"]
    return {"run": str(where), "iterations": meta["iterations"], "train_config": json.loads(meta["train_config"]),
            "val_psnr_history": [[r["iter"], round(r["val_psnr"], 3)] for r in records if "val_psnr" in r],
            "converged": any(r.get("plateau") == CONVERGED for r in records)}


SYNTHETIC = "refsr prepare synthetic --out data/weights-syn --count 32 --test-count 4 --seed 1 --disparity"
VIDEO = "refsr prepare video builtin --out data/video"


def data_commands(stages: list[dict]) -> str:
    """The commands that make the stores every stage trained on (the synthetic light fields, and the real
    footage of the real-pair stage)."""
    stores = [str(d) for stage in stages for d in stage["train_config"].get("data", [])]
    return SYNTHETIC + (f"; {VIDEO}" if any(d.startswith("data/video") for d in stores) else "")


def flatten(records: list[dict]) -> list[dict]:
    out = []
    for record in records:
        out.extend(record["stages"] if "stages" in record else [record])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variant")
    parser.add_argument("scale", type=int)
    parser.add_argument("run", type=Path)
    parser.add_argument("--earlier", type=Path, action="append", default=[])
    parser.add_argument("--wall", type=int, default=None, help="wall seconds of this weights/train.sh call")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads the last stage trained with (default: this process's; runs trained "
                             "side by side with OMP_NUM_THREADS=1 say 1)")
    parser.add_argument("--float32", action="store_true")
    parser.add_argument("--rematch", default=None,
                        help="rematching steps after the first pass, comma-separated: network, gate")
    parser.add_argument("--matching-patch", default=None,
                        help="sides in LR pixels of the matched patches, comma-separated (several: blended)")
    parser.add_argument("--out", type=Path, default=WEIGHTS)
    args = parser.parse_args()

    stages = flatten([stage_record(p) for p in args.earlier] + [stage_record(args.run)])
    last = stages[-1]
    history = last["val_psnr_history"]
    rule = PlateauRule.from_config(last["train_config"].get("plateau"))
    card = {"command": f"weights/train.sh {args.variant} {args.scale}",
            "data": data_commands(stages),
            "hardware": f"CPU ({platform.processor() or platform.machine()}), {args.threads or torch.get_num_threads()} torch threads",
            "wall_seconds_last_call": args.wall, "source_checkpoint": _source(args.run).name,
            # Every stage's checkpoint is the next one's start, so the iterations add up.
            "total_iterations": sum(s["iterations"] for s in stages),
            "stages": stages,
            "val_psnr_history": history,
            # Converged under the run's [plateau] rule, or still rising at its last validation.
            "converged": last.get("converged", False),
            "convergence_rule": rule.describe() if rule else None,
            "still_improving_at_end": len(history) >= 2 and history[-1][1] > max(v for _, v in history[:-1]),
            "size": ("CPU-sized configuration of the published architecture (see train_config.model and "
                     "weights/README.md), not the paper size: no GPU was available to train it")}
    config = {}
    if args.rematch:
        config[REMATCH] = args.rematch.split(",")
        card["rematch_chosen"] = ("after training, on 80 real pairs neither the bench nor the networks saw "
                                  "(docs/real-suite.md, \"rematching\")")
    if args.matching_patch:
        try:
            config[MATCHING_PATCH] = list(matching_sides(args.matching_patch))
        except RefsrError as exc:
            raise SystemExit(f"export.py: --matching-patch: {exc}") from None
        card["matching_patch_chosen"] = ("after training, on 80 real pairs neither the bench nor the networks "
                                         "saw (docs/real-suite.md, \"patch sizes\")")
    try:
        print(export_checkpoint(_source(args.run), args.out / f"{args.variant}_x{args.scale}.pt",
                                half=not args.float32, card=card, config=config))
    except RefsrError as exc:
        raise SystemExit(f"export.py: {args.run}: {exc}") from None


if __name__ == "__main__":
    main()
