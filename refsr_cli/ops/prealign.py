"""``--prealign``: bring a reference with another field of view onto the LR view's frame.

Real rigs (a telephoto + wide camera, two phones) give a reference whose scale, rotation and position
differ from the LR view's, so it is not ``scale ×`` the LR size pixel for pixel. We estimate one global
similarity transform (isotropic scale, rotation, translation) from feature matches and resample the
reference onto the LR view's HR grid, so the network only has to handle the remaining parallax.

Steps:

1. Detection images at a common working resolution: the LR upscaled (bicubic) by ``f`` and the reference
   downscaled by ``f / s`` — if the reference *were* ``s ×`` the LR, both would then show the scene at
   the same size. ``f`` is chosen so that the working LR is at most ``max_side`` pixels (speed), and at
   most ``s`` (no point upsampling beyond the HR grid).
2. SIFT (default; ORB as ``detector="orb"``) keypoints and descriptors on both grayscale images, matched
   with Lowe's ratio test and cross-checking.
3. RANSAC fit of a :class:`skimage.transform.SimilarityTransform` from HR-grid coordinates of the LR
   view to reference pixel coordinates (pixel centres, ``x`` = column).
4. The reference is sampled at ``T(p)`` for every HR pixel ``p`` (bicubic, borders clamped — the
   design's warping convention), in bands of rows so memory stays near one output image.

A transform that is the identity to within 0.05 px over the image leaves the reference untouched. When
no transform can be found (too few features, too few matches, no consistent similarity — typically a
reference of another scene) :class:`ReferenceNotAligned` says why; ``refsr infer`` then falls back to
single-image SR.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from refsr_cli.errors import RefsrError
from refsr_cli.ops.block_match import luma
from refsr_cli.ops.resize import imresize
from refsr_cli.ops.warp import sampling_grid

MIN_INLIERS = 8


class ReferenceNotAligned(RefsrError):
    """No similarity maps the LR view onto the reference: too few features or matches, or no consistent
    transform among them (the message says which)."""


@dataclass
class Alignment:
    """Similarity ``ref_xy = scale · R(rotation) · hr_xy + (tx, ty)`` (HR grid of the LR view → Ref)."""

    scale: float
    rotation: float      # radians
    tx: float
    ty: float
    matches: int
    inliers: int

    @property
    def matrix(self) -> np.ndarray:
        c, s = math.cos(self.rotation) * self.scale, math.sin(self.rotation) * self.scale
        return np.array([[c, -s, self.tx], [s, c, self.ty], [0, 0, 1]], dtype=np.float64)

    def describe(self) -> str:
        return (f"scale {self.scale:.4f}, rotation {math.degrees(self.rotation):.2f}°, "
                f"shift ({self.tx:.1f}, {self.ty:.1f}) px, {self.inliers}/{self.matches} matches")


def _gray(image: torch.Tensor) -> np.ndarray:
    x = image if image.dim() == 4 else image[None]
    return luma(x[:1])[0, 0].clamp(0, 1).double().numpy()


def _features(gray: np.ndarray, detector: str):
    """``(keypoints (row, col), descriptors)``; empty arrays when the image has no usable features."""
    from skimage.feature import ORB, SIFT

    try:
        if detector == "orb":
            extractor = ORB(n_keypoints=2000, fast_threshold=0.05)
        else:
            extractor = SIFT()
        extractor.detect_and_extract(gray)
        return np.asarray(extractor.keypoints, np.float64), extractor.descriptors
    except (RuntimeError, ValueError, IndexError):  # skimage raises these on feature-less images
        return np.zeros((0, 2)), None


def estimate_alignment(lr: torch.Tensor, ref: torch.Tensor, scale: int, detector: str = "sift",
                       max_side: int = 1024, seed: int = 0) -> Alignment:
    """Fit the similarity from the LR view's HR grid to the reference's pixels (see module docs)."""
    from skimage.feature import match_descriptors
    from skimage.measure import ransac
    from skimage.transform import SimilarityTransform

    if detector not in ("sift", "orb"):
        raise ValueError(f"unknown detector {detector!r} (sift or orb)")
    lr = lr if lr.dim() == 4 else lr.unsqueeze(0)
    ref = ref if ref.dim() == 4 else ref.unsqueeze(0)
    h, w = lr.shape[-2:]
    factor = min(float(scale), max_side / max(h, w))
    factor = max(factor, 1.0) if max(h, w) < max_side else factor
    ref_factor = factor / scale
    work_lr = imresize(lr.float(), scale=factor) if abs(factor - 1) > 1e-6 else lr.float()
    work_ref = imresize(ref.float(), scale=ref_factor) if abs(ref_factor - 1) > 1e-6 else ref.float()

    kp_lr, desc_lr = _features(_gray(work_lr), detector)
    kp_ref, desc_ref = _features(_gray(work_ref), detector)
    if len(kp_lr) < MIN_INLIERS or len(kp_ref) < MIN_INLIERS or desc_lr is None or desc_ref is None:
        raise ReferenceNotAligned(f"--prealign: too few features to align ({len(kp_lr)} in LR, {len(kp_ref)} "
                                  "in reference); the images may be too small or too flat")
    matches = match_descriptors(desc_lr, desc_ref, cross_check=True,
                                max_ratio=0.8 if detector == "sift" else 0.9)
    if len(matches) < MIN_INLIERS:
        raise ReferenceNotAligned(f"--prealign: only {len(matches)} feature matches between LR and reference; "
                                  "are they views of the same scene?")
    # Working-image (row, col) → pixel-centre (x, y) on the HR grid / on the reference.
    src = kp_lr[matches[:, 0]][:, ::-1]
    dst = kp_ref[matches[:, 1]][:, ::-1]
    src = (src + 0.5) * (scale / factor) - 0.5
    dst = (dst + 0.5) / ref_factor - 0.5
    threshold = max(1.5 / ref_factor, 1.0)  # 1.5 working pixels, in reference pixels
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skimage's API-transition FutureWarnings are not the user's concern
        model, inliers = ransac((src, dst), SimilarityTransform, min_samples=3, residual_threshold=threshold,
                                max_trials=2000, rng=seed)
    count = int(inliers.sum()) if inliers is not None else 0
    if model is None or count < MIN_INLIERS:
        raise ReferenceNotAligned(f"--prealign: no consistent similarity transform ({count} of {len(matches)} "
                                  "matches agree); the views may differ by more than scale, rotation and shift")
    # Refine on all inliers with a least-squares fit (RANSAC's model comes from its best sample).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        refined = SimilarityTransform()
        if refined.estimate(src[inliers], dst[inliers]):
            model = refined
    tx, ty = (float(v) for v in model.translation)
    return Alignment(float(model.scale), float(model.rotation), tx, ty, len(matches), count)


def resample_reference(ref: torch.Tensor, matrix: np.ndarray, size: tuple[int, int],
                       band: int = 256) -> torch.Tensor:
    """Sample ``ref`` at ``T(p)`` for every pixel ``p`` of an ``size = (H, W)`` grid → ``1×3×H×W``; ``T`` is
    the affine map of the 3×3 ``matrix`` (an :attr:`Alignment.matrix`, or any affine map to ref pixels)."""
    ref = ref if ref.dim() == 4 else ref.unsqueeze(0)
    ref = ref.float()
    H, W = size
    hr_, wr_ = ref.shape[-2:]
    m = torch.from_numpy(np.asarray(matrix, np.float64)).float()
    out = torch.empty(1, 3, H, W, dtype=torch.float32)
    xs = torch.arange(W, dtype=torch.float32)
    for y0 in range(0, H, band):
        y1 = min(H, y0 + band)
        ys = torch.arange(y0, y1, dtype=torch.float32)
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        qx = m[0, 0] * gx + m[0, 1] * gy + m[0, 2]
        qy = m[1, 0] * gx + m[1, 1] * gy + m[1, 2]
        grid = sampling_grid(qx, qy, hr_, wr_)
        out[:, :, y0:y1] = F.grid_sample(ref, grid.unsqueeze(0), mode="bicubic", padding_mode="border",
                                         align_corners=True).clamp_(0, 1)
    return out


def prealign(lr: torch.Tensor, ref: torch.Tensor, scale: int, detector: str = "sift"):
    """Align ``ref`` onto the LR view's HR grid; returns ``(1×3×(s·h)×(s·w) reference, Alignment)``."""
    lr = lr if lr.dim() == 4 else lr.unsqueeze(0)
    h, w = lr.shape[-2:]
    size = (scale * h, scale * w)
    alignment = estimate_alignment(lr, ref, scale, detector)
    ref4 = ref if ref.dim() == 4 else ref.unsqueeze(0)
    corners = np.array([[0, 0, 1], [size[1] - 1, 0, 1], [0, size[0] - 1, 1], [size[1] - 1, size[0] - 1, 1]]).T
    moved = np.abs(alignment.matrix @ corners - corners).max()
    if tuple(ref4.shape[-2:]) == size and moved < 0.05:
        return ref4.float(), alignment
    return resample_reference(ref4, alignment.matrix, size), alignment
