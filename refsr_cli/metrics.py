"""Image quality metrics: PSNR, SSIM and IFC, and comparing files or folders of images.

Every metric takes ``sr`` and ``gt`` as ``3×H×W`` (or ``1×3×H×W``) float tensors or arrays, RGB in
[0, 1] (torch tensors on any device, or NumPy ``3×H×W`` arrays); computation is in float64 on the CPU.

Conventions (docs/design.md §5):

* Default, as in the CrossNet papers: RGB in [0, 1], the whole image.
* ``y=True``: BT.601 luma from RGB, ``Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255`` (the
  ``rgb2ycbcr`` of MATLAB, BasicSR and mmagic — on RGB input, not BGR). ``crop=N`` drops ``N`` pixels
  at every border (BasicSR's ``crop_border``). Both apply to all three metrics.
* PSNR: ``10·log10(1 / MSE)`` over all pixels and channels; identical images give ``inf``.
* SSIM: Gaussian window 11×11, σ = 1.5, K1 = 0.01, K2 = 0.03, data range 1, population (not sample)
  covariances, the mean over the "valid" region (pixels at least 5 from the border — the region
  ``skimage.metrics.structural_similarity`` keeps), averaged over channels. Equal to skimage's
  ``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
  data_range=1, channel_axis=…)``. Constant images are fine (the constants C1, C2 keep it finite).
* IFC: Sheikh, Bovik & de Veciana (2005), following the authors' ``ifcvec.m`` (see :func:`ifc`) on
  grayscale images in 0–255: MATLAB ``rgb2gray`` weights by default, the BT.601 Y (16–235) with ``y``.

In JSON output non-finite values (PSNR ``inf`` of identical images, IFC ``nan`` of images too small for
the pyramid) are written as ``null``, because strict JSON has no Infinity/NaN; the terminal table
shows ``inf``/``n/a`` and CSV writes ``inf``/``nan``.
"""
from __future__ import annotations

import csv
import json
import math
import os
import threading
from pathlib import Path

import numpy as np
import torch

from refsr_cli.errors import RefsrError

# MATLAB rgb2gray weights (the authors' IFC code ran on MATLAB grayscale images).
_GRAY = (0.298936021293775, 0.587043074451121, 0.114020904255103)
# BT.601 luma of MATLAB's rgb2ycbcr / BasicSR's rgb2ycbcr(y_only=True), for RGB in [0, 1] → [0, 255].
_Y601 = (65.481, 128.553, 24.966)

METRICS = ("psnr", "ssim", "ifc")
IFC_MIN_SIZE = 72  # smallest side pyrtools accepts for a 4-level sp5 pyramid


# --------------------------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------------------------

def _as_array(image, name: str) -> np.ndarray:
    """``3×H×W`` / ``1×3×H×W`` tensor or array → ``3×H×W`` float64 NumPy array."""
    if isinstance(image, torch.Tensor):
        image = image.detach().to("cpu", torch.float64).numpy()
    array = np.asarray(image, dtype=np.float64)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3 or array.shape[0] != 3:
        raise RefsrError(f"{name}: expected a 3×H×W image, got shape {tuple(array.shape)}")
    if not np.isfinite(array).all():
        raise RefsrError(f"{name}: image contains NaN or infinite values")
    return array


def prepare(sr, gt, y: bool = False, crop: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Check sizes, crop ``crop`` pixels at each border and optionally convert to Y.

    Returns two ``C×H'×W'`` float64 arrays in [0, 1]-scale (C = 3, or 1 with ``y``).
    """
    a, b = _as_array(sr, "SR"), _as_array(gt, "GT")
    if a.shape != b.shape:
        raise RefsrError(f"SR size {a.shape[1]}×{a.shape[2]} differs from GT size {b.shape[1]}×{b.shape[2]}")
    crop = int(crop)
    if crop < 0:
        raise RefsrError(f"--crop must be ≥ 0 (got {crop})")
    if crop:
        if 2 * crop >= min(a.shape[1:]):
            raise RefsrError(f"--crop {crop} leaves nothing of a {a.shape[1]}×{a.shape[2]} image")
        a, b = a[:, crop:-crop, crop:-crop], b[:, crop:-crop, crop:-crop]
    if y:
        a, b = to_y(a), to_y(b)
    return a, b


def to_y(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma of RGB: ``3×H×W`` in [0, 1] → ``1×H×W`` in [16/255, 235/255]."""
    y = 16.0 + _Y601[0] * rgb[0] + _Y601[1] * rgb[1] + _Y601[2] * rgb[2]
    return (y / 255.0)[None]


def _gray255(image: np.ndarray) -> np.ndarray:
    """``C×H×W`` [0, 1] → ``H×W`` grayscale in 0–255 (Y is kept as is; RGB uses rgb2gray weights)."""
    if image.shape[0] == 1:
        return image[0] * 255.0
    return (_GRAY[0] * image[0] + _GRAY[1] * image[1] + _GRAY[2] * image[2]) * 255.0


# --------------------------------------------------------------------------------------------
# PSNR and SSIM
# --------------------------------------------------------------------------------------------

def psnr_arrays(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (dB, peak 1) of two prepared ``C×H×W`` arrays; ``inf`` when identical."""
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def psnr(sr, gt, y: bool = False, crop: int = 0) -> float:
    """PSNR in dB between ``sr`` and ``gt`` (``3×H×W`` in [0, 1]); ``inf`` for identical images."""
    return psnr_arrays(*prepare(sr, gt, y, crop))


def _gaussian_window(sigma: float = 1.5, radius: int = 5) -> np.ndarray:
    # scipy.ndimage.gaussian_filter(sigma=1.5, truncate=3.5) — skimage's filter — uses this kernel.
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def ssim_arrays(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two prepared ``C×H×W`` arrays (mean over channels)."""
    return float(ssim_map(a, b).mean(axis=(1, 2)).mean())


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel SSIM of two prepared ``C×H×W`` arrays: ``C×(H−10)×(W−10)``, the pixels whose 11×11 window
    lies inside the image (``[5:-5, 5:-5]`` of the input grid)."""
    from scipy.ndimage import correlate1d

    if min(a.shape[1:]) < 11:
        raise RefsrError(f"image {a.shape[1]}×{a.shape[2]} is smaller than the 11×11 SSIM window")
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    g = _gaussian_window()
    r = len(g) // 2

    def blur(t: np.ndarray) -> np.ndarray:
        # skimage filters with reflection and then drops 5 pixels at each border, which keeps
        # exactly the pixels whose 11×11 window lies inside the image: border handling never matters.
        t = correlate1d(correlate1d(t, g, axis=-1), g, axis=-2)
        return t[..., r:-r, r:-r]

    ux, uz, uxx, uzz, uxz = (blur(t) for t in (a, b, a * a, b * b, a * b))
    vx, vz, vxz = uxx - ux * ux, uzz - uz * uz, uxz - ux * uz
    return ((2 * ux * uz + c1) * (2 * vxz + c2)) / ((ux * ux + uz * uz + c1) * (vx + vz + c2))


def ssim(sr, gt, y: bool = False, crop: int = 0) -> float:
    """SSIM (Gaussian 11×11, σ 1.5) between ``sr`` and ``gt`` (``3×H×W`` in [0, 1])."""
    return ssim_arrays(*prepare(sr, gt, y, crop))


# --------------------------------------------------------------------------------------------
# IFC
# --------------------------------------------------------------------------------------------
#
# The authors' ifcvec.m builds ``buildSpyr(img, 4, 'sp5Filters', 'reflect1')`` — 26 bands in the order
# highpass residual, level 1 (finest) orientations 1…6, …, level 4 orientations 1…6, lowpass — and
# ``ind2wtree`` stores them *reversed*: wtree{1} = lowpass, wtree{k} = pyramid band 27−k, wtree{26} =
# highpass (only 1…25 are ever indexed). pyrtools' SteerablePyramidSpace is a port of buildSpyr with
# the same sp5 filters; its keys are (level, orientation) with level 0 the finest. Hence:
#
#   ifcvec band k | buildSpyr band | pyrtools key | window 2^lev+1, lev=ceil((k-1)/6) | border (blocks)
#   ------------- | -------------- | ------------ | --------------------------------- | ---------------
#        4        |       23       |    (3, 3)    |            3                      |       1
#        7        |       20       |    (3, 0)    |            3                      |       1
#       10        |       17       |    (2, 3)    |            5                      |       1
#       13        |       14       |    (2, 0)    |            5                      |       1
#       16        |       11       |    (1, 3)    |            9                      |       2
#       19        |        8       |    (1, 0)    |            9                      |       2
#       22        |        5       |    (0, 3)    |           17                      |       3
#       25        |        2       |    (0, 0)    |           17                      |       3
#
# i.e. orientations 0 (0°) and 3 (90°) of every level; the authors' "lev" counts from the coarsest
# level, so the finest (full-size) bands get the largest (17×17) distortion window.

IFC_SUBBANDS = (4, 7, 10, 13, 16, 19, 22, 25)
_BLOCK = 3           # M: 3×3 blocks form the GSM vectors
_TOL = 1e-15         # the authors' zero-variance tolerance


def ifc_band_key(k: int) -> tuple[int, int]:
    """pyrtools ``(level, orientation)`` key of the authors' wtree band ``k`` (2 ≤ k ≤ 25)."""
    band = 27 - k                 # 1-based buildSpyr band (1 = highpass residual)
    return (band - 2) // 6, (band - 2) % 6


def ifc_window(k: int) -> int:
    """Side of the distortion-channel window of wtree band ``k``: ``2^ceil((k−1)/6) + 1``."""
    return 2 ** math.ceil((k - 1) / 6) + 1


def _pyramid(gray: np.ndarray) -> dict:
    """The bands IFC uses of pyrtools' ``SteerablePyramidSpace(gray, height=4, order=5, edge_type="reflect1")``
    — ``{(level, orientation): band}`` for orientations 0 and 3 — computed as that class computes them
    (the same filters and ``corrDn`` calls) without the other 4 orientations and the high-pass residual
    that IFC never reads (less than half the filtering: the bench scores hundreds of images)."""
    from pyrtools.pyramids.c.wrapper import corrDn  # imported lazily: only IFC needs pyrtools
    from pyrtools.pyramids.filters import parse_filter

    filters = parse_filter("sp5_filters", normalize=False)
    side = int(np.floor(np.sqrt(filters["bfilts"].shape[0])))
    wanted = sorted({ifc_band_key(k)[1] for k in IFC_SUBBANDS})
    lo = corrDn(image=gray, filt=filters["lo0filt"], edge_type="reflect1")
    bands = {}
    for level in range(4):
        for b in wanted:
            filt = filters["bfilts"][:, b].reshape(side, side).T
            bands[(level, b)] = np.asarray(corrDn(image=lo, filt=filt, edge_type="reflect1"))
        lo = corrDn(image=lo, filt=filters["lofilt"], edge_type="reflect1", step=(2, 2))
    return bands


def _distortion_channel(y: np.ndarray, yn: np.ndarray, winsize: int) -> tuple[np.ndarray, np.ndarray]:
    """The authors' ``distsub_est_m`` for one subband: gain ``g`` and noise variance ``vv`` per block.

    ``y``, ``yn``: reference and distorted subband, already cropped to multiples of 3. Window sums of
    ``winsize×winsize`` (reflect1 borders) sampled at every block centre.
    """
    import pyrtools as pt

    win = np.ones((winsize, winsize))
    n = win.size
    step, start, stop = (_BLOCK, _BLOCK), (1, 1), (y.shape[0] - 1, y.shape[1] - 1)

    def corr(img, filt):
        return pt.corrDn(np.ascontiguousarray(img), filt, "reflect1", step, start, stop)

    mean_x, mean_y = corr(y, win / n), corr(yn, win / n)
    cov_xy = corr(y * yn, win) - n * mean_x * mean_y
    ss_x = corr(y * y, win) - n * mean_x ** 2
    ss_y = corr(yn * yn, win) - n * mean_y ** 2
    ss_x[ss_x < 0] = 0
    ss_y[ss_y < 0] = 0
    g = cov_xy / (ss_x + _TOL)
    vv = (ss_y - g * cov_xy) / n
    # The order of these fix-ups is the authors'.
    small_x = ss_x < _TOL
    g[small_x] = 0
    vv[small_x] = ss_y[small_x]
    small_y = ss_y < _TOL
    g[small_y] = 0
    vv[small_y] = 0
    negative = g < 0
    vv[negative] = ss_y[negative]
    g[negative] = 0
    vv[vv <= _TOL] = _TOL
    return g, vv


def _reference_gsm(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The authors' ``refparams_vecgsm`` for one subband: the S field and the eigenvalues of C_U.

    ``y``: reference subband cropped to multiples of 3. C_U is the (population) covariance of all
    overlapping 3×3 blocks; ``s² = uᵀ C_U⁻¹ u / 9`` for the non-overlapping blocks ``u``.
    """
    m = _BLOCK
    h, w = y.shape
    overlapping = np.stack([y[k:h - (m - 1 - k), j:w - (m - 1 - j)].ravel()
                            for j in range(m) for k in range(m)])           # 9 × (#blocks)
    centred = overlapping - overlapping.mean(axis=1, keepdims=True)
    cu = centred @ centred.T / overlapping.shape[1]
    blocks = np.stack([y[k::m, j::m].ravel() for j in range(m) for k in range(m)])  # 9 × (h/3·w/3)
    lam, vec = np.linalg.eigh(cu)
    # u·C⁻¹·u through the eigenbasis; directions with (numerically) zero variance carry no
    # information, so they are left out instead of producing inf/NaN as inv() would (constant images).
    keep = lam > lam.max() * 1e-12 if lam.max() > 0 else np.zeros_like(lam, dtype=bool)
    proj = vec[:, keep].T @ blocks
    ss = (proj ** 2 / lam[keep, None]).sum(axis=0) / (m * m)
    return ss.reshape(h // m, w // m), np.clip(lam, 0, None)


def _whole_blocks(band: np.ndarray) -> np.ndarray:
    """``band`` cropped to whole ``_BLOCK``×``_BLOCK`` blocks, the ones the GSM model is fitted on (the rows and
    columns past the last whole block dropped)."""
    return band[: band.shape[0] // _BLOCK * _BLOCK, : band.shape[1] // _BLOCK * _BLOCK]


def ifc_subband(ref_band: np.ndarray, dist_band: np.ndarray, k: int, reference_gsm=None) -> float:
    """Information (bits) of one subband, the authors' per-band term ``num(i)`` of ifcvec.m.

    ``ref_band``, ``dist_band``: the same pyramid band (``H_b×W_b`` float64) of reference and
    distorted image; ``k``: the authors' wtree band number (sets the window and border);
    ``reference_gsm``: ``_reference_gsm`` of the cropped ``ref_band`` when already known.
    """
    m = _BLOCK
    y, yn = _whole_blocks(ref_band), _whole_blocks(dist_band)
    winsize = ifc_window(k)
    g, vv = _distortion_channel(y, yn, winsize)
    ss, lam = reference_gsm if reference_gsm is not None else _reference_gsm(y)
    off = math.ceil(((winsize - 1) // 2) / m)
    if off:
        g, vv, ss = (t[off:-off, off:-off] for t in (g, vv, ss))
    base = (g * g * ss) / (vv + 1e-10)
    return float(sum(np.log2(1.0 + base * lj).sum() for lj in lam))


def ifc_gray(ref: np.ndarray, dist: np.ndarray) -> float:
    """IFC of two ``H×W`` grayscale images in 0–255 (``ref`` = ground truth; order matters).

    Returns the information summed over the eight subbands, divided by ``H·W``; ``nan`` when
    the image is smaller than :data:`IFC_MIN_SIZE` on a side (no 4-level pyramid exists).
    """
    if min(ref.shape) < IFC_MIN_SIZE:
        return math.nan
    reference, dist_pyr = _reference_side(ref), _pyramid(dist)
    total = 0.0
    for k in IFC_SUBBANDS:
        key = ifc_band_key(k)
        band, gsm = reference[key]
        total += ifc_subband(band, np.asarray(dist_pyr[key], np.float64), k, gsm)
    return total / ref.size


_REFERENCE_SIDES: dict = {}
_REFERENCE_SIDES_LOCK = threading.Lock()   # the bench scores on several threads


def _reference_side(ref: np.ndarray) -> dict:
    """``{band key: (band, _reference_gsm of it)}`` of the ground truth ``ref``: a third of IFC's work,
    the same for every method scored against one image (the bench scores seven per image), so the last
    few are kept, keyed by content."""
    import hashlib

    key = (ref.shape, str(ref.dtype), hashlib.blake2b(np.ascontiguousarray(ref).tobytes(), digest_size=16).digest())
    with _REFERENCE_SIDES_LOCK:
        side = _REFERENCE_SIDES.get(key)
    if side is None:
        side, pyramid = {}, _pyramid(ref)
        for k in IFC_SUBBANDS:
            band = np.asarray(pyramid[ifc_band_key(k)], np.float64)
            side[ifc_band_key(k)] = (band, _reference_gsm(_whole_blocks(band)))
        with _REFERENCE_SIDES_LOCK:
            while len(_REFERENCE_SIDES) >= 8:
                _REFERENCE_SIDES.pop(next(iter(_REFERENCE_SIDES)))
            _REFERENCE_SIDES[key] = side
    return side


def ifc(sr, gt, y: bool = False, crop: int = 0) -> float:
    """IFC of ``sr`` against the reference ``gt`` (``3×H×W`` in [0, 1]), per image pixel.

    Grayscale 0–255 (MATLAB rgb2gray weights; the BT.601 Y with ``y``). ``nan`` below 72×72 pixels.
    """
    a, b = prepare(sr, gt, y, crop)
    return ifc_gray(_gray255(b), _gray255(a))


# --------------------------------------------------------------------------------------------
# whole images, files and folders
# --------------------------------------------------------------------------------------------

def evaluate(sr, gt, y: bool = False, crop: int = 0, covered=None) -> dict:
    """``{"psnr", "ssim", "ifc"}`` of ``sr`` against ``gt`` (``3×H×W`` in [0, 1]); with ``covered`` (see
    :func:`evaluate_regions`) also :data:`REGION_METRICS`, from the same SSIM map."""
    a, b = prepare(sr, gt, y, crop)
    structure = ssim_map(a, b)
    scores = {"psnr": psnr_arrays(a, b), "ssim": float(structure.mean(axis=(1, 2)).mean()),
              "ifc": ifc_gray(_gray255(b), _gray255(a))}
    if covered is not None:
        scores.update(_region_scores(a, b, structure, covered, crop))
    return scores


REGION_METRICS = ("psnr_covered", "psnr_outside", "ssim_covered", "ssim_outside")


def evaluate_regions(sr, gt, covered, y: bool = False, crop: int = 0) -> dict:
    """PSNR and SSIM inside and outside a region, as the dual-camera literature reports them.

    ``covered``: ``H×W`` bool (or ``1×H×W``/``1×1×H×W``), e.g. a telephoto reference's footprint
    (:meth:`refsr_cli.inference.footprint.Footprint.mask`), at the images' size before ``crop``. PSNR is over
    the region's pixels; SSIM is the mean of the SSIM map over them. A region with no pixels gives
    ``None``. Returns ``{"psnr_covered", "psnr_outside", "ssim_covered", "ssim_outside"}``.
    """
    a, b = prepare(sr, gt, y, crop)
    return _region_scores(a, b, ssim_map(a, b), covered, crop)


def _region_scores(a: np.ndarray, b: np.ndarray, structure: np.ndarray, covered, crop: int) -> dict:
    """:func:`evaluate_regions` of prepared arrays and their SSIM map (``C×(H−10)×(W−10)``)."""
    mask = np.asarray(covered.cpu() if hasattr(covered, "cpu") else covered).astype(bool)
    mask = mask.reshape(mask.shape[-2:])
    if crop:
        mask = mask[crop:-crop, crop:-crop]
    if mask.shape != a.shape[1:]:
        raise RefsrError(f"the region mask is {mask.shape[1]}×{mask.shape[0]}, the images {a.shape[2]}×{a.shape[1]}")
    error = ((a - b) ** 2).mean(axis=0)
    structure = structure.mean(axis=0)
    inner = mask[5:-5, 5:-5]
    out = {}
    for name, region, inner_region in (("covered", mask, inner), ("outside", ~mask, ~inner)):
        mse = float(error[region].mean()) if region.any() else None
        out[f"psnr_{name}"] = None if mse is None else (math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse))
        out[f"ssim_{name}"] = float(structure[inner_region].mean()) if inner_region.any() else None
    return {key: out[key] for key in REGION_METRICS}


def read_mask(path: Path, size: tuple[int, int]) -> np.ndarray:
    """``H×W`` bool region of a mask image (nonzero = covered, e.g. infer's ``NAME_footprint.png``) of
    ``size = (H, W)``; :class:`RefsrError` naming the file when its size differs."""
    from refsr_cli.data.image_io import read_image

    mask, _ = read_image(path)
    if tuple(mask.shape[-2:]) != tuple(size):
        raise RefsrError(f"{path}: mask is {mask.shape[-1]}×{mask.shape[-2]}, the images {size[1]}×{size[0]}")
    return (mask.amax(dim=0) > 0.5).numpy()


def _evaluate_files(name: str, sr_file: Path, gt_file: Path, y: bool, crop: int,
                    mask_file: Path | None = None) -> dict:
    from refsr_cli.data.image_io import read_image

    sr, _ = read_image(sr_file)
    gt, _ = read_image(gt_file)
    if sr.shape != gt.shape:
        raise RefsrError(f"{sr_file}: size {sr.shape[1]}×{sr.shape[2]} differs from "
                         f"{gt_file} ({gt.shape[1]}×{gt.shape[2]})")
    try:
        covered = read_mask(mask_file, tuple(gt.shape[-2:])) if mask_file is not None else None
        values = evaluate(sr, gt, y, crop, covered)
    except RefsrError as exc:
        raise RefsrError(f"{sr_file}: {exc}") from None
    return {"name": name, **values}


_ROLE_SUFFIXES = ("_sr", "_hr", "_gt")   # infer writes NAME_sr.png; pair folders hold NAME_hr.png
_INPUT_SUFFIXES = ("_lr", "_ref")
_INTERMEDIATE_SUFFIXES = ("_flow", "_warped", "_depth", "_footprint")   # infer --save-*


def pair_key(stem: str) -> str:
    """Matching key of a file stem: the stem without a trailing ``_sr``/``_hr``/``_gt``."""
    low = stem.lower()
    for suffix in _ROLE_SUFFIXES:
        if low.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def _images_by_key(folder: Path) -> dict[str, Path]:
    from refsr_cli.data.image_io import list_images

    files = list_images(folder)
    if not files:
        raise RefsrError(f"{folder}: no images found")
    # A folder of infer pairs (NAME_lr, NAME_ref, NAME_hr): only the ground truth takes part.
    if any(f.stem.lower().endswith(("_hr", "_gt")) for f in files):
        files = [f for f in files if not f.stem.lower().endswith(_INPUT_SUFFIXES)]
    # An infer output folder: NAME_sr.png's intermediates (NAME_warped.png, NAME_footprint.png …) take no part.
    outputs = {f.stem[:-3] for f in files if f.stem.lower().endswith("_sr")}
    files = [f for f in files if not any(f.stem.lower().endswith(suffix) and f.stem[:-len(suffix)] in outputs
                                         for suffix in _INTERMEDIATE_SUFFIXES)]
    keyed: dict[str, Path] = {}
    for f in files:
        key = pair_key(f.stem)
        if key in keyed:
            raise RefsrError(f"{folder}: {keyed[key].name} and {f.name} have the same name {key!r}")
        keyed[key] = f
    return keyed


def match_paths(sr_path, gt_path) -> list[tuple[str, Path, Path]]:
    """``(name, sr_file, gt_file)`` triples: two files, or two folders matched by file stem.

    Stems match after dropping a trailing ``_sr``/``_hr``/``_gt`` (so ``refsr infer``'s
    ``NAME_sr.png`` meets ``NAME_hr.png`` or ``NAME.png``); in a folder that holds ``_hr``/``_gt``
    images, ``_lr``/``_ref`` images are ignored. Every image needs a partner.
    """
    sr_path, gt_path = Path(sr_path), Path(gt_path)
    for p in (sr_path, gt_path):
        if not p.exists():
            raise RefsrError(f"{p}: no such file or folder")
    if sr_path.is_file() and gt_path.is_file():
        return [(pair_key(sr_path.stem), sr_path, gt_path)]
    if sr_path.is_dir() != gt_path.is_dir():
        raise RefsrError(f"{sr_path} and {gt_path}: give two files or two folders")
    srs, gts = _images_by_key(sr_path), _images_by_key(gt_path)
    for key, f in srs.items():
        if key not in gts:
            raise RefsrError(f"{f}: no ground truth named {key}.* in {gt_path}")
    for key, f in gts.items():
        if key not in srs:
            raise RefsrError(f"{f}: no SR image named {key}.* in {sr_path}")
    return [(key, srs[key], gts[key]) for key in sorted(srs)]


def _masks_for(mask_path, pairs) -> list[Path | None]:
    """The mask file of each pair: ``mask_path`` itself for every pair, or, for a folder, the image named
    after the pair (``NAME.*``, ``NAME_footprint.*`` or ``NAME_mask.*``, as ``refsr infer --save-warped``
    writes ``NAME_footprint.png``)."""
    if mask_path is None:
        return [None] * len(pairs)
    mask_path = Path(mask_path)
    if not mask_path.exists():
        raise RefsrError(f"{mask_path}: no such mask file or folder")
    if mask_path.is_file():
        return [mask_path] * len(pairs)
    from refsr_cli.data.image_io import list_images

    keyed = {}
    for f in list_images(mask_path):
        stem = f.stem
        for suffix in ("_footprint", "_mask"):
            stem = stem[: -len(suffix)] if stem.lower().endswith(suffix) else stem
        keyed[stem] = f
    missing = [name for name, _, _ in pairs if name not in keyed]
    if missing:
        raise RefsrError(f"{mask_path}: no mask named {missing[0]}_footprint.* (or {missing[0]}.*)")
    return [keyed[name] for name, _, _ in pairs]


def compare_paths(sr_path, gt_path, y: bool = False, crop: int = 0, jobs: int = 0,
                  mask=None) -> list[dict]:
    """Metrics of every SR/GT pair: ``[{"name", "psnr", "ssim", "ifc"}, …]`` sorted by name.

    Args:
        sr_path, gt_path: two image files, or two folders whose images are matched by file stem.
        y, crop: see the module docstring.
        mask: a mask image (nonzero = the covered region) for every pair, or a folder of masks named after
            the pairs: each row gains :data:`REGION_METRICS` (covered / outside; whole = the plain metrics).
        jobs: parallel workers (joblib threads: NumPy, SciPy, pyrtools' C code and image decoding
            release the GIL, and threads start at once where processes would re-import torch);
            0 = automatic (one per core, serial for fewer than 4 images).
    Raises:
        RefsrError naming the file: a missing partner, an unreadable image, different sizes,
        an empty folder.
    """
    from refsr_cli import console

    pairs = match_paths(sr_path, gt_path)
    masks = _masks_for(mask, pairs)
    if jobs <= 0:
        jobs = 1 if len(pairs) < 4 else min(len(pairs), os.cpu_count() or 1)
    jobs = min(jobs, len(pairs))
    results = []
    with console.progress_bar("metrics", total=len(pairs)) as bar:
        if jobs == 1:
            for (name, s, g), m in zip(pairs, masks):
                results.append(_evaluate_files(name, s, g, y, crop, m))
                bar.advance()
        else:
            from joblib import Parallel, delayed

            tasks = (delayed(_evaluate_files)(name, s, g, y, crop, m) for (name, s, g), m in zip(pairs, masks))
            for row in Parallel(n_jobs=jobs, prefer="threads", return_as="generator")(tasks):
                results.append(row)
                bar.advance()
    return results


def mean_of(values, *, keep_inf: bool = False) -> float | None:
    """Mean of the numbers in ``values``; ``None`` when none is left.

    ``None``, non-numbers and NaN are skipped. ``±inf`` (the PSNR of an exact copy) is skipped too unless
    ``keep_inf``: ``refsr metrics`` reports such a mean as ``inf``, infer's and bench's means skip it.
    """
    kept = [float(v) for v in values if isinstance(v, (int, float, np.number)) and not math.isnan(v)
            and (keep_inf or math.isfinite(v))]
    return float(np.mean(kept)) if kept else None


def mean_of_rows(rows, keys=None, *, keep_inf: bool = False) -> dict:
    """``{key: mean_of(row[key] for row in rows)}`` for ``keys`` (default: every key any row has)."""
    rows = list(rows)
    keys = sorted({k for row in rows for k in row}) if keys is None else keys
    return {key: mean_of((row.get(key) for row in rows), keep_inf=keep_inf) for key in keys}


def mean_row(rows: list[dict]) -> dict:
    """Mean of each metric over ``rows`` (``inf`` if any PSNR is ``inf``; NaNs skipped; NaN if none)."""
    keys = METRICS + tuple(k for k in REGION_METRICS if any(k in r for r in rows))
    means = mean_of_rows(rows, keys, keep_inf=True)
    return {key: math.nan if value is None else value for key, value in means.items()}


def finite_or_none(value):
    """Non-finite numbers → ``None`` (JSON ``null``: strict JSON has no Infinity); NumPy scalars → Python
    numbers; everything else unchanged."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def to_json(rows: list[dict]) -> str:
    """``{"images": [...], "mean": {...}}`` as strict JSON: non-finite values become ``null``."""
    doc = {"images": [{k: finite_or_none(v) for k, v in r.items()} for r in rows],
           "mean": {k: finite_or_none(v) for k, v in mean_row(rows).items()}}
    return json.dumps(doc, indent=2, allow_nan=False)


def write_csv(path, rows: list[dict]) -> None:
    """CSV with columns name, psnr, ssim, ifc and a last row ``mean``; written atomically."""
    from refsr_cli.data.files import atomic_write

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            mean = mean_row(rows)
            keys = [k for k in mean]
            writer.writerow(["name", *keys])
            for r in [*rows, {"name": "mean", **mean}]:
                writer.writerow([r["name"], *(repr(float(math.nan if r.get(k) is None else r[k])) for k in keys)])

    atomic_write(path, write)
