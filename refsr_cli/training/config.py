"""Training configuration: the common defaults, each variant's preset (its recipe), TOML and flags.

A run's configuration is resolved once — common defaults ← the variant's recipe preset
(:mod:`refsr_cli.archs`) ← a ``--config`` TOML table ← command-line flags — and written to
``RUN/config.json``. Loss weights may change by stage (``stages``).
"""
from __future__ import annotations

import copy
import os
from pathlib import Path

from refsr_cli.archs import REFERENCE_MATCHING, spec
from refsr_cli.errors import RefsrError
from refsr_cli.training.plateau import PlateauRule

# Defaults of every variant (the papers' common ground); each recipe's preset overrides some of them.
_COMMON = {
    "scale": 8,
    "iters": 200_000,
    "batch": 2,
    "crop": [320, 512],           # the papers' training/evaluation crop
    "lr": 1e-4,
    "betas": [0.9, 0.999],
    "weight_decay": 0.0,
    "milestones": [0.75],          # learning rate ×gamma at these fractions of iters
    "gamma": 0.1,
    "views": "random",             # LR view: "random" over the 8×8 grid, or [k, k]
    "ref_view": [0, 0],
    "parallax_shift": 15,          # ±px shift of Ref (the papers' parallax augmentation)
    "flips": True,
    "partial_reference": 0.0,      # share of samples whose Ref covers only part of the crop (wide/tele rigs)
    "paste_gate_loss": False,      # matched-reference networks: loss and validation on the output as
                                   # inference gives it (back-projected, through the paste gate)
    "seed": 0,
    "checkpoint_every": 1000,
    "log_every": 50,
    "val_every": 5000,
    "val_holdout": "auto",         # without --val: items of each store validated on, never trained on
    "workers": 2,
    "model_size": "paper",
    "init": None,                  # checkpoint whose weights start the run (e.g. a flow pre-training)
    "model": {},                   # extra keyword arguments of the architecture
    "loss": {},                    # loss weights
    "stages": [],                  # multi-stage schedules: [{"until": fraction, "loss": {...}}]
    "plateau": None,               # stop at a validation plateau (refsr_cli.training.plateau); needs --val
}


def preset(variant: str) -> dict:
    """The common defaults overridden by ``variant``'s recipe preset (unknown variants: a clean error)."""
    config = copy.deepcopy(_COMMON)
    config.update(copy.deepcopy(spec(variant).recipe.preset))
    config["variant"] = variant
    return config


def load_toml(path: str | os.PathLike) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise RefsrError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise RefsrError(f"{path}: invalid TOML ({exc})") from None


def resolve_config(variant: str, toml: dict | None = None, **flags) -> dict:
    """Preset of ``variant`` ← TOML table ← flags that are not ``None``."""
    config = preset(variant)
    for source in (toml or {}, {k: v for k, v in flags.items() if v is not None}):
        for key, value in source.items():
            if key not in config and key not in ("data", "val", "out", "device", "mix", "vgg"):
                raise RefsrError(f"unknown training option {key!r}")
            if isinstance(config.get(key), dict) and isinstance(value, dict):
                config[key].update(value)
            else:
                config[key] = value
    for key in ("iters", "batch", "checkpoint_every", "val_every", "log_every"):
        if isinstance(config[key], bool) or not isinstance(config[key], int) or config[key] < 1:
            raise RefsrError(f"{key} must be a positive integer, not {config[key]!r}")
    holdout = config["val_holdout"]
    if holdout != "auto" and (isinstance(holdout, bool) or not isinstance(holdout, int) or holdout < 0):
        raise RefsrError(f"val_holdout must be 'auto' or an integer ≥ 0, not {holdout!r}")
    if not isinstance(config["paste_gate_loss"], bool):
        raise RefsrError(f"paste_gate_loss must be true or false, not {config['paste_gate_loss']!r}")
    if config["paste_gate_loss"] and not (config.get("model") or {}).get(REFERENCE_MATCHING):
        # checked here, before any run folder is made
        raise RefsrError("paste_gate_loss scores the output after the paste gate: it needs [model] reference_matching")
    if config["model_size"] not in ("paper", "tiny"):
        raise RefsrError(f"model_size must be 'paper' or 'tiny', not {config['model_size']!r}")
    terms = spec(variant).recipe.loss_terms
    for name in sorted({n for stage in [config] + list(config["stages"] or []) for n in stage.get("loss") or {}}):
        if uses_loss(config, name) and name not in terms:
            raise RefsrError(f"the {name!r} loss does not apply to {variant} (its loss terms: {', '.join(terms)})")
    PlateauRule.from_config(config["plateau"])  # checks the table
    crop = config["crop"]
    if crop is not None:
        crop = [int(c) for c in crop]
        if any(c % int(config["scale"]) for c in crop):
            raise RefsrError(f"crop {crop[0]}×{crop[1]} is not a multiple of the scale {config['scale']}")
        config["crop"] = crop
    return config


def model_kwargs(config: dict) -> dict:
    kwargs = dict(spec(config["variant"]).tiny) if config["model_size"] == "tiny" else {}
    kwargs.update(config.get("model") or {})
    return kwargs


def uses_loss(config: dict, name: str) -> bool:
    """Whether loss term ``name`` has a non-zero weight in any stage of the schedule."""
    return any((stage.get("loss") or {}).get(name) for stage in [config] + list(config.get("stages") or []))


def loss_weights(config: dict, iteration: int) -> dict:
    """The loss weights in force at ``iteration`` (multi-stage schedules)."""
    for stage in config.get("stages") or []:
        if iteration < stage["until"] * config["iters"]:
            return {**config["loss"], **stage["loss"]}
    return dict(config["loss"])
