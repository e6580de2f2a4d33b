"""Feature matching: SIFT landmarks matched between two views, and moving matches into a crop."""
from __future__ import annotations

import numpy as np
import torch


def _gray_image(image) -> "np.ndarray":
    """``H×W`` float64 grayscale in [0, 1] from a torch ``[1×]C×H×W`` tensor or an ``H×W[×C]`` array."""
    import numpy as np
    from skimage.color import rgb2gray
    from skimage.util import img_as_float

    if isinstance(image, torch.Tensor):
        t = image.detach().to("cpu", torch.float64)
        if t.dim() == 4:
            if t.shape[0] != 1:
                raise ValueError("landmark_matches takes one image pair at a time, not a batch")
            t = t[0]
        if t.dim() == 3:
            t = t.permute(1, 2, 0)
        array = t.numpy()
    else:
        array = img_as_float(np.asarray(image))      # uint8/uint16 → [0, 1]
    if array.ndim == 3:
        array = array[..., 0] if array.shape[2] == 1 else rgb2gray(array[..., :3])
    return np.clip(array, 0.0, 1.0)


def landmark_matches(hr, ref, ratio: float = 0.3, max_matches: int = 1000):
    """SIFT landmarks matched between the HR of the LR view and the reference (CrossNet++).

    scikit-image's SIFT on grayscale images, descriptors matched with Lowe's ratio test (``ratio``; the
    CrossNet++ authors used a strict 0.3) and a mutual-nearest-neighbour check. Expensive (≈0.5–2 s for
    320×512): compute once per training sample, e.g. through :class:`LandmarkCache`.

    Args:
        hr, ref: ``3×H×W`` / ``1×3×H×W`` tensors in [0, 1] or ``H×W×3`` arrays (any sizes).
        ratio: maximum ratio of nearest to second-nearest descriptor distance.
        max_matches: keep at most this many matches, the most distinctive (lowest ratio) first.
    Returns:
        ``(p, q)``: float32 arrays ``M×2`` of ``(x, y)`` pixel positions in ``hr`` and ``ref``
        (``M`` may be 0 for textureless images).
    """
    import numpy as np
    from skimage.feature import SIFT, match_descriptors

    empty = (np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32))
    keypoints, descriptors = [], []
    for image in (hr, ref):
        sift = SIFT()
        try:
            sift.detect_and_extract(_gray_image(image))
        except RuntimeError:                          # "SIFT found no features": flat image
            return empty
        keypoints.append(sift.keypoints)
        descriptors.append(sift.descriptors)
    matches = match_descriptors(descriptors[0], descriptors[1], max_ratio=ratio, cross_check=True)
    if len(matches) == 0:
        return empty
    d0 = descriptors[0][matches[:, 0]].astype(np.float32)
    dists = np.linalg.norm(d0[:, None, :] - descriptors[1].astype(np.float32)[None], axis=2)
    if dists.shape[1] > 1:
        two = np.partition(dists, 1, axis=1)[:, :2]
        order = np.argsort(two[:, 0] / np.maximum(two[:, 1], 1e-12), kind="stable")
    else:
        order = np.arange(len(matches))
    matches = matches[order[:max_matches]]
    p = keypoints[0][matches[:, 0]][:, ::-1].astype(np.float32)   # skimage gives (row, col) → (x, y)
    q = keypoints[1][matches[:, 1]][:, ::-1].astype(np.float32)
    return np.ascontiguousarray(p), np.ascontiguousarray(q)


def crop_matches(p, q, hr_offset=(0, 0), ref_offset=(0, 0), size: tuple[int, int] | None = None):
    """Move matches into the frame of a crop / shifted reference, dropping those that fall outside.

    ``hr_offset``/``ref_offset`` = ``(x0, y0)`` subtracted from ``p``/``q``: the top-left of a crop, or for a
    reference shifted with ``refsr_cli.ops.warp.shift(ref, dx, dy)`` (parallax augmentation) ``ref_offset=(dx, dy)``.
    ``size = (H, W)`` of the crop: pairs with either point outside ``[0, W−1]×[0, H−1]`` are removed.
    """
    import numpy as np

    p = np.asarray(p, np.float32) - np.asarray(hr_offset, np.float32)
    q = np.asarray(q, np.float32) - np.asarray(ref_offset, np.float32)
    if size is not None:
        h, w = size
        keep = ((p[:, 0] >= 0) & (p[:, 0] <= w - 1) & (p[:, 1] >= 0) & (p[:, 1] <= h - 1)
                & (q[:, 0] >= 0) & (q[:, 0] <= w - 1) & (q[:, 1] >= 0) & (q[:, 1] <= h - 1))
        p, q = p[keep], q[keep]
    return p, q
