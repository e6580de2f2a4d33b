"""Cross-MPI (Zhou et al., CVPR 2021): RefSR through a super-resolved multiplane image of the reference.

Pipeline (docs/design.md §4), shapes for a batch of ``N`` pairs, LR ``h×w``, HR ``H×W = s·h × s·w``, ``D`` planes:

1. **Plane sweep volume** of Ref: plane ``i`` is Ref shifted by disparity ``δ_i`` along the baseline
   direction ``b`` — ``PSV_i(p) = Ref(p + δ_i·b)`` (``N×D×3×H×W``), see :func:`plane_sweep_volume` and the
   geometry convention in docs/architecture.md. Planes are spaced uniformly in disparity, which *is*
   inverse-depth spacing (disparity ∝ 1/depth for fronto-parallel planes of a rectified pair / light field).
2. **Shared feature extractor** (residual ASPP) on LR and on every plane bicubic-downscaled to LR size
   (``N·(D+1)×C×h×w``). Downscaling with the *same* MATLAB bicubic as the LR degradation makes the plane at
   the true disparity reproduce LR exactly, so matching at low resolution compares like with like.
3. **Plane-aware attention**: per-pixel logits ``τ·⟨f_LR, f_plane_i⟩`` with L2-normalised features (cosine
   similarity; learnable temperature ``τ``, initially 10), softmax over planes → initial alphas ``α_LR``
   (``N×D×h×w``). The paper's raw inner product is ``attention="dot"`` (logits ``τ·⟨f_LR, f_plane⟩/√C``);
   normalising is the default because a raw inner product is not maximal for identical features, so a
   fresh network ranks planes at random and needs long training before the attention finds the right
   plane, while the cosine form peaks at the matching plane from the first step (measured: see
   docs/models-crossmpi-refsrnet.md). The low-res synthesis
   ``Σ_i α_LR,i · PSV↓_i`` is the internal-supervision output (compared with LR by the loss).
4. **Multiscale guided upsampling**: ``log2(s)`` steps of nearest ×2 of the plane logits + a residual
   refinement (conv, residual blocks, conv) fed with the logits and guidance features of that scale. The
   guidance pyramid is built from ``cat(LR↑, PSV)`` (``3+3D`` channels at HR) with stride-2 convs.
   Refinements work on logits (softmax taken at each scale) so that the ×2 step keeps alphas normalised;
   their last conv starts at zero, so an untrained refiner passes the low-res attention through unchanged.
5. **SR-MPI blending**: ``transferred = Σ_i α_i · PSV_i`` (``N×3×H×W``); ``depth`` = disparity of the
   argmax plane.
6. **FuseNet**: ``SR = LR↑ + F(cat(LR↑, transferred))`` with a residual conv net at HR.

The network has no stride beyond the ``s``-fold guided upsampling, so any LR size works
(``input_multiple = 1``); ``scale`` must be a power of two.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from refsr_cli.archs import Recipe, register
from refsr_cli.archs.base import RefSRModel
from refsr_cli.archs.blocks import ResBlock, conv
from refsr_cli.ops.resize import downscale, imresize, upscale

PAPER = "Zhou et al., Cross-MPI: Cross-scale Stereo for Image Super-Resolution using Multiplane Images, CVPR 2021"


# ------------------------------------------------------------------------------------------------
# Plane sweep volume (pure functions)
# ------------------------------------------------------------------------------------------------


def plane_disparities(min_disparity: float, max_disparity: float, num_planes: int,
                      device=None, dtype=torch.float32) -> torch.Tensor:
    """The ``D`` plane disparities (HR pixels along the baseline), inverse-depth spaced.

    For fronto-parallel planes disparity = f·B/depth, so planes evenly spaced in inverse depth are evenly
    spaced in disparity: ``linspace(min, max, D)``. Returns a ``(D,)`` tensor.
    """
    if num_planes < 1:
        raise ValueError("num_planes must be at least 1")
    return torch.linspace(float(min_disparity), float(max_disparity), int(num_planes), device=device,
                          dtype=dtype)


def _as_batch(values, n: int, width: int | None, device, dtype, name: str) -> torch.Tensor:
    """``values`` (sequence, ``(K,)`` or ``(N,K)``) → ``N×K`` tensor."""
    t = torch.as_tensor(values, device=device, dtype=dtype)
    if t.dim() == 1:
        t = t.unsqueeze(0).expand(n, -1)
    if t.dim() != 2 or t.shape[0] != n or (width is not None and t.shape[1] != width):
        raise ValueError(f"{name} has shape {tuple(t.shape)}; expected ({width or 'K'},) or ({n}, {width or 'K'})")
    return t


def plane_sweep_volume(ref: torch.Tensor, disparities, baseline=(1.0, 1.0)) -> torch.Tensor:
    """Plane sweep volume of ``ref`` for a light-field view pair or a rectified pair.

    ``PSV[n, i](p) = ref[n](p + disparities[i] · baseline)`` — bilinear with clamped borders, the samples of
    :func:`refsr_cli.ops.warp.backward_warp` with a constant flow. With the project's geometry convention
    (docs/architecture.md), Ref = view (0,0) and target view (k,k) use ``baseline = (k/7, k/7)`` with
    disparities measured between views (0,0) and (7,7) (or ``(1, 1)`` with disparities of the pair itself);
    a rectified pair with the target on the right uses ``(1, 0)``.

    Args:
        ref: ``N×C×H×W``.
        disparities: ``(D,)`` or ``(N, D)`` — pixels (of ``ref``'s scale) along the baseline.
        baseline: ``(bx, by)`` or ``(N, 2)`` — direction (and length) in x = columns, y = rows.
    Returns:
        ``N×D×C×H×W``.
    """
    n, c, h, w = ref.shape
    disp = _as_batch(disparities, n, None, ref.device, ref.dtype, "disparities")
    base = _as_batch(baseline, n, 2, ref.device, ref.dtype, "baseline")
    offsets = (disp.unsqueeze(-1) * base.unsqueeze(1)).tolist()          # N×D×(x, y)
    # Every plane is one constant shift: with the borders replicated far enough, a bilinear sample with
    # clamped borders is a blend of the padded image's windows at the shift's whole pixels — one lerp per
    # axis of views, instead of grid_sample's per-pixel coordinates (16 planes of 736×496 on two CPU threads:
    # 9–13 instead of 78 ms; the same samples up to float rounding).
    shifts = [shift for planes in offsets for shift in planes]
    px = max(abs(math.floor(dx)) for dx, _ in shifts) + 1
    py = max(abs(math.floor(dy)) for _, dy in shifts) + 1
    padded = F.pad(ref, (px, px, py, py), mode="replicate")
    psv = ref.new_empty(n, disp.shape[1], c, h, w)
    for i, planes in enumerate(offsets):
        for j, (dx, dy) in enumerate(planes):
            x0, y0 = math.floor(dx), math.floor(dy)
            fx, fy = dx - x0, dy - y0

            def window(ax: int, ay: int) -> torch.Tensor:
                top, left = py + y0 + ay, px + x0 + ax
                return padded[i, :, top:top + h, left:left + w]

            row = window(0, 0) if fx == 0 else torch.lerp(window(0, 0), window(1, 0), fx)
            if fy != 0:
                below = window(0, 1) if fx == 0 else torch.lerp(window(0, 1), window(1, 1), fx)
                row = torch.lerp(row, below, fy)
            psv[i, j] = row
    return psv


def degraded_sweep(psv: torch.Tensor, ref: torch.Tensor, disparities: torch.Tensor, baseline: torch.Tensor,
                   scale: int) -> torch.Tensor:
    """``downscale(psv, scale)`` (``N×D×C×h×w``) of ``psv``, the :func:`plane_sweep_volume` of ``ref`` with
    ``disparities`` (``N×D``) and ``baseline`` (``N×2``). A sweep along rows only (a rectified pair, the
    matched reference) commutes with the degradation's row resize: that then runs once on ``ref`` instead
    of once per plane, and the planes are swept at LR height (a third of the time)."""
    if not (baseline[:, 1] == 0).all():
        return downscale(psv, scale)
    h, w = ref.shape[-2] // scale, ref.shape[-1] // scale
    return imresize(plane_sweep_volume(imresize(ref, size=(h, ref.shape[-1])), disparities, baseline), size=(h, w))


def plane_sweep_options(model: nn.Module, geometry: dict) -> dict:
    """Forward options that sweep ``model``'s planes along a pair's geometry.

    ``geometry``: ``baseline`` ``(bx, by)`` (default: the model's configured baseline) and optionally
    ``disparity_range`` ``(lo, hi)`` in HR px along it, which replaces the configured planes by as many
    planes spread over that range. Returns ``{"baseline": …[, "disparities": (D,)]}``.
    """
    options = {"baseline": tuple(geometry.get("baseline") or model.config["baseline"])}
    if "disparity_range" in geometry:
        lo, hi = geometry["disparity_range"]
        options["disparities"] = plane_disparities(lo, hi, model.config["num_planes"])
    return options


# ------------------------------------------------------------------------------------------------
# Modules
# ------------------------------------------------------------------------------------------------


class ResASPP(nn.Module):
    """Residual atrous spatial pyramid pooling block: ``x + 1×1(cat_d relu(conv3×3_dil=d(x)))``.

    Shapes: ``N×C×H×W → N×C×H×W``.
    """

    def __init__(self, ch: int, dilations: Sequence[int] = (1, 2, 4)):
        super().__init__()
        self.branches = nn.ModuleList(conv(ch, ch, 3, dilation=d, act="lrelu") for d in dilations)
        self.fuse = conv(ch * len(dilations), ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fuse(torch.cat([b(x) for b in self.branches], dim=1))


class FeatureExtractor(nn.Module):
    """Shared residual-ASPP feature extractor: ``N×3×h×w → N×C×h×w`` (no striding)."""

    def __init__(self, ch: int, blocks: int, dilations: Sequence[int]):
        super().__init__()
        self.head = conv(3, ch, 3, act="lrelu")
        self.body = nn.Sequential(*[ResASPP(ch, dilations) for _ in range(blocks)])
        self.tail = conv(ch, ch, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.body(self.head(x)))


class AlphaRefiner(nn.Module):
    """One ×2 step of the guided upsampling: ``logits + R(cat(logits, guide))`` at the finer scale.

    Shapes: logits ``N×D×H×W``, guide ``N×G×H×W`` → ``N×D×H×W``. The last conv is zero-initialised.
    """

    def __init__(self, planes: int, guide_ch: int, ch: int, blocks: int):
        super().__init__()
        self.head = conv(planes + guide_ch, ch, 3, act="lrelu")
        self.body = nn.Sequential(*[ResBlock(ch, act="lrelu") for _ in range(blocks)])
        self.tail = conv(ch, planes, 3)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def forward(self, logits: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        return logits + self.tail(self.body(self.head(torch.cat((logits, guide), dim=1))))


@register("crossmpi", paper=PAPER,
          summary="plane sweep of Ref, plane-aware attention at LR, guided alpha upsampling, SR-MPI + FuseNet",
          input_multiple=1, needs_reference=True, scales=(4, 8),
          tiny={"num_planes": 8, "features": 8, "aspp_blocks": 1, "guide_channels": 8, "refine_channels": 8,
                "refine_blocks": 1, "fuse_channels": 8, "fuse_blocks": 1},
          # The paper: L1 + 0.2·internal supervision (+ perceptual with a user VGG-19 file), in three steps:
          # internal supervision only (alpha maps), then the SR synthesis, then all together. The plane sweep
          # shifts Ref along the sample's baseline ("baseline" of the batch), so training draws diagonal views
          # and no parallax shift (a random 2-D shift would leave the plane geometry).
          recipe=Recipe(preset={"views": "diagonal", "parallax_shift": 0,
                                "loss": {"l1": 1.0, "internal": 0.2, "perceptual": 0.0},
                                "stages": [{"until": 0.2, "loss": {"l1": 0.0, "internal": 1.0, "perceptual": 0.0}},
                                           {"until": 0.6, "loss": {"l1": 1.0, "internal": 0.0, "perceptual": 0.0}}]},
                        losses=("internal", "perceptual"), forward_keys=("baseline",),
                        pair_options=plane_sweep_options, align_reference=True))
class CrossMPI(RefSRModel):
    """Cross-MPI.

    Args:
        num_planes: ``D`` planes of the sweep (32 in the paper).
        min_disparity, max_disparity: disparity range (HR pixels along ``baseline``) of the planes. Defaults
            0…20 px suit Flower light fields between views (0,0) and (7,7).
        baseline: default baseline direction ``(bx, by)``; ``(1, 1)`` = the diagonal light-field pair whose
            disparities the range describes. Forward can override it per call (e.g. ``(k/7, k/7)`` for view
            (k,k), ``(1, 0)`` for a rectified horizontal pair).
        features: channels ``C`` of the shared feature extractor.
        aspp_blocks, dilations: residual-ASPP blocks and their dilation rates.
        guide_channels: channels of the guidance pyramid built from ``cat(LR↑, PSV)``.
        refine_channels, refine_blocks: width / residual blocks of each ×2 alpha refinement.
        fuse_channels, fuse_blocks: width / residual blocks of FuseNet (at HR).
        attention: ``"cosine"`` (default) or ``"dot"`` (the paper's raw inner product), see module notes.
        max_scale: largest power-of-two scale supported; the guided upsampling has ``log2(max_scale)``
            refinement steps, of which a ×s call uses the ``log2(s)`` finest (coarser ones stay idle).
    Forward: ``(lr N×3×h×w, ref N×3×sh×sw, scale, baseline=None, disparities=None) → (sr, aux)``;
    ``disparities`` (``(D,)`` or ``(N, D)``) replaces the configured planes (same count ``D``).
    aux: ``"alpha"`` (``N×D×H×W``, sums to 1 over planes), ``"alpha_lr"`` (``N×D×h×w``, the attention),
    ``"depth"`` (``N×1×H×W``, disparity of the argmax plane, HR pixels along the baseline),
    ``"disparities"`` (``N×D``), ``"transferred"`` (``N×3×H×W``), ``"lr_synth"`` (``N×3×h×w``, for internal
    supervision), ``"psv"`` (``N×D×3×H×W``, already computed, so free), ``"lr_up"`` (``N×3×H×W``).
    """

    # The default sweep holds no weights: a run may start from weights trained with another one.
    weight_free_config = ("min_disparity", "max_disparity", "baseline")

    def __init__(self, num_planes: int = 32, min_disparity: float = 0.0, max_disparity: float = 20.0,
                 baseline: Sequence[float] = (1.0, 1.0), features: int = 64, aspp_blocks: int = 3,
                 dilations: Sequence[int] = (1, 2, 4), guide_channels: int = 32, refine_channels: int = 64,
                 refine_blocks: int = 2, fuse_channels: int = 64, fuse_blocks: int = 4,
                 attention: str = "cosine", max_scale: int = 8):
        super().__init__()
        self.config = {"num_planes": int(num_planes), "min_disparity": float(min_disparity),
                       "max_disparity": float(max_disparity), "baseline": [float(b) for b in baseline],
                       "features": int(features), "aspp_blocks": int(aspp_blocks),
                       "dilations": [int(d) for d in dilations], "guide_channels": int(guide_channels),
                       "refine_channels": int(refine_channels), "refine_blocks": int(refine_blocks),
                       "fuse_channels": int(fuse_channels), "fuse_blocks": int(fuse_blocks),
                       "attention": str(attention), "max_scale": int(max_scale)}
        if attention not in ("cosine", "dot"):
            raise ValueError(f"attention must be 'cosine' or 'dot', not {attention!r}")
        if len(self.config["baseline"]) != 2:
            raise ValueError("baseline must be (bx, by)")
        if max_scale < 2 or max_scale & (max_scale - 1):
            raise ValueError("max_scale must be a power of two ≥ 2")
        d = self.config["num_planes"]
        self.register_buffer("default_disparities", plane_disparities(min_disparity, max_disparity, d),
                             persistent=False)
        self.extractor = FeatureExtractor(features, aspp_blocks, dilations)
        # log τ: learnable attention temperature, so training can sharpen (or soften) the plane choice.
        # Cosine logits lie in [−1, 1]: τ = 10 makes the initial softmax decisive rather than uniform.
        self.log_temperature = nn.Parameter(torch.tensor(math.log(10.0) if attention == "cosine" else 0.0))
        steps = int(math.log2(max_scale))
        # Guidance pyramid: full-res features, then one stride-2 conv per coarser scale (1/2 … 1/max_scale·2).
        self.guide_head = nn.Sequential(conv(3 + 3 * d, guide_channels, 3, act="lrelu"),
                                        conv(guide_channels, guide_channels, 3, act="lrelu"))
        self.guide_down = nn.ModuleList(conv(guide_channels, guide_channels, 3, stride=2, act="lrelu")
                                        for _ in range(steps - 1))
        # refiners[j] works at scale 1/2^j of HR (j = 0 is full resolution).
        self.refiners = nn.ModuleList(AlphaRefiner(d, guide_channels, refine_channels, refine_blocks)
                                      for _ in range(steps))
        self.fuse = nn.Sequential(conv(6, fuse_channels, 3, act="lrelu"),
                                  *[ResBlock(fuse_channels, act="lrelu") for _ in range(fuse_blocks)],
                                  conv(fuse_channels, 3, 3))
        # Zero-initialised FuseNet output: training starts from SR = LR↑ (bicubic quality) instead of adding
        # a random image, and the alphas receive no random-sign gradient through an untrained FuseNet.
        nn.init.zeros_(self.fuse[-1].weight)
        nn.init.zeros_(self.fuse[-1].bias)

    # -- helpers -----------------------------------------------------------------------------------

    def attention_logits(self, lr: torch.Tensor, psv_lr: torch.Tensor) -> torch.Tensor:
        """Plane-aware attention logits ``N×D×h×w`` from LR ``N×3×h×w`` and low-res planes ``N×D×3×h×w``."""
        n, d, c, h, w = psv_lr.shape
        feats = self.extractor(torch.cat((lr.unsqueeze(1), psv_lr), dim=1).reshape(n * (d + 1), c, h, w))
        feats = feats.reshape(n, d + 1, -1, h, w)
        if self.config["attention"] == "cosine":
            feats = F.normalize(feats, dim=2, eps=1e-6)
            scale = self.log_temperature.exp()
        else:
            scale = self.log_temperature.exp() / math.sqrt(feats.shape[2])
        f_lr, f_planes = feats[:, :1], feats[:, 1:]
        return (f_lr * f_planes).sum(dim=2) * scale

    def parameter_breakdown(self) -> dict[str, int]:
        groups = {"extractor": self.extractor, "guidance": nn.ModuleList([self.guide_head, self.guide_down]),
                  "refiners": self.refiners, "fusenet": self.fuse}
        out = {k: sum(p.numel() for p in m.parameters()) for k, m in groups.items()}
        out["attention"] = self.log_temperature.numel()
        return out

    # -- forward -----------------------------------------------------------------------------------

    def forward(self, lr: torch.Tensor, ref: torch.Tensor, scale: int, baseline=None, disparities=None):
        n, _, h, w = lr.shape
        if ref is None or ref.shape[0] != n or ref.shape[-2:] != (scale * h, scale * w):
            raise ValueError(f"reference {None if ref is None else tuple(ref.shape)} does not match "
                             f"LR {tuple(lr.shape)} at ×{scale}")
        steps = int(round(math.log2(scale))) if scale >= 2 else -1
        if steps < 1 or 2 ** steps != scale or scale > self.config["max_scale"]:
            raise ValueError(f"Cross-MPI supports power-of-two scales up to ×{self.config['max_scale']}, "
                             f"not ×{scale}")
        d = self.config["num_planes"]
        disp = _as_batch(self.default_disparities if disparities is None else disparities, n, d,
                         ref.device, ref.dtype, "disparities")
        base = _as_batch(self.config["baseline"] if baseline is None else baseline, n, 2, ref.device,
                         ref.dtype, "baseline")

        psv = plane_sweep_volume(ref, disp, base)                      # N×D×3×H×W
        psv_lr = degraded_sweep(psv, ref, disp, base, scale)           # N×D×3×h×w (the LR degradation)
        lr_up = upscale(lr, scale)                                      # N×3×H×W

        logits = self.attention_logits(lr, psv_lr)                      # N×D×h×w
        alpha_lr = logits.softmax(dim=1)
        lr_synth = (alpha_lr.unsqueeze(2) * psv_lr).sum(dim=1)         # N×3×h×w

        # Guidance pyramid, finest first: guides[j] at 1/2^j of HR.
        guides = [self.guide_head(torch.cat((lr_up, psv.flatten(1, 2)), dim=1))]
        for down in self.guide_down[: steps - 1]:
            guides.append(down(guides[-1]))
        for j in range(steps - 1, -1, -1):
            logits = F.interpolate(logits, scale_factor=2, mode="nearest")
            logits = self.refiners[j](logits, guides[j])
        alpha = logits.softmax(dim=1)                                    # N×D×H×W

        transferred = (alpha.unsqueeze(2) * psv).sum(dim=1)             # SR-MPI rendered at the LR view
        sr = lr_up + self.fuse(torch.cat((lr_up, transferred), dim=1))
        # max(dim).indices: the same indices as argmax(dim), which on the CPU reduces across the planes'
        # stride about 10× slower (≈ 45 ms of a 640×480 ×4 call)
        index = alpha.max(dim=1, keepdim=True).indices                  # N×1×H×W
        depth = torch.gather(disp.reshape(n, d, 1, 1).expand(-1, -1, *index.shape[-2:]), 1, index)
        aux = {"alpha": alpha, "alpha_lr": alpha_lr, "depth": depth, "disparities": disp,
               "transferred": transferred, "warped": transferred, "lr_synth": lr_synth, "psv": psv,
               "lr_up": lr_up}
        return sr, aux
