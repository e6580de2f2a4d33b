"""Model checkpoints: a file that rebuilds the exact network without the user naming the variant.

A checkpoint is a plain dict of tensors, strings, numbers, lists and dicts — loadable with
``torch.load(weights_only=True)``, so opening an untrusted file never runs code::

    {"format": "refsr-checkpoint", "format_version": 1, "variant": "crossnet", "config": {...},
     "scale": 8, "state_dict": {...}, "meta": {"iterations": ..., "data": ..., "metrics": {...}}}

Weights may be stored as float16 (``half=True``) to halve the file; they are cast back to float32 on load.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn

from refsr_cli.errors import RefsrError

FORMAT = "refsr-checkpoint"
FORMAT_VERSION = 1


def weights_dir() -> Path:
    """Where shipped weights live: ``$REFSR_WEIGHTS`` or the repository's ``weights/`` folder."""
    env = os.environ.get("REFSR_WEIGHTS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "weights"


def shipped_weights(variant: str, scale: int) -> Path | None:
    """The shipped checkpoint ``weights/<variant>_x<scale>.pt`` if it exists."""
    path = weights_dir() / f"{variant}_x{scale}.pt"
    return path if path.is_file() else None


def real_suite_psnr(variant: str, scale: int) -> float | None:
    """Mean PSNR of ``variant`` ×``scale`` over the real-pair suite, as its shipped model card records it
    (``weights/<variant>_x<scale>.json``, field ``bench``, rows of data ``real``); ``None`` without one."""
    import json

    card = weights_dir() / f"{variant}_x{scale}.json"
    try:
        rows = json.loads(card.read_text()).get("bench", {}).get(variant) or []
    except (OSError, ValueError, AttributeError):
        return None
    values = [r["psnr"] for r in rows if r.get("data") == "real" and isinstance(r.get("psnr"), (int, float))]
    return sum(values) / len(values) if values else None


def default_variant(scale: int) -> tuple[str, float | None]:
    """The reference-based variant ``refsr infer`` uses without ``--method``: of those with shipped weights
    for ``scale``, the one whose model card measures the best mean PSNR on the real-pair suite. Returns
    ``(variant, its mean PSNR)``; ``(DEFAULT_VARIANT, None)`` when no card has real-suite figures."""
    from refsr_cli.archs import DEFAULT_VARIANT, spec, variants

    scored = [(real_suite_psnr(v, scale), v) for v in variants()
              if spec(v).needs_reference and shipped_weights(v, scale) is not None]
    scored = [(psnr, v) for psnr, v in scored if psnr is not None]
    if not scored:
        return DEFAULT_VARIANT, None
    psnr, variant = max(scored)
    return variant, psnr


def checkpoint_dict(model: nn.Module, scale: int, meta: dict | None = None, half: bool = False) -> dict:
    state = {k: (v.detach().half() if half and v.is_floating_point() else v.detach()).cpu().clone()
             for k, v in _unwrap(model).state_dict().items()}
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "variant": _unwrap(model).variant,
            "config": dict(_unwrap(model).config), "scale": int(scale), "state_dict": state,
            "meta": dict(meta or {})}


def save_checkpoint(path: str | os.PathLike, model: nn.Module, scale: int, meta: dict | None = None,
                    half: bool = False) -> Path:
    """Write a checkpoint atomically (temporary file + rename)."""
    from refsr_cli.data.files import atomic_write

    path = Path(path)
    payload = checkpoint_dict(model, scale, meta, half)
    atomic_write(path, lambda tmp: torch.save(payload, tmp))
    return path


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load and validate a checkpoint dict (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise RefsrError(f"{path}: no such checkpoint")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise RefsrError(f"{path}: not a readable refsr checkpoint ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise RefsrError(f"{path}: not a refsr checkpoint (missing format marker)")
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise RefsrError(f"{path}: checkpoint format {payload['format_version']} is newer than this refsr")
    return payload


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu",
               scale: int | None = None) -> tuple[nn.Module, dict]:
    """Rebuild the network a checkpoint describes; returns ``(model in eval mode, checkpoint dict)``.

    With ``scale``, a network with per-scale layers (``scale_specific``, e.g. MDSR's heads and
    upsamplers) is refused at a scale it was not trained for: those layers were never trained there and
    give noise. Other networks run at any scale their variant supports (the caller may warn).
    """
    from refsr_cli.archs import build_model

    payload = read_checkpoint(path)
    model = build_model(payload["variant"], **payload["config"])
    trained = payload.get("scale")
    other_scale = scale is not None and trained is not None and int(trained) != int(scale)
    if other_scale and getattr(model, "scale_specific", False):
        variant = payload["variant"]
        raise RefsrError(f"{path}: this {variant} checkpoint was trained for ×{trained} only; its ×{scale} "
                         f"layers were never trained — use --scale {trained}, or weights trained for "
                         f"×{scale} (refsr train --variant {variant} --scale {scale})")
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in payload["state_dict"].items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise RefsrError(f"{path}: weights do not fit variant {payload['variant']!r}: "
                         f"{str(exc).splitlines()[0]}") from None
    return model.to(device).eval(), payload


def model_digest(model: nn.Module) -> str:
    """SHA-256 (12 hex digits) of a network's variant, configuration and weights: what decides its output,
    wherever the file holding it lies."""
    import hashlib
    import json

    model = _unwrap(model)
    h = hashlib.sha256(json.dumps([getattr(model, "variant", type(model).__name__),
                                   getattr(model, "config", {})], sort_keys=True, default=str).encode())
    for key, value in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().to("cpu", torch.float32 if value.is_floating_point() else value.dtype)
                 .contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def _unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DistributedDataParallel / torch.compile wrappers."""
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    return getattr(model, "_orig_mod", model)


def export_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, half: bool = True,
                      card: dict | None = None, config: dict | None = None) -> Path:
    """Copy a trained checkpoint to ``dst`` for shipping: weights in float16 (``half``), ``card`` merged
    into its metadata, ``config`` into its configuration (weight-free keys chosen after training, e.g.
    ``rematch``; the network is rebuilt from it first, so a wrong value is refused), and the card also
    written as JSON beside it (``dst`` with ``.json``)."""
    import json

    from refsr_cli.archs import build_model
    from refsr_cli.data.files import atomic_write, write_json

    payload = read_checkpoint(src)
    if config:
        payload = {**payload, "config": {**payload["config"], **config}}
        build_model(payload["variant"], **payload["config"]).load_state_dict(payload["state_dict"])
    state = {k: (v.half() if half and v.is_floating_point() else v) for k, v in payload["state_dict"].items()}
    meta = {**payload.get("meta", {}), **(card or {})}
    out = {**payload, "state_dict": state, "meta": meta}
    dst = Path(dst)
    atomic_write(dst, lambda tmp: torch.save(out, tmp))
    card_json = {"variant": payload["variant"], "scale": payload["scale"], "config": payload["config"],
                 "weights_dtype": "float16" if half else "float32", **meta}
    card_json.pop("train_config", None)
    card_json["train_config"] = json.loads(meta["train_config"]) if "train_config" in meta else None
    write_json(dst.with_suffix(".json"), card_json, indent=2)
    return dst
