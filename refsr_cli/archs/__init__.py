"""Variant registry: one module per architecture, registered under its variant name with its recipe.

Every RefSR variant is a :class:`~refsr_cli.archs.base.RefSRModel`: ``model(lr, ref, scale, **options)``
returns ``(sr, aux)`` where ``aux`` is a dict of intermediates (flows, warped reference, alphas, depth,
match confidence). ``build_model(name, **config)`` builds the paper-size network unless the config says
otherwise; ``model.config`` holds everything needed to rebuild it (checkpoints store it).

What training, inference and the benchmark do differently for a variant is its :class:`Recipe`,
registered beside the architecture: its training preset, the loss terms it trains with, the batch entries
its forward reads, and the forward options a pair's geometry gives it. Code outside ``archs/`` asks the
registry and never tests a variant's name.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

import torch.nn as nn

from refsr_cli.errors import RefsrError

# Loss terms every variant can train with: they compare the output with the ground truth only.
PIXEL_LOSSES = ("charbonnier", "l1")


@dataclass(frozen=True)
class Recipe:
    """How a variant is trained and run, beyond its architecture.

    Attributes:
        preset: training defaults that differ from the common ones (the paper's loss weights, stages,
            crop, batch, views …; :mod:`refsr_cli.training.config`).
        losses: loss terms beyond :data:`PIXEL_LOSSES` that the variant's outputs support (names of
            :mod:`refsr_cli.training.losses.terms`); a configuration weighting any other term is refused.
        forward_keys: training-batch entries passed to ``forward`` as keyword options (Cross-MPI reads
            the sample's ``baseline``); absent entries are left out.
        pair_options: ``(model, geometry) -> forward options`` for a pair whose geometry is known or given
            (``geometry``: ``baseline`` ``(bx, by)``, optionally ``disparity_range`` ``(lo, hi)`` in HR px);
            ``None``: the variant takes no geometry.
        centre_reference: the variant's correspondence is a bounded search around zero displacement (a
            flow network's trained range, a matching window): at inference the reference is first shifted
            by the pair's median displacement (whole pixels), so that what is left to find is centred.
        align_reference: for a pair that is not rectified (its displacements spread across their main
            direction), the reference is first resampled through a fitted affine map and the geometry
            read from what is left (:func:`refsr_cli.ops.geometry.estimate_aligned_geometry`).
    """

    preset: dict = field(default_factory=dict)
    losses: tuple[str, ...] = ()
    forward_keys: tuple[str, ...] = ()
    pair_options: Callable[[nn.Module, dict], dict] | None = None
    centre_reference: bool = False
    align_reference: bool = False

    @property
    def loss_terms(self) -> tuple[str, ...]:
        return PIXEL_LOSSES + tuple(t for t in self.losses if t not in PIXEL_LOSSES)

    def training_options(self, batch: dict) -> dict:
        """Forward keyword options taken from a training batch."""
        return {key: batch[key] for key in self.forward_keys if key in batch}

    def geometry_options(self, model: nn.Module, geometry: dict) -> dict:
        """Forward keyword options for a pair's geometry (nothing when the variant takes none)."""
        if self.pair_options is None or not geometry:
            return {}
        return self.pair_options(model, geometry)


@dataclass
class ModelSpec:
    name: str
    builder: Callable[..., nn.Module]
    paper: str
    summary: str
    input_multiple: int = 1          # H and W of the LR↑/Ref seen by the net are padded to this
    needs_reference: bool = True
    scales: tuple[int, ...] = (4, 8)
    tiny: dict = field(default_factory=dict)   # config of a small same-architecture model (tests, CPU)
    recipe: Recipe = field(default_factory=Recipe)


REGISTRY: dict[str, ModelSpec] = {}

# Modules that register the shipped variants on import; their order is the order `refsr models` shows.
_MODULES = ("crossnet", "crossnetpp", "crossmpi", "refsrnet", "mdsr")
# The variant `refsr infer` runs when neither --method nor --weights names one and no model card has
# real-suite figures to choose by (archs.checkpoint.default_variant).
DEFAULT_VARIANT = "crossnet"


def register(name: str, paper: str, summary: str, input_multiple: int = 1, needs_reference: bool = True,
             scales: tuple[int, ...] = (4, 8), tiny: dict | None = None, recipe: Recipe | None = None):
    """Class/function decorator adding a builder (and its recipe) to :data:`REGISTRY`."""

    def decorate(builder):
        REGISTRY[name] = ModelSpec(name, builder, paper, summary, input_multiple, needs_reference, scales,
                                   dict(tiny or {}), recipe or Recipe())
        return builder

    return decorate


def _load_all() -> None:
    for module in _MODULES:
        importlib.import_module(f"refsr_cli.archs.{module}")


def variants() -> list[str]:
    """Registered variant names: the shipped ones in :data:`_MODULES` order, then any registered later."""
    _load_all()
    return [n for n in _MODULES if n in REGISTRY] + [n for n in REGISTRY if n not in _MODULES]


def spec(name: str) -> ModelSpec:
    _load_all()
    if name not in REGISTRY:
        raise RefsrError(f"unknown variant {name!r} (known: {', '.join(variants())})")
    return REGISTRY[name]


# A configuration key every variant takes (it holds no weights): the network is given, in place of the raw
# reference, the reference patch-matched onto the LR's view with this many PatchMatch iterations (0: the
# raw reference). Correspondence beyond a CPU-sized network's reach is then solved before it, and the
# network learns to fuse (inference/matched_reference.py; docs/real-suite.md).
REFERENCE_MATCHING = "reference_matching"
# With it, ``guided_matching=K`` (≤ N): the last K of those iterations are guided by the paste before them.
GUIDED_MATCHING = "guided_matching"
# With it, ``matching_patch=P``: the matched and pasted patches span P LR pixels (absent: 2, the
# PatchMatch baseline's patches, which the checkpoints before it were trained on); a list of sides matches
# once per side and blends the pastes per pixel by their agreement with the LR (paste_consensus).
MATCHING_PATCH = "matching_patch"
# With guided matching, ``rematch=[steps]``: after the first pass the output guides the matching again, and
# each step either runs the network again on that reference ("network") or passes the output through the
# paste gate with it ("gate") (inference/matched_reference.py, "rematching").
REMATCH = "rematch"
REMATCH_STEPS = ("network", "gate")


def matching_sides(patch) -> tuple[int, ...]:
    """The sides of a ``matching_patch`` value — a whole number, a list of them or their text (``"3,5,7"``,
    as the command line and ``weights/export.py`` take it) — refused unless each is a whole number ≥ 1 and
    all differ."""
    if isinstance(patch, str):
        parts = [int(p) if p.strip().isdigit() else p for p in patch.split(",")]
    else:
        parts = list(patch) if isinstance(patch, (list, tuple)) else [patch]
    if not parts or len(set(parts)) < len(parts) or any(isinstance(p, bool) or not isinstance(p, int) or p < 1
                                                         for p in parts):
        raise RefsrError(f"{MATCHING_PATCH} ({patch}) is the matched patches' side in LR pixels (a whole number "
                         f"≥ 1, or a list of different ones)")
    return tuple(parts)


def build_model(name: str, **config) -> nn.Module:
    """Build variant ``name``; ``config`` overrides its paper-size defaults (e.g. width for tiny models).

    ``reference_matching=N`` (any variant): the network takes the reference patch-matched onto the LR's
    view by ``N`` PatchMatch iterations, the last ``guided_matching=K`` of them guided by the paste before
    them, with patches spanning ``matching_patch=P`` LR pixels (or each of a list of sides, their pastes
    blended), and at inference the ``rematch`` steps, each on
    the reference matched again with the output before as the guide (inference/matched_reference.py); all
    kept in ``model.config`` so checkpoints rebuild them."""
    matching = int(config.pop(REFERENCE_MATCHING, 0) or 0)
    guided = int(config.pop(GUIDED_MATCHING, 0) or 0)
    patch = config.pop(MATCHING_PATCH, None)
    steps = config.pop(REMATCH, [])
    for key, value in ((REFERENCE_MATCHING, matching), (GUIDED_MATCHING, guided)):
        if value < 0:
            raise RefsrError(f"{key} must be ≥ 0 (PatchMatch iterations), not {value}")
    if guided > matching:
        raise RefsrError(f"{GUIDED_MATCHING} ({guided}) counts guided ones among the {REFERENCE_MATCHING} "
                         f"iterations ({matching}): it cannot exceed them")
    if patch is not None:
        matching_sides(patch)
        if not matching:
            raise RefsrError(f"{MATCHING_PATCH} ({patch}) sets the matched patches and needs {REFERENCE_MATCHING}")
    if (not isinstance(steps, (list, tuple)) or any(step not in REMATCH_STEPS for step in steps)
            or (steps and not guided)):
        raise RefsrError(f"{REMATCH} ({steps!r}) lists the steps after the first pass, each \"network\" or "
                         f"\"gate\" on the reference matched again, guided by the output before; it needs "
                         f"{GUIDED_MATCHING}")
    model = spec(name).builder(**config)
    model.variant = name
    model.reference_matching, model.guided_matching = matching, guided
    model.matching_patch = None if patch is None else patch if isinstance(patch, int) else tuple(patch)
    model.rematch = tuple(steps)
    for key, value in ((REFERENCE_MATCHING, matching), (GUIDED_MATCHING, guided)):
        if value:
            model.config = {**model.config, key: int(value)}
    if patch is not None:
        model.config = {**model.config, MATCHING_PATCH: patch if isinstance(patch, int) else list(patch)}
    if steps:
        model.config = {**model.config, REMATCH: list(steps)}
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
