"""Patch-based RefSR with PatchMatch, in the style of Boominathan et al. (ICCP 2014).

Patches of the upsampled LR image (``LR↑``) are matched against the patches of the *blurred*
reference ``Ref↓s↑s`` — both lack the same high frequencies, so their patch distance is meaningful —
and the corresponding *sharp* reference patches are pasted, overlaps averaged.

The nearest-neighbour field is found by PatchMatch (Barnes et al. 2009) — random initialisation,
propagation, random search — written as whole-field tensor operations, so the same code runs on a
CPU or a GPU (no Python loop over pixels; loops are over iterations and candidate kinds only):

* Patch centres lie on a grid of step ``stride`` (default ``s/2``: two centres per LR pixel); their
  offsets may point to *any* reference pixel. ``LR↑`` holds nothing finer than the LR pixel grid,
  so a denser grid would add cost, not information; overlapping pasted patches still cover every
  output pixel many times (``(patch_size/stride)²``, about 18 with the defaults).
* Patch distance: sum of squared differences over ``patch_size×patch_size×3`` patches, sampled at the
  same ``s/2`` pitch (5×5 samples per patch with the defaults) for the same reason. One candidate
  evaluation is one gather of the reference's descriptor rows, kept as strips of one patch row each.
* Propagation: the scan-order propagation of the original is sequential; here every centre tries, in
  parallel, the offsets of its neighbours at grid distances 8, 4, 2, 1 in the four directions (jump
  flooding), so good offsets spread over the image in a few iterations.
* Random search: offsets perturbed uniformly within radii ``search_radius, search_radius/2, …, 1``.
  The zero offset is one of the initial candidates (references come from nearby viewpoints).
* Initialisation: random offsets within ``search_radius`` — or, given ``init_flow`` (a coarse dense
  flow, e.g. block matching at LR resolution), that flow's offsets, so that one iteration only refines a
  field that already reaches displacements of any size (the matched references of the networks,
  :mod:`refsr_cli.inference.matched_reference`).
* Sub-pixel refinement (``subpixel``): a parabola through the costs at the best offset ±1 pixel along
  each axis; sharp patches are then sampled bilinearly.
* Guide (``guide``): an estimate of the output — for the networks' matcher, a first paste
  back-projected onto the LR — is compared with the reference in the band twice the LR's, beside the
  LR band, so that patches that differ only in detail finer than an LR pixel are told apart.
* Back-projection (``backproject`` iterations, Irani & Peleg 1991): ``SR += (LR − SR↓s)↑s`` keeps the
  result consistent with LR where the reference has no match (occlusions, image borders).

``aux``: ``"flow"`` (``N×2×H×W``: each centre's offset, interpolated between centres, in the
backward-warp convention ``Ref(p + flow(p))`` of :mod:`refsr_cli.ops.warp`), ``"warped"``
(``backward_warp(ref, flow)``), ``"pasted"`` (the averaged sharp patches before back-projection).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F

from refsr_cli.errors import RefsrError
from refsr_cli.ops.block_match import luma
from refsr_cli.ops.resize import back_project, downscale, upscale
from refsr_cli.ops.warp import backward_warp

_JUMPS = (8, 4, 2, 1)

# Share of centres with a new candidate above which an offer evaluates every centre (_Field.offer): the
# gathers of a subset cost more per centre (the networks' matcher on the suite: 4 % faster at 0.4–0.7 than
# with every offer dense, 1 % slower with every offer sparse).
_SPARSE_OFFER = 0.5

# Centres from which a paste is sampled in two bands at once (_paste): below, the thread costs more than it saves.
_TWO_BANDS = 4096

# Weight of the guide's band against the LR band in the patch distance (``guide``), at ×4 and ×8 (linear
# in between): chosen on 20 real frame pairs that neither the bench nor the shipped networks saw (ViSP's
# camera sequences and Kivy's city clip; docs/real-suite.md, "guided matching"). An ×8 LR holds less to
# match by, so the guide's band counts more.
GUIDE_WEIGHTS = {4: 0.2, 8: 0.7}


def guide_weight(scale: int) -> float:
    """Weight of the guide's band at ``scale`` (:data:`GUIDE_WEIGHTS`, held beyond ×4 and ×8)."""
    (s0, w0), (s1, w1) = sorted(GUIDE_WEIGHTS.items())
    t = min(max((scale - s0) / (s1 - s0), 0.0), 1.0)
    return w0 + t * (w1 - w0)


def default_patch_size(scale: int) -> int:
    """Odd patch side spanning about two LR pixels: 9 at ×4, 17 at ×8."""
    return 2 * int(scale) + 1


def _descriptors(x: torch.Tensor, radius: int, pitch: int, stride: int) -> torch.Tensor:
    """Patch descriptors of ``1×C×H×W``: ``(2r+1)²`` samples at ``pitch`` around centres every ``stride``.

    Returns ``L×((2r+1)·C·(2r+1))`` rows, centres in raster order (``L = ceil(H/stride)·ceil(W/stride)``),
    each row ordered (sample row, channel, sample column) — the order :class:`_Strips` gathers in.
    Edges are replicated, so every centre has a full patch.
    """
    pad = radius * pitch
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")[0].contiguous()
    channels, hp, wp = padded.shape
    k = 2 * radius + 1
    gh, gw = -(-x.shape[-2] // stride), -(-x.shape[-1] // stride)
    # The patch samples themselves, no learned projection: a strided view (centre row, centre column,
    # sample row, channel, sample column) copied once into rows — the rows of a dilated, strided im2col
    # without its transposed copy (half the time).
    view = padded.as_strided((gh, gw, k, channels, k), (stride * wp, stride, pitch * wp, hp * wp, pitch))
    return view.reshape(gh * gw, k * channels * k)


class _Strips:
    """The descriptors of :func:`_descriptors` at *every* pixel of ``1×C×H×W`` (stride 1), stored as one
    row of a patch at a time: the ``C·(2r+1)`` samples of a patch row at a padded image row and a column.
    A descriptor is then ``2r+1`` strips, ``pitch`` rows apart, gathered at evaluation. The table holds
    ``2r+1`` times fewer samples than the descriptor rows themselves (H·W rows of ``C·(2r+1)²``), which
    made building them the matcher's largest cost and its memory peak (650 MB for a 736×496 ×4 output's
    patches of 7 LR pixels); the gathered bytes are the same."""

    def __init__(self, x: torch.Tensor, radius: int, pitch: int):
        pad = radius * pitch
        padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")[0].contiguous()
        channels, hp, wp = padded.shape
        self.k, self.w = 2 * radius + 1, x.shape[-1]
        view = padded.as_strided((hp, self.w, channels, self.k), (wp, 1, hp * wp, pitch))
        self.table = view.reshape(hp * self.w, channels * self.k)
        self.row_step = torch.arange(self.k, device=x.device) * (pitch * self.w)

    def gather(self, index: torch.Tensor) -> torch.Tensor:
        """``L×(k·C·k)``: the descriptors (in :func:`_descriptors`' order) at the flat pixel ``index``
        (``L``: ``y·W + x``), as a fresh tensor."""
        rows = (index.view(-1, 1) + self.row_step).view(-1)
        # index_select gathers rows ~10× faster than advanced indexing on the CPU
        return self.table.index_select(0, rows).view(index.numel(), -1)


class _Field:
    """Integer offsets of the grid of patch centres, their costs, and candidate evaluation."""

    def __init__(self, desc_a: torch.Tensor, strips_b: _Strips, size: tuple[int, int], stride: int):
        self.a, self.b = desc_a, strips_b
        self.h, self.w = size
        dev = desc_a.device
        self.yc = torch.arange(0, self.h, stride, device=dev).view(-1, 1)
        self.xc = torch.arange(0, self.w, stride, device=dev).view(1, -1)
        self.gh, self.gw = self.yc.shape[0], self.xc.shape[1]
        self.centre = (self.yc * self.w + self.xc).view(-1)       # flat pixel index of each centre
        self.ox = torch.zeros(self.gh, self.gw, dtype=torch.long, device=dev)
        self.oy = torch.zeros_like(self.ox)
        self.cost = self.evaluate(self.ox, self.oy)

    def clamp(self, ox: torch.Tensor, oy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Offsets whose target centre lies inside the reference."""
        return ((self.xc + ox).clamp(0, self.w - 1) - self.xc, (self.yc + oy).clamp(0, self.h - 1) - self.yc)

    def evaluate(self, ox: torch.Tensor, oy: torch.Tensor) -> torch.Tensor:
        """Patch distance (``gh×gw``) of in-range offsets."""
        return self._distance(self.centre, ox.reshape(-1), oy.reshape(-1), self.a).view(self.gh, self.gw)

    def _distance(self, centre: torch.Tensor, ox: torch.Tensor, oy: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Patch distance (``L``) of the centres at flat pixels ``centre`` (descriptors ``a``) moved by in-range
        offsets ``ox``, ``oy`` (``L`` each)."""
        diff = self.b.gather(centre + oy * self.w + ox).sub_(a)    # a fresh tensor: the rest works in place
        return diff.mul_(diff).sum(dim=1)

    def offer(self, ox: torch.Tensor, oy: torch.Tensor) -> None:
        """Keep candidate offsets where they beat the current ones.

        Only centres whose candidate differs from their offset are evaluated: once the field is smooth, most
        of a propagation's candidates are the offset a centre already has (42 % of all candidates of the
        networks' matcher on the real suite), whose cost is known and cannot beat itself.
        """
        ox, oy = self.clamp(ox, oy)
        new = ((ox != self.ox) | (oy != self.oy)).view(-1).nonzero().squeeze(1)
        if new.numel() == 0:
            return
        if new.numel() > _SPARSE_OFFER * ox.numel():        # gathering the subset would cost more than it saves
            cost = self.evaluate(ox, oy)
            better = cost < self.cost
            self.ox = torch.where(better, ox, self.ox)
            self.oy = torch.where(better, oy, self.oy)
            self.cost = torch.where(better, cost, self.cost)
            return
        ox, oy = ox.view(-1)[new], oy.view(-1)[new]
        cost = self._distance(self.centre[new], ox, oy, self.a.index_select(0, new))
        better = cost < self.cost.view(-1)[new]
        kept = new[better]
        self.ox.view(-1)[kept] = ox[better]
        self.oy.view(-1)[kept] = oy[better]
        self.cost.view(-1)[kept] = cost[better]

    def neighbour(self, dx: int, dy: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Offsets of the centre ``dx`` columns left and ``dy`` rows up (edges replicated)."""
        rows = (torch.arange(self.gh, device=self.ox.device) - dy).clamp(0, self.gh - 1)
        cols = (torch.arange(self.gw, device=self.ox.device) - dx).clamp(0, self.gw - 1)
        return self.ox[rows][:, cols], self.oy[rows][:, cols]

    def subpixel(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Float offsets: parabola through the costs at the integer optimum ±1 along each axis."""
        out = []
        for axis in (0, 1):
            side = []
            for step in (-1, 1):
                ox = self.ox + (step if axis == 0 else 0)
                oy = self.oy + (step if axis == 1 else 0)
                cox, coy = self.clamp(ox, oy)
                cost = self.evaluate(cox, coy)
                inside = (cox == ox) & (coy == oy)
                side.append(torch.where(inside, cost, torch.full_like(cost, float("inf"))))
            minus, plus = side
            curvature = minus + plus - 2 * self.cost
            ok = torch.isfinite(curvature) & (curvature > 0)
            delta = torch.where(ok, 0.5 * (minus - plus) / torch.where(ok, curvature, 1.0), 0.0)
            base = self.ox if axis == 0 else self.oy
            out.append(base.to(self.a.dtype) + delta.clamp(-0.5, 0.5))
        return out[0], out[1]


def _random(shape, radius: int, generator: torch.Generator, device) -> torch.Tensor:
    # Drawn on the generator's device and moved, so a CPU generator gives the same field on any device.
    return torch.randint(-radius, radius + 1, shape, generator=generator, device=generator.device).to(device)


def _match(field: _Field, iterations: int, radius: int, generator: torch.Generator,
           initial: tuple[torch.Tensor, torch.Tensor] | None = None) -> _Field:
    shape, dev = (field.gh, field.gw), field.ox.device
    field.offer(*(initial if initial is not None else
                  (_random(shape, radius, generator, dev), _random(shape, radius, generator, dev))))
    jumps = [j for j in _JUMPS if j < max(shape)] or [1]
    for _ in range(iterations):
        for j in jumps:                                     # propagation
            for dx, dy in ((j, 0), (-j, 0), (0, j), (0, -j)):
                field.offer(*field.neighbour(dx, dy))
        r = radius
        while r >= 1:                                       # random search
            field.offer(field.ox + _random(shape, r, generator, dev), field.oy + _random(shape, r, generator, dev))
            r //= 2
    return field


def _offsets_from_flow(flow: torch.Tensor, field: _Field, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer offsets (HR pixels) at the patch centres from ``flow`` (``1×2×h×w``, LR pixels, backward
    convention of :mod:`refsr_cli.ops.block_match`), bilinear between LR pixel centres."""
    h, w = flow.shape[-2:]
    # HR pixel y sits at LR coordinate (y + 0.5)/s − 0.5 (the pixel-centre convention of ops.resize)
    y = (field.yc.to(flow.dtype) + 0.5) / scale - 0.5
    x = (field.xc.to(flow.dtype) + 0.5) / scale - 0.5
    gx, gy = torch.broadcast_tensors(x / max(w - 1, 1) * 2 - 1, y / max(h - 1, 1) * 2 - 1)
    grid = torch.stack((gx, gy), dim=-1)[None]
    at_centres = F.grid_sample(flow, grid, mode="bilinear", padding_mode="border", align_corners=True)[0]
    offsets = (at_centres * scale).round().long()
    return offsets[0], offsets[1]


def _paste(ref: torch.Tensor, fx: torch.Tensor, fy: torch.Tensor, field: _Field, p: int, stride: int) -> tuple:
    """Overlap-averaged sharp patches: the patch at centre ``c`` is ``Ref(c + u + offset(c))``, ``|u| ≤ p//2``.

    ``ref``: ``1×3×H×W``; ``fx``, ``fy``: ``gh×gw`` offsets (float). Returns ``(sum, count)``
    (``1×3×H×W`` and ``1×1×H×W``) from :func:`torch.nn.functional.fold`.

    The rows of centres are pasted in two halves, one of them in a second thread: ``grid_sample`` runs on one
    core whatever the thread count, and it is most of a paste's time (a 736×496 output's 13-px patches: about
    110 of 140 ms), so two halves at once take about 0.6× as long on two cores. Each half is folded into its
    own band of the canvas (``fold`` without padding: every patch lies inside), and the bands are summed
    where they overlap — the same sums up to float order.
    """
    h, w, r = field.h, field.w, p // 2
    gh, gw = field.gh, field.gw
    canvas = ref.new_zeros(1, 3, (gh - 1) * stride + p, (gw - 1) * stride + p)

    def band(rows: slice) -> tuple[int, torch.Tensor]:
        n = rows.stop - rows.start
        # grid_sample coordinates (align_corners=True) of the p×p patch pixels (rows = y, cols = x) × the
        # band's centres, written straight into one tensor — in this order the sampled 1×3×p²×L tensor is
        # already fold's (C·p·p)×L layout, with no transposed copy.
        u = torch.arange(-r, r + 1, device=ref.device, dtype=ref.dtype)
        ax, ay = 2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)
        grid = torch.empty(p, p, n * gw, 2, device=ref.device, dtype=ref.dtype)
        gx, gy = grid[..., 0], grid[..., 1]
        gx.copy_((field.xc.to(ref.dtype) + fx[rows]).reshape(1, 1, -1)).add_(u.view(1, -1, 1)).mul_(ax).sub_(1.0)
        gy.copy_((field.yc[rows].to(ref.dtype) + fy[rows]).reshape(1, 1, -1)).add_(u.view(-1, 1, 1)).mul_(ay).sub_(1.0)
        patches = F.grid_sample(ref, grid.view(1, p * p, -1, 2), mode="bilinear", padding_mode="border",
                                align_corners=True)
        cols = patches.reshape(1, 3 * p * p, -1)                 # (C·p·p) × L, as fold expects
        return rows.start * stride, F.fold(cols, ((n - 1) * stride + p, canvas.shape[-1]), p, stride=stride)

    # Two bands only on a CPU where torch may use more than one thread: a process held to one (a `refsr bench`
    # worker, a cluster job) keeps to one core, and a GPU samples in parallel anyway.
    two = gh >= 2 and gh * gw >= _TWO_BANDS and ref.device.type == "cpu" and torch.get_num_threads() > 1
    halves = [slice(0, gh // 2), slice(gh // 2, gh)] if two else [slice(0, gh)]
    if len(halves) == 1:
        bands = [band(halves[0])]
    else:
        with ThreadPoolExecutor(max_workers=1) as pool:
            second = pool.submit(band, halves[1])
            bands = [band(halves[0]), second.result()]
    for top, part in bands:
        canvas[..., top:top + part.shape[-2], :] += part
    total = canvas[..., r:r + h, r:r + w]
    # How many patches cover each pixel: the centres form a grid, so rows times columns.
    per_row = ((field.yc - torch.arange(h, device=ref.device)).abs() <= r).sum(0)
    per_col = ((field.xc.view(-1, 1) - torch.arange(w, device=ref.device)).abs() <= r).sum(0)
    count = (per_row[:, None] * per_col[None, :]).to(ref.dtype)[None, None]
    return total, count

def _dense_flow(fx: torch.Tensor, fy: torch.Tensor, field: _Field, stride: int) -> torch.Tensor:
    """Grid offsets → ``1×2×H×W`` flow, bilinear between centres (centre (i, j) sits at (i·stride, j·stride)).

    Exact at the centres; constant beyond the last centre.
    """
    flow = torch.stack((fx, fy)).to(torch.float32)             # 2 × gh × gw
    for axis, (n, size) in enumerate(((field.gh, field.h), (field.gw, field.w)), start=1):
        pos = torch.arange(size, device=flow.device)
        i0 = (pos // stride).clamp(max=n - 1)
        i1 = (i0 + 1).clamp(max=n - 1)
        t = ((pos - i0 * stride).to(torch.float32) / stride).clamp(0, 1)
        t = t.view(-1, 1) if axis == 1 else t.view(1, -1)
        flow = flow.index_select(axis, i0) * (1 - t) + flow.index_select(axis, i1) * t
    return flow[None]


def matching_images(lr: torch.Tensor, ref: torch.Tensor, scale: int,
                    features: str = "rgb") -> tuple[torch.Tensor, torch.Tensor]:
    """The images whose patches are compared: ``(LR↑s, Ref↓s↑s)``, both ``N×C×H×W`` (``C`` = 3, or 1 for
    ``"luma"``): they lack the same high frequencies, so their patch distance is meaningful.

    ``lr``: ``N×3×h×w``; ``ref``: ``N×3×(s·h)×(s·w)``, float. Several matchings of one pair (patch sizes,
    rounds) share them: :func:`match_and_paste` takes them as they are.
    """
    s = int(scale)
    if features == "luma":       # luma is linear: taken first, it resizes one channel instead of three
        lr, ref = luma(lr), luma(ref)
    return upscale(lr, s), upscale(downscale(ref, s), s)


def guide_band(guide: torch.Tensor, ref: torch.Tensor, scale: int,
               features: str = "rgb") -> tuple[torch.Tensor, torch.Tensor]:
    """``(guide band, reference band)`` to append to :func:`matching_images`' pair (channels), so that the
    patch distance also compares ``guide`` (``N×3×H×W``, an estimate of the output) with ``ref`` in the band
    twice the LR's — ``↓(s/2)↑``, all that the descriptors' ``s/2``-spaced samples hold without aliasing —
    at :func:`guide_weight`, below the LR band's: it tells apart candidates that the LR band alone cannot."""
    s = int(scale)
    pitch = max(1, s // 2)
    if features == "luma":
        guide, ref = luma(guide), luma(ref)
    if pitch > 1:
        guide, ref = upscale(downscale(guide, pitch), pitch), upscale(downscale(ref, pitch), pitch)
    weight = guide_weight(s)
    return weight * guide, weight * ref


def match_and_paste(up: torch.Tensor, blurred: torch.Tensor, ref: torch.Tensor, scale: int, patch_size: int,
                    stride: int, iterations: int, radius: int, generator: torch.Generator,
                    init_flow: torch.Tensor | None = None, subpixel: bool = True,
                    maps: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The nearest-neighbour field of ``up``'s patches among ``blurred``'s (both ``N×C×H×W``, from
    :func:`matching_images`, with a :func:`guide_band` appended or not) and the overlap-averaged sharp
    patches of ``ref`` (``N×3×H×W``) it points to. Arguments as :func:`patchmatch`'s (``patch_size`` odd,
    ``stride`` checked; ``radius`` is held to the image's size). Returns ``(pasted N×3×H×W, dense flow N×2×H×W
    or None without maps)``."""
    s = int(scale)
    n, _, h, w = up.shape
    radius = int(min(radius, max(h, w)))
    # descriptor samples every `pitch` pixels: half an LR pixel, the finest detail LR↑ can hold
    pitch = max(1, s // 2)
    half = max(0, (patch_size // 2) // pitch)
    pasted, flows = [], []
    for i in range(n):  # images one at a time: memory stays at one image's descriptors
        desc_a = _descriptors(up[i:i + 1], half, pitch, stride)
        field = _Field(desc_a, _Strips(blurred[i:i + 1], half, pitch), (h, w), stride)
        initial = None if init_flow is None else _offsets_from_flow(init_flow[i:i + 1].float().to(up.device), field, s)
        field = _match(field, int(iterations), radius, generator, initial)
        fx, fy = field.subpixel() if subpixel else (field.ox.float(), field.oy.float())
        total, count = _paste(ref[i:i + 1], fx, fy, field, patch_size, stride)
        pasted.append(total / count)
        if maps:
            flows.append(_dense_flow(fx, fy, field, stride))
    return torch.cat(pasted), torch.cat(flows) if maps else None


def patchmatch(lr: torch.Tensor, ref: torch.Tensor, scale: int, patch_size: int | None = None,
               stride: int | None = None, iterations: int = 5, search_radius: int = 32,
               subpixel: bool = True, backproject: int = 2, seed: int = 0,
               generator: torch.Generator | None = None, features: str = "rgb",
               init_flow: torch.Tensor | None = None, guide: torch.Tensor | None = None,
               maps: bool = True) -> tuple[torch.Tensor, dict]:
    """PatchMatch RefSR (see the module docstring).

    Args:
        lr: ``N×3×h×w`` float in [0, 1].
        ref: ``N×3×(s·h)×(s·w)`` float in [0, 1].
        scale: ``s`` (LR made with :func:`refsr_cli.ops.resize.downscale` by ``s``).
        patch_size: odd side of matched and pasted patches (default ``2s+1``; even values grow by 1).
        stride: grid step of patch centres in output pixels (default ``max(1, s//2)``; at most
            ``patch_size//2 + 1`` so that pasted patches cover every pixel).
        iterations: PatchMatch iterations (each: propagation at jumps 8, 4, 2, 1 + random search).
        search_radius: largest offset (output pixels per axis) of initialisation and random search.
        subpixel: refine offsets to sub-pixel precision (bilinear pasting) — otherwise integer.
        backproject: back-projection iterations on the pasted result (0 = pasting only).
        seed: seed of the random initialisation and search (when no ``generator`` is given).
        generator: a ``torch.Generator``; on the CPU it gives the same result on every device.
        features: ``"rgb"`` or ``"luma"`` patch descriptors (luma: a third of the cost per candidate).
        init_flow: ``N×2×h×w`` backward flow LR → ``ref↓s`` in LR pixels (e.g.
            :func:`refsr_cli.ops.block_match.match_flow`): the initial offsets, instead of random ones.
        guide: ``N×3×H×W``, an estimate of the output (e.g. a first pass pasted and back-projected), also
            compared with the reference (:func:`guide_band`).
        maps: also return the dense ``"flow"`` and the ``"warped"`` reference (``False``: ``aux`` holds only
            ``"pasted"``, all that the networks' matcher reads; 0–10 % of its time saved at 640×480).
    Returns:
        ``(sr, aux)``: ``sr`` ``N×3×(s·h)×(s·w)`` in [0, 1]; ``aux["flow"]`` ``N×2×H×W``,
        ``aux["warped"]`` and ``aux["pasted"]`` ``N×3×H×W``.
    """
    s = int(scale)
    if ref is None:
        raise RefsrError("the patchmatch baseline needs a reference image")
    n, _, h, w = lr.shape
    if ref.shape[0] != n or tuple(ref.shape[-2:]) != (h * s, w * s):
        raise RefsrError(f"patchmatch: reference {tuple(ref.shape)} does not match LR {tuple(lr.shape)} at ×{s}")
    p = int(patch_size) if patch_size else default_patch_size(s)
    p += 1 - p % 2
    stride = int(stride) if stride else max(1, s // 2)
    if iterations < 0 or search_radius < 1 or stride < 1 or stride > p // 2 + 1:
        # a larger stride would leave pixels that no pasted patch covers
        raise RefsrError("patchmatch: need iterations ≥ 0, search_radius ≥ 1 and 1 ≤ stride ≤ patch_size//2 + 1")
    if features not in ("rgb", "luma"):
        raise RefsrError(f"patchmatch: features must be 'rgb' or 'luma', not {features!r}")
    if generator is None:
        generator = torch.Generator().manual_seed(int(seed))
    lr = lr.float()
    ref = ref.to(lr.device, torch.float32)
    up, blurred = matching_images(lr, ref, s, features)
    if guide is not None:
        guide_up, guide_ref = guide_band(guide.to(lr.device, torch.float32), ref, s, features)
        up, blurred = torch.cat([up, guide_up], 1), torch.cat([blurred, guide_ref], 1)
    pasted, flow = match_and_paste(up, blurred, ref, s, p, stride, iterations, search_radius, generator,
                                   init_flow, subpixel, maps)
    sr = back_project(pasted, lr, s, backproject)
    aux = {"pasted": pasted.clamp(0, 1)}
    if maps:
        aux.update(flow=flow, warped=backward_warp(ref, flow))
    return sr.clamp(0, 1), aux
