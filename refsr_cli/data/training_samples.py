"""What the trainer iterates over: one or several stores, mixed, each sample a pure function of its number.

``TrainingSamples[g]`` is the training sample number ``g`` of the whole run. It draws the source store
(by the mixing weights), the item in it and all augmentation from ``default_rng([seed, g])``, so

* the data order needs no state: resuming at iteration ``t`` simply continues at ``g = t·batch``;
* DDP ranks take disjoint numbers (see :class:`refsr_cli.training.loop.RangeSampler`);
* DataLoader workers produce the same samples as the main process.

Samples are dicts ``{"lr": 3×h×w, "ref": 3×H×W, "hr": 3×H×W}`` (float32, [0, 1]); with landmarks on
(CrossNet++), also ``"landmarks"``: ``(p, q)`` float32 ``M×2`` arrays of matched ``(x, y)`` points in the
HR and in the Ref of the crop. Matches are computed once per light field × view pair on the full views
(:class:`~refsr_cli.training.losses.LandmarkCache`) and moved into each crop. With ground-truth flow on (the
``flow`` loss) and a store that has ``/disparity`` (``refsr prepare synthetic --disparity``), also
``"flow"``: ``2×H×W``, the true backward flow from the HR view to the sample's Ref (shift and flips included).

Validation without a separate store holds a few items of each store out of training
(:func:`held_out_items`): samples never come from them, :meth:`TrainingSamples.validation_pairs` are made
of them. With ``skip_bad``, a sample whose data cannot be read (:class:`~refsr_cli.data.store.UnreadableData`)
is replaced by the next draw of the same generator, so the run stays a pure function of ``(seed, g)``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from refsr_cli import console
from refsr_cli.data.store import UnreadableData
from refsr_cli.errors import RefsrError

VIRTUAL_LENGTH = 2**62  # samples are drawn with replacement; the sampler decides how many are used
HOLDOUT_MAX = 8         # "auto": a tenth of a store's items, at least 1, at most this many
HOLDOUT_SEED = 20       # fixed, not the run's seed: runs of one store with other seeds validate alike
MAX_REDRAWS = 100       # --skip-bad: unreadable samples in a row before training gives up


def held_out_items(n: int, count: int | str = "auto") -> list[int]:
    """The items (sorted) of a store of ``n`` kept out of training for validation: ``count`` of them, or for
    ``"auto"`` a tenth, at least 1 and at most :data:`HOLDOUT_MAX` (none of a single-item store)."""
    if count == "auto":
        count = min(HOLDOUT_MAX, max(1, n // 10)) if n > 1 else 0
    count = int(count)
    if not 0 <= count < max(n, 1):
        raise ValueError(f"cannot hold out {count} of its {n} items for validation and train on the rest")
    return sorted(int(i) for i in np.random.default_rng(HOLDOUT_SEED).permutation(n)[:count])


def _store_path(path: str | os.PathLike) -> Path:
    """A ``prepare`` output folder means its ``train.h5``."""
    path = Path(path)
    if path.is_dir():
        path = path / "train.h5"
    if not path.is_file():
        raise RefsrError(f"{path}: no such training store")
    return path


def open_source(path, scale, crop, views, ref_view, parallax_shift, flips, seed):
    """The dataset of one store (light field or video), with a ``sample(index, rng)`` method."""
    path = _store_path(path)
    try:
        from refsr_cli.data.video_store import VideoPairDataset, is_video_store

        if is_video_store(path):
            return VideoPairDataset(path, scale=scale, crop=crop, parallax_shift=parallax_shift,
                                    flips=flips, seed=seed)
        from refsr_cli.data.lightfield_dataset import LightFieldDataset

        return LightFieldDataset(path, scale=scale, crop=crop, views=views, ref_view=ref_view,
                                 parallax_shift=parallax_shift, flips=flips, seed=seed)
    except ValueError as exc:  # the datasets' argument checks (crop too large, bad views, …)
        raise RefsrError(f"{path}: {exc}") from None


class TrainingSamples(Dataset):
    """Mixture of sources; item ``g`` is deterministic in ``(seed, g)``."""

    def __init__(self, sources: list, weights: list[float] | None = None, seed: int = 0,
                 landmark_cache=None, flow: bool = False, held_out: list[list[int]] | None = None,
                 skip_bad: bool = False, partial_reference: float = 0.0):
        if not sources:
            raise RefsrError("no training data")
        weights = np.asarray(weights if weights is not None else [1.0] * len(sources), dtype=np.float64)
        if len(weights) != len(sources) or (weights < 0).any() or weights.sum() <= 0:
            raise RefsrError(f"--mix must give {len(sources)} non-negative weights with a positive sum")
        self.sources = sources
        self.weights = weights / weights.sum()
        self.seed = int(seed)
        self.landmarks = landmark_cache
        self.flow = bool(flow)
        if self.flow and not any(_has_disparity(src) for src in sources):
            raise RefsrError("the 'flow' loss needs ground-truth disparity: a store made with "
                             "'refsr prepare synthetic --disparity'")
        self.held_out = held_out or [[] for _ in sources]
        # Without a hold-out the items are a range, so draws (and runs) are those of the plain store.
        self._items = [np.setdiff1d(np.arange(src.num_items()), held) if held else range(src.num_items())
                       for src, held in zip(sources, self.held_out)]
        self.skip_bad = bool(skip_bad)
        self.skipped: set[str] = set()
        if not 0.0 <= float(partial_reference) <= 1.0:
            raise RefsrError(f"partial_reference must be a probability in [0, 1], not {partial_reference}")
        self.partial_reference = float(partial_reference)

    def __len__(self) -> int:
        return VIRTUAL_LENGTH

    def __getitem__(self, g: int) -> dict:
        rng = np.random.default_rng([self.seed, 0x5EED, int(g)])
        for _ in range(MAX_REDRAWS):
            s = int(rng.choice(len(self.sources), p=self.weights)) if len(self.sources) > 1 else 0
            items = self._items[s]
            try:
                return self._sample(s, int(items[int(rng.integers(len(items)))]), rng)
            except UnreadableData as exc:
                if not self.skip_bad:
                    raise
                self._skip(exc)
                last = exc
        raise RefsrError(f"{MAX_REDRAWS} unreadable samples in a row, the last: {last}")

    def _skip(self, exc: UnreadableData) -> None:
        if str(exc) not in self.skipped:
            self.skipped.add(str(exc))
            console.warn(f"skipped unreadable sample {len(self.skipped)}: {exc}")

    def validation_pairs(self) -> list[tuple]:
        """``(name, lr, ref, hr)`` of every held-out item (each source's ``evaluation_pair``)."""
        pairs = []
        for source, held in zip(self.sources, self.held_out):
            for index in held:
                try:
                    pairs.append(source.evaluation_pair(index))
                except UnreadableData as exc:
                    if not self.skip_bad:
                        raise
                    self._skip(exc)
        return pairs

    def held_out_names(self) -> dict[str, list[str]]:
        """``{store path (resolved): [names of its held-out items]}``, for the run's record."""
        return {str(Path(source.store.path).resolve()): [source.item_name(i) for i in held]
                for source, held in zip(self.sources, self.held_out) if held}

    def _sample(self, s: int, index: int, rng: np.random.Generator) -> dict:
        source = self.sources[s]
        lr, ref, hr, geometry = source.sample(index, rng)
        # Drawn only when asked for, so that runs without it keep their samples.
        if self.partial_reference > 0 and rng.random() < self.partial_reference:
            from refsr_cli.data.augment import partial_reference

            ref = partial_reference(ref, rng)
        sample = {"lr": lr, "ref": ref, "hr": hr}
        baseline = _baseline(source, geometry)
        if baseline is not None:
            sample["baseline"] = baseline
        if self.landmarks is not None:
            sample["landmarks"] = self._landmarks(s, source, index, geometry, hr.shape[-2:])
        if self.flow and _has_disparity(source):
            sample["flow"] = true_flow(source, index, geometry, hr.shape[-2:])
        return sample

    def _landmarks(self, s, source, index, geometry, size):
        """Matches of the full view pair (cached), moved into this crop / shift / flip."""
        from refsr_cli.ops.features import crop_matches

        lr_view, ref_view = geometry["lr_view"], geometry["ref_view"]
        key = (s, index, tuple(lr_view), tuple(ref_view))
        p, q = self.landmarks.get(key, source.full_view(index, lr_view), source.full_view(index, ref_view))
        x0, y0, dx, dy = geometry["x0"], geometry["y0"], geometry["dx"], geometry["dy"]
        p, q = crop_matches(p, q, hr_offset=(x0, y0), ref_offset=(x0 + dx, y0 + dy), size=tuple(size))
        h, w = size
        if geometry.get("flip_x"):
            p[:, 0], q[:, 0] = w - 1 - p[:, 0], w - 1 - q[:, 0]
        if geometry.get("flip_y"):
            p[:, 1], q[:, 1] = h - 1 - p[:, 1], h - 1 - q[:, 1]
        return p, q


def _baseline(source, geometry) -> torch.Tensor | None:
    """The light-field baseline ``(bx, by)`` of the sample's view pair, for plane sweeps (Cross-MPI).

    With the geometry convention of docs/architecture.md the backward flow from the LR view ``(r, c)`` to
    Ref ``(r0, c0)`` is ``d·((c − c0), (r − r0)) / (grid − 1)`` for a point of disparity ``d`` between views
    (0,0) and (7,7); a flip of the sample mirrors the direction. ``None`` for video frames (no baseline).
    """
    grid = getattr(getattr(source, "store", None), "grid", None)
    if grid is None or "lr_view" not in geometry or min(grid) < 2:
        return None
    (r, c), (r0, c0) = geometry["lr_view"], geometry["ref_view"]
    bx, by = (c - c0) / (grid[1] - 1), (r - r0) / (grid[0] - 1)
    if geometry.get("flip_x"):
        bx = -bx
    if geometry.get("flip_y"):
        by = -by
    return torch.tensor([bx, by], dtype=torch.float32)


def _has_disparity(source) -> bool:
    """Whether a source's store carries ground-truth disparity (video stores never do)."""
    return getattr(getattr(source, "store", None), "has_disparity", False)


def true_flow(source, index: int, geometry: dict, size: tuple[int, int]) -> torch.Tensor:
    """Ground-truth backward flow ``2×H×W`` from a sample's HR crop to its Ref crop.

    Pixel ``p`` of the LR view shows the point at ``p + d(p)·b`` of Ref, ``b`` the sample's baseline
    (:func:`_baseline`, already mirrored by the flips) and ``d`` the stored disparity of the LR view. The
    Ref crop starts ``(dx, dy)`` further than the HR crop (parallax shift), which subtracts from the flow;
    a flip mirrors the map and that component of the shift.
    """
    flip_x, flip_y = bool(geometry.get("flip_x")), bool(geometry.get("flip_y"))
    h, w = size
    x0, y0 = geometry["x0"], geometry["y0"]
    d = torch.from_numpy(source.store.disparity(index, *geometry["lr_view"])[y0:y0 + h, x0:x0 + w])
    dims = [dim for dim, flipped in ((-1, flip_x), (-2, flip_y)) if flipped]
    if dims:
        d = d.flip(dims)
    shift = torch.tensor([-geometry["dx"] if flip_x else geometry["dx"], -geometry["dy"] if flip_y else geometry["dy"]],
                         dtype=torch.float32)
    return (d[None] * _baseline(source, geometry)[:, None, None] - shift[:, None, None]).contiguous()


def collate(samples: list[dict]) -> dict:
    """Stack the image tensors (and baselines / true flows, when every sample has one); keep per-sample
    landmark arrays as lists (their lengths differ)."""
    batch = {key: torch.stack([s[key] for s in samples]) for key in ("lr", "ref", "hr")}
    for key in ("baseline", "flow"):
        if all(key in s for s in samples):
            batch[key] = torch.stack([s[key] for s in samples])
    if "landmarks" in samples[0]:
        batch["landmarks"] = ([s["landmarks"][0] for s in samples], [s["landmarks"][1] for s in samples])
    return batch


def open_training_data(paths, scale, crop, views, ref_view, parallax_shift, flips, seed, mix=None,
                       landmarks=False, cache_dir=None, flow=False, holdout: int | str = 0,
                       skip_bad: bool = False, partial_reference: float = 0.0) -> TrainingSamples:
    """:class:`TrainingSamples` over one or several stores (``mix``: their weights), each with
    :func:`held_out_items` ``(n, holdout)`` kept for validation (``0``: none); ``skip_bad``: see the module;
    ``partial_reference``: the share of samples whose reference covers only part of the crop
    (:func:`refsr_cli.data.augment.partial_reference`)."""
    paths = paths if isinstance(paths, (list, tuple)) else [paths]
    views = tuple(views) if isinstance(views, list) else views
    ref_view = tuple(ref_view) if isinstance(ref_view, list) else ref_view
    sources = [open_source(p, scale, tuple(crop) if crop else None, views, ref_view, parallax_shift, flips, seed)
               for p in paths]
    cache = None
    if landmarks:
        from refsr_cli.data.landmarks import LandmarkCache

        cache = LandmarkCache(Path(cache_dir) / "landmarks.npz" if cache_dir else None)
    held_out = []
    for path, source in zip(paths, sources):
        try:
            held_out.append(held_out_items(source.num_items(), holdout))
        except ValueError as exc:
            raise RefsrError(f"{_store_path(path)}: {exc}") from None
    return TrainingSamples(sources, mix, seed, cache, flow=flow, held_out=held_out, skip_bad=skip_bad,
                           partial_reference=partial_reference)
