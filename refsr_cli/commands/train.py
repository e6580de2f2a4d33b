"""`refsr train` — thin wrapper over :func:`refsr_cli.training.loop.train`."""
from __future__ import annotations

from pathlib import Path

import click

from refsr_cli import console
from refsr_cli.archs import variants
from refsr_cli.commands import pipeline
from refsr_cli.data.store import UnreadableData
from refsr_cli.errors import RefsrError

POSITIVE = click.IntRange(min=1)


class VariantChoice(click.Choice):
    """The registered variants, read when the option is parsed (a variant registered at run time counts)."""

    def __init__(self):
        super().__init__([])

    def convert(self, value, param, ctx):
        self.choices = tuple(variants())
        return super().convert(value, param, ctx)

    def get_metavar(self, param, ctx=None):
        self.choices = tuple(variants())
        return super().get_metavar(param, ctx) if ctx is not None else super().get_metavar(param)


@click.command("train")
@click.option("--variant", required=True, type=VariantChoice(), help="Network to train (`refsr models` lists them).")
@click.option("--data", "data", multiple=True, type=click.Path(path_type=Path),
              help="Training store(s) (.h5 or a prepare output folder); repeat to mix. "
                   "Default: the store of a chained `prepare`.")
@click.option("--mix", default=None, help="Mixing weights of several --data, e.g. 0.7,0.3.")
@click.option("--scale", type=click.Choice(["4", "8"]), default=None, help="Upscaling factor (preset: 8).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Run folder (default runs/<variant>_x<scale>). Rerunning the same command resumes it.")
@click.option("--iters", type=POSITIVE, default=None, help="Total iterations (preset: the paper's).")
@click.option("--batch", type=POSITIVE, default=None, help="Batch size (per process).")
@click.option("--crop", nargs=2, type=int, default=None, metavar="H W", help="Training crop (HR pixels).")
@click.option("--lr", "lr", type=float, default=None, help="Learning rate.")
@click.option("--val", type=click.Path(path_type=Path), default=None,
              help="Validation store (best.pt is chosen on it). Default: items held out of the training "
                   "data (--val-holdout); never the test store of a chained `prepare`.")
@click.option("--val-holdout", type=click.IntRange(min=0), default=None,
              help="Without --val: light fields (video: pairs) of each training store held out of training "
                   "and validated on; 0 = no validation  [default: a tenth, 1 to 8].")
@click.option("--val-every", type=POSITIVE, default=None, help="Validate every N iterations.")
@click.option("--checkpoint-every", type=POSITIVE, default=None, help="Save training state every N iterations.")
@click.option("--partial-reference", type=click.FloatRange(0, 1), default=None, metavar="P",
              help="Share of samples whose reference covers only a random part of the crop, the rest its "
                   "border pixels smeared outwards (as a prealigned telephoto reference): the network learns "
                   "where a reference has no content  [default: 0].")
@click.option("--seed", type=int, default=None, help="Seed of weights init and of the data order.")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 … (default: cuda when available).")
@click.option("--model-size", type=click.Choice(["paper", "tiny"]), default=None,
              help="paper (default) or tiny (same architecture, small widths: tests, CPU demos).")
@click.option("--vgg", type=click.Path(path_type=Path), default=None,
              help="VGG-19 weights file for Cross-MPI's perceptual loss (never downloaded).")
@click.option("--init", type=click.Path(path_type=Path), default=None,
              help="Start from this checkpoint's weights (same configuration, except settings that hold no "
                   "weights such as RefSR-Net's search window; same variant, or a CrossNet checkpoint for "
                   "CrossNet++), e.g. a flow pre-training run's model.pt.")
@click.option("--config", "config_file", type=click.Path(path_type=Path), default=None,
              help="TOML file with any option above and [model] / [loss] / [plateau] tables "
                   "([plateau]: train until the validation PSNR stops rising; docs/train.md).")
@click.option("--skip-bad", is_flag=True, help="Leave out samples whose store data cannot be read (a damaged "
                                              "file), with a warning each, instead of stopping.")
def command(variant, data, mix, scale, out, iters, batch, crop, lr, val, val_holdout, val_every, checkpoint_every,
            partial_reference, seed, device, model_size, vgg, init, config_file, skip_bad):
    """Train a network on light-field (or video) stores; resumable.

    Presets follow each paper (optimiser, schedule, iterations, crop, views, augmentation, loss
    weights); options and --config override them, and the resolved configuration is written to
    RUN/config.json, with the stores and what the run validates on. Rerunning the same command continues
    from RUN/last.pt; another configuration in the same RUN is refused.

    \b
    Examples:
      refsr train --variant crossnet --data data/train.h5 --scale 8 --out runs/cn8
      refsr train --variant crossnet --data data --model-size tiny --iters 200 --crop 64 64
      refsr train --variant refsrnet --data data --partial-reference 0.3   # for wide/tele rigs
      refsr prepare synthetic --out data train --variant crossnet --iters 200 bench
      torchrun --nproc_per_node 4 -m refsr_cli train --variant crossnetpp --data data --out runs/cpp
    """
    from refsr_cli.training.config import load_toml, resolve_config
    from refsr_cli.training.loop import train

    state = pipeline()
    toml = load_toml(config_file) if config_file else {}
    sources = list(data) or ([state.train_store] if state.train_store else [])
    if not sources and "data" not in toml:
        raise click.UsageError("no training data: give --data or chain after `refsr prepare`")
    mix_weights = [float(w) for w in mix.split(",")] if mix else None
    if mix_weights and len(mix_weights) != len(sources):
        raise click.UsageError(f"--mix has {len(mix_weights)} weights for {len(sources)} --data stores")
    if val and val_holdout is not None:
        raise click.UsageError("--val and --val-holdout exclude each other (a validation store replaces the hold-out)")
    flags = dict(scale=int(scale) if scale else None, iters=iters, batch=batch, crop=list(crop) if crop else None,
                 lr=lr, val_every=val_every, val_holdout=val_holdout, checkpoint_every=checkpoint_every, seed=seed,
                 partial_reference=partial_reference,
                 model_size=model_size, mix=mix_weights, init=str(init) if init else None,
                 data=[str(s) for s in sources] if sources else None)
    config = resolve_config(variant, toml, **flags)
    if vgg:
        config["loss"]["perceptual"] = config["loss"].get("perceptual") or 1.0
    # Not a chained prepare's test store: best.pt chosen on the images bench then reports would flatter it.
    val = val or toml.get("val")
    out = out or Path(toml.get("out", f"runs/{variant}_x{config['scale']}"))
    try:
        result = train(config, out, device=device or toml.get("device"), val=val, vgg=vgg, skip_bad=skip_bad)
    except UnreadableData as exc:
        raise RefsrError(f"{exc}; --skip-bad leaves such samples out") from None
    best = result.run_dir / "best.pt"
    state.checkpoint = best if best.exists() else result.checkpoint
    if not result.checkpoint.exists():
        raise RefsrError(f"{result.run_dir}: training wrote no checkpoint")
    console.notice(f"checkpoint: {state.checkpoint}")
