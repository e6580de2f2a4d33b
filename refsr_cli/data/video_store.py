"""The HDF5 frame-sequence store for video (``kind = "video"``): writer, reader, training and test pairs.

Schema (format version 1, documented for users in ``docs/video.md``):

* ``/clips/NNNNN``  uint8 ``[F_c, H_c, W_c, 3]`` — the frames of clip ``c`` (RGB), one chunk per frame
  ``(1, H_c, W_c, 3)``, gzip level 4. Clips of one store may differ in size (each is its own dataset).
* ``/clip_names``   UTF-8 ``[C]`` — clip names (source file stem; ``[a:b]`` appended for a time segment).
* ``/clip_sources`` UTF-8 ``[C]`` — the file or folder each clip was decoded from.
* ``/clip_first_frame`` int64 ``[C]`` — index in the source of the clip's frame 0 (non-zero for a time
  segment of a longer source).
* ``/pairs``        int64 ``[P, 3]`` — the kept pairs ``(clip, t, k)``: reference = frame ``t``,
  target (the LR view's ground truth) = frame ``t + k``. Sorted by clip, t, k.
* ``/pair_stats``   float32 ``[P, 3]`` — what the filter measured for each kept pair: global shift
  (pixels, full resolution), coarse normalised cross-correlation after alignment, changed-pixel fraction.
* root attributes: ``format = "refsr-video-store"``, ``kind = "video"``, ``format_version``, ``split``,
  ``split_rule``, ``gaps``, ``stride``, ``crop``, ``thresholds`` (JSON), ``pair_counts`` (JSON:
  clip → gap → kept/static/cut), ``sources`` (JSON), ``seed``, ``prepare_digest``, ``refsr_version``.

The store is written under a temporary name in the destination folder and renamed when complete
(:class:`VideoStoreWriter`), with ``track_times=False`` so identical input gives identical bytes.

Reading goes through :class:`VideoStore` (lazy per-process HDF5 handle, safe to hand to DataLoader
workers). :class:`VideoPairDataset` draws ``(lr, ref, hr)`` training samples; sample ``i`` is a
pure function of ``(seed, i)``. :func:`iter_video_test_pairs` yields deterministic test pairs for bench.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

import h5py
import numpy as np
import torch

from refsr_cli.data.augment import sample_pair
from refsr_cli.errors import RefsrError
from refsr_cli.data.image_io import array_to_tensor
from refsr_cli.ops.resize import downscale
from refsr_cli.data.store import LazyH5, UnreadableData, decode_attr, encode_attr, root_attribute

FORMAT = "refsr-video-store"
KIND = "video"
FORMAT_VERSION = 1
GZIP_LEVEL = 4
VIRTUAL_LENGTH = 2**31 - 1
_STR = h5py.string_dtype("utf-8")


# --------------------------------------------------------------------------------------------- writing

class VideoStoreWriter:
    """Write a video store atomically: ``add_clip`` per clip, then ``finish`` with the pairs.

    Use as a context manager; the file appears under its final name only when ``finish`` returned and the
    block exits without an exception. Otherwise the temporary file is removed and nothing is left.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Named as atomic_write names its temporaries, so that remove_temporaries finds what a kill left.
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=self.path.suffix + ".tmp",
                                   dir=self.path.parent)
        os.close(fd)
        self._tmp = Path(tmp)
        self._h5 = h5py.File(self._tmp, "w")
        self._clips = self._h5.create_group("clips")
        self._names: list[str] = []
        self._sources: list[str] = []
        self._first: list[int] = []
        self._finished = False

    def add_clip(self, name: str, frames: np.ndarray, source: str = "", first_frame: int = 0) -> int:
        """Append one clip (``uint8 [F, H, W, 3]``); returns its clip index."""
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
            raise ValueError(f"expected uint8 [F, H, W, 3], got {frames.dtype} {frames.shape}")
        index = len(self._names)
        self._clips.create_dataset(f"{index:05d}", data=frames, chunks=(1,) + frames.shape[1:],
                                   compression="gzip", compression_opts=GZIP_LEVEL, track_times=False)
        self._names.append(name)
        self._sources.append(source)
        self._first.append(int(first_frame))
        return index

    def finish(self, pairs: np.ndarray, stats: np.ndarray, attrs: dict) -> None:
        """Write the pair table and the attributes (the file is renamed into place on exit)."""
        pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 3)
        stats = np.asarray(stats, dtype=np.float32).reshape(-1, 3)
        if len(pairs) != len(stats):
            raise ValueError("pairs and stats differ in length")
        h5 = self._h5
        for key, values, dtype in (("clip_names", self._names, _STR), ("clip_sources", self._sources, _STR)):
            ds = h5.create_dataset(key, shape=(len(values),), dtype=dtype, track_times=False)
            if values:
                ds[...] = values
        h5.create_dataset("clip_first_frame", data=np.asarray(self._first, np.int64), track_times=False)
        h5.create_dataset("pairs", data=pairs, track_times=False)
        h5.create_dataset("pair_stats", data=stats, track_times=False)
        base = {"format": FORMAT, "kind": KIND, "format_version": FORMAT_VERSION}
        for key, value in {**base, **attrs}.items():
            h5.attrs[key] = encode_attr(value)
        self._finished = True

    def __enter__(self) -> "VideoStoreWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._h5.close()
        if exc_type is None and self._finished:
            # mkstemp creates 0600 files; a data store should get the usual permissions (umask applied).
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self._tmp, 0o666 & ~umask)
            os.replace(self._tmp, self.path)
        else:
            self._tmp.unlink(missing_ok=True)

    def abort(self) -> None:
        """Drop the temporary file (when the caller decides not to publish it)."""
        try:
            self._h5.close()
        finally:
            self._tmp.unlink(missing_ok=True)

    @property
    def temporary_path(self) -> Path:
        return self._tmp


def is_video_store(path: str | os.PathLike) -> bool:
    """True when ``path`` is an HDF5 file whose root attribute ``kind`` is ``"video"``."""
    return root_attribute(path, "kind") == KIND


# --------------------------------------------------------------------------------------------- reading

class VideoStore(LazyH5):
    """Read access to a video store.

    Attributes: ``path``, ``attrs`` (dict), ``clip_names``, ``clip_sources``, ``clip_first_frame``,
    ``clip_shapes`` (``[(F, H, W), …]``), ``pairs`` (``int64 [P, 3]``: clip, t, k), ``pair_stats``,
    ``gaps`` (sorted gaps present among the pairs), ``names`` (one ``clip/tNNNNN+k`` per pair).
    ``len(store)`` is the number of pairs (the analogue of the number of light fields).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        with self._open_for_metadata() as h5:
            self.attrs = {k: decode_attr(v) for k, v in h5.attrs.items()}
            if self.attrs.get("kind") != KIND or "pairs" not in h5 or "clips" not in h5:
                raise RefsrError(f"{self.path}: not a video store (no kind=video attribute or /pairs, /clips)")
            version = int(self.attrs.get("format_version", FORMAT_VERSION))
            if version > FORMAT_VERSION:
                raise RefsrError(f"{self.path}: video store format version {version} is newer than this refsr "
                                 f"understands ({FORMAT_VERSION})")
            names = [s.decode() if isinstance(s, bytes) else str(s) for s in h5["clip_names"][...]]
            self.clip_names: list[str] = names
            self.clip_sources = [s.decode() if isinstance(s, bytes) else str(s) for s in h5["clip_sources"][...]]
            self.clip_first_frame = [int(v) for v in h5["clip_first_frame"][...]]
            self.clip_shapes = [tuple(int(v) for v in h5["clips"][f"{c:05d}"].shape[:3]) for c in range(len(names))]
            self.pairs = np.asarray(h5["pairs"][...], dtype=np.int64).reshape(-1, 3)
            self.pair_stats = np.asarray(h5["pair_stats"][...], dtype=np.float32).reshape(-1, 3)
        for c, t, k in self.pairs:
            if not (0 <= c < len(names) and 0 <= t and k >= 1 and t + k < self.clip_shapes[c][0]):
                raise RefsrError(f"{self.path}: pair ({c}, {t}, {k}) points outside its clip")
        self.gaps = sorted({int(k) for k in self.pairs[:, 2]})
        # No angular grid in a video; (1, 1) keeps code that reads ``store.grid`` generically working.
        self.grid = (1, 1)
        self.names = [self.pair_name(c, t, k) for c, t, k in self.pairs]

    def pair_name(self, clip: int, t: int, k: int) -> str:
        """``clip/tNNNNN+k``: the name of the pair Ref = frame ``t``, target = frame ``t + k`` of ``clip``."""
        return f"{self.clip_names[int(clip)]}/t{int(t):05d}+{int(k)}"

    def _clip(self, clip: int) -> h5py.Dataset:
        return self._file()["clips"][f"{clip:05d}"]

    def __len__(self) -> int:
        return len(self.pairs)

    def __repr__(self) -> str:
        return f"VideoStore({str(self.path)!r}, clips={len(self.clip_names)}, pairs={len(self)}, gaps={self.gaps})"

    def frame(self, clip: int, t: int, window: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """Frame ``t`` of ``clip`` as ``uint8 H×W×3``; ``window = (y, x, h, w)`` reads only that part."""
        ds = self._clip(clip)
        if not 0 <= t < ds.shape[0]:
            raise IndexError(f"{self.path}: frame {t} outside clip {clip} ({ds.shape[0]} frames)")
        with self._reading(f"clip {self.clip_names[clip]!r}, frame {t}"):
            if window is None:
                return ds[t]
            y, x, h, w = window
            return ds[t, y:y + h, x:x + w]


def open_video_store(path: str | os.PathLike | VideoStore) -> VideoStore:
    return path if isinstance(path, VideoStore) else VideoStore(path)


def _crop_size(crop) -> tuple[int, int]:
    if isinstance(crop, int):
        return crop, crop
    h, w = crop
    return int(h), int(w)


class VideoPairDataset(torch.utils.data.Dataset):
    """Training samples from a video store: ``(lr, ref, hr)`` float32 tensors in [0, 1], channels first.

    Same sample interface as :class:`refsr_cli.data.lightfield_dataset.LightFieldDataset`: ``hr`` (``3×H×W``) is a window
    of frame ``t + k``, ``ref`` the window of frame ``t`` moved by the parallax augmentation (independent
    integer offsets ``dx, dy`` in ``[-parallax_shift, +parallax_shift]``, the window chosen so that both lie
    inside the frame: exact copies, no invented borders), ``lr = downscale(hr, scale)`` (``3×h×w``). With
    ``flips``, the three are flipped together horizontally and/or vertically. ``crop=None`` uses the whole
    frame cut to a multiple of the scale (top-left), the offset then applied by a border-clamped shift.

    Determinism: ``dataset[i]`` is a pure function of ``(seed, i)`` —
    ``rng = np.random.default_rng([seed, i])`` draws the pair (``rng.integers(num_pairs)``), then the
    offsets, the window and the flips (see :meth:`sample`). The trainer uses the global sample number as
    the index, so an interrupted run resumes exactly; ``len()`` is therefore a *virtual* length
    (``2**31 − 1``, samples are drawn with replacement) and :attr:`num_pairs` the real number of pairs.
    ``seed=None`` draws from torch's RNG instead (as the light-field dataset does).

    For the trainer's mixing (:mod:`refsr_cli.data.training_samples`): :meth:`num_items` (= pairs) and
    :meth:`sample` ``(index, rng) -> (lr, ref, hr, geometry)``, ``geometry`` holding ``lr_view = (clip, t+k)``,
    ``ref_view = (clip, t)``, ``x0, y0, dx, dy, flip_x, flip_y``; :meth:`full_view` ``(index, view)`` gives
    the whole frame of such a view (for landmark matching).

    Args:
        path: the store (or a :class:`VideoStore`).
        scale: super-resolution factor (``crop`` must divide by it).
        crop: HR window ``(H, W)`` (or an int for a square), or None for whole frames.
        gaps: use only pairs with these frame gaps (default: every pair of the store).
    """

    def __init__(self, path, scale: int, crop=None, gaps: Sequence[int] | None = None, parallax_shift: int = 0,
                 flips: bool = True, seed: int | None = 0):
        self.store = open_video_store(path)
        self.scale = int(scale)
        if self.scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale}")
        self.crop = _crop_size(crop) if crop is not None else None
        if self.crop is not None and (self.crop[0] % self.scale or self.crop[1] % self.scale):
            raise ValueError(f"crop {self.crop[0]}×{self.crop[1]} is not a multiple of the scale {self.scale}")
        self.parallax_shift = max(0, int(parallax_shift))
        self.flips = bool(flips)
        self.seed = None if seed is None else int(seed)
        pairs = self.store.pairs
        if gaps is not None:
            pairs = pairs[np.isin(pairs[:, 2], sorted({int(k) for k in gaps}))]
        if self.crop is not None and len(pairs):
            # Clips smaller than the crop cannot give a sample: their pairs are left out.
            shapes = self.store.clip_shapes
            fits = np.array([shapes[c][1] >= self.crop[0] and shapes[c][2] >= self.crop[1] for c in pairs[:, 0]])
            pairs = pairs[fits]
        self.pairs = pairs
        if len(self.pairs) == 0:
            what = f" with gaps {sorted(set(int(k) for k in gaps))}" if gaps is not None else ""
            size = f" whose frames hold a {self.crop[0]}×{self.crop[1]} crop" if self.crop else ""
            raise ValueError(f"no frame pairs{what}{size} in {self.store.path}")

    @property
    def num_pairs(self) -> int:
        return len(self.pairs)

    def num_items(self) -> int:
        return len(self.pairs)

    def __len__(self) -> int:
        return VIRTUAL_LENGTH

    def _rng(self, index: int) -> np.random.Generator:
        if self.seed is None:
            return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
        return np.random.default_rng([self.seed, int(index)])

    def __getitem__(self, index: int):
        if not 0 <= index < VIRTUAL_LENGTH:
            raise IndexError(index)
        rng = self._rng(index)
        lr, ref, hr, _ = self.sample(int(rng.integers(len(self.pairs))), rng)
        return lr, ref, hr

    def full_view(self, index: int, view) -> np.ndarray:
        """The whole frame ``view = (clip, t)`` as ``uint8 H×W×3`` (``index``, the pair, is not needed)."""
        clip, t = view
        return self.store.frame(int(clip), int(t))

    def item_name(self, index: int) -> str:
        return self.store.pair_name(*self.pairs[index])

    def evaluation_pair(self, index: int):
        """Pair ``index`` as a validation pair: whole frames (:func:`video_evaluation_pair`)."""
        clip, t, k = (int(v) for v in self.pairs[index])
        return video_evaluation_pair(self.store, clip, t, k, self.scale)

    def sample(self, index: int, rng: np.random.Generator):
        """Pair ``index`` with the window, offsets and flips drawn from ``rng``: ``(lr, ref, hr, geometry)``."""
        clip, t, k = (int(v) for v in self.pairs[index])
        _, height, width = self.store.clip_shapes[clip]
        lr, ref, hr, geometry = sample_pair(rng, lambda w: self.store.frame(clip, t + k, w),
                                            lambda w: self.store.frame(clip, t, w), height, width, self.scale,
                                            self.crop, self.parallax_shift, self.flips)
        geometry.update(lr_view=(clip, t + k), ref_view=(clip, t), gap=k)
        return lr, ref, hr, geometry


def eval_window(height: int, width: int, scale: int, crop=None) -> tuple[int, int]:
    """The top-left evaluation window: ``crop`` (clipped to the frame) or the whole frame, cut to a multiple
    of ``scale`` — the same rule as the light-field ``iter_test_pairs``."""
    ch, cw = _crop_size(crop) if crop is not None else (height, width)
    ch, cw = min(ch, height), min(cw, width)
    return ch - ch % scale, cw - cw % scale


def video_evaluation_pair(store: VideoStore, clip: int, t: int, k: int, scale: int, crop=None):
    """``(name, lr, ref, hr)`` of the pair ``(clip, t, k)``: the top-left window of ``crop`` (default: the whole
    frame) cut down to a multiple of ``scale``; ``lr = downscale(hr, scale)``; the name ``clip/tNNNNN+k``."""
    _, height, width = store.clip_shapes[clip]
    ch, cw = eval_window(height, width, scale, crop)
    if ch == 0 or cw == 0:
        raise ValueError(f"clip {store.clip_names[clip]} of {store.path} is smaller than the scale {scale}")
    hr = array_to_tensor(store.frame(clip, t + k, (0, 0, ch, cw)))
    ref = array_to_tensor(store.frame(clip, t, (0, 0, ch, cw)))
    return store.pair_name(clip, t, k), downscale(hr, scale).clamp_(0, 1), ref, hr


def iter_video_test_pairs(path, scale: int, gap: int | None = None, crop=None, limit: int | None = None,
                          skipped: list[str] | None = None,
                          ) -> Iterator[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield :func:`video_evaluation_pair` ``(name, lr, ref, hr)`` for the store's pairs with frame gap
    ``gap`` (every gap when None), in store order (clip, t, k), as from the light-field ``iter_test_pairs``.
    ``limit`` stops early. A pair whose frames cannot be read raises :class:`UnreadableData`; with a
    ``skipped`` list it is left out instead, and the error message appended to the list.
    """
    store = open_video_store(path)
    count = 0
    for clip, t, k in store.pairs:
        if gap is not None and int(k) != int(gap):
            continue
        if limit is not None and count >= limit:
            return
        try:
            pair = video_evaluation_pair(store, int(clip), int(t), int(k), scale, crop)
        except UnreadableData as exc:
            if skipped is None:
                raise
            skipped.append(str(exc))
            continue
        count += 1
        yield pair
