"""One callable per method name — a network variant or a baseline — for ``infer`` and ``bench``.

A :class:`Method` hides what differs between methods: loading weights, the device, half precision,
padding the input to the size a network needs (FlowNetS-based nets see multiples of 64), and
whether a reference is used at all. Every method is called the same way::

    method = load_method("crossnet", scale=4)                 # shipped weights
    method = load_method("crossnet", 4, weights="run/ckpt.pt")
    method = load_method("bicubic", 8)
    method = Method.from_model(model, scale=4)                # an already-built network (tests, bench)
    sr, aux = method(lr, ref)     # lr N×3×h×w, ref N×3×(s·h)×(s·w) (or None) → sr N×3×(s·h)×(s·w)

``aux`` holds the method's intermediates (``"flow"``, ``"warped"``, ``"depth"``, …) cropped to the
output size where they are full-resolution maps.
"""
from __future__ import annotations

import math
import os
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from refsr_cli import console
from refsr_cli.errors import RefsrError
from refsr_cli.inference import BACK_PROJECTION
from refsr_cli.inference.matched_reference import (as_inferred, reference_for_network, reference_matching,
                                                   rematch_steps)
from refsr_cli.ops.resize import back_project
from refsr_cli.ops.warp import pad_bottom_right


def baselines() -> dict[str, Callable]:
    """The baseline registry (``bicubic``, ``patchmatch``)."""
    from refsr_cli.inference.baselines import BASELINES

    return dict(BASELINES)


# Baselines that ignore the reference: infer then neither needs nor reads one.
_REFERENCE_FREE_BASELINES = {"bicubic"}


def method_names() -> list[str]:
    from refsr_cli.archs import variants

    return list(variants()) + [b for b in baselines() if b not in variants()]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/``None`` → CUDA when available, else CPU; an unavailable CUDA is a clear error."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RefsrError("--device cuda: no CUDA GPU is available here (use --device cpu)")
    return device


def _half_dtype(half: bool | str, device: torch.device) -> torch.dtype | None:
    if not half:
        return None
    if device.type != "cuda":
        raise RefsrError("--half/--bf16 run on a GPU only (this run is on the CPU)")
    if half in ("bf16", "bfloat16"):
        return torch.bfloat16
    return torch.float16


class Method:
    """A ready-to-run method: ``method(lr, ref) -> (sr, aux)`` under ``torch.inference_mode``.

    Attributes:
        name: method name (``crossnet`` … or ``bicubic``/``patchmatch``).
        scale: the upscaling factor it runs at.
        input_multiple: HR-side multiple the network needs (inputs are reflect-padded to
            ``lcm(input_multiple, scale)`` and outputs cropped back; 1 for baselines).
        needs_reference: False for single-image methods (bicubic, MDSR): ``ref`` may be ``None``.
        device: where it runs; inputs are moved there and outputs come back on it.
        weights: the checkpoint file used (``None`` for baselines and wrapped models).
        checkpoint: the checkpoint dict's metadata (``variant``, ``scale``, ``meta``) or ``{}``.
    """

    def __init__(self, name: str, scale: int, fn: Callable, input_multiple: int = 1,
                 needs_reference: bool = True, device: str | torch.device = "cpu",
                 half: bool | str = False, weights: Path | None = None, checkpoint: dict | None = None,
                 model: nn.Module | None = None, recipe=None):
        self.name = name
        self.scale = int(scale)
        self._fn = fn
        self.input_multiple = max(1, int(input_multiple))
        self.needs_reference = bool(needs_reference)
        self.device = torch.device(device)
        self.autocast_dtype = _half_dtype(half, self.device) if model is not None else None
        self.weights = weights
        self.checkpoint = checkpoint or {}
        self.model = model
        # Extra keyword arguments of the network's forward, e.g. Cross-MPI's plane-sweep geometry
        # ``{"baseline": (1, 0), "disparities": …}`` for a rectified stereo pair, when the user or the
        # data gives the geometry. They override what bind_pair estimates from the pair itself.
        self.forward_options: dict = {}
        # A variant whose recipe turns geometry into forward options gets it estimated from each pair
        # (bind_pair) unless forward_options already say it.
        self.recipe = recipe
        self.pair_options: dict = {}
        self.geometry = None
        # (dx, dy) whole HR pixels: the reference shift that replaces the estimated one (centre_reference).
        self.given_shift: tuple[int, int] | None = None
        self.reference_shift = (0, 0)
        self.alignment = None
        # A single-image method for pairs whose reference matches nothing (another scene): the
        # geometry estimate finds no trustworthy pixels, and copying such a reference costs dB against
        # single-image SR (benchmarks/bench_unrelated_reference.py). Loaded on first need.
        self.fallback: "Method | None | bool" = True if model is not None and needs_reference else None
        self.reference_unmatched = False
        # A network's output is back-projected onto its LR (ops.resize.back_project): on real pairs the
        # networks put reference content where the LR says it is not. Baselines keep their own rules.
        self.back_projection = BACK_PROJECTION if model is not None else 0
        # A network trained on matched references hands over to the matched reference itself where that
        # agrees with the LR (matched_reference.paste_gate); bind_pair gives __call__ that reference.
        self.paste_gate = bool(reference_matching(model))
        # The checkpoint's rematching steps (matched_reference.rematch_steps) run unless this is turned off
        # (refsr infer --no-rematch: the first pass only, faster).
        self.rematching = True
        # Channels-last tensors: oneDNN's CPU convolutions run 1.2–1.6× faster on them (the networks'
        # outputs agree to 1e-5); set by load_method, which owns its model (not for a model in training).
        self.channels_last = False

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def from_model(cls, model: nn.Module, scale: int, device: str | torch.device | None = "cpu",
                   half: bool | str = False, name: str | None = None) -> "Method":
        """Wrap an already-built network (e.g. ``build_model(...)`` in a test or the benchmark)."""
        from refsr_cli.archs import spec

        variant = name or getattr(model, "variant", None) or type(model).__name__
        try:
            model_spec = spec(variant)
            multiple, needs_ref, recipe = model_spec.input_multiple, model_spec.needs_reference, model_spec.recipe
        except RefsrError:  # an unregistered module: assume the strictest common requirement
            multiple, needs_ref, recipe = 64, True, None
        device = resolve_device(device)
        model = model.to(device).eval()
        return cls(variant, scale, model, multiple, needs_ref, device, half, model=model, recipe=recipe)

    # -- running -----------------------------------------------------------------------------------
    @property
    def estimates_geometry(self) -> bool:
        """True when the variant's recipe uses a pair's geometry: forward options, a centred reference."""
        return self.recipe is not None and (self.recipe.pair_options is not None or self.recipe.centre_reference)

    @property
    def geometry_given(self) -> bool:
        """The user or the data gave what the recipe would read from the pair: nothing to estimate."""
        sweep_given = self.recipe.pair_options is None or bool(self.forward_options)
        shift_given = not self.recipe.centre_reference or self.given_shift is not None
        return sweep_given and shift_given

    def bind_pair(self, lr: torch.Tensor, ref: torch.Tensor | None) -> torch.Tensor | None:
        """Prepare the calls that follow for the pair ``(lr, ref)`` (whole images, before any tiling): read
        its geometry (:mod:`refsr_cli.ops.geometry`) when the recipe uses one and none was given.

        Returns the reference those calls take: for a network trained on matched references
        (``reference_matching``), ``ref`` patch-matched onto the LR's view
        (:mod:`refsr_cli.inference.matched_reference`); else ``ref`` itself, or for a recipe that centres it, ``ref``
        shifted by the pair's median displacement in whole pixels (``given_shift`` when set), so that the
        displacement left to the network is centred on zero. Sets ``geometry`` (the
        :class:`~refsr_cli.ops.geometry.PairGeometry`, or ``None``: not needed, given, or no estimate —
        too few trustworthy pixels, and the network runs with its trained defaults), ``pair_options`` and
        ``reference_shift`` ``(dx, dy)`` and ``alignment`` (the 3×3 affine map the reference was resampled
        through, for a recipe that aligns it, or ``None``).
        """
        self.pair_options, self.geometry, self.reference_shift, self.alignment = {}, None, (0, 0), None
        self.reference_unmatched = False
        matching = reference_matching(self.model)
        if matching and ref is not None:
            # The network takes the reference patch-matched onto the LR's view: no sweep, shift or alignment
            # is left to choose, but the geometry estimate still tells whether the reference shows the scene
            # at all (a pasted mosaic of another scene would look like the LR to any later check).
            from refsr_cli.ops.geometry import estimate_geometry

            ref, lr = (ref if ref.dim() == 4 else ref[None]), (lr if lr.dim() == 4 else lr[None])
            self.geometry = estimate_geometry(lr, ref)
            self.reference_unmatched = self.geometry is None and self.fallback_method() is not None
            return ref if self.reference_unmatched else reference_for_network(self.model, lr.to(ref.device), ref, self.scale)
        if not self.estimates_geometry or ref is None:
            return ref
        ref = ref if ref.dim() == 4 else ref[None]
        if not self.geometry_given:
            from refsr_cli.ops.geometry import estimate_aligned_geometry, estimate_geometry, sweep_geometry

            lr = lr if lr.dim() == 4 else lr[None]
            if self.recipe.align_reference and not self.forward_options:
                self.geometry, self.alignment = estimate_aligned_geometry(lr, ref)
            else:
                self.geometry = estimate_geometry(lr, ref)
            if self.alignment is not None:
                from refsr_cli.ops.prealign import resample_reference

                ref = resample_reference(ref, self.alignment, tuple(ref.shape[-2:])).to(ref.device)
            if self.geometry is not None and not self.forward_options:
                self.pair_options = self.recipe.geometry_options(self.model, sweep_geometry(self.geometry))
            self.reference_unmatched = self.geometry is None and self.fallback_method() is not None
        if self.recipe.centre_reference:
            if self.given_shift is not None:
                self.reference_shift = self.given_shift
            elif self.geometry is not None:
                self.reference_shift = (round(self.geometry.shift[0]), round(self.geometry.shift[1]))
            if self.reference_shift != (0, 0):
                from refsr_cli.ops.warp import shift

                ref = shift(ref.float(), float(self.reference_shift[0]), float(self.reference_shift[1]))
        return ref

    @property
    def rematch_plan(self) -> tuple[str, ...]:
        """The checkpoint's rematching steps this method runs after a first pass (``"network"``: another pass,
        ``"gate"``: the paste gate only), each on the reference matched again with the output so far as its
        guide (:func:`~refsr_cli.inference.matched_reference.rematched_reference`): none with ``rematching``
        off or for a network without ``rematch``, and no ``"gate"`` step with the paste gate off."""
        if not self.rematching:
            return ()
        return tuple(step for step in rematch_steps(self.model) if step != "gate" or self.paste_gate)

    @property
    def rematch_steps(self) -> tuple[str, ...]:
        """:attr:`rematch_plan` for the pair bound last: none where its reference matches nothing."""
        return () if self.reference_unmatched else self.rematch_plan

    def fallback_method(self) -> "Method | None":
        """The single-image method that replaces this one on a pair whose reference matches nothing: the
        first reference-free variant with shipped weights for the scale (``None``: none, or not wanted)."""
        if self.fallback is True:
            from refsr_cli.archs import spec, variants
            from refsr_cli.archs.checkpoint import shipped_weights

            single = [v for v in variants() if not spec(v).needs_reference and shipped_weights(v, self.scale)]
            self.fallback = load_method(single[0], self.scale, device=self.device) if single else None
        return self.fallback or None

    @property
    def hr_multiple(self) -> int:
        """HR sizes seen by the method are padded to this (a multiple of the scale)."""
        return self.input_multiple * self.scale // math.gcd(self.input_multiple, self.scale)

    def __call__(self, lr: torch.Tensor, ref: torch.Tensor | None = None):
        if self.reference_unmatched:
            return self.fallback_method()(lr, None)
        if lr.dim() == 3:
            lr = lr.unsqueeze(0)
        n, _, h, w = lr.shape
        s = self.scale
        if self.needs_reference:
            if ref is None:
                raise RefsrError(f"{self.name} needs a reference image")
            if ref.dim() == 3:
                ref = ref.unsqueeze(0)
            if tuple(ref.shape[-2:]) != (s * h, s * w):
                raise RefsrError(f"reference is {ref.shape[-1]}×{ref.shape[-2]}, expected "
                                 f"{s * w}×{s * h} ({s}× the LR)")
        lr_multiple = self.hr_multiple // s
        pad_h, pad_w = (-h) % lr_multiple, (-w) % lr_multiple
        lr_in = pad_bottom_right(lr.to(self.device, torch.float32), pad_h, pad_w)
        if self.channels_last:
            lr_in = lr_in.contiguous(memory_format=torch.channels_last)
        if ref is not None:
            ref_in = pad_bottom_right(ref.to(self.device, torch.float32), pad_h * s, pad_w * s)
            if self.channels_last:
                ref_in = ref_in.contiguous(memory_format=torch.channels_last)
        else:
            # Single-image methods still take the argument: an expanded zero costs no memory.
            ref_in = lr_in.new_zeros(1, 1, 1, 1).expand(n, 3, s * (h + pad_h), s * (w + pad_w))
        autocast = (torch.autocast(self.device.type, dtype=self.autocast_dtype)
                    if self.autocast_dtype is not None else nullcontext())
        with torch.inference_mode(), autocast:
            out = self._fn(lr_in, ref_in, s, **{**self.pair_options, **self.forward_options})
        sr, aux = out if isinstance(out, tuple) else (out, {})
        size = (s * h, s * w)
        padded = (s * (h + pad_h), s * (w + pad_w))
        sr = sr[..., : size[0], : size[1]].float()
        with torch.inference_mode():
            lr_out = lr.to(sr.device, torch.float32)
            if self.paste_gate and ref is not None:   # the same function the gated training loss scores
                sr = as_inferred(sr, ref[..., : size[0], : size[1]], lr_out, s, self.back_projection)
            elif self.back_projection:
                sr = back_project(sr, lr_out, s, self.back_projection)
        aux = {key: _crop_aux(value, padded, size) for key, value in (aux or {}).items()}
        return sr, aux

    def __repr__(self) -> str:
        source = f", weights={self.weights}" if self.weights else ""
        return f"Method({self.name!r}, scale={self.scale}, device={self.device}{source})"


def _crop_aux(value, padded: tuple[int, int], size: tuple[int, int]):
    """Crop full-resolution maps (``…×H_pad×W_pad``) back to the output size; leave others alone."""
    if isinstance(value, torch.Tensor) and value.dim() >= 2 and tuple(value.shape[-2:]) == padded:
        value = value[..., : size[0], : size[1]]
        return value.float() if value.is_floating_point() else value
    return value


def load_method(name: str | None, scale: int, weights: str | os.PathLike | None = None,
                device: str | torch.device | None = "cpu", half: bool | str = False, **options) -> Method:
    """Build the :class:`Method` called ``name`` for ``scale``.

    Args:
        name: a variant (``crossnet``, ``crossnetpp``, ``crossmpi``, ``refsrnet``, ``mdsr``) or a baseline
            (``bicubic``, ``patchmatch``). ``None`` with ``weights``: the checkpoint's own variant.
        scale: upscaling factor.
        weights: checkpoint file; ``None`` → the shipped weights for ``name`` and ``scale``.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"``.
        half: ``True``/``"fp16"`` or ``"bf16"``: autocast on a GPU (networks only; error on CPU).
        options: keyword options of a baseline (e.g. PatchMatch's ``patch``/``iters``).
    Raises:
        RefsrError: unknown name, no weights (naming the ``refsr train`` command that makes them),
            a checkpoint of another variant.
    """
    from refsr_cli.archs import checkpoint as ckpt
    from refsr_cli.archs import spec, variants
    from refsr_cli.archs.blocks import fold_batch_norm

    known_baselines = baselines()
    if name is not None and name in known_baselines and name not in variants():
        if weights is not None:
            raise RefsrError(f"--weights does not apply to the {name} baseline (it has no weights)")
        fn = known_baselines[name]
        device = resolve_device(device)

        def run(lr, ref, s):
            return fn(lr, ref, s, **options)

        return Method(name, scale, run, 1, name not in _REFERENCE_FREE_BASELINES, device)

    if weights is None:
        if name is None:
            raise RefsrError("give --method NAME or --weights FILE")
        if name not in variants():
            raise RefsrError(f"unknown method {name!r} (known: {', '.join(method_names())})")
        weights = ckpt.shipped_weights(name, scale)
        if weights is None:
            raise RefsrError(f"no shipped weights for {name} ×{scale} (looked for "
                             f"{ckpt.weights_dir() / f'{name}_x{scale}.pt'}); train them with "
                             f"`refsr train --variant {name} --scale {scale}` and pass --weights FILE")
    elif name is not None and name not in variants():
        raise RefsrError(f"unknown method {name!r} (known: {', '.join(method_names())})")
    weights = Path(weights)
    if options:
        raise RefsrError(f"options {sorted(options)} apply to baselines only")
    device = resolve_device(device)
    model, payload = ckpt.load_model(weights, device, scale=scale)
    variant = payload.get("variant")
    if name is not None and variant != name:
        raise RefsrError(f"{weights}: checkpoint holds a {variant} network, not {name}")
    trained = payload.get("scale")
    if trained is not None and int(trained) != int(scale):
        console.warn(f"{weights}: trained for ×{trained}, used at ×{scale}")
    model_spec = spec(variant)
    if scale not in model_spec.scales:
        raise RefsrError(f"{variant} supports scales {', '.join(map(str, model_spec.scales))}, not {scale}")
    meta = {k: payload.get(k) for k in ("variant", "scale", "meta")}
    method = Method(variant, scale, model, model_spec.input_multiple, model_spec.needs_reference, device,
                    half, weights=weights, checkpoint=meta, model=model, recipe=model_spec.recipe)
    fold_batch_norm(model)        # an inference-only copy: nothing trains it afterwards
    if device.type == "cpu":      # measured on CPU only (benchmarks/bench_models.py)
        model.to(memory_format=torch.channels_last)
        method.channels_last = True
    return method
