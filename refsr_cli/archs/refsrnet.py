"""RefSR-Net (Zheng et al., BMVC 2017): cross-scale correspondence (CC-Net) + patch synthesis (SS-Net).

The HR output is tiled into patches of ``P = patch_lr·s`` pixels (``patch_lr`` LR pixels; 8 → 64×64 at ×8
as in the paper) at stride ``P/2``; the last row/column of patches is aligned with the image edge so any size
is covered. Shapes below: ``N`` images, HR ``H×W``, patch grid ``Gy×Gx`` (``G = Gy·Gx``), ``K`` candidates.

**CC-Net** — a siamese (shared weights) dilated conv net (3×3 convs + BN + ReLU, channels 16, 32, 64, 64, 64,
128, dilations 1, 1, 2, 4, 8, 16, then a 1×1 conv to 256) applied at full resolution to the bilinearly
upsampled LR and to Ref. Its receptive field (127 px) makes the feature at a pixel a descriptor of the
patch around it. For each patch centre ``c``, the candidates are ``c + o`` for offsets ``o`` on a
``(2R/step + 1)²`` grid (radius ``R = search_radius``, spacing ``search_step``, HR pixels); the match
logits are inner products ``⟨F_LR(c), F_Ref(c + o)⟩ / √256`` (candidates outside Ref get −1e4) and a
2-D softmax over the window gives the match distribution, trained as classification against the true
offset (:func:`refsr_cli.training.losses.ccnet_loss`). The match is the argmax; its probability is the confidence.

**SS-Net** — per patch: LR features from an SRResNet-style body (head conv + residual blocks + conv with a
long skip) on the ``patch_lr×patch_lr`` LR patch, then ``log2(s)`` nearest-neighbour ×2 upsampling steps;
the matched ``P×P`` Ref patch is encoded at 4 scales (1, 1/2, 1/4, 1/8 of HR) and fused into the LR stream
at every resolution the two share, coarse to fine, by a learned mask: ``x ← x + σ(M(cat(x, r)))·r`` then a
residual block. The head predicts a residual on the bicubic LR↑ patch plus a blending logit; overlapping
patch predictions are blended by mask-weighted averaging with weights ``σ(logit)·taper`` (a separable
triangle window, so patch centres dominate over patch borders).

**Whole images** — CC-Net runs once per image at full resolution; SS-Net runs on all patches in chunks of
at most ``patch_chunk``, fewer where their activations would outgrow the CPU's caches (bounded memory at
inference); blending is a scatter-add. No tiling of the image itself is needed up to a few megapixels
(CC-Net keeps ``256·H·W`` floats per image); larger images go through the project's tiled inference with
tiles larger than twice the search radius.
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
from refsr_cli.ops.resize import upscale

PAPER = ("Zheng et al., Learning Cross-scale Correspondence and Patch-based Synthesis for Reference-based "
         "Super-Resolution, BMVC 2017")

INVALID_LOGIT = -1e4   # logit of a candidate outside Ref (finite so that 0·logit stays finite)
# SS-Net runs on chunks of patches whose full-resolution activations (ss_channels·P² floats per patch) fit
# in about this many bytes, so that they stay in the CPU's caches between layers: with the shipped ×8
# network, 16 patches a chunk (8 MiB) ran 1.5–1.7× faster than 256 (134 MiB), and ×4's 64 patches 1.3–1.4×.
SSNET_CHUNK_BYTES = 8 << 20


# ------------------------------------------------------------------------------------------------
# Patch geometry (pure functions)
# ------------------------------------------------------------------------------------------------


def patch_starts(length: int, size: int, stride: int) -> torch.Tensor:
    """Top/left coordinates of patches of ``size`` covering ``[0, length)``: every ``stride`` plus one
    aligned with the end. Requires ``length ≥ size``. Returns a ``(G,)`` long tensor."""
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] != length - size:
        starts.append(length - size)
    return torch.tensor(starts, dtype=torch.long)


def search_offsets(radius: int, step: int) -> torch.Tensor:
    """Candidate offsets ``K×2`` (x, y), y-major: row ``k = iy·n + ix`` is ``(−R + ix·step, −R + iy·step)``."""
    r = torch.arange(-radius, radius + 1, step, dtype=torch.long)
    oy, ox = torch.meshgrid(r, r, indexing="ij")
    return torch.stack((ox.reshape(-1), oy.reshape(-1)), dim=1)


def gather_patches(img: torch.Tensor, tops: torch.Tensor, lefts: torch.Tensor, size: int) -> torch.Tensor:
    """Square patches of ``img`` (``N×C×H×W``) at per-image positions ``tops``/``lefts`` (``N×G`` long).

    Pixels outside the image are clamped to the border. Returns ``N×G×C×size×size``.
    """
    n, c, h, w = img.shape
    g = tops.shape[1]
    d = torch.arange(size, device=img.device)
    ys = (tops[:, :, None] + d).clamp_(0, h - 1)                         # N×G×P
    xs = (lefts[:, :, None] + d).clamp_(0, w - 1)
    idx = (ys[:, :, :, None] * w + xs[:, :, None, :]).reshape(n, 1, g * size * size)
    out = torch.gather(img.flatten(2), 2, idx.expand(-1, c, -1))
    return out.reshape(n, c, g, size, size).transpose(1, 2)


def scatter_patches(values: torch.Tensor, tops: torch.Tensor, lefts: torch.Tensor, size: tuple[int, int]
                    ) -> torch.Tensor:
    """Sum patches ``values`` (``N×G×C×P×P``, G = Gy·Gx y-major) into an ``N×C×H×W`` canvas on the grid
    ``tops`` (``(Gy,)``) × ``lefts`` (``(Gx,)``)."""
    n, g, c, p, _ = values.shape
    h, w = size
    d = torch.arange(p, device=values.device)
    ys, xs = tops[:, None] + d, lefts[:, None] + d                        # Gy×P, Gx×P
    idx = (ys[:, None, :, None] * w + xs[None, :, None, :]).reshape(1, 1, -1)
    canvas = values.new_zeros(n, c, h * w)
    canvas.scatter_add_(2, idx.expand(n, c, -1), values.transpose(1, 2).reshape(n, c, -1))
    return canvas.reshape(n, c, h, w)


# ------------------------------------------------------------------------------------------------
# CC-Net
# ------------------------------------------------------------------------------------------------


class CCNet(nn.Module):
    """Siamese dilated feature network: ``N×3×H×W → N×out×H×W`` (full resolution, no stride)."""

    def __init__(self, channels: Sequence[int] = (16, 32, 64, 64, 64, 128),
                 dilations: Sequence[int] = (1, 1, 2, 4, 8, 16), out_channels: int = 256):
        super().__init__()
        if len(channels) != len(dilations):
            raise ValueError("cc_channels and cc_dilations must have the same length")
        layers, c_in = [], 3
        for c, d in zip(channels, dilations):
            layers.append(conv(c_in, c, 3, dilation=d, bn=True, act="relu"))
            c_in = c
        layers.append(conv(c_in, out_channels, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# ------------------------------------------------------------------------------------------------
# SS-Net
# ------------------------------------------------------------------------------------------------


class GatedFusion(nn.Module):
    """Mask-gated fusion of reference features into the LR stream: ``x + σ(M(cat(x, r')))·r'`` → ResBlock,
    with ``r' = proj(r)``. Shapes: ``x N×C×h×w``, ``r N×Cr×h×w`` → ``N×C×h×w``."""

    def __init__(self, ch: int, ref_ch: int):
        super().__init__()
        self.proj = conv(ref_ch, ch, 3, act="relu")
        self.mask = conv(2 * ch, ch, 3)
        self.post = ResBlock(ch)

    def forward(self, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        r = self.proj(r)
        return self.post(x + torch.sigmoid(self.mask(torch.cat((x, r), dim=1))) * r)


class SSNet(nn.Module):
    """Patch synthesis: ``(LR patch B×3×p×p, Ref patch B×3×sp×sp, LR↑ patch) → (HR B×3×sp×sp, logit B×1×sp×sp)``.

    ``ref_levels`` reference scales (1, 1/2, …); at ×s the fusions use the ``log2(s) + 1`` finest of them
    (all 4 at ×8, the three finest at ×4, whose 1/8-scale encoder/fusion stay idle).
    """

    def __init__(self, channels: int = 64, blocks: int = 16, ref_channels: Sequence[int] = (32, 64, 64, 64)):
        super().__init__()
        levels = len(ref_channels)
        self.head = conv(3, channels, 3, act="relu")
        self.body = nn.Sequential(*[ResBlock(channels) for _ in range(blocks)], conv(channels, channels, 3))
        # ups[j]: ×2 into level j (level j = 1/2^j of HR), for j = levels−2 … 0.
        self.ups = nn.ModuleList(conv(channels, channels, 3, act="relu") for _ in range(levels - 1))
        ref_layers = [nn.Sequential(conv(3, ref_channels[0], 3, act="relu"),
                                    conv(ref_channels[0], ref_channels[0], 3, act="relu"))]
        for j in range(1, levels):
            ref_layers.append(conv(ref_channels[j - 1], ref_channels[j], 3, stride=2, act="relu"))
        self.ref_encoder = nn.ModuleList(ref_layers)
        self.fusions = nn.ModuleList(GatedFusion(channels, ref_channels[j]) for j in range(levels))
        self.tail = nn.Sequential(conv(channels, channels, 3, act="relu"), conv(channels, 4, 3))

    def forward(self, lr_patch: torch.Tensor, ref_patch: torch.Tensor, lr_up_patch: torch.Tensor, scale: int):
        steps = int(round(math.log2(scale)))
        refs = []
        r = ref_patch
        for layer in self.ref_encoder[: steps + 1]:
            r = layer(r)
            refs.append(r)                                                # refs[j] at 1/2^j of HR
        x = self.head(lr_patch)
        x = x + self.body(x)                                              # SRResNet long skip
        x = self.fusions[steps](x, refs[steps])
        for j in range(steps - 1, -1, -1):
            x = self.ups[j](F.interpolate(x, scale_factor=2, mode="nearest"))
            x = self.fusions[j](x, refs[j])
        out = self.tail(x)
        return lr_up_patch + out[:, :3], out[:, 3:]


# ------------------------------------------------------------------------------------------------
# RefSR-Net
# ------------------------------------------------------------------------------------------------


@register("refsrnet", paper=PAPER,
          summary="CC-Net dilated siamese matching (2-D softmax over a search window) + SS-Net patch synthesis",
          input_multiple=1, needs_reference=True, scales=(4, 8),
          tiny={"cc_channels": [4, 4, 8, 8, 8, 8], "cc_out": 16, "search_radius": 8, "search_step": 2,
                "patch_lr": 4, "ss_channels": 8, "ss_blocks": 1, "ref_channels": [4, 8, 8, 8]},
          # CC-Net's matching trained as classification ("ccnet": against the best HR match; "flow": against
          # the true flow), SS-Net with a pixel loss.
          recipe=Recipe(preset={"loss": {"l1": 1.0, "ccnet": 0.1}, "crop": [160, 160], "batch": 4},
                        losses=("flow", "ccnet"), centre_reference=True))
class RefSRNet(RefSRModel):
    """RefSR-Net = CC-Net + SS-Net.

    Args:
        cc_channels, cc_dilations, cc_out: CC-Net layers (paper: 16…128, dilations 1…16, 1×1 to 256).
        search_radius, search_step: candidate window ``±R`` HR pixels, spacing ``step``
            (defaults 32 / 2 → 33×33 = 1089 candidates; covers Flower's ≤ 20 px and ~6 % of a 512 px width).
        patch_lr: LR patch side (8 → 64×64 HR patches at ×8, 32×32 at ×4); must be even (stride = half).
        ss_channels, ss_blocks: SS-Net LR-stream width and residual blocks (SRResNet: 64, 16).
        ref_channels: reference-encoder channels at scales 1, 1/2, 1/4, 1/8.
        patch_chunk: at most this many patches per SS-Net batch (fewer where their activations would
            exceed ``SSNET_CHUNK_BYTES``; bounds memory on large images; does not change results).
    Forward: ``(lr N×3×h×w, ref N×3×sh×sw, scale) → (sr N×3×sh×sw, aux)`` with aux:
        ``"confidence"`` ``N×1×H×W`` (softmax probability of each patch's match, blended like the output),
        ``"warped"`` ``N×3×H×W`` (matched Ref patches placed and blended), ``"match_logits"`` ``N×K×Gy×Gx``,
        ``"match_offsets"`` ``K×2`` (x, y HR px), ``"match_valid"`` ``K×Gy×Gx`` (candidate inside Ref),
        ``"match_centers"`` ``2×Gy×Gx`` (x, y of patch centres), ``"match_flow"`` ``N×2×Gy×Gx`` (chosen
        offsets, i.e. a backward flow sampled at the centres), ``"patch_size"`` / ``"patch_stride"`` (ints),
        ``"lr_up"`` ``N×3×H×W``, ``"ref"`` and ``"scale"`` (inputs; padded to at least one patch; for :func:`refsr_cli.training.losses.ccnet_loss`'s
        self-supervised targets).
    """

    # Configuration that no weight depends on: a training run may start (``--init``) from a checkpoint that
    # differs in these, e.g. to widen the search window for references with more parallax.
    weight_free_config = ("search_radius", "search_step", "patch_chunk")

    def __init__(self, cc_channels: Sequence[int] = (16, 32, 64, 64, 64, 128),
                 cc_dilations: Sequence[int] = (1, 1, 2, 4, 8, 16), cc_out: int = 256, search_radius: int = 32,
                 search_step: int = 2, patch_lr: int = 8, ss_channels: int = 64, ss_blocks: int = 16,
                 ref_channels: Sequence[int] = (32, 64, 64, 64), patch_chunk: int = 256):
        super().__init__()
        if patch_lr < 2 or patch_lr % 2:
            raise ValueError("patch_lr must be even and ≥ 2")
        if search_radius % search_step:
            raise ValueError("search_radius must be a multiple of search_step")
        self.config = {"cc_channels": [int(c) for c in cc_channels],
                       "cc_dilations": [int(d) for d in cc_dilations], "cc_out": int(cc_out),
                       "search_radius": int(search_radius), "search_step": int(search_step),
                       "patch_lr": int(patch_lr), "ss_channels": int(ss_channels), "ss_blocks": int(ss_blocks),
                       "ref_channels": [int(c) for c in ref_channels], "patch_chunk": int(patch_chunk)}
        self.ccnet = CCNet(cc_channels, cc_dilations, cc_out)
        self.ssnet = SSNet(ss_channels, ss_blocks, ref_channels)
        self.register_buffer("offsets", search_offsets(search_radius, search_step), persistent=False)

    def parameter_breakdown(self) -> dict[str, int]:
        return {name: sum(p.numel() for p in m.parameters()) for name, m in self.named_children()}

    # -- CC-Net matching ---------------------------------------------------------------------------

    def match(self, lr_up: torch.Tensor, ref: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor):
        """Match logits at patch centres.

        Args: ``lr_up``, ``ref`` ``N×3×H×W``; ``cy`` ``(Gy,)``, ``cx`` ``(Gx,)`` centre coordinates.
        Returns: logits ``N×K×Gy×Gx`` and validity ``K×Gy×Gx`` (bool).
        """
        n, _, h, w = ref.shape
        # One pass over the batch of both images: the siamese net shares weights and BN statistics.
        feats = self.ccnet(torch.cat((lr_up, ref), dim=0))
        f_lr, f_ref = feats[:n], feats[n:]
        c = feats.shape[1]
        gy, gx = cy.numel(), cx.numel()
        radius, step = self.config["search_radius"], self.config["search_step"]
        side = 2 * radius // step + 1                                      # K = side²
        q_lr = f_lr[:, :, cy][:, :, :, cx]                                 # N×C×Gy×Gx
        # Zero features outside Ref: those candidates are masked below. In padded coordinates the window
        # of centre (y, x) spans rows y … y+2R and columns x … x+2R.
        f_pad = F.pad(f_ref, (radius, radius, radius, radius))
        # Blocks of B×B centres share one product with the union of their windows (a dense matrix
        # product, reading each Ref feature once per block), from which each centre slices its own
        # window: gathering every centre's K candidate features instead moves far more memory. B is the
        # largest whose union of windows is at most twice one window (4 at ×4, 1 at ×8 with the shipped
        # settings), so that the product computes at most twice the scores needed.
        spacing = max(1, int((cy[1:] - cy[:-1]).min()) // step) if gy > 1 else side
        block = max(b for b in range(1, 9) if ((b - 1) * spacing + side) ** 2 <= 2 * side * side)
        rows = []
        for i in range(0, gy, block):
            ys = cy[i:i + block]
            cols = []
            for j in range(0, gx, block):
                xs = cx[j:j + block]
                # the step-spaced lattice the block's windows share, or every pixel where they do not
                sub = step if bool(((ys - ys[0]) % step == 0).all() and ((xs - xs[0]) % step == 0).all()) else 1
                y0, x0 = int(ys[0]), int(xs[0])
                box = f_pad[:, :, y0:int(ys[-1]) + 2 * radius + 1:sub, x0:int(xs[-1]) + 2 * radius + 1:sub]
                q = q_lr[:, :, i:i + block, j:j + block]
                scores = torch.einsum("ncyx,ncp->nyxp", q, box.flatten(2)).unflatten(3, box.shape[-2:])
                stride = step // sub
                span = (side - 1) * stride + 1
                windows = [scores[:, a, b, (yy - y0) // sub:(yy - y0) // sub + span:stride,
                                  (xx - x0) // sub:(xx - x0) // sub + span:stride]
                           for a, yy in enumerate(ys.tolist()) for b, xx in enumerate(xs.tolist())]
                cols.append(torch.stack(windows, 1).reshape(n, ys.numel(), xs.numel(), side * side))
            rows.append(torch.cat(cols, dim=2))
        logits = torch.cat(rows, dim=1).reshape(n, gy * gx, side * side) / math.sqrt(c)   # N×G×K
        centre_y = cy[:, None].expand(gy, gx).reshape(-1)                 # G
        centre_x = cx[None, :].expand(gy, gx).reshape(-1)
        ox, oy = self.offsets[:, 0], self.offsets[:, 1]                    # K
        py = centre_y[:, None] + oy[None, :]                               # G×K
        px = centre_x[:, None] + ox[None, :]
        valid = (py >= 0) & (py < h) & (px >= 0) & (px < w)
        k = valid.shape[1]
        logits = logits.masked_fill(~valid, INVALID_LOGIT)
        logits = logits.transpose(1, 2).reshape(n, k, gy, gx)
        return logits, valid.t().reshape(k, gy, gx)

    # -- forward -----------------------------------------------------------------------------------

    def forward(self, lr: torch.Tensor, ref: torch.Tensor, scale: int):
        n, _, h0, w0 = lr.shape
        if ref is None or ref.shape[0] != n or ref.shape[-2:] != (scale * h0, scale * w0):
            raise ValueError(f"reference {None if ref is None else tuple(ref.shape)} does not match "
                             f"LR {tuple(lr.shape)} at ×{scale}")
        if scale not in (2, 4, 8):
            raise ValueError(f"RefSR-Net supports ×2, ×4 and ×8, not ×{scale}")
        pl = self.config["patch_lr"]
        # Images smaller than one patch: replicate-pad up to a patch, crop back at the end.
        pad_h, pad_w = max(0, pl - h0), max(0, pl - w0)
        if pad_h or pad_w:
            lr = F.pad(lr, (0, pad_w, 0, pad_h), mode="replicate")
            ref = F.pad(ref, (0, pad_w * scale, 0, pad_h * scale), mode="replicate")
        h, w = lr.shape[-2:]
        H, W = h * scale, w * scale
        p, stride = pl * scale, pl * scale // 2
        tops, lefts = patch_starts(H, p, stride).to(lr.device), patch_starts(W, p, stride).to(lr.device)
        gy, gx = tops.numel(), lefts.numel()
        cy, cx = tops + p // 2, lefts + p // 2

        lr_bil = F.interpolate(lr, size=(H, W), mode="bilinear", align_corners=False)   # CC-Net input
        logits, valid = self.match(lr_bil, ref, cy, cx)                  # N×K×Gy×Gx
        prob = logits.softmax(dim=1)
        conf, best = prob.max(dim=1)                                       # N×Gy×Gx
        chosen = self.offsets[best]                                        # N×Gy×Gx×2 (x, y)
        match_flow = chosen.permute(0, 3, 1, 2).to(lr.dtype)               # N×2×Gy×Gx

        lr_up = upscale(lr, scale)                                         # bicubic LR↑ (residual base)
        all_tops = tops[:, None].expand(gy, gx).reshape(1, -1).expand(n, -1)
        all_lefts = lefts[None, :].expand(gy, gx).reshape(1, -1).expand(n, -1)
        ref_tops = all_tops + chosen[..., 1].reshape(n, -1)
        ref_lefts = all_lefts + chosen[..., 0].reshape(n, -1)
        lr_p = gather_patches(lr, all_tops // scale, all_lefts // scale, pl)     # N×G×3×pl×pl
        up_p = gather_patches(lr_up, all_tops, all_lefts, p)                      # N×G×3×P×P
        ref_p = gather_patches(ref, ref_tops, ref_lefts, p)

        g = gy * gx
        flat = lambda t: t.reshape(n * g, *t.shape[2:])  # noqa: E731
        lr_p, up_p, ref_pf = flat(lr_p), flat(up_p), flat(ref_p)
        preds, masks = [], []
        per_patch = 4 * self.config["ss_channels"] * p * p
        chunk = max(1, min(self.config["patch_chunk"], SSNET_CHUNK_BYTES // per_patch))
        for s in range(0, n * g, chunk):
            pred, mask = self.ssnet(lr_p[s:s + chunk], ref_pf[s:s + chunk], up_p[s:s + chunk], scale)
            preds.append(pred)
            masks.append(mask)
        pred = torch.cat(preds).reshape(n, g, 3, p, p)
        # Blending weights: learned mask × triangle taper (never 0, so every pixel has weight).
        taper_1d = 1.0 - (torch.arange(p, device=lr.device, dtype=lr.dtype) + 0.5 - p / 2).abs() / (p / 2)
        taper = (taper_1d[:, None] * taper_1d[None, :]).clamp_min(1e-3)
        weight = torch.sigmoid(torch.cat(masks).reshape(n, g, 1, p, p)) * taper + 1e-4

        # One scatter for the weighted output, the warped reference, confidence and the weight sum.
        # Channels: 0–2 Σw·pred, 3–5 Σtaper·ref, 6 Σtaper·conf, 7 Σw, 8 Σtaper.
        taper_n = taper.expand(n, g, 1, p, p)
        stacked = torch.cat((pred * weight, ref_p * taper, conf.reshape(n, g, 1, 1, 1) * taper_n, weight,
                             taper_n), dim=2)
        canvas = scatter_patches(stacked, tops, lefts, (H, W))
        sr = canvas[:, 0:3] / canvas[:, 7:8]
        warped = canvas[:, 3:6] / canvas[:, 8:9]
        confidence = canvas[:, 6:7] / canvas[:, 8:9]
        hh, ww = h0 * scale, w0 * scale
        aux = {"confidence": confidence[..., :hh, :ww], "warped": warped[..., :hh, :ww],
               "match_logits": logits, "match_offsets": self.offsets, "match_valid": valid,
               "match_centers": torch.stack((cx[None, :].expand(gy, gx), cy[:, None].expand(gy, gx))),
               "match_flow": match_flow, "patch_size": p, "patch_stride": stride,
               "lr_up": lr_up, "ref": ref, "scale": int(scale)}
        return sr[..., :hh, :ww], aux
