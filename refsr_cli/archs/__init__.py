"""Network registry: one module per architecture, each registered under its variant name.

Every RefSR variant is an :class:`~refsr_cli.archs.base.RefSRModel`: ``model(lr, ref, scale)``
returns ``(sr, aux)`` where ``aux`` is a dict of intermediates (flows, warped reference, alphas,
depth, match confidence). ``build_model(name, **config)`` builds the paper-size network unless the
config says otherwise; ``model.config`` holds everything needed to rebuild it (checkpoints store it).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

import torch.nn as nn


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


REGISTRY: dict[str, ModelSpec] = {}

# Modules that register variants on import; order = order shown by `refsr models`.
_MODULES = ("crossnet", "crossnetpp", "crossmpi", "refsrnet", "mdsr")


def register(name: str, paper: str, summary: str, input_multiple: int = 1, needs_reference: bool = True,
             scales: tuple[int, ...] = (4, 8), tiny: dict | None = None):
    """Class/function decorator adding a builder to :data:`REGISTRY`."""

    def decorate(builder):
        REGISTRY[name] = ModelSpec(name, builder, paper, summary, input_multiple, needs_reference, scales,
                                   dict(tiny or {}))
        return builder

    return decorate


def _load_all() -> None:
    for module in _MODULES:
        try:
            importlib.import_module(f"refsr_cli.archs.{module}")
        except ModuleNotFoundError as exc:  # a variant still being written must not break the others
            if exc.name != f"refsr_cli.archs.{module}":
                raise


def variants() -> list[str]:
    _load_all()
    return [name for name in _MODULES if name in REGISTRY]


def spec(name: str) -> ModelSpec:
    _load_all()
    if name not in REGISTRY:
        from refsr_cli.errors import RefsrError
        raise RefsrError(f"unknown variant {name!r} (known: {', '.join(variants())})")
    return REGISTRY[name]


def build_model(name: str, **config) -> nn.Module:
    """Build variant ``name``; ``config`` overrides its paper-size defaults (e.g. width for tiny models)."""
    model = spec(name).builder(**config)
    model.variant = name
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
