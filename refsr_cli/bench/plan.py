"""Which method runs at which scale with which weights, and the digest that keys its cached results.

``digest`` is the SHA-256 of the checkpoint file for a network (with the back-projection and reference
centring it gets, and the pair-geometry estimator's source for a variant that reads it) and of the
baseline's source file and options for a baseline, so a changed checkpoint, estimator or baseline is never
served stale results.
"""
from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from refsr_cli import __version__, console
from refsr_cli.errors import RefsrError

BASELINE_ORDER = ("bicubic", "patchmatch")


@dataclass
class MethodPlan:
    """One method at one scale, as the bench runs it."""

    label: str                  # name in the report (variant, baseline, or a --weights label)
    name: str                   # variant or baseline name
    kind: str                   # "network" | "baseline"
    weights: Path | None = None
    digest: str = ""            # cache key part: checkpoint / baseline-source hash
    options: dict = field(default_factory=dict)


def file_digest(path: str | os.PathLike, length: int = 12) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:length]


def _baseline_digest(name: str, options: dict) -> str:
    """Hash of the baseline's source file and options: editing the baseline invalidates its cache."""
    from refsr_cli.inference.methods import baselines

    fn = baselines()[name]
    h = hashlib.sha256(f"{name}:{json.dumps(options, sort_keys=True, default=str)}".encode())
    try:
        h.update(Path(inspect.getsourcefile(fn)).read_bytes())
    except (TypeError, OSError):
        h.update(__version__.encode())
    return h.hexdigest()[:12]


def _network_digest(variant: str, path: str | os.PathLike, scale: int) -> str:
    """Hash of the checkpoint and of what the inference around it does (back-projection, a centred
    reference, the matching and paste gate of a matched-reference checkpoint); for a variant that reads
    each pair's geometry, also of the estimator's source, so that editing the estimator invalidates
    exactly the results that depend on it."""
    from refsr_cli.archs import spec
    from refsr_cli.inference import BACK_PROJECTION
    from refsr_cli.ops import block_match, geometry, prealign

    recipe = spec(variant).recipe
    h = hashlib.sha256(f"{file_digest(path)}:back-projection={BACK_PROJECTION}:"
                       f"centre-reference={recipe.centre_reference}".encode())
    if recipe.pair_options is not None or recipe.centre_reference:
        for module in (geometry, block_match, prealign):
            h.update(Path(inspect.getsourcefile(module)).read_bytes())
    if spec(variant).needs_reference:
        # a checkpoint trained on matched references runs the matching and the paste gate around it
        for module in ("refsr_cli.inference.matched_reference", "refsr_cli.inference.baselines.patchmatch"):
            h.update(Path(inspect.getsourcefile(importlib.import_module(module))).read_bytes())
        # a pair whose reference matches nothing runs the fallback
        from refsr_cli.archs import variants
        from refsr_cli.archs.checkpoint import shipped_weights

        fallbacks = (shipped_weights(v, scale) for v in variants() if not spec(v).needs_reference)
        fallback = next((w for w in fallbacks if w is not None), None)   # as Method.fallback_method picks it
        if fallback is not None:
            h.update(file_digest(fallback).encode())
    return h.hexdigest()[:12]


def _checkpoint_info(path: Path) -> dict:
    from refsr_cli.archs.checkpoint import read_checkpoint

    payload = read_checkpoint(path)
    return {"variant": payload.get("variant"), "scale": int(payload.get("scale") or 0)}


def known_methods(labels: Iterable[str] = ()) -> list[str]:
    """Every method name the bench knows: the baselines, the variants, then the extra ``--weights`` labels."""
    from refsr_cli.archs import variants
    from refsr_cli.inference.methods import baselines

    known = [b for b in BASELINE_ORDER if b in baselines()] + [b for b in baselines() if b not in BASELINE_ORDER]
    known += variants()
    return known + [label for label in labels if label not in known]


def unknown_methods(methods: Iterable[str], labels: Iterable[str] = ()) -> str | None:
    """``"unknown method(s) … (known: …)"`` when a name of ``methods`` is not a method; ``None`` otherwise."""
    known = known_methods(labels)
    unknown = [m for m in dict.fromkeys(m.strip() for m in methods if m.strip()) if m not in known]
    return f"unknown method(s) {', '.join(unknown)} (known: {', '.join(known)})" if unknown else None


def plan_methods(methods: Iterable[str] | None, weights: dict[str, str | os.PathLike] | None,
                 scales: Iterable[int], baseline_options: dict | None = None) -> dict[int, list[MethodPlan]]:
    """Which method runs at which scale, with which weights.

    ``weights`` maps a label to a checkpoint: a variant name (``crossnet=FILE``: that variant's weights)
    or any other label (``mine=FILE``: an extra method named ``mine``, variant read from the file). A
    checkpoint is used at the scale it was trained for; at other scales a variant falls back to its
    shipped weights. ``methods=None`` means: every variant with weights for the scale (shipped or
    given), every ``weights`` label, and the baselines.
    """
    from refsr_cli.archs import variants
    from refsr_cli.archs.checkpoint import shipped_weights
    from refsr_cli.inference.methods import baselines

    scales = [int(s) for s in scales]
    known_variants = variants()
    known_baselines = [b for b in BASELINE_ORDER if b in baselines()] + \
        [b for b in baselines() if b not in BASELINE_ORDER]
    options = baseline_options or {}
    given: dict[str, dict] = {}
    for label, path in (weights or {}).items():
        path = Path(path)
        info = _checkpoint_info(path)
        if label in known_baselines:
            raise RefsrError(f"--weights {label}=…: {label} is a baseline and has no weights")
        if label in known_variants and info["variant"] != label:
            raise RefsrError(f"{path}: checkpoint holds a {info['variant']} network, not {label}")
        if info["scale"] not in scales:
            raise RefsrError(f"{path}: trained for ×{info['scale']}, which is not among the scales "
                             f"({', '.join(map(str, scales))}); add --scales {info['scale']}")
        given[label] = {"path": path, **info}

    explicit = methods is not None
    if explicit:
        names = list(dict.fromkeys(m.strip() for m in methods if m.strip()))
        problem = unknown_methods(names, given)
        if problem:
            raise RefsrError(problem)
    else:
        names = known_baselines + [v for v in known_variants
                                   if v in given or any(shipped_weights(v, s) for s in scales)]
        names += [g for g in given if g not in names]

    plans: dict[int, list[MethodPlan]] = {s: [] for s in scales}
    for name in names:
        if name in known_baselines:
            opts = dict(options.get(name, {}))
            for s in scales:
                plans[s].append(MethodPlan(name, name, "baseline", None, _baseline_digest(name, opts), opts))
            continue
        found = False
        for s in scales:
            if name in given and given[name]["scale"] == s:
                path, variant = given[name]["path"], given[name]["variant"]
            elif name in known_variants and shipped_weights(name, s) is not None:
                path, variant = shipped_weights(name, s), name
            else:
                continue
            found = True
            plans[s].append(MethodPlan(name, variant, "network", Path(path), _network_digest(variant, path, s)))
        if not found:
            if explicit:
                raise RefsrError(f"no weights for {name} at ×{', ×'.join(map(str, scales))}: train them with "
                                 f"`refsr train --variant {name}` and pass --weights {name}=FILE")
            continue
        missing = [s for s in scales if not any(p.label == name for p in plans[s])]
        if missing and explicit:
            console.warn(f"{name}: no weights for ×{', ×'.join(map(str, missing))} — skipped at that scale")
    return plans


def load_plan_method(plan: MethodPlan, scale: int, device):
    from refsr_cli.inference.methods import load_method

    if plan.kind == "baseline":
        return load_method(plan.name, scale, device=device, **plan.options)
    return load_method(plan.name, scale, weights=plan.weights, device=device)
