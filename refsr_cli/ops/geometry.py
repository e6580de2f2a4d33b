"""The geometry of a pair, read from the pair itself: which way and how far the reference is displaced.

A pair's backward flow ``V`` (``target(p) = ref(p + V(p))``, docs/design.md §2) is sampled at SIFT matches
between the target and the reference, outliers removed by a RANSAC fit of the fundamental matrix (every
static-scene pair, rectified or not, obeys one), and summarised:

* ``direction`` — the unit vector ``b`` along which the displacements lie (the principal axis of the
  second moments of ``V``, signed so that the mean displacement along it is positive): ``(1, 0)`` for a
  rectified horizontal stereo pair, the baseline direction of light-field views, the pan of a video;
* ``span`` — the range ``(lo, hi)`` of ``V·b`` (2nd to 98th percentile, HR px): what a plane sweep along ``b``
  must cover;
* ``across`` — the spread of the component perpendicular to ``b`` (98th percentile of ``|V·b⊥|``): near zero
  for a rectified pair, large for 2-D motion;
* ``parallax`` — the mean ``|V|``, the figure ``refsr bench`` reports for pairs without ground truth.

At inference the target is the LR itself. Both images are brought to a working size (long side ≤ 256 px);
where that size holds more detail than the LR has, the reference is blurred down to the LR's level (the
same degradation both ways), so that matching compares like with like. Everything runs at the working
size: the cost is two SIFT passes on ≤ 256-px images, whatever the image size.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from refsr_cli.ops.features import landmark_matches
from refsr_cli.ops.resize import imresize

WORK_SIZE = 256         # long side (px) at most that the pair is matched at (SIFT's cost grows with it)
MIN_MATCHES = 12        # fewer consistent matches than this: no estimate


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


def _inliers(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Mask of the matches consistent with one fundamental matrix (all of them when too few to fit)."""
    if len(p) < 16:
        return np.ones(len(p), bool)
    from skimage.measure import ransac
    from skimage.transform import FundamentalMatrixTransform

    try:
        _, inliers = ransac((p, q), FundamentalMatrixTransform, min_samples=8, residual_threshold=1.0,
                            max_trials=500, rng=0)
    except (ValueError, np.linalg.LinAlgError):
        return np.ones(len(p), bool)
    if inliers is None or inliers.sum() < MIN_MATCHES:
        return np.ones(len(p), bool)
    return inliers


def displacement_samples(target: torch.Tensor, ref: torch.Tensor) -> np.ndarray:
    """Backward-flow samples ``V`` (``M×2`` float64, ``(dx, dy)`` in ``ref``'s pixels) at consistent SIFT
    matches between ``target`` and ``ref`` (``[1×]3×…``).

    ``target`` is the other view at ``ref``'s size (an HR) or smaller by an integer factor ``s`` (an LR:
    then ``ref`` is blurred to the LR's level of detail wherever the working size keeps more than it).
    """
    target = (target[0] if target.dim() == 4 else target).float().cpu()
    ref = (ref[0] if ref.dim() == 4 else ref).float().cpu()
    H, W = ref.shape[-2:]
    s = H / target.shape[-2]
    factor = min(1.0, WORK_SIZE / max(H, W))                  # working size relative to ref
    size = (max(8, round(H * factor)), max(8, round(W * factor)))
    ref_work = imresize(ref[None], size=size).clamp(0, 1) if factor < 1 else ref[None]
    target_work = imresize(target[None], size=size).clamp(0, 1) if target.shape[-2:] != size else target[None]
    detail = s * factor                 # > 1: the working size holds more detail than the LR has
    if detail > 1.05:
        small = (max(4, round(size[0] / detail)), max(4, round(size[1] / detail)))
        ref_work = imresize(imresize(ref_work, size=small), size=size).clamp(0, 1)
    p, q = landmark_matches(target_work, ref_work, ratio=0.75, max_matches=2000)
    if len(p) == 0:
        return np.zeros((0, 2))
    keep = _inliers(p.astype(np.float64), q.astype(np.float64))
    return (q[keep] - p[keep]).astype(np.float64) / factor


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


def sweep_geometry(geometry: PairGeometry, margin: float = 0.1) -> dict:
    """A plane sweep covering ``geometry``: ``{"baseline": direction, "disparity_range": (lo, hi)}``, the
    span widened by ``margin`` of its length (at least 2 px) on each side."""
    lo, hi = geometry.span
    pad = max(2.0, margin * (hi - lo))
    return {"baseline": geometry.direction, "disparity_range": (lo - pad, hi + pad)}
