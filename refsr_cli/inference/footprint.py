"""A reference that sees only part of the view: its footprint, and SR that uses it only there.

A wide + telephoto rig gives a reference of the *centre* of the wide view, at another zoom, from another
position. ``--prealign`` (:mod:`refsr_cli.ops.prealign`) finds the similarity from the LR view's HR grid
to the reference's pixels and resamples the reference onto that grid; outside the reference's field of
view the resampled image is only its border pixels smeared outwards, and a network fed that smear
does worse than single-image SR. So:

* :class:`Footprint` says where on the HR grid the reference has content (``mask``), how deep inside
  each pixel lies (``weights``: 0 at the footprint's edge, rising over a band to 1), the zoom (reference
  pixels per LR pixel) and the coverage (the share of the view the reference sees).
* :func:`footprint_inference` runs the reference-based method only on the LR crop around the footprint
  (tiles outside it never reach the reference path) and the registry's single-image network on the
  whole view, and blends the two with ``weights``: the output is single-image SR outside, reference-based
  SR inside, and a smooth mix across the band, where the reference-based result is least sure (content
  near the footprint's edge has its match beyond it).

Coordinates follow :mod:`refsr_cli.ops.prealign`: pixel centres, ``x`` = column, ``T(p) = M·(x, y, 1)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from refsr_cli.inference.matched_reference import rematched_output

# LR pixels over which the blend rises from single-image to reference-based SR. Both results are
# back-projected onto the same LR, so they differ only in detail finer than it, and a ramp of one LR pixel
# hides the switch. A wider one mixes single-image SR into the covered region, where the reference path is
# good up to the edge: on wide/tele cases made from training frames (benchmarks/bench_footprint_band.py),
# 1 LR px scored 0.31 dB (×4) and 0.70 dB (×8) more in the covered region than 2 LR px, and the band never
# fell below the worse of its two inputs (docs/real-suite.md).
BAND_LR = 1
CONTEXT_LR = 8        # LR pixels of context around the footprint given to the reference path
FULL_COVERAGE = 0.999  # a footprint covering this share of the view is the whole view: no blending
MIN_COVERAGE = 0.02    # a reference seeing less of the view is not used: single-image SR everywhere


@dataclass
class Footprint:
    """Where a prealigned reference has content on the ``size = (H, W)`` HR grid of an ×``scale`` LR view.

    ``matrix``: 3×3 map of HR-grid pixels to reference pixels; ``ref_size``: the reference's ``(h, w)``.
    """

    matrix: np.ndarray
    ref_size: tuple[int, int]
    size: tuple[int, int]
    scale: int
    _mask: torch.Tensor | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def zoom(self) -> float:
        """Reference pixels per LR pixel (linear): 1 = the LR's density, ``scale`` = the HR grid's."""
        return math.sqrt(abs(float(np.linalg.det(self.matrix[:2, :2])))) * self.scale

    def mask(self) -> torch.Tensor:
        """``H×W`` bool: the HR pixels whose mapped position lies inside the reference's pixel area (the
        rectangle of its pixel centres grown by half a pixel) — the *covered* region of region metrics.
        Computed once (the coverage, the blend weights and the metrics all read it)."""
        if self._mask is not None:
            return self._mask
        H, W = self.size
        m = torch.from_numpy(np.asarray(self.matrix, np.float64))
        ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64),
                                indexing="ij")
        qx = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
        qy = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
        h, w = self.ref_size
        self._mask = (qx >= -0.5) & (qx <= w - 0.5) & (qy >= -0.5) & (qy <= h - 0.5)
        return self._mask

    def depth(self) -> torch.Tensor:
        """``H×W``: distance (HR px) from each covered pixel to the nearest uncovered pixel of the view (0
        outside). Where the footprint reaches the view's own border there is no edge to blend across."""
        from scipy.ndimage import distance_transform_edt

        covered = np.pad(self.mask().numpy(), 1, constant_values=True)
        return torch.from_numpy(distance_transform_edt(covered)[1:-1, 1:-1].astype(np.float32))

    @property
    def coverage(self) -> float:
        return float(self.mask().float().mean())

    @property
    def full(self) -> bool:
        return self.coverage >= FULL_COVERAGE

    def weights(self) -> torch.Tensor:
        """``1×1×H×W`` blend weight of the reference-based result: a raised cosine from 0 at the
        footprint's edge to 1 at ``BAND_LR`` LR pixels inside it."""
        t = ((self.depth() - 1) / (BAND_LR * self.scale)).clamp(0, 1)
        return (0.5 - 0.5 * torch.cos(math.pi * t))[None, None]

    def lr_box(self, lr_size: tuple[int, int]) -> tuple[int, int, int, int] | None:
        """``(y0, y1, x0, x1)`` of the LR crop holding every pixel of positive weight plus
        ``CONTEXT_LR`` pixels of context; ``None`` when the reference covers nothing."""
        rows, cols = torch.nonzero(self.mask(), as_tuple=True)
        if rows.numel() == 0:
            return None
        s, (h, w) = self.scale, lr_size
        y0 = max(0, int(rows.min()) // s - CONTEXT_LR)
        x0 = max(0, int(cols.min()) // s - CONTEXT_LR)
        y1 = min(h, int(rows.max()) // s + 1 + CONTEXT_LR)
        x1 = min(w, int(cols.max()) // s + 1 + CONTEXT_LR)
        return y0, y1, x0, x1

    def to_json(self) -> dict:
        return {"zoom": round(self.zoom, 4), "coverage": round(self.coverage, 4)}


def blends(method, footprint: Footprint | None) -> bool:
    """Whether :func:`footprint_inference` splits ``method``'s work at ``footprint``: a reference-based
    method and a footprint that leaves part of the view uncovered."""
    return footprint is not None and method.needs_reference and not footprint.full


def whole_image(method, lr: torch.Tensor, ref: torch.Tensor | None) -> tuple[torch.Tensor, dict]:
    """The default ``run`` of :func:`pair_inference` and :func:`footprint_inference`: one untiled call."""
    return method(lr, ref)


def pair_inference(method, lr: torch.Tensor, ref: torch.Tensor | None, run: Callable | None = None,
                   bound: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """SR of the whole pair ``(lr, ref)`` (``1×3×h×w``, ``1×3×sh×sw``) by ``method``: ``run(method, lr, ref)``
    (a whole-image or tiled call; default: ``method(lr, ref)``) on the reference ``method.bind_pair`` gives,
    then its rematching steps (``method.rematch_steps``), each on the reference matched again with the output
    so far as the guide: ``run`` again on it (``"network"``) or the output through the paste gate with it
    (``"gate"``). Every step sees the whole image, as the first matching does. ``bound``: what
    ``method.bind_pair(lr, ref)`` already returned for this pair."""
    run = run or whole_image
    sr, aux = run(method, lr, method.bind_pair(lr, ref) if bound is None else bound)
    if ref is None or not method.rematch_steps:
        return sr, aux

    def network_pass(matched: torch.Tensor) -> torch.Tensor:
        nonlocal aux
        out, aux = run(method, lr, matched)
        return out

    with torch.no_grad():
        sr = rematched_output(method.model, method.rematch_steps, lr.to(ref.device), ref, method.scale, sr,
                              network_pass, method.back_projection)
    return sr, aux


def footprint_inference(method, lr: torch.Tensor, ref: torch.Tensor | None, footprint: Footprint | None,
                        run: Callable | None = None) -> tuple[torch.Tensor, dict]:
    """SR of ``lr`` (``1×3×h×w``) with ``ref`` (``1×3×sh×sw``, prealigned when ``footprint`` is given):
    ``run(method, lr, ref) -> (sr, aux)`` is a whole-image or tiled call (default: ``method(lr, ref)``).

    Where ``footprint`` says the reference has content in part of the view only, ``run`` goes over the
    footprint's LR crop for ``method`` and over the whole view for the single-image network
    (``method.fallback_method()``), blended by ``footprint.weights()``; ``aux`` then holds the reference
    path's intermediates pasted at their place (zero flow / the reference itself elsewhere). Otherwise —
    no footprint, one that covers the view, a single-image method or a baseline (nothing to fall back on),
    nothing covered — ``method`` runs on the whole view (:func:`pair_inference`). ``method.bind_pair`` reads the
    geometry of what the reference path sees.
    """
    run = run or whole_image
    single = method.fallback_method() if blends(method, footprint) else None
    box = footprint.lr_box(tuple(lr.shape[-2:])) if single is not None else None
    if box is None:
        return pair_inference(method, lr, ref, run)
    s = method.scale
    sr, _ = run(single, lr, None)
    sr = sr.float().clone()
    y0, y1, x0, x1 = box
    crop_lr, crop_ref = lr[..., y0:y1, x0:x1], ref[..., s * y0:s * y1, s * x0:s * x1]
    bound = method.bind_pair(crop_lr, crop_ref)
    if method.reference_unmatched:       # the covered part matches nothing: single-image SR everywhere
        return sr, {}
    inner, crop_aux = pair_inference(method, crop_lr, crop_ref, run, bound)
    window = (..., slice(s * y0, s * y1), slice(s * x0, s * x1))
    w = footprint.weights()[window].to(sr.device)
    sr[window] = w * inner.float().to(sr.device) + (1 - w) * sr[window]
    aux = {}
    for key, value in crop_aux.items():
        if isinstance(value, torch.Tensor) and value.dim() == 4 and value.shape[-2:] == inner.shape[-2:]:
            full = ref.to(value.dtype).clone() if key == "warped" and value.shape[1] == 3 else \
                value.new_zeros(value.shape[:2] + sr.shape[-2:])
            full[window] = value
            aux[key] = full
    return sr, aux
