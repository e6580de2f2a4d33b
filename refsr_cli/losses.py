"""Every training loss, in one module (design.md §4).

Sections: generic pixel losses; CrossNet / CrossNet++; Cross-MPI; RefSR-Net. Each function documents
the tensors it takes (shapes) and which ``aux`` keys of a model's output it reads.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------------
# Generic pixel losses + CrossNet / CrossNet++ (charbonnier, warping, supervised flow, landmark)
# ---------------------------------------------------------------------------------------------


def charbonnier(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Charbonnier loss ``mean(sqrt((pred − target)² + eps²))`` (CrossNet's SR loss, eps = 0.001).

    ``pred``, ``target``: same shape (e.g. ``N×3×H×W``). Returns a scalar.
    """
    diff = pred - target
    return torch.sqrt(diff * diff + eps * eps).mean()


def warping_loss(warped: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """CrossNet++ warping loss: ½·mean squared error between the stage-1 warped reference and the HR.

    ``warped``: ``aux["warped_stage1"]`` (``N×3×H×W``); ``hr``: ground truth of the LR view, same shape.
    """
    return 0.5 * torch.mean((warped - hr) ** 2)


def flow_loss(flows: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """Supervised flow: mean end-point error against the true flow, in HR pixels, averaged over scales.

    Args:
        flows: predicted flows ``[N×2×h_i×w_i]``, each in its own pixels (CrossNet's V0…V3: scale
            ``1/2^i``); ``target``: the true flow ``N×2×H×W`` at full resolution.
    Scale ``i`` is compared with the target area-averaged to ``h_i×w_i``; errors are converted to HR
    pixels (``× W/w_i``) so that every scale counts alike.
    """
    total = target.new_zeros(())
    for flow in flows:
        h, w = flow.shape[-2:]
        factor = target.shape[-1] / w
        reference = target if (h, w) == tuple(target.shape[-2:]) else F.adaptive_avg_pool2d(target, (h, w)) / factor
        total = total + (flow - reference).square().sum(1).add(1e-6).sqrt().mean() * factor
    return total / len(flows)


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
    reference shifted with ``refsr_cli.warp.shift(ref, dx, dy)`` (parallax augmentation) ``ref_offset=(dx, dy)``.
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


class LandmarkCache:
    """SIFT matches per training sample, computed on first use and then reused for every step.

    ``cache.get(key, hr, ref)`` returns ``(p, q)`` for the sample ``key`` (any hashable, e.g.
    ``(light_field_index, view)``), running :func:`landmark_matches` only the first time. With ``path``
    the cache is also kept in an ``.npz`` file (:meth:`save`; loaded on construction), so repeated or
    resumed trainings never recompute it. Matches refer to the full, unaugmented images: apply crops and
    parallax shifts with :func:`crop_matches`.
    """

    def __init__(self, path=None, ratio: float = 0.3, max_matches: int = 1000):
        from pathlib import Path

        import numpy as np

        self.path = Path(path) if path is not None else None
        self.ratio, self.max_matches = float(ratio), int(max_matches)
        self._data: dict[str, tuple] = {}
        self.computed = 0                             # how many pairs this instance ran SIFT on
        if self.path is not None and self.path.is_file():
            with np.load(self.path, allow_pickle=False) as npz:
                keys = {name.rsplit("/", 1)[0] for name in npz.files}
                for key in keys:
                    self._data[key] = (npz[f"{key}/p"], npz[f"{key}/q"])

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key) -> bool:
        return str(key) in self._data

    def get(self, key, hr, ref):
        """``(p, q)`` float32 ``M×2`` arrays of ``(x, y)`` in ``hr`` and ``ref`` for sample ``key``."""
        k = str(key)
        if k not in self._data:
            self._data[k] = landmark_matches(hr, ref, self.ratio, self.max_matches)
            self.computed += 1
        return self._data[k]

    def save(self) -> None:
        """Write the cache to ``path`` atomically (no-op without a path)."""
        if self.path is None:
            return
        import numpy as np

        from refsr_cli.image_io import atomic_write

        arrays = {}
        for k, (p, q) in self._data.items():
            arrays[f"{k}/p"], arrays[f"{k}/q"] = p, q

        def write(tmp):
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)

        atomic_write(self.path, write)


def landmark_loss(flow_stage1: torch.Tensor, p, q) -> torch.Tensor:
    """CrossNet++ landmark loss: mean over matched points of ``|p + V(p) − q|²`` (pixels²).

    Args:
        flow_stage1: ``aux["flow_stage1"]`` — ``N×2×H×W`` backward flow from the LR view to Ref
            (``Ref̂(p) = Ref(p + V(p))``), channel 0 = x.
        p, q: matched ``(x, y)`` points in the HR of the LR view and in Ref — for ``N = 1`` one ``M×2``
            array/tensor each; for a batch, sequences of ``N`` such arrays (``M`` may differ or be 0).
    ``V(p)`` is sampled bilinearly (``grid_sample``, ``align_corners=True`` — the convention of
    :func:`refsr_cli.warp.backward_warp`), so the loss is differentiable w.r.t. the flow. Returns a
    scalar; 0 (still attached to the graph) when there are no matches.
    """
    import torch.nn.functional as F

    n, _, h, w = flow_stage1.shape
    if n == 1 and not isinstance(p, (list, tuple)):
        p, q = [p], [q]
    if len(p) != n or len(q) != n:
        raise ValueError(f"landmark_loss got matches for {len(p)} samples, flow batch is {n}")
    total = flow_stage1.sum() * 0.0
    count = 0
    for i in range(n):
        pi = torch.as_tensor(p[i], dtype=flow_stage1.dtype, device=flow_stage1.device).reshape(-1, 2)
        qi = torch.as_tensor(q[i], dtype=flow_stage1.dtype, device=flow_stage1.device).reshape(-1, 2)
        if pi.shape[0] == 0:
            continue
        grid = torch.stack((pi[:, 0] * (2.0 / max(w - 1, 1)) - 1.0, pi[:, 1] * (2.0 / max(h - 1, 1)) - 1.0), -1)
        v = F.grid_sample(flow_stage1[i:i + 1], grid.view(1, 1, -1, 2), mode="bilinear",
                          padding_mode="border", align_corners=True)[0, :, 0].t()      # M×2
        total = total + ((pi + v - qi) ** 2).sum()
        count += pi.shape[0]
    return total / max(count, 1)


# ---------------------------------------------------------------------------------------------
# Cross-MPI (L1 + internal supervision + optional VGG-19 perceptual) and RefSR-Net (CC-Net softmax)
# ---------------------------------------------------------------------------------------------

import math as _math
import os as _os
from pathlib import Path as _Path

import torch.nn as _nn
import torch.nn.functional as _F

from refsr_cli.errors import RefsrError as _RefsrError

# torchvision's ``vgg19().features`` layout: convs per block; "M" = 2×2 max-pool. Indices of the
# ``nn.Sequential`` (and hence state-dict keys ``features.<i>.weight``) follow from this list.
_VGG19_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512)
_VGG19_RELU = {"relu1_2": 3, "relu2_2": 8, "relu3_4": 17, "relu4_4": 26, "relu5_4": 35}   # index in features


class VGGPerceptual(_nn.Module):
    """VGG-19 perceptual loss from a user-supplied weights file (never downloaded).

    ``loss(sr, hr)`` = mean over ``layers`` of the mean absolute difference of VGG-19 ReLU features of the
    two images (ImageNet-normalised RGB in [0, 1]; both ``N×3×H×W``). Equal layer weights.

    Args:
        weights: path to a state dict of torchvision's VGG-19 (``torch.save(vgg19().state_dict())``: keys
            ``features.<i>.weight/bias``; a bare ``features`` state dict with keys ``<i>.weight`` also works;
            classifier weights are ignored). Loaded with ``torch.load(weights_only=True)``.
        layers: feature layers used (``relu1_2``, ``relu2_2``, ``relu3_4``, ``relu4_4``, ``relu5_4``).
    Raises:
        RefsrError: the file is missing, unreadable, or not VGG-19 weights.
    The VGG weights are frozen and are not part of any model checkpoint.
    """

    def __init__(self, weights: str | _os.PathLike, layers=("relu1_2", "relu2_2", "relu3_4", "relu4_4", "relu5_4")):
        super().__init__()
        path = _Path(weights)
        unknown = [name for name in layers if name not in _VGG19_RELU]
        if unknown:
            raise ValueError(f"unknown VGG-19 layers {unknown} (known: {', '.join(_VGG19_RELU)})")
        if not path.is_file():
            raise _RefsrError(f"{path}: no such VGG-19 weights file (it cannot be downloaded here; "
                              "give a torchvision vgg19 state dict)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise _RefsrError(f"{path}: not a readable weights file ({type(exc).__name__})") from None
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise _RefsrError(f"{path}: not a VGG-19 state dict")
        if any(k.startswith("features.") for k in state):
            state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        last = max(_VGG19_RELU[name] for name in layers)
        modules, c_in = [], 3
        for item in _VGG19_CFG:
            if item == "M":
                modules.append(_nn.MaxPool2d(2, 2))
            else:
                modules += [_nn.Conv2d(c_in, item, 3, padding=1), _nn.ReLU(inplace=False)]
                c_in = item
        self.features = _nn.Sequential(*modules[: last + 1])
        wanted = self.features.state_dict()
        missing = [k for k in wanted if k not in state]
        wrong = [k for k in wanted if k in state and tuple(state[k].shape) != tuple(wanted[k].shape)]
        if missing or wrong:
            what = f"missing {missing[0]}" if missing else (f"{wrong[0]} has shape {tuple(state[wrong[0]].shape)}, "
                                                            f"expected {tuple(wanted[wrong[0]].shape)}")
            raise _RefsrError(f"{path}: not VGG-19 weights ({what})")
        self.features.load_state_dict({k: state[k].float() for k in wanted})
        self.features.eval().requires_grad_(False)
        self.taps = sorted(_VGG19_RELU[name] for name in layers)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True):  # the frozen VGG always stays in eval mode
        return super().train(False)

    def _feats(self, x: torch.Tensor) -> list[torch.Tensor]:
        out, x = [], (x - self.mean) / self.std
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                out.append(x)
        return out

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        # One pass over both images; the target branch needs no graph.
        n = sr.shape[0]
        feats = self._feats(torch.cat((sr, hr.detach()), dim=0))
        return sum((f[:n] - f[n:].detach()).abs().mean() for f in feats) / len(feats)


def crossmpi_loss(sr: torch.Tensor, hr: torch.Tensor, aux: dict, lr: torch.Tensor, perceptual=None,
                  internal_weight: float = 0.2, perceptual_weight: float = 1.0, return_terms: bool = False):
    """Cross-MPI loss: ``L1(sr, hr) + 0.2·L1(aux["lr_synth"], lr) [+ perceptual(sr, hr)]``.

    Args:
        sr, hr: ``N×3×H×W``. lr: ``N×3×h×w``.
        aux: the model's aux dict; reads ``"lr_synth"`` (``N×3×h×w``, the low-res MPI synthesis).
        perceptual: a :class:`VGGPerceptual` or ``None`` (term off: VGG-19 weights are never downloaded).
    Returns:
        the weighted total, or with ``return_terms=True`` the *unweighted* terms
        ``{"l1", "internal"[, "perceptual"]}`` (the training loop applies its own, staged weights).
    """
    terms = {"l1": (sr - hr).abs().mean(), "internal": (aux["lr_synth"] - lr).abs().mean()}
    if perceptual is not None:
        terms["perceptual"] = perceptual(sr, hr)
    if return_terms:
        return terms
    total = terms["l1"] + internal_weight * terms["internal"]
    if "perceptual" in terms:
        total = total + perceptual_weight * terms["perceptual"]
    return total


def _box_sums(cost: torch.Tensor, tops: torch.Tensor, lefts: torch.Tensor, size: int) -> torch.Tensor:
    """Sums of ``cost`` (``N×K×H×W``) over ``size×size`` windows at ``tops`` (``Gy``) × ``lefts`` (``Gx``)
    via an integral image. Returns ``N×K×Gy×Gx``."""
    ii = _F.pad(cost.cumsum(2).cumsum(3), (1, 0, 1, 0))
    y0, y1 = tops[:, None], tops[:, None] + size
    x0, x1 = lefts[None, :], lefts[None, :] + size
    return ii[..., y1, x1] - ii[..., y0, x1] - ii[..., y1, x0] + ii[..., y0, x0]


@torch.no_grad()
def ccnet_pseudo_offsets(aux: dict, target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """Best candidate per patch by exhaustive SSD: index ``N×Gy×Gx`` into ``aux["match_offsets"]``.

    For each patch (``aux["patch_size"]`` window at ``aux["match_centers"]``) and each candidate offset
    ``o``, the cost is ``Σ_window |target(q) − source(q + o)|²`` (source clamped at borders); candidates whose
    centre falls outside ``source`` are excluded. ``target``/``source``: ``N×3×H×W``.
    """
    offsets, centers, p = aux["match_offsets"], aux["match_centers"], int(aux["patch_size"])
    valid = aux["match_valid"]                                           # K×Gy×Gx
    n, _, h, w = source.shape
    tops = centers[1][:, 0] - p // 2
    lefts = centers[0][0, :] - p // 2
    radius = int(offsets.abs().max())
    padded = _F.pad(source, (radius, radius, radius, radius), mode="replicate")
    costs = []
    for s in range(0, offsets.shape[0], 64):                             # bounded memory: 64 shifts at a time
        chunk = offsets[s:s + 64]
        shifted = torch.stack([padded[:, :, radius + int(oy): radius + int(oy) + h,
                                      radius + int(ox): radius + int(ox) + w] for ox, oy in chunk.tolist()], 1)
        cost = ((shifted - target.unsqueeze(1)) ** 2).sum(2)             # N×k×H×W
        costs.append(_box_sums(cost.double(), tops, lefts, p).float())
    cost = torch.cat(costs, 1).masked_fill(~valid.unsqueeze(0), float("inf"))
    return cost.argmin(1)


@torch.no_grad()
def ccnet_true_targets(aux: dict, target_offsets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate index ``N×Gy×Gx`` of the true match of each patch, and where it is usable (``N×Gy×Gx`` bool).

    ``target_offsets``: ``N×2×Gy×Gx`` offsets (x, y, HR px) per patch centre, or a dense backward flow
    ``N×2×H×W`` (``LR(p) = Ref(p + V(p))``, e.g. a training sample's true flow) sampled at the centres.
    Snapped to the nearest candidate; unusable where it falls outside the search window or outside Ref.
    """
    logits, offsets = aux["match_logits"], aux["match_offsets"]
    n, k, gy, gx = logits.shape
    t = target_offsets.to(logits.dtype)
    if tuple(t.shape[-2:]) != (gy, gx):
        centers = aux["match_centers"]
        t = t[:, :, centers[1], centers[0]]                              # N×2×Gy×Gx
    step = float(offsets[1, 0] - offsets[0, 0]) if k > 1 else 1.0
    radius = float(-offsets[0, 0])
    side = int(round(_math.sqrt(k)))
    ix = torch.round((t[:, 0] + radius) / step).long()
    iy = torch.round((t[:, 1] + radius) / step).long()
    inside = (ix >= 0) & (ix < side) & (iy >= 0) & (iy < side)
    index = (iy.clamp(0, side - 1) * side + ix.clamp(0, side - 1))
    valid = aux["match_valid"].unsqueeze(0).expand(n, -1, -1, -1)
    inside &= torch.gather(valid, 1, index.unsqueeze(1)).squeeze(1)
    return index, inside


def ccnet_loss(aux: dict, target_offsets: torch.Tensor | None = None, hr: torch.Tensor | None = None
               ) -> torch.Tensor:
    """CC-Net's classification loss: cross-entropy of the 2-D softmax over the search window.

    Reads ``aux["match_logits"]`` (``N×K×Gy×Gx``), ``"match_offsets"`` (``K×2`` x, y), ``"match_valid"``,
    ``"match_centers"`` (``2×Gy×Gx``), ``"patch_size"``, and for self-supervised targets ``"lr_up"``, ``"ref"``,
    ``"scale"``.

    The true match of each patch comes from, in order of preference:
      * ``target_offsets``: true offsets or a dense true backward flow (:func:`ccnet_true_targets`);
      * ``hr`` (``N×3×H×W``, the ground truth of the LR view): the candidate whose Ref window best matches the
        HR window (exhaustive SSD, :func:`ccnet_pseudo_offsets`);
      * neither: the candidate whose blurred Ref window (``Ref ↓s ↑s``) best matches ``LR↑`` — the classic
        cross-scale matching target, available without ground truth.
    Returns the mean cross-entropy over patches with a valid target (0 with a graph if there are none).
    """
    logits = aux["match_logits"]
    if target_offsets is not None:
        index, inside = ccnet_true_targets(aux, target_offsets)
    else:
        if hr is not None:
            index = ccnet_pseudo_offsets(aux, hr, aux["ref"])
        else:
            from refsr_cli.resize import downscale, upscale
            factor = int(aux["scale"])
            ref_blur = upscale(downscale(aux["ref"], factor), factor)  # same blur as LR↑
            index = ccnet_pseudo_offsets(aux, aux["lr_up"], ref_blur)
        inside = torch.ones_like(index, dtype=torch.bool)
    if not bool(inside.any()):
        return logits.sum() * 0.0
    ce = _F.cross_entropy(logits.float(), index, reduction="none")      # N×Gy×Gx
    return ce[inside].mean()
