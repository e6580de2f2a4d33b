"""Tiled inference with smooth blending: any image size in bounded memory, no visible seams.

Tiles are laid out in HR (output) coordinates. A tile ``[y0, y1) × [x0, x1)`` runs the method on the LR
crop ``[y0/s, y1/s) × [x0/s, x1/s)`` and the reference crop of the *same* HR window; the tile's output is
multiplied by a smooth weight and added into a preallocated output, so memory is one tile's network
activations plus the output image, whatever the image size.

Why the layout is what it is:

* **Alignment.** Tile starts and lengths are multiples of ``align`` = lcm(64, scale). FlowNetS-style
  networks downsample by 64; a tile that starts on the same 64-pixel grid as the whole image sees the
  same strided sampling phase, so away from its borders it computes what the whole-image pass computes.
  The image's own bottom/right border is reflect-padded by the method to its input multiple, exactly as
  in a whole-image pass, so border tiles match too.
* **Overlap and weights.** Neighbouring tiles overlap by at least ``overlap`` pixels (≥ 64). Inside an
  overlap of length ``o`` the weight is 0 for the ``(o − r)/2`` pixels nearest the tile's edge (a dead
  zone: the network's receptive field there is cut by the tile edge), then a raised cosine over
  ``r = min(o/2, 64)`` pixels, then 1. The neighbour's weight is the mirror image, so the weights sum to
  exactly one everywhere (they are normalised anyway) and the blend has no step. Along the image's own
  border there is no ramp. Weights are separable (row window × column window), so normalising costs
  two 1-D sums instead of an H×W weight image.
* **Parallax.** The reference crop of a tile is the tile's own HR window, so a pixel can only be matched
  to reference content inside the tile. Every pixel that gets weight lies at least the dead zone
  ((o − r)/2 = 16 px with the default 64-px overlap) from an interior tile edge, and most lie much
  deeper (a 512-px tile's weighted core is ≥ 448 px wide). Larger parallax needs a larger ``overlap``:
  ``overlap = 2·P + 64`` keeps every weighted pixel ≥ P px from an interior edge (e.g. 192 for 64 px).
  Global misalignment (another field of view) is ``--prealign``'s job, not the tiles'.
* **Cost.** With ``tile ≥ 3·overlap`` only neighbours overlap; the extra work is about
  ``overlap / (tile − overlap)`` per tiled axis (≈ 14 % per axis for 512/64).
"""
from __future__ import annotations

import math
from typing import Callable, Iterable

import torch

DEFAULT_TILE = 512
DEFAULT_OVERLAP = 64


def _ceil_to(value: float, multiple: int) -> int:
    return int(math.ceil(value / multiple - 1e-9)) * multiple


def plan_axis(length: int, tile: int, overlap: int, align: int = 64) -> list[tuple[int, int]]:
    """Spans ``[start, end)`` covering ``[0, length)``: starts and lengths multiples of ``align``.

    One span when the axis fits in a tile. Otherwise the fewest tiles of at most ``tile`` pixels
    with overlaps of exactly ``overlap``; the last span is clipped at ``length``.
    """
    if tile <= 0 or length <= tile:
        return [(0, length)]
    count = math.ceil((length - overlap) / (tile - overlap))
    stride = _ceil_to((length - overlap) / count, align)
    size = stride + overlap
    return [(i * stride, min(i * stride + size, length)) for i in range(count)]


def _ramp(length: int) -> torch.Tensor:
    """Rising weight across an overlap of ``length``: zeros, raised cosine over min(length/2, 64), ones."""
    r = max(1, min(length // 2, 64))
    dead = (length - r) // 2
    k = torch.arange(r, dtype=torch.float64)
    rise = 0.5 - 0.5 * torch.cos(math.pi * (k + 0.5) / r)
    return torch.cat([torch.zeros(dead, dtype=torch.float64), rise,
                      torch.ones(length - dead - r, dtype=torch.float64)])


def axis_weights(spans: list[tuple[int, int]], length: int) -> list[torch.Tensor]:
    """1-D blending window of each span, normalised so that the windows sum to one at every pixel."""
    windows = []
    for i, (start, end) in enumerate(spans):
        w = torch.ones(end - start, dtype=torch.float64)
        if i > 0:
            o = spans[i - 1][1] - start
            w[:o] *= _ramp(o)
        if i + 1 < len(spans):
            o = end - spans[i + 1][0]
            w[end - start - o:] *= _ramp(o).flip(0)
        windows.append(w)
    total = torch.zeros(length, dtype=torch.float64)
    for (start, end), w in zip(spans, windows):
        total[start:end] += w
    if bool((total <= 0).any()):  # cannot happen with plan_axis spans; guards hand-made ones
        raise ValueError("tile windows leave pixels uncovered")
    return [(w / total[start:end]).float() for (start, end), w in zip(spans, windows)]


def tile_grid(height: int, width: int, scale: int, tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP,
              align: int | None = None):
    """Row spans, column spans and their windows for an ``height×width`` output (HR pixels)."""
    align = align or (64 * scale // math.gcd(64, scale))
    if tile and tile > 0:
        if tile % 64 or overlap % 64:
            raise ValueError(f"tile ({tile}) and overlap ({overlap}) must be multiples of 64")
        # Scales that do not divide 64 (baselines at ×3, ×5 …) need LR-aligned tiles: round up.
        tile, overlap = _ceil_to(tile, align), _ceil_to(overlap, align)
        if overlap < 64 and max(height, width) > tile:
            raise ValueError(f"overlap must be at least 64 px (got {overlap})")
        if 3 * overlap > tile:
            raise ValueError(f"overlap ({overlap}) must be at most a third of the tile ({tile})")
    rows = plan_axis(height, tile, overlap, align)
    cols = plan_axis(width, tile, overlap, align)
    return rows, cols, axis_weights(rows, height), axis_weights(cols, width)


def _auto_batch(device: torch.device, per_tile_bytes: int) -> int:
    """How many same-sized tiles to run at once: 1 on the CPU (threads already use every core);
    on a GPU as many as fit in half of the free memory, measured on the first tile."""
    if device.type != "cuda" or per_tile_bytes <= 0:
        return 1
    free, _ = torch.cuda.mem_get_info(device)
    return int(max(1, min(32, (0.5 * free) // per_tile_bytes)))


def tiled_inference(fn: Callable, lr: torch.Tensor, ref: torch.Tensor | None, scale: int,
                    tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP, batch: int | None = None,
                    aux_keys: Iterable[str] = (), out: torch.Tensor | None = None,
                    progress: Callable[[int, int], None] | None = None, align: int | None = None):
    """Run ``fn`` over overlapping tiles and blend the outputs.

    Args:
        fn: a :class:`refsr_cli.inference.methods.Method` (called ``fn(lr, ref)``) or any
            ``fn(lr, ref, scale) -> (sr, aux)``.
        lr: ``1×3×h×w`` (or ``3×h×w``); ref: ``1×3×(s·h)×(s·w)`` or ``None`` for single-image methods.
        tile, overlap: HR pixels; ``tile=0`` runs the whole image at once.
        batch: tiles per call; ``None`` = automatic (1 on CPU, by free memory on GPU).
        aux_keys: full-resolution intermediates to blend and return (e.g. ``("flow", "warped")``);
            keys the method does not produce are left out of the result.
        out: optional preallocated ``1×3×(s·h)×(s·w)`` float32 CPU tensor to write into.
        progress: called as ``progress(tiles_done, tiles_total)``.
    Returns:
        ``(sr, aux)``: ``1×3×(s·h)×(s·w)`` float32 on the CPU and a dict of blended CPU maps.
    """
    from refsr_cli.inference.methods import Method

    call = (lambda a, b: fn(a, b)) if isinstance(fn, Method) else (lambda a, b: fn(a, b, scale))
    device = fn.device if isinstance(fn, Method) else lr.device
    if lr.dim() == 3:
        lr = lr.unsqueeze(0)
    if ref is not None and ref.dim() == 3:
        ref = ref.unsqueeze(0)
    if lr.shape[0] != 1:
        raise ValueError("tiled_inference takes one image at a time")
    h, w = lr.shape[-2:]
    H, W = scale * h, scale * w
    rows, cols, wrows, wcols = tile_grid(H, W, scale, tile, overlap, align)
    tiles = [(r, c) for r in range(len(rows)) for c in range(len(cols))]
    total = len(tiles)
    if out is None:
        out = torch.zeros(1, 3, H, W, dtype=torch.float32)
    else:
        out.zero_()
    aux_keys = tuple(aux_keys)
    aux_out: dict[str, torch.Tensor] = {}

    # Group same-shaped tiles so a batch is one tensor; order stays row-major within a shape.
    groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for r, c in tiles:
        shape = (rows[r][1] - rows[r][0], cols[c][1] - cols[c][0])
        groups.setdefault(shape, []).append((r, c))

    done = 0
    batch_size = batch
    for members in groups.values():
        i = 0
        while i < len(members):
            n = 1 if batch_size is None else max(1, batch_size)
            chunk = members[i:i + n]
            i += len(chunk)
            measure = batch_size is None and device.type == "cuda"
            if measure:
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
                before = torch.cuda.memory_allocated(device)
            lr_tiles = torch.cat([lr[..., rows[r][0] // scale: rows[r][1] // scale,
                                     cols[c][0] // scale: cols[c][1] // scale] for r, c in chunk])
            ref_tiles = None
            if ref is not None:
                ref_tiles = torch.cat([ref[..., rows[r][0]: rows[r][1], cols[c][0]: cols[c][1]]
                                       for r, c in chunk])
            sr, aux = call(lr_tiles, ref_tiles)
            if measure:
                batch_size = _auto_batch(device, torch.cuda.max_memory_allocated(device) - before)
            elif batch_size is None:
                batch_size = 1
            sr = sr.float().cpu()
            aux_cpu = {k: aux[k].float().cpu() for k in aux_keys
                       if isinstance(aux.get(k), torch.Tensor) and aux[k].dim() == 4
                       and tuple(aux[k].shape[-2:]) == tuple(sr.shape[-2:])}
            for j, (r, c) in enumerate(chunk):
                (y0, y1), (x0, x1) = rows[r], cols[c]
                weight = wrows[r][:, None] * wcols[c][None, :]
                out[0, :, y0:y1, x0:x1].addcmul_(sr[j], weight)
                for key, value in aux_cpu.items():
                    if key not in aux_out:
                        aux_out[key] = torch.zeros(1, value.shape[1], H, W, dtype=torch.float32)
                    aux_out[key][0, :, y0:y1, x0:x1].addcmul_(value[j], weight)
            del sr, aux, aux_cpu, lr_tiles, ref_tiles  # free this tile's tensors before the next
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    return out, aux_out
