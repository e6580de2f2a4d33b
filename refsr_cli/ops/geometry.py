"""The geometry of a pair, read from the pair itself: which way and how far the reference is displaced.

A pair's backward flow ``V`` (``target(p) = ref(p + V(p))``, docs/design.md §2) is measured by dense
coarse-to-fine block matching (:mod:`refsr_cli.ops.block_match`) at the pixels where it can be trusted
(structured, well matched, confirmed by matching back), and summarised:

* ``direction`` — the unit vector ``b`` along which the displacements lie (the principal axis of the
  second moments of ``V``, signed so that the mean displacement along it is positive): ``(1, 0)`` for a
  rectified horizontal stereo pair, the baseline direction of light-field views, the pan of a video;
* ``span`` — the range ``(lo, hi)`` of ``V·b`` (2nd to 98th percentile, HR px): what a plane sweep along ``b``
  must cover;
* ``across`` — the spread of the component perpendicular to ``b`` (98th percentile of ``|V·b⊥|``): near zero
  for a rectified pair, large for 2-D motion;
* ``parallax`` — the mean ``|V|``, the figure ``refsr bench`` reports for pairs without ground truth.

At inference the target is the LR itself: the reference is brought down to the LR's size with the same
antialiased bicubic that makes LR images, so both carry the same detail, and matched there (long side at
most :data:`WORK_SIZE`; larger targets are reduced first). The cost is that of two matchings of
≤ 256-px images (tens of milliseconds on two cores), whatever the image size.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from refsr_cli.ops.block_match import luma, match_flow, reliable
from refsr_cli.ops.resize import imresize

WORK_SIZE = 256         # long side (px) at most that the pair is matched at (the matching's cost grows with it)
MIN_MATCHES = 12        # fewer reliable samples than this: no estimate (textureless, or another scene)
MIN_SHARE = 0.02        # … or fewer than this share of the sampling grid: chance agreements of another
                        # scene (a real pair of the suite keeps ≥ 18 %; another scene's ≤ 0.5 %)


@dataclass(frozen=True)
class PairGeometry:
    """Displacement statistics of a pair, in HR pixels (see the module docstring)."""

    matches: int
    direction: tuple[float, float]
    span: tuple[float, float]
    across: float
    parallax: float
    shift: tuple[float, float]          # median displacement (dx, dy)

    def to_json(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    def describe(self) -> str:
        bx, by = self.direction
        return (f"parallax along ({bx:+.2f}, {by:+.2f}) from {self.span[0]:.1f} to {self.span[1]:.1f} px "
                f"(±{self.across:.1f} px across), {self.matches} matches")


def correspondences(target: torch.Tensor, ref: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """``(p, q)``: ``M×2`` float64 pixel positions ``(x, y)`` in ``ref``'s pixel grid, ``target(p) ≈ ref(q)``,
    at the reliable pixels of a dense block matching between ``target`` and ``ref`` (``[1×]3×…``), on a
    grid every other pixel.

    ``target`` is the other view at ``ref``'s size (an HR) or smaller by an integer factor ``s`` (an LR: its
    positions are given on the HR grid). Both are brought to the working size — the target's own size,
    its long side at most :data:`WORK_SIZE` — with the antialiased bicubic that makes LR images, so both
    carry the same detail.
    """
    target = luma((target[0] if target.dim() == 4 else target).float().cpu()[None])
    ref = luma((ref[0] if ref.dim() == 4 else ref).float().cpu()[None])
    H, W = ref.shape[-2:]
    h, w = target.shape[-2:]
    factor = min(1.0, WORK_SIZE / max(h, w))
    size = (max(8, round(h * factor)), max(8, round(w * factor)))
    target_work = imresize(target, size=size).clamp(0, 1) if size != (h, w) else target
    ref_work = imresize(ref, size=size).clamp(0, 1)
    # One batch of two matchings: target → ref, and ref → target for the round-trip check.
    flows, costs = match_flow(torch.cat((target_work, ref_work)), torch.cat((ref_work, target_work)))
    keep = reliable(target_work, ref_work, flows[:1], costs[:1], flows[1:])[0, 0]
    keep[1::2, :] = False
    keep[:, 1::2] = False
    if int(keep.sum()) < MIN_SHARE * ((size[0] + 1) // 2) * ((size[1] + 1) // 2):
        return np.zeros((0, 2)), np.zeros((0, 2))
    ys, xs = torch.nonzero(keep, as_tuple=True)
    scale = np.array([W / size[1], H / size[0]])
    work = np.stack((xs.numpy(), ys.numpy()), axis=1).astype(np.float64)
    p = (work + 0.5) * scale - 0.5          # pixel centres of the working grid on ref's grid
    return p, p + flows[0].permute(1, 2, 0)[keep].double().numpy() * scale


def displacement_samples(target: torch.Tensor, ref: torch.Tensor) -> np.ndarray:
    """Backward-flow samples ``V = q − p`` (``M×2``, ref pixels) of :func:`correspondences`."""
    p, q = correspondences(target, ref)
    return q - p


def summarise(v: np.ndarray) -> PairGeometry | None:
    """:class:`PairGeometry` of displacement samples ``v`` (``M×2``); ``None`` below :data:`MIN_MATCHES`."""
    if len(v) < MIN_MATCHES:
        return None
    moments = v.T @ v / len(v)
    values, vectors = np.linalg.eigh(moments)
    b = vectors[:, int(np.argmax(values))]
    along = v @ b
    if along.mean() < 0:
        b, along = -b, -along
    across = np.abs(v @ np.array([-b[1], b[0]]))
    lo, hi = np.percentile(along, [2, 98])
    median = np.median(v, axis=0)
    return PairGeometry(matches=len(v), direction=(float(b[0]), float(b[1])), span=(float(lo), float(hi)),
                        across=float(np.percentile(across, 98)), parallax=float(np.linalg.norm(v, axis=1).mean()),
                        shift=(float(median[0]), float(median[1])))


def estimate_geometry(target: torch.Tensor, ref: torch.Tensor) -> PairGeometry | None:
    """The pair's :class:`PairGeometry` in ``ref``'s pixels (``None`` when too few consistent matches: a
    textureless pair or a reference of another scene). ``target``: the other view, at ``ref``'s size or an
    integer factor smaller (an LR); ``[1×]3×H×W`` in [0, 1]."""
    return summarise(displacement_samples(target, ref))


ALIGN_ACROSS = 2.0      # px: a spread across the main direction below this is left to the 1-D sweep
ALIGN_GAIN = 0.8        # the affine map is used when it leaves at most this share of that spread


def fit_affine(p: np.ndarray, q: np.ndarray, trials: int = 256) -> np.ndarray | None:
    """The affine map ``q ≈ A·p`` (3×3) of most correspondences, or ``None``.

    RANSAC, vectorised: ``trials`` maps from random triples of at most 800 correspondences are solved and
    scored at once (residual ≤ 1 % of the image's extent, at least 2 px), and the one with the most inliers
    is refitted to them by least squares — a few milliseconds, where scikit-image's loop took 35 ms.
    """
    if len(p) < 3 * MIN_MATCHES:
        return None
    rng = np.random.default_rng(0)
    pick = rng.choice(len(p), min(len(p), 800), replace=False)
    p, q = p[pick], q[pick]
    threshold = max(2.0, 0.01 * float(np.ptp(p, axis=0).max()))
    ph = np.concatenate((p, np.ones((len(p), 1))), axis=1)                     # M×3
    triples = np.stack([rng.choice(len(p), 3, replace=False) for _ in range(trials)])
    src = ph[triples]                                                            # T×3×3
    ok = np.abs(np.linalg.det(src)) > 1e-6                                       # not collinear
    if not ok.any():
        return None
    maps = np.linalg.solve(src[ok], q[triples[ok]])                              # T×3×2: q = [p 1]·X
    inliers = np.linalg.norm(ph[None] @ maps - q[None], axis=2) <= threshold     # T×M
    best = inliers[int(np.argmax(inliers.sum(axis=1)))]
    if best.sum() < MIN_MATCHES:
        return None
    x, *_ = np.linalg.lstsq(ph[best], q[best], rcond=None)                       # 3×2
    return np.vstack((x.T, [0.0, 0.0, 1.0]))


def estimate_aligned_geometry(target: torch.Tensor, ref: torch.Tensor
                              ) -> tuple[PairGeometry | None, np.ndarray | None]:
    """``(geometry, affine)`` for a sweep that follows pairs that are not rectified.

    When the displacements spread across their main direction by more than :data:`ALIGN_ACROSS` px (2-D
    motion: a camera that turned or zoomed as well as moved) and an affine map ``A`` of the target's
    pixels onto the reference's leaves at most :data:`ALIGN_GAIN` of that spread, returns ``A`` and the
    :class:`PairGeometry` of what is left once the reference is resampled through it
    (``ref'(p) = ref(A·p)``: displacements ``A⁻¹·q − p``) — the plane-plus-parallax form of a sweep of
    plane-induced homographies, in the affine case. Otherwise ``(estimate_geometry(…), None)``.
    """
    p, q = correspondences(target, ref)
    plain = summarise(q - p)
    if plain is None or plain.across <= ALIGN_ACROSS:
        return plain, None
    affine = fit_affine(p, q)
    if affine is None:
        return plain, None
    back = np.linalg.inv(affine)
    residual = summarise(q @ back[:2, :2].T + back[:2, 2] - p)
    if residual is None or residual.across > ALIGN_GAIN * plain.across:
        return plain, None
    return residual, affine


def sweep_geometry(geometry: PairGeometry, margin: float = 0.1) -> dict:
    """A plane sweep covering ``geometry``: ``{"baseline": direction, "disparity_range": (lo, hi)}``, the
    span widened by ``margin`` of its length (at least 2 px) on each side."""
    lo, hi = geometry.span
    pad = max(2.0, margin * (hi - lo))
    return {"baseline": geometry.direction, "disparity_range": (lo - pad, hi + pad)}
