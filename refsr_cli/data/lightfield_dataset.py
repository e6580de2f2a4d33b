"""``LightFieldDataset``: ``(lr, ref, hr)`` training samples from a light-field store, for one scale.

A sample is a tuple of float32 tensors in [0, 1], RGB, channels first:

* ``lr``  ``3×(H/s)×(W/s)`` — ``downscale(hr, s)`` (the project's MATLAB bicubic), computed on the fly
  from the (cropped, flipped) HR;
* ``ref`` ``3×H×W`` — the reference view (shifted by the parallax augmentation);
* ``hr``  ``3×H×W`` — ground truth of the LR view.

``H×W`` is the crop, or the whole stored view when ``crop=None`` (then cut down to a multiple of the
scale, top-left). Works on our stores and the authors' ``/img_HR`` files (via :func:`open_store`); the
HDF5 file is opened lazily in each process, so the dataset can be used with DataLoader workers.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset

from refsr_cli.data.augment import sample_pair, window_of
from refsr_cli.data.image_io import array_to_tensor
from refsr_cli.ops.resize import downscale
from refsr_cli.data.store import LightFieldStore, UnreadableData, open_store


def _parse_view(value, grid: tuple[int, int], what: str):
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        value = (value, value)
    row, col = (int(v) for v in value)
    if not (0 <= row < grid[0] and 0 <= col < grid[1]):
        raise ValueError(f"{what} {value} is outside the {grid[0]}×{grid[1]} angular grid")
    return row, col


class LightFieldDataset(Dataset):
    """Training pairs from a light-field store.

    Args:
        path: a store file (ours or the authors' layout) or an opened :class:`LightFieldStore`.
        scale: super-resolution factor ``s`` (LR is ``H/s × W/s``).
        crop: ``(h, w)`` random HR crop (multiples of ``scale``), or ``None`` for the whole view.
        views: which view is the LR/HR view: ``"random"`` (any view but the reference), ``"diagonal"``
            (``(k, k)`` with random k ≠ reference), a ``(row, col)`` pair, or an int ``k`` meaning ``(k, k)``.
        ref_view: the reference view ``(row, col)``, or ``"random"`` (any view but the LR view).
        parallax_shift: the papers' parallax augmentation: Ref is shifted by independent random
            integer offsets in ``[-parallax_shift, +parallax_shift]`` px along x and y (0 disables it).
            With a crop, Ref is the crop window moved by the offsets (exact pixels, kept inside the view);
            with ``crop=None``, the whole Ref view is shifted with borders clamped (:func:`warp.shift`).
        flips: random horizontal and vertical flips, applied identically to lr, ref and hr.
        seed: ``None``: draw from torch's RNG (seeded per DataLoader worker by PyTorch). An int: sample
            ``i`` of epoch ``e`` is a pure function of ``(seed, e, i)`` — call :meth:`set_epoch`.

    ``__getitem__(i)`` returns the tuple ``(lr, ref, hr)`` (float32, ``3×h×w``, ``3×H×W``, ``3×H×W``).
    """

    def __init__(self, path, scale: int, crop: tuple[int, int] | None = None, views="random",
                 ref_view=(0, 0), parallax_shift: int = 15, flips: bool = True, seed: int | None = None):
        self.store: LightFieldStore = open_store(path)
        self.scale = int(scale)
        if self.scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale}")
        grid = self.store.grid
        if crop is not None:
            ch, cw = (int(c) for c in crop)
            if ch % self.scale or cw % self.scale:
                raise ValueError(f"crop {ch}×{cw} is not a multiple of the scale {self.scale}")
            if ch > self.store.height or cw > self.store.width:
                raise ValueError(f"crop {ch}×{cw} is larger than the views of {self.store.path} "
                                 f"({self.store.height}×{self.store.width})")
            self.crop = (ch, cw)
        else:
            self.crop = None
        self.views = _parse_view(views, grid, "views")
        self.ref_view = _parse_view(ref_view, grid, "ref_view")
        if self.views not in ("random", "diagonal") and isinstance(self.views, str):
            raise ValueError(f"views must be 'random', 'diagonal', (row, col) or k, got {views!r}")
        if isinstance(self.ref_view, str) and self.ref_view != "random":
            raise ValueError(f"ref_view must be (row, col) or 'random', got {ref_view!r}")
        if self.views == "diagonal" and grid[0] != grid[1]:
            raise ValueError("views='diagonal' needs a square angular grid")
        if isinstance(self.views, tuple) and self.views == self.ref_view:
            raise ValueError(f"the LR view and the reference view are both {self.views}")
        self.parallax_shift = int(parallax_shift)
        self.flips = bool(flips)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Vary the random draws between epochs when a seed is given."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.store)

    def _rng(self, index: int) -> np.random.Generator:
        if self.seed is None:
            return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
        return np.random.default_rng([int(self.seed), self.epoch, int(index)])

    def _pick_views(self, rng: np.random.Generator):
        rows, cols = self.store.grid
        all_views = [(r, c) for r in range(rows) for c in range(cols)]
        ref = self.ref_view
        if ref == "random":
            fixed_lr = self.views if isinstance(self.views, tuple) else None
            choices = [v for v in all_views if v != fixed_lr]
            ref = choices[rng.integers(len(choices))]
        if self.views == "random":
            choices = [v for v in all_views if v != ref]
        elif self.views == "diagonal":
            choices = [(k, k) for k in range(rows) if (k, k) != ref]
        else:
            choices = [self.views]
        return choices[rng.integers(len(choices))], ref

    def num_items(self) -> int:
        """Light fields in the store (``len`` is the same; the trainer's mixer asks every source this)."""
        return len(self.store)

    def full_view(self, index: int, view) -> np.ndarray:
        """The whole stored view ``(row, col)`` of light field ``index`` as ``uint8 H×W×3``."""
        return self.store.view(index, *view)

    def item_name(self, index: int) -> str:
        return self.store.names[index]

    def evaluation_pair(self, index: int):
        """Light field ``index`` as a validation pair (:func:`evaluation_pair`): the fixed LR view, else
        (1, 1), against the fixed reference, else (0, 0); whole views."""
        view = self.views if isinstance(self.views, tuple) else (1, 1)
        ref = self.ref_view if isinstance(self.ref_view, tuple) else (0, 0)
        return evaluation_pair(self.store, index, self.scale, view, ref)

    def __getitem__(self, index: int):
        if not 0 <= index < len(self):
            raise IndexError(index)
        lr, ref, hr, _ = self.sample(index, self._rng(index))
        return lr, ref, hr

    def sample(self, index: int, rng: np.random.Generator):
        """Light field ``index`` with views, window, parallax shift and flips drawn from ``rng``.

        Returns ``(lr, ref, hr, geometry)``; ``geometry`` records the draw (``lr_view``, ``ref_view``,
        crop origin ``x0, y0``, Ref offset ``dx, dy``, ``flip_x``, ``flip_y``) so that the trainer can move
        per-light-field data such as landmark matches into the sample's frame.
        """
        lr_view, ref_view = self._pick_views(rng)
        hr_full = self.store.view(index, *lr_view)
        ref_full = self.store.view(index, *ref_view)
        lr, ref, hr, geometry = sample_pair(rng, window_of(hr_full), window_of(ref_full), self.store.height,
                                            self.store.width, self.scale, self.crop, self.parallax_shift, self.flips)
        geometry.update(lr_view=lr_view, ref_view=ref_view)
        return lr, ref, hr, geometry


def evaluation_pair(store: LightFieldStore, index: int, scale: int, view: tuple[int, int],
                    ref_view: tuple[int, int] = (0, 0), crop: tuple[int, int] | None = None):
    """``(name, lr, ref, hr)`` of light field ``index``: HR = ``view``, Ref = ``ref_view``, both cut to the
    top-left ``crop`` (default: the whole stored view, itself the papers' top-left 320×512 crop) rounded
    down to a multiple of ``scale``; ``lr = downscale(hr, scale)``. Float32 ``3×h×w`` / ``3×H×W``."""
    h, w = crop if crop is not None else (store.height, store.width)
    h, w = min(h, store.height), min(w, store.width)
    h, w = h - h % scale, w - w % scale
    hr = array_to_tensor(store.view(index, *view)[:h, :w])
    ref = array_to_tensor(store.view(index, *ref_view)[:h, :w])
    return store.names[index], downscale(hr, scale).clamp_(0, 1), ref, hr


def iter_test_pairs(path, scale: int, view_k: int | tuple[int, int], ref_view=(0, 0),
                    crop: tuple[int, int] | None = None, skipped: list[str] | None = None,
                    ) -> Iterator[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Deterministic evaluation pairs: yields :func:`evaluation_pair` ``(name, lr, ref, hr)`` for every light
    field of a store, HR = view ``(k, k)`` (or ``view_k=(row, col)``), Ref = ``ref_view``.

    A light field whose views cannot be read (a damaged file) raises :class:`UnreadableData`; with a
    ``skipped`` list it is left out instead, and the error message appended to the list.
    """
    store = open_store(path)
    grid = store.grid
    view = _parse_view(view_k, grid, "view_k")
    ref = _parse_view(ref_view, grid, "ref_view")
    for i in range(len(store)):
        try:
            pair = evaluation_pair(store, i, scale, view, ref, crop)
        except UnreadableData as exc:
            if skipped is None:
                raise
            skipped.append(str(exc))
            continue
        yield pair
